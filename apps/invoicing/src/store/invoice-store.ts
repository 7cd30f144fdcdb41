/**
 * The invoicing store (PostgreSQL / PGlite through @nanobill/db). All SQL of the service lives
 * here. Every write that must be atomic runs in one transaction; ClosePeriod serializes per
 * customer with a transaction-scoped advisory lock and relies on UNIQUE (tenant, subscription,
 * period_start) as the final guard, so one invoice per subscription per period exists, ever.
 */
import { DbError, type Db, type Queryable, type Row } from "@nanobill/db";
import { MoneyError, type RoundingMode } from "@nanobill/money";
import type { AssembledInvoice, LineDeferral } from "../domain/assemble.js";
import type { BillingSettings, CreditNote, CreditsInUnits, Deferral, Invoice, InvoiceLine, InvoiceStatus, LineKind } from "../domain/invoice.js";
import { checkFinalize, checkMarkPaid, checkVoid, InvoicingError } from "../domain/lifecycle.js";
import { PeriodError, type PeriodAnchor, type PeriodInterval } from "../domain/periods.js";
import { InvalidInput } from "../domain/settings.js";
import type { ResidueState } from "../domain/rounding.js";

export interface StoredSettings extends BillingSettings {
  periodInterval: PeriodInterval;
  periodAnchor: PeriodAnchor;
  /** gracePeriodMs: how long after a period ends its draft can be refreshed (0 = never). */
  gracePeriodMs: number;
  /** autoFinalize: the draft loop finalizes the customer's drafts once their grace period has ended. */
  autoFinalize: boolean;
}

/** DraftDue: a draft the draft loop claimed: inside its grace period (refresh) or past it with auto_finalize (finalize). */
export interface DraftDue {
  tenant: string;
  invoiceId: string;
  customerId: string;
  periodEnd: Date;
  gracePeriodMs: number;
  autoFinalize: boolean;
}

/**
 * CloseInputs: the state an invoice was assembled from (the customer's residues and deferral as
 * the close read them), kept so that a refresh re-assembles the draft from the same inputs.
 * residues: per residue key the invoice touched, the state carried in (undefined = none) and the
 * invoice that had carried it out (the row's owner before this invoice). deferral: the deferral
 * carried in, with the invoice that had deferred it.
 */
export interface CloseInputs {
  residues: Map<string, { state: ResidueState | undefined; owner: string | undefined }>;
  deferral: { deferral: Deferral; owner: string } | undefined;
  /** lineDeferrals: the line deferrals carried in and consumed, with the invoice that had deferred each. */
  lineDeferrals: Map<string, { deferral: LineDeferral; owner: string }>;
  /** lineDeferredOut: the charges whose usage this invoice carried out (below the line minimum). */
  lineDeferredOut: string[];
}

export function closeInputsToJson(c: CloseInputs): string {
  const r: Record<string, [string, string, string, string | null] | null> = {};
  for (const [k, v] of c.residues) {
    r[k] = v.state === undefined ? null : [v.state.residueNanos.toString(), v.state.subNanoNum.toString(), v.state.subNanoDen.toString(), v.owner ?? null];
  }
  const d =
    c.deferral === undefined
      ? null
      : [c.deferral.deferral.amountNanos.toString(), c.deferral.deferral.since.getTime(), c.deferral.deferral.periods, c.deferral.owner, ...(c.deferral.deferral.lastPeriodEnd === undefined ? [] : [c.deferral.deferral.lastPeriodEnd.getTime()])];
  const l: Record<string, [string, number, number, string, string, string]> = {};
  for (const [k, v] of c.lineDeferrals) l[k] = [v.deferral.amountNanos.toString(), v.deferral.since.getTime(), v.deferral.periods, v.deferral.subscriptionId, v.deferral.description, v.owner];
  return JSON.stringify({ r, d, l, lo: c.lineDeferredOut });
}

export function closeInputsFromJson(v: unknown): CloseInputs | undefined {
  if (v === null || v === undefined) return undefined;
  const o = (typeof v === "string" ? JSON.parse(v) : v) as {
    r: Record<string, [string, string, string, string | null] | null>;
    d: [string, number, number, string, number?] | null;
    l?: Record<string, [string, number, number, string, string, string]>;
    lo?: string[];
  };
  const residues = new Map<string, { state: ResidueState | undefined; owner: string | undefined }>();
  for (const [k, x] of Object.entries(o.r)) {
    residues.set(k, x === null ? { state: undefined, owner: undefined } : { state: { residueNanos: BigInt(x[0]), subNanoNum: BigInt(x[1]), subNanoDen: BigInt(x[2]) }, owner: x[3] ?? undefined });
  }
  const deferral =
    o.d === null
      ? undefined
      : { deferral: { amountNanos: BigInt(o.d[0]), since: new Date(o.d[1]), periods: o.d[2], ...(o.d[4] === undefined ? {} : { lastPeriodEnd: new Date(o.d[4]) }) }, owner: o.d[3] };
  const lineDeferrals = new Map<string, { deferral: LineDeferral; owner: string }>();
  for (const [k, x] of Object.entries(o.l ?? {})) {
    lineDeferrals.set(k, { deferral: { amountNanos: BigInt(x[0]), since: new Date(x[1]), periods: x[2], subscriptionId: x[3], description: x[4] }, owner: x[5] });
  }
  return { residues, deferral, lineDeferrals, lineDeferredOut: o.lo ?? [] };
}

async function readOneOffs(q: Queryable, tenant: string, chargeIds: string[], excludeInvoiceId = ""): Promise<Set<string>> {
  if (chargeIds.length === 0) return new Set();
  const { rows } = await q.query(
    `SELECT DISTINCT charge_id FROM invoice_lines WHERE tenant = $1 AND kind = 'one_off' AND charge_id = ANY($2::text[]) AND invoice_id <> $3`,
    [tenant, chargeIds, excludeInvoiceId],
  );
  return new Set(rows.map((r) => r.charge_id as string));
}

export function creditsToJson(c: CreditsInUnits[] | undefined): string | null {
  if (c === undefined || c.length === 0) return null;
  return JSON.stringify(c.map((x) => ({ t: x.creditTypeId, n: x.name, c: x.creditsNanos.toString(), r: x.rate, rc: x.rateCurrency, v: x.valueNanos.toString() })));
}

function creditsFromJson(v: unknown): CreditsInUnits[] {
  if (v === null || v === undefined) return [];
  const a = (typeof v === "string" ? JSON.parse(v) : v) as Array<{ t: string; n: string; c: string; r: string; rc: string; v: string }>;
  return a.map((x) => ({ creditTypeId: x.t, name: x.n, creditsNanos: BigInt(x.c), rate: x.r, rateCurrency: x.rc, valueNanos: BigInt(x.v) }));
}

function lineDeferralFromRow(r: Row): LineDeferral {
  return { amountNanos: big(r.amount_nanos), since: r.since as Date, periods: Number(r.periods), subscriptionId: r.subscription_id as string, description: r.description as string };
}

/** writeLineDeferrals: the consumed line deferrals not carried on are deleted; the ones carried out upserted. */
async function writeLineDeferrals(q: Queryable, tenant: string, customerId: string, unit: string, invoiceId: string, consumed: Iterable<string>, out: ReadonlyMap<string, LineDeferral>): Promise<void> {
  const gone = [...consumed].filter((k) => !out.has(k));
  if (gone.length > 0) await q.query(`DELETE FROM line_deferrals WHERE tenant = $1 AND customer_id = $2 AND charge_id = ANY($3::text[])`, [tenant, customerId, gone]);
  for (const [k, d] of out) {
    await q.query(
      `INSERT INTO line_deferrals (tenant, customer_id, charge_id, unit, subscription_id, description, amount_nanos, since, periods, invoice_id)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
       ON CONFLICT (tenant, customer_id, charge_id) DO UPDATE SET unit = EXCLUDED.unit, subscription_id = EXCLUDED.subscription_id,
         description = EXCLUDED.description, amount_nanos = EXCLUDED.amount_nanos, since = EXCLUDED.since, periods = EXCLUDED.periods,
         invoice_id = EXCLUDED.invoice_id`,
      [tenant, customerId, k, unit, d.subscriptionId, d.description, d.amountNanos, d.since, d.periods, invoiceId],
    );
  }
}

/**
 * giveBackCarried: in the void transaction (under the customer lock), puts the amounts the voided
 * invoice carried back to their state before it (its close inputs): the minimum-billable deferral
 * and the line deferrals (usage below the line minimum) it carried in come back to be billed by
 * the next close, the ones it carried out are dropped (they were its own amounts, now void). Only
 * while the invoice still owns them: when a later invoice carried them on (or deferred anew what
 * the voided invoice had billed) the void is refused (FailedPrecondition naming that invoice;
 * void it first). Residues (sub-minor-unit remainders) are left as they are: the ledger keeps the
 * voided invoice's residue leg, so the residue account still equals the residues carried.
 * Invoices made before close inputs were stored are voided as before (nothing given back).
 */
