// Access tokens: what an app's backend mints for each participant, and what a
// media-node verifies before a WebSocket upgrade completes.
//
// A token is an HS256 JWT whose header `kid` and claim `iss` both name the API key, so a
// server holding several keys (rotation) knows which secret checks it. The claims are
// exactly those of `switchyard_api::token::Claims`: `iss`, `sub` (the identity), `name`,
// `metadata`, `iat`, `nbf`, `exp`, `jti` and `grants`.

import { randomBytes } from "node:crypto";
import { MalformedJwt, decodeUnverified, signHs256, signatureMatches } from "./jwt.js";

/** Where a published track comes from, as `canPublishSources` names it. */
export type TrackSource = "camera" | "microphone" | "screen_share" | "screen_share_audio" | "unknown";

/** What a token allows its bearer; omitted publish flags default to allowed. */
export interface Grants {
  /** The room this token is for (needed for `roomJoin`, scopes `roomAdmin`). */
  room?: string;
  /** May join `room`. */
  roomJoin?: boolean;
  /** May create rooms (explicitly, or by joining one that does not exist yet). */
  roomCreate?: boolean;
  /** May list rooms. */
  roomList?: boolean;
  /** May administer `room`, or every room when `room` is absent. */
  roomAdmin?: boolean;
  /** May publish tracks (default true). */
  canPublish?: boolean;
  /** May subscribe to others' tracks (default true). */
  canSubscribe?: boolean;
  /** May send data messages (default true). */
  canPublishData?: boolean;
  /** Which sources may be published; empty or absent means any. */
  canPublishSources?: TrackSource[];
  /** Invisible to other participants (recorders, moderators). */
  hidden?: boolean;
}

/** The verified claims of a token, with every grant filled in. */
export interface Claims {
  iss: string;
  sub: string;
  name?: string;
  metadata?: string;
  iat: number;
  nbf: number;
  exp: number;
  jti?: string;
  grants: Required<Omit<Grants, "room">> & { room?: string };
}

/** Every way a token can be refused; the same codes media-node sends as reasons. */
export type TokenErrorCode =
  | "token_expired"
  | "token_not_yet_valid"
  | "bad_signature"
  | "unknown_key"
  | "alg_none"
  | "unsupported_algorithm"
  | "malformed_token";

