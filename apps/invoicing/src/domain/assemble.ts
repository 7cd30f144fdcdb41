/**
 * Invoice assembly (pure): charge lines -> rounded lines, discount, tax, credits applied,
 * minimum billable amount with deferral, totals, and the residues to carry.
 *
 * Order (each step rounds to the minor unit with the customer's mode and carries its residue
 * under its own key, so every rounding is named and visible on the line):
 *   subtotal = sum of rounded charge lines (usage, seats, flat, true-up, overage, adjustment)
 *   discount = -(subtotal x discount_bps + fixed discount), at most the subtotal
 *   tax      = (subtotal + discount) x tax_rate_bps
 *   total    = subtotal + discount + tax
 *   credits  = -(prepaid money consumed from the wallet in the period), then one line per
 *              earlier invoiced period for prepaid money consumed in it after its invoice (late)
 *   due      = total + credits + carried in (an amount deferred from earlier periods, or a
 *              credit balance: negative)
 * If 0 < due < minimum billable amount and the deferral may continue (fewer than N periods and
 * before the deferral date), a negative carried_forward line takes due to zero and the amount
 * is carried to the next invoice, which shows it with the start of the first deferred period.
 * If due < 0 (a credit balance: credits, discounts or returns above the period's charges) and a
 * later invoice of the customer will come, a positive carried_forward line takes due to zero and
 * the credit is carried to the next invoice (no limit: it is the customer's money), which applies
 * it as a negative line; on the customer's last invoice the negative amount due stands.
 *
 * Per-line minimum (line_minimum_billable_nanos): each usage line is rounded as usual (its
 * residue carried), then with the amount its charge carried in (a carried_forward line naming
 * the first deferred period, part of the subtotal): if 0 < rounded + carried in < minimum and
 * the deferral may continue (same limits), a negative carried_forward line takes it back out
 * and the sum is carried to the next invoice for that charge. Carried amounts are whole minor
 * units (rounded line amounts), so for every period
 *     rated + true-up = invoiced + residue carried (delta) + line deferrals (delta) + invoice deferral (delta).
 * The minimum commitment true-up compares the commitment with the period's own charges as
 * rated (exact): its usage (rating's exact period when given, commitmentUsageNanos; else its usage
 * lines) and the fees covering it (commitmentFees), not fees billed in
 * advance for the next period, one-offs, overage or adjustments for earlier periods (rating
 * RatePeriod's rule), and not what the line minimum carried in or out (counting those would bill a
 * shortfall for usage carried out, and bill it again when the carried usage is billed).
 * On a subscription's last invoice (subscriptionEnds) nothing is carried below the line minimum,
 * and when the customer has no further invoice (customerEnds) nothing below the minimum billable
 * amount: it is billed (no later invoice would).
 */
import { currency, type RoundingMode } from "@nanobill/money";
import type { BillingSettings, Deferral, InvoiceLine, InvoiceTotals, LineKind } from "./invoice.js";
import { exact, roundLine, timesBps, ZERO_RESIDUE, type ExactNanos, type ResidueState } from "./rounding.js";
import { localDate } from "./periods.js";
import { InvalidInput } from "./settings.js";
import { LINES_PER_INVOICE_MAX } from "../limits.js";

/** A charge line before rounding. */
export interface ChargeInput {
  kind: Exclude<LineKind, "tax" | "discount" | "credits_applied" | "carried_forward">;
  /** residueKey keys the carried residue: (customer, residueKey). */
  residueKey: string;
  chargeId: string;
  subscriptionId: string;
  description: string;
  quantity: string;
  unitPrice: string;
  amount: ExactNanos;
  periodStart: Date;
  periodEnd: Date;
  expandable: boolean;
  /** topUpUnit: an auto top-up's wallet unit (InvoiceLine.topUpUnit); one_off lines only. */
  topUpUnit?: string;
}

