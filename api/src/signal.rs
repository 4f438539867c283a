//! Signaling protocol v1: JSON text frames over the `/rtc` WebSocket.
//!
//! Every frame is one object whose `type` field names the message (`snake_case`); the
//! other fields are `camelCase`. A session goes:
//!
//! ```text
//! client                                   media-node
//!   ── (WebSocket upgrade, ?access_token=…) ──►   token checked before the upgrade
//!   ── join ─────────────────────────────────►
//!   ◄──────────────────────────────── joined ──   room, self, others, ICE servers
//!   ── publish_track ── offer ── trickle… ───►
//!   ◄── track_published ── answer ── trickle…──
//!   ◄── offer (new subscriptions) ───────────     server-initiated renegotiation
//!   ── answer ───────────────────────────────►
//!   ◄── participant_joined / _left / _updated, track_muted, data, … ──
//!   ── ping ─► ◄─ pong                           keepalive, both directions
//!   ── leave ─►  or  ◄─ leave (with reason, canReconnect, retry hint, reconnect)
//!   ⋯ socket lost ⋯  new socket: ── resume ─► ◄─ resumed (fresh snapshot, new token)
//! ```
//!
//! Negotiation: a client that publishes offers first (its tracks and a data channel); a
//! client with nothing to publish need not offer: if, 500 ms after `joined`, it has sent
//! neither an `offer` nor a `publish_track`, the server offers first as soon as a
//! subscription is due. Afterwards the server offers whenever the client's subscriptions
//! change, one offer in flight at a time. Each side handles
//! messages in the order they arrive, so an `answer` is applied before the `offer` behind
//! it is looked at. **Glare** is both sides having an offer outstanding: the server
//! yields. It withdraws its pending offer (an answer to that offer's `id` is ignored),
//! answers the client's offer, and offers the withdrawn changes again under a new `id`;
//! a client drops a server offer that arrives while its own offer awaits an answer (this
//! holds for the server's first offer too). A
//! server offer that gets no answer is sent again unchanged, under the same `id`, up to 3
//! times with doubling waits from 2 s; then it is withdrawn and reported as
//! `negotiation_failed`. Three failed negotiations in a row end the session with `leave`.
//!
//! Media lines: a `publish_track`'s `cid` must equal the track id of its line's
//! `a=msid:<stream> <track>` (a line without a matching `cid` takes the oldest
//! announcement of its kind). The server sends only on the lines it adds: a line the client
//! offers `sendrecv` is answered `recvonly`. Each received track arrives on its own line
//! with `a=msid:<participantSid> <trackSid>`, which maps it to its publisher and track.
//!
//! Codecs: the room's `allowedCodecs` (all of Opus, VP8, VP9, H.264, AV1 when empty) are
//! the only ones answered; a line offering none of them is not published and the client
//! gets `error {code: codec_not_allowed}` naming the allowed list. A published track's
//! `mimeType` is its negotiated codec. A subscriber's line offers only the codec its
//! publisher sends (and that codec's RTX); an answer that does not accept it ends the
//! subscription with `subscription_updated {subscribed: false, error: codec_not_supported}`
//! and an `error` with the same code naming the codec. RTX is negotiated both ways and
//! NACKs are answered by retransmission.
//!
//! **Resume.** A client that lost its socket reconnects with `resume` (participant sid +
//! the `reconnectToken` from `joined` or the latest `resumed`) instead of `join`, on a
//! socket whose access token names the same identity and room. The server keeps a
//! participant whose socket dropped (no close frame, or keepalive timeout) for the node's
//! resume window (15 s by default): its `Rtc`, tracks and subscriptions stay, media keeps
//! flowing, and the others see nothing. `resumed` carries a fresh snapshot (room, self
//! with its tracks, others with theirs, ICE servers) and a new `reconnectToken`: the old
//! one is spent. Messages the server produced while the socket was down are not replayed;
//! the snapshot replaces them (a client rebuilds its view of the room from it), and an
//! offer of ours still awaiting an answer is sent again, unchanged, after `resumed`. A
//! client whose address changed then offers with an ICE restart. After the window the
//! participant leaves (reason `timeout`) and `resume` gets `resume_failed`, as does a
//! wrong or spent token, or a token for another identity or room: the client then joins
//! again. A client that closes its socket with a close frame has left.
//!
//! **Reconnect hint.** `leave` from the server says whether to reconnect (`canReconnect`),
//! when (`retryAfterMs`) and how (`reconnect`: `resume` here, or `rejoin` through the
//! signaling URL). A draining node sends `reconnect: "rejoin"`: it keeps no sessions, and
//! the signaling URL routes the join to the room's new node.
//! Errors are `error` messages with a stable [`ErrorCode`]; only fatal ones also close the
//! socket, with the code from [`ErrorCode::close_code`].
//! Two closes carry no error code: 4408 when a session sent no frame within the keepalive
//! timeout (or sent no `join` in time), and 1008 when a client does not read its messages
//! and more than the node's queue of them pile up.
//!
//! Video quality: a subscriber receives, per simulcast track, the best layer that fits its
//! downlink estimate, up to the size it renders the track at; before it says
//! (`update_track_settings` `width`/`height`, or a `quality`) it gets the medium layer.
//! `update_track_settings` `disabled: true` pauses the track's video. When the server
//! pauses or resumes a video track it sends `stream_state` (`paused` with `reason`
//! `bandwidth`, `hidden` or `publisher_muted`; `active` with the layer's `quality`); the
//! first allocation of an active stream is not announced, nor is an unsubscribe (that is
//! `subscription_updated`). Bandwidth goes to screen shares first, then to the cameras of
//! the active speakers, then to the rest. Audio is never paused. A simulcast publisher gets
//! `subscribed_layers` (every announced layer with `active`) when the set of layers
//! somebody receives changes; it may stop encoding the inactive ones.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::room::Codec;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Frames larger than this are refused with [`ErrorCode::MessageTooLarge`].
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Largest data-message payload, in bytes after base64 decoding.
pub const MAX_DATA_PAYLOAD_BYTES: usize = 15 * 1024;

