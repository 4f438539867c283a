// Signaling protocol v1: the wire messages (schema/signal-v1.schema.json; api/src/signal.rs
// is the source of truth, and test/unit/protocol.test.mjs checks the type names against the
// schema). Every frame is one JSON object whose `type` names the message.

export const PROTOCOL_VERSION = 1;

export type TrackKind = "audio" | "video";
export type TrackSource = "camera" | "microphone" | "screen_share" | "screen_share_audio" | "unknown";
export type VideoQuality = "low" | "medium" | "high";
export type DataKind = "reliable" | "lossy";
export type ConnectionQuality = "lost" | "poor" | "good" | "excellent";
export type Codec = "opus" | "vp8" | "vp9" | "h264" | "av1";
export type LeaveReason =
  | "client_request"
  | "timeout"
  | "duplicate_identity"
  | "removed"
  | "room_closed"
  | "node_draining"
  | "migration"
  | "server_shutdown";
export type ErrorCode =
  | "bad_request"
  | "unknown_message"
  | "message_too_large"
  | "rate_limited"
  | "unauthorized"
  | "permission_denied"
  | "room_not_found"
  | "room_full"
  | "room_closed"
  | "placement_timeout"
  | "node_draining"
  | "node_full"
  | "codec_not_allowed"
  | "codec_not_supported"
  | "track_not_found"
  | "not_joined"
  | "already_joined"
  | "resume_failed"
  | "negotiation_failed"
  | "internal";

export interface SimulcastLayer {
  rid: string;
  quality: VideoQuality;
  width: number;
  height: number;
  maxBitrateBps?: number;
}

export interface TrackInfo {
  sid: string;
  name: string;
  kind: TrackKind;
  source: TrackSource;
  muted: boolean;
  mimeType?: string;
  width?: number;
  height?: number;
  layers?: SimulcastLayer[];
}

export interface ParticipantPermission {
  canPublish: boolean;
  canSubscribe: boolean;
  canPublishData: boolean;
  hidden: boolean;
}

export interface ParticipantInfo {
  sid: string;
  identity: string;
  name?: string;
  metadata?: string;
  state: "joining" | "joined" | "active" | "disconnected";
  tracks: TrackInfo[];
  permission: ParticipantPermission;
  joinedAtMs: number;
}

export interface RoomInfo {
  sid: string;
  name: string;
  metadata?: string;
  maxParticipants: number;
  emptyTimeoutSeconds: number;
  numParticipants: number;
  enabledCodecs: Codec[];
  createdAtMs: number;
}

export interface IceServer {
  urls: string[];
  username?: string;
  credential?: string;
}

export interface JoinResponse {
  room: RoomInfo;
  participant: ParticipantInfo;
  otherParticipants: ParticipantInfo[];
  iceServers: IceServer[];
  iceTransportPolicy: "all" | "relay";
  protocolVersion: number;
  serverVersion: string;
  node: string;
  pingIntervalSeconds: number;
  pingTimeoutSeconds: number;
  reconnectToken: string;
}

export interface IceCandidateInit {
  candidate: string;
  sdpMid?: string;
  sdpMLineIndex?: number;
  usernameFragment?: string;
}

/** Messages a client sends. */
export type ClientMessage =
  | { type: "join"; protocolVersion: number; autoSubscribe?: boolean; sdk?: { name: string; version: string } }
  | { type: "resume"; participantSid: string; reconnectToken: string }
  | { type: "offer"; sdp: string; id: number }
  | { type: "answer"; sdp: string; id: number }
  | { type: "trickle"; candidate: IceCandidateInit | null }
  | {
      type: "publish_track";
      cid: string;
      name: string;
      kind: TrackKind;
      source: TrackSource;
      muted?: boolean;
      width?: number;
      height?: number;
      layers?: SimulcastLayer[];
    }
  | { type: "unpublish_track"; trackSid: string }
  | { type: "update_subscription"; trackSids: string[]; subscribe: boolean; quality?: VideoQuality }
  | {
      type: "update_track_settings";
      trackSids: string[];
      disabled?: boolean;
      width?: number;
      height?: number;
      quality?: VideoQuality;
    }
  | { type: "mute_track"; trackSid: string; muted: boolean }
  | { type: "update_metadata"; name?: string; metadata?: string }
  | { type: "data"; kind: DataKind; topic?: string; payload: string; destinationIdentities?: string[] }
  | { type: "leave"; reason?: string }
  | { type: "ping"; timestampMs: number; rttMs?: number }
  | { type: "pong"; timestampMs: number };

