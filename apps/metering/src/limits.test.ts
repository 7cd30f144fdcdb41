import { create, toBinary, toJsonString } from "@bufbuild/protobuf";
import { IngestResultSchema, IngestStatus, IngestStreamResponseSchema } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { describe, expect, it } from "vitest";
import { validateEvent } from "./domain/event.js";
import {
  EVENTS_PER_REQUEST_MAX,
  EVENTS_PER_STREAM_MAX,
  ID_LENGTH_MAX,
  INGEST_RESULT_BYTES_MAX,
  PROPERTY_KEY_BYTES_MAX,
  RESPONSE_BYTES_MAX,
  RESULT_FIELD_BYTES_MAX,
  RESULT_MESSAGE_BYTES_MAX,
  RESULT_REASON_BYTES_MAX,
  STREAM_RESPONSE_OVERHEAD_BYTES,
} from "./limits.js";
import { outcomeToResult, rejectedResult, resultBytesBound, resultText } from "./mapping.js";

describe("IngestStream: the one response of a full stream fits the response limit", () => {
  it("bounds EVENTS_PER_STREAM_MAX worst-case results below RESPONSE_BYTES_MAX (was 1,000,000: 30 MB with 20-character ids)", () => {
    expect(INGEST_RESULT_BYTES_MAX).toBe(761);
    expect(EVENTS_PER_STREAM_MAX * INGEST_RESULT_BYTES_MAX + STREAM_RESPONSE_OVERHEAD_BYTES).toBeLessThanOrEqual(RESPONSE_BYTES_MAX);
    expect(EVENTS_PER_STREAM_MAX).toBeGreaterThanOrEqual(EVENTS_PER_REQUEST_MAX);
  });

  it("encodes EVENTS_PER_STREAM_MAX worst-case results (128-byte ids, every text at its maximum) within RESPONSE_BYTES_MAX in binary and JSON", () => {
    const worst = create(IngestResultSchema, {
      eventId: "i".repeat(ID_LENGTH_MAX),
      status: IngestStatus.DUPLICATE,
      sequence: 2n ** 63n - 1n,
      // Characters that escape in JSON ("\"" and "\\" take 2 bytes) and multi-byte UTF-8.
      field: resultText('"\\é'.repeat(RESULT_FIELD_BYTES_MAX), RESULT_FIELD_BYTES_MAX),
      reason: resultText("r".repeat(1000), RESULT_REASON_BYTES_MAX),
      message: resultText('é"\\\u0001'.repeat(RESULT_MESSAGE_BYTES_MAX), RESULT_MESSAGE_BYTES_MAX),
    });
    const one = create(IngestStreamResponseSchema, { results: [worst] });
    expect(Buffer.byteLength(toJsonString(IngestStreamResponseSchema, one), "utf8") - STREAM_RESPONSE_OVERHEAD_BYTES).toBeLessThanOrEqual(INGEST_RESULT_BYTES_MAX);
    const full = create(IngestStreamResponseSchema, { results: Array.from({ length: EVENTS_PER_STREAM_MAX }, () => worst) });
    const binary = toBinary(IngestStreamResponseSchema, full).length;
    const json = Buffer.byteLength(toJsonString(IngestStreamResponseSchema, full), "utf8");
    expect(binary).toBeLessThanOrEqual(RESPONSE_BYTES_MAX);
    expect(json).toBeLessThanOrEqual(RESPONSE_BYTES_MAX);
    // One event more than the cap could not be answered in the worst case (the cap is not needlessly low by more than the rounding).
    expect(Math.floor((RESPONSE_BYTES_MAX - STREAM_RESPONSE_OVERHEAD_BYTES) / INGEST_RESULT_BYTES_MAX)).toBeLessThan(EVENTS_PER_STREAM_MAX * 1.2);
  });

  it("keeps every result text the service produces within its bound (the longest: a 128-byte malformed key)", () => {
    const ctx = { nowUs: 1_800_000_000_000_000n, lateEventAgeUs: 35n * 86_400_000_000n };
    const key = "é".repeat(PROPERTY_KEY_BYTES_MAX);
    const longKey = `k${"x".repeat(PROPERTY_KEY_BYTES_MAX - 1)}`;
    const inputs = [
      { properties: { [key]: { kind: "int" as const, value: 1n } } },
      { properties: { [longKey]: { kind: "decimal" as const, value: "1e5" } } },
      { properties: { [longKey]: { kind: "string" as const, value: "\ud800" } } },
      { properties: { [`${longKey.slice(0, 120)}_tokens`]: { kind: "string" as const, value: "1" } } },
      { timestamp: "not a time" },
      { traceContext: { traceparent: "x", tracestate: "" } },
      { traceContext: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", tracestate: "\u0001" } },
    ];
    for (const over of inputs) {
      const v = validateEvent({ id: "e", customerId: "c", type: "t", properties: {}, ...over }, ctx);
      expect(v.ok).toBe(false);
      if (v.ok) continue;
      expect(Buffer.byteLength(JSON.stringify(v.rejection.field)) - 2).toBeLessThanOrEqual(RESULT_FIELD_BYTES_MAX);
      expect(Buffer.byteLength(JSON.stringify(v.rejection.reason)) - 2).toBeLessThanOrEqual(RESULT_REASON_BYTES_MAX);
      expect(Buffer.byteLength(JSON.stringify(v.rejection.message)) - 2).toBeLessThanOrEqual(RESULT_MESSAGE_BYTES_MAX);
      // Within the bounds the result carries the texts unchanged.
      const r = rejectedResult("e", v.rejection);
      expect([r.field, r.reason, r.message]).toEqual([v.rejection.field, v.rejection.reason, v.rejection.message]);
    }
    const conflict = outcomeToResult("i".repeat(ID_LENGTH_MAX), { status: "conflict", sequence: 1n });
    expect(Buffer.byteLength(conflict.message)).toBeLessThanOrEqual(RESULT_MESSAGE_BYTES_MAX);
  });

  it("counts an over-long (rejected, echoed) event id as it is", () => {
    expect(resultBytesBound("e".repeat(ID_LENGTH_MAX))).toBe(INGEST_RESULT_BYTES_MAX);
    expect(resultBytesBound("e")).toBeLessThan(INGEST_RESULT_BYTES_MAX);
    expect(resultBytesBound("e".repeat(1_000_000))).toBe(INGEST_RESULT_BYTES_MAX - ID_LENGTH_MAX + 1_000_000);
    expect(resultBytesBound("\u0001")).toBe(INGEST_RESULT_BYTES_MAX - ID_LENGTH_MAX + 6);
  });
});
