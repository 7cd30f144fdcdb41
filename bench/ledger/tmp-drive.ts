import { createClient } from "@connectrpc/connect";
import { LedgerService } from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { createClientTransport, closeClientSessions } from "@nanobill/service-kit";
const url = process.argv[2]!;
const c = createClient(LedgerService, createClientTransport({ baseUrl: url, apiKey: "sk_bench_ledger_0123456789abcdef", timeoutMs: 60000 }));
await c.createAccounts({ accounts: Array.from({ length: 5000 }, (_, i) => ({ id: `acct_${i}`, unit: "USD", code: 1 })) });
await c.createAccounts({ accounts: [{ id: "hot", unit: "USD", code: 1 }] });
let seq = 0;
const t0 = performance.now();
for (let r = 0; r < 8; r++) {
  await c.createTransfers({ transfers: Array.from({ length: 8190 }, () => ({ id: `x${seq++}`, debitAccountId: `acct_${seq % 5000}`, creditAccountId: "hot", amountNanos: 1000n, unit: "USD", code: 20 })) });
}
console.log("rate", (8 * 8190) / ((performance.now() - t0) / 1000));
closeClientSessions();
