// Test helper: an invoicing service on its own database of a backend, calling the real rating
// service of a rating test harness (and a FakeWorld's wallet and ledger), with clients by key.
import { createClient, createRouterTransport, type Client, type Interceptor } from "@connectrpc/connect";
import { migrate, type TestBackend } from "@nanobill/db";
import { InvoicingService } from "@nanobill/contracts/nanobill/invoicing/v1/invoicing_pb";
import { createApiKeyAuthenticator, createAuthInterceptor, silentLogger, type Clock } from "@nanobill/service-kit";
import { KEYS, type Harness } from "../../../rating/src/test-support.js";
import { createInvoicingService, migrationsDir } from "../index.js";
import { TEST_KEYS, type FakeWorld } from "./fakes.js";

export interface InvoicingOnRating {
  /** A client with the admin key of the test tenant. */
  client: Client<typeof InvoicingService>;
  clientFor(key: string): Client<typeof InvoicingService>;
  stop(): Promise<void>;
}

export async function openInvoicingOnRating(backend: TestBackend, rating: Harness, world: FakeWorld, clock: Clock): Promise<InvoicingOnRating> {
  const db = await backend.open();
  await migrate(db, migrationsDir);
  const svc = await createInvoicingService({ db, logger: silentLogger, clock, clients: { rating: rating.client(KEYS.internal), wallet: world.wallet(), ledger: world.ledger() } });
  const auth = createApiKeyAuthenticator(Object.values(TEST_KEYS));
  const clientFor = (key: string) => {
    const withKey: Interceptor = (next) => (req) => {
      req.header.set("authorization", `Bearer ${key}`);
      return next(req);
    };
    return createClient(InvoicingService, createRouterTransport(svc.routes, { router: { interceptors: [createAuthInterceptor(auth)] }, transport: { interceptors: [withKey] } }));
  };
  return {
    client: clientFor(TEST_KEYS.admin.key),
    clientFor,
    async stop() {
      await svc.stop();
      await db.dispose();
    },
  };
}
