/**
 * The wallet's view of the ledger: create accounts, create transfers. The real one calls the
 * ledger service through its Connect client (deps.clients.ledger) acting for the tenant.
 */
import { create } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import {
  CreateAccountResult,
  CreateTransferResult,
  type LedgerService,
  NewAccountSchema,
  NewTransferSchema,
  AccountFlagsSchema,
  TransferFlagsSchema,
} from "@nanobill/contracts/nanobill/ledger/v1/ledger_pb";
import { forTenant } from "@nanobill/service-kit";
import type { PlannedAccount, PlannedTransfer } from "./domain/ledger-plan.js";

export interface LedgerPort {
  /** Creates accounts; an identical existing account is fine. Throws on any other result. */
  createAccounts(tenant: string, accounts: PlannedAccount[]): Promise<void>;
  /** Creates transfers in order; returns one result name per transfer ("OK", "EXISTS", ...). */
  createTransfers(tenant: string, transfers: PlannedTransfer[]): Promise<string[]>;
}

export type LedgerClient = Client<typeof LedgerService>;

export function createLedgerPort(client: LedgerClient): LedgerPort {
  return {
    async createAccounts(tenant, accounts) {
      const res = await client.createAccounts(
        {
          accounts: accounts.map((a) =>
            create(NewAccountSchema, {
              id: a.id,
              unit: a.unit,
              code: a.code,
              flags: create(AccountFlagsSchema, { debitsMustNotExceedCredits: a.noOverdraw, history: a.history }),
            }),
          ),
        },
        forTenant(tenant),
      );
      res.results.forEach((r, i) => {
        const a = accounts[i]!;
        const existsOther = CreateAccountResult[r.result]?.startsWith("EXISTS_WITH_DIFFERENT") ?? false;
        if (r.result !== CreateAccountResult.OK && r.result !== CreateAccountResult.EXISTS && !(a.shared && existsOther)) {
          throw new Error(`ledger CreateAccounts ${accounts[i]?.id}: ${CreateAccountResult[r.result]}`);
        }
      });
    },
    async createTransfers(tenant, transfers) {
      const res = await client.createTransfers(
        {
          transfers: transfers.map((t) =>
            create(NewTransferSchema, {
              id: t.id,
              debitAccountId: t.debit,
              creditAccountId: t.credit,
              amountNanos: BigInt(t.amount),
              unit: t.unit,
              code: t.code,
              pendingId: t.pendingId ?? "",
              timeoutSeconds: t.timeoutSeconds ?? 0,
              flags: create(TransferFlagsSchema, { linked: !!t.linked, pending: !!t.pending, postPendingTransfer: !!t.post, voidPendingTransfer: !!t.void }),
              references: t.refs ?? {},
            }),
          ),
        },
        forTenant(tenant),
      );
      return res.results.map((r) => CreateTransferResult[r.result] ?? String(r.result));
    },
  };
}
