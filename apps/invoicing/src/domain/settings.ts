/** Validation of a customer's billing settings (pure): every rule names its field. */
import { AMOUNT_NANOS_MAX, type RoundingMode } from "@nanobill/money";
import { DEFERRAL_PERIODS_MAX, DISCOUNT_BPS_MAX, ID_CHARS_MAX, TAX_RATE_BPS_MAX } from "../limits.js";
import type { BillingSettings } from "./invoice.js";

export class InvalidInput extends Error {
  constructor(
    readonly field: string,
    readonly rule: string,
  ) {
    super(`${field}: ${rule}`);
    this.name = "InvalidInput";
  }
}

const MODES: readonly RoundingMode[] = ["floor", "ceil", "down", "up", "half_up", "half_down", "half_even"];

export function checkId(v: string, field: string, prefix?: string): string {
  if (typeof v !== "string" || v.length === 0) throw new InvalidInput(field, "is required");
  if (v.length > ID_CHARS_MAX) throw new InvalidInput(field, `must be at most ${ID_CHARS_MAX} characters`);
  if (!/^[A-Za-z0-9_.:-]+$/.test(v)) throw new InvalidInput(field, "may contain only letters, digits and _ . : -");
  if (prefix !== undefined && !v.startsWith(prefix)) throw new InvalidInput(field, `must start with "${prefix}"`);
  return v;
}

/** validateSettings: the settings unchanged, or InvalidInput naming the first bad field. */
export function validateSettings(s: BillingSettings): BillingSettings {
  checkId(s.customerId, "settings.customer_id");
  if (!Number.isInteger(s.taxRateBps) || s.taxRateBps < 0 || s.taxRateBps > TAX_RATE_BPS_MAX) {
    throw new InvalidInput("settings.tax_rate_bps", `must be an integer in 0..${TAX_RATE_BPS_MAX} basis points, got ${s.taxRateBps}`);
  }
  if (!MODES.includes(s.roundingMode)) throw new InvalidInput("settings.rounding_mode", `must be one of ${MODES.join(", ")}`);
  if (!Number.isInteger(s.discountBps) || s.discountBps < 0 || s.discountBps > DISCOUNT_BPS_MAX) {
    throw new InvalidInput("settings.discount_bps", `must be an integer in 0..${DISCOUNT_BPS_MAX}, got ${s.discountBps}`);
  }
  if (s.discountNanos < 0n || s.discountNanos > AMOUNT_NANOS_MAX) {
    throw new InvalidInput("settings.discount_nanos", `must be in 0..${AMOUNT_NANOS_MAX}, got ${s.discountNanos}`);
  }
  if (s.minimumBillableNanos < 0n || s.minimumBillableNanos > AMOUNT_NANOS_MAX) {
    throw new InvalidInput("settings.minimum_billable_nanos", `must be in 0..${AMOUNT_NANOS_MAX}, got ${s.minimumBillableNanos}`);
  }
  if (!Number.isInteger(s.deferralPeriodsMax) || s.deferralPeriodsMax < 0 || s.deferralPeriodsMax > DEFERRAL_PERIODS_MAX) {
    throw new InvalidInput("settings.deferral_periods_max", `must be an integer in 0..${DEFERRAL_PERIODS_MAX}, got ${s.deferralPeriodsMax}`);
  }
  const lineMin = s.lineMinimumBillableNanos ?? 0n;
  if (lineMin < 0n || lineMin > AMOUNT_NANOS_MAX) {
    throw new InvalidInput("settings.line_minimum_billable_nanos", `must be in 0..${AMOUNT_NANOS_MAX}, got ${lineMin}`);
  }
  if (lineMin > 0n && s.deferralPeriodsMax === 0 && s.deferralUntil === undefined) {
    throw new InvalidInput("settings.deferral_periods_max", "must be >= 1 (or deferral_until set) when line_minimum_billable_nanos > 0, so that a deferral ends");
  }
  if (s.minimumBillableNanos > 0n && s.deferralPeriodsMax === 0 && s.deferralUntil === undefined) {
    throw new InvalidInput("settings.deferral_periods_max", "must be >= 1 (or deferral_until set) when minimum_billable_nanos > 0, so that a deferral ends");
  }
  return s;
}
