// Webhook signatures: `nanobill-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
// (the scheme Stripe documents: the timestamp is signed with the body, so a captured request cannot
// be replayed later than the receiver's tolerance). A receiver accepts any v1 that matches (more
// than one during a secret rotation) and compares in constant time.
import { createHmac, timingSafeEqual } from "node:crypto";
import { SIGNATURE_TOLERANCE_S } from "./limits.js";

export const SIGNATURE_HEADER = "nanobill-signature";

export function signWebhook(secret: string, timestampS: number, body: string): string {
  const mac = createHmac("sha256", secret).update(`${timestampS}.${body}`).digest("hex");
  return `t=${timestampS},v1=${mac}`;
}

export type VerifyResult = { ok: true } | { ok: false; reason: "malformed" | "too_old" | "mismatch" };

/** Checks a signature header against the body as received (the exact bytes, as text). */
export function verifyWebhookSignature(
  secret: string,
  header: string | undefined,
  body: string,
  nowS: number,
  toleranceS = SIGNATURE_TOLERANCE_S,
): VerifyResult {
  if (!header) return { ok: false, reason: "malformed" };
  let t: number | undefined;
  const v1: string[] = [];
  for (const part of header.split(",")) {
    const eq = part.indexOf("=");
    if (eq <= 0) return { ok: false, reason: "malformed" };
    const k = part.slice(0, eq).trim();
    const v = part.slice(eq + 1).trim();
    if (k === "t") t = /^\d{1,12}$/.test(v) ? Number(v) : NaN;
    else if (k === "v1") v1.push(v);
  }
  if (t === undefined || !Number.isSafeInteger(t) || v1.length === 0) return { ok: false, reason: "malformed" };
  if (Math.abs(nowS - t) > toleranceS) return { ok: false, reason: "too_old" };
  const want = Buffer.from(createHmac("sha256", secret).update(`${t}.${body}`).digest("hex"));
  for (const got of v1) {
    const g = Buffer.from(got);
    if (g.length === want.length && timingSafeEqual(g, want)) return { ok: true };
  }
  return { ok: false, reason: "mismatch" };
}
