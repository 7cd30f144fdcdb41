import type { ClientHttp2Session } from "node:http2";
import type { ServiceName } from "../../libs/platform/src/platform.js";

export interface RawAnswer {
  status: number;
  body: string;
  raw: Buffer;
}

/**
 * One raw Connect call over an HTTP/2 session, settled when its stream closes (the answer read and
 * the body sent or discarded), so a body the server refused early is not still being sent beside
 * the next request.
 */
export function post(session: ClientHttp2Session, path: string, key: string, body: string | Buffer, contentType = "application/json"): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ":method": "POST", ":path": path, "content-type": contentType, authorization: `Bearer ${key}`, "connect-protocol-version": "1" });
    let status = 0;
    const chunks: Buffer[] = [];
    req.on("response", (h) => (status = Number(h[":status"])));
    req.on("data", (d: Buffer) => chunks.push(d));
    req.on("close", () => {
      const raw = Buffer.concat(chunks);
      resolve({ status, body: raw.toString("utf8"), raw });
    });
    req.on("error", reject);
    req.setTimeout(30_000, () => req.close());
    req.end(body);
  });
}

/** JSON reads of a customer's and its wallet's objects in every service (what time-bearing writes leave behind). */
export function jsonReadsOf(customerId: string, walletId: string): Array<[ServiceName, string, unknown]> {
  return [
    ["credit-wallet", "/nanobill.wallet.v1.CreditWalletService/GetBalance", { walletId }],
    ["credit-wallet", "/nanobill.wallet.v1.CreditWalletService/ListMovements", { walletId }],
    ["rating", "/nanobill.rating.v1.RatingService/ListSubscriptions", { customerId }],
    ["rating", "/nanobill.rating.v1.RatingService/RatePeriod", { customerId }],
    ["rating", "/nanobill.rating.v1.RatingService/ListPriceOverrides", { customerId }],
    ["rating", "/nanobill.rating.v1.RatingService/ListCostRates", {}],
    ["invoicing", "/nanobill.invoicing.v1.InvoicingService/PreviewInvoice", { customerId }],
    ["invoicing", "/nanobill.invoicing.v1.InvoicingService/ListInvoices", { customerId }],
    ["invoicing", "/nanobill.invoicing.v1.InvoicingService/GetBillingSettings", { customerId }],
    ["metering", "/nanobill.metering.v1.MeteringService/ListMeters", {}],
  ];
}
