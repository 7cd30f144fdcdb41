// RPC handlers: decode -> domain -> store -> encode. Thin; no SQL here.
import { createHash } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { PageResponseSchema } from "@nanobill/contracts/nanobill/common/v1/common_pb";
import {
  CloseUsagePeriodResponseSchema,
  CreateMeterResponseSchema,
  DeleteMeterResponseSchema,
  GetMeterResponseSchema,
  IngestEventsResponseSchema,
  IngestStatus,
  IngestStreamResponseSchema,
  ListMetersResponseSchema,
  QueryUsageResponseSchema,
  ReadEventsResponseSchema,
  SetGenAiMappingResponseSchema,
  GetGenAiMappingResponseSchema,
  type Event as PbEvent,
  type IngestEventsRequestView,
  type IngestResult,
  type MeteringService,
} from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import type { Clock, Logger } from "@nanobill/service-kit";
import { failedPrecondition, invalidArgument, limitExceeded, notFound, alreadyExists, requireOperator, requireScope, tenantOf } from "@nanobill/service-kit";
import { ErrorReason } from "@nanobill/contracts/nanobill/common/v1/common_pb";
import { currentTraceContext } from "@nanobill/telemetry";
import type { MeteringConfig } from "./config.js";
import { validateEvent, type EventInput } from "./domain/event.js";
import { sameDefinition, validateMeter } from "./domain/meter.js";
import { GENAI_MAPPING_DEFAULT, validateGenAiMapping, type GenAiMapping } from "./domain/genai.js";
import { combineBuckets, compareUsageRowKeys, planQuery, usageRowKey, type UsageQuery, type UsageRowKey } from "./domain/usage.js";
import {
  EVENTS_PER_REQUEST_MAX,
  EVENTS_PER_STREAM_MAX,
  METERS_PAGE_DEFAULT,
  METERS_PER_TENANT_MAX,
  METERS_PAGE_MAX,
  QUERY_PAGE_ROWS_DEFAULT,
  QUERY_ROWS_MAX,
  READ_EVENTS_DEFAULT,
  READ_EVENTS_MAX,
  READ_PARTITIONS_MAX,
  READ_WAIT_MS_MAX,
  READ_WAITERS_MAX,
  RESPONSE_BYTES_MAX,
  STREAM_RESPONSE_OVERHEAD_BYTES,
  CLOSE_TIME_FUTURE_MS_MAX,
} from "./limits.js";
import {
  eventFromPb,
  filterFromPb,
  genAiMappingFromPb,
  genAiMappingToPb,
  meterFromPb,
  meterStatusOf,
  meterToPb,
  outcomeToResult,
  rejectedResult,
  resultBytesBound,
  storedEventSizeBound,
  storedEventToPb,
  timestampToUs,
  usToTimestamp,
  usageRowToPb,
  windowFromPb,
} from "./mapping.js";
import type { Aggregator } from "./store/aggregator.js";
import { decodeEventInput, WireError } from "./wire.js";
import { responseWithEncodedResults } from "./result-codec.js";
import type { CommitSignal, GroupCommitter } from "./store/group-commit.js";
import type { IngestItem, MeteringStore, StoredEvent } from "./store/store.js";

/** Most bucket (and unique value) rows read to answer one QueryUsage. */
export const QUERY_BUCKETS_SCAN_MAX = 500_000;

export interface HandlerDeps {
  store: MeteringStore;
  committer: GroupCommitter;
  aggregator: Aggregator;
  signal: CommitSignal;
  clock: Clock;
  logger: Logger;
  config: MeteringConfig;
  /** True once stop() began: long polls return at once. */
  isStopping(): boolean;
  /** Starts pending backfills (not awaited by CreateMeter). */
  kickBackfill(): void;
}

