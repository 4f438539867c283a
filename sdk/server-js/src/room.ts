// The Room service client: every operation of `schema/room-service-v1.openapi.json`,
// typed. Each call signs a short-lived token with the Room service grants it needs
// (roomCreate, roomList, or roomAdmin for that room), so the backend holds only the API
// key and secret.
//
//   const rooms = new RoomServiceClient("http://localhost:7880", "devkey", secret);
//   await rooms.createRoom({ name: "standup", emptyTimeoutSeconds: 300 });
//   for (const p of await rooms.listParticipants("standup")) console.log(p.identity);

import { AccessToken, type Grants } from "./token.js";

/** A codec a room may be limited to. */
export type Codec = "Opus" | "VP8" | "VP9" | "H264" | "AV1";

/** Audio or video. */
export type TrackKind = "audio" | "video";

/** Where a track comes from. */
export type TrackSourceKind = "camera" | "microphone" | "screen_share" | "screen_share_audio" | "unknown";

/** A simulcast layer's quality. */
export type VideoQuality = "low" | "medium" | "high";

/** Why a participant left (also a `participant_left` webhook's `leaveReason`). */
export type LeaveReason =
  | "client_request"
  | "timeout"
  | "duplicate_identity"
  | "removed"
  | "room_closed"
  | "node_draining"
  | "migration"
  | "server_shutdown";

/** A room, as the service and the signaling protocol show it. */
export interface RoomInfo {
  sid: string;
  name: string;
  metadata?: string;
  /** 0 means no limit. */
  maxParticipants: number;
  emptyTimeoutSeconds: number;
  numParticipants: number;
  enabledCodecs: Codec[];
  /** Unix milliseconds. */
  createdAtMs: number;
}

/** A simulcast layer of a video track. */
export interface SimulcastLayer {
  rid: string;
  quality: VideoQuality;
  width: number;
  height: number;
  maxBitrateBps?: number;
}

/** A published track. */
export interface TrackInfo {
  sid: string;
  name: string;
  kind: TrackKind;
  source: TrackSourceKind;
  muted: boolean;
  mimeType?: string;
  width?: number;
  height?: number;
  layers?: SimulcastLayer[];
}

/** What a participant may do. */
export interface ParticipantPermission {
  canPublish: boolean;
  canSubscribe: boolean;
  canPublishData: boolean;
  hidden: boolean;
}

/** A participant of a room. */
export interface ParticipantInfo {
  sid: string;
  identity: string;
  name?: string;
  metadata?: string;
  state: "joining" | "joined" | "active" | "disconnected";
  tracks: TrackInfo[];
  permission: ParticipantPermission;
  /** Unix milliseconds. */
  joinedAtMs: number;
}

/** `createRoom`'s request. */
export interface CreateRoomOptions {
  name: string;
  emptyTimeoutSeconds?: number;
  maxParticipants?: number;
  allowedCodecs?: Codec[];
  metadata?: string;
}

/** A permission change; an absent field keeps its value. */
export interface PermissionUpdate {
  canPublish?: boolean;
  canSubscribe?: boolean;
  canPublishData?: boolean;
}

/** `updateParticipant`'s request. */
export interface UpdateParticipantOptions {
  name?: string;
  metadata?: string;
  permission?: PermissionUpdate;
}

/** `sendData`'s options. */
export interface SendDataOptions {
  /** Reliable (default) or lossy. */
  kind?: "reliable" | "lossy";
  topic?: string;
  /** Only these identities; absent or empty means everyone. */
  destinationIdentities?: string[];
}

/** The stable codes of the service's errors (`ApiErrorCode`), in the document's order. */
export const ROOM_SERVICE_ERROR_CODES = [
  "bad_request",
  "unauthorized",
  "permission_denied",
  "room_not_found",
  "participant_not_found",
  "track_not_found",
  "room_exists",
  "rate_limited",
  "unavailable",
  "internal",
] as const;

/** A stable error code of the service. */
export type RoomServiceErrorCode = (typeof ROOM_SERVICE_ERROR_CODES)[number];

/** A refused call: the HTTP status, the stable code, the finer reason if any. */
export class RoomServiceError extends Error {
  override readonly name = "RoomServiceError";
  constructor(
    readonly status: number,
    readonly code: RoomServiceErrorCode,
    message: string,
    readonly reason?: string,
    /** Seconds to wait before retrying (429, 503). */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }
}

/** Options of [`RoomServiceClient`]. */
export interface RoomServiceOptions {
  /** The identity of the tokens the client signs (default "server-sdk"). */
  identity?: string;
  /** Give up a call after this many milliseconds (default 30 000). */
  timeoutMs?: number;
}

type Method = "GET" | "POST" | "PATCH" | "DELETE";

/** Every call of the Room service. */
export class RoomServiceClient {
  readonly #base: string;
  readonly #key: string | undefined;
  readonly #secret: string | undefined;
  readonly #identity: string;
  readonly #timeoutMs: number;

