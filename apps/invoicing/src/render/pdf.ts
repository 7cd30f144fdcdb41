/**
 * A small PDF 1.4 writer: pages of text (Helvetica / Helvetica-Bold, the standard Type 1 fonts,
 * WinAnsiEncoding) and straight lines, with a cross-reference table of exact byte offsets.
 * Text is encoded to WinAnsiEncoding (Windows code page 1252: ASCII, Latin-1 and the 27 characters
 * cp1252 adds, e.g. "€", "–", "—", curly quotes, "Š", "Œ"), each byte outside printable ASCII written
 * as an octal escape (\ooo), so the output stays plain ASCII (but for the header's binary-marker
 * comment), uncompressed, and can be checked structurally and opened by any viewer. A character
 * cp1252 does not have (CJK, emoji, most non-Latin scripts) or a control character is printed as
 * "?": the standard fonts carry no other glyphs and no Unicode font is embedded.
 */

export interface PdfText {
  kind: "text";
  x: number;
  y: number;
  size: number;
  text: string;
  bold?: boolean;
  /** align "right": x is the right edge (width estimated from Helvetica metrics). */
  align?: "left" | "right";
}

export interface PdfLine {
  kind: "line";
  x1: number;
  y1: number;
  x2: number;
  y2: number;
  width?: number;
}

export type PdfOp = PdfText | PdfLine;

export const A4 = { width: 595, height: 842 } as const;

/** Helvetica glyph widths (1/1000 em) for ASCII 32..126 (Adobe Core14 AFM). */
const HELVETICA_WIDTHS = [
  278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556, 556, 556, 556, 556, 556, 556, 556,
  278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667,
  611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833,
  556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
];

/**
 * Helvetica glyph widths (1/1000 em) for the WinAnsiEncoding bytes 128..255 (Adobe Core14 AFM;
 * 0 for the five bytes cp1252 leaves undefined, 0x81 0x8D 0x8F 0x90 0x9D, never produced).
 */
const HELVETICA_WIDTHS_HIGH = [
  556, 0, 222, 556, 333, 1000, 556, 556, 333, 1000, 667, 333, 1000, 0, 611, 0, 0, 222, 222, 333, 333, 350, 556, 1000, 333, 1000, 500, 333, 944, 0, 500, 667,
  278, 333, 556, 556, 556, 556, 260, 556, 333, 737, 370, 556, 584, 333, 737, 333, 400, 584, 333, 333, 333, 556, 537, 278, 333, 333, 365, 556, 834, 834, 834, 611,
  667, 667, 667, 667, 667, 667, 1000, 722, 667, 667, 667, 667, 278, 278, 278, 278, 722, 722, 778, 778, 778, 778, 778, 584, 778, 722, 722, 722, 722, 667, 667, 611,
  556, 556, 556, 556, 556, 556, 889, 500, 556, 556, 556, 556, 278, 278, 278, 278, 556, 556, 556, 556, 556, 556, 556, 584, 611, 556, 556, 556, 556, 500, 556, 500,
];

/** The characters cp1252 (WinAnsiEncoding) puts at 0x80..0x9F: Unicode code point -> byte. */
const CP1252_EXTRA = new Map<number, number>([
  [0x20ac, 0x80], [0x201a, 0x82], [0x0192, 0x83], [0x201e, 0x84], [0x2026, 0x85], [0x2020, 0x86], [0x2021, 0x87], [0x02c6, 0x88], [0x2030, 0x89],
  [0x0160, 0x8a], [0x2039, 0x8b], [0x0152, 0x8c], [0x017d, 0x8e], [0x2018, 0x91], [0x2019, 0x92], [0x201c, 0x93], [0x201d, 0x94], [0x2022, 0x95],
  [0x2013, 0x96], [0x2014, 0x97], [0x02dc, 0x98], [0x2122, 0x99], [0x0161, 0x9a], [0x203a, 0x9b], [0x0153, 0x9c], [0x017e, 0x9e], [0x0178, 0x9f],
]);

const QUESTION_MARK = 0x3f;

/**
 * winAnsiBytes: text as WinAnsiEncoding (cp1252) bytes, one per character (code point): printable
 * ASCII and Latin-1 (U+00A0..U+00FF) as themselves, cp1252's 27 extra characters at 0x80..0x9F,
 * "?" for anything else (control characters, CJK, emoji: no glyph in the standard fonts).
 */
export function winAnsiBytes(s: string): number[] {
  const out: number[] = [];
  // Composed first (NFC): "e" + U+0301 is "é", which cp1252 has (a decomposed name printed "e?").
  for (const ch of s.normalize("NFC")) {
    const c = ch.codePointAt(0)!;
    out.push((c >= 0x20 && c <= 0x7e) || (c >= 0xa0 && c <= 0xff) ? c : (CP1252_EXTRA.get(c) ?? QUESTION_MARK));
  }
  return out;
}