/** Validates events and writes the valid ones through the group committer; one result per input, in order. */
export async function ingestInputs(deps: HandlerDeps, tenant: string, inputs: EventInput[]): Promise<IngestResult[]> {
  const nowUs = BigInt(deps.clock.now().getTime()) * 1000n;
  const lateEventAgeUs = BigInt(deps.config.lateEventAgeMs) * 1000n;
  const defaultTraceContext = currentTraceContext();
  const results: (IngestResult | undefined)[] = new Array(inputs.length);
  const items: IngestItem[] = [];
  const positions: number[] = [];
  for (let i = 0; i < inputs.length; i++) {
    const input = inputs[i]!;
    const v = validateEvent(input, { nowUs, lateEventAgeUs, defaultTraceContext });
    if (!v.ok) results[i] = rejectedResult(input.id, v.rejection);
    else {
      items.push(v.late ? { tenant, event: v.event, late: v.late } : { tenant, event: v.event });
      positions.push(i);
    }
  }
  // The decoded inputs are not used past this point (the events carry their ids): they need not
  // survive the commit (what a group commit's wait keeps alive is what the young-generation GC copies).
  const outcomes = await deps.committer.submit(items);
  outcomes.forEach((o, j) => {
    results[positions[j]!] = outcomeToResult(items[j]!.event.id, o);
  });
  return results as IngestResult[];
}

/** The tenant's GenAI mapping, or the default. */
export async function genAiMappingOf(store: MeteringStore, tenant: string): Promise<GenAiMapping> {
  const stored = (await store.getGenAiMapping(tenant)) as (Omit<GenAiMapping, "spanOperations"> & { spanOperations?: string[] }) | undefined;
  // A mapping stored before span_operations existed maps every span, as it did.
  return stored ? { ...stored, spanOperations: stored.spanOperations ?? [] } : GENAI_MAPPING_DEFAULT;
}

function checkBatch(events: readonly unknown[], field: string): void {
  if (events.length === 0) throw invalidArgument(field, "at least one event is required");
  if (events.length > EVENTS_PER_REQUEST_MAX) throw invalidArgument(field, `at most ${EVENTS_PER_REQUEST_MAX} events per request`);
}

function counts(results: IngestResult[]) {
  let acceptedCount = 0, duplicateCount = 0, conflictCount = 0, rejectedCount = 0;
  for (const r of results) {
    if (r.status === IngestStatus.ACCEPTED) acceptedCount++;
    else if (r.status === IngestStatus.DUPLICATE) duplicateCount++;
    else if (r.status === IngestStatus.CONFLICT) conflictCount++;
    else rejectedCount++;
  }
  return { acceptedCount, duplicateCount, conflictCount, rejectedCount };
}

const METER_ID_RE = /^[a-z][a-z0-9_]{0,63}$/;
const CUSTOMER_ID_RE = /^[A-Za-z0-9._:\-]{1,128}$/;

const encodePageToken = (lastId: string) => Buffer.from(lastId, "utf8").toString("base64url");
function decodePageToken(token: string): string {
  if (token === "") return "";
  const id = Buffer.from(token, "base64url").toString("utf8");
  if (!/^[a-z][a-z0-9_]{0,63}$/.test(id)) throw invalidArgument("page.page_token", "is not a token from a previous page");
  return id;
}

/** What a QueryUsage page token is bound to: the meter and every part of the query but the page. */
function usageQueryFingerprint(meterId: string, q: UsageQuery): string {
  const canon = JSON.stringify([meterId, q.startUs.toString(), q.endUs.toString(), q.window, [...q.customerIds].sort(), q.groupBy, q.groupByCustomer, q.filters]);
  return createHash("sha256").update(canon).digest("base64url").slice(0, 16);
}

/** A QueryUsage page token: the query's fingerprint and the last row's key. */
function encodeUsagePageToken(fingerprint: string, key: UsageRowKey): string {
  return Buffer.from(JSON.stringify([fingerprint, key[0].toString(), key[1], key[2]]), "utf8").toString("base64url");
}

