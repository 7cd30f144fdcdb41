/** LedgerService handlers: decode -> store (domain inside) -> encode. Thin; no SQL here. */
import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import {
  CreateAccountsResponseSchema,
  type CreateTransfersResponse,
  CreateTransfersResponseSchema,
  type CreateTransfersRequestView,
  type CreateTransfersResponseView,
  GetAccountBalancesResponseSchema,
  GetAccountTransfersResponseSchema,
  LedgerService,
  LookupAccountsResponseSchema,
  LookupTransfersResponseSchema,
  QueryAccountsResponseSchema,
  QueryTransfersResponseSchema,
  VerifyResponseSchema,
} from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { invalidArgument, notFound, requireScope, tenantOf } from "@nanobill/service-kit";
import { isUnitCode } from "@nanobill/money";
import { isValidId, isValidSmallMap } from "./domain/validate.js";
import { noHistory, storeError } from "./errors.js";
import {
  ACCOUNTS_PER_REQUEST_MAX,
  LOOKUP_IDS_MAX,
  METADATA_ENTRIES_MAX,
  PAGE_SIZE_DEFAULT,
  PAGE_SIZE_MAX,
  PAGE_TOKEN_BYTES_MAX,
  REFERENCES_ENTRIES_MAX,
  TRANSFERS_PER_REQUEST_MAX,
} from "./limits.js";
import {
  accountItemResultToPb,
  accountToPb,
  balanceToPb,
  newAccountFromPb,
  newTransferFromPb,
  transferItemResultToPb,
  timestampToUs,
  TimestampNanosError,
  transferToPb,
  unitTotalsToPb,
  usToTimestamp,
} from "./mapping.js";
import type { LedgerStore, QueryPage } from "./store/types.js";
import { decodeNewTransfer, encodeTransferItemResult, WireError } from "./wire.js";

/** Writes need "admin" (or "internal", which implies it); reads need "read". */
function writer(ctx: HandlerContext): string {
  requireScope(ctx, "admin");
  return tenantOf(ctx);
}
function reader(ctx: HandlerContext): string {
  requireScope(ctx, "read");
  return tenantOf(ctx);
}

function checkBatch(field: string, n: number, max: number): void {
  if (n === 0) throw invalidArgument(field, `must hold 1..${max} items, got 0`);
  if (n > max) throw invalidArgument(field, `must hold 1..${max} items, got ${n}`);
}

function pageSize(n: number): number {
  return n === 0 ? PAGE_SIZE_DEFAULT : Math.min(n, PAGE_SIZE_MAX);
}

const PAGE_TOKEN_RE = /^t1:(-?\d{1,19})$/;

function parsePageToken(token: string): bigint | null {
  if (token === "") return null;
  const m = token.length <= PAGE_TOKEN_BYTES_MAX ? PAGE_TOKEN_RE.exec(token) : null;
  const us = m ? BigInt(m[1]!) : null;
  // A token names a time in µs: outside int64 it is no token of ours (and PostgreSQL's bigint refuses it).
  if (us === null || us < -(2n ** 63n) || us >= 2n ** 63n) throw invalidArgument("page_token", "must be a next_page_token returned by this RPC");
  return us;
}

function pageToken(us: bigint): string {
  return `t1:${us}`;
}

function checkAccountId(id: string): void {
  if (!isValidId(id)) throw invalidArgument("account_id", "must be 1-128 characters of [A-Za-z0-9._:/@+=-]");
}

/** Runs f, answering a Timestamp with nanos out of range (TimestampNanosError) as InvalidArgument naming `field`. */
function inTimestampField<T>(field: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof TimestampNanosError) throw invalidArgument(field, e.message);
    throw e;
  }
}

/** The seconds a query's Timestamp may name: years 1..9999 UTC (beyond, the µs would not fit PostgreSQL's bigint). */
const QUERY_SECONDS_MIN = -62_135_596_800n; // 0001-01-01T00:00:00Z
const QUERY_SECONDS_MAX = 253_402_300_799n; // 9999-12-31T23:59:59Z

/** µs of an optional Timestamp field (null when absent); nanos or seconds out of range is InvalidArgument naming the field. */
function usOf(field: string, ts: Timestamp | undefined): bigint | null {
  if (ts === undefined) return null;
  const us = inTimestampField(field, () => timestampToUs(ts));
  if (ts.seconds < QUERY_SECONDS_MIN || ts.seconds > QUERY_SECONDS_MAX) throw invalidArgument(field, `must be a time in years 1..9999 UTC, got ${ts.seconds} seconds since the epoch`);
  return us;
}

