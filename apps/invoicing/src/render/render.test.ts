import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { assembleInvoice } from "../domain/assemble.js";
import { defaultSettings, type Invoice } from "../domain/invoice.js";
import { exact, priceTimesQuantity } from "../domain/rounding.js";
import { escapeText, textWidth, winAnsiBytes, writePdf } from "./pdf.js";
import { renderInvoice } from "./index.js";
import { day, lineDay } from "./format.js";

const P0 = new Date("2026-01-01T00:00:00Z");
const P1 = new Date("2026-02-01T00:00:00Z");

function invoice(lines = 3): Invoice {
  const a = assembleInvoice({
    currency: "USD",
    settings: { ...defaultSettings("cus_1"), taxRateBps: 1000 },
    charges: Array.from({ length: lines }, (_, i) => ({
      kind: "usage" as const,
      residueKey: `ch_${i}`,
      chargeId: `ch_${i}`,
      subscriptionId: "sub_1",
      description: `Tokens (model <gpt-x> & "friends") #${i}`,
      quantity: "10.625",
      unitPrice: "4.4556",
      amount: priceTimesQuantity("4.4556", "10.625"),
      periodStart: P0,
      periodEnd: P1,
      expandable: true,
    })),
    minimumCommitmentNanos: 0n,
    creditsAppliedNanos: 8_755_000n,
    residues: new Map(),
    deferredIn: { amountNanos: 10_000_000n, since: new Date("2025-11-01T00:00:00Z"), periods: 2 },
    periodStart: P0,
    periodEnd: P1,
  });
  void exact;
  return {
    id: "inv_abc",
    number: "INV-000042",
    customerId: "cus_1",
    subscriptionId: "sub_1",
    status: "finalized",
    unit: "USD",
    periodStart: P0,
    periodEnd: P1,
    timeZone: "Europe/Paris",
    lines: a.lines,
    totals: a.totals,
    roundingMode: "half_even",
    taxRateBps: 1000,
    deferral: a.deferralShown,
    createdAt: P1,
    finalizedAt: P1,
    paidAt: undefined,
    voidedAt: undefined,
    creditNote: undefined,
    paymentId: "",
    ledgerTransferIds: [],
  };
}

