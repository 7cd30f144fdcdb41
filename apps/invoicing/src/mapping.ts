/** proto <-> domain. Amounts stay bigint end to end; enums map one to one. */
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { RoundingMode } from "@nanobill/money";
import * as pb from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import type { BillingSettings, Invoice, InvoiceLine, InvoiceStatus, LineKind } from "./domain/invoice.js";
import type { PeriodAnchor, PeriodInterval } from "./domain/periods.js";
import type { StoredSettings } from "./store/invoice-store.js";

const ts = (d: Date | undefined): Timestamp | undefined => (d === undefined ? undefined : timestampFromDate(d));
export const dateOf = (t: Timestamp | undefined): Date | undefined => (t === undefined ? undefined : timestampDate(t));

const STATUS: Record<InvoiceStatus, pb.InvoiceStatus> = {
  preview: pb.InvoiceStatus.PREVIEW,
  draft: pb.InvoiceStatus.DRAFT,
  finalized: pb.InvoiceStatus.FINALIZED,
  paid: pb.InvoiceStatus.PAID,
  void: pb.InvoiceStatus.VOID,
};

export function statusFromProto(s: pb.InvoiceStatus): InvoiceStatus | "" {
  for (const [k, v] of Object.entries(STATUS)) if (v === s) return k as InvoiceStatus;
  return "";
}

const KIND: Record<LineKind, pb.LineKind> = {
  usage: pb.LineKind.USAGE,
  seats: pb.LineKind.SEATS,
  flat: pb.LineKind.FLAT,
  minimum_true_up: pb.LineKind.MINIMUM_TRUE_UP,
  credits_applied: pb.LineKind.CREDITS_APPLIED,
  overage: pb.LineKind.OVERAGE,
  adjustment: pb.LineKind.ADJUSTMENT,
  tax: pb.LineKind.TAX,
  carried_forward: pb.LineKind.CARRIED_FORWARD,
  discount: pb.LineKind.DISCOUNT,
  one_off: pb.LineKind.ONE_OFF,
};

const MODE: Record<RoundingMode, pb.RoundingMode> = {
  half_even: pb.RoundingMode.HALF_EVEN,
  half_up: pb.RoundingMode.HALF_UP,
  half_down: pb.RoundingMode.HALF_DOWN,
  floor: pb.RoundingMode.FLOOR,
  ceil: pb.RoundingMode.CEIL,
  down: pb.RoundingMode.DOWN,
  up: pb.RoundingMode.UP,
};

/** modeFromProto: unspecified -> half_even; an unknown number -> undefined. */
export function modeFromProto(m: pb.RoundingMode): RoundingMode | undefined {
  if (m === pb.RoundingMode.UNSPECIFIED) return "half_even";
  for (const [k, v] of Object.entries(MODE)) if (v === m) return k as RoundingMode;
  return undefined;
}

export function intervalFromProto(i: pb.PeriodInterval): PeriodInterval | undefined {
  switch (i) {
    case pb.PeriodInterval.UNSPECIFIED:
    case pb.PeriodInterval.MONTH:
      return "month";
    case pb.PeriodInterval.QUARTER:
      return "quarter";
    case pb.PeriodInterval.YEAR:
      return "year";
    default:
      return undefined;
  }
}

export function anchorFromProto(a: pb.PeriodAnchor): PeriodAnchor | undefined {
  switch (a) {
    case pb.PeriodAnchor.UNSPECIFIED:
    case pb.PeriodAnchor.ANNIVERSARY:
      return "anniversary";
    case pb.PeriodAnchor.CALENDAR:
      return "calendar";
    default:
      return undefined;
  }
}

export function lineToProto(l: InvoiceLine): pb.InvoiceLine {
  return create(pb.InvoiceLineSchema, {
    id: l.id,
    kind: KIND[l.kind],
    description: l.description,
    chargeId: l.chargeId,
    subscriptionId: l.subscriptionId,
    quantity: l.quantity,
    unitPrice: l.unitPrice,
    amountNanos: l.amountNanos,
    residueInNanos: l.residueInNanos,
    roundedAmountNanos: l.roundedAmountNanos,
    amountMinor: l.amountMinor,
    residueOutNanos: l.residueOutNanos,
    periodStart: ts(l.periodStart),
    periodEnd: ts(l.periodEnd),
    expandable: l.expandable,
  });
}

