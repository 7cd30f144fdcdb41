/** Display formatting of amounts (exact: bigint nanos -> decimal strings; never floats). */
import { currency, formatNanos } from "@nanobill/money";
import { CHARGE_ID_CREDIT_BALANCE, CHARGE_ID_DEFERRED } from "../domain/assemble.js";
import type { Invoice } from "../domain/invoice.js";
import { localDate } from "../domain/periods.js";

/** money: a rounded amount with the currency's minor digits ("47.34 USD", "47 JPY"). */
export function money(nanos: bigint, unit: string): string {
  return `${formatNanos(nanos, { fractionDigitsMin: currency(unit, "unit").minorUnits })} ${unit}`;
}

/** exactMoney: an exact nano amount ("0.008755 USD"). */
export function exactMoney(nanos: bigint, unit: string): string {
  return `${formatNanos(nanos, { fractionDigitsMin: currency(unit, "unit").minorUnits })} ${unit}`;
}

/** creditsText: credits of one credit type and their money value, for the "Credits applied" section. */
export function creditsText(c: { creditTypeId: string; name: string; creditsNanos: bigint; rate: string; rateCurrency: string; valueNanos: bigint }): string {
  const credits = formatNanos(c.creditsNanos, { fractionDigitsMin: 0 });
  const name = c.name !== "" && c.name !== c.creditTypeId ? `${c.name} (${c.creditTypeId})` : c.creditTypeId;
  const value =
    c.rate === "" || c.rateCurrency === ""
      ? "no exchange rate known"
      : `worth ${exactMoney(c.valueNanos, c.rateCurrency)} at ${c.rate} ${c.rateCurrency} per credit (rate in force at the period end, half-even to the nano)`;
  return `${credits} ${c.creditTypeId} credits of ${name} applied, ${value}; paid in credits, not in the totals`;
}

/**
 * carriedRows: the totals-table rows between "Credits applied" and "Amount due", from the
 * invoice-level carried_forward lines (not part of the total): an amount deferred from earlier
 * invoices (below the minimum billable amount, positive) and a credit balance from earlier
 * invoices (negative) that this invoice takes in, then what it carries out: an amount deferred
 * (shown negative) or a credit balance carried on (shown positive). So
 * due = total + credits applied + these rows. (The per-line minimum's carried_forward lines are
 * in the subtotal already.)
 */
export function carriedRows(inv: Invoice): Array<[string, bigint]> {
  let deferredIn = 0n;
  let creditIn = 0n;
  for (const l of inv.lines) {
    if (l.kind !== "carried_forward") continue;
    if (l.chargeId === CHARGE_ID_DEFERRED && l.roundedAmountNanos > 0n) deferredIn += l.roundedAmountNanos;
    if (l.chargeId === CHARGE_ID_CREDIT_BALANCE && l.roundedAmountNanos < 0n) creditIn += l.roundedAmountNanos;
  }
  const rows: Array<[string, bigint]> = [];
  if (deferredIn !== 0n) rows.push(["Carried forward from earlier invoices", deferredIn]);
  if (creditIn !== 0n) rows.push(["Credit balance from earlier invoices", creditIn]);
  const out = inv.totals.deferredNanos;
  if (out > 0n) rows.push(["Deferred to next invoice", -out]);
  if (out < 0n) rows.push(["Credit balance carried to next invoice", -out]);
  return rows;
}

/** day: the local date "YYYY-MM-DD" of d in the invoice's time zone ("" = UTC), the zone it is labelled with. */
export function day(d: Date | undefined, timeZone: string): string {
  return d === undefined ? "" : localDate(d, timeZone === "" ? "UTC" : timeZone);
}

const HOUR_MS = 3_600_000;

/**
 * lineDay: the local date of a line's period bound. Usage, late-usage and overage lines cover the
 * period's hour buckets, so their bounds are the period's instants floored to the UTC hour: in a
 * zone whose offset is not whole hours (Asia/Kolkata, Adelaide, St John's) local midnight floors to
 * 23:30 or 23:15 of the day before, and its date printed one day early (review of 2026-11-30). A
 * bound on the hour is shown as the date of its hour's last instant, the date of any instant it
 * floors from but one in the last 30 or 45 minutes of a day in such a zone; a bound off the hour
 * (an exact period) as itself. With a whole-hour offset every date is the bound's own.
 */
export function lineDay(d: Date | undefined, timeZone: string): string {
  if (d === undefined) return "";
  return day(d.getTime() % HOUR_MS === 0 ? new Date(d.getTime() + HOUR_MS - 1) : d, timeZone);
}

export function stamp(d: Date | undefined): string {
  return d === undefined ? "" : d.toISOString().replace(".000Z", "Z");
}

export const KIND_LABEL: Record<string, string> = {
  usage: "Usage",
  seats: "Seats",
  flat: "Fee",
  minimum_true_up: "Minimum true-up",
  credits_applied: "Credits applied",
  overage: "Overage",
  adjustment: "Adjustment",
  tax: "Tax",
  carried_forward: "Carried forward",
  discount: "Discount",
  one_off: "One-off",
};