function decodeUsagePageToken(token: string, fingerprint: string): UsageRowKey {
  const bad = () => invalidArgument("page.page_token", "is not a token from a previous page of this query");
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw bad();
  }
  if (!Array.isArray(v) || v.length !== 4 || v[0] !== fingerprint || typeof v[1] !== "string" || !/^-?\d{1,20}$/.test(v[1]) || typeof v[2] !== "string" || typeof v[3] !== "string") throw bad();
  return [BigInt(v[1]), v[2], v[3]];
}

/**
 * IngestEvents for binary calls on the service kit's fast path (server.ts registers it as a binary
 * view): each Event arrives as its bytes and is decoded in one pass (wire.ts: the same EventInput
 * as eventFromPb(fromBinary(...))), with the same checks and answers as the regular handler,
 * which serves JSON and every other call.
 */
export function ingestEventsBinary(deps: HandlerDeps) {
  return async (req: unknown, ctx: HandlerContext) => {
    requireScope(ctx, "ingest");
    const tenant = tenantOf(ctx);
    const view = req as IngestEventsRequestView;
    checkBatch(view.events, "events");
    const inputs = view.events.map((bytes, i) => {
      try {
        return decodeEventInput(bytes);
      } catch (e) {
        if (e instanceof WireError) throw invalidArgument(`events[${i}]`, `is not a valid Event (${e.message})`);
        throw e;
      }
    });
    const results = await ingestInputs(deps, tenant, inputs);
    // The results go out encoded by hand (result-codec.ts): the same message on the wire.
    return responseWithEncodedResults(results, counts(results));
  };
}