export interface ServerLeave {
  reason: LeaveReason;
  canReconnect: boolean;
  retryAfterMs?: number;
  reconnect?: "resume" | "rejoin";
  message: string;
}

export interface ErrorMessage {
  code: ErrorCode;
  message: string;
  requestType?: string;
  retryAfterMs?: number;
}

/** Messages the server sends. */
export type ServerMessage =
  | ({ type: "joined" } & JoinResponse)
  | ({ type: "resumed" } & JoinResponse)
  | { type: "offer"; sdp: string; id: number }
  | { type: "answer"; sdp: string; id: number }
  | { type: "trickle"; candidate: IceCandidateInit | null }
  | { type: "track_published"; cid: string; track: TrackInfo }
  | { type: "track_unpublished"; trackSid: string }
  | { type: "participant_joined"; participant: ParticipantInfo }
  | { type: "participant_left"; participantSid: string; identity: string; reason: LeaveReason }
  | { type: "participant_updated"; participant: ParticipantInfo }
  | { type: "track_muted"; participantSid: string; trackSid: string; muted: boolean }
  | {
      type: "subscription_updated";
      trackSid: string;
      participantSid: string;
      subscribed: boolean;
      error?: ErrorCode;
    }
  | {
      type: "stream_state";
      trackSid: string;
      participantSid: string;
      state: "active" | "paused";
      reason?: "bandwidth" | "hidden" | "unsubscribed" | "publisher_muted";
      quality?: VideoQuality;
    }
  | {
      type: "subscribed_layers";
      trackSid: string;
      layers: { rid: string; quality: VideoQuality; active: boolean }[];
    }
  | { type: "room_updated"; room: RoomInfo }
  | {
      type: "data";
      participantSid: string;
      identity: string;
      kind: DataKind;
      topic?: string;
      payload: string;
    }
  | { type: "active_speakers"; speakers: { participantSid: string; level: number }[] }
  | {
      type: "connection_quality";
      updates: { participantSid: string; quality: ConnectionQuality; score: number }[];
    }
  | ({ type: "leave" } & ServerLeave)
  | { type: "ping"; timestampMs: number; rttMs?: number }
  | { type: "pong"; timestampMs: number }
  | ({ type: "error" } & ErrorMessage);

export type ServerMessageOf<T extends ServerMessage["type"]> = Extract<ServerMessage, { type: T }>;

/** Every `type` a client may send, in the order of the schema. */
export const CLIENT_MESSAGE_TYPES: readonly ClientMessage["type"][] = [
  "join",
  "resume",
  "offer",
  "answer",
  "trickle",
  "publish_track",
  "unpublish_track",
  "update_subscription",
  "update_track_settings",
  "mute_track",
  "update_metadata",
  "data",
  "leave",
  "ping",
  "pong",
];

/** Every `type` the server sends. */
export const SERVER_MESSAGE_TYPES: readonly ServerMessage["type"][] = [
  "joined",
  "resumed",
  "offer",
  "answer",
  "trickle",
  "track_published",
  "track_unpublished",
  "participant_joined",
  "participant_left",
  "participant_updated",
  "track_muted",
  "subscription_updated",
  "stream_state",
  "subscribed_layers",
  "room_updated",
  "data",
  "active_speakers",
  "connection_quality",
  "leave",
  "ping",
  "pong",
  "error",
];

/**
 * The simulcast layers the server knows, lowest first: rids `q`, `h`, `f`. A publisher
 * sends its encodings under these rids, and the server forwards `h` (medium) to a
 * subscriber until it says how large it renders the track.
 */
export const SIMULCAST_RIDS: readonly { rid: string; quality: VideoQuality; scaleDown: number }[] = [
  { rid: "q", quality: "low", scaleDown: 4 },
  { rid: "h", quality: "medium", scaleDown: 2 },
  { rid: "f", quality: "high", scaleDown: 1 },
];
