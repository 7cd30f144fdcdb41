/** The invoice laid out as PDF pages (A4, Helvetica). */
import { carriedResidueLines } from "../domain/assemble.js";
import type { Invoice } from "../domain/invoice.js";
import { carriedRows, creditsText, day, exactMoney, KIND_LABEL, lineDay, money, stamp } from "./format.js";
import { A4, textWidth, writePdf, type PdfOp } from "./pdf.js";

const LEFT = 40;
const RIGHT = A4.width - 40;
const BOTTOM = 60;

function clip(s: string, width: number, size: number): string {
  if (textWidth(s, size) <= width) return s;
  let out = s;
  while (out.length > 1 && textWidth(`${out}...`, size) > width) out = out.slice(0, -1);
  return `${out}...`;
}

export function invoicePdf(inv: Invoice): Uint8Array {
  const u = inv.unit;
  const pages: PdfOp[][] = [];
  let ops: PdfOp[] = [];
  let y = A4.height - 50;
  const newPage = () => {
    pages.push(ops);
    ops = [];
    y = A4.height - 50;
  };
  const need = (h: number) => {
    if (y - h < BOTTOM) newPage();
  };
  const text = (x: number, s: string, size = 9, opt: { bold?: boolean; align?: "left" | "right" } = {}) => ops.push({ kind: "text", x, y, size, text: s, ...opt });

  const title = inv.number !== "" ? `Invoice ${inv.number}` : inv.status === "preview" ? "Upcoming invoice (preview)" : `Invoice ${inv.id} (${inv.status})`;
  text(LEFT, title, 18, { bold: true });
  y -= 22;
  text(LEFT, `Customer ${inv.customerId}${inv.subscriptionId !== "" ? `   Subscription ${inv.subscriptionId}` : ""}`, 10);
  y -= 14;
  text(LEFT, `Period ${day(inv.periodStart, inv.timeZone)} to ${day(inv.periodEnd, inv.timeZone)} (${inv.timeZone})   Currency ${u}   Status ${inv.status}`, 10);
  y -= 14;
  text(LEFT, `Rounding ${inv.roundingMode}   Tax ${inv.taxRateBps / 100}%${inv.finalizedAt !== undefined ? `   Finalized ${stamp(inv.finalizedAt)}` : ""}${inv.paidAt !== undefined ? `   Paid ${stamp(inv.paidAt)}` : ""}`, 10);
  y -= 14;
  if (inv.status === "void") {
    text(LEFT, `VOID ${stamp(inv.voidedAt)}${inv.creditNote !== undefined ? `   Credit note ${inv.creditNote.number}: ${money(inv.creditNote.amountNanos, u)}` : ""}`, 11, { bold: true });
    y -= 16;
  }
  y -= 10;
  const cols = { kind: LEFT, desc: LEFT + 80, qty: 350, exact: 440, billed: RIGHT };
  const header = () => {
    text(cols.kind, "Kind", 8, { bold: true });
    text(cols.desc, "Description", 8, { bold: true });
    text(cols.qty, "Quantity", 8, { bold: true, align: "right" });
    text(cols.exact, "Exact", 8, { bold: true, align: "right" });
    text(cols.billed, "Billed (carried out)", 8, { bold: true, align: "right" });
    y -= 5;
    ops.push({ kind: "line", x1: LEFT, y1: y, x2: RIGHT, y2: y, width: 0.8 });
    y -= 12;
  };
  header();
  for (const l of inv.lines) {
    need(26);
    if (y === A4.height - 50) header();
    text(cols.kind, KIND_LABEL[l.kind] ?? l.kind, 8);
    text(cols.desc, clip(l.description, cols.qty - cols.desc - 60, 8), 8);
    text(cols.qty, clip(l.quantity, 60, 8), 8, { align: "right" });
    text(cols.exact, exactMoney(l.amountNanos, u), 8, { align: "right" });
    text(cols.billed, money(l.roundedAmountNanos, u), 8, { bold: true, align: "right" });
    y -= 10;
    const extra = `${lineDay(l.periodStart, inv.timeZone)} to ${lineDay(l.periodEnd, inv.timeZone)}${l.chargeId !== "" ? `  ${l.chargeId}` : ""}${l.residueInNanos !== 0n ? `  carried in ${exactMoney(l.residueInNanos, u)}` : ""}`;
    text(cols.desc, clip(extra, cols.exact - cols.desc - 70, 7), 7);
    if (l.residueOutNanos !== 0n) text(cols.billed, `(${exactMoney(l.residueOutNanos, u)})`, 7, { align: "right" });
    y -= 6;
    ops.push({ kind: "line", x1: LEFT, y1: y, x2: RIGHT, y2: y, width: 0.3 });
    y -= 11;
  }
  const t = inv.totals;
  const totals: Array<[string, bigint]> = [
    ["Subtotal", t.subtotalNanos],
    ["Discount", t.discountNanos],
    ["Tax", t.taxNanos],
    ["Total", t.totalNanos],
    ["Credits applied", t.creditsAppliedNanos],
  ];
  totals.push(...carriedRows(inv));
  need(totals.length * 14 + 40);
  y -= 6;
  for (const [label, v] of totals) {
    text(380, label, 10);
    text(RIGHT, money(v, u), 10, { align: "right" });
    y -= 14;
  }
  ops.push({ kind: "line", x1: 380, y1: y + 9, x2: RIGHT, y2: y + 9, width: 1 });
  y -= 4;
  text(380, "Amount due", 12, { bold: true });
  text(RIGHT, money(t.amountDueNanos, u), 12, { bold: true, align: "right" });
  y -= 28;
  const usage = inv.lines.filter((l) => l.kind === "usage");
  const carriedResidues = new Set(carriedResidueLines(inv.lines));
  const carried = inv.lines.filter((l) => carriedResidues.has(l) || l.kind === "carried_forward");
  const section = (name: string, items: string[]) => {
    need(30);
    text(LEFT, name, 11, { bold: true });
    y -= 14;
    if (items.length === 0) items = ["None."];
    for (const s of items) {
      need(12);
      text(LEFT, clip(s, RIGHT - LEFT, 8), 8);
      y -= 11;
    }
    y -= 8;
  };
  section("Usage breakdown", usage.map((l) => `${l.description}: ${l.quantity} units, exactly ${exactMoney(l.amountNanos, u)} (${stamp(l.periodStart)} to ${stamp(l.periodEnd)})`));
  section("Credits applied", [
    ...inv.lines.filter((l) => l.kind === "credits_applied").map((l) => `${l.description}: ${exactMoney(l.amountNanos, u)} exactly, billed ${money(l.roundedAmountNanos, u)}`),
    ...(inv.creditsInUnits ?? []).map((c) => creditsText(c)),
  ]);
  section(
    "Carried amounts",
    carried.map((l) => (l.kind === "carried_forward" ? `${l.description}: ${money(l.roundedAmountNanos, u)} (since ${day(l.periodStart, inv.timeZone)})` : `${l.description}: residue ${exactMoney(l.residueOutNanos, u)} carried to the next period`)),
  );
  pages.push(ops);
  return writePdf(pages, { title, creationDate: inv.createdAt });
}