/** The time range of a listing: start inclusive, end exclusive; end before start is InvalidArgument. */
function timeRange(start: Timestamp | undefined, end: Timestamp | undefined): { startUs: bigint | null; endUs: bigint | null } {
  const startUs = usOf("start_time", start);
  const endUs = usOf("end_time", end);
  if (startUs !== null && endUs !== null && endUs < startUs) throw invalidArgument("end_time", "must not be before start_time");
  return { startUs, endUs };
}

/** The shared filter fields of QueryAccounts / QueryTransfers (TigerBeetle's QueryFilter). */
function checkQueryFilter(unit: string, entries: Record<string, string>, field: "metadata" | "references", entriesMax: number): void {
  if (unit !== "" && !isUnitCode(unit)) throw invalidArgument("unit", "must be empty (any) or an ISO 4217 code / credit type id");
  if (!isValidSmallMap(entries, entriesMax)) {
    throw invalidArgument(field, `must hold at most ${entriesMax} entries, keys 1-64 bytes, values up to 256 bytes, no NUL or unpaired surrogate`);
  }
}

/**
 * The next page token of a query (asked for limit + 1 rows): after the page's last row when more
 * matched, after the scan window when it ended before the page filled, else none.
 */
function queryNextToken<T extends { timestampUs: bigint }>(rows: QueryPage<T>, page: T[], limit: number): string {
  if (rows.items.length > limit) return pageToken(page[page.length - 1]!.timestampUs);
  if (rows.scannedToUs !== null) return pageToken(rows.scannedToUs);
  return "";
}

async function guard<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    throw storeError(e);
  }
}

/**
 * CreateTransfers for binary calls on the service kit's fast path (server.ts registers it as a
 * binary view): each transfer arrives as its bytes and each result leaves as its bytes (wire.ts),
 * with the same checks and answers as the regular handler (which serves JSON and the rest).
 */
export function createTransfersBinary(store: LedgerStore) {
  return async (req: unknown, ctx: HandlerContext): Promise<Pick<CreateTransfersResponseView, "results">> => {
    const tenant = writer(ctx);
    const encoded = (req as CreateTransfersRequestView).transfers;
    checkBatch("transfers", encoded.length, TRANSFERS_PER_REQUEST_MAX);
    const transfers = encoded.map((bytes, i) => {
      try {
        return decodeNewTransfer(bytes);
      } catch (e) {
        if (e instanceof WireError) throw invalidArgument(`transfers[${i}]`, `is not a valid NewTransfer (${e.message})`);
        if (e instanceof TimestampNanosError) throw invalidArgument(`transfers[${i}].timestamp`, e.message);
        throw e;
      }
    });
    const results = await guard(store.createTransfers(tenant, transfers));
    return { results: results.map(encodeTransferItemResult) };
  };
}

