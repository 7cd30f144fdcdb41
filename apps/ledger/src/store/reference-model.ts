/**
 * A tiny, independent in-memory reference model of the ledger's documented semantics, for the
 * model-based property test. It covers the shapes that test generates (USD/EUR accounts with
 * balance flags; plain, pending, balancing_debit, closing, post and void transfers; linked chains;
 * retries and spent ids (id_already_failed); timeouts and the expiry sweep) and nothing else.
 * Time is whole seconds.
 */

/** TigerBeetle 0.16's transient results: the id of a transfer failing with one is spent. */
const TRANSIENT = new Set([
  "debit_account_not_found",
  "credit_account_not_found",
  "pending_transfer_not_found",
  "exceeds_credits",
  "exceeds_debits",
  "debit_account_already_closed",
  "credit_account_already_closed",
]);
export type ModelResult = string;

interface MAccount {
  unit: string;
  dmnec: boolean;
  cmned: boolean;
  dp: bigint;
  dpo: bigint;
  cp: bigint;
  cpo: bigint;
  closed: boolean;
}

export interface MTransfer {
  id: string;
  dr: string;
  cr: string;
  amount: bigint;
  pending: boolean;
  post: boolean;
  void: boolean;
  balancing: boolean;
  linked: boolean;
  pendingId: string;
  timeout: number;
  closingDebit: boolean;
  closingCredit: boolean;
}

interface MStored {
  sent: MTransfer;
  dr: string;
  cr: string;
  moved: bigint;
  createdSec: number;
  state: "posted" | "pending" | "pending_posted" | "pending_voided" | "pending_expired";
}

interface MState {
  accounts: Map<string, MAccount>;
  transfers: Map<string, MStored>;
}

function clone(s: MState): MState {
  return {
    accounts: new Map([...s.accounts].map(([k, v]) => [k, { ...v }])),
    transfers: new Map([...s.transfers].map(([k, v]) => [k, { ...v }])),
  };
}

export class ReferenceLedger {
  private s: MState = { accounts: new Map(), transfers: new Map() };
  /** Spent ids: outside the state that a failed chain restores (a failure stays a failure). */
  private failed = new Set<string>();
  nowSec = 0;

  addAccount(id: string, unit: string, dmnec: boolean, cmned: boolean): void {
    this.s.accounts.set(id, { unit, dmnec, cmned, dp: 0n, dpo: 0n, cp: 0n, cpo: 0n, closed: false });
  }

  closed(id: string): boolean {
    return this.s.accounts.get(id)!.closed;
  }

  balances(id: string): [bigint, bigint, bigint, bigint] {
    const a = this.s.accounts.get(id)!;
    return [a.dp, a.dpo, a.cp, a.cpo];
  }

  /** Ids of the transfers still pending, in creation order (for aiming posts and voids). */
  pendingIds(): string[] {
    const out: string[] = [];
    for (const [id, t] of this.s.transfers) if (t.state === "pending") out.push(id);
    return out;
  }

  /** Seconds since creation of each transfer still pending with a timeout (for choosing clock steps). */
  pendingDeadlines(): number[] {
    const out: number[] = [];
    for (const t of this.s.transfers.values()) if (t.state === "pending" && t.sent.timeout > 0) out.push(t.createdSec + t.sent.timeout);
    return out;
  }

  private overdue(t: MStored): boolean {
    return t.sent.timeout > 0 && this.nowSec >= t.createdSec + t.sent.timeout;
  }

  private expire(t: MStored): void {
    const dr = this.s.accounts.get(t.dr)!;
    const cr = this.s.accounts.get(t.cr)!;
    dr.dp -= t.moved;
    cr.cp -= t.moved;
    if (t.sent.closingDebit) dr.closed = false;
    if (t.sent.closingCredit) cr.closed = false;
    t.state = "pending_expired";
  }

  sweep(): number {
    let n = 0;
    for (const t of this.s.transfers.values()) {
      if (t.state === "pending" && this.overdue(t)) {
        this.expire(t);
        n++;
      }
    }
    return n;
  }

  private one(x: MTransfer): { result: ModelResult; amount: bigint } {
    const r = this.oneUnrecorded(x);
    if (TRANSIENT.has(r.result)) this.failed.add(x.id);
    return r;
  }