/** Structural check of a PDF: header, objects at their xref offsets, stream lengths, trailer. */
function checkPdf(bytes: Uint8Array): { pages: number; text: string } {
  const s = Buffer.from(bytes).toString("latin1");
  expect(s.startsWith("%PDF-1.4\n")).toBe(true);
  expect(s.endsWith("%%EOF\n")).toBe(true);
  const startxref = Number(/startxref\n(\d+)\n%%EOF\n$/.exec(s)![1]);
  expect(s.slice(startxref, startxref + 5)).toBe("xref\n");
  const xref = /^xref\n0 (\d+)\n/.exec(s.slice(startxref))!;
  const count = Number(xref[1]);
  const entries = s.slice(startxref + xref[0].length).split("\n").slice(0, count);
  expect(entries[0]).toBe("0000000000 65535 f ");
  for (let id = 1; id < count; id++) {
    const m = /^(\d{10}) 00000 n $/.exec(entries[id]!)!;
    expect(m, `xref entry ${id}`).not.toBeNull();
    const off = Number(m[1]);
    expect(s.slice(off, off + `${id} 0 obj\n`.length)).toBe(`${id} 0 obj\n`);
  }
  const trailer = /trailer\n<< \/Size (\d+) \/Root 1 0 R \/Info 5 0 R >>/.exec(s)!;
  expect(Number(trailer[1])).toBe(count);
  let text = "";
  for (const m of s.matchAll(/<< \/Length (\d+) >>\nstream\n/g)) {
    const start = m.index! + m[0].length;
    const len = Number(m[1]);
    expect(s.slice(start + len, start + len + "endstream".length)).toBe("endstream");
    text += s.slice(start, start + len);
  }
  const pages = Number(/\/Type \/Pages \/Kids \[[^\]]*\] \/Count (\d+)/.exec(s)![1]);
  expect((s.match(/\/Type \/Page \//g) ?? []).length).toBe(pages);
  expect(s).toContain("/BaseFont /Helvetica ");
  return { pages, text };
}

describe("PDF writer", () => {
  it("writes a structurally valid PDF 1.4 with exact xref offsets and stream lengths", () => {
    const { pages, text } = checkPdf(writePdf([[{ kind: "text", x: 10, y: 10, size: 12, text: "Hello (world) \\ done" }, { kind: "line", x1: 0, y1: 0, x2: 100, y2: 0 }]], { title: "t", creationDate: new Date(0) }));
    expect(pages).toBe(1);
    expect(text).toContain("(Hello \\(world\\) \\\\ done) Tj");
    expect(text).toContain("0 0 m 100 0 l S");
  });

  it("escapes parentheses and backslashes, writes cp1252 bytes as octal escapes and replaces the rest", () => {
    expect(escapeText("a(b)c\\d€")).toBe("a\\(b\\)c\\\\d\\200");
  });

  it("encodes Latin-1 and cp1252 text to WinAnsiEncoding (the fonts' encoding), '?' only for characters cp1252 lacks", () => {
    const s = "Müller GmbH – Café €5 東京";
    // M ü l l e r _ G m b H _ – _ C a f é _ € 5 _ 東 京
    expect(winAnsiBytes(s)).toEqual([0x4d, 0xfc, 0x6c, 0x6c, 0x65, 0x72, 0x20, 0x47, 0x6d, 0x62, 0x48, 0x20, 0x96, 0x20, 0x43, 0x61, 0x66, 0xe9, 0x20, 0x80, 0x35, 0x20, 0x3f, 0x3f]);
    // The same text decomposed (NFD: "u" + U+0308, "e" + U+0301) encodes the same.
    expect(winAnsiBytes(s.normalize("NFD"))).toEqual(winAnsiBytes(s));
    expect(escapeText(s)).toBe("M\\374ller GmbH \\226 Caf\\351 \\2005 ??");
    // one "?" per character outside cp1252 (an emoji is one character, two UTF-16 units); controls too
    expect(escapeText("a😀\tb")).toBe("a??b");
    // widths from the Helvetica metrics of the cp1252 glyphs: an em dash is 1000/1000 em, "ü" 556
    expect(textWidth("—", 10)).toBe(10);
    expect(textWidth("ü", 10)).toBeCloseTo(5.56, 10);
    const { text } = checkPdf(writePdf([[{ kind: "text", x: 10, y: 10, size: 12, text: s }]], { title: "t", creationDate: new Date(0) }));
    expect(text).toContain("(M\\374ller GmbH \\226 Caf\\351 \\2005 ??) Tj");
  });
});

/** nanosOf: "5.30 USD" -> 5_300_000_000n (exact, no floats). */
function nanosOf(s: string): bigint {
  const m = /^(-?)(\d+)(?:\.(\d+))? [A-Z]{3}$/.exec(s.trim())!;
  expect(m, s).not.toBeNull();
  const n = BigInt(m[2]!) * 1_000_000_000n + BigInt((m[3] ?? "").padEnd(9, "0"));
  return m[1] === "-" ? -n : n;
}

/** The totals table's rows as rendered: HTML and PDF, [label, nanos] each, in order. */
function totalsRows(inv: Invoice): { html: Array<[string, bigint]>; pdf: Array<[string, bigint]> } {
  const html = new TextDecoder().decode(renderInvoice(inv, "html").content);
  const table = /<table class="totals">([\s\S]*?)<\/table>/.exec(html)![1]!;
  const h = [...table.matchAll(/<tr[^>]*><td>([^<]*)<\/td><td class="n">([^<]*)<\/td><\/tr>/g)].map((m): [string, bigint] => [m[1]!, nanosOf(m[2]!)]);
  const { text } = checkPdf(renderInvoice(inv, "pdf").content);
  const p = [...text.matchAll(/BT \/F[12] 1[02] Tf 380 [\d.]+ Td \(([^)]*)\) Tj ET\nBT \/F[12] 1[02] Tf [\d.]+ [\d.]+ Td \(([^)]*)\) Tj ET/g)].map((m): [string, bigint] => [m[1]!, nanosOf(m[2]!)]);
  return { html: h, pdf: p };
}

function assembled(over: Partial<Parameters<typeof assembleInvoice>[0]>): Invoice {
  const a = assembleInvoice({
    currency: "USD",
    settings: defaultSettings("cus_1"),
    charges: [],
    minimumCommitmentNanos: 0n,
    creditsAppliedNanos: 0n,
    residues: new Map(),
    deferredIn: undefined,
    periodStart: P0,
    periodEnd: P1,
    ...over,
  });
  return { ...invoice(), lines: a.lines, totals: a.totals, taxRateBps: over.settings?.taxRateBps ?? 0, deferral: a.deferralShown };
}