async function giveBackCarried(q: Queryable, tenant: string, inv: StoredInvoice): Promise<void> {
  const inputs = inv.closeInputs;
  if (inputs === undefined) return;
  const id = inv.id;
  const refuse = (why: string) => {
    throw new InvoicingError("failed_precondition", `invoice ${id} cannot be voided: ${why}: nothing was written`);
  };
  const carriedOnBy = async (path: string, arg: string | undefined): Promise<string> => {
    const { rows } = await q.query(
      `SELECT invoice_id FROM invoices WHERE tenant = $1 AND customer_id = $2 AND invoice_id <> $3 AND status <> 'void' AND ${path} = $3 ORDER BY period_start LIMIT 1`,
      arg === undefined ? [tenant, inv.customerId, id] : [tenant, inv.customerId, id, arg],
    );
    return rows[0] === undefined ? "a later invoice" : `invoice ${rows[0].invoice_id as string}`;
  };
  // 1. The minimum-billable deferral.
  const defRow = (await q.query(`SELECT invoice_id FROM deferrals WHERE tenant = $1 AND customer_id = $2`, [tenant, inv.customerId])).rows[0];
  const defOwner = defRow?.invoice_id as string | undefined;
  if (inv.totals.deferredNanos !== 0n && defOwner !== id) {
    refuse(`the amount it deferred below the minimum billable amount (${inv.totals.deferredNanos} nanos) was carried on by ${await carriedOnBy(`close_inputs->'d'->>3`, undefined)}; void that invoice first`);
  }
  if (inv.totals.deferredNanos === 0n && inputs.deferral !== undefined && defOwner !== undefined) {
    refuse(`it billed the amount deferred since ${inputs.deferral.deferral.since.toISOString()}, and invoice ${defOwner} has deferred a new amount since; void that invoice first`);
  }
  // 2. Line deferrals (usage below the line minimum).
  const ldRows = await q.query(`SELECT charge_id, invoice_id FROM line_deferrals WHERE tenant = $1 AND customer_id = $2`, [tenant, inv.customerId]);
  const ldOwner = new Map<string, string>();
  for (const r of ldRows.rows) ldOwner.set(r.charge_id as string, r.invoice_id as string);
  for (const k of inputs.lineDeferredOut) {
    if (ldOwner.get(k) !== id) {
      const by = ldOwner.get(k);
      refuse(`the usage of ${k} it carried below the line minimum was carried on by ${by !== undefined ? `invoice ${by}` : await carriedOnBy(`close_inputs->'l'->$4::text->>5`, k)}; void that invoice first`);
    }
  }
  for (const k of inputs.lineDeferrals.keys()) {
    const owner = ldOwner.get(k);
    if (!inputs.lineDeferredOut.includes(k) && owner !== undefined) {
      refuse(`it billed the usage of ${k} carried below the line minimum, and invoice ${owner} has carried new usage of ${k} since; void that invoice first`);
    }
  }
  // Give back: the state before the invoice, with its owners.
  if (inputs.deferral !== undefined) {
    const d = inputs.deferral.deferral;
    await q.query(
      `INSERT INTO deferrals (tenant, customer_id, unit, amount_nanos, since, periods, invoice_id) VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (tenant, customer_id) DO UPDATE SET unit = EXCLUDED.unit, amount_nanos = EXCLUDED.amount_nanos,
         since = EXCLUDED.since, periods = EXCLUDED.periods, invoice_id = EXCLUDED.invoice_id`,
      [tenant, inv.customerId, inv.unit, d.amountNanos, d.since, d.periods, inputs.deferral.owner],
    );
  } else if (defOwner === id) await q.query(`DELETE FROM deferrals WHERE tenant = $1 AND customer_id = $2 AND invoice_id = $3`, [tenant, inv.customerId, id]);
  const dropped = inputs.lineDeferredOut.filter((k) => !inputs.lineDeferrals.has(k));
  if (dropped.length > 0) await writeLineDeferrals(q, tenant, inv.customerId, inv.unit, id, dropped, new Map());
  for (const [k, v] of inputs.lineDeferrals) await writeLineDeferrals(q, tenant, inv.customerId, inv.unit, v.owner, [], new Map([[k, v.deferral]]));
}

export interface StoredInvoice extends Invoice {
  periodIndex: number;
  usageFrom: Date;
  usageTo: Date;
  residueDeltaNanos: bigint;
  ledgerPending: boolean;
  voidReason: string;
  /** closeInputs: what the invoice was assembled from (undefined for invoices made before refresh existed). */
  closeInputs: CloseInputs | undefined;
}

export interface RefreshOutcome {
  invoice: StoredInvoice;
  /** changed: false when the re-assembled draft equals the stored one (nothing written). */
  changed: boolean;
}

export interface CloseParams {
  invoiceId: string;
  customerId: string;
  subscriptionId: string;
  periodIndex: number;
  periodStart: Date;
  periodEnd: Date;
  usageFrom: Date;
  usageTo: Date;
  timeZone: string;
  unit: string;
  roundingMode: RoundingMode;
  taxRateBps: number;
  now: Date;
  /**
   * periodInterval / periodAnchor: the customer's period settings the close computed its period
   * with. Under the customer lock, an item whose customer's settings differ now (changed between
   * the read and the write) is refused, so no invoice is written on a superseded period grid.
   */
  periodInterval?: PeriodInterval;
  periodAnchor?: PeriodAnchor;
}

/** The period settings of a customer without a billing_settings row (service.ts settingsOrDefault). */
const DEFAULT_PERIOD_INTERVAL: PeriodInterval = "month";
const DEFAULT_PERIOD_ANCHOR: PeriodAnchor = "anniversary";

export interface CloseOutcome {
  created: boolean;
  invoice: StoredInvoice;
}

/**
 * CloseRefused: an item of closeMany whose invoice could not be written (assembly refused it, or
 * the database rejected its rows: a constraint, a value out of range). Its own transaction was
 * rolled back, so nothing was written for it; the other items of the batch were written.
 * refused: the reason, for the item's result; cause: the error (to log).
 */
export interface CloseRefused {
  created: false;
  refused: string;
  cause: unknown;
}

/**
 * TRANSIENT_DB_CODES: failures of a batch that are not any item's fault (serialization failure or
 * deadlock after the retries, connection lost / pool closed / lock wait, statement timeout) or are
 * the code's (nested transaction, migration): the request fails as a whole and the caller retries
 * it; closeMany does not split the batch for them.
 */
const TRANSIENT_DB_CODES: ReadonlySet<string> = new Set(["serialization", "unavailable", "timeout", "nested_transaction", "migration"]);

/** isItemFailure: whether a batch failure may be caused by one of its items (then the batch is split to find it). */
export function isItemFailure(e: unknown): boolean {
  // An item's own fault: a domain refusal (its invoice cannot be billed as asked), or a database
  // data exception (SQLSTATE class 22) / integrity violation (class 23) raised by its rows.
  // Anything else (transient failures, a missing table, a bug) fails the request loudly.
  if (e instanceof InvalidInput || e instanceof PeriodError || e instanceof MoneyError || e instanceof InvoicingError) return true;
  return e instanceof DbError && !TRANSIENT_DB_CODES.has(e.code) && e.sqlState !== undefined && /^2[23]/.test(e.sqlState);
}

/** refusalOf: the per-item reason of an item failure (domain refusals as they are; database errors by code, SQLSTATE and constraint). */
export function refusalOf(e: unknown): string {
  if (e instanceof InvalidInput || e instanceof PeriodError || e instanceof MoneyError || e instanceof InvoicingError) {
    return `${e.message}: nothing was written for this item`;
  }
  if (e instanceof DbError) {
    const where = `${e.code}${e.sqlState === undefined ? "" : ` (SQLSTATE ${e.sqlState})`}${e.constraint === undefined ? "" : ` on ${e.constraint}`}`;
    // data exceptions (22) and integrity violations (23) describe the value, not the system
    const what = e.sqlState !== undefined && /^2[23]/.test(e.sqlState) ? `: ${e.message}` : "";
    return `its invoice could not be written, ${where}${what}: nothing was written for this item`;
  }
  return "its invoice could not be written (internal error, logged): nothing was written for this item";
}

/**
 * BilledIndex: what non-void invoices billed for a subscription's earlier windows, keyed by
 * billedKey(subscription, "usage" | "credits", period_start the lines name): charge id -> exact
 * nanos of its usage and adjustment lines (usage keys name the usage window start), or "" ->
 * prepaid credits applied (positive nanos) by credits-applied lines (credits keys name the period start).
 */
export type BilledIndex = Map<string, Map<string, bigint>>;

export function billedKey(subscriptionId: string, group: "usage" | "credits", periodStart: Date): string {
  return `${subscriptionId}|${group}|${periodStart.getTime()}`;
}

/** LateSnapshot: an earlier invoiced period a close adjusts, and what was billed for it when the close read it. */
export interface LateSnapshot {
  periodStart: Date;
  usageFrom: Date;
  billedUsage: ReadonlyMap<string, bigint>;
  billedCredits: bigint;
}

export interface CloseItem {
  params: CloseParams;
  /**
   * late: earlier invoiced periods whose late usage and credits this close bills. Under the
   * customer lock, a period whose billed amounts changed since the close read them (another
   * close adjusted it meanwhile, or an earlier item of this batch) is left to a later close.
   */
  late?: LateSnapshot[];
  /** assemble: `unchanged` holds the period starts (ms) of `late` whose billed amounts are as read. */
  assemble: (
    residues: ReadonlyMap<string, ResidueState>,
    deferredIn: Deferral | undefined,
    unchanged: ReadonlySet<number>,
    lineDeferrals: ReadonlyMap<string, LineDeferral>,
    billedOneOffs: ReadonlySet<string>,
  ) => AssembledInvoice;
  /** creditsInUnits: credits of each credit type consumed for the period (stored with the invoice). */
  creditsInUnits?: CreditsInUnits[];
  /** oneOffIds: the one-off charge ids (top-up grant ids) this close would bill; the ones already on an invoice are passed to assemble as billed. */
  oneOffIds?: string[];
  /**
   * draftAsRead: for a refresh, the draft as the refresher read it before reading upstream. Under
   * the lock, a draft that changed since (another refresh wrote it meanwhile, from later reads) is
   * not overwritten with this item's older reads: refused with "aborted" (optimistic check).
   */
  draftAsRead?: Pick<StoredInvoice, "lines" | "refreshedAt" | "creditsInUnits">;
}

export interface ListParams {
  customerId: string;
  status: InvoiceStatus | "";
  limit: number;
  /** after: the last (period_start, invoice_id) of the previous page. */
  after: { periodStart: Date; invoiceId: string } | undefined;
}

const INVOICE_COLUMNS = `invoice_id, customer_id, subscription_id, period_index, period_start, period_end, time_zone, unit,
  status, number, rounding_mode, tax_rate_bps, subtotal_nanos, discount_nanos, tax_nanos, total_nanos,
  credits_applied_nanos, amount_due_nanos, amount_due_minor, exact_nanos, residue_carried_nanos, residue_delta_nanos,
  deferred_nanos, deferral_amount_nanos, deferral_since, deferral_periods, usage_from, usage_to, created_at,
  finalized_at, paid_at, voided_at, payment_id, void_reason, ledger_transfer_ids, ledger_pending, close_inputs, refreshed_at, credits_in_units`;

function big(v: unknown): bigint {
  return typeof v === "bigint" ? v : BigInt(v as string | number);
}
function opt<T>(v: unknown): T | undefined {
  return v === null || v === undefined ? undefined : (v as T);
}