  private oneUnrecorded(x: MTransfer): { result: ModelResult; amount: bigint } {
    const fail = (result: string) => ({ result, amount: 0n });
    const pv = x.post || x.void;
    const e = this.s.transfers.get(x.id);
    if (e) {
      const a = e.sent;
      if (
        a.pending !== x.pending ||
        a.post !== x.post ||
        a.void !== x.void ||
        a.balancing !== x.balancing ||
        a.linked !== x.linked ||
        a.closingDebit !== x.closingDebit ||
        a.closingCredit !== x.closingCredit
      ) {
        return fail("exists_with_different_flags");
      }
      if (a.pendingId !== x.pendingId) return fail("exists_with_different_pending_id");
      if (a.timeout !== x.timeout) return fail("exists_with_different_timeout");
      if (!(pv && x.dr === "") && e.dr !== x.dr) return fail("exists_with_different_debit_account_id");
      if (!(pv && x.cr === "") && e.cr !== x.cr) return fail("exists_with_different_credit_account_id");
      if (a.amount !== x.amount) return fail("exists_with_different_amount");
      return { result: "exists", amount: e.moved };
    }
    if (this.failed.has(x.id)) return fail("id_already_failed");
    if (!pv && x.dr === x.cr) return fail("accounts_must_be_different");
    if (pv && x.pendingId === x.id) return fail("pending_id_must_be_different");
    if (!pv && !x.pending && (x.closingDebit || x.closingCredit)) return fail("closing_transfer_must_be_pending");
    if (!pv && x.amount === 0n) return fail("amount_must_not_be_zero");
    if (pv) {
      const p = this.s.transfers.get(x.pendingId);
      if (!p) return fail("pending_transfer_not_found");
      if (!p.sent.pending) return fail("pending_transfer_not_pending");
      if (x.amount > p.moved) return fail("exceeds_pending_transfer_amount");
      if (x.void && x.amount !== 0n && x.amount !== p.moved) return fail("pending_transfer_has_different_amount");
      if (p.state === "pending_posted") return fail("pending_transfer_already_posted");
      if (p.state === "pending_voided") return fail("pending_transfer_already_voided");
      if (p.state === "pending_expired") return fail("pending_transfer_expired");
      if (this.overdue(p)) {
        this.expire(p);
        return fail("pending_transfer_expired");
      }
      const amount = x.post ? (x.amount === 0n ? p.moved : x.amount) : p.moved;
      const dr = this.s.accounts.get(p.dr)!;
      const cr = this.s.accounts.get(p.cr)!;
      if (x.post && dr.closed) return fail("debit_account_already_closed");
      if (x.post && cr.closed) return fail("credit_account_already_closed");
      if (x.void && p.sent.closingDebit) dr.closed = false;
      if (x.void && p.sent.closingCredit) cr.closed = false;
      dr.dp -= p.moved;
      cr.cp -= p.moved;
      if (x.post) {
        dr.dpo += amount;
        cr.cpo += amount;
      }
      p.state = x.post ? "pending_posted" : "pending_voided";
      this.s.transfers.set(x.id, { sent: x, dr: p.dr, cr: p.cr, moved: amount, createdSec: this.nowSec, state: "posted" });
      return { result: "ok", amount };
    }
    const dr = this.s.accounts.get(x.dr)!;
    const cr = this.s.accounts.get(x.cr)!;
    if (dr.unit !== cr.unit) return fail("accounts_must_have_the_same_unit");
    if (dr.unit !== "USD") return fail("transfer_must_have_the_same_unit_as_accounts");
    if (dr.closed) return fail("debit_account_already_closed");
    if (cr.closed) return fail("credit_account_already_closed");
    let amount = x.amount;
    if (x.balancing) {
      const avail = dr.cpo - dr.dpo - dr.dp;
      amount = avail <= 0n ? 0n : avail < amount ? avail : amount;
      // Nothing to move: fails, unless the transfer closes an account (a pending transfer of 0).
      if (amount === 0n && !x.closingDebit && !x.closingCredit) return fail("exceeds_credits");
    }
    if (dr.dmnec && dr.dp + dr.dpo + amount > dr.cpo) return fail("exceeds_credits");
    if (cr.cmned && cr.cp + cr.cpo + amount > cr.dpo) return fail("exceeds_debits");
    if (x.pending) {
      dr.dp += amount;
      cr.cp += amount;
      if (x.closingDebit) dr.closed = true;
      if (x.closingCredit) cr.closed = true;
    } else {
      dr.dpo += amount;
      cr.cpo += amount;
    }
    this.s.transfers.set(x.id, { sent: x, dr: x.dr, cr: x.cr, moved: amount, createdSec: this.nowSec, state: x.pending ? "pending" : "posted" });
    return { result: "ok", amount };
  }

  /** A batch, linked chains all or nothing. */
  apply(batch: MTransfer[]): { result: ModelResult; amount: bigint }[] {
    const out: { result: ModelResult; amount: bigint }[] = [];
    let i = 0;
    while (i < batch.length) {
      let end = i;
      while (end < batch.length - 1 && batch[end]!.linked) end++;
      const open = batch[end]!.linked;
      const saved = clone(this.s);
      let failedAt = -1;
      for (let k = i; k <= end; k++) {
        const r = open && k === end ? { result: "linked_event_chain_open", amount: 0n } : this.one(batch[k]!);
        out[k] = r;
        if (r.result !== "ok" && r.result !== "exists") {
          failedAt = k;
          break;
        }
      }
      if (failedAt >= 0 && (end > i || open)) {
        this.s = saved;
        // TigerBeetle: the last item of a chain left open is linked_event_chain_open even when an
        // earlier item broke the chain; the others linked_event_failed.
        for (let k = i; k <= end; k++) if (k !== failedAt) out[k] = { result: open && k === end ? "linked_event_chain_open" : "linked_event_failed", amount: 0n };
      }
      i = end + 1;
    }
    return out;
  }
}
