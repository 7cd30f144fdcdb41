import { MoneyError } from "@nanobill/money";

/**
 * RatingErrorKind: the expected failures of rating's domain, each mapped to one Connect code by
 * src/errors.ts (invalid -> InvalidArgument, not_found -> NotFound, failed_precondition ->
 * FailedPrecondition, already_exists -> AlreadyExists, limit -> ResourceExhausted).
 */
export type RatingErrorKind = "invalid" | "not_found" | "failed_precondition" | "already_exists" | "limit";

/** RatingError: a domain failure naming the field (or id) and the rule; message "<field>: <rule>". */
export class RatingError extends Error {
  readonly kind: RatingErrorKind;
  readonly field: string;
  readonly rule: string;

  constructor(kind: RatingErrorKind, field: string, rule: string) {
    super(`${field}: ${rule}`);
    this.name = "RatingError";
    this.kind = kind;
    this.field = field;
    this.rule = rule;
  }
}

/** invalid: a bad request field (InvalidArgument). */
export function invalid(field: string, rule: string): RatingError {
  return new RatingError("invalid", field, rule);
}

/** notFound: a referenced id does not exist for the tenant (NotFound). */
export function notFound(what: string, id: string): RatingError {
  return new RatingError("not_found", what, `${JSON.stringify(id)} not found`);
}

/** failedPrecondition: the request is valid but the state forbids it (FailedPrecondition). */
export function failedPrecondition(field: string, rule: string): RatingError {
  return new RatingError("failed_precondition", field, rule);
}

/** alreadyExists: an id reused with different content (AlreadyExists). */
export function alreadyExists(field: string, id: string): RatingError {
  return new RatingError("already_exists", field, `${JSON.stringify(id)} already exists with different content`);
}

/**
 * asRatingError: runs fn, turning a MoneyError (bad decimal, negative price, overflow) into an
 * invalid RatingError whose field is prefixed with `prefix` (e.g. "version.charges[2]").
 */
export function withField<T>(prefix: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof MoneyError) {
      const f = e.field.startsWith("$") ? e.field.slice(1) : e.field;
      throw invalid(f.length > 0 ? `${prefix}.${f}` : prefix, e.rule);
    }
    throw e;
  }
}