function invoiceFromRow(r: Row, lines: InvoiceLine[], creditNote: CreditNote | undefined): StoredInvoice {
  const deferral: Deferral | undefined =
    r.deferral_amount_nanos === null || r.deferral_amount_nanos === undefined
      ? undefined
      : { amountNanos: big(r.deferral_amount_nanos), since: r.deferral_since as Date, periods: Number(r.deferral_periods) };
  return {
    id: r.invoice_id as string,
    number: (r.number as string | null) ?? "",
    customerId: r.customer_id as string,
    subscriptionId: r.subscription_id as string,
    status: r.status as InvoiceStatus,
    unit: r.unit as string,
    periodStart: r.period_start as Date,
    periodEnd: r.period_end as Date,
    timeZone: r.time_zone as string,
    lines,
    totals: {
      subtotalNanos: big(r.subtotal_nanos),
      discountNanos: big(r.discount_nanos),
      taxNanos: big(r.tax_nanos),
      totalNanos: big(r.total_nanos),
      creditsAppliedNanos: big(r.credits_applied_nanos),
      amountDueNanos: big(r.amount_due_nanos),
      amountDueMinor: big(r.amount_due_minor),
      exactNanos: big(r.exact_nanos),
      residueCarriedNanos: big(r.residue_carried_nanos),
      deferredNanos: big(r.deferred_nanos),
    },
    roundingMode: r.rounding_mode as RoundingMode,
    taxRateBps: Number(r.tax_rate_bps),
    deferral,
    createdAt: r.created_at as Date,
    finalizedAt: opt<Date>(r.finalized_at),
    paidAt: opt<Date>(r.paid_at),
    voidedAt: opt<Date>(r.voided_at),
    creditNote,
    paymentId: (r.payment_id as string | null) ?? "",
    ledgerTransferIds: (r.ledger_transfer_ids as string[] | null) ?? [],
    periodIndex: Number(r.period_index),
    usageFrom: r.usage_from as Date,
    usageTo: r.usage_to as Date,
    residueDeltaNanos: big(r.residue_delta_nanos),
    ledgerPending: r.ledger_pending === true,
    voidReason: (r.void_reason as string | null) ?? "",
    closeInputs: closeInputsFromJson(r.close_inputs),
    refreshedAt: opt<Date>(r.refreshed_at),
    creditsInUnits: creditsFromJson(r.credits_in_units),
  };
}

function lineFromRow(r: Row): InvoiceLine {
  return {
    id: r.line_id as string,
    kind: r.kind as LineKind,
    description: r.description as string,
    chargeId: r.charge_id as string,
    subscriptionId: r.subscription_id as string,
    quantity: r.quantity as string,
    unitPrice: r.unit_price as string,
    amountNanos: big(r.amount_nanos),
    residueInNanos: big(r.residue_in_nanos),
    roundedAmountNanos: big(r.rounded_amount_nanos),
    amountMinor: big(r.amount_minor),
    residueOutNanos: big(r.residue_out_nanos),
    periodStart: r.period_start as Date,
    periodEnd: r.period_end as Date,
    expandable: r.expandable === true,
    ...(typeof r.top_up_unit === "string" && r.top_up_unit !== "" ? { topUpUnit: r.top_up_unit } : {}),
  };
}

function creditNoteFromRow(r: Row): CreditNote {
  return {
    id: r.credit_note_id as string,
    invoiceId: r.invoice_id as string,
    number: r.number as string,
    amountNanos: big(r.amount_nanos),
    unit: r.unit as string,
    reason: r.reason as string,
    createdAt: r.created_at as Date,
  };
}

export function formatNumber(prefix: string, seq: bigint): string {
  return `${prefix}-${seq.toString().padStart(6, "0")}`;
}

export interface InvoiceStore {
  getSettings(tenant: string, customerId: string): Promise<StoredSettings | undefined>;
  getSettingsMany(tenant: string, customerIds: string[]): Promise<Map<string, StoredSettings>>;
  /** existingIds: the invoice ids of the (subscription, period start) pairs that have one. */
  existingIds(tenant: string, pairs: Array<{ subscriptionId: string; periodStart: Date }>): Promise<Map<string, string>>;
  putSettings(tenant: string, s: StoredSettings, now: Date): Promise<StoredSettings>;
  getInvoice(tenant: string, invoiceId: string): Promise<StoredInvoice | undefined>;
  /** getInvoices: many invoices with their lines in three queries (missing ids are absent). */
  getInvoices(tenant: string, invoiceIds: string[]): Promise<Map<string, StoredInvoice>>;
  findByPeriod(tenant: string, subscriptionId: string, periodStart: Date): Promise<StoredInvoice | undefined>;
  listInvoices(tenant: string, p: ListParams): Promise<StoredInvoice[]>;
  readResidues(tenant: string, customerId: string): Promise<Map<string, ResidueState>>;
  readDeferral(tenant: string, customerId: string): Promise<Deferral | undefined>;
  /** readLineDeferrals: the customer's usage carried below the line minimum, per charge. */
  readLineDeferrals(tenant: string, customerId: string): Promise<Map<string, LineDeferral>>;
  /** billedOneOffs: the one-off charge ids (top-up grant ids) already on an invoice (void included), but `excludeInvoiceId`'s. */
  billedOneOffs(tenant: string, chargeIds: string[], excludeInvoiceId?: string): Promise<Set<string>>;
  /** closePeriod: one transaction; assemble runs with the customer's locked residues and deferral. */
  closePeriod(
    tenant: string,
    p: CloseParams,
    assemble: (residues: ReadonlyMap<string, ResidueState>, deferredIn: Deferral | undefined, unchanged: ReadonlySet<number>, lineDeferrals: ReadonlyMap<string, LineDeferral>) => AssembledInvoice,
  ): Promise<CloseOutcome>;
  /**
   * closeMany: one transaction for a batch of closes (COPY of invoices and lines), results in item
   * order. When that transaction fails for an item failure (isItemFailure: not a serialization
   * failure, lost connection or timeout, which are thrown), the batch is split in halves, written
   * one after the other in order, down to single items: every writable item is written and each
   * failing one is a CloseRefused with nothing written for it.
   */
  closeMany(tenant: string, items: CloseItem[]): Promise<Array<CloseOutcome | CloseRefused>>;
  finalize(tenant: string, invoiceId: string, now: Date, transferIds: (inv: StoredInvoice) => string[]): Promise<StoredInvoice>;
  markPaid(tenant: string, invoiceId: string, paymentId: string, paidAt: Date, transferIds: (inv: StoredInvoice) => string[]): Promise<{ invoice: StoredInvoice; replay: boolean }>;
  voidInvoice(
    tenant: string,
    invoiceId: string,
    reason: string,
    creditNoteId: string,
    now: Date,
    transferIds: (inv: StoredInvoice) => string[],
  ): Promise<{ invoice: StoredInvoice; replay: boolean }>;
  markLedgerPosted(tenant: string, invoiceId: string): Promise<void>;
  /**
   * billedUsage: exact nanos billed per charge for a subscription's usage window (usage lines of
   * its invoice plus adjustment lines of later invoices naming the same window), void excluded.
   */
  billedUsage(tenant: string, subscriptionId: string, windowStart: Date): Promise<Map<string, bigint>>;
  /**
   * billedWindows: for each (subscription, usage window start, period start), the usage and
   * adjustment lines naming the window and the credits-applied lines naming the period (the
   * period's own invoice and later ones), void excluded, as a BilledIndex.
   */
  billedWindows(tenant: string, windows: BilledWindowKey[], excludeInvoiceId?: string): Promise<BilledIndex>;
  /** billedFees: exact nanos billed per fee charge for a period (fee and adjustment lines), void excluded. */
  billedFees(tenant: string, subscriptionId: string, periodStart: Date, chargeIds: string[], excludeInvoiceId?: string): Promise<Map<string, bigint>>;
  /**
   * refreshDraft: one transaction under the customer's lock: re-assembles a draft from its close
   * inputs (residues and deferral carried in) and the item's charges, and replaces its lines,
   * totals, residues and deferral carried out. Refused (failed_precondition) when the invoice is
   * not a draft, was made before refresh existed, a later invoice of the subscription exists,
   * or a later invoice of the customer carried the draft's residues or deferral on.
   */
  refreshDraft(tenant: string, invoiceId: string, item: CloseItem, now: Date): Promise<RefreshOutcome>;
  listLedgerPending(limit: number): Promise<Array<{ tenant: string; invoiceId: string }>>;
  /**
   * claimDrafts: up to `limit` drafts (all tenants) that the draft loop should look at now: inside
   * their customer's grace period, or past it with auto_finalize on; not claimed since
   * `now - recheckMs`. The claim stamps draft_checked_at in the same statement, and rows another
   * replica is claiming are skipped (FOR UPDATE SKIP LOCKED), so replicas take disjoint drafts.
   */
  claimDrafts(now: Date, recheckMs: number, limit: number): Promise<DraftDue[]>;
  listFinalized(tenant: string, customerId: string, limit: number): Promise<StoredInvoice[]>;
  residueTotal(tenant: string, customerId: string, unit: string): Promise<bigint>;
}

export interface BilledWindowKey {
  subscriptionId: string;
  usageFrom: Date;
  periodStart: Date;
}

function addBilled(index: BilledIndex, key: string, chargeId: string, nanos: bigint): void {
  let m = index.get(key);
  if (m === undefined) index.set(key, (m = new Map()));
  m.set(chargeId, (m.get(chargeId) ?? 0n) + nanos);
}

/** addLinesBilled: an invoice's lines into a BilledIndex (as billedWindows would read them once stored). */
export function addLinesBilled(index: BilledIndex, subscriptionId: string, lines: readonly InvoiceLine[]): void {
  for (const l of lines) {
    if (l.kind === "usage" || l.kind === "adjustment") addBilled(index, billedKey(l.subscriptionId, "usage", l.periodStart), l.chargeId, l.amountNanos);
    else if (l.kind === "credits_applied") addBilled(index, billedKey(l.subscriptionId === "" ? subscriptionId : l.subscriptionId, "credits", l.periodStart), "", -l.amountNanos);
  }
}

function sameLine(a: InvoiceLine, b: InvoiceLine): boolean {
  return (
    a.kind === b.kind && a.description === b.description && a.chargeId === b.chargeId && a.subscriptionId === b.subscriptionId && a.quantity === b.quantity &&
    a.unitPrice === b.unitPrice && a.amountNanos === b.amountNanos && a.residueInNanos === b.residueInNanos && a.roundedAmountNanos === b.roundedAmountNanos &&
    a.residueOutNanos === b.residueOutNanos && a.periodStart.getTime() === b.periodStart.getTime() && a.periodEnd.getTime() === b.periodEnd.getTime() &&
    a.expandable === b.expandable && (a.topUpUnit ?? "") === (b.topUpUnit ?? "")
  );
}

function sameBilled(a: ReadonlyMap<string, bigint> | undefined, b: ReadonlyMap<string, bigint>): boolean {
  const keys = new Set([...(a?.keys() ?? []), ...b.keys()]);
  for (const k of keys) if ((a?.get(k) ?? 0n) !== (b.get(k) ?? 0n)) return false;
  return true;
}

/**
 * readBilled: the BilledIndex of the given windows. Usage and adjustment lines (and the credits
 * lines a close adds for an earlier period) carry their subscription; an invoice's own credits
 * line carries none and names the invoice's period start.
 */