/// A message from a client to media-node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Join the room named in the access token.
    Join(JoinRequest),
    /// Rejoin after a lost connection, keeping identity and tracks.
    Resume(ResumeRequest),
    /// An SDP offer (client-initiated renegotiation, e.g. after `publish_track`).
    Offer(SessionDescription),
    /// An SDP answer to a server offer.
    Answer(SessionDescription),
    /// A trickled ICE candidate.
    Trickle(Trickle),
    /// Announce a track before adding it to the peer connection.
    PublishTrack(PublishTrackRequest),
    /// Stop publishing a track.
    UnpublishTrack(TrackRef),
    /// Subscribe to or unsubscribe from tracks (with auto-subscribe off, or to pick a quality).
    UpdateSubscription(UpdateSubscription),
    /// How subscribed video tracks are shown (adaptive stream): rendered size, hidden,
    /// best quality wanted. Feeds the server's layer allocation.
    UpdateTrackSettings(UpdateTrackSettings),
    /// Mute or unmute one of the client's own tracks.
    MuteTrack(MuteTrack),
    /// Change the client's own name or metadata (needs the right to do so in the token).
    UpdateMetadata(UpdateMetadata),
    /// Send a data message to the room or to named participants.
    Data(DataMessage),
    /// Leave the room.
    Leave(LeaveRequest),
    /// Keepalive.
    Ping(Ping),
    /// Answer to a server `ping`.
    Pong(Ping),
}

/// A message from media-node to a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The join succeeded.
    Joined(JoinResponse),
    /// The resume succeeded; the state is current as of now.
    Resumed(JoinResponse),
    /// An SDP offer: the server adds or removes subscribed tracks. Sent again unchanged
    /// (same `id`) while unanswered; withdrawn when the client's own offer crosses it
    /// (glare: the server yields and offers again under a new `id`).
    Offer(SessionDescription),
    /// An SDP answer to the client's offer.
    Answer(SessionDescription),
    /// A trickled ICE candidate of the server.
    Trickle(Trickle),
    /// A `publish_track` was accepted.
    TrackPublished(TrackPublished),
    /// A track of this client was unpublished (by itself or an admin).
    TrackUnpublished(TrackRef),
    /// Someone joined.
    ParticipantJoined(ParticipantEvent),
    /// Someone left.
    ParticipantLeft(ParticipantLeft),
    /// Someone's name, metadata, tracks or permissions changed.
    ParticipantUpdated(ParticipantEvent),
    /// A track was muted or unmuted.
    TrackMuted(TrackMuted),
    /// A subscription changed state (subscribed, unsubscribed, or failed with a reason).
    SubscriptionUpdated(SubscriptionUpdated),
    /// A subscribed video track's media was paused or resumed by the server (bandwidth,
    /// hidden), or changed layer.
    StreamState(StreamState),
    /// To a publisher (dynacast): which layers of its track somebody receives; the others
    /// need not be encoded (`RTCRtpEncodingParameters.active`). Sent on change only.
    SubscribedLayers(SubscribedLayers),
    /// The room's metadata or settings changed.
    RoomUpdated(RoomUpdated),
    /// A data message from another participant.
    Data(DataReceived),
    /// The room's active speakers changed: who is speaking now, loudest first (sent to
    /// everyone in the room, at most every 300 ms, only on change).
    ActiveSpeakers(ActiveSpeakers),
    /// Connection quality changed for one or more participants of the room (sent to
    /// everyone in the room, only on change).
    ConnectionQuality(ConnectionQualityUpdate),
    /// The server ends the session.
    Leave(ServerLeave),
    /// Keepalive.
    Ping(Ping),
    /// Answer to a client `ping`.
    Pong(Ping),
    /// A request failed.
    Error(ErrorMessage),
}

/// `join`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    /// The protocol version the client speaks.
    pub protocol_version: u32,
    /// Subscribe to every published track automatically.
    #[serde(default = "default_true")]
    pub auto_subscribe: bool,
    /// The client library, for logs and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk: Option<SdkInfo>,
}

fn default_true() -> bool {
    true
}

impl Default for JoinRequest {
    fn default() -> Self {
        Self { protocol_version: PROTOCOL_VERSION, auto_subscribe: true, sdk: None }
    }
}

/// The client library.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SdkInfo {
    /// Library name (`js`, `rust`, …).
    pub name: String,
    /// Library version.
    pub version: String,
}

/// `resume`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResumeRequest {
    /// The participant sid from `joined`.
    pub participant_sid: String,
    /// The `reconnectToken` from `joined`.
    pub reconnect_token: String,
}

/// `joined` / `resumed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    /// The room.
    pub room: RoomInfo,
    /// The client itself.
    pub participant: ParticipantInfo,
    /// Everyone else who is visible.
    pub other_participants: Vec<ParticipantInfo>,
    /// STUN/TURN servers with short-lived credentials.
    pub ice_servers: Vec<IceServer>,
    /// `relay` when the cluster sends all media through TURN (Gateway mode).
    pub ice_transport_policy: IceTransportPolicy,
    /// The protocol version the server speaks.
    pub protocol_version: u32,
    /// The server's version string.
    pub server_version: String,
    /// The node serving this session (for support logs).
    pub node: String,
    /// Send a `ping` at least this often.
    pub ping_interval_seconds: u32,
    /// The server drops the session after this long without a frame.
    pub ping_timeout_seconds: u32,
    /// Present this in `resume` after a lost connection.
    pub reconnect_token: String,
}