export function createHandlers(deps: HandlerDeps): ServiceImpl<typeof MeteringService> {
  const { store } = deps;
  let readWaiters = 0;

  async function requireMeter(tenant: string, meterId: string) {
    if (meterId === "") throw invalidArgument("meter_id", "is required");
    if (!METER_ID_RE.test(meterId)) throw invalidArgument("meter_id", "must match [a-z][a-z0-9_]{0,63}");
    const m = await store.getMeter(tenant, meterId);
    if (!m) throw notFound("meter", meterId);
    return m;
  }

  return {
    async ingestEvents(req, ctx) {
      requireScope(ctx, "ingest");
      const tenant = tenantOf(ctx);
      checkBatch(req.events, "events");
      const results = await ingestInputs(deps, tenant, req.events.map(eventFromPb));
      return create(IngestEventsResponseSchema, { results, ...counts(results) });
    },

    async ingestStream(reqs, ctx) {
      requireScope(ctx, "ingest");
      const tenant = tenantOf(ctx);
      const results: IngestResult[] = [];
      // The one response must fit RESPONSE_BYTES_MAX: EVENTS_PER_STREAM_MAX results always do
      // (limits.ts); event ids longer than 128 (rejected, echoed as sent) are counted as they are,
      // and a message whose results could not fit is refused before it is committed.
      let responseBytes = STREAM_RESPONSE_OVERHEAD_BYTES;
      for await (const req of reqs) {
        checkBatch(req.events, "events");
        if (results.length + req.events.length > EVENTS_PER_STREAM_MAX)
          throw invalidArgument("events", `at most ${EVENTS_PER_STREAM_MAX} events per stream`);
        for (const e of req.events) responseBytes += resultBytesBound(e.id);
        if (responseBytes > RESPONSE_BYTES_MAX)
          throw invalidArgument("events", `the stream's results would exceed the response limit of ${RESPONSE_BYTES_MAX} bytes (event ids too long)`);
        // Each message is committed before the next is read: in-order acks and back-pressure.
        results.push(...(await ingestInputs(deps, tenant, req.events.map(eventFromPb))));
      }
      return create(IngestStreamResponseSchema, { results });
    },

    async readEvents(req, ctx: HandlerContext) {
      // Every tenant's events: the operator's key only (a key bound to one tenant read them all).
      requireOperator(ctx);
      if (req.afterSequence < 0n) throw invalidArgument("after_sequence", "must not be negative");
      if (req.maxEvents > READ_EVENTS_MAX) throw invalidArgument("max_events", `at most ${READ_EVENTS_MAX}`);
      if (req.waitMs > READ_WAIT_MS_MAX) throw invalidArgument("wait_ms", `at most ${READ_WAIT_MS_MAX}`);
      if (req.partitionCount > READ_PARTITIONS_MAX) throw invalidArgument("partition_count", `at most ${READ_PARTITIONS_MAX}`);
      const partitioned = req.partitionCount > 1;
      if (partitioned ? req.partition >= req.partitionCount : req.partition !== 0)
        throw invalidArgument("partition", partitioned ? `must be below partition_count (${req.partitionCount})` : "must be 0 without partition_count");
      const max = req.maxEvents === 0 ? READ_EVENTS_DEFAULT : req.maxEvents;
      const deadline = Date.now() + req.waitMs;
      const read = async (): Promise<{ events: StoredEvent[]; through: bigint }> => {
        if (partitioned) return store.readPartition(req.afterSequence, max, req.partitionCount, req.partition);
        const events = await store.readEvents(req.afterSequence, max);
        return { events, through: events.length > 0 ? events[events.length - 1]!.sequence : req.afterSequence };
      };
      let page = await read();
      if (page.events.length === 0 && req.waitMs > 0) {
        if (readWaiters >= READ_WAITERS_MAX) throw limitExceeded("wait_ms (concurrent long polls)", READ_WAITERS_MAX);
        readWaiters++;
        try {
          while (page.events.length === 0 && !ctx.signal.aborted && !deps.isStopping()) {
            const left = deadline - Date.now();
            if (left <= 0) break;
            await deps.signal.wait(Math.min(left, deps.config.readPollIntervalMs), ctx.signal);
            page = await read();
          }
        } finally {
          readWaiters--;
        }
      }
      // A byte budget per page: it ends early (the cursor moves only to its last event; the rest,
      // and other partitions' events skipped over after it, are read again) rather than pass the
      // response limit with large events. JSON readers get the bound of the JSON encoding.
      const json = /json/i.test(ctx.requestHeader.get("content-type") ?? "");
      let bytes = 0;
      let n = 0;
      for (; n < page.events.length; n++) {
        const b = storedEventSizeBound(page.events[n]!, json);
        if (n > 0 && bytes + b > deps.config.readPageBytesMax) break;
        bytes += b;
      }
      if (n < page.events.length) page = { events: page.events.slice(0, n), through: page.events[n - 1]!.sequence };
      return create(ReadEventsResponseSchema, { events: page.events.map(storedEventToPb), lastSequence: page.through });
    },

    async createMeter(req, ctx) {
      requireScope(ctx, "admin");
      const tenant = tenantOf(ctx);
      if (!req.meter) throw invalidArgument("meter", "is required");
      const check = validateMeter(meterFromPb(req.meter));
      if (!check.ok) throw invalidArgument(check.field, check.rule);
      const nowUs = BigInt(deps.clock.now().getTime()) * 1000n;
      const out = await store.createMeter(tenant, check.meter, nowUs, sameDefinition);
      switch (out.status) {
        case "too_many":
          throw limitExceeded("meters per tenant", METERS_PER_TENANT_MAX);
        case "conflict":
          throw alreadyExists("meter.id", check.meter.id);
        case "created":
          deps.kickBackfill();
          return create(CreateMeterResponseSchema, { meter: meterToPb(out.meter) });
        case "exists":
          return create(CreateMeterResponseSchema, { meter: meterToPb(out.meter) });
      }
    },

    async deleteMeter(req, ctx) {
      requireScope(ctx, "admin");
      const tenant = tenantOf(ctx);
      if (req.meterId === "") throw invalidArgument("meter_id", "is required");
      if (!METER_ID_RE.test(req.meterId)) throw invalidArgument("meter_id", "must match [a-z][a-z0-9_]{0,63}");
      const n = await store.deleteMeter(tenant, req.meterId);
      if (n === undefined) throw notFound("meter", req.meterId);
      return create(DeleteMeterResponseSchema, { bucketsDeleted: n });
    },

    async getMeter(req, ctx) {
      requireScope(ctx, "read");
      const tenant = tenantOf(ctx);
      return create(GetMeterResponseSchema, { meter: meterToPb(await requireMeter(tenant, req.meterId)) });
    },

    async listMeters(req, ctx) {
      requireScope(ctx, "read");
      const tenant = tenantOf(ctx);
      const size = req.page?.pageSizeMax ?? 0;
      if (size > METERS_PAGE_MAX) throw invalidArgument("page.page_size_max", `at most ${METERS_PAGE_MAX}`);
      const limit = size === 0 ? METERS_PAGE_DEFAULT : size;
      const after = decodePageToken(req.page?.pageToken ?? "");
      const meters = await store.listMeters(tenant, after, limit + 1);
      const page = meters.slice(0, limit);
      const more = meters.length > limit;
      return create(ListMetersResponseSchema, {
        meters: page.map(meterToPb),
        page: create(PageResponseSchema, { nextPageToken: more ? encodePageToken(page[page.length - 1]!.definition.id) : "" }),
      });
    },

    async queryUsage(req, ctx) {
      requireScope(ctx, "read");
      const tenant = tenantOf(ctx);
      const meter = await requireMeter(tenant, req.meterId);
      // A meter set aside by the aggregator (its definition made the computation throw) has no
      // current usage: say so rather than answer from stale buckets.
      if (meter.aggregationError !== null)
        throw failedPrecondition(ErrorReason.INVALID_FIELD, `meter_id: meter ${meter.definition.id} is set aside, its usage is not computed (${meter.aggregationError})`, {
          field: "meter_id",
          meter_id: meter.definition.id,
        });
      const window = windowFromPb(req.window);
      if (!window) throw invalidArgument("window", "is required (MINUTE, HOUR, DAY or WHOLE)");
      if (!req.startTime) throw invalidArgument("start_time", "is required");
      if (!req.endTime) throw invalidArgument("end_time", "is required");
      const startUs = timestampToUs(req.startTime);
      const endUs = timestampToUs(req.endTime);
      if (startUs === undefined) throw invalidArgument("start_time", "is not a valid timestamp");
      if (endUs === undefined) throw invalidArgument("end_time", "is not a valid timestamp");
      for (const [i, c] of req.customerIds.entries())
        if (!CUSTOMER_ID_RE.test(c)) throw invalidArgument(`customer_ids[${i}]`, "must be 1-128 characters of [A-Za-z0-9._:-]");
      const q: UsageQuery = {
        startUs,
        endUs,
        window,
        customerIds: [...new Set(req.customerIds)],
        groupBy: [...req.groupBy],
        groupByCustomer: req.groupByCustomer,
        filters: req.filters.map(filterFromPb),
      };
      const plan = planQuery(meter.definition, q);
      if (!plan.ok) throw invalidArgument(plan.field, plan.rule);
      // Every event committed before this query is in the buckets read below.
      await deps.aggregator.catchUp();
      const buckets = await store.readBuckets(tenant, meter.definition.id, plan.level, startUs, endUs, q.customerIds, QUERY_BUCKETS_SCAN_MAX + 1);
      if (buckets.length > QUERY_BUCKETS_SCAN_MAX) throw limitExceeded("buckets scanned (narrow the range or use a larger window)", QUERY_BUCKETS_SCAN_MAX);
      const uniques =
        meter.definition.aggregation === "unique_count"
          ? await store.readUniqueValues(tenant, meter.definition.id, plan.level, startUs, endUs, q.customerIds, QUERY_BUCKETS_SCAN_MAX + 1)
          : [];
      if (uniques.length > QUERY_BUCKETS_SCAN_MAX) throw limitExceeded("unique values scanned (narrow the range)", QUERY_BUCKETS_SCAN_MAX);
      const rows = combineBuckets(meter.definition, q, buckets, uniques);
      if (req.page === undefined) {
        if (rows.length > QUERY_ROWS_MAX) throw limitExceeded("rows (narrow the query, use a larger window, or page through them)", QUERY_ROWS_MAX);
        return create(QueryUsageResponseSchema, { rows: rows.map(usageRowToPb), meterStatus: meterStatusOf(meter) });
      }
      const size = req.page.pageSizeMax;
      if (size > QUERY_ROWS_MAX) throw invalidArgument("page.page_size_max", `at most ${QUERY_ROWS_MAX}`);
      const limit = size === 0 ? QUERY_PAGE_ROWS_DEFAULT : size;
      const fingerprint = usageQueryFingerprint(meter.definition.id, q);
      let start = 0;
      if (req.page.pageToken !== "") {
        const after = decodeUsagePageToken(req.page.pageToken, fingerprint);
        // Keyset paging: the rows after the previous page's last one (rows that appeared before
        // it since then are not repeated; usage of a live window can still grow).
        // Binary search: rows are sorted by their key (combineBuckets).
        let lo = 0;
        let hi = rows.length;
        while (lo < hi) {
          const mid = (lo + hi) >>> 1;
          if (compareUsageRowKeys(usageRowKey(q, rows[mid]!), after) > 0) hi = mid;
          else lo = mid + 1;
        }
        start = lo;
      }
      const page = rows.slice(start, start + limit);
      const more = start + limit < rows.length;
      return create(QueryUsageResponseSchema, {
        rows: page.map(usageRowToPb),
        page: create(PageResponseSchema, { nextPageToken: more ? encodeUsagePageToken(fingerprint, usageRowKey(q, page[page.length - 1]!)) : "" }),
        meterStatus: meterStatusOf(meter),
      });
    },

    async closeUsagePeriod(req, ctx) {
      requireScope(ctx, "admin");
      const tenant = tenantOf(ctx);
      if (!CUSTOMER_ID_RE.test(req.customerId)) throw invalidArgument("customer_id", "is required (1-128 characters of [A-Za-z0-9._:-])");
      if (!req.closeTime) throw invalidArgument("close_time", "is required");
      const closeUs = timestampToUs(req.closeTime);
      if (closeUs === undefined) throw invalidArgument("close_time", "is not a valid timestamp");
      // Closed periods only move forward: a far-future close would refuse the customer's events for good.
      const closeMaxUs = (BigInt(deps.clock.now().getTime()) + BigInt(CLOSE_TIME_FUTURE_MS_MAX)) * 1000n;
      if (closeUs > closeMaxUs) throw invalidArgument("close_time", `must be at most ${CLOSE_TIME_FUTURE_MS_MAX / 60_000} minutes past the server clock (closed periods only move forward)`);
      const stored = await store.closePeriod(tenant, req.customerId, closeUs);
      return create(CloseUsagePeriodResponseSchema, { closeTime: usToTimestamp(stored) });
    },

    async setGenAiMapping(req, ctx) {
      requireScope(ctx, "admin");
      const tenant = tenantOf(ctx);
      if (!req.mapping) throw invalidArgument("mapping", "is required");
      const m = genAiMappingFromPb(req.mapping);
      const bad = validateGenAiMapping(m);
      if (bad) throw invalidArgument(bad.field, bad.rule);
      await store.setGenAiMapping(tenant, m);
      return create(SetGenAiMappingResponseSchema, { mapping: genAiMappingToPb(m) });
    },

    async getGenAiMapping(_req, ctx) {
      requireScope(ctx, "read");
      const tenant = tenantOf(ctx);
      return create(GetGenAiMappingResponseSchema, { mapping: genAiMappingToPb(await genAiMappingOf(store, tenant)) });
    },
  };
}