async function readBilled(q: Queryable, tenant: string, windows: BilledWindowKey[], excludeInvoiceId = ""): Promise<BilledIndex> {
  const index: BilledIndex = new Map();
  if (windows.length === 0) return index;
  const subs: string[] = [];
  const starts: Date[] = [];
  for (const w of windows) {
    subs.push(w.subscriptionId, w.subscriptionId);
    starts.push(w.usageFrom, w.periodStart);
  }
  const { rows } = await q.query(
    `SELECT l.subscription_id AS sub, l.kind, l.charge_id, l.period_start, SUM(l.amount_nanos)::bigint AS s
     FROM (SELECT DISTINCT sub, ps FROM unnest($2::text[], $3::timestamptz[]) AS u(sub, ps)) AS w
     JOIN invoice_lines l ON l.tenant = $1 AND l.subscription_id = w.sub AND l.period_start = w.ps
     JOIN invoices i ON i.tenant = l.tenant AND i.invoice_id = l.invoice_id
     WHERE l.kind IN ('usage', 'adjustment', 'credits_applied') AND i.status <> 'void' AND i.invoice_id <> $4
     GROUP BY l.subscription_id, l.kind, l.charge_id, l.period_start
     UNION ALL
     SELECT i.subscription_id AS sub, l.kind, l.charge_id, l.period_start, SUM(l.amount_nanos)::bigint AS s
     FROM (SELECT DISTINCT sub, ps FROM unnest($2::text[], $3::timestamptz[]) AS u(sub, ps)) AS w
     JOIN invoices i ON i.tenant = $1 AND i.subscription_id = w.sub AND i.period_start = w.ps
     JOIN invoice_lines l ON l.tenant = i.tenant AND l.invoice_id = i.invoice_id
     WHERE l.kind = 'credits_applied' AND l.subscription_id = '' AND i.status <> 'void' AND i.invoice_id <> $4
     GROUP BY i.subscription_id, l.kind, l.charge_id, l.period_start`,
    [tenant, subs, starts, excludeInvoiceId],
  );
  const wanted = new Set<string>();
  for (const w of windows) {
    wanted.add(billedKey(w.subscriptionId, "usage", w.usageFrom));
    wanted.add(billedKey(w.subscriptionId, "credits", w.periodStart));
  }
  for (const r of rows) {
    const credits = r.kind === "credits_applied";
    const key = billedKey(r.sub as string, credits ? "credits" : "usage", r.period_start as Date);
    // a usage window start may equal another period's start: keep only the keys asked for
    if (!wanted.has(key)) continue;
    addBilled(index, key, credits ? "" : (r.charge_id as string), credits ? -big(r.s) : big(r.s));
  }
  return index;
}