/// A STUN or TURN server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URIs.
    pub urls: Vec<String>,
    /// TURN username (REST API form: `<expiry>:<identity>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// RTCIceTransportPolicy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IceTransportPolicy {
    /// Any candidate.
    All,
    /// TURN relay candidates only.
    Relay,
}

/// A room as participants see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomInfo {
    /// Server-assigned id of this room instance.
    pub sid: String,
    /// The room's name.
    pub name: String,
    /// Application data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// Participant limit; 0 means none.
    pub max_participants: u32,
    /// Seconds an empty room stays open.
    pub empty_timeout_seconds: u32,
    /// Participants connected now.
    pub num_participants: u32,
    /// Codecs negotiated in this room.
    pub enabled_codecs: Vec<Codec>,
    /// When the room opened, Unix milliseconds.
    pub created_at_ms: u64,
}

/// A participant as others see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantInfo {
    /// Server-assigned id of this session.
    pub sid: String,
    /// The identity from the token.
    pub identity: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Application data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// Where the participant is in its session.
    pub state: ParticipantState,
    /// Published tracks.
    #[serde(default)]
    pub tracks: Vec<TrackInfo>,
    /// What the participant may do.
    pub permission: ParticipantPermission,
    /// When the participant joined, Unix milliseconds.
    pub joined_at_ms: u64,
}

/// A participant's session state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantState {
    /// Signaling connected, media not yet.
    Joining,
    /// In the room, media connected.
    Joined,
    /// Publishing media.
    Active,
    /// Gone (the last state a `participant_left` carries).
    Disconnected,
}

/// The permissions a participant's token grants, as others see them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantPermission {
    /// May publish.
    pub can_publish: bool,
    /// May subscribe.
    pub can_subscribe: bool,
    /// May send data.
    pub can_publish_data: bool,
    /// Invisible to others.
    pub hidden: bool,
}

/// A published track.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackInfo {
    /// Server-assigned track id.
    pub sid: String,
    /// Name the publisher gave it.
    pub name: String,
    /// Audio or video.
    pub kind: TrackKind,
    /// What it captures.
    pub source: TrackSource,
    /// Muted by its publisher.
    pub muted: bool,
    /// Negotiated codec, once known (`video/VP8`, `audio/opus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Video width of the top layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Video height of the top layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Simulcast layers, lowest first; empty for a single-layer track.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<SimulcastLayer>,
}

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

/// What a track captures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    /// A camera.
    Camera,
    /// A microphone.
    Microphone,
    /// A shared screen.
    ScreenShare,
    /// A shared screen's audio.
    ScreenShareAudio,
    /// Anything else.
    Unknown,
}

impl TrackSource {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackSource::Camera => "camera",
            TrackSource::Microphone => "microphone",
            TrackSource::ScreenShare => "screen_share",
            TrackSource::ScreenShareAudio => "screen_share_audio",
            TrackSource::Unknown => "unknown",
        }
    }
}

/// One simulcast encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimulcastLayer {
    /// The RTP stream id (`q`, `h`, `f`).
    pub rid: String,
    /// Its quality rank.
    pub quality: VideoQuality,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bitrate cap, bits/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bitrate_bps: Option<u32>,
}

/// A simulcast quality.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VideoQuality {
    /// Lowest layer.
    Low,
    /// Middle layer.
    Medium,
    /// Top layer.
    High,
}

/// `offer` / `answer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionDescription {
    /// The SDP.
    pub sdp: String,
    /// Increases with each offer of the sender (a re-sent offer keeps its id); an answer
    /// repeats its offer's id, so stale answers after glare are recognised.
    #[serde(default)]
    pub id: u32,
}

/// `trickle`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trickle {
    /// The candidate; `null` marks the end of candidates.
    pub candidate: Option<IceCandidate>,
}

/// RTCIceCandidateInit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    /// The `candidate:` line.
    pub candidate: String,
    /// The media stream id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// The m-line index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
    /// The ICE ufrag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// `publish_track`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishTrackRequest {
    /// The client's own id for the track (its MediaStreamTrack id), echoed in
    /// `track_published`.
    pub cid: String,
    /// A name for others to see.
    #[serde(default)]
    pub name: String,
    /// Audio or video.
    pub kind: TrackKind,
    /// What it captures.
    #[serde(default = "default_source")]
    pub source: TrackSource,
    /// Start muted.
    #[serde(default)]
    pub muted: bool,
    /// Video width of the top layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Video height of the top layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Simulcast layers the client will send.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<SimulcastLayer>,
}

fn default_source() -> TrackSource {
    TrackSource::Unknown
}

/// `track_published`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackPublished {
    /// The `cid` of the request.
    pub cid: String,
    /// The track as others will see it.
    pub track: TrackInfo,
}

/// Names a track.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackRef {
    /// The track sid.
    pub track_sid: String,
}

/// `update_subscription`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateSubscription {
    /// The tracks.
    pub track_sids: Vec<String>,
    /// Subscribe (true) or unsubscribe (false).
    pub subscribe: bool,
    /// The simulcast layer wanted, for video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<VideoQuality>,
}

/// `update_track_settings`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateTrackSettings {
    /// The subscribed tracks these settings are for.
    pub track_sids: Vec<String>,
    /// Not shown (hidden element, or switched off): its video is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Rendered width in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Rendered height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// The best layer wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<VideoQuality>,
}

