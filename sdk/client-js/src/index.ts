// @switchyard/client: the browser SDK for Switchyard rooms. See docs/protocol.md for the
// signaling protocol it speaks, and the README's frontend quick start.

export { Emitter } from "./events.js";
export * from "./protocol.js";
export { DEFAULT_RECONNECT_POLICY, backoffDelay, nextStep, type ReconnectPolicy, type ReconnectStep } from "./reconnect.js";
export { msidByMid } from "./sdp.js";
export { summarizeStats, type ConnectionStats, type InboundStats, type OutboundStats } from "./stats.js";
export {
  SDK_VERSION,
  Session,
  SwitchyardError,
  defaultSignalingUrl,
  signalingUrl,
  type ConnectionState,
  type DataPacket,
  type DisconnectReason,
  type SessionEvents,
  type SessionHost,
  type SessionOptions,
  type SignalSocket,
  type SocketFactory,
} from "./session.js";
export { LocalTrackPublication, Participant, RemoteParticipant, RemoteTrackPublication, TrackPublication } from "./participant.js";
export {
  LocalParticipant,
  Room,
  createLocalTracks,
  getLocalDevices,
  layerForHeight,
  simulcastLayers,
  type PublishOptions,
  type RoomEvents,
  type RoomOptions,
  type RoomStats,
  type TrackStats,
} from "./room.js";
