/**
 * Invoice lifecycle (pure): draft -> finalized -> paid, and draft | finalized | paid -> void.
 * Each guard returns the decision or a typed refusal; the store applies it in one transaction.
 */
import type { InvoiceStatus } from "./invoice.js";

export type RefusalKind = "not_found" | "failed_precondition" | "already_exists" | "invalid_argument" | "aborted";

/** InvoicingError: an expected refusal, mapped to a Connect code by errors.ts. */
export class InvoicingError extends Error {
  constructor(
    readonly kind: RefusalKind,
    message: string,
    readonly field = "",
  ) {
    super(message);
    this.name = "InvoicingError";
  }
}

export function checkFinalize(id: string, status: InvoiceStatus): void {
  if (status !== "draft") {
    throw new InvoicingError("failed_precondition", `invoice ${id} is ${status}: only a draft can be finalized (it is numbered and immutable once finalized)`);
  }
}

/** checkMarkPaid: "apply" to record the payment, "replay" when the same payment is already recorded. */
export function checkMarkPaid(id: string, status: InvoiceStatus, currentPaymentId: string, paymentId: string): "apply" | "replay" {
  if (status === "paid") {
    if (currentPaymentId === paymentId) return "replay";
    throw new InvoicingError("failed_precondition", `invoice ${id} is already paid by payment ${currentPaymentId}`);
  }
  if (status !== "finalized") throw new InvoicingError("failed_precondition", `invoice ${id} is ${status}: only a finalized invoice can be paid`);
  return "apply";
}

/**
 * checkVoid: "apply" to void, "replay" when the invoice was already voided with the same credit
 * note. A paid invoice needs a credit note; a draft must not have one (nothing was billed).
 */
export function checkVoid(id: string, status: InvoiceStatus, creditNoteId: string, existingCreditNoteId: string): "apply" | "replay" {
  switch (status) {
    case "draft":
      if (creditNoteId !== "") throw new InvoicingError("invalid_argument", `credit_note_id: must be empty to void a draft (invoice ${id} was never billed)`, "credit_note_id");
      return "apply";
    case "finalized":
      return "apply";
    case "paid":
      if (creditNoteId === "") {
        throw new InvoicingError("failed_precondition", `invoice ${id} is paid: voiding it requires a credit note (credit_note_id)`, "credit_note_id");
      }
      return "apply";
    case "void":
      // a retry of the same void (the same credit note, or none for an invoice voided without one) answers the void invoice
      if (creditNoteId === existingCreditNoteId) return "replay";
      throw new InvoicingError(
        "failed_precondition",
        `invoice ${id} is already void ${existingCreditNoteId === "" ? "without a credit note" : `with credit note ${existingCreditNoteId}`}`,
      );
    default:
      throw new InvoicingError("failed_precondition", `invoice ${id} is ${status}`);
  }
}