/// Whether a subscribed video track's media flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamStateKind {
    /// Media flows.
    Active,
    /// Paused by the server; `reason` says why.
    Paused,
}

/// Why a stream is paused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamPauseReason {
    /// The subscriber's estimated bandwidth does not fit even the lowest layer.
    Bandwidth,
    /// The subscriber said it is not shown (`update_track_settings` `disabled`).
    Hidden,
    /// The publisher muted the track.
    PublisherMuted,
}

impl StreamPauseReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamPauseReason::Bandwidth => "bandwidth",
            StreamPauseReason::Hidden => "hidden",
            StreamPauseReason::PublisherMuted => "publisher_muted",
        }
    }
}

/// `stream_state`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamState {
    /// The track.
    pub track_sid: String,
    /// Its publisher.
    pub participant_sid: String,
    /// Active or paused.
    pub state: StreamStateKind,
    /// Why it is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<StreamPauseReason>,
    /// The layer being sent, when active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<VideoQuality>,
}

/// One layer in `subscribed_layers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscribedLayer {
    /// The layer's rid.
    pub rid: String,
    /// Its quality.
    pub quality: VideoQuality,
    /// Somebody receives it (or is switching to it): keep encoding it.
    pub active: bool,
}

/// `subscribed_layers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscribedLayers {
    /// The publisher's track.
    pub track_sid: String,
    /// Every announced layer and whether it is needed.
    pub layers: Vec<SubscribedLayer>,
}

/// `subscription_updated`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionUpdated {
    /// The track.
    pub track_sid: String,
    /// Its publisher.
    pub participant_sid: String,
    /// Whether media for it now flows to this client.
    pub subscribed: bool,
    /// Why a subscription failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorCode>,
}

/// `mute_track`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MuteTrack {
    /// The track.
    pub track_sid: String,
    /// Muted or not.
    pub muted: bool,
}

/// `track_muted`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackMuted {
    /// The publisher.
    pub participant_sid: String,
    /// The track.
    pub track_sid: String,
    /// Muted or not.
    pub muted: bool,
}

/// `update_metadata`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateMetadata {
    /// New display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// `participant_joined` / `participant_updated`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantEvent {
    /// The participant, as of now.
    pub participant: ParticipantInfo,
}

/// `participant_left`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantLeft {
    /// The participant's sid.
    pub participant_sid: String,
    /// The participant's identity.
    pub identity: String,
    /// Why.
    pub reason: LeaveReason,
}

/// `room_updated`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomUpdated {
    /// The room, as of now.
    pub room: RoomInfo,
}

/// Reliable (ordered, retransmitted) or lossy (unordered, no retransmits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// Ordered and retransmitted.
    Reliable,
    /// Latest wins; may be dropped.
    Lossy,
}

/// `data` from a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataMessage {
    /// Reliable or lossy.
    pub kind: DataKind,
    /// An application-chosen topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The payload, base64 (standard alphabet).
    pub payload: String,
    /// Deliver only to these identities; empty means everyone in the room.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_identities: Vec<String>,
}

/// `data` to a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataReceived {
    /// The sender's sid.
    pub participant_sid: String,
    /// The sender's identity.
    pub identity: String,
    /// Reliable or lossy.
    pub kind: DataKind,
    /// The topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The payload, base64.
    pub payload: String,
}

/// `active_speakers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveSpeakers {
    /// The participants speaking now, loudest first; empty when nobody speaks.
    pub speakers: Vec<SpeakerInfo>,
}

/// One active speaker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpeakerInfo {
    /// The participant.
    pub participant_sid: String,
    /// Loudness, 0.0 (silence) to 1.0 (full scale), from the RFC 6464 audio level of
    /// its audio track, smoothed over about a second.
    pub level: f32,
}

/// `connection_quality`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionQualityUpdate {
    /// The participants whose quality changed.
    pub updates: Vec<ConnectionQualityInfo>,
}

/// One participant's connection quality.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionQualityInfo {
    /// The participant.
    pub participant_sid: String,
    /// The verdict.
    pub quality: ConnectionQuality,
    /// A mean-opinion-style score from 1.0 (unusable) to 5.0 (perfect), from packet
    /// loss, round-trip time and jitter of its media in both directions.
    pub score: f32,
}

/// A participant's connection as the server measures it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionQuality {
    /// Neither media nor transport feedback for several seconds: the connection is down.
    Lost,
    /// Score below 3.0: audible artefacts, frozen video.
    Poor,
    /// Score from 3.0 to below 4.0.
    Good,
    /// Score 4.0 or above.
    Excellent,
}

impl ConnectionQuality {
    /// The wire name, fit for a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionQuality::Lost => "lost",
            ConnectionQuality::Poor => "poor",
            ConnectionQuality::Good => "good",
            ConnectionQuality::Excellent => "excellent",
        }
    }
}

/// `leave` from a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct LeaveRequest {
    /// Free-form, for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `leave` from the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerLeave {
    /// Why.
    pub reason: LeaveReason,
    /// Whether reconnecting (through the signaling Service) can succeed.
    pub can_reconnect: bool,
    /// Wait at least this long before reconnecting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// How to reconnect, when `canReconnect` is true: `resume` on this node, or `rejoin`
    /// (a new `join` through the signaling URL, which routes to the room's new node).
    /// Absent when reconnecting cannot succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect: Option<Reconnect>,
    /// For people.
    pub message: String,
}

