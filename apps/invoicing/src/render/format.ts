/** Display formatting of amounts (exact: bigint nanos -> decimal strings; never floats). */
import { currency, formatNanos } from "@nanobill/money";

/** money: a rounded amount with the currency's minor digits ("47.34 USD", "47 JPY"). */
export function money(nanos: bigint, unit: string): string {
  return `${formatNanos(nanos, { fractionDigitsMin: currency(unit, "unit").minorUnits })} ${unit}`;
}

/** exactMoney: an exact nano amount ("0.008755 USD"). */
export function exactMoney(nanos: bigint, unit: string): string {
  return `${formatNanos(nanos, { fractionDigitsMin: currency(unit, "unit").minorUnits })} ${unit}`;
}

export function day(d: Date | undefined): string {
  return d === undefined ? "" : d.toISOString().slice(0, 10);
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
};