export interface AssembleInput {
  currency: string;
  settings: BillingSettings;
  charges: ChargeInput[];
  /**
   * minimumCommitmentNanos: the period's commitment (0 = none), trued up from the period's own
   * lines only (rating RatePeriod's rule): the usage charges of this invoice plus commitmentFees.
   * Fees billed in advance for the next period, one-off top-ups, overage and adjustments for
   * earlier periods (late usage, fee changes) are not the period's and do not count.
   */
  minimumCommitmentNanos: bigint;
  /**
   * commitmentFees: the flat and seat fees covering this period (exact), wherever billed (in
   * advance on the previous invoice; period 0's on its own invoice): they count towards the
   * commitment. Absent = none.
   */
  commitmentFees?: ExactNanos;
  /**
   * commitmentUsageNanos: the period's own usage for the commitment, from rating's exact period
   * (RatePeriod's lines of the subscription, commitmentUsage), counted instead of this invoice's
   * usage lines (billed by hour bucket: with a boundary off the hour, the boundary hour belongs to
   * a neighbouring invoice). The usage lines are billed as they are. Absent = the usage lines.
   */
  commitmentUsageNanos?: bigint;
  /**
   * commitments: an invoice over several subscriptions (the preview): each subscription's
   * commitment (its plan version's, a term of that subscription), trued up from its own usage
   * lines (charges with its subscriptionId; or `usageNanos`, rating's exact period, as
   * commitmentUsageNanos) plus the fees covering its period (`fees`), one true-up line each
   * (rating RatePeriod's rule). Used instead of minimumCommitmentNanos (0 then).
   */
  commitments?: Array<{ subscriptionId: string; minimumNanos: bigint; usageNanos?: bigint; fees?: ExactNanos }>;
  /** creditsAppliedNanos: prepaid money consumed in the period (>= 0). */
  creditsAppliedNanos: bigint;
  /**
   * lateCredits: prepaid money consumed in earlier, already invoiced periods and not yet applied
   * (late events burn the wallet at their own time): a credits-applied line each, naming that
   * period (a negative amount reverses credits applied earlier). Absent = none.
   */
  lateCredits?: LateCredit[];
  residues: ReadonlyMap<string, ResidueState>;
  deferredIn: Deferral | undefined;
  /**
   * lineDeferralsIn: usage amounts below the line minimum carried in, per charge (only the
   * charges this invoice bills; each is consumed: billed now or carried on). Absent = none.
   */
  lineDeferralsIn?: ReadonlyMap<string, LineDeferral>;
  periodStart: Date;
  periodEnd: Date;
  /**
   * timeZone: the customer's IANA time zone: dates named in line descriptions ("since 2026-02-01")
   * are its local dates, as the invoice labels its period. Absent or "" = UTC.
   */
  timeZone?: string;
  /**
   * subscriptionEnds: this is the last invoice of its subscription (the subscription ends at or
   * before the period end): nothing is carried below the line minimum (no later invoice of the
   * subscription would bill it); what its charges carried in is billed now.
   */
  subscriptionEnds?: boolean;
  /**
   * customerEnds: no subscription of the customer continues after the period: nothing is carried
   * below the (invoice) minimum billable amount either; it is billed now.
   */
  customerEnds?: boolean;
}

/** LineDeferral: a charge's usage below the line minimum, carried (whole minor units). */
export interface LineDeferral extends Deferral {
  subscriptionId: string;
  description: string;
}

export interface LateCredit {
  /** nanos: prepaid money to apply (> 0) or to take back (< 0). */
  nanos: bigint;
  subscriptionId: string;
  periodStart: Date;
  periodEnd: Date;
}

export interface AssembledInvoice {
  lines: InvoiceLine[];
  totals: InvoiceTotals;
  /** residues: the new state of every residue key this invoice touched. */
  residues: Map<string, ResidueState>;
  /** deferralOut: the amount carried to the next invoice (negative: a credit balance), or undefined (none). */
  deferralOut: Deferral | undefined;
  /** deferralShown: deferralOut, or the deferral billed now (for display). */
  deferralShown: Deferral | undefined;
  /** lineDeferralsOut: per charge, the usage carried to the next invoice (below the line minimum). */
  lineDeferralsOut: Map<string, LineDeferral>;
  /** lineDeferralsConsumed: the charges whose carried-in line deferral this invoice consumed. */
  lineDeferralsConsumed: Set<string>;
}

