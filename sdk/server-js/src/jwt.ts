// HS256 JSON Web Tokens, the only kind Switchyard signs or accepts.
//
// Parsing is strict on shape and lenient on nothing else: a token is three base64url
// parts, the header names HS256, and the signature is compared in constant time before
// any claim is trusted.

import { createHmac, timingSafeEqual } from "node:crypto";

/** A JWT header as Switchyard writes it. */
export interface JwtHeader {
  alg: string;
  typ?: string;
  kid?: string;
}

/** A token split into its parts; nothing in it is verified yet. */
export interface UnverifiedJwt {
  header: JwtHeader;
  payload: unknown;
  signingInput: string;
  signature: Buffer;
}

/** Why a token could not even be read. */
export class MalformedJwt extends Error {
  override readonly name = "MalformedJwt";
}

function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString("base64url");
}

function decodeJson(part: string, what: string): unknown {
  if (!/^[A-Za-z0-9_-]*={0,2}$/.test(part)) throw new MalformedJwt(`${what} is not base64url`);
  try {
    return JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
  } catch {
    throw new MalformedJwt(`${what} is not base64url JSON`);
  }
}

/** Sign `payload` with `secret` (HS256); the header carries `kid`. */
export function signHs256(payload: object, secret: string, kid: string): string {
  const header: JwtHeader = { typ: "JWT", alg: "HS256", kid };
  const input = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(payload))}`;
  const signature = createHmac("sha256", secret).update(input).digest();
  return `${input}.${base64url(signature)}`;
}

/** Split `token` and decode its header and payload, checking nothing else. */
export function decodeUnverified(token: string): UnverifiedJwt {
  const parts = token.split(".");
  if (parts.length !== 3) throw new MalformedJwt("expected three dot-separated parts");
  const [h, p, s] = parts as [string, string, string];
  const header = decodeJson(h, "header");
  if (typeof header !== "object" || header === null || typeof (header as JwtHeader).alg !== "string") {
    throw new MalformedJwt("header has no alg");
  }
  const payload = decodeJson(p, "payload");
  if (!/^[A-Za-z0-9_-]*$/.test(s)) throw new MalformedJwt("signature is not base64url");
  return { header: header as JwtHeader, payload, signingInput: `${h}.${p}`, signature: Buffer.from(s, "base64url") };
}

/** True when `jwt`'s signature is the HS256 MAC of its signing input under `secret`. */
export function signatureMatches(jwt: UnverifiedJwt, secret: string): boolean {
  const expected = createHmac("sha256", secret).update(jwt.signingInput).digest();
  return expected.length === jwt.signature.length && timingSafeEqual(expected, jwt.signature);
}

/** Strip an optional `Bearer` scheme (any case) from an `Authorization` header value. */
export function stripBearer(authorization: string): string {
  const value = authorization.trim();
  const m = /^bearer\s+(.*)$/is.exec(value);
  return (m ? m[1]! : value).trim();
}