/** A refused token: `code` is stable, `message` says why. */
export class TokenError extends Error {
  override readonly name = "TokenError";
  constructor(
    readonly code: TokenErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** Options of an [`AccessToken`]. */
export interface AccessTokenOptions {
  /** The participant's identity, unique within a room (the `sub` claim). */
  identity?: string;
  /** Display name. */
  name?: string;
  /** Application data handed to other participants. */
  metadata?: string;
  /** Lifetime: seconds, or a string such as "90s", "15m", "6h", "7d". Default 6h. */
  ttl?: number | string;
}

const DEFAULT_TTL_SECONDS = 6 * 3600;

/** Seconds in `ttl` (a number of seconds, or "90", "15m", "6h", "7d"). */
export function parseTtl(ttl: number | string): number {
  if (typeof ttl === "number") {
    if (!Number.isInteger(ttl) || ttl <= 0) throw new RangeError(`ttl ${ttl} is not a positive whole number of seconds`);
    return ttl;
  }
  const m = /^(\d+)([smhd]?)$/.exec(ttl.trim());
  if (!m) throw new RangeError(`ttl ${JSON.stringify(ttl)} is not a duration such as 90, 15m, 6h or 7d`);
  const scale = { "": 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as "" | "s" | "m" | "h" | "d"];
  const seconds = Number(m[1]) * scale;
  if (seconds <= 0) throw new RangeError(`ttl ${JSON.stringify(ttl)} must be positive`);
  return seconds;
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/**
 * An access token being built: set grants, then `toJwt()`.
 *
 * ```ts
 * const at = new AccessToken("devkey", "devsecret", { identity: "alice", ttl: "1h" });
 * at.addGrant({ room: "standup", roomJoin: true });
 * const token = await at.toJwt();
 * ```
 *
 * The key and secret default to `SWITCHYARD_API_KEY` and `SWITCHYARD_API_SECRET`.
 */
export class AccessToken {
  readonly apiKey: string;
  readonly #secret: string;
  identity: string | undefined;
  name: string | undefined;
  metadata: string | undefined;
  ttl: number | string;
  #grants: Grants = {};

  constructor(apiKey?: string, apiSecret?: string, options: AccessTokenOptions = {}) {
    const key = apiKey ?? process.env.SWITCHYARD_API_KEY;
    const secret = apiSecret ?? process.env.SWITCHYARD_API_SECRET;
    if (!key || !secret) throw new TypeError("an API key and secret are required (or SWITCHYARD_API_KEY / SWITCHYARD_API_SECRET)");
    this.apiKey = key;
    this.#secret = secret;
    this.identity = options.identity;
    this.name = options.name;
    this.metadata = options.metadata;
    this.ttl = options.ttl ?? DEFAULT_TTL_SECONDS;
  }

  /** Add `grant` to the token's grants (later calls override earlier fields). */
  addGrant(grant: Grants): this {
    this.#grants = { ...this.#grants, ...grant };
    return this;
  }

  /** The grants so far. */
  get grants(): Grants {
    return { ...this.#grants };
  }

  /** Sign the token. `now` (Unix seconds) is for tests; it defaults to the clock. */
  async toJwt(now: number = nowSeconds()): Promise<string> {
    return this.toJwtSync(now);
  }

  /** Sign the token without a promise. */
  toJwtSync(now: number = nowSeconds()): string {
    if (!this.identity) throw new TypeError("identity is required (the token's sub)");
    if (this.#grants.roomJoin && !this.#grants.room) throw new TypeError("a roomJoin grant needs room");
    const claims: Record<string, unknown> = {
      iss: this.apiKey,
      sub: this.identity,
      iat: now,
      nbf: now,
      exp: now + parseTtl(this.ttl),
      jti: randomBytes(12).toString("base64url"),
      grants: this.#grants,
    };
    if (this.name !== undefined) claims.name = this.name;
    if (this.metadata !== undefined) claims.metadata = this.metadata;
    return signHs256(claims, this.#secret, this.apiKey);
  }
}

function fillGrants(raw: unknown): Claims["grants"] {
  const g = (typeof raw === "object" && raw !== null ? raw : {}) as Grants;
  const flag = (v: unknown, dflt: boolean): boolean => (typeof v === "boolean" ? v : dflt);
  const grants: Claims["grants"] = {
    roomJoin: flag(g.roomJoin, false),
    roomCreate: flag(g.roomCreate, false),
    roomList: flag(g.roomList, false),
    roomAdmin: flag(g.roomAdmin, false),
    canPublish: flag(g.canPublish, true),
    canSubscribe: flag(g.canSubscribe, true),
    canPublishData: flag(g.canPublishData, true),
    canPublishSources: Array.isArray(g.canPublishSources) ? g.canPublishSources : [],
    hidden: flag(g.hidden, false),
  };
  if (typeof g.room === "string") grants.room = g.room;
  return grants;
}

/** Options of a [`TokenVerifier`]. */
export interface TokenVerifierOptions {
  /** Clock skew tolerated on `exp` and `nbf`, seconds (default 5). */
  leewaySeconds?: number;
}

/** Checks tokens against a set of API keys, as a media-node does. */
export class TokenVerifier {
  readonly #keys: Map<string, string>;
  readonly #leeway: number;

  constructor(keys: Record<string, string> | Map<string, string>, options: TokenVerifierOptions = {}) {
    this.#keys = keys instanceof Map ? new Map(keys) : new Map(Object.entries(keys));
    this.#leeway = options.leewaySeconds ?? 5;
  }

  /** Verify `token` at Unix time `now` (default: the clock); throws [`TokenError`]. */
  verify(token: string, now: number = nowSeconds()): Claims {
    let jwt;
    try {
      jwt = decodeUnverified(token);
    } catch (e) {
      throw new TokenError("malformed_token", e instanceof MalformedJwt ? e.message : String(e));
    }
    const { header } = jwt;
    if (header.alg.toLowerCase() === "none") throw new TokenError("alg_none", "unsigned tokens (alg none) are refused");
    if (header.alg !== "HS256") throw new TokenError("unsupported_algorithm", `algorithm ${header.alg} is not HS256`);
    const payload = jwt.payload as Partial<Claims> | null;
    if (typeof payload !== "object" || payload === null) throw new TokenError("malformed_token", "payload is not an object");
    const keyId = header.kid ?? payload.iss;
    if (typeof keyId !== "string") throw new TokenError("malformed_token", "neither kid nor iss names the API key");
    const secret = this.#keys.get(keyId);
    if (secret === undefined) throw new TokenError("unknown_key", `unknown API key ${JSON.stringify(keyId)}`);
    if (!signatureMatches(jwt, secret)) throw new TokenError("bad_signature", "the signature does not match");
    for (const field of ["iat", "nbf", "exp"] as const) {
      if (!Number.isInteger(payload[field])) throw new TokenError("malformed_token", `${field} is not a Unix time`);
    }
    if (typeof payload.sub !== "string") throw new TokenError("malformed_token", "sub (the identity) is missing");
    if (payload.iss !== keyId) throw new TokenError("malformed_token", "iss does not match the signing key id");
    const exp = payload.exp!;
    const nbf = payload.nbf!;
    if (now > exp + this.#leeway) throw new TokenError("token_expired", `token expired at ${exp} (now ${now})`);
    if (now + this.#leeway < nbf) throw new TokenError("token_not_yet_valid", `token is valid from ${nbf} (now ${now})`);
    const claims: Claims = { iss: keyId, sub: payload.sub, iat: payload.iat!, nbf, exp, grants: fillGrants(payload.grants) };
    if (typeof payload.name === "string") claims.name = payload.name;
    if (typeof payload.metadata === "string") claims.metadata = payload.metadata;
    if (typeof payload.jti === "string") claims.jti = payload.jti;
    return claims;
  }
}
