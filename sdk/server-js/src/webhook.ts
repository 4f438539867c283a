// Webhooks, receiver side: media-node POSTs one event per request with
//
//   Content-Type: application/webhook+json
//   Authorization: <HS256 JWT, kid = iss = API key, exp = signing time + 5 min,
//                   sha256 = base64(SHA-256(raw body))>
//
// The signature covers the body through its hash, so the receiver hashes the exact bytes
// it received, before any JSON parsing. Events may arrive more than once (retries keep
// their `id`): drop duplicates by `id`.

import { createHash } from "node:crypto";
import { MalformedJwt, decodeUnverified, signatureMatches, stripBearer } from "./jwt.js";
import type { LeaveReason } from "./room.js";

/** The `Content-Type` of every webhook request. */
export const WEBHOOK_CONTENT_TYPE = "application/webhook+json";

/** Every event kind, in the order the schema lists them. */
export const WEBHOOK_EVENTS = [
  "room_started",
  "room_finished",
  "participant_joined",
  "participant_left",
  "track_published",
  "track_unpublished",
] as const;

/** What happened. */
export type WebhookEventKind = (typeof WEBHOOK_EVENTS)[number];

/** The body of a webhook request (`schema/webhook-v1.schema.json`). */
export interface WebhookEvent {
  /** Unique per event and the same on every retry. */
  id: string;
  event: WebhookEventKind;
  /** Unix seconds. */
  createdAt: number;
  /** The room; its sid is new each time the room opens. */
  room: { name: string; sid: string };
  /** On participant and track events: the identity, the session's sid, and on `participant_left` why. */
  participant?: { identity: string; sid: string; leaveReason?: LeaveReason };
  /** On track events. */
  track?: { sid: string };
  /** The media-node that saw it. */
  node: string;
  /** The MediaCluster the node belongs to. */
  cluster: string;
}

/** Why a request was refused; the same codes as `switchyard_api::webhook::WebhookError`. */
export type WebhookErrorCode = "bad_signature" | "expired" | "body_hash_mismatch" | "unknown_key" | "malformed";

/** A refused webhook request. */
export class WebhookError extends Error {
  override readonly name = "WebhookError";
  constructor(
    readonly code: WebhookErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** The base64 SHA-256 of `body`: what the signature's `sha256` claim must equal. */
export function bodyHash(body: string | Uint8Array): string {
  return createHash("sha256").update(body).digest("base64");
}

/** Options of [`WebhookReceiver.receive`]. */
export interface ReceiveOptions {
  /** The receiver's clock, Unix seconds (for tests). */
  now?: number;
}

/**
 * Verifies webhook requests and returns their typed events.
 *
 * ```ts
 * const receiver = new WebhookReceiver("APIedge", process.env.SWITCHYARD_API_SECRET!);
 * const event = await receiver.receive(rawBody, req.headers.authorization);
 * ```
 *
 * Pass a map of key → secret to accept several keys (rotation).
 */
export class WebhookReceiver {
  readonly #keys: Map<string, string>;

  constructor(apiKey: string, apiSecret: string);
  constructor(keys: Record<string, string> | Map<string, string>);
  constructor(keyOrKeys: string | Record<string, string> | Map<string, string>, apiSecret?: string) {
    if (typeof keyOrKeys === "string") {
      if (!apiSecret) throw new TypeError("an API secret is required");
      this.#keys = new Map([[keyOrKeys, apiSecret]]);
    } else {
      this.#keys = keyOrKeys instanceof Map ? new Map(keyOrKeys) : new Map(Object.entries(keyOrKeys));
    }
  }

  /** Verify a request and parse its event; rejects with [`WebhookError`]. */
  async receive(body: string | Uint8Array, authorization: string | undefined, options: ReceiveOptions = {}): Promise<WebhookEvent> {
    return this.verify(body, authorization, options);
  }

  /** [`receive`] without a promise. */
  verify(body: string | Uint8Array, authorization: string | undefined, options: ReceiveOptions = {}): WebhookEvent {
    const now = options.now ?? Math.floor(Date.now() / 1000);
    if (!authorization) throw new WebhookError("malformed", "no Authorization header");
    let jwt;
    try {
      jwt = decodeUnverified(stripBearer(authorization));
    } catch (e) {
      throw new WebhookError("malformed", `authorization: ${e instanceof MalformedJwt ? e.message : String(e)}`);
    }
    if (jwt.header.alg !== "HS256") throw new WebhookError("malformed", `JWT algorithm ${JSON.stringify(jwt.header.alg)} is not HS256`);
    const key = jwt.header.kid;
    if (typeof key !== "string") throw new WebhookError("malformed", "JWT header has no kid naming the API key");
    const secret = this.#keys.get(key);
    if (secret === undefined) throw new WebhookError("unknown_key", `webhook is signed with unknown API key ${JSON.stringify(key)}`);
    if (!signatureMatches(jwt, secret)) throw new WebhookError("bad_signature", "webhook signature is invalid");
    const claims = jwt.payload as { iss?: unknown; exp?: unknown; sha256?: unknown } | null;
    if (typeof claims !== "object" || claims === null) throw new WebhookError("malformed", "JWT payload is not an object");
    if (claims.iss !== key) throw new WebhookError("malformed", "iss does not match the signing key id");
    if (typeof claims.exp !== "number") throw new WebhookError("malformed", "JWT has no exp");
    if (now > claims.exp) throw new WebhookError("expired", `webhook signature expired at ${claims.exp} (now ${now})`);
    if (claims.sha256 !== bodyHash(body)) throw new WebhookError("body_hash_mismatch", "webhook body does not match the signed sha256");
    const text = typeof body === "string" ? body : Buffer.from(body).toString("utf8");
    let event: unknown;
    try {
      event = JSON.parse(text);
    } catch (e) {
      throw new WebhookError("malformed", `body: ${(e as Error).message}`);
    }
    return checkEvent(event);
  }
}

function checkEvent(value: unknown): WebhookEvent {
  const bad = (why: string): never => {
    throw new WebhookError("malformed", `body: ${why}`);
  };
  if (typeof value !== "object" || value === null) return bad("not an object");
  const e = value as Record<string, unknown>;
  if (typeof e.id !== "string") bad("id is missing");
  if (!(WEBHOOK_EVENTS as readonly unknown[]).includes(e.event)) bad(`unknown event ${JSON.stringify(e.event)}`);
  if (!Number.isInteger(e.createdAt)) bad("createdAt is not a Unix time");
  const room = e.room as Record<string, unknown> | undefined;
  if (typeof room !== "object" || room === null || typeof room.name !== "string") bad("room.name is missing");
  if (typeof e.node !== "string" || typeof e.cluster !== "string") bad("node or cluster is missing");
  return value as WebhookEvent;
}