describe("dates in the customer's time zone", () => {
  // February in Tokyo: 2026-01-31T15:00Z .. 2026-02-28T15:00Z
  const FEB = new Date("2026-01-31T15:00:00Z");
  const MAR = new Date("2026-02-28T15:00:00Z");
  const tokyo = (): Invoice => {
    const inv = assembled({
      charges: [{ kind: "flat", residueKey: "base", chargeId: "base", subscriptionId: "sub_1", description: "Base fee", quantity: "1", unitPrice: "", amount: exact(20_000_000_000n), periodStart: FEB, periodEnd: MAR, expandable: false }],
      deferredIn: { amountNanos: 10_000_000n, since: FEB, periods: 1 },
      periodStart: FEB,
      periodEnd: MAR,
      timeZone: "Asia/Tokyo",
    });
    return { ...inv, periodStart: FEB, periodEnd: MAR, timeZone: "Asia/Tokyo" };
  };

  it("prints the period, each line's period and carried dates as local dates of the zone the invoice is labelled with", () => {
    const html = new TextDecoder().decode(renderInvoice(tokyo(), "html").content);
    expect(html).toContain("period 2026-02-01 to 2026-03-01 (Asia/Tokyo)");
    expect(html).toContain('<div class="sub">2026-02-01 to 2026-03-01 &middot; base</div>');
    expect(html).toContain("(since 2026-02-01)");
    expect(html).not.toContain("2026-01-31");
    const { text } = checkPdf(renderInvoice(tokyo(), "pdf").content);
    expect(text).toContain("(Period 2026-02-01 to 2026-03-01 \\(Asia/Tokyo\\)");
    expect(text).toContain("(2026-02-01 to 2026-03-01  base) Tj");
    expect(text).toContain("(since 2026-02-01\\)");
    expect(text).not.toContain("2026-01-31");
  });

  it("prints a usage line's hour window by the period's local dates in a zone whose offset is not whole hours (its start floored to 23:30 of the day before printed a day early)", () => {
    // November in Kolkata (+05:30): 2026-10-31T18:30Z .. 2026-11-30T18:30Z; the hour window of its
    // usage is 18:00Z .. 18:00Z (23:30 local of the day before, both ends).
    const start = new Date("2026-10-31T18:30:00Z");
    const end = new Date("2026-11-30T18:30:00Z");
    const inv = assembled({
      charges: [
        { kind: "usage", residueKey: "tok", chargeId: "tok", subscriptionId: "sub_1", description: "Tokens: usage", quantity: "5", unitPrice: "", amount: exact(5_000_000_000n), periodStart: new Date("2026-10-31T18:00:00Z"), periodEnd: new Date("2026-11-30T18:00:00Z"), expandable: true },
        { kind: "flat", residueKey: "base", chargeId: "base", subscriptionId: "sub_1", description: "Base fee", quantity: "1", unitPrice: "", amount: exact(20_000_000_000n), periodStart: start, periodEnd: end, expandable: false },
      ],
      periodStart: start,
      periodEnd: end,
      timeZone: "Asia/Kolkata",
    });
    const kolkata = { ...inv, periodStart: start, periodEnd: end, timeZone: "Asia/Kolkata" };
    const html = new TextDecoder().decode(renderInvoice(kolkata, "html").content);
    expect(html).toContain("period 2026-11-01 to 2026-12-01 (Asia/Kolkata)");
    expect(html).toContain('<div class="sub">2026-11-01 to 2026-12-01 &middot; tok</div>');
    expect(html).toContain('<div class="sub">2026-11-01 to 2026-12-01 &middot; base</div>');
    // (the usage breakdown still names its hour buckets by their UTC instants)
    expect(html).not.toContain("2026-10-31 to");
    const { text } = checkPdf(renderInvoice(kolkata, "pdf").content);
    expect(text).toContain("(2026-11-01 to 2026-12-01  tok) Tj");
    expect(text).not.toContain("2026-10-31 to");
  });

  it("shows a line bound as its own local date in every zone with a whole-hour offset, and an hour-floored bound by the date of any instant of its hour in Kolkata but the last 30 minutes of a day", () => {
    const instant = fc.integer({ min: Date.UTC(2000, 0, 1), max: Date.UTC(2040, 0, 1) });
    fc.assert(
      fc.property(instant, fc.constantFrom("UTC", "Asia/Tokyo", "America/New_York", "Europe/Berlin", "Pacific/Kiritimati"), (ms, tz) => {
        const onHour = new Date(ms - (ms % 3_600_000));
        expect(lineDay(onHour, tz)).toBe(day(onHour, tz));
        expect(lineDay(new Date(ms), tz)).toBe(day(new Date(ms), tz));
      }),
      { numRuns: 2_000 },
    );
    fc.assert(
      fc.property(instant, (ms) => {
        const x = new Date(ms);
        const local = new Date(ms + 5.5 * 3_600_000); // Asia/Kolkata: +05:30, no DST
        if (local.getUTCHours() === 23 && local.getUTCMinutes() >= 30) return;
        expect(lineDay(new Date(ms - (ms % 3_600_000)), "Asia/Kolkata")).toBe(day(x, "Asia/Kolkata"));
      }),
      { numRuns: 2_000 },
    );
  });

  it("prints a UTC invoice's dates as before (the UTC dates of the instants)", () => {
    const inv = { ...tokyo(), timeZone: "UTC" };
    const html = new TextDecoder().decode(renderInvoice(inv, "html").content);
    expect(html).toContain("period 2026-01-31 to 2026-02-28 (UTC)");
    const { text } = checkPdf(renderInvoice(inv, "pdf").content);
    expect(text).toContain("(Period 2026-01-31 to 2026-02-28 \\(UTC\\)");
  });
});

