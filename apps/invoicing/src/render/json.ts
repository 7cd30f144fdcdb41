/** The invoice as JSON: every amount an exact decimal string of nanos (bigint-safe). */
import type { Invoice } from "../domain/invoice.js";

export function invoiceJson(inv: Invoice): string {
  return JSON.stringify(
    inv,
    (_k, v: unknown) => {
      if (typeof v === "bigint") return v.toString();
      return v;
    },
    2,
  );
}