/// How a client told to leave reconnects (`leave.reconnect`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reconnect {
    /// Open a new socket to the same signaling URL and send `resume`: the session, its
    /// tracks and its subscriptions are kept here for the resume window.
    Resume,
    /// Open a new socket to the signaling URL and send `join`: this node keeps nothing
    /// (it is draining); the signaling URL routes the join to the room's new node.
    Rejoin,
}

/// Why a participant left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// The client asked to.
    ClientRequest,
    /// The client stopped answering.
    Timeout,
    /// The same identity joined again elsewhere.
    DuplicateIdentity,
    /// An admin removed the participant.
    Removed,
    /// The room was closed (deleted, empty timeout, or by an admin).
    RoomClosed,
    /// The node is draining; reconnect to be placed elsewhere.
    NodeDraining,
    /// The room moved to another node; reconnect.
    Migration,
    /// The server is shutting down.
    ServerShutdown,
}

/// `ping` / `pong`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ping {
    /// The sender's clock, Unix milliseconds; `pong` echoes the `ping`'s.
    pub timestamp_ms: u64,
    /// The sender's last measured round-trip time, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<u32>,
}

/// `error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorMessage {
    /// Stable and machine-readable.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
    /// The `type` of the request that failed, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_type: Option<String>,
    /// Retry after this long (rate limits, draining nodes, placement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// Stable error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not a valid message (bad JSON, missing field, wrong type).
    BadRequest,
    /// The `type` is not one this server knows.
    UnknownMessage,
    /// The frame is larger than [`MAX_MESSAGE_BYTES`].
    MessageTooLarge,
    /// Too many messages per second.
    RateLimited,
    /// The token is missing, invalid or expired.
    Unauthorized,
    /// The token does not allow this.
    PermissionDenied,
    /// The room does not exist and may not be created.
    RoomNotFound,
    /// The room has `maxParticipants` participants.
    RoomFull,
    /// The room is closed.
    RoomClosed,
    /// The room was not placed on a node in time.
    PlacementTimeout,
    /// This node takes no new sessions; retry.
    NodeDraining,
    /// This node is at its capacity (rooms, participants or bandwidth); retry after
    /// `retryAfterMs`, when the room may have been placed elsewhere or load has gone down.
    NodeFull,
    /// The track's codec is not allowed in this room.
    CodecNotAllowed,
    /// A subscriber cannot receive the publisher's codec (its answer, or its own offer,
    /// has no payload type for it): carried in `subscription_updated.error`.
    CodecNotSupported,
    /// No such track.
    TrackNotFound,
    /// The request needs a joined session.
    NotJoined,
    /// `join` or `resume` was sent twice.
    AlreadyJoined,
    /// The session to resume is gone; join again.
    ResumeFailed,
    /// The SDP could not be applied.
    NegotiationFailed,
    /// A server fault.
    Internal,
}

impl ErrorCode {
    /// The wire name (`room_full`), fit for a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownMessage => "unknown_message",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::RoomNotFound => "room_not_found",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::RoomClosed => "room_closed",
            ErrorCode::PlacementTimeout => "placement_timeout",
            ErrorCode::NodeDraining => "node_draining",
            ErrorCode::NodeFull => "node_full",
            ErrorCode::CodecNotAllowed => "codec_not_allowed",
            ErrorCode::CodecNotSupported => "codec_not_supported",
            ErrorCode::TrackNotFound => "track_not_found",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::ResumeFailed => "resume_failed",
            ErrorCode::NegotiationFailed => "negotiation_failed",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether the server closes the socket after sending this error.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            ErrorCode::MessageTooLarge
                | ErrorCode::RateLimited
                | ErrorCode::Unauthorized
                | ErrorCode::RoomNotFound
                | ErrorCode::RoomFull
                | ErrorCode::RoomClosed
                | ErrorCode::PlacementTimeout
                | ErrorCode::NodeDraining
                | ErrorCode::NodeFull
                | ErrorCode::ResumeFailed
        )
    }

    /// The WebSocket close code used when a fatal error ends the session: 1009 and 1011
    /// from RFC 6455, otherwise 4000 + the nearest HTTP status.
    pub fn close_code(self) -> u16 {
        match self {
            ErrorCode::MessageTooLarge => 1009,
            ErrorCode::Internal => 1011,
            ErrorCode::BadRequest
            | ErrorCode::UnknownMessage
            | ErrorCode::NegotiationFailed
            | ErrorCode::CodecNotSupported => 4400,
            ErrorCode::Unauthorized => 4401,
            ErrorCode::PermissionDenied | ErrorCode::CodecNotAllowed => 4403,
            ErrorCode::RoomNotFound | ErrorCode::TrackNotFound | ErrorCode::ResumeFailed => 4404,
            ErrorCode::NotJoined | ErrorCode::AlreadyJoined => 4409,
            ErrorCode::RoomClosed => 4410,
            ErrorCode::RoomFull | ErrorCode::RateLimited => 4429,
            ErrorCode::NodeDraining | ErrorCode::NodeFull => 4503,
            ErrorCode::PlacementTimeout => 4504,
        }
    }
}

