// @switchyard/server: what an app's backend needs from Switchyard — access tokens for its
// users, verification of tokens, the Room service client, and a receiver for signed webhooks.

export { AccessToken, TokenError, TokenVerifier, parseTtl } from "./token.js";
export type { AccessTokenOptions, Claims, Grants, TokenErrorCode, TokenVerifierOptions, TrackSource } from "./token.js";
export { WEBHOOK_CONTENT_TYPE, WEBHOOK_EVENTS, WebhookError, WebhookReceiver, bodyHash } from "./webhook.js";
export type { ReceiveOptions, WebhookErrorCode, WebhookEvent, WebhookEventKind } from "./webhook.js";
export { ROOM_SERVICE_ERROR_CODES, RoomServiceClient, RoomServiceError } from "./room.js";
export type {
  Codec,
  CreateRoomOptions,
  LeaveReason,
  ParticipantInfo,
  ParticipantPermission,
  PermissionUpdate,
  RoomInfo,
  RoomServiceErrorCode,
  RoomServiceOptions,
  SendDataOptions,
  SimulcastLayer,
  TrackInfo,
  TrackKind,
  TrackSourceKind,
  UpdateParticipantOptions,
  VideoQuality,
} from "./room.js";
