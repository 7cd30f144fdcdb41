import { currency } from "@nanobill/money";
import { invalid, withField } from "./errors.js";
import { isValidTimeZone } from "./period.js";
import { GUARDRAIL_WINDOW_SECONDS_MAX, GUARDRAIL_WINDOW_SECONDS_MIN, ID_CHARS_MAX, NAME_CHARS_MAX, SEATS_MAX } from "../limits.js";
import type { Customer } from "./types.js";
import type { GuardrailRuleRow } from "../store/catalog-store.js";

const ID_RE = new RegExp(`^[A-Za-z0-9._:-]{1,${ID_CHARS_MAX}}$`);

/** checkId: 1..ID_CHARS_MAX of [A-Za-z0-9._:-]. */
export function checkId(v: string, field: string): void {
  if (!ID_RE.test(v)) throw invalid(field, `must be 1-${ID_CHARS_MAX} characters of [A-Za-z0-9._:-], got ${JSON.stringify(v.slice(0, 200))}`);
}

export function checkName(v: string, field: string): void {
  if (v.length > NAME_CHARS_MAX) throw invalid(field, `must be at most ${NAME_CHARS_MAX} characters`);
}

/**
 * TIME_MS_MIN / TIME_MS_MAX: the instants a request may name, years 1970..9999 UTC, as metering's
 * events and the wallet's times (Timestamp JSON, PostgreSQL and Date hold them all; the period
 * arithmetic's Date.UTC would read years 0..99 as 1900..1999).
 */
export const TIME_MS_MIN = 0; // 1970-01-01T00:00:00.000Z
export const TIME_MS_MAX = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
/** The first instant a Timestamp can be written as JSON (0001-01-01T00:00:00Z): the lower bound of what an answer may hold. */
export const TIMESTAMP_JSON_MS_MIN = -62_135_596_800_000;

/** checkTime: a required timestamp (NaN = missing) in years 1970..9999 UTC. */
export function checkTime(ms: number, field: string): void {
  if (Number.isNaN(ms)) throw invalid(field, "is required");
  if (!(ms >= TIME_MS_MIN && ms <= TIME_MS_MAX)) throw invalid(field, "must be a time in years 1970..9999 UTC");
}

export function checkRange(startMs: number, endMs: number | null, startField: string, endField: string): void {
  checkTime(startMs, startField);
  if (endMs !== null) checkTime(endMs, endField);
  if (endMs !== null && endMs <= startMs) throw invalid(endField, `must be after ${startField}`);
}

export function validateCustomer(c: Customer): void {
  checkId(c.customerId, "customer.customer_id");
  checkName(c.name, "customer.name");
  withField("customer.currency", () => currency(c.currency, ""));
  checkTime(c.billingAnchorMs, "customer.billing_anchor");
  if (!isValidTimeZone(c.timeZone)) throw invalid("customer.time_zone", `must be an IANA time zone, got ${JSON.stringify(c.timeZone)}`);
}

export function checkSeats(seats: number, field: string): void {
  if (!Number.isInteger(seats) || seats < 0 || seats > SEATS_MAX) throw invalid(field, `must be an integer from 0 to ${SEATS_MAX}`);
}

export function validateRule(r: GuardrailRuleRow): void {
  checkId(r.ruleId, "rule.rule_id");
  if (r.customerId !== "") checkId(r.customerId, "rule.customer_id");
  if (r.windowSeconds < GUARDRAIL_WINDOW_SECONDS_MIN || r.windowSeconds > GUARDRAIL_WINDOW_SECONDS_MAX || r.windowSeconds % 60 !== 0) {
    throw invalid("rule.window_seconds", `must be a multiple of 60 from ${GUARDRAIL_WINDOW_SECONDS_MIN} to ${GUARDRAIL_WINDOW_SECONDS_MAX}`);
  }
  if (r.thresholdBps < -1_000_000n || r.thresholdBps > 10_000n) throw invalid("rule.threshold_bps", "must be from -1000000 to 10000");
  if (r.kind === "cost_mix_shift" && r.model === "") throw invalid("rule.model", "is required for a cost-mix rule");
}