export const RESIDUE_KEY_DISCOUNT = "_discount";
export const RESIDUE_KEY_TAX = "_tax";
export const RESIDUE_KEY_CREDITS = "_credits";
/** The chargeId of invoice-level carried_forward lines: an amount below the minimum billable amount. */
export const CHARGE_ID_DEFERRED = "_deferred";
/**
 * The chargeId of credit-balance carried_forward lines: a negative amount due carried to the next
 * invoice (out: positive line; in: negative line). Not revenue: the ledger legs leave them out.
 */
export const CHARGE_ID_CREDIT_BALANCE = "_credit_balance";
/**
 * CHARGE_ID_CAPTURED_HOLDS: the charge id (and residue key) of the line billing captured holds. It
 * is every subscription's (not one charge's), so the per-line minimum leaves it alone: a line
 * deferral is kept per (customer, charge) and two subscriptions' captured holds carried below the
 * minimum overwrote each other (one was never billed).
 */
export const CHARGE_ID_CAPTURED_HOLDS = "_captured_holds";
/** RESIDUE_KEY_TOP_UP: the residue key of every one-off (auto top-up) line; its chargeId is the grant id. */
export const RESIDUE_KEY_TOP_UP = "_top_up";

/**
 * residueKeyOf: the residue key a stored line rounded on (undefined: a carried_forward line, whole
 * minor units, no residue). Every other line's key is its chargeId, but one-off lines share
 * RESIDUE_KEY_TOP_UP.
 */
export function residueKeyOf(line: Pick<InvoiceLine, "kind" | "chargeId">): string | undefined {
  if (line.kind === "carried_forward") return undefined;
  return line.kind === "one_off" ? RESIDUE_KEY_TOP_UP : line.chargeId;
}

/**
 * carriedResidueLines: the lines whose residue out is carried to the next period: per residue key,
 * the last line of the invoice on it, when its residue out is not zero. An earlier line on the same
 * key (a fee's phase parts, usage and its late adjustment, late credits) passed its residue to the
 * next line of this invoice, which took it in. Their residues out sum to the invoice's
 * residueCarriedNanos (= the residue state per key after the invoice).
 */
export function carriedResidueLines<L extends Pick<InvoiceLine, "kind" | "chargeId" | "residueOutNanos">>(lines: readonly L[]): L[] {
  const last = new Map<string, L>();
  for (const l of lines) {
    const key = residueKeyOf(l);
    if (key !== undefined) last.set(key, l);
  }
  const carried = new Set(last.values());
  return lines.filter((l) => carried.has(l) && l.residueOutNanos !== 0n);
}

const CHARGE_KINDS: ReadonlySet<LineKind> = new Set(["usage", "seats", "flat", "minimum_true_up", "overage", "adjustment", "one_off"]);


