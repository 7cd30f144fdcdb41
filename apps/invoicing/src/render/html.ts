/** A clean, self-contained HTML invoice (inline CSS, no scripts, no external resources). */
import { carriedResidueLines } from "../domain/assemble.js";
import type { Invoice } from "../domain/invoice.js";
import { carriedRows, creditsText, day, exactMoney, KIND_LABEL, lineDay, money, stamp } from "./format.js";

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

export function invoiceHtml(inv: Invoice): string {
  const e = escapeHtml;
  const u = inv.unit;
  const t = inv.totals;
  const title = inv.number !== "" ? `Invoice ${inv.number}` : inv.status === "preview" ? "Upcoming invoice (preview)" : `Invoice ${inv.id} (${inv.status})`;
  const rows = inv.lines
    .map(
      (l) => `<tr class="${e(l.kind)}"><td>${e(KIND_LABEL[l.kind] ?? l.kind)}</td><td>${e(l.description)}<div class="sub">${e(lineDay(l.periodStart, inv.timeZone))} to ${e(lineDay(l.periodEnd, inv.timeZone))}${l.chargeId !== "" ? ` &middot; ${e(l.chargeId)}` : ""}</div></td>
<td class="n">${e(l.quantity)}</td><td class="n">${e(l.unitPrice)}</td><td class="n">${e(exactMoney(l.amountNanos, u))}</td><td class="n">${e(exactMoney(l.residueInNanos, u))}</td><td class="n b">${e(money(l.roundedAmountNanos, u))}</td><td class="n">${e(exactMoney(l.residueOutNanos, u))}</td></tr>`,
    )
    .join("\n");
  const usage = inv.lines.filter((l) => l.kind === "usage");
  const credits = inv.lines.filter((l) => l.kind === "credits_applied");
  const carriedResidues = new Set(carriedResidueLines(inv.lines));
  const carried = inv.lines.filter((l) => carriedResidues.has(l) || l.kind === "carried_forward");
  const list = (ls: typeof inv.lines, f: (l: (typeof inv.lines)[number]) => string) => (ls.length === 0 ? "<p class=\"sub\">None.</p>" : `<ul>${ls.map((l) => `<li>${f(l)}</li>`).join("")}</ul>`);
  const status = inv.status === "void" ? `<p class="void">VOID ${e(stamp(inv.voidedAt))}${inv.creditNote !== undefined ? ` &middot; credit note ${e(inv.creditNote.number)} for ${e(money(inv.creditNote.amountNanos, u))}` : ""}</p>` : "";
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${e(title)}</title>
<style>
body{font:14px/1.45 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:#1b1f24;margin:32px auto;max-width:1000px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.meta{color:#57606a}.sub{color:#57606a;font-size:12px}
table{border-collapse:collapse;width:100%}th,td{padding:6px 8px;border-bottom:1px solid #d0d7de;vertical-align:top;text-align:left}
th{background:#f6f8fa;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}.b{font-weight:600}
.totals{margin-left:auto;width:auto;min-width:320px}.totals td{border:none}.due td{font-size:16px;font-weight:700;border-top:2px solid #1b1f24}
.void{color:#cf222e;font-weight:700}
</style></head><body>
<h1>${e(title)}</h1>
<p class="meta">Customer <b>${e(inv.customerId)}</b>${inv.subscriptionId !== "" ? ` &middot; subscription ${e(inv.subscriptionId)}` : ""} &middot; period ${e(day(inv.periodStart, inv.timeZone))} to ${e(day(inv.periodEnd, inv.timeZone))} (${e(inv.timeZone)}) &middot; ${e(u)}<br>
Status ${e(inv.status)}${inv.finalizedAt !== undefined ? ` &middot; finalized ${e(stamp(inv.finalizedAt))}` : ""}${inv.paidAt !== undefined ? ` &middot; paid ${e(stamp(inv.paidAt))} (${e(inv.paymentId)})` : ""} &middot; rounding ${e(inv.roundingMode)} &middot; tax ${inv.taxRateBps / 100}%</p>
${status}
<h2>Lines</h2>
<table><thead><tr><th>Kind</th><th>Description</th><th class="n">Quantity</th><th class="n">Unit price</th><th class="n">Exact</th><th class="n">Carried in</th><th class="n">Billed</th><th class="n">Carried out</th></tr></thead>
<tbody>
${rows}
</tbody></table>
<table class="totals">
<tr><td>Subtotal</td><td class="n">${e(money(t.subtotalNanos, u))}</td></tr>
<tr><td>Discount</td><td class="n">${e(money(t.discountNanos, u))}</td></tr>
<tr><td>Tax</td><td class="n">${e(money(t.taxNanos, u))}</td></tr>
<tr><td>Total</td><td class="n">${e(money(t.totalNanos, u))}</td></tr>
<tr><td>Credits applied</td><td class="n">${e(money(t.creditsAppliedNanos, u))}</td></tr>
${carriedRows(inv).map(([label, v]) => `<tr><td>${e(label)}</td><td class="n">${e(money(v, u))}</td></tr>\n`).join("")}<tr class="due"><td>Amount due</td><td class="n">${e(money(t.amountDueNanos, u))}</td></tr>
</table>
<h2>Usage breakdown</h2>
${list(usage, (l) => `${e(l.description)}: ${e(l.quantity)} units, exactly ${e(exactMoney(l.amountNanos, u))} (hour buckets ${e(stamp(l.periodStart))} to ${e(stamp(l.periodEnd))})`)}
<h2>Credits applied</h2>
${credits.length + (inv.creditsInUnits ?? []).length === 0 ? list([], () => "") : `<ul>${credits.map((l) => `<li>${e(l.description)}: ${e(exactMoney(l.amountNanos, u))} exactly, billed ${e(money(l.roundedAmountNanos, u))}</li>`).join("")}${(inv.creditsInUnits ?? []).map((c) => `<li class="credits-in-units">${e(creditsText(c))}</li>`).join("")}</ul>`}
<h2>Carried amounts</h2>
${list(carried, (l) =>
  l.kind === "carried_forward"
    ? `${e(l.description)}: ${e(money(l.roundedAmountNanos, u))} (since ${e(day(l.periodStart, inv.timeZone))})`
    : `${e(l.description)}: rounding residue ${e(exactMoney(l.residueOutNanos, u))} carried to the next period`,
)}
<p class="sub">Exact sum of lines ${e(exactMoney(t.exactNanos, u))}; residue carried ${e(exactMoney(t.residueCarriedNanos, u))}. Amounts are exact to the nano (1e-9 ${e(u)}) and rounded per line to the minor unit; every remainder is carried, never dropped.</p>
</body></html>
`;
}
