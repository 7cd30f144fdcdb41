// Run by metering-client.test.ts in a child process (node --import tsx): several clients track
// events and the module ends without close(). The "beforeExit" hook must send them; the process
// prints what the server received, how the results settled and any process warning, then exits.
//   argv: <clients> <events per client> <mode: ok | unavailable>
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createRouterTransport } from "@connectrpc/connect";
import { IngestEventsResponseSchema, IngestResultSchema, IngestStatus, MeteringService } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { createMeteringClient, type TrackResult } from "./index.js";

const clients = Number(process.argv[2] ?? 1);
const perClient = Number(process.argv[3] ?? 10);
const mode = process.argv[4] ?? "ok";
let received = 0;
let calls = 0;
const statuses: Record<string, number> = {};
const warnings: string[] = [];
process.on("warning", (w) => warnings.push(`${w.name}: ${w.message}`));

const transport = createRouterTransport(({ service }) =>
  service(MeteringService, {
    async ingestEvents(req) {
      calls++;
      await new Promise((r) => setTimeout(r, 2));
      if (mode === "unavailable") throw new ConnectError("down", Code.Unavailable);
      received += req.events.length;
      return create(IngestEventsResponseSchema, { results: req.events.map((e) => create(IngestResultSchema, { eventId: e.id, status: IngestStatus.ACCEPTED })) });
    },
  }),
);

const listenersBefore = process.listenerCount("beforeExit");
for (let c = 0; c < clients; c++) {
  // A long flush interval: only the exit hook can send these (the timer is unref'd anyway).
  const client = createMeteringClient({ transport, flushIntervalMs: 60_000, retry: { attemptsMax: 3, backoffMsInitial: 1, backoffMsMax: 5 } });
  for (let i = 0; i < perClient; i++) {
    const t = await client.track({ customerId: "cus_1", type: "llm.call", properties: { n: i } });
    void t.result.then((r: TrackResult) => (statuses[r.status] = (statuses[r.status] ?? 0) + 1));
  }
}
const listenersWhilePending = process.listenerCount("beforeExit") - listenersBefore;
process.on("exit", () => {
  const listenersAtExit = process.listenerCount("beforeExit") - listenersBefore;
  console.log(JSON.stringify({ received, calls, statuses, warnings, listenersWhilePending, listenersAtExit }));
});