export function assembleInvoice(input: AssembleInput): AssembledInvoice {
  const cur = currency(input.currency, "currency");
  const timeZone = input.timeZone === undefined || input.timeZone === "" ? "UTC" : input.timeZone;
  /** isoDay: the local date of d in the customer's time zone (the dates line descriptions name). */
  const isoDay = (d: Date): string => localDate(d, timeZone);
  const mode: RoundingMode = input.settings.roundingMode;
  if (input.creditsAppliedNanos < 0n) throw new InvalidInput("credits_applied_nanos", "must be >= 0");
  const lateCredits = (input.lateCredits ?? []).filter((c) => c.nanos !== 0n);
  const lineDeferralsIn = input.lineDeferralsIn ?? new Map<string, LineDeferral>();
  // lines: the charges, late credits, a carried-in and a carried-out line per charge the line minimum
  // looks at (usage charges and charges carried in), true-up, discount, tax, credits, invoice deferral in and out
  const lineMinCharges = new Set([...((input.settings.lineMinimumBillableNanos ?? 0n) > 0n ? input.charges.filter((c) => c.kind === "usage" && c.chargeId !== CHARGE_ID_CAPTURED_HOLDS).map((c) => c.chargeId) : []), ...lineDeferralsIn.keys()]);
  if (input.charges.length + lateCredits.length + lineDeferralsIn.size + lineMinCharges.size + 6 > LINES_PER_INVOICE_MAX) {
    throw new InvalidInput("lines", `an invoice holds at most ${LINES_PER_INVOICE_MAX} lines`);
  }
  const residues = new Map<string, ResidueState>();
  const stateOf = (key: string): ResidueState => residues.get(key) ?? input.residues.get(key) ?? ZERO_RESIDUE;
  const lines: InvoiceLine[] = [];
  const lastLineOfKey = new Map<string, InvoiceLine>();
  const push = (
    kind: LineKind,
    key: string | undefined,
    amount: ExactNanos,
    fields: { chargeId: string; subscriptionId: string; description: string; quantity: string; unitPrice: string; periodStart: Date; periodEnd: Date; expandable: boolean },
  ): InvoiceLine => {
    const r = roundLine(amount, key === undefined ? ZERO_RESIDUE : stateOf(key), cur.code, mode, cur.nanosPerMinor);
    if (key !== undefined) residues.set(key, r.state);
    else if (r.residueOutNanos !== 0n || r.state.subNanoNum !== 0n) throw new Error(`line ${kind} without residue key must be a whole minor amount`);
    const line: InvoiceLine = {
      id: `line_${String(lines.length + 1).padStart(3, "0")}`,
      kind,
      ...fields,
      amountNanos: r.amountNanos,
      residueInNanos: r.residueInNanos,
      roundedAmountNanos: r.roundedNanos,
      amountMinor: r.amountMinor,
      residueOutNanos: r.residueOutNanos,
    };
    lines.push(line);
    if (key !== undefined) lastLineOfKey.set(key, line);
    return line;
  };
  const whole = { subscriptionId: "", quantity: "1", unitPrice: "", periodStart: input.periodStart, periodEnd: input.periodEnd, expandable: false };

  // 1. Charge lines and the minimum commitment true-up (from the period's usage and the fees covering it).
  let subtotal = 0n;
  // the period's usage for the commitment: rating's exact period when given, else the usage lines
  let chargeExactNum: ExactNanos = exact(input.commitmentUsageNanos ?? 0n);
  const plus = (x: ExactNanos, a: ExactNanos): ExactNanos => ({ num: x.num * a.den + a.num * x.den, den: x.den * a.den });
  const addExactCharge = (a: ExactNanos) => {
    chargeExactNum = plus(chargeExactNum, a);
  };
  // usage per subscription (exact), for the per-subscription commitments
  const usageBySub = new Map<string, ExactNanos>();
  const lineMin = input.settings.lineMinimumBillableNanos ?? 0n;
  const usageRounded = new Map<string, InvoiceLine>();
  for (const c of input.charges) {
    if (!CHARGE_KINDS.has(c.kind)) throw new InvalidInput("charges.kind", `must be a charge kind, got ${c.kind}`);
    const line = push(c.kind, c.residueKey, c.amount, c);
    subtotal += line.roundedAmountNanos;
    if (c.kind === "usage" && input.commitmentUsageNanos === undefined) addExactCharge(c.amount);
    if (c.kind === "usage") usageBySub.set(c.subscriptionId, plus(usageBySub.get(c.subscriptionId) ?? { num: 0n, den: 1n }, c.amount));
    if (c.kind === "usage" && c.chargeId !== CHARGE_ID_CAPTURED_HOLDS && !usageRounded.has(c.chargeId)) usageRounded.set(c.chargeId, line);
  }
  if (input.commitmentFees !== undefined) addExactCharge(input.commitmentFees);
  // 1b. Per-line minimum: usage lines (with what their charge carried in) below it are carried.
  const lineDeferralsOut = new Map<string, LineDeferral>();
  const lineDeferralsConsumed = new Set<string>();
  const chargeIds = [...new Set([...(lineMin > 0n ? usageRounded.keys() : []), ...lineDeferralsIn.keys()])].sort();
  for (const chargeId of chargeIds) {
    const line = usageRounded.get(chargeId);
    const din = lineDeferralsIn.get(chargeId);
    const carriedIn = din?.amountNanos ?? 0n;
    const acc = (line?.roundedAmountNanos ?? 0n) + carriedIn;
    const name = din?.description ?? line?.description.replace(/: usage.*$/, "") ?? chargeId;
    const subscriptionId = line?.subscriptionId ?? din?.subscriptionId ?? "";
    if (din !== undefined) {
      lineDeferralsConsumed.add(chargeId);
      if (carriedIn !== 0n) {
        const l = push("carried_forward", undefined, exact(carriedIn), {
          ...whole,
          subscriptionId,
          chargeId,
          periodStart: din.since,
          description: `${name}: usage below the line minimum carried forward since ${isoDay(din.since)} (${din.periods} period${din.periods === 1 ? "" : "s"})`,
        });
        // not a charge of this period: the commitment true-up compares the commitment with what was rated for it
        subtotal += l.roundedAmountNanos;
      }
    }
    if (lineMin > 0n && acc > 0n && acc < lineMin && input.subscriptionEnds !== true && deferralMayContinue(input, din?.periods ?? 0)) {
      const since = din?.since ?? input.periodStart;
      lineDeferralsOut.set(chargeId, { amountNanos: acc, since, periods: (din?.periods ?? 0) + 1, subscriptionId, description: name });
      const l = push("carried_forward", undefined, exact(-acc), {
        ...whole,
        subscriptionId,
        chargeId,
        periodStart: since,
        description: `${name}: usage below the line minimum, carried to the next invoice (deferred since ${isoDay(since)})`,
      });
      // the usage carried out was rated in this period: it still counts towards the commitment
      subtotal += l.roundedAmountNanos;
    }
  }
  if (input.minimumCommitmentNanos > 0n && (input.commitments?.length ?? 0) > 0) throw new InvalidInput("commitments", "give either one commitment (minimum_commitment_nanos) or one per subscription, not both");
  const trueUp = (minimumNanos: bigint, rated: ExactNanos, subscriptionId: string, description: string) => {
    if (minimumNanos <= 0n || rated.num >= minimumNanos * rated.den) return;
    const line = push("minimum_true_up", "_true_up", { num: minimumNanos * rated.den - rated.num, den: rated.den }, { ...whole, subscriptionId, chargeId: "_true_up", description });
    subtotal += line.roundedAmountNanos;
  };
  trueUp(input.minimumCommitmentNanos, chargeExactNum, "", "Minimum commitment true-up");
  for (const c of input.commitments ?? []) {
    const usage = c.usageNanos !== undefined ? exact(c.usageNanos) : (usageBySub.get(c.subscriptionId) ?? { num: 0n, den: 1n });
    const rated = c.fees === undefined ? usage : plus(usage, c.fees);
    trueUp(c.minimumNanos, rated, c.subscriptionId, `Minimum commitment true-up (${c.subscriptionId})`);
  }

  // 2. Discount: percentage of the subtotal plus a fixed amount, never more than the subtotal.
  let discount = 0n;
  if (subtotal > 0n && (input.settings.discountBps > 0 || input.settings.discountNanos > 0n)) {
    const pct = timesBps(subtotal, input.settings.discountBps);
    let d: ExactNanos = { num: pct.num + input.settings.discountNanos * pct.den, den: pct.den };
    if (d.num > subtotal * d.den) d = exact(subtotal);
    const label = [input.settings.discountBps > 0 ? `${input.settings.discountBps / 100}%` : "", input.settings.discountNanos > 0n ? "fixed" : ""].filter(Boolean).join(" + ");
    const line = push("discount", RESIDUE_KEY_DISCOUNT, { num: -d.num, den: d.den }, { ...whole, chargeId: RESIDUE_KEY_DISCOUNT, description: `Discount (${label})` });
    // The discount residue carried in can round the line past the subtotal: the billed discount is
    // clamped to -subtotal (a whole minor amount) and the difference stays carried on `_discount`
    // (billed + carried == exact still holds: the rounded amount and the residue move together).
    if (line.roundedAmountNanos < -subtotal) {
      const over = -subtotal - line.roundedAmountNanos;
      line.roundedAmountNanos = -subtotal;
      line.amountMinor = -subtotal / cur.nanosPerMinor;
      line.residueOutNanos -= over;
      const st = residues.get(RESIDUE_KEY_DISCOUNT)!;
      residues.set(RESIDUE_KEY_DISCOUNT, { ...st, residueNanos: st.residueNanos - over });
    }
    discount = line.roundedAmountNanos;
  }

  // 3. Tax on the discounted subtotal, signed: a net credit (removed seats, a negative adjustment)
  // returns the tax charged on it (a negative tax line; the ledger's tax leg reverses its direction).
  let tax = 0n;
  if (input.settings.taxRateBps > 0) {
    const base = subtotal + discount;
    const line = push("tax", RESIDUE_KEY_TAX, timesBps(base, input.settings.taxRateBps), {
      ...whole,
      chargeId: RESIDUE_KEY_TAX,
      description: `Tax ${input.settings.taxRateBps / 100}%`,
    });
    tax = line.roundedAmountNanos;
  }
  const total = subtotal + discount + tax;

  // 4. Credits and prepaid money applied.
  let credits = 0n;
  if (input.creditsAppliedNanos > 0n) {
    const line = push("credits_applied", RESIDUE_KEY_CREDITS, exact(-input.creditsAppliedNanos), {
      ...whole,
      chargeId: RESIDUE_KEY_CREDITS,
      description: "Prepaid credits applied",
    });
    credits = line.roundedAmountNanos;
  }
  for (const c of lateCredits) {
    const line = push("credits_applied", RESIDUE_KEY_CREDITS, exact(-c.nanos), {
      ...whole,
      subscriptionId: c.subscriptionId,
      periodStart: c.periodStart,
      periodEnd: c.periodEnd,
      chargeId: RESIDUE_KEY_CREDITS,
      description: `Prepaid credits ${c.nanos > 0n ? "consumed late" : "returned"} for ${isoDay(c.periodStart)} to ${isoDay(c.periodEnd)} (after its invoice)`,
    });
    credits += line.roundedAmountNanos;
  }

  // 5. Amounts carried from earlier invoices (deferred below the minimum billable amount, or a
  // credit balance), then the minimum billable amount, then a credit balance carried on.
  let due = total + credits;
  // An amount carried in another currency (the customer's currency changed since) is not applied
  // ($12 is not 12 yen), and nothing is carried over it (one carried amount per customer): it
  // waits in its own unit, and this invoice bills what it would otherwise carry.
  const foreign = input.deferredIn?.unit !== undefined && input.deferredIn.unit !== input.currency;
  const din = !foreign && input.deferredIn !== undefined && input.deferredIn.amountNanos !== 0n ? input.deferredIn : undefined;
  if (din !== undefined) {
    const credit = din.amountNanos < 0n;
    const line = push("carried_forward", undefined, exact(din.amountNanos), {
      ...whole,
      periodStart: din.since,
      chargeId: credit ? CHARGE_ID_CREDIT_BALANCE : CHARGE_ID_DEFERRED,
      description: credit
        ? `Credit balance from earlier invoices since ${isoDay(din.since)} (${din.periods} period${din.periods === 1 ? "" : "s"})`
        : `Carried forward: below the minimum billable amount since ${isoDay(din.since)} (${din.periods} period${din.periods === 1 ? "" : "s"})`,
    });
    due += line.roundedAmountNanos;
  }
  // A carry continues the one carried in when it has the same sign (its first period and count);
  // periods count distinct periods: an amount carried last by an invoice of this same period (the
  // customer's other subscription) does not count this period twice.
  const carryOn = (sign: 1n | -1n): { since: Date; periods: number } => {
    if (din === undefined || (din.amountNanos > 0n ? 1n : -1n) !== sign) return { since: input.periodStart, periods: 0 };
    const samePeriod = din.lastPeriodEnd !== undefined && din.lastPeriodEnd.getTime() === input.periodEnd.getTime();
    return { since: din.since, periods: Math.max(0, din.periods - (samePeriod ? 1 : 0)) };
  };
  let deferralOut: Deferral | undefined;
  const min = input.settings.minimumBillableNanos;
  const mayCarry = input.customerEnds !== true && !foreign;
  if (min > 0n && due > 0n && due < min) {
    const { since, periods } = carryOn(1n);
    if (mayCarry && deferralMayContinue(input, periods)) {
      deferralOut = { amountNanos: due, since, periods: periods + 1, lastPeriodEnd: input.periodEnd };
      push("carried_forward", undefined, exact(-due), {
        ...whole,
        chargeId: CHARGE_ID_DEFERRED,
        periodStart: since,
        description: `Below the minimum billable amount: carried to the next invoice (deferred since ${isoDay(since)})`,
      });
      due = 0n;
    }
  } else if (due < 0n && mayCarry) {
    // A credit balance (credits, discounts or returned amounts above the period's charges) is the
    // customer's money: it is carried to the next invoice, without limit, and applied there. When
    // no later invoice will come, the negative amount due stands (owed back to the customer).
    const { since, periods } = carryOn(-1n);
    deferralOut = { amountNanos: due, since, periods: periods + 1, lastPeriodEnd: input.periodEnd };
    push("carried_forward", undefined, exact(-due), {
      ...whole,
      chargeId: CHARGE_ID_CREDIT_BALANCE,
      periodStart: since,
      description: `Credit balance carried to the next invoice (since ${isoDay(since)})`,
    });
    due = 0n;
  }

  let exactSum = 0n;
  for (const l of lines) exactSum += l.amountNanos;
  // residue carried: per key, the residue out of the invoice's last line on it (the key's new state);
  // an earlier line's residue out on a shared key was taken in by the next line and is not carried.
  let residueSum = 0n;
  for (const l of lastLineOfKey.values()) residueSum += l.residueOutNanos;
  const totals: InvoiceTotals = {
    subtotalNanos: subtotal,
    discountNanos: discount,
    taxNanos: tax,
    totalNanos: total,
    creditsAppliedNanos: credits,
    amountDueNanos: due,
    amountDueMinor: due / cur.nanosPerMinor,
    exactNanos: exactSum,
    residueCarriedNanos: residueSum,
    deferredNanos: deferralOut?.amountNanos ?? 0n,
  };
  const deferralShown = deferralOut ?? din;
  return { lines, totals, residues, deferralOut, deferralShown, lineDeferralsOut, lineDeferralsConsumed };
}

/**
 * deferralMayContinue: an amount deferred for `periods` periods so far may be deferred once more:
 * fewer than deferral_periods_max periods (0 = no count limit) and the period ends before
 * deferral_until; a deferral with neither limit never starts (no deferral is endless).
 */
function deferralMayContinue(input: AssembleInput, periods: number): boolean {
  const s = input.settings;
  const byCount = s.deferralPeriodsMax === 0 || periods < s.deferralPeriodsMax;
  const byDate = s.deferralUntil === undefined || input.periodEnd.getTime() < s.deferralUntil.getTime();
  const limited = s.deferralPeriodsMax > 0 || s.deferralUntil !== undefined;
  return byCount && byDate && limited;
}
