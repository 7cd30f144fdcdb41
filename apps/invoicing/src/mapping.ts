/** proto <-> domain. Amounts stay bigint end to end; enums map one to one. */
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { RoundingMode } from "@nanobill/money";
import * as pb from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import type { BillingSettings, Invoice, InvoiceLine, InvoiceStatus, LineKind } from "./domain/invoice.js";
import type { PeriodAnchor, PeriodInterval } from "./domain/periods.js";
import type { StoredSettings } from "./store/invoice-store.js";
import { InvalidInput } from "./domain/settings.js";

const ts = (d: Date | undefined): Timestamp | undefined => (d === undefined ? undefined : timestampFromDate(d));
export const dateOf = (t: Timestamp | undefined): Date | undefined => (t === undefined ? undefined : timestampDate(t));

/** TIME_MIN_MS / TIME_MAX_MS: the instants a request may name, years 1..9999 UTC (inside PostgreSQL's timestamptz and JavaScript's Date). */
export const TIME_MIN_MS = new Date("0001-01-01T00:00:00.000Z").getTime();
export const TIME_MAX_MS = new Date("9999-12-31T23:59:59.999Z").getTime();

/** inTimeRange: `ms` is a whole millisecond inside TIME_MIN_MS..TIME_MAX_MS. */
export function inTimeRange(ms: number): boolean {
  return Number.isSafeInteger(ms) && ms >= TIME_MIN_MS && ms <= TIME_MAX_MS;
}

/**
 * timeOf: a request timestamp as a Date, validated at the edge: nanos in 0..999,999,999 and the
 * instant in years 1..9999 UTC; otherwise InvalidInput naming `field` (never an Internal error
 * from an invalid Date or a value the database rejects).
 */
export function timeOf(t: Timestamp | undefined, field: string): Date | undefined {
  if (t === undefined) return undefined;
  const range = "must be a time in years 1..9999 UTC";
  if (!Number.isInteger(t.nanos) || t.nanos < 0 || t.nanos > 999_999_999) throw new InvalidInput(field, `${range}: nanos must be in 0..999999999, got ${t.nanos}`);
  if (t.seconds < BigInt(Math.floor(TIME_MIN_MS / 1000)) || t.seconds > BigInt(Math.floor(TIME_MAX_MS / 1000))) {
    throw new InvalidInput(field, `${range}, got ${t.seconds} seconds since the epoch`);
  }
  const d = timestampDate(t);
  if (!inTimeRange(d.getTime())) throw new InvalidInput(field, `${range}, got ${t.seconds} seconds since the epoch`);
  return d;
}

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
