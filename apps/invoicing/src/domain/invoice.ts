/** Invoice domain types shared by assembly, the store, mapping and rendering (pure). */
import type { RoundingMode } from "@nanobill/money";

export type LineKind =
  | "usage"
  | "seats"
  | "flat"
  | "minimum_true_up"
  | "credits_applied"
  | "overage"
  | "adjustment"
  | "tax"
  | "carried_forward"
  | "discount"
  | "one_off";

export type InvoiceStatus = "preview" | "draft" | "finalized" | "paid" | "void";

export interface InvoiceLine {
  id: string;
  kind: LineKind;
  description: string;
  chargeId: string;
  subscriptionId: string;
  quantity: string;
  unitPrice: string;
  amountNanos: bigint;
  residueInNanos: bigint;
  roundedAmountNanos: bigint;
  amountMinor: bigint;
  residueOutNanos: bigint;
  periodStart: Date;
  periodEnd: Date;
  expandable: boolean;
  /**
   * topUpUnit: on an auto top-up line (one_off), the unit of the wallet the top-up went to (a
   * currency for prepaid money, else a credit type); unset on other lines and on top-up lines
   * stored before migration 0008. A top-up of prepaid money in the invoice's unit is not revenue:
   * the ledger's `_topup` leg moves it to the wallet's receivable (src/ledger.ts).
   */
  topUpUnit?: string;
}

export interface InvoiceTotals {
  subtotalNanos: bigint;
  discountNanos: bigint;
  taxNanos: bigint;
  totalNanos: bigint;
  creditsAppliedNanos: bigint;
  amountDueNanos: bigint;
  amountDueMinor: bigint;
  exactNanos: bigint;
  residueCarriedNanos: bigint;
  deferredNanos: bigint;
}

export interface Deferral {
  amountNanos: bigint;
  since: Date;
  /** periods: the distinct periods deferred so far (invoices of one period count once). */
  periods: number;
  /**
   * lastPeriodEnd: the end of the period whose invoice deferred it last (when known): another
   * invoice of that same period (the customer's other subscription) does not count a new period.
   */
  lastPeriodEnd?: Date;
  /**
   * unit: the currency it was carried in (when known). One in another currency than the invoice's
   * (the customer's currency changed) is neither applied nor replaced: it waits in its own unit.
   */
  unit?: string;
}

export interface CreditNote {
  id: string;
  invoiceId: string;
  number: string;
  amountNanos: bigint;
  unit: string;
  reason: string;
  createdAt: Date;
}

export interface Invoice {
  id: string;
  number: string;
  customerId: string;
  subscriptionId: string;
  status: InvoiceStatus;
  unit: string;
  periodStart: Date;
  periodEnd: Date;
  timeZone: string;
  lines: InvoiceLine[];
  totals: InvoiceTotals;
  roundingMode: RoundingMode;
  taxRateBps: number;
  deferral: Deferral | undefined;
  createdAt: Date;
  finalizedAt: Date | undefined;
  paidAt: Date | undefined;
  voidedAt: Date | undefined;
  creditNote: CreditNote | undefined;
  paymentId: string;
  ledgerTransferIds: string[];
  /** refreshedAt: when a refresh last changed the draft (undefined: never). */
  refreshedAt?: Date;
  /** creditsInUnits: credits of each credit type consumed for the period (informational: not in the totals). */
  creditsInUnits?: CreditsInUnits[];
}

/** CreditsInUnits: credits of one credit type consumed for the period, with their money value. */
export interface CreditsInUnits {
  creditTypeId: string;
  name: string;
  creditsNanos: bigint;
  /** rate: currency per credit in force at the period end ("" = none known). */
  rate: string;
  rateCurrency: string;
  /** valueNanos: creditsNanos x rate, rounded half-even to the nano. */
  valueNanos: bigint;
}

export interface BillingSettings {
  customerId: string;
  taxRateBps: number;
  roundingMode: RoundingMode;
  discountBps: number;
  discountNanos: bigint;
  minimumBillableNanos: bigint;
  deferralPeriodsMax: number;
  deferralUntil: Date | undefined;
  /**
   * lineMinimumBillableNanos: the smallest usage line (per charge, with what it carried in) that
   * is billed; smaller ones are carried to the next invoice, within the same deferral limits
   * (deferralPeriodsMax / deferralUntil). 0 or absent = bill every line.
   */
  lineMinimumBillableNanos?: bigint;
}

export function defaultSettings(customerId: string): BillingSettings {
  return {
    customerId,
    taxRateBps: 0,
    roundingMode: "half_even",
    discountBps: 0,
    discountNanos: 0n,
    minimumBillableNanos: 0n,
    deferralPeriodsMax: 0,
    deferralUntil: undefined,
    lineMinimumBillableNanos: 0n,
  };
}