impl ClientMessage {
    /// Every `type` a client may send.
    pub const TYPES: [&'static str; 15] = [
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

    /// Parse one text frame, with a client-facing error: too large, not JSON, unknown
    /// `type`, or a known `type` with bad fields.
    pub fn parse(frame: &str) -> Result<Self, ErrorMessage> {
        if frame.len() > MAX_MESSAGE_BYTES {
            return Err(ErrorMessage::new(
                ErrorCode::MessageTooLarge,
                format!("frame is {} bytes; the limit is {MAX_MESSAGE_BYTES}", frame.len()),
            ));
        }
        let value: serde_json::Value = serde_json::from_str(frame)
            .map_err(|e| ErrorMessage::new(ErrorCode::BadRequest, format!("frame is not JSON: {e}")))?;
        let Some(kind) = value.get("type").and_then(|t| t.as_str()).map(str::to_owned) else {
            return Err(ErrorMessage::new(ErrorCode::BadRequest, "frame has no string \"type\" field"));
        };
        if !Self::TYPES.contains(&kind.as_str()) {
            return Err(ErrorMessage::new(ErrorCode::UnknownMessage, format!("unknown message type {kind:?}")));
        }
        serde_json::from_value(value).map_err(|e| ErrorMessage {
            code: ErrorCode::BadRequest,
            message: format!("invalid {kind} message: {e}"),
            request_type: Some(kind),
            retry_after_ms: None,
        })
    }

    /// The `type` tag of this message.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Join(_) => "join",
            ClientMessage::Resume(_) => "resume",
            ClientMessage::Offer(_) => "offer",
            ClientMessage::Answer(_) => "answer",
            ClientMessage::Trickle(_) => "trickle",
            ClientMessage::PublishTrack(_) => "publish_track",
            ClientMessage::UnpublishTrack(_) => "unpublish_track",
            ClientMessage::UpdateSubscription(_) => "update_subscription",
            ClientMessage::UpdateTrackSettings(_) => "update_track_settings",
            ClientMessage::MuteTrack(_) => "mute_track",
            ClientMessage::UpdateMetadata(_) => "update_metadata",
            ClientMessage::Data(_) => "data",
            ClientMessage::Leave(_) => "leave",
            ClientMessage::Ping(_) => "ping",
            ClientMessage::Pong(_) => "pong",
        }
    }
}

impl ErrorMessage {
    /// An error with a code and a human message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), request_type: None, retry_after_ms: None }
    }
}

impl std::fmt::Display for ErrorMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

/// Both directions, for the schema document's root.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)] // never built: it only shapes the schema
enum AnyMessage {
    Client(ClientMessage),
    Server(ServerMessage),
}

/// The JSON Schema (2020-12) of protocol v1, for SDK authors: the root accepts any
/// message; `$defs/ClientMessage` and `$defs/ServerMessage` are the two directions.
pub fn protocol_schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(AnyMessage)).expect("schema serializes");
    let root = schema.as_object_mut().expect("schema is an object");
    root.insert("title".into(), "Switchyard signaling protocol v1".into());
    root.insert(
        "description".into(),
        "JSON text frames over the /rtc WebSocket. Every frame is one object with a snake_case `type`.".into(),
    );
    root.insert("$id".into(), "https://switchyard.dev/schema/signal-v1.schema.json".into());
    schema
}