describe("totals table", () => {
  const usage = (nanos: bigint) => ({ kind: "usage" as const, residueKey: "ch_a", chargeId: "ch_a", subscriptionId: "sub_1", description: "Calls", quantity: "1", unitPrice: "", amount: exact(nanos), periodStart: P0, periodEnd: P1, expandable: true });
  const cases: Array<[string, Invoice, bigint]> = [
    // $0.30 deferred from December billed with $5.00 of usage: due $5.30
    ["an amount carried in from earlier invoices", assembled({ charges: [usage(5_000_000_000n)], settings: { ...defaultSettings("cus_1"), minimumBillableNanos: 1_000_000_000n, deferralPeriodsMax: 3 }, deferredIn: { amountNanos: 300_000_000n, since: new Date("2025-12-01T00:00:00Z"), periods: 1 } }), 300_000_000n],
    // $0.30 carried in + $0.20 of usage, still below $1: all $0.50 deferred again, due 0
    ["carried in and deferred again", assembled({ charges: [usage(200_000_000n)], settings: { ...defaultSettings("cus_1"), minimumBillableNanos: 1_000_000_000n, deferralPeriodsMax: 3 }, deferredIn: { amountNanos: 300_000_000n, since: new Date("2025-12-01T00:00:00Z"), periods: 1 } }), 300_000_000n],
    // tax, credits applied and $0.01 carried in
    ["tax, credits and an amount carried in", invoice(), 10_000_000n],
  ];
  // a credit balance: -$12 carried out (a +$12 row), then -$12 taken in against $5 (-$7 carried on)
  const credits: Array<[string, Invoice, Array<[string, bigint]>]> = [
    ["a credit balance carried out", assembled({ charges: [usage(-12_000_000_000n)] }), [["Credit balance carried to next invoice", 12_000_000_000n]]],
    [
      "a credit balance taken in and carried on",
      assembled({ charges: [usage(5_000_000_000n)], deferredIn: { amountNanos: -12_000_000_000n, since: new Date("2025-12-01T00:00:00Z"), periods: 1 } }),
      [
        ["Credit balance from earlier invoices", -12_000_000_000n],
        ["Credit balance carried to next invoice", 7_000_000_000n],
      ],
    ],
  ];
  for (const [name, inv, want] of credits) {
    it(`adds up in HTML and PDF with ${name}`, () => {
      expect(inv.totals.amountDueNanos).toBe(0n);
      for (const rows of Object.values(totalsRows(inv))) {
        expect(rows.slice(5, -1)).toEqual(want);
        const v = rows.map(([, n]) => n);
        expect(v.slice(3, -1).reduce((x, y) => x + y, 0n)).toBe(v.at(-1)!);
      }
    });
  }
  for (const [name, inv, carriedIn] of cases) {
    it(`adds up in HTML and PDF: Subtotal + Discount + Tax = Total, and the rows after it sum to the amount due (${name})`, () => {
      for (const rows of Object.values(totalsRows(inv))) {
        const labels = rows.map(([l]) => l);
        expect(labels.slice(0, 4)).toEqual(["Subtotal", "Discount", "Tax", "Total"]);
        expect(labels.at(-1)).toBe("Amount due");
        expect(rows.find(([l]) => l === "Carried forward from earlier invoices")?.[1]).toBe(carriedIn);
        const v = rows.map(([, n]) => n);
        expect(v[0]! + v[1]! + v[2]!).toBe(v[3]!);
        expect(v.slice(3, -1).reduce((x, y) => x + y, 0n)).toBe(v.at(-1)!);
        expect(v.at(-1)).toBe(inv.totals.amountDueNanos);
      }
    });
  }
});