export function createInvoiceStore(db: Db): InvoiceStore {
  async function loadInvoice(q: Queryable, tenant: string, invoiceId: string, lock = false): Promise<StoredInvoice | undefined> {
    const { rows } = await q.query(`SELECT ${INVOICE_COLUMNS} FROM invoices WHERE tenant = $1 AND invoice_id = $2${lock ? " FOR UPDATE" : ""}`, [tenant, invoiceId]);
    const r = rows[0];
    if (r === undefined) return undefined;
    const lines = await q.query(`SELECT * FROM invoice_lines WHERE tenant = $1 AND invoice_id = $2 ORDER BY line_no`, [tenant, invoiceId]);
    const cn = await q.query(`SELECT * FROM credit_notes WHERE tenant = $1 AND invoice_id = $2`, [tenant, invoiceId]);
    return invoiceFromRow(r, lines.rows.map(lineFromRow), cn.rows[0] === undefined ? undefined : creditNoteFromRow(cn.rows[0]));
  }

  async function nextNumber(q: Queryable, tenant: string, series: "invoice" | "credit_note"): Promise<bigint> {
    const { rows } = await q.query<{ last_value: bigint }>(
      `INSERT INTO number_counters (tenant, series, last_value) VALUES ($1, $2, 1)
       ON CONFLICT (tenant, series) DO UPDATE SET last_value = number_counters.last_value + 1
       RETURNING last_value`,
      [tenant, series],
    );
    return big(rows[0]!.last_value);
  }

  async function readResidues(q: Queryable, tenant: string, customerId: string): Promise<Map<string, ResidueState>> {
    const { rows } = await q.query(`SELECT residue_key, residue_nanos, sub_nano_num, sub_nano_den FROM residues WHERE tenant = $1 AND customer_id = $2`, [tenant, customerId]);
    const m = new Map<string, ResidueState>();
    for (const r of rows) {
      m.set(r.residue_key as string, { residueNanos: big(r.residue_nanos), subNanoNum: big(r.sub_nano_num), subNanoDen: big(r.sub_nano_den) });
    }
    return m;
  }

  async function readDeferral(q: Queryable, tenant: string, customerId: string): Promise<Deferral | undefined> {
    const { rows } = await q.query(`SELECT amount_nanos, since, periods, unit FROM deferrals WHERE tenant = $1 AND customer_id = $2`, [tenant, customerId]);
    const r = rows[0];
    return r === undefined ? undefined : { amountNanos: big(r.amount_nanos), since: r.since as Date, periods: Number(r.periods), unit: r.unit as string };
  }

  /**
   * closeMany: the batch in one transaction; on an item failure, its halves in order (each in its
   * own transaction, a later half seeing what an earlier one wrote, as a later request would), down
   * to the single failing items. One failing item among n costs about 2 log2(n) more transactions.
   */
  async function closeMany(tenant: string, items: CloseItem[]): Promise<Array<CloseOutcome | CloseRefused>> {
    if (items.length === 0) return [];
    try {
      return await closeBatch(tenant, items);
    } catch (e) {
      if (!isItemFailure(e)) throw e;
      if (items.length === 1) return [{ created: false, refused: refusalOf(e), cause: e }];
      const half = Math.ceil(items.length / 2);
      const first = await closeMany(tenant, items.slice(0, half));
      return [...first, ...(await closeMany(tenant, items.slice(half)))];
    }
  }

  async function closeBatch(tenant: string, items: CloseItem[]): Promise<CloseOutcome[]> {
    return db.transaction(async (tx) => {
      // Serialize every close of these customers (residues and deferrals are per customer):
      // advisory locks taken in hash order, so concurrent batches cannot deadlock.
      const customers = [...new Set(items.map((i) => i.params.customerId))];
      await tx.query(
        `SELECT pg_advisory_xact_lock(h) FROM (SELECT hashtextextended(k, 0) AS h FROM unnest($1::text[]) AS k ORDER BY h) AS s`,
        [customers.map((c) => `invoicing:${tenant}:${c}`)],
      );
      const existingRows = await tx.query(
        `SELECT i.subscription_id, i.period_start, i.invoice_id FROM invoices i
         JOIN unnest($2::text[], $3::timestamptz[]) AS w(sub, ps) ON i.subscription_id = w.sub AND i.period_start = w.ps
         WHERE i.tenant = $1`,
        [tenant, items.map((i) => i.params.subscriptionId), items.map((i) => i.params.periodStart)],
      );
      const existing = new Map<string, string>();
      for (const r of existingRows.rows) existing.set(`${r.subscription_id as string}|${(r.period_start as Date).getTime()}`, r.invoice_id as string);
      // The period grid each new item was computed on must still be the customer's (a settings
      // change between the close's read and this write would bill overlapping windows).
      const gridRows = await tx.query(`SELECT customer_id, period_interval, period_anchor FROM billing_settings WHERE tenant = $1 AND customer_id = ANY($2::text[])`, [tenant, customers]);
      const grids = new Map<string, { interval: string; anchor: string }>();
      for (const r of gridRows.rows) grids.set(r.customer_id as string, { interval: r.period_interval as string, anchor: r.period_anchor as string });
      for (const { params: p } of items) {
        if (existing.has(`${p.subscriptionId}|${p.periodStart.getTime()}`)) continue;
        const g = grids.get(p.customerId) ?? { interval: DEFAULT_PERIOD_INTERVAL, anchor: DEFAULT_PERIOD_ANCHOR };
        if ((p.periodInterval !== undefined && p.periodInterval !== g.interval) || (p.periodAnchor !== undefined && p.periodAnchor !== g.anchor)) {
          throw new InvoicingError(
            "failed_precondition",
            `settings.period_interval / settings.period_anchor of customer ${p.customerId} changed while the period of ${p.subscriptionId} was read (now ${g.interval} / ${g.anchor}): close it again`,
          );
        }
      }
      const resRows = await tx.query(
        `SELECT customer_id, residue_key, residue_nanos, sub_nano_num, sub_nano_den, invoice_id FROM residues WHERE tenant = $1 AND customer_id = ANY($2::text[])`,
        [tenant, customers],
      );
      const residues = new Map<string, Map<string, ResidueState>>();
      // owners: per customer, residue key -> the invoice that carried the state out (last touched it)
      const owners = new Map<string, Map<string, string>>();
      for (const c of customers) {
        residues.set(c, new Map());
        owners.set(c, new Map());
      }
      for (const r of resRows.rows) {
        residues.get(r.customer_id as string)!.set(r.residue_key as string, { residueNanos: big(r.residue_nanos), subNanoNum: big(r.sub_nano_num), subNanoDen: big(r.sub_nano_den) });
        owners.get(r.customer_id as string)!.set(r.residue_key as string, r.invoice_id as string);
      }
      const defRows = await tx.query(
        `SELECT d.customer_id, d.amount_nanos, d.since, d.periods, d.unit, d.invoice_id, i.period_end AS last_period_end FROM deferrals d
         LEFT JOIN invoices i ON i.tenant = d.tenant AND i.invoice_id = d.invoice_id
         WHERE d.tenant = $1 AND d.customer_id = ANY($2::text[])`,
        [tenant, customers],
      );
      const deferrals = new Map<string, Deferral | undefined>();
      const defOwners = new Map<string, string>();
      for (const r of defRows.rows) {
        deferrals.set(r.customer_id as string, { amountNanos: big(r.amount_nanos), since: r.since as Date, periods: Number(r.periods), lastPeriodEnd: opt<Date>(r.last_period_end), unit: r.unit as string });
        defOwners.set(r.customer_id as string, r.invoice_id as string);
      }
      const hadDeferral = new Set(deferrals.keys());
      // the customers whose carried amount an item of the batch took in or carried out (by unit)
      const deferralWrites = new Map<string, { unit: string; invoiceId: string }>();
      const ldRows = await tx.query(`SELECT * FROM line_deferrals WHERE tenant = $1 AND customer_id = ANY($2::text[])`, [tenant, customers]);
      const lineDeferrals = new Map<string, Map<string, { deferral: LineDeferral; owner: string }>>();
      for (const c of customers) lineDeferrals.set(c, new Map());
      for (const r of ldRows.rows) lineDeferrals.get(r.customer_id as string)!.set(r.charge_id as string, { deferral: lineDeferralFromRow(r), owner: r.invoice_id as string });
      const oneOffsBilled = await readOneOffs(tx, tenant, [...new Set(items.flatMap((i) => i.oneOffIds ?? []))]);
      const lineWrites: Array<{ customerId: string; unit: string; invoiceId: string; consumed: Set<string>; out: Map<string, LineDeferral> }> = [];
      // What earlier periods are billed now (under the lock), for the late adjustments.
      const lateWindows = items.flatMap((i) => (i.late ?? []).map((w) => ({ subscriptionId: i.params.subscriptionId, usageFrom: w.usageFrom, periodStart: w.periodStart })));
      const billedNow: BilledIndex = lateWindows.length === 0 ? new Map() : await readBilled(tx, tenant, lateWindows);

      const outcomes: Array<CloseOutcome | string> = [];
      const invoiceRows: unknown[][] = [];
      const lineRows: unknown[][] = [];
      const touched = new Map<string, { unit: string; invoiceId: string; keys: Map<string, string> }>();
      for (const { params: p, assemble, late, creditsInUnits } of items) {
        const key = `${p.subscriptionId}|${p.periodStart.getTime()}`;
        const prior = existing.get(key);
        if (prior !== undefined) {
          outcomes.push(prior);
          continue;
        }
        const mine = residues.get(p.customerId)!;
        const stored = deferrals.get(p.customerId);
        // one carried in another currency is not this invoice's (assemble leaves it alone)
        const foreign = stored?.unit !== undefined && stored.unit !== p.unit;
        const deferredIn = stored;
        const unchanged = new Set<number>();
        for (const w of late ?? []) {
          const usageNow = billedNow.get(billedKey(p.subscriptionId, "usage", w.usageFrom));
          const creditsNow = billedNow.get(billedKey(p.subscriptionId, "credits", w.periodStart))?.get("") ?? 0n;
          if (sameBilled(usageNow, w.billedUsage) && creditsNow === w.billedCredits) unchanged.add(w.periodStart.getTime());
        }
        const myLines = lineDeferrals.get(p.customerId)!;
        const a = assemble(mine, deferredIn, unchanged, new Map([...myLines].map(([k, v]) => [k, v.deferral])), new Set(oneOffsBilled));
        for (const l of a.lines) if (l.kind === "one_off") oneOffsBilled.add(l.chargeId);
        // later items of this batch see what this invoice bills
        addLinesBilled(billedNow, p.subscriptionId, a.lines);
        const mineOwners = owners.get(p.customerId)!;
        const inputs: CloseInputs = {
          residues: new Map(),
          deferral: deferredIn === undefined || foreign ? undefined : { deferral: deferredIn, owner: defOwners.get(p.customerId) ?? "" },
          lineDeferrals: new Map(),
          lineDeferredOut: [...a.lineDeferralsOut.keys()],
        };
        for (const k of a.lineDeferralsConsumed) {
          const v = myLines.get(k);
          if (v !== undefined) inputs.lineDeferrals.set(k, v);
          myLines.delete(k);
        }
        for (const [k, d] of a.lineDeferralsOut) myLines.set(k, { deferral: d, owner: p.invoiceId });
        if (a.lineDeferralsConsumed.size > 0 || a.lineDeferralsOut.size > 0) {
          lineWrites.push({ customerId: p.customerId, unit: p.unit, invoiceId: p.invoiceId, consumed: a.lineDeferralsConsumed, out: a.lineDeferralsOut });
        }
        for (const [k, st] of a.residues) {
          inputs.residues.set(k, { state: mine.get(k), owner: mineOwners.get(k) });
          mine.set(k, st);
          mineOwners.set(k, p.invoiceId);
        }
        if (!foreign) {
          deferrals.set(p.customerId, a.deferralOut === undefined ? undefined : { ...a.deferralOut, unit: p.unit });
          defOwners.set(p.customerId, p.invoiceId);
          deferralWrites.set(p.customerId, { unit: p.unit, invoiceId: p.invoiceId });
        }
        const t = touched.get(p.customerId) ?? { unit: p.unit, invoiceId: p.invoiceId, keys: new Map<string, string>() };
        t.unit = p.unit;
        t.invoiceId = p.invoiceId;
        for (const k of a.residues.keys()) t.keys.set(k, p.invoiceId);
        touched.set(p.customerId, t);
        existing.set(key, p.invoiceId);
        let residueDelta = 0n;
        for (const l of a.lines) residueDelta += l.residueOutNanos - l.residueInNanos;
        const tot = a.totals;
        const shown = a.deferralShown;
        invoiceRows.push([
          tenant, p.invoiceId, p.customerId, p.subscriptionId, p.periodIndex, p.periodStart, p.periodEnd, p.timeZone, p.unit, "draft",
          p.roundingMode, p.taxRateBps, tot.subtotalNanos, tot.discountNanos, tot.taxNanos, tot.totalNanos, tot.creditsAppliedNanos,
          tot.amountDueNanos, tot.amountDueMinor, tot.exactNanos, tot.residueCarriedNanos, residueDelta, tot.deferredNanos,
          shown?.amountNanos ?? null, shown?.since ?? null, shown?.periods ?? null, p.usageFrom, p.usageTo, p.now, closeInputsToJson(inputs),
          creditsToJson(creditsInUnits),
        ]);
        a.lines.forEach((l, i) =>
          lineRows.push([
            tenant, p.invoiceId, i + 1, l.id, l.kind, l.description, l.chargeId, l.subscriptionId, l.quantity, l.unitPrice,
            l.amountNanos, l.residueInNanos, l.roundedAmountNanos, l.amountMinor, l.residueOutNanos, l.periodStart, l.periodEnd, l.expandable, l.topUpUnit ?? "",
          ]),
        );
        const inv: StoredInvoice = {
          id: p.invoiceId, number: "", customerId: p.customerId, subscriptionId: p.subscriptionId, status: "draft", unit: p.unit,
          periodStart: p.periodStart, periodEnd: p.periodEnd, timeZone: p.timeZone, lines: a.lines, totals: tot, roundingMode: p.roundingMode,
          taxRateBps: p.taxRateBps, deferral: shown, createdAt: p.now, finalizedAt: undefined, paidAt: undefined, voidedAt: undefined,
          creditNote: undefined, paymentId: "", ledgerTransferIds: [], periodIndex: p.periodIndex, usageFrom: p.usageFrom, usageTo: p.usageTo,
          residueDeltaNanos: residueDelta, ledgerPending: false, voidReason: "", closeInputs: inputs, refreshedAt: undefined,
          creditsInUnits: creditsInUnits ?? [],
        };
        outcomes.push({ created: true, invoice: inv });
      }
      if (invoiceRows.length > 0) {
        await db.copyRows(
          "invoices",
          ["tenant", "invoice_id", "customer_id", "subscription_id", "period_index", "period_start", "period_end", "time_zone", "unit", "status",
            "rounding_mode", "tax_rate_bps", "subtotal_nanos", "discount_nanos", "tax_nanos", "total_nanos", "credits_applied_nanos",
            "amount_due_nanos", "amount_due_minor", "exact_nanos", "residue_carried_nanos", "residue_delta_nanos", "deferred_nanos",
            "deferral_amount_nanos", "deferral_since", "deferral_periods", "usage_from", "usage_to", "created_at", "close_inputs", "credits_in_units"],
          invoiceRows,
          tx,
        );
      }
      if (lineRows.length > 0) {
        await db.copyRows(
          "invoice_lines",
          ["tenant", "invoice_id", "line_no", "line_id", "kind", "description", "charge_id", "subscription_id", "quantity", "unit_price",
            "amount_nanos", "residue_in_nanos", "rounded_amount_nanos", "amount_minor", "residue_out_nanos", "period_start", "period_end", "expandable", "top_up_unit"],
          lineRows,
          tx,
        );
      }
      const rc: string[] = [], rk: string[] = [], ru: string[] = [], rn: string[] = [], rsn: string[] = [], rsd: string[] = [], ri: string[] = [];
      for (const [c, t] of touched) {
        for (const [k, owner] of t.keys) {
          const st = residues.get(c)!.get(k)!;
          rc.push(c); rk.push(k); ru.push(t.unit); rn.push(st.residueNanos.toString()); rsn.push(st.subNanoNum.toString()); rsd.push(st.subNanoDen.toString()); ri.push(owner);
        }
      }
      if (rc.length > 0) {
        await tx.query(
          `INSERT INTO residues (tenant, customer_id, residue_key, unit, residue_nanos, sub_nano_num, sub_nano_den, invoice_id)
           SELECT $1, c, k, u, n::bigint, sn::numeric, sd::numeric, i FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[]) AS x(c, k, u, n, sn, sd, i)
           ON CONFLICT (tenant, customer_id, residue_key) DO UPDATE SET unit = EXCLUDED.unit, residue_nanos = EXCLUDED.residue_nanos,
             sub_nano_num = EXCLUDED.sub_nano_num, sub_nano_den = EXCLUDED.sub_nano_den, invoice_id = EXCLUDED.invoice_id`,
          [tenant, rc, rk, ru, rn, rsn, rsd, ri],
        );
      }
      const dc: string[] = [], du: string[] = [], da: string[] = [], ds: Date[] = [], dp: number[] = [], di: string[] = [], gone: string[] = [];
      for (const [c, t] of deferralWrites) {
        const d = deferrals.get(c);
        if (d !== undefined) {
          dc.push(c); du.push(t.unit); da.push(d.amountNanos.toString()); ds.push(d.since); dp.push(d.periods); di.push(t.invoiceId);
        } else if (hadDeferral.has(c)) gone.push(c);
      }
      if (dc.length > 0) {
        await tx.query(
          `INSERT INTO deferrals (tenant, customer_id, unit, amount_nanos, since, periods, invoice_id)
           SELECT $1, c, u, a::bigint, s, p, i FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::int[], $7::text[]) AS x(c, u, a, s, p, i)
           ON CONFLICT (tenant, customer_id) DO UPDATE SET unit = EXCLUDED.unit, amount_nanos = EXCLUDED.amount_nanos,
             since = EXCLUDED.since, periods = EXCLUDED.periods, invoice_id = EXCLUDED.invoice_id`,
          [tenant, dc, du, da, ds, dp, di],
        );
      }
      if (gone.length > 0) await tx.query(`DELETE FROM deferrals WHERE tenant = $1 AND customer_id = ANY($2::text[])`, [tenant, gone]);
      for (const w of lineWrites) await writeLineDeferrals(tx, tenant, w.customerId, w.unit, w.invoiceId, w.consumed, w.out);
      const result: CloseOutcome[] = [];
      for (const o of outcomes) result.push(typeof o === "string" ? { created: false, invoice: (await loadInvoice(tx, tenant, o))! } : o);
      return result;
    });
  }

  async function refreshDraft(tenant: string, invoiceId: string, item: CloseItem, now: Date): Promise<RefreshOutcome> {
    const p = item.params;
    return db.transaction(async (tx) => {
      await tx.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [`invoicing:${tenant}:${p.customerId}`]);
      const inv = await loadInvoice(tx, tenant, invoiceId, true);
      if (inv === undefined) throw new InvoicingError("not_found", `invoice ${invoiceId} not found`);
      if (inv.status !== "draft") throw new InvoicingError("failed_precondition", `invoice ${invoiceId} is ${inv.status}: only a draft can be refreshed`);
      if (inv.customerId !== p.customerId || inv.subscriptionId !== p.subscriptionId || inv.periodStart.getTime() !== p.periodStart.getTime()) {
        throw new Error(`refresh of ${invoiceId}: the item is not the invoice's period`);
      }
      const inputs = inv.closeInputs;
      if (inputs === undefined) throw new InvoicingError("failed_precondition", `invoice ${invoiceId} was made before drafts could be refreshed; late usage for its period is billed on the next invoice`);
      const asRead = item.draftAsRead;
      if (
        asRead !== undefined &&
        ((asRead.refreshedAt?.getTime() ?? -1) !== (inv.refreshedAt?.getTime() ?? -1) ||
          asRead.lines.length !== inv.lines.length ||
          !asRead.lines.every((l, i) => sameLine(l, inv.lines[i]!)) ||
          creditsToJson(asRead.creditsInUnits) !== creditsToJson(inv.creditsInUnits))
      ) {
        throw new InvoicingError("aborted", `invoice ${invoiceId} was refreshed by another call while this refresh read its period: not overwritten with the older reads; retry`);
      }
      const later = await tx.query(
        `SELECT invoice_id, period_start FROM invoices WHERE tenant = $1 AND subscription_id = $2 AND period_start > $3 AND status <> 'void' ORDER BY period_start LIMIT 1`,
        [tenant, inv.subscriptionId, inv.periodStart],
      );
      if (later.rows[0] !== undefined) {
        throw new InvoicingError(
          "failed_precondition",
          `invoice ${invoiceId} cannot be refreshed: the later period ${(later.rows[0].period_start as Date).toISOString()} is already invoiced (${later.rows[0].invoice_id as string}), which bills late usage of this period`,
        );
      }
      const resRows = await tx.query(`SELECT residue_key, residue_nanos, sub_nano_num, sub_nano_den, invoice_id FROM residues WHERE tenant = $1 AND customer_id = $2`, [tenant, p.customerId]);
      const current = new Map<string, { state: ResidueState; owner: string }>();
      for (const r of resRows.rows) {
        current.set(r.residue_key as string, { state: { residueNanos: big(r.residue_nanos), subNanoNum: big(r.sub_nano_num), subNanoDen: big(r.sub_nano_den) }, owner: r.invoice_id as string });
      }
      for (const k of inputs.residues.keys()) {
        const owner = current.get(k)?.owner;
        if (owner !== invoiceId) {
          throw new InvoicingError("failed_precondition", `invoice ${invoiceId} cannot be refreshed: the residue ${k} it carried out was carried on by ${owner === undefined ? "another invoice" : `invoice ${owner}`}`);
        }
      }
      const defRow = (await tx.query(`SELECT invoice_id, amount_nanos, since, periods, unit FROM deferrals WHERE tenant = $1 AND customer_id = $2`, [tenant, p.customerId])).rows[0];
      // an amount carried in another currency is not this invoice's: it is passed on untouched
      const foreignDeferral: Deferral | undefined =
        defRow !== undefined && defRow.unit !== p.unit ? { amountNanos: big(defRow.amount_nanos), since: defRow.since as Date, periods: Number(defRow.periods), unit: defRow.unit as string } : undefined;
      if ((defRow !== undefined && foreignDeferral === undefined && defRow.invoice_id !== invoiceId) || (defRow === undefined && inv.totals.deferredNanos !== 0n)) {
        throw new InvoicingError("failed_precondition", `invoice ${invoiceId} cannot be refreshed: the amount it deferred (minimum billable) was carried on by a later invoice`);
      }
      // The residues as the close read them: the draft's inputs over the customer's current state.
      const residuesIn = new Map<string, ResidueState>();
      for (const [k, v] of current) residuesIn.set(k, v.state);
      for (const [k, v] of inputs.residues) {
        if (v.state === undefined) residuesIn.delete(k);
        else residuesIn.set(k, v.state);
      }
      const deferredIn = foreignDeferral ?? inputs.deferral?.deferral;
      // Line deferrals: the draft's outputs must still be its own, the ones it consumed still gone.
      const ldRows = await tx.query(`SELECT * FROM line_deferrals WHERE tenant = $1 AND customer_id = $2`, [tenant, p.customerId]);
      const ldCurrent = new Map<string, { deferral: LineDeferral; owner: string }>();
      for (const r of ldRows.rows) ldCurrent.set(r.charge_id as string, { deferral: lineDeferralFromRow(r), owner: r.invoice_id as string });
      for (const k of new Set([...inputs.lineDeferredOut, ...inputs.lineDeferrals.keys()])) {
        const owner = ldCurrent.get(k)?.owner;
        const ok = inputs.lineDeferredOut.includes(k) ? owner === invoiceId : owner === undefined;
        if (!ok) throw new InvoicingError("failed_precondition", `invoice ${invoiceId} cannot be refreshed: the usage of ${k} it carried (line minimum) was carried on by ${owner === undefined ? "a later invoice" : `invoice ${owner}`}`);
      }
      const lineIn = new Map<string, LineDeferral>();
      for (const [k, v] of ldCurrent) if (v.owner !== invoiceId) lineIn.set(k, v.deferral);
      for (const [k, v] of inputs.lineDeferrals) lineIn.set(k, v.deferral);
      const unchanged = new Set<number>();
      if ((item.late ?? []).length > 0) {
        const billedNow = await readBilled(tx, tenant, item.late!.map((w) => ({ subscriptionId: p.subscriptionId, usageFrom: w.usageFrom, periodStart: w.periodStart })), invoiceId);
        for (const w of item.late!) {
          const usageNow = billedNow.get(billedKey(p.subscriptionId, "usage", w.usageFrom));
          const creditsNow = billedNow.get(billedKey(p.subscriptionId, "credits", w.periodStart))?.get("") ?? 0n;
          if (sameBilled(usageNow, w.billedUsage) && creditsNow === w.billedCredits) unchanged.add(w.periodStart.getTime());
        }
      }
      const a = item.assemble(residuesIn, deferredIn, unchanged, lineIn, await readOneOffs(tx, tenant, item.oneOffIds ?? [], invoiceId));
      const same =
        a.lines.length === inv.lines.length &&
        a.lines.every((l, i) => sameLine(l, inv.lines[i]!)) &&
        (a.deferralOut?.amountNanos ?? 0n) === inv.totals.deferredNanos &&
        inv.roundingMode === p.roundingMode &&
        inv.taxRateBps === p.taxRateBps &&
        creditsToJson(inv.creditsInUnits) === creditsToJson(item.creditsInUnits) &&
        [...inputs.residues.keys()].every((k) => a.residues.has(k)) &&
        [...a.residues].every(([k, st]) => {
          const c = current.get(k)?.state;
          return c !== undefined && c.residueNanos === st.residueNanos && c.subNanoNum * st.subNanoDen === st.subNanoNum * c.subNanoDen;
        });
      if (same) return { invoice: inv, changed: false };

      // New inputs: the old ones for keys touched before, the current state for keys touched now only.
      const next: CloseInputs = { residues: new Map(), deferral: inputs.deferral, lineDeferrals: new Map(), lineDeferredOut: [...a.lineDeferralsOut.keys()] };
      for (const k of a.lineDeferralsConsumed) {
        const v = inputs.lineDeferrals.get(k) ?? ldCurrent.get(k);
        if (v !== undefined) next.lineDeferrals.set(k, v);
      }
      const restore: Array<{ key: string; state: ResidueState | undefined; owner: string | undefined }> = [];
      for (const [k, v] of inputs.residues) if (!a.residues.has(k)) restore.push({ key: k, ...v });
      for (const k of a.residues.keys()) {
        const old = inputs.residues.get(k);
        const cur = current.get(k);
        next.residues.set(k, old ?? { state: cur?.state, owner: cur?.owner });
      }
      let residueDelta = 0n;
      for (const l of a.lines) residueDelta += l.residueOutNanos - l.residueInNanos;
      const tot = a.totals;
      const shown = a.deferralShown;
      await tx.query(`DELETE FROM invoice_lines WHERE tenant = $1 AND invoice_id = $2`, [tenant, invoiceId]);
      if (a.lines.length > 0) {
        await db.copyRows(
          "invoice_lines",
          ["tenant", "invoice_id", "line_no", "line_id", "kind", "description", "charge_id", "subscription_id", "quantity", "unit_price",
            "amount_nanos", "residue_in_nanos", "rounded_amount_nanos", "amount_minor", "residue_out_nanos", "period_start", "period_end", "expandable", "top_up_unit"],
          a.lines.map((l, i) => [
            tenant, invoiceId, i + 1, l.id, l.kind, l.description, l.chargeId, l.subscriptionId, l.quantity, l.unitPrice,
            l.amountNanos, l.residueInNanos, l.roundedAmountNanos, l.amountMinor, l.residueOutNanos, l.periodStart, l.periodEnd, l.expandable, l.topUpUnit ?? "",
          ]),
          tx,
        );
      }
      await tx.query(
        `UPDATE invoices SET rounding_mode = $3, tax_rate_bps = $4, subtotal_nanos = $5, discount_nanos = $6, tax_nanos = $7, total_nanos = $8,
           credits_applied_nanos = $9, amount_due_nanos = $10, amount_due_minor = $11, exact_nanos = $12, residue_carried_nanos = $13,
           residue_delta_nanos = $14, deferred_nanos = $15, deferral_amount_nanos = $16, deferral_since = $17, deferral_periods = $18,
           close_inputs = $19::jsonb, refreshed_at = $20, credits_in_units = $21::jsonb
         WHERE tenant = $1 AND invoice_id = $2`,
        [
          tenant, invoiceId, p.roundingMode, p.taxRateBps, tot.subtotalNanos, tot.discountNanos, tot.taxNanos, tot.totalNanos, tot.creditsAppliedNanos,
          tot.amountDueNanos, tot.amountDueMinor, tot.exactNanos, tot.residueCarriedNanos, residueDelta, tot.deferredNanos,
          shown?.amountNanos ?? null, shown?.since ?? null, shown?.periods ?? null, closeInputsToJson(next), now, creditsToJson(item.creditsInUnits),
        ],
      );
      // Residues: keys no longer touched go back to their input state (and owner); touched keys carry the new state.
      for (const r of restore) {
        if (r.state === undefined) await tx.query(`DELETE FROM residues WHERE tenant = $1 AND customer_id = $2 AND residue_key = $3`, [tenant, p.customerId, r.key]);
        else {
          await tx.query(
            `UPDATE residues SET residue_nanos = $4, sub_nano_num = $5::numeric, sub_nano_den = $6::numeric, invoice_id = $7 WHERE tenant = $1 AND customer_id = $2 AND residue_key = $3`,
            [tenant, p.customerId, r.key, r.state.residueNanos, r.state.subNanoNum.toString(), r.state.subNanoDen.toString(), r.owner ?? invoiceId],
          );
        }
      }
      for (const [k, st] of a.residues) {
        await tx.query(
          `INSERT INTO residues (tenant, customer_id, residue_key, unit, residue_nanos, sub_nano_num, sub_nano_den, invoice_id)
           VALUES ($1, $2, $3, $4, $5, $6::numeric, $7::numeric, $8)
           ON CONFLICT (tenant, customer_id, residue_key) DO UPDATE SET unit = EXCLUDED.unit, residue_nanos = EXCLUDED.residue_nanos,
             sub_nano_num = EXCLUDED.sub_nano_num, sub_nano_den = EXCLUDED.sub_nano_den, invoice_id = EXCLUDED.invoice_id`,
          [tenant, p.customerId, k, p.unit, st.residueNanos, st.subNanoNum.toString(), st.subNanoDen.toString(), invoiceId],
        );
      }
      const d = a.deferralOut;
      if (d !== undefined) {
        await tx.query(
          `INSERT INTO deferrals (tenant, customer_id, unit, amount_nanos, since, periods, invoice_id) VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (tenant, customer_id) DO UPDATE SET unit = EXCLUDED.unit, amount_nanos = EXCLUDED.amount_nanos,
             since = EXCLUDED.since, periods = EXCLUDED.periods, invoice_id = EXCLUDED.invoice_id`,
          [tenant, p.customerId, p.unit, d.amountNanos, d.since, d.periods, invoiceId],
        );
      } else await tx.query(`DELETE FROM deferrals WHERE tenant = $1 AND customer_id = $2 AND invoice_id = $3`, [tenant, p.customerId, invoiceId]);
      // Line deferrals: the draft's old outputs and what it consumes now are replaced by its new outputs;
      // an input it no longer consumes goes back to its owner.
      await writeLineDeferrals(tx, tenant, p.customerId, p.unit, invoiceId, new Set([...inputs.lineDeferredOut, ...a.lineDeferralsConsumed]), a.lineDeferralsOut);
      for (const [k, v] of inputs.lineDeferrals) {
        if (!a.lineDeferralsConsumed.has(k) && !a.lineDeferralsOut.has(k)) await writeLineDeferrals(tx, tenant, p.customerId, p.unit, v.owner, [], new Map([[k, v.deferral]]));
      }
      return { invoice: (await loadInvoice(tx, tenant, invoiceId))!, changed: true };
    });
  }

  function settingsFromRow(r: Row): StoredSettings {
      return {
        customerId: r.customer_id as string,
        taxRateBps: Number(r.tax_rate_bps),
        roundingMode: r.rounding_mode as RoundingMode,
        discountBps: Number(r.discount_bps),
        discountNanos: big(r.discount_nanos),
        minimumBillableNanos: big(r.minimum_billable_nanos),
        deferralPeriodsMax: Number(r.deferral_periods_max),
        deferralUntil: opt<Date>(r.deferral_until),
        periodInterval: r.period_interval as PeriodInterval,
        periodAnchor: r.period_anchor as PeriodAnchor,
        gracePeriodMs: Number(r.grace_period_ms ?? 0),
        autoFinalize: r.auto_finalize === true,
        lineMinimumBillableNanos: big(r.line_minimum_billable_nanos ?? 0),
      };
  }

  return {
    async getSettings(tenant, customerId) {
      const { rows } = await db.query(`SELECT * FROM billing_settings WHERE tenant = $1 AND customer_id = $2`, [tenant, customerId]);
      return rows[0] === undefined ? undefined : settingsFromRow(rows[0]);
    },

    async getSettingsMany(tenant, customerIds) {
      const out = new Map<string, StoredSettings>();
      if (customerIds.length === 0) return out;
      const { rows } = await db.query(`SELECT * FROM billing_settings WHERE tenant = $1 AND customer_id = ANY($2::text[])`, [tenant, customerIds]);
      for (const r of rows) out.set(r.customer_id as string, settingsFromRow(r));
      return out;
    },

    async existingIds(tenant, pairs) {
      const out = new Map<string, string>();
      if (pairs.length === 0) return out;
      const { rows } = await db.query(
        `SELECT i.subscription_id, i.period_start, i.invoice_id FROM invoices i
         JOIN unnest($2::text[], $3::timestamptz[]) AS w(sub, ps) ON i.subscription_id = w.sub AND i.period_start = w.ps
         WHERE i.tenant = $1`,
        [tenant, pairs.map((x) => x.subscriptionId), pairs.map((x) => x.periodStart)],
      );
      for (const r of rows) out.set(`${r.subscription_id as string}|${(r.period_start as Date).getTime()}`, r.invoice_id as string);
      return out;
    },

    async putSettings(tenant, s, now) {
      return db.transaction(async (tx) => {
        // Under the customer's close lock: the period grid (interval, anchor) cannot change once the
        // customer has a non-void invoice: the windows and fee periods already invoiced were cut on
        // the old grid, and the new grid's periods would overlap them (usage and fees billed twice)
        // or leave gaps. A close racing this change is refused under the same lock (closeBatch).
        await tx.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [`invoicing:${tenant}:${s.customerId}`]);
        const cur = await tx.query(`SELECT period_interval, period_anchor FROM billing_settings WHERE tenant = $1 AND customer_id = $2`, [tenant, s.customerId]);
        const interval = (cur.rows[0]?.period_interval as string | undefined) ?? DEFAULT_PERIOD_INTERVAL;
        const anchor = (cur.rows[0]?.period_anchor as string | undefined) ?? DEFAULT_PERIOD_ANCHOR;
        if (interval !== s.periodInterval || anchor !== s.periodAnchor) {
          const inv = await tx.query(`SELECT invoice_id FROM invoices WHERE tenant = $1 AND customer_id = $2 AND status <> 'void' ORDER BY period_start LIMIT 1`, [tenant, s.customerId]);
          if (inv.rows[0] !== undefined) {
            const field = interval !== s.periodInterval ? "settings.period_interval" : "settings.period_anchor";
            const [from, to] = interval !== s.periodInterval ? [interval, s.periodInterval] : [anchor, s.periodAnchor];
            throw new InvoicingError(
              "failed_precondition",
              `${field}: cannot change from ${from} to ${to}: customer ${s.customerId} has invoices (e.g. ${inv.rows[0].invoice_id as string}) on the current period grid, and periods on a new grid would overlap them (usage and fees billed twice); void them first or keep the setting`,
              field,
            );
          }
        }
        await tx.query(
          `INSERT INTO billing_settings (tenant, customer_id, tax_rate_bps, rounding_mode, discount_bps, discount_nanos,
             minimum_billable_nanos, deferral_periods_max, deferral_until, period_interval, period_anchor, updated_at, grace_period_ms, line_minimum_billable_nanos, auto_finalize)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
           ON CONFLICT (tenant, customer_id) DO UPDATE SET tax_rate_bps = EXCLUDED.tax_rate_bps,
             rounding_mode = EXCLUDED.rounding_mode, discount_bps = EXCLUDED.discount_bps, discount_nanos = EXCLUDED.discount_nanos,
             minimum_billable_nanos = EXCLUDED.minimum_billable_nanos, deferral_periods_max = EXCLUDED.deferral_periods_max,
             deferral_until = EXCLUDED.deferral_until, period_interval = EXCLUDED.period_interval,
             period_anchor = EXCLUDED.period_anchor, updated_at = EXCLUDED.updated_at, grace_period_ms = EXCLUDED.grace_period_ms,
             line_minimum_billable_nanos = EXCLUDED.line_minimum_billable_nanos, auto_finalize = EXCLUDED.auto_finalize`,
          [tenant, s.customerId, s.taxRateBps, s.roundingMode, s.discountBps, s.discountNanos, s.minimumBillableNanos, s.deferralPeriodsMax, s.deferralUntil ?? null, s.periodInterval, s.periodAnchor, now, s.gracePeriodMs, s.lineMinimumBillableNanos ?? 0n, s.autoFinalize],
        );
        return s;
      });
    },

    getInvoice: (tenant, invoiceId) => loadInvoice(db, tenant, invoiceId),

    async getInvoices(tenant, invoiceIds) {
      const out = new Map<string, StoredInvoice>();
      if (invoiceIds.length === 0) return out;
      const { rows } = await db.query(`SELECT ${INVOICE_COLUMNS} FROM invoices WHERE tenant = $1 AND invoice_id = ANY($2::text[])`, [tenant, invoiceIds]);
      const lines = await db.query(`SELECT * FROM invoice_lines WHERE tenant = $1 AND invoice_id = ANY($2::text[]) ORDER BY invoice_id, line_no`, [tenant, invoiceIds]);
      const cns = await db.query(`SELECT * FROM credit_notes WHERE tenant = $1 AND invoice_id = ANY($2::text[])`, [tenant, invoiceIds]);
      const byInvoice = new Map<string, InvoiceLine[]>();
      for (const l of lines.rows) {
        const id = l.invoice_id as string;
        const list = byInvoice.get(id) ?? [];
        list.push(lineFromRow(l));
        byInvoice.set(id, list);
      }
      const cnBy = new Map(cns.rows.map((r) => [r.invoice_id as string, creditNoteFromRow(r)]));
      for (const r of rows) out.set(r.invoice_id as string, invoiceFromRow(r, byInvoice.get(r.invoice_id as string) ?? [], cnBy.get(r.invoice_id as string)));
      return out;
    },

    async findByPeriod(tenant, subscriptionId, periodStart) {
      const { rows } = await db.query(`SELECT invoice_id FROM invoices WHERE tenant = $1 AND subscription_id = $2 AND period_start = $3`, [tenant, subscriptionId, periodStart]);
      return rows[0] === undefined ? undefined : loadInvoice(db, tenant, rows[0].invoice_id as string);
    },

    async listInvoices(tenant, p) {
      const params: unknown[] = [tenant];
      let where = "tenant = $1";
      if (p.customerId !== "") {
        params.push(p.customerId);
        where += ` AND customer_id = $${params.length}`;
      }
      if (p.status !== "") {
        params.push(p.status);
        where += ` AND status = $${params.length}`;
      }
      if (p.after !== undefined) {
        params.push(p.after.periodStart, p.after.invoiceId);
        where += ` AND (period_start, invoice_id) < ($${params.length - 1}, $${params.length})`;
      }
      params.push(p.limit);
      const { rows } = await db.query(`SELECT ${INVOICE_COLUMNS} FROM invoices WHERE ${where} ORDER BY period_start DESC, invoice_id DESC LIMIT $${params.length}`, params);
      return rows.map((r) => invoiceFromRow(r, [], undefined));
    },

    readResidues: (tenant, customerId) => readResidues(db, tenant, customerId),
    readDeferral: (tenant, customerId) => readDeferral(db, tenant, customerId),
    billedOneOffs: (tenant, chargeIds, excludeInvoiceId) => readOneOffs(db, tenant, chargeIds, excludeInvoiceId),
    async readLineDeferrals(tenant, customerId) {
      const { rows } = await db.query(`SELECT * FROM line_deferrals WHERE tenant = $1 AND customer_id = $2 ORDER BY charge_id`, [tenant, customerId]);
      return new Map(rows.map((r) => [r.charge_id as string, lineDeferralFromRow(r)]));
    },

    async closePeriod(tenant, p, assemble) {
      const out = (await closeMany(tenant, [{ params: p, assemble }]))[0]!;
      if ("refused" in out) throw out.cause;
      return out;
    },

    closeMany,

    async finalize(tenant, invoiceId, now, transferIds) {
      return db.transaction(async (tx) => {
        const inv = await loadInvoice(tx, tenant, invoiceId, true);
        if (inv === undefined) throw new InvoicingError("not_found", `invoice ${invoiceId} not found`);
        checkFinalize(invoiceId, inv.status);
        // The number is allocated here, in the finalize transaction: a rollback gives it back.
        const seq = await nextNumber(tx, tenant, "invoice");
        const ids = transferIds(inv);
        await tx.query(
          `UPDATE invoices SET status = 'finalized', number_seq = $3, number = $4, finalized_at = $5,
             ledger_transfer_ids = ledger_transfer_ids || $6::text[], ledger_pending = $7
           WHERE tenant = $1 AND invoice_id = $2`,
          [tenant, invoiceId, seq, formatNumber("INV", seq), now, ids, ids.length > 0],
        );
        return (await loadInvoice(tx, tenant, invoiceId))!;
      });
    },

    async markPaid(tenant, invoiceId, paymentId, paidAt, transferIds) {
      return db.transaction(async (tx) => {
        const inv = await loadInvoice(tx, tenant, invoiceId, true);
        if (inv === undefined) throw new InvoicingError("not_found", `invoice ${invoiceId} not found`);
        if (checkMarkPaid(invoiceId, inv.status, inv.paymentId, paymentId) === "replay") return { invoice: inv, replay: true };
        const used = await tx.query(`SELECT invoice_id FROM invoices WHERE tenant = $1 AND payment_id = $2`, [tenant, paymentId]);
        if (used.rows[0] !== undefined) throw new InvoicingError("already_exists", `payment_id: ${paymentId} already paid invoice ${used.rows[0].invoice_id as string}`, "payment_id");
        const ids = transferIds(inv);
        await tx.query(
          `UPDATE invoices SET status = 'paid', payment_id = $3, paid_at = $4, ledger_transfer_ids = ledger_transfer_ids || $5::text[],
             ledger_pending = ledger_pending OR $6
           WHERE tenant = $1 AND invoice_id = $2`,
          [tenant, invoiceId, paymentId, paidAt, ids, ids.length > 0],
        );
        return { invoice: (await loadInvoice(tx, tenant, invoiceId))!, replay: false };
      });
    },

    async voidInvoice(tenant, invoiceId, reason, creditNoteId, now, transferIds) {
      return db.transaction(async (tx) => {
        // The customer's close lock first (as closes and refreshes take it, then the row): the
        // deferrals the void gives back are the customer's state.
        const head = (await tx.query(`SELECT customer_id FROM invoices WHERE tenant = $1 AND invoice_id = $2`, [tenant, invoiceId])).rows[0];
        if (head === undefined) throw new InvoicingError("not_found", `invoice ${invoiceId} not found`);
        await tx.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [`invoicing:${tenant}:${head.customer_id as string}`]);
        const inv = await loadInvoice(tx, tenant, invoiceId, true);
        if (inv === undefined) throw new InvoicingError("not_found", `invoice ${invoiceId} not found`);
        if (checkVoid(invoiceId, inv.status, creditNoteId, inv.creditNote?.id ?? "") === "replay") return { invoice: inv, replay: true };
        await giveBackCarried(tx, tenant, inv);
        if (creditNoteId !== "") {
          const used = await tx.query(`SELECT invoice_id FROM credit_notes WHERE tenant = $1 AND credit_note_id = $2`, [tenant, creditNoteId]);
          if (used.rows[0] !== undefined) throw new InvoicingError("already_exists", `credit_note_id: ${creditNoteId} already credits invoice ${used.rows[0].invoice_id as string}`, "credit_note_id");
          const seq = await nextNumber(tx, tenant, "credit_note");
          await tx.query(
            `INSERT INTO credit_notes (tenant, credit_note_id, invoice_id, number_seq, number, amount_nanos, unit, reason, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
            [tenant, creditNoteId, invoiceId, seq, formatNumber("CN", seq), inv.totals.amountDueNanos, inv.unit, reason, now],
          );
        }
        const ids = inv.status === "draft" ? [] : transferIds(inv);
        await tx.query(
          `UPDATE invoices SET status = 'void', voided_at = $3, void_reason = $4, ledger_transfer_ids = ledger_transfer_ids || $5::text[],
             ledger_pending = ledger_pending OR $6
           WHERE tenant = $1 AND invoice_id = $2`,
          [tenant, invoiceId, now, reason, ids, ids.length > 0],
        );
        return { invoice: (await loadInvoice(tx, tenant, invoiceId))!, replay: false };
      });
    },

    async billedUsage(tenant, subscriptionId, windowStart) {
      const { rows } = await db.query(
        `SELECT l.charge_id, SUM(l.amount_nanos)::bigint AS s FROM invoice_lines l
         JOIN invoices i ON i.tenant = l.tenant AND i.invoice_id = l.invoice_id
         WHERE l.tenant = $1 AND l.subscription_id = $2 AND l.period_start = $3 AND l.kind IN ('usage', 'adjustment') AND i.status <> 'void'
         GROUP BY l.charge_id`,
        [tenant, subscriptionId, windowStart],
      );
      return new Map(rows.map((r) => [r.charge_id as string, big(r.s)]));
    },

    billedWindows: (tenant, windows, excludeInvoiceId) => readBilled(db, tenant, windows, excludeInvoiceId),

    refreshDraft,

    async billedFees(tenant, subscriptionId, periodStart, chargeIds, excludeInvoiceId = "") {
      if (chargeIds.length === 0) return new Map();
      const { rows } = await db.query(
        `SELECT l.charge_id, SUM(l.amount_nanos)::bigint AS s FROM invoice_lines l
         JOIN invoices i ON i.tenant = l.tenant AND i.invoice_id = l.invoice_id
         WHERE l.tenant = $1 AND l.subscription_id = $2 AND l.period_start = $3 AND l.charge_id = ANY($4::text[])
           AND l.kind IN ('seats', 'flat', 'adjustment') AND i.status <> 'void' AND i.invoice_id <> $5
         GROUP BY l.charge_id`,
        [tenant, subscriptionId, periodStart, chargeIds, excludeInvoiceId],
      );
      return new Map(rows.map((r) => [r.charge_id as string, big(r.s)]));
    },

    async markLedgerPosted(tenant, invoiceId) {
      await db.query(`UPDATE invoices SET ledger_pending = false WHERE tenant = $1 AND invoice_id = $2`, [tenant, invoiceId]);
    },

    async listLedgerPending(limit) {
      const { rows } = await db.query(`SELECT tenant, invoice_id FROM invoices WHERE ledger_pending ORDER BY finalized_at LIMIT $1`, [limit]);
      return rows.map((r) => ({ tenant: r.tenant as string, invoiceId: r.invoice_id as string }));
    },

    async claimDrafts(now, recheckMs, limit) {
      const { rows } = await db.query(
        `WITH due AS (
           SELECT i.tenant, i.invoice_id FROM invoices i
           JOIN billing_settings s ON s.tenant = i.tenant AND s.customer_id = i.customer_id
           WHERE i.status = 'draft'
             AND ((s.grace_period_ms > 0 AND i.period_end + s.grace_period_ms * interval '1 millisecond' > $1)
               OR (s.auto_finalize AND i.period_end + s.grace_period_ms * interval '1 millisecond' <= $1))
             AND (i.draft_checked_at IS NULL OR i.draft_checked_at <= $1::timestamptz - $2 * interval '1 millisecond')
           ORDER BY i.draft_checked_at NULLS FIRST, i.period_end, i.tenant, i.invoice_id
           LIMIT $3
           FOR UPDATE OF i SKIP LOCKED
         )
         UPDATE invoices i SET draft_checked_at = $1 FROM due, billing_settings s
         WHERE i.tenant = due.tenant AND i.invoice_id = due.invoice_id AND s.tenant = i.tenant AND s.customer_id = i.customer_id
         RETURNING i.tenant, i.invoice_id, i.customer_id, i.period_end, s.grace_period_ms, s.auto_finalize`,
        [now, recheckMs, limit],
      );
      return rows
        .map((r) => ({
          tenant: r.tenant as string,
          invoiceId: r.invoice_id as string,
          customerId: r.customer_id as string,
          periodEnd: r.period_end as Date,
          gracePeriodMs: Number(r.grace_period_ms),
          autoFinalize: r.auto_finalize === true,
        }))
        .sort((a, b) => a.periodEnd.getTime() - b.periodEnd.getTime() || (a.invoiceId < b.invoiceId ? -1 : 1));
    },

    async listFinalized(tenant, customerId, limit) {
      const params: unknown[] = [tenant, limit];
      let where = "tenant = $1 AND status IN ('finalized', 'paid')";
      if (customerId !== "") {
        params.push(customerId);
        where += " AND customer_id = $3";
      }
      const { rows } = await db.query(`SELECT invoice_id FROM invoices WHERE ${where} ORDER BY number_seq LIMIT $2`, params);
      const out: StoredInvoice[] = [];
      for (const r of rows) out.push((await loadInvoice(db, tenant, r.invoice_id as string))!);
      return out;
    },

    async residueTotal(tenant, customerId, unit) {
      const { rows } = await db.query(`SELECT COALESCE(SUM(residue_nanos), 0)::bigint AS s FROM residues WHERE tenant = $1 AND customer_id = $2 AND unit = $3`, [tenant, customerId, unit]);
      return big(rows[0]!.s);
    },
  };
}