export function createLedgerHandlers(store: LedgerStore): ServiceImpl<typeof LedgerService> {
  return {
    async createAccounts(req, ctx) {
      const tenant = writer(ctx);
      checkBatch("accounts", req.accounts.length, ACCOUNTS_PER_REQUEST_MAX);
      const results = await guard(store.createAccounts(tenant, req.accounts.map((a, i) => inTimestampField(`accounts[${i}].timestamp`, () => newAccountFromPb(a)))));
      return create(CreateAccountsResponseSchema, { results: results.map(accountItemResultToPb) });
    },

    async createTransfers(req, ctx) {
      const tenant = writer(ctx);
      checkBatch("transfers", req.transfers.length, TRANSFERS_PER_REQUEST_MAX);
      const results = await guard(store.createTransfers(tenant, req.transfers.map((t, i) => inTimestampField(`transfers[${i}].timestamp`, () => newTransferFromPb(t)))));
      return create(CreateTransfersResponseSchema, { results: results.map(transferItemResultToPb) });
    },

    async lookupAccounts(req, ctx) {
      const tenant = reader(ctx);
      checkBatch("ids", req.ids.length, LOOKUP_IDS_MAX);
      const accounts = await guard(store.lookupAccounts(tenant, req.ids));
      return create(LookupAccountsResponseSchema, { accounts: accounts.map(accountToPb) });
    },

    async lookupTransfers(req, ctx) {
      const tenant = reader(ctx);
      checkBatch("ids", req.ids.length, LOOKUP_IDS_MAX);
      const transfers = await guard(store.lookupTransfers(tenant, req.ids));
      return create(LookupTransfersResponseSchema, { transfers: transfers.map(transferToPb) });
    },

    async getAccountTransfers(req, ctx) {
      const tenant = reader(ctx);
      checkAccountId(req.accountId);
      const limit = pageSize(req.pageSizeMax);
      const startUs = usOf("start_time", req.startTime);
      const endUs = usOf("end_time", req.endTime);
      if (startUs !== null && endUs !== null && endUs < startUs) throw invalidArgument("end_time", "must not be before start_time");
      const rows = await guard(
        store.getAccountTransfers(tenant, {
          accountId: req.accountId,
          debits: req.debits,
          credits: req.credits,
          code: req.code,
          startUs,
          endUs,
          reversed: req.reversed,
          limit: limit + 1,
          afterUs: parsePageToken(req.pageToken),
        }),
      );
      const page = rows.slice(0, limit);
      return create(GetAccountTransfersResponseSchema, {
        transfers: page.map(transferToPb),
        nextPageToken: rows.length > limit ? pageToken(page[page.length - 1]!.timestampUs) : "",
      });
    },

    async getAccountBalances(req, ctx) {
      const tenant = reader(ctx);
      checkAccountId(req.accountId);
      const [account] = await guard(store.lookupAccounts(tenant, [req.accountId]));
      if (!account) throw notFound("account", req.accountId);
      if (!account.flags.history) throw noHistory(req.accountId);
      if (req.atTime) {
        const atUs = usOf("at_time", req.atTime)!;
        const snap = await guard(store.getBalanceAt(tenant, req.accountId, atUs));
        const balance = snap ?? {
          accountId: req.accountId,
          timestampUs: atUs,
          debitsPendingNanos: 0n,
          debitsPostedNanos: 0n,
          creditsPendingNanos: 0n,
          creditsPostedNanos: 0n,
        };
        return create(GetAccountBalancesResponseSchema, { balances: [balanceToPb(balance)] });
      }
      const limit = pageSize(req.pageSizeMax);
      const startUs = usOf("start_time", req.startTime);
      const endUs = usOf("end_time", req.endTime);
      if (startUs !== null && endUs !== null && endUs < startUs) throw invalidArgument("end_time", "must not be before start_time");
      const rows = await guard(
        store.getAccountBalances(tenant, {
          accountId: req.accountId,
          startUs,
          endUs,
          reversed: req.reversed,
          limit: limit + 1,
          afterUs: parsePageToken(req.pageToken),
        }),
      );
      const page = rows.slice(0, limit);
      return create(GetAccountBalancesResponseSchema, {
        balances: page.map(balanceToPb),
        nextPageToken: rows.length > limit ? pageToken(page[page.length - 1]!.timestampUs) : "",
      });
    },

    async queryAccounts(req, ctx) {
      const tenant = reader(ctx);
      checkQueryFilter(req.unit, req.metadata, "metadata", METADATA_ENTRIES_MAX);
      const limit = pageSize(req.pageSizeMax);
      const rows = await guard(
        store.queryAccounts(tenant, {
          unit: req.unit,
          code: req.code,
          metadata: { ...req.metadata },
          ...timeRange(req.startTime, req.endTime),
          reversed: req.reversed,
          limit: limit + 1,
          afterUs: parsePageToken(req.pageToken),
        }),
      );
      const page = rows.items.slice(0, limit);
      return create(QueryAccountsResponseSchema, { accounts: page.map(accountToPb), nextPageToken: queryNextToken(rows, page, limit) });
    },

    async queryTransfers(req, ctx) {
      const tenant = reader(ctx);
      checkQueryFilter(req.unit, req.references, "references", REFERENCES_ENTRIES_MAX);
      const limit = pageSize(req.pageSizeMax);
      const rows = await guard(
        store.queryTransfers(tenant, {
          unit: req.unit,
          code: req.code,
          references: { ...req.references },
          ...timeRange(req.startTime, req.endTime),
          reversed: req.reversed,
          limit: limit + 1,
          afterUs: parsePageToken(req.pageToken),
        }),
      );
      const page = rows.items.slice(0, limit);
      return create(QueryTransfersResponseSchema, { transfers: page.map(transferToPb), nextPageToken: queryNextToken(rows, page, limit) });
    },

    async verify(_req, ctx) {
      const tenant = reader(ctx);
      const report = await guard(store.verify(tenant));
      return create(VerifyResponseSchema, {
        ok: report.ok,
        violations: report.violations,
        units: report.units.map(unitTotalsToPb),
        accountsChecked: BigInt(report.accountsChecked),
        transfersChecked: BigInt(report.transfersChecked),
      });
    },
  };
}

export { usToTimestamp };
