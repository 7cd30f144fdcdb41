/** renderInvoice: JSON, HTML or PDF bytes with their content type and a file name. */
import type { Invoice } from "../domain/invoice.js";
import { invoiceHtml } from "./html.js";
import { invoiceJson } from "./json.js";
import { invoicePdf } from "./pdf-invoice.js";

export type RenderFormatName = "json" | "html" | "pdf";

export function renderInvoice(inv: Invoice, format: RenderFormatName): { content: Uint8Array; contentType: string; fileName: string } {
  const base = inv.number !== "" ? inv.number : inv.id !== "" ? inv.id : `preview-${inv.customerId}`;
  switch (format) {
    case "json":
      return { content: new TextEncoder().encode(invoiceJson(inv)), contentType: "application/json", fileName: `${base}.json` };
    case "html":
      return { content: new TextEncoder().encode(invoiceHtml(inv)), contentType: "text/html; charset=utf-8", fileName: `${base}.html` };
    case "pdf":
      return { content: invoicePdf(inv), contentType: "application/pdf", fileName: `${base}.pdf` };
  }
}