export function invoiceToProto(inv: Invoice): pb.Invoice {
  const t = inv.totals;
  return create(pb.InvoiceSchema, {
    id: inv.id,
    number: inv.number,
    customerId: inv.customerId,
    subscriptionId: inv.subscriptionId,
    status: STATUS[inv.status],
    unit: inv.unit,
    periodStart: ts(inv.periodStart),
    periodEnd: ts(inv.periodEnd),
    timeZone: inv.timeZone,
    lines: inv.lines.map(lineToProto),
    totals: create(pb.InvoiceTotalsSchema, {
      subtotalNanos: t.subtotalNanos,
      discountNanos: t.discountNanos,
      taxNanos: t.taxNanos,
      totalNanos: t.totalNanos,
      creditsAppliedNanos: t.creditsAppliedNanos,
      amountDueNanos: t.amountDueNanos,
      amountDueMinor: t.amountDueMinor,
      exactNanos: t.exactNanos,
      residueCarriedNanos: t.residueCarriedNanos,
      deferredNanos: t.deferredNanos,
    }),
    roundingMode: MODE[inv.roundingMode],
    taxRateBps: inv.taxRateBps,
    deferral:
      inv.deferral === undefined
        ? undefined
        : create(pb.DeferralSchema, { amountNanos: inv.deferral.amountNanos, since: ts(inv.deferral.since), periods: inv.deferral.periods }),
    createdAt: ts(inv.createdAt),
    finalizedAt: ts(inv.finalizedAt),
    paidAt: ts(inv.paidAt),
    voidedAt: ts(inv.voidedAt),
    creditNote:
      inv.creditNote === undefined
        ? undefined
        : create(pb.CreditNoteSchema, {
            id: inv.creditNote.id,
            invoiceId: inv.creditNote.invoiceId,
            number: inv.creditNote.number,
            amountNanos: inv.creditNote.amountNanos,
            unit: inv.creditNote.unit,
            reason: inv.creditNote.reason,
            createdAt: ts(inv.creditNote.createdAt),
          }),
    paymentId: inv.paymentId,
    ledgerTransferIds: inv.ledgerTransferIds,
    refreshedAt: ts(inv.refreshedAt),
    creditsInUnits: (inv.creditsInUnits ?? []).map((c) =>
      create(pb.CreditsInUnitsSchema, { creditTypeId: c.creditTypeId, name: c.name, creditsNanos: c.creditsNanos, rate: c.rate, rateCurrency: c.rateCurrency, valueNanos: c.valueNanos }),
    ),
  });
}

export function settingsToProto(s: StoredSettings): pb.BillingSettings {
  return create(pb.BillingSettingsSchema, {
    customerId: s.customerId,
    taxRateBps: s.taxRateBps,
    roundingMode: MODE[s.roundingMode],
    discountBps: s.discountBps,
    discountNanos: s.discountNanos,
    minimumBillableNanos: s.minimumBillableNanos,
    deferralPeriodsMax: s.deferralPeriodsMax,
    deferralUntil: ts(s.deferralUntil),
    periodInterval: s.periodInterval === "month" ? pb.PeriodInterval.MONTH : s.periodInterval === "quarter" ? pb.PeriodInterval.QUARTER : pb.PeriodInterval.YEAR,
    periodAnchor: s.periodAnchor === "calendar" ? pb.PeriodAnchor.CALENDAR : pb.PeriodAnchor.ANNIVERSARY,
    gracePeriodMs: BigInt(s.gracePeriodMs),
    lineMinimumBillableNanos: s.lineMinimumBillableNanos ?? 0n,
    autoFinalize: s.autoFinalize,
  });
}

export type { BillingSettings };
