/**
 * A small PDF 1.4 writer: pages of text (Helvetica / Helvetica-Bold, the standard Type 1 fonts,
 * WinAnsiEncoding) and straight lines, with a cross-reference table of exact byte offsets.
 * Output is plain ASCII (non-ASCII text is replaced by "?"), uncompressed, so it can be checked
 * structurally and opened by any viewer.
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

/** textWidth: the width in points of text set in Helvetica at size (bold approximated by +5%). */
export function textWidth(text: string, size: number, bold = false): number {
  let w = 0;
  for (const ch of toAscii(text)) w += HELVETICA_WIDTHS[ch.charCodeAt(0) - 32] ?? 556;
  return ((bold ? w * 1.05 : w) * size) / 1000;
}

function toAscii(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, "?");
}

/** escapeText: a PDF literal string body (backslash, parentheses escaped). */
export function escapeText(s: string): string {
  return toAscii(s).replace(/[\\()]/g, (c) => `\\${c}`);
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
  objects[5] = `<< /Title (${escapeText(info.title)}) /Producer (Nanobill invoicing) /CreationDate (D:${d}Z) >>`;
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