/** textWidth: the width in points of text set in Helvetica at size (bold approximated by +5%). */
export function textWidth(text: string, size: number, bold = false): number {
  let w = 0;
  for (const b of winAnsiBytes(text)) w += (b < 128 ? HELVETICA_WIDTHS[b - 32] : HELVETICA_WIDTHS_HIGH[b - 128]) ?? 556;
  return ((bold ? w * 1.05 : w) * size) / 1000;
}

/**
 * escapeText: a PDF literal string body holding the text's WinAnsiEncoding bytes: printable ASCII
 * as itself (backslash and parentheses escaped), every other byte as a three-digit octal escape.
 */
export function escapeText(s: string): string {
  let out = "";
  for (const b of winAnsiBytes(s)) {
    if (b === 0x5c || b === 0x28 || b === 0x29) out += `\\${String.fromCharCode(b)}`;
    else if (b >= 0x20 && b <= 0x7e) out += String.fromCharCode(b);
    else out += `\\${b.toString(8).padStart(3, "0")}`;
  }
  return out;
}

/**
 * escapeInfoText: a literal string of the document information dictionary (PDFDocEncoding, not
 * WinAnsi): printable ASCII only, other characters "?" (titles are invoice numbers and ids, ASCII).
 */
function escapeInfoText(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, "?").replace(/[\\()]/g, (c) => `\\${c}`);
}

function num(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(2);
}

function contentStream(ops: PdfOp[]): string {
  const out: string[] = [];
  for (const op of ops) {
    if (op.kind === "line") {
      out.push(`${num(op.width ?? 0.5)} w ${num(op.x1)} ${num(op.y1)} m ${num(op.x2)} ${num(op.y2)} l S`);
    } else {
      const x = op.align === "right" ? op.x - textWidth(op.text, op.size, op.bold) : op.x;
      out.push(`BT /${op.bold === true ? "F2" : "F1"} ${num(op.size)} Tf ${num(x)} ${num(op.y)} Td (${escapeText(op.text)}) Tj ET`);
    }
  }
  return out.join("\n") + "\n";
}

/** writePdf: a complete PDF 1.4 file of the given pages (each a list of drawing operations). */
export function writePdf(pages: PdfOp[][], info: { title: string; creationDate: Date }): Uint8Array {
  // Object numbers: 1 catalog, 2 pages, 3 F1, 4 F2, 5 info, then per page: page, content.
  const objects: string[] = [];
  const pageIds = pages.map((_, i) => 6 + i * 2);
  objects[1] = "<< /Type /Catalog /Pages 2 0 R >>";
  objects[2] = `<< /Type /Pages /Kids [${pageIds.map((id) => `${id} 0 R`).join(" ")}] /Count ${pages.length} >>`;
  objects[3] = "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>";
  objects[4] = "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>";
  const d = info.creationDate.toISOString().replace(/[-:T]/g, "").slice(0, 14);
  objects[5] = `<< /Title (${escapeInfoText(info.title)}) /Producer (Nanobill invoicing) /CreationDate (D:${d}Z) >>`;
  pages.forEach((ops, i) => {
    const pageId = pageIds[i]!;
    const stream = contentStream(ops);
    objects[pageId] =
      `<< /Type /Page /Parent 2 0 R /MediaBox [0 0 ${A4.width} ${A4.height}] ` +
      `/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents ${pageId + 1} 0 R >>`;
    objects[pageId + 1] = `<< /Length ${Buffer.byteLength(stream, "latin1")} >>\nstream\n${stream}endstream`;
  });
  // The header's second line holds bytes > 127 so that tools treat the file as binary.
  let body = "%PDF-1.4\n%\xe2\xe3\xcf\xd3\n";
  const offsets: number[] = [];
  for (let id = 1; id < objects.length; id++) {
    offsets[id] = Buffer.byteLength(body, "latin1");
    body += `${id} 0 obj\n${objects[id]}\nendobj\n`;
  }
  const xrefAt = Buffer.byteLength(body, "latin1");
  let xref = `xref\n0 ${objects.length}\n0000000000 65535 f \n`;
  for (let id = 1; id < objects.length; id++) xref += `${String(offsets[id]).padStart(10, "0")} 00000 n \n`;
  body += `${xref}trailer\n<< /Size ${objects.length} /Root 1 0 R /Info 5 0 R >>\nstartxref\n${xrefAt}\n%%EOF\n`;
  return new Uint8Array(Buffer.from(body, "latin1"));
}