describe("invoice rendering", () => {
  it("renders a PDF with every line, the totals, the usage breakdown, credits and carried amounts", () => {
    const r = renderInvoice(invoice(), "pdf");
    expect(r.contentType).toBe("application/pdf");
    const { text } = checkPdf(r.content);
    expect(text).toContain("(Invoice INV-000042) Tj");
    expect(text).toContain("(Amount due) Tj");
    expect(text).toContain("(Usage breakdown) Tj");
    expect(text).toContain("(Credits applied) Tj");
    expect(text).toContain("(Carried amounts) Tj");
    expect(text).toContain("47.34075 USD");
    expect(text).toContain("since 2025-11-01");
  });

  it("prints a line description in Latin-1 and cp1252 characters in the invoice PDF (CJK degrades to '?')", () => {
    const inv = invoice(1);
    inv.lines[0] = { ...inv.lines[0]!, description: "Müller GmbH – Café €5 東京" };
    const { text } = checkPdf(renderInvoice(inv, "pdf").content);
    expect(text).toContain("(M\\374ller GmbH \\226 Caf\\351 \\2005 ??) Tj");
    expect(text).not.toContain("M?ller");
  });

  it("breaks a long invoice over several pages, each valid", () => {
    const { pages } = checkPdf(renderInvoice(invoice(120), "pdf").content);
    expect(pages).toBeGreaterThan(2);
  });

  it("renders self-contained HTML with escaped text and every section", () => {
    const html = new TextDecoder().decode(renderInvoice(invoice(), "html").content);
    expect(html).toContain("<!doctype html>");
    expect(html).not.toMatch(/<script|<link|src=/);
    expect(html).toContain("model &lt;gpt-x&gt; &amp; &quot;friends&quot;");
    expect(html).toContain("47.34 USD");
    for (const s of ["Usage breakdown", "Credits applied", "Carried amounts", "Amount due"]) expect(html).toContain(s);
  });

  it("lists as carried to the next period only the last residue of a key two lines share, and sums those", () => {
    // usage $1.004 -> $1.00 (+0.004 out), its late adjustment $2.004 + 0.004 -> $2.01 (-0.002 out): only -0.002 is carried
    const inv = assembled({
      charges: [
        { kind: "usage", residueKey: "ch_a", chargeId: "ch_a", subscriptionId: "sub_1", description: "Calls", quantity: "1", unitPrice: "", amount: exact(1_004_000_000n), periodStart: P0, periodEnd: P1, expandable: true },
        { kind: "adjustment", residueKey: "ch_a", chargeId: "ch_a", subscriptionId: "sub_1", description: "Calls rated late", quantity: "1", unitPrice: "", amount: exact(2_004_000_000n), periodStart: P0, periodEnd: P1, expandable: false },
      ],
    });
    const html = new TextDecoder().decode(renderInvoice(inv, "html").content);
    const section = html.slice(html.indexOf("<h2>Carried amounts</h2>"));
    expect(section).toContain("Calls rated late: rounding residue -0.002 USD carried to the next period");
    expect(section).not.toContain("0.004 USD carried");
    expect(section).toContain("residue carried -0.002 USD.");
    const { text } = checkPdf(renderInvoice(inv, "pdf").content);
    expect(text).toContain("(Calls rated late: residue -0.002 USD carried to the next period) Tj");
    expect(text).not.toContain("0.004 USD carried");
  });

  it("renders JSON with amounts as exact strings", () => {
    const json = JSON.parse(new TextDecoder().decode(renderInvoice(invoice(), "json").content));
    expect(json.lines[0].amountNanos).toBe("47340750000");
    expect(json.number).toBe("INV-000042");
  });
});