/// [`protocol_schema`] as pretty JSON with a trailing newline.
pub fn protocol_schema_json() -> String {
    let mut s = serde_json::to_string_pretty(&protocol_schema()).expect("schema serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track() -> TrackInfo {
        TrackInfo {
            sid: "TR_1".into(),
            name: "cam".into(),
            kind: TrackKind::Video,
            source: TrackSource::Camera,
            muted: false,
            mime_type: Some("video/VP8".into()),
            width: Some(1280),
            height: Some(720),
            layers: vec![
                SimulcastLayer {
                    rid: "q".into(),
                    quality: VideoQuality::Low,
                    width: 320,
                    height: 180,
                    max_bitrate_bps: Some(150_000),
                },
                SimulcastLayer {
                    rid: "f".into(),
                    quality: VideoQuality::High,
                    width: 1280,
                    height: 720,
                    max_bitrate_bps: None,
                },
            ],
        }
    }

    fn participant() -> ParticipantInfo {
        ParticipantInfo {
            sid: "PA_1".into(),
            identity: "alice".into(),
            name: Some("Alice".into()),
            metadata: None,
            state: ParticipantState::Active,
            tracks: vec![track()],
            permission: ParticipantPermission {
                can_publish: true,
                can_subscribe: true,
                can_publish_data: false,
                hidden: false,
            },
            joined_at_ms: 1_700_000_000_000,
        }
    }

    fn room() -> RoomInfo {
        RoomInfo {
            sid: "RM_1".into(),
            name: "standup".into(),
            metadata: Some("m".into()),
            max_participants: 10,
            empty_timeout_seconds: 300,
            num_participants: 2,
            enabled_codecs: vec![Codec::Opus, Codec::VP9],
            created_at_ms: 1_700_000_000_000,
        }
    }

    fn join_response() -> JoinResponse {
        JoinResponse {
            room: room(),
            participant: participant(),
            other_participants: vec![participant()],
            ice_servers: vec![
                IceServer { urls: vec!["stun:turn.example.com:3478".into()], username: None, credential: None },
                IceServer {
                    urls: vec!["turn:turn.example.com:3478?transport=udp".into(), "turns:turn.example.com:443".into()],
                    username: Some("1800000000:alice".into()),
                    credential: Some("c2VjcmV0".into()),
                },
            ],
            ice_transport_policy: IceTransportPolicy::Relay,
            protocol_version: PROTOCOL_VERSION,
            server_version: "0.1.0".into(),
            node: "edge-media-0".into(),
            ping_interval_seconds: 10,
            ping_timeout_seconds: 30,
            reconnect_token: "rt".into(),
        }
    }

    fn sdp() -> SessionDescription {
        SessionDescription { sdp: "v=0\r\n".into(), id: 3 }
    }

    fn candidate() -> Trickle {
        Trickle {
            candidate: Some(IceCandidate {
                candidate: "candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_m_line_index: Some(0),
                username_fragment: Some("abcd".into()),
            }),
        }
    }

    fn client_samples() -> Vec<ClientMessage> {
        vec![
            ClientMessage::Join(JoinRequest {
                protocol_version: 1,
                auto_subscribe: false,
                sdk: Some(SdkInfo { name: "js".into(), version: "0.1.0".into() }),
            }),
            ClientMessage::Resume(ResumeRequest { participant_sid: "PA_1".into(), reconnect_token: "rt".into() }),
            ClientMessage::Offer(sdp()),
            ClientMessage::Answer(sdp()),
            ClientMessage::Trickle(candidate()),
            ClientMessage::Trickle(Trickle { candidate: None }),
            ClientMessage::PublishTrack(PublishTrackRequest {
                cid: "local-1".into(),
                name: "cam".into(),
                kind: TrackKind::Video,
                source: TrackSource::Camera,
                muted: false,
                width: Some(1280),
                height: Some(720),
                layers: track().layers,
            }),
            ClientMessage::UnpublishTrack(TrackRef { track_sid: "TR_1".into() }),
            ClientMessage::UpdateSubscription(UpdateSubscription {
                track_sids: vec!["TR_1".into()],
                subscribe: true,
                quality: Some(VideoQuality::Medium),
            }),
            ClientMessage::UpdateTrackSettings(UpdateTrackSettings {
                track_sids: vec!["TR_1".into()],
                disabled: Some(false),
                width: Some(640),
                height: Some(360),
                quality: None,
            }),
            ClientMessage::MuteTrack(MuteTrack { track_sid: "TR_1".into(), muted: true }),
            ClientMessage::UpdateMetadata(UpdateMetadata { name: Some("Al".into()), metadata: Some("{}".into()) }),
            ClientMessage::Data(DataMessage {
                kind: DataKind::Lossy,
                topic: Some("cursor".into()),
                payload: "aGk=".into(),
                destination_identities: vec!["bob".into()],
            }),
            ClientMessage::Leave(LeaveRequest { reason: Some("bye".into()) }),
            ClientMessage::Ping(Ping { timestamp_ms: 5, rtt_ms: Some(12) }),
            ClientMessage::Pong(Ping { timestamp_ms: 5, rtt_ms: None }),
        ]
    }

    fn server_samples() -> Vec<ServerMessage> {
        vec![
            ServerMessage::Joined(join_response()),
            ServerMessage::Resumed(join_response()),
            ServerMessage::Offer(sdp()),
            ServerMessage::Answer(sdp()),
            ServerMessage::Trickle(candidate()),
            ServerMessage::TrackPublished(TrackPublished { cid: "local-1".into(), track: track() }),
            ServerMessage::TrackUnpublished(TrackRef { track_sid: "TR_1".into() }),
            ServerMessage::ParticipantJoined(ParticipantEvent { participant: participant() }),
            ServerMessage::ParticipantLeft(ParticipantLeft {
                participant_sid: "PA_1".into(),
                identity: "alice".into(),
                reason: LeaveReason::Timeout,
            }),
            ServerMessage::ParticipantUpdated(ParticipantEvent { participant: participant() }),
            ServerMessage::TrackMuted(TrackMuted {
                participant_sid: "PA_1".into(),
                track_sid: "TR_1".into(),
                muted: true,
            }),
            ServerMessage::SubscriptionUpdated(SubscriptionUpdated {
                track_sid: "TR_1".into(),
                participant_sid: "PA_1".into(),
                subscribed: false,
                error: Some(ErrorCode::PermissionDenied),
            }),
            ServerMessage::StreamState(StreamState {
                track_sid: "TR_1".into(),
                participant_sid: "PA_1".into(),
                state: StreamStateKind::Paused,
                reason: Some(StreamPauseReason::Bandwidth),
                quality: None,
            }),
            ServerMessage::SubscribedLayers(SubscribedLayers {
                track_sid: "TR_1".into(),
                layers: vec![SubscribedLayer { rid: "q".into(), quality: VideoQuality::Low, active: false }],
            }),
            ServerMessage::RoomUpdated(RoomUpdated { room: room() }),
            ServerMessage::Data(DataReceived {
                participant_sid: "PA_1".into(),
                identity: "alice".into(),
                kind: DataKind::Reliable,
                topic: None,
                payload: "aGk=".into(),
            }),
            ServerMessage::ActiveSpeakers(ActiveSpeakers {
                speakers: vec![SpeakerInfo { participant_sid: "PA_1".into(), level: 0.5 }],
            }),
            ServerMessage::ConnectionQuality(ConnectionQualityUpdate {
                updates: vec![ConnectionQualityInfo {
                    participant_sid: "PA_1".into(),
                    quality: ConnectionQuality::Good,
                    score: 3.5,
                }],
            }),
            ServerMessage::Leave(ServerLeave {
                reason: LeaveReason::NodeDraining,
                can_reconnect: true,
                retry_after_ms: Some(500),
                reconnect: Some(Reconnect::Rejoin),
                message: "node is draining".into(),
            }),
            ServerMessage::Ping(Ping { timestamp_ms: 9, rtt_ms: None }),
            ServerMessage::Pong(Ping { timestamp_ms: 9, rtt_ms: None }),
            ServerMessage::Error(ErrorMessage {
                code: ErrorCode::RoomFull,
                message: "room standup is full (10 participants)".into(),
                request_type: Some("join".into()),
                retry_after_ms: None,
            }),
        ]
    }

    /// Exhaustive: adding a server message without a sample fails to compile here.
    fn server_type(m: &ServerMessage) -> &'static str {
        match m {
            ServerMessage::Joined(_) => "joined",
            ServerMessage::Resumed(_) => "resumed",
            ServerMessage::Offer(_) => "offer",
            ServerMessage::Answer(_) => "answer",
            ServerMessage::Trickle(_) => "trickle",
            ServerMessage::TrackPublished(_) => "track_published",
            ServerMessage::TrackUnpublished(_) => "track_unpublished",
            ServerMessage::ParticipantJoined(_) => "participant_joined",
            ServerMessage::ParticipantLeft(_) => "participant_left",
            ServerMessage::ParticipantUpdated(_) => "participant_updated",
            ServerMessage::TrackMuted(_) => "track_muted",
            ServerMessage::SubscriptionUpdated(_) => "subscription_updated",
            ServerMessage::StreamState(_) => "stream_state",
            ServerMessage::SubscribedLayers(_) => "subscribed_layers",
            ServerMessage::RoomUpdated(_) => "room_updated",
            ServerMessage::Data(_) => "data",
            ServerMessage::ActiveSpeakers(_) => "active_speakers",
            ServerMessage::ConnectionQuality(_) => "connection_quality",
            ServerMessage::Leave(_) => "leave",
            ServerMessage::Ping(_) => "ping",
            ServerMessage::Pong(_) => "pong",
            ServerMessage::Error(_) => "error",
        }
    }

    #[test]
    fn every_client_message_round_trips_with_its_type_tag() {
        let samples = client_samples();
        let mut seen: Vec<&str> = samples.iter().map(ClientMessage::type_name).collect();
        seen.dedup();
        assert_eq!(seen, ClientMessage::TYPES, "one sample per client message type");
        for m in samples {
            let json = serde_json::to_string(&m).unwrap();
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(value["type"], m.type_name(), "{json}");
            assert_eq!(ClientMessage::parse(&json).unwrap(), m, "{json}");
        }
    }

    #[test]
    fn every_server_message_round_trips_with_its_type_tag() {
        let samples = server_samples();
        let mut tags: Vec<&str> = samples.iter().map(server_type).collect();
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), 22, "one sample per server message type");
        for m in samples {
            let json = serde_json::to_string(&m).unwrap();
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(value["type"], server_type(&m), "{json}");
            assert_eq!(serde_json::from_str::<ServerMessage>(&json).unwrap(), m, "{json}");
        }
    }

    #[test]
    fn wire_format_is_pinned() {
        let m = ClientMessage::MuteTrack(MuteTrack { track_sid: "TR_1".into(), muted: true });
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"type":"mute_track","trackSid":"TR_1","muted":true}"#);
        let join: ClientMessage = ClientMessage::parse(r#"{"type":"join","protocolVersion":1}"#).unwrap();
        assert_eq!(join, ClientMessage::Join(JoinRequest::default()), "autoSubscribe defaults to true");
        let e = ServerMessage::Error(ErrorMessage::new(ErrorCode::RateLimited, "slow down"));
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"error","code":"rate_limited","message":"slow down"}"#
        );
    }

    #[test]
    fn parse_errors_are_specific() {
        let too_big = format!(r#"{{"type":"leave","reason":"{}"}}"#, "x".repeat(MAX_MESSAGE_BYTES));
        assert_eq!(ClientMessage::parse(&too_big).unwrap_err().code, ErrorCode::MessageTooLarge);

        let e = ClientMessage::parse("{not json").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.starts_with("frame is not JSON"), "{}", e.message);

        let e = ClientMessage::parse(r#"{"sdp":"v=0"}"#).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::BadRequest, "frame has no string \"type\" field"));

        let e = ClientMessage::parse(r#"{"type":"teleport"}"#).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::UnknownMessage, "unknown message type \"teleport\""));

        let e = ClientMessage::parse(r#"{"type":"mute_track","trackSid":"TR_1"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(e.request_type.as_deref(), Some("mute_track"));
        assert!(e.message.contains("missing field `muted`"), "{}", e.message);

        // A server-only message sent by a client is unknown to the server.
        let e = ClientMessage::parse(r#"{"type":"joined"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownMessage);
    }

    #[test]
    fn close_codes_are_in_the_application_range_or_rfc6455() {
        for code in [
            ErrorCode::Unauthorized,
            ErrorCode::RoomFull,
            ErrorCode::NodeDraining,
            ErrorCode::NodeFull,
            ErrorCode::PlacementTimeout,
        ] {
            assert!(code.is_fatal());
            assert!((4000..5000).contains(&code.close_code()), "{code:?}");
        }
        assert_eq!(ErrorCode::MessageTooLarge.close_code(), 1009);
        assert!(!ErrorCode::BadRequest.is_fatal(), "a malformed frame does not end the session");
        assert!(!ErrorCode::UnknownMessage.is_fatal());
    }

    #[test]
    fn as_str_is_the_wire_name() {
        for code in [ErrorCode::BadRequest, ErrorCode::RoomFull, ErrorCode::NegotiationFailed, ErrorCode::Internal] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
        for r in [StreamPauseReason::Bandwidth, StreamPauseReason::Hidden, StreamPauseReason::PublisherMuted] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }

    #[test]
    fn schema_names_both_directions_and_every_type() {
        let schema = protocol_schema();
        let defs = schema["$defs"].as_object().unwrap();
        assert!(defs.contains_key("ClientMessage") && defs.contains_key("ServerMessage"));
        let text = schema.to_string();
        for t in ClientMessage::TYPES {
            assert!(text.contains(&format!(r#""const":"{t}""#)), "schema lacks client type {t}");
        }
        for m in server_samples() {
            let t = server_type(&m);
            assert!(text.contains(&format!(r#""const":"{t}""#)), "schema lacks server type {t}");
        }
    }
}
