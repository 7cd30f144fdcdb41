import { describe, expect, it } from "vitest";
import { GENAI_MAPPING_DEFAULT, GENAI_OPERATIONS_MAX, spansToEvents, validateGenAiMapping, type AttributeValue } from "./genai.js";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const span = (spanId: string, attrs: Array<[string, AttributeValue]>) => ({
  traceId: TRACE,
  spanId,
  endTimeUnixNano: 1_763_632_740_000_000_000n,
  attributes: new Map(attrs),
  resourceAttributes: new Map<string, AttributeValue>([["nanobill.customer_id", "cus_1"]]),
});

describe("default GenAI mapping", () => {
  it("is a valid mapping", () => {
    expect(validateGenAiMapping(GENAI_MAPPING_DEFAULT)).toBeUndefined();
  });

  it("keeps the cache detail (gen_ai.usage.cache_read/cache_creation.input_tokens) beside input_tokens, which includes them (semconv): nothing subtracted", () => {
    const out = spansToEvents(
      [
        span("0000000000000001", [
          ["gen_ai.request.model", "claude-x"],
          ["gen_ai.provider.name", "anthropic"],
          ["gen_ai.usage.input_tokens", 1_000n],
          ["gen_ai.usage.cache_read.input_tokens", 900n],
          ["gen_ai.usage.cache_creation.input_tokens", 60n],
          ["gen_ai.usage.output_tokens", 10n],
        ]),
        span("0000000000000002", [["gen_ai.usage.input_tokens", 5n]]), // no cache attributes: none made up
      ],
      GENAI_MAPPING_DEFAULT,
    );
    expect(out.rejected).toEqual([]);
    expect(out.events.map((e) => ({ ...e.properties }))).toEqual([
      {
        model: { kind: "string", value: "claude-x" },
        provider: { kind: "string", value: "anthropic" },
        input_tokens: { kind: "int", value: 1_000n },
        output_tokens: { kind: "int", value: 10n },
        cache_read_input_tokens: { kind: "int", value: 900n },
        cache_creation_input_tokens: { kind: "int", value: 60n },
      },
      { input_tokens: { kind: "int", value: 5n } },
    ]);
  });

  it("takes model from gen_ai.request.model (what plans name) when present, else gen_ai.response.model; the served model also as response_model", () => {
    const out = spansToEvents(
      [
        span("0000000000000011", [["gen_ai.request.model", "gpt-4o"], ["gen_ai.response.model", "gpt-4o-2024-08-06"], ["gen_ai.usage.input_tokens", 1n]]),
        span("0000000000000012", [["gen_ai.response.model", "gpt-4o-2024-08-06"], ["gen_ai.request.model", "gpt-4o"], ["gen_ai.usage.input_tokens", 1n]]),
        span("0000000000000013", [["gen_ai.request.model", "gpt-4o-mini"], ["gen_ai.usage.input_tokens", 1n]]),
        span("0000000000000014", [["gen_ai.response.model", "claude-x-20261101"], ["gen_ai.usage.input_tokens", 1n]]),
      ],
      GENAI_MAPPING_DEFAULT,
    );
    expect(out.events.map((e) => [e.properties.model?.value, e.properties.response_model?.value ?? null])).toEqual([
      ["gpt-4o", "gpt-4o-2024-08-06"],
      ["gpt-4o", "gpt-4o-2024-08-06"],
      ["gpt-4o-mini", null],
      ["claude-x-20261101", "claude-x-20261101"],
    ]);
  });

  it("counts model-call spans only: an invoke_agent span's usage (the aggregate of the chat spans under it) and create_agent/execute_tool/invoke_workflow spans are skipped, a span without gen_ai.operation.name is counted", () => {
    const ops = ["chat", "text_completion", "generate_content", "embeddings", "invoke_agent", "create_agent", "execute_tool", "invoke_workflow"];
    const spans = ops.map((op, i) => span(`00000000000000a${i}`, [["gen_ai.operation.name", op], ["gen_ai.usage.input_tokens", 10n]]));
    spans.push(span("00000000000000b0", [["gen_ai.usage.input_tokens", 7n]]));
    const out = spansToEvents(spans, GENAI_MAPPING_DEFAULT);
    expect(out.rejected).toEqual([]);
    expect(out.skipped).toBe(4);
    expect(out.events.map((e) => [e.id.slice(-2), e.properties.operation?.value ?? null])).toEqual([
      ["a0", "chat"],
      ["a1", "text_completion"],
      ["a2", "generate_content"],
      ["a3", "embeddings"],
      ["b0", null],
    ]);
    // An empty list maps every span having the required attribute (a tenant mapping set before the filter existed).
    expect(spansToEvents(spans, { ...GENAI_MAPPING_DEFAULT, spanOperations: [] }).events.length).toBe(9);
  });

  it("refuses a span_operations list that is too long or holds a malformed operation, naming the entry", () => {
    expect(validateGenAiMapping({ ...GENAI_MAPPING_DEFAULT, spanOperations: Array.from({ length: GENAI_OPERATIONS_MAX + 1 }, (_, i) => `op${i}`) })).toEqual({ field: "mapping.span_operations", rule: `at most ${GENAI_OPERATIONS_MAX}` });
    expect(validateGenAiMapping({ ...GENAI_MAPPING_DEFAULT, spanOperations: ["chat", ""] })).toMatchObject({ field: "mapping.span_operations[1]" });
    expect(validateGenAiMapping({ ...GENAI_MAPPING_DEFAULT, spanOperations: Array.from({ length: GENAI_OPERATIONS_MAX }, (_, i) => `op${i}`) })).toBeUndefined();
  });

  it("rejects a span whose cache count has no property form, naming the attribute", () => {
    const out = spansToEvents([span("0000000000000003", [["gen_ai.usage.input_tokens", 5n], ["gen_ai.usage.cache_read.input_tokens", 2.5]])], GENAI_MAPPING_DEFAULT);
    expect(out.events).toEqual([]);
    expect(out.rejected).toEqual([{ eventId: `span_${TRACE}_0000000000000003`, attribute: "gen_ai.usage.cache_read.input_tokens", message: expect.stringMatching(/^gen_ai\.usage\.cache_read\.input_tokens: doubleValue 2\.5 is not an integer/) }]);
  });
});
