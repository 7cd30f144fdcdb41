/**
 * MoneyError: the one error type of @nanobill/money. It names the offending field and the rule
 * that was broken; the message is "<field>: <rule>" (the same shape as service-kit's
 * invalidArgument), so services can map it to InvalidArgument without parsing anything.
 */
export class MoneyError extends Error {
  readonly field: string;
  readonly rule: string;

  constructor(field: string, rule: string) {
    super(`${field}: ${rule}`);
    this.name = "MoneyError";
    this.field = field;
    this.rule = rule;
  }
}