  /**
   * `url`: a node's signaling URL (`http(s)://` or `ws(s)://`, `/rtc` optional). The key
   * and secret default to SWITCHYARD_API_KEY / SWITCHYARD_API_SECRET.
   */
  constructor(url: string, apiKey?: string, apiSecret?: string, options: RoomServiceOptions = {}) {
    let base = url.trim().replace(/\/+$/, "").replace(/\/rtc$/, "");
    base = base.replace(/^ws:\/\//, "http://").replace(/^wss:\/\//, "https://");
    if (!/^https?:\/\//.test(base)) throw new TypeError(`url ${JSON.stringify(url)} must start with http(s):// or ws(s)://`);
    this.#base = `${base}/api/v1`;
    this.#key = apiKey;
    this.#secret = apiSecret;
    this.#identity = options.identity ?? "server-sdk";
    this.#timeoutMs = options.timeoutMs ?? 30_000;
  }

  /** Open a room before anyone joins it; `room_exists` (409) if it is open. */
  async createRoom(options: CreateRoomOptions): Promise<RoomInfo> {
    // Not scoped to the room: a name the server refuses is then a 400 naming the rule,
    // not a token that fails to verify.
    return (await this.#call("POST", "/rooms", { roomCreate: true }, options)) as RoomInfo;
  }

  /** The open rooms, or only those named. */
  async listRooms(names?: string[]): Promise<RoomInfo[]> {
    const query = names && names.length > 0 ? `?names=${names.map(encodeURIComponent).join(",")}` : "";
    const r = (await this.#call("GET", `/rooms${query}`, { roomList: true })) as { rooms: RoomInfo[] };
    return r.rooms;
  }

  /** One room. */
  async getRoom(room: string): Promise<RoomInfo> {
    return (await this.#call("GET", `/rooms/${seg(room)}`, admin(room))) as RoomInfo;
  }

  /** Close a room: its participants are told and leave; `room_finished` fires. */
  async deleteRoom(room: string): Promise<void> {
    await this.#call("DELETE", `/rooms/${seg(room)}`, admin(room));
  }

  /** Set a room's metadata; its participants receive `room_updated`. */
  async updateRoomMetadata(room: string, metadata: string): Promise<RoomInfo> {
    return (await this.#call("PATCH", `/rooms/${seg(room)}`, admin(room), { metadata })) as RoomInfo;
  }

  /** Everyone in a room. */
  async listParticipants(room: string): Promise<ParticipantInfo[]> {
    const r = (await this.#call("GET", `/rooms/${seg(room)}/participants`, admin(room))) as {
      participants: ParticipantInfo[];
    };
    return r.participants;
  }

  /** One participant. */
  async getParticipant(room: string, identity: string): Promise<ParticipantInfo> {
    return (await this.#call("GET", `/rooms/${seg(room)}/participants/${seg(identity)}`, admin(room))) as ParticipantInfo;
  }

  /** Change a participant's name, metadata or permissions, live. */
  async updateParticipant(room: string, identity: string, update: UpdateParticipantOptions): Promise<ParticipantInfo> {
    const path = `/rooms/${seg(room)}/participants/${seg(identity)}`;
    return (await this.#call("PATCH", path, admin(room), update)) as ParticipantInfo;
  }

  /** Remove a participant; it is told why (`removed`). */
  async removeParticipant(room: string, identity: string): Promise<void> {
    await this.#call("DELETE", `/rooms/${seg(room)}/participants/${seg(identity)}`, admin(room));
  }

  /** Mute or unmute a published track; returns the track as of now. */
  async mutePublishedTrack(room: string, identity: string, trackSid: string, muted: boolean): Promise<TrackInfo> {
    const path = `/rooms/${seg(room)}/participants/${seg(identity)}/tracks/${seg(trackSid)}/mute`;
    const r = (await this.#call("POST", path, admin(room), { muted })) as { track: TrackInfo };
    return r.track;
  }

  /** Send data (bytes or UTF-8 text) to a room, or to some identities; resolves with the recipients' count. */
  async sendData(room: string, data: Uint8Array | string, options: SendDataOptions = {}): Promise<number> {
    const payload = Buffer.from(typeof data === "string" ? Buffer.from(data, "utf8") : data).toString("base64");
    const body: Record<string, unknown> = { payload, kind: options.kind ?? "reliable" };
    if (options.topic !== undefined) body.topic = options.topic;
    if (options.destinationIdentities?.length) body.destinationIdentities = options.destinationIdentities;
    const r = (await this.#call("POST", `/rooms/${seg(room)}/data`, admin(room), body)) as { recipients: number };
    return r.recipients;
  }

  async #call(method: Method, path: string, grants: Grants, body?: unknown): Promise<unknown> {
    const token = await new AccessToken(this.#key, this.#secret, { identity: this.#identity, ttl: 300 })
      .addGrant(grants)
      .toJwt();
    const init: RequestInit = {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      signal: AbortSignal.timeout(this.#timeoutMs),
    };
    if (body !== undefined) init.body = JSON.stringify(body);
    const response = await fetch(`${this.#base}${path}`, init);
    const text = await response.text();
    if (!response.ok) {
      let e: { code?: RoomServiceErrorCode; message?: string; reason?: string; retryAfterSeconds?: number } = {};
      try {
        e = JSON.parse(text);
      } catch {}
      throw new RoomServiceError(
        response.status,
        e.code ?? "internal",
        e.message ?? (text || `HTTP ${response.status}`),
        e.reason,
        e.retryAfterSeconds,
      );
    }
    return text ? JSON.parse(text) : undefined;
  }
}

/** `roomAdmin` for one room. */
function admin(room: string): Grants {
  return { roomAdmin: true, room };
}

function seg(s: string): string {
  return encodeURIComponent(s);
}
