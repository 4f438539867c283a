//! The SFU core: rooms, participants, tracks and RTP forwarding, with no sockets and no
//! clock of its own (sans-IO, like the str0m `Rtc`s it owns).
//!
//! ```text
//!  session (WebSocket) ── Command ──►┐
//!  socket ── datagram (proto, src) ──►│ Engine ── Output::Transmit ──► socket
//!  driver ── timeout(now) ───────────►┘        ── Output::Signal ────► session
//!                                               ── Output::Event ─────► webhooks, status
//! ```
//!
//! Rule of the run loop: after any input, call [`Engine::poll_output`] until it returns
//! `None`, then sleep until [`Engine::next_timeout`]. Every participant has one
//! `str0m::Rtc` in RTP mode; the first datagram of a 5-tuple is routed by the ICE ufrag in
//! its STUN `USERNAME`, later ones by the 5-tuple. Forwarding copies no payload: the
//! packet's `Arc<[u8]>` is shared by every subscriber, and only sequence numbers and
//! timestamps are rewritten per subscriber ([`rewrite::Rewriter`]).

mod peer;
pub(crate) mod rewrite;
pub mod stun;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc, RtcConfig};
use switchyard_api::room::Codec;
use switchyard_api::signal::{
    ClientMessage, DataReceived, ErrorCode, ErrorMessage, IceServer, IceTransportPolicy, JoinResponse, LeaveReason,
    MAX_DATA_PAYLOAD_BYTES, ParticipantEvent, ParticipantLeft, ParticipantState, PublishTrackRequest, RoomInfo,
    ServerLeave, ServerMessage, SessionDescription, SubscriptionUpdated, TrackKind, TrackMuted, TrackPublished,
    TrackRef, VideoQuality,
};
use switchyard_api::token::Claims;

use self::peer::{Peer, Published, Sub, SubState};
use self::rewrite::is_keyframe;

/// A participant's id inside one node.
pub type Pid = u64;

/// How often a keyframe may be asked of one publisher track.
const KEYFRAME_THROTTLE: Duration = Duration::from_millis(500);

/// Node-wide settings the engine needs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node's name (reported to clients).
    pub node: String,
    /// UDP addresses advertised as host candidates.
    pub udp_candidates: Vec<SocketAddr>,
    /// TCP addresses advertised as passive host candidates.
    pub tcp_candidates: Vec<SocketAddr>,
    /// Send this policy to clients (`Relay` in Gateway mode).
    pub ice_transport_policy: IceTransportPolicy,
    /// Keepalive interval told to clients.
    pub ping_interval_seconds: u32,
    /// Session timeout told to clients.
    pub ping_timeout_seconds: u32,
}

/// Per-room settings: from the `Room` object, or the node's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomSettings {
    /// 0 means no limit.
    pub max_participants: u32,
    /// How long an empty room stays open.
    pub empty_timeout: Duration,
    /// Codecs negotiated in the room; empty means all.
    pub allowed_codecs: Vec<Codec>,
    /// Application data.
    pub metadata: Option<String>,
}

impl Default for RoomSettings {
    fn default() -> Self {
        Self { max_participants: 0, empty_timeout: Duration::from_secs(300), allowed_codecs: vec![], metadata: None }
    }
}

/// A join, already authenticated by the session.
#[derive(Debug, Clone)]
pub struct JoinArgs {
    /// The new participant's id.
    pub pid: Pid,
    /// The room to join.
    pub room: String,
    /// The verified token claims.
    pub claims: Claims,
    /// Subscribe to everything published.
    pub auto_subscribe: bool,
    /// Create the room if it is not open here.
    pub may_create: bool,
    /// Settings for the room if it is created by this join.
    pub settings: RoomSettings,
    /// STUN/TURN servers for this participant.
    pub ice_servers: Vec<IceServer>,
    /// Token the client presents to `resume`.
    pub reconnect_token: String,
}

/// What a session or the control plane asks of the engine.
#[derive(Debug)]
pub enum Command {
    /// A participant joins.
    Join(Box<JoinArgs>),
    /// A protocol message from a joined participant.
    Client {
        /// Who sent it.
        pid: Pid,
        /// What.
        msg: ClientMessage,
    },
    /// The participant's session ended.
    Leave {
        /// Who.
        pid: Pid,
        /// Why.
        reason: LeaveReason,
    },
    /// Close a room and remove everyone in it.
    CloseRoom {
        /// Which.
        room: String,
    },
    /// Tell everyone to reconnect elsewhere (the node drains).
    Drain,
}

/// Something that happened that the outside world may want to hear of (webhooks,
/// status, metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// A room opened on this node.
    RoomStarted {
        /// The room.
        room: String,
    },
    /// A room closed.
    RoomFinished {
        /// The room.
        room: String,
    },
    /// A participant joined.
    ParticipantJoined {
        /// The room.
        room: String,
        /// The identity.
        identity: String,
    },
    /// A participant left.
    ParticipantLeft {
        /// The room.
        room: String,
        /// The identity.
        identity: String,
    },
    /// A track was published.
    TrackPublished {
        /// The room.
        room: String,
        /// The publisher.
        identity: String,
        /// The track.
        track_sid: String,
    },
}

/// What the engine wants done.
#[derive(Debug)]
pub enum Output {
    /// Send a datagram (or a TCP frame).
    Transmit(str0m::net::Transmit),
    /// Send a message to one participant's session.
    Signal(Pid, Box<ServerMessage>),
    /// The participant is gone: its session should close after flushing; its ICE ufrag
    /// and routes no longer lead anywhere.
    Closed {
        /// Who.
        pid: Pid,
        /// Its ICE ufrag (empty if it never got one).
        ufrag: String,
        /// The 5-tuples that were routed to it.
        routes: Vec<(Protocol, SocketAddr)>,
    },
    /// Something happened.
    Event(RoomEvent),
}

/// Counters the driver exposes as metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct EngineStats {
    /// Rooms open.
    pub rooms: u64,
    /// Participants connected.
    pub participants: u64,
    /// Tracks published.
    pub tracks: u64,
    /// RTP packets received from publishers.
    pub packets_in: u64,
    /// RTP packets written to subscribers.
    pub packets_out: u64,
    /// Payload bytes received from publishers.
    pub bytes_in: u64,
    /// Payload bytes written to subscribers.
    pub bytes_out: u64,
    /// Datagrams no participant claimed.
    pub unrouted: u64,
}

/// One room, for the admin API: who is in it and what flows.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomReport {
    /// The room name.
    pub name: String,
    /// Server-assigned room id.
    pub sid: String,
    /// Participants and their tracks.
    pub participants: Vec<ParticipantReport>,
}

/// One participant, for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantReport {
    /// Participant sid.
    pub sid: String,
    /// Identity.
    pub identity: String,
    /// Published tracks with counters.
    pub tracks: Vec<TrackReport>,
    /// Tracks received, with packets written.
    pub subscriptions: Vec<SubscriptionReport>,
}

/// One published track's counters.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackReport {
    /// Track sid.
    pub sid: String,
    /// Audio or video.
    pub kind: TrackKind,
    /// Muted by its publisher.
    pub muted: bool,
    /// RTP packets received.
    pub packets: u64,
    /// RTP payload bytes received.
    pub bytes: u64,
    /// Keyframes requested from the publisher.
    pub keyframe_requests: u64,
}

/// One subscription's counters.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionReport {
    /// The track.
    pub track_sid: String,
    /// Negotiated and forwarding.
    pub open: bool,
    /// RTP packets written.
    pub packets: u64,
}

struct Room {
    sid: String,
    settings: RoomSettings,
    members: Vec<Pid>,
    created_at_ms: u64,
    empty_since: Option<Instant>,
}

/// The SFU core for a set of rooms (one shard of a node).
pub struct Engine {
    cfg: EngineConfig,
    dtls_cert: str0m::config::DtlsCert,
    rooms: HashMap<String, Room>,
    peers: HashMap<Pid, Peer>,
    ufrags: HashMap<String, Pid>,
    routes: HashMap<(Protocol, SocketAddr), Pid>,
    out: VecDeque<Output>,
    dirty: Vec<Pid>,
    next_id: u64,
    stats: EngineStats,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("rooms", &self.rooms.len()).field("peers", &self.peers.len()).finish()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn random_token(len: usize) -> String {
    switchyard_api::random::token(&mut rand::rng(), len)
}

fn err(code: ErrorCode, message: impl Into<String>, request: &str) -> ServerMessage {
    let mut e = ErrorMessage::new(code, message);
    e.request_type = Some(request.to_owned());
    ServerMessage::Error(e)
}

impl Engine {
    /// A new engine. Installs str0m's crypto provider on first use.
    pub fn new(cfg: EngineConfig) -> Self {
        let provider = str0m::crypto::from_feature_flags();
        let dtls_cert = provider.dtls_provider.generate_certificate().expect("DTLS certificate generation");
        Self {
            cfg,
            dtls_cert,
            rooms: HashMap::new(),
            peers: HashMap::new(),
            ufrags: HashMap::new(),
            routes: HashMap::new(),
            out: VecDeque::new(),
            dirty: Vec::new(),
            next_id: 1,
            stats: EngineStats::default(),
        }
    }

    /// Current counters.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            rooms: self.rooms.len() as u64,
            participants: self.peers.len() as u64,
            tracks: self.peers.values().map(|p| p.published.len() as u64).sum(),
            ..self.stats
        }
    }

    /// Rooms, participants and per-track counters.
    pub fn report(&self) -> Vec<RoomReport> {
        self.rooms
            .iter()
            .map(|(name, r)| RoomReport {
                name: name.clone(),
                sid: r.sid.clone(),
                participants: r
                    .members
                    .iter()
                    .filter_map(|m| self.peers.get(m))
                    .map(|p| ParticipantReport {
                        sid: p.sid.clone(),
                        identity: p.identity.clone(),
                        tracks: p
                            .published
                            .iter()
                            .map(|t| TrackReport {
                                sid: t.sid.clone(),
                                kind: t.kind,
                                muted: t.muted,
                                packets: t.packets,
                                bytes: t.bytes,
                                keyframe_requests: t.keyframe_requests,
                            })
                            .collect(),
                        subscriptions: p
                            .subs
                            .iter()
                            .map(|s| SubscriptionReport {
                                track_sid: s.track_sid.clone(),
                                open: matches!(s.state, SubState::Open(_)),
                                packets: s.packets,
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Names of the open rooms.
    pub fn room_names(&self) -> Vec<String> {
        self.rooms.keys().cloned().collect()
    }

    /// True if `room` is open here.
    pub fn has_room(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// The ICE ufrag → participant pairs, for a driver that routes first packets itself.
    pub fn ufrag_of(&self, pid: Pid) -> Option<&str> {
        self.peers.get(&pid).map(|p| p.ufrag.as_str())
    }

    /// Next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Engine::handle_timeout`] should next be called.
    pub fn next_timeout(&self) -> Option<Instant> {
        let peers = self.peers.values().filter_map(|p| p.next_timeout);
        let rooms = self.rooms.values().filter_map(|r| r.empty_since.map(|t| t + r.settings.empty_timeout));
        peers.chain(rooms).min()
    }

    fn new_sid(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_{}{}", self.next_id, random_token(6))
    }

    fn signal(&mut self, pid: Pid, msg: ServerMessage) {
        if let ServerMessage::Error(e) = &msg
            && e.code == ErrorCode::NegotiationFailed
        {
            tracing::warn!(pid, message = %e.message, "negotiation failed");
        }
        self.out.push_back(Output::Signal(pid, Box::new(msg)));
    }

    fn mark_dirty(&mut self, pid: Pid) {
        if let Some(p) = self.peers.get_mut(&pid)
            && !p.dirty
        {
            p.dirty = true;
            self.dirty.push(pid);
        }
    }

    /// Feed a datagram (UDP) or a de-framed TCP packet. Returns false if no participant
    /// claims it.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> bool {
        let pid = match self.routes.get(&(proto, source)) {
            Some(&pid) => pid,
            None => {
                let Some(&pid) = stun::local_ufrag(data).and_then(|u| self.ufrags.get(u)) else {
                    self.stats.unrouted += 1;
                    return false;
                };
                self.routes.insert((proto, source), pid);
                if let Some(p) = self.peers.get_mut(&pid) {
                    p.routes.push((proto, source));
                }
                pid
            }
        };
        let Ok(contents) = data.try_into() else {
            self.stats.unrouted += 1;
            return false;
        };
        let Some(peer) = self.peers.get_mut(&pid) else { return false };
        let input = Input::Receive(now, Receive { proto, source, destination, contents });
        if let Err(e) = peer.rtc.handle_input(input) {
            tracing::debug!(pid, error = %e, "rtc refused input");
        }
        self.mark_dirty(pid);
        self.drive(now);
        true
    }

    /// Advance time.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<Pid> =
            self.peers.iter().filter(|(_, p)| p.next_timeout.is_none_or(|t| t <= now)).map(|(&pid, _)| pid).collect();
        for pid in due {
            if let Some(p) = self.peers.get_mut(&pid) {
                let _ = p.rtc.handle_input(Input::Timeout(now));
            }
            self.mark_dirty(pid);
        }
        self.drive(now);
        let expired: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.members.is_empty() && r.empty_since.is_some_and(|t| t + r.settings.empty_timeout <= now))
            .map(|(name, _)| name.clone())
            .collect();
        for room in expired {
            self.rooms.remove(&room);
            self.out.push_back(Output::Event(RoomEvent::RoomFinished { room }));
        }
    }

    /// Handle a command.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Join(args) => self.join(now, *args),
            Command::Client { pid, msg } => self.client_message(now, pid, msg),
            Command::Leave { pid, reason } => self.leave(now, pid, reason),
            Command::CloseRoom { room } => self.close_room(now, &room),
            Command::Drain => {
                let pids: Vec<Pid> = self.peers.keys().copied().collect();
                for pid in pids {
                    self.signal(
                        pid,
                        ServerMessage::Leave(ServerLeave {
                            reason: LeaveReason::NodeDraining,
                            can_reconnect: true,
                            retry_after_ms: Some(1000),
                            message: "this node is draining; reconnect to be placed on another".into(),
                        }),
                    );
                }
            }
        }
        self.drive(now);
    }

    fn rtc_config(&self, settings: &RoomSettings) -> RtcConfig {
        let allowed = |c: Codec| settings.allowed_codecs.is_empty() || settings.allowed_codecs.contains(&c);
        RtcConfig::new()
            .set_rtp_mode(true)
            .set_ice_lite(true)
            .set_dtls_cert(self.dtls_cert.clone())
            .clear_codecs()
            .enable_opus(allowed(Codec::Opus), false)
            .enable_vp8(allowed(Codec::VP8))
            .enable_vp9(allowed(Codec::VP9))
            .enable_h264(allowed(Codec::H264))
            .enable_av1(allowed(Codec::AV1))
    }

    fn join(&mut self, now: Instant, args: JoinArgs) {
        let pid = args.pid;
        let fail = |engine: &mut Self, code: ErrorCode, message: String| {
            engine.signal(pid, err(code, message, "join"));
            engine.out.push_back(Output::Closed { pid, ufrag: String::new(), routes: vec![] });
        };
        if !self.rooms.contains_key(&args.room) {
            if !args.may_create {
                return fail(self, ErrorCode::RoomNotFound, format!("room {:?} does not exist", args.room));
            }
            let sid = self.new_sid("RM");
            self.rooms.insert(
                args.room.clone(),
                Room {
                    sid,
                    settings: args.settings.clone(),
                    members: vec![],
                    created_at_ms: unix_ms(),
                    empty_since: None,
                },
            );
            self.out.push_back(Output::Event(RoomEvent::RoomStarted { room: args.room.clone() }));
        }
        // A second session of the same identity replaces the first.
        let duplicate = self.rooms[&args.room]
            .members
            .iter()
            .copied()
            .find(|m| self.peers.get(m).is_some_and(|p| p.identity == args.claims.sub));
        if let Some(old) = duplicate {
            self.signal(
                old,
                ServerMessage::Leave(ServerLeave {
                    reason: LeaveReason::DuplicateIdentity,
                    can_reconnect: false,
                    retry_after_ms: None,
                    message: "the same identity joined from another session".into(),
                }),
            );
            self.leave(now, old, LeaveReason::DuplicateIdentity);
        }
        let room = &self.rooms[&args.room];
        let visible = room.members.iter().filter(|m| self.peers.get(m).is_some_and(|p| !p.grants.hidden)).count();
        if room.settings.max_participants > 0 && visible as u32 >= room.settings.max_participants {
            let max = room.settings.max_participants;
            return fail(self, ErrorCode::RoomFull, format!("room {:?} is full ({max} participants)", args.room));
        }

        let ufrag = random_token(8);
        let creds = str0m::IceCreds { ufrag: ufrag.clone(), pass: random_token(24) };
        let mut rtc: Rtc = self.rtc_config(&room.settings).set_local_ice_credentials(creds).build(now);
        for &addr in &self.cfg.udp_candidates {
            if let Ok(c) = Candidate::host(addr, "udp") {
                rtc.add_local_candidate(c);
            }
        }
        for &addr in &self.cfg.tcp_candidates {
            if let Ok(c) = Candidate::builder().tcp().host(addr).tcptype(str0m::net::TcpType::Passive).build() {
                rtc.add_local_candidate(c);
            }
        }
        let sid = self.new_sid("PA");
        let peer = Peer::new(pid, sid, &args, ufrag.clone(), rtc, unix_ms());
        self.ufrags.insert(ufrag, pid);
        let info = peer.info();
        let hidden = peer.grants.hidden;
        let can_subscribe = peer.grants.can_subscribe && args.auto_subscribe;
        self.peers.insert(pid, peer);

        let room = self.rooms.get_mut(&args.room).expect("room exists");
        room.members.push(pid);
        room.empty_since = None;
        let members = room.members.clone();
        let others: Vec<_> = members
            .iter()
            .filter(|&&m| m != pid)
            .filter_map(|m| self.peers.get(m))
            .filter(|p| !p.grants.hidden)
            .map(Peer::info)
            .collect();
        let response = JoinResponse {
            room: self.room_info(&args.room),
            participant: info.clone(),
            other_participants: others,
            ice_servers: args.ice_servers,
            ice_transport_policy: self.cfg.ice_transport_policy,
            protocol_version: switchyard_api::signal::PROTOCOL_VERSION,
            server_version: env!("CARGO_PKG_VERSION").into(),
            node: self.cfg.node.clone(),
            ping_interval_seconds: self.cfg.ping_interval_seconds,
            ping_timeout_seconds: self.cfg.ping_timeout_seconds,
            reconnect_token: args.reconnect_token,
        };
        self.signal(pid, ServerMessage::Joined(response));
        if !hidden {
            for &m in members.iter().filter(|&&m| m != pid) {
                self.signal(m, ServerMessage::ParticipantJoined(ParticipantEvent { participant: info.clone() }));
            }
        }
        self.out.push_back(Output::Event(RoomEvent::ParticipantJoined {
            room: args.room.clone(),
            identity: args.claims.sub.clone(),
        }));
        if can_subscribe {
            let tracks: Vec<(Pid, String, Mid, MediaKind, String)> = members
                .iter()
                .filter(|&&m| m != pid)
                .filter_map(|m| self.peers.get(m))
                .flat_map(|p| {
                    p.published.iter().map(move |t| (p.pid, p.sid.clone(), t.mid, t.media_kind(), t.sid.clone()))
                })
                .collect();
            let peer = self.peers.get_mut(&pid).expect("just inserted");
            for (publisher, publisher_sid, mid, kind, track_sid) in tracks {
                peer.subs.push(Sub::new(publisher, publisher_sid, mid, kind, track_sid));
            }
        }
    }

    fn room_info(&self, name: &str) -> RoomInfo {
        let room = &self.rooms[name];
        let codecs = if room.settings.allowed_codecs.is_empty() {
            Codec::ALL.to_vec()
        } else {
            room.settings.allowed_codecs.clone()
        };
        RoomInfo {
            sid: room.sid.clone(),
            name: name.to_owned(),
            metadata: room.settings.metadata.clone(),
            max_participants: room.settings.max_participants,
            empty_timeout_seconds: room.settings.empty_timeout.as_secs() as u32,
            num_participants: room.members.len() as u32,
            enabled_codecs: codecs,
            created_at_ms: room.created_at_ms,
        }
    }

    fn room_members(&self, pid: Pid) -> Vec<Pid> {
        self.peers.get(&pid).and_then(|p| self.rooms.get(&p.room)).map(|r| r.members.clone()).unwrap_or_default()
    }

    fn broadcast(&mut self, from: Pid, msg: ServerMessage) {
        for m in self.room_members(from) {
            if m != from {
                self.signal(m, msg.clone());
            }
        }
    }

    fn leave(&mut self, now: Instant, pid: Pid, reason: LeaveReason) {
        let Some(mut peer) = self.peers.remove(&pid) else { return };
        peer.rtc.disconnect();
        self.ufrags.remove(&peer.ufrag);
        for r in &peer.routes {
            self.routes.remove(r);
        }
        let Some(room) = self.rooms.get_mut(&peer.room) else {
            self.out.push_back(Output::Closed { pid, ufrag: peer.ufrag, routes: peer.routes });
            return;
        };
        room.members.retain(|&m| m != pid);
        if room.members.is_empty() {
            room.empty_since = Some(now);
        }
        let members = room.members.clone();
        for &m in &members {
            if let Some(p) = self.peers.get_mut(&m) {
                p.drop_publisher(pid);
            }
            if !peer.grants.hidden {
                self.signal(
                    m,
                    ServerMessage::ParticipantLeft(ParticipantLeft {
                        participant_sid: peer.sid.clone(),
                        identity: peer.identity.clone(),
                        reason,
                    }),
                );
            }
            self.mark_dirty(m);
        }
        self.out
            .push_back(Output::Event(RoomEvent::ParticipantLeft { room: peer.room.clone(), identity: peer.identity }));
        self.out.push_back(Output::Closed { pid, ufrag: peer.ufrag, routes: peer.routes });
    }

    fn close_room(&mut self, now: Instant, room: &str) {
        let Some(r) = self.rooms.get(room) else { return };
        for m in r.members.clone() {
            self.signal(
                m,
                ServerMessage::Leave(ServerLeave {
                    reason: LeaveReason::RoomClosed,
                    can_reconnect: false,
                    retry_after_ms: None,
                    message: format!("room {room:?} was closed"),
                }),
            );
            self.leave(now, m, LeaveReason::RoomClosed);
        }
        self.rooms.remove(room);
        self.out.push_back(Output::Event(RoomEvent::RoomFinished { room: room.to_owned() }));
    }

    fn client_message(&mut self, now: Instant, pid: Pid, msg: ClientMessage) {
        if !self.peers.contains_key(&pid) {
            return;
        }
        let kind = msg.type_name();
        match msg {
            ClientMessage::Offer(sd) => self.client_offer(pid, sd),
            ClientMessage::Answer(sd) => self.client_answer(now, pid, sd),
            ClientMessage::Trickle(t) => {
                if let Some(c) = t.candidate
                    && let Ok(candidate) = Candidate::from_sdp_string(&c.candidate)
                    && let Some(p) = self.peers.get_mut(&pid)
                {
                    p.rtc.add_remote_candidate(candidate);
                }
            }
            ClientMessage::PublishTrack(req) => self.announce(pid, req),
            ClientMessage::UnpublishTrack(TrackRef { track_sid }) => self.unpublish(pid, &track_sid),
            ClientMessage::UpdateSubscription(u) => {
                for track_sid in &u.track_sids {
                    self.update_subscription(now, pid, track_sid, u.subscribe, u.quality);
                }
            }
            ClientMessage::MuteTrack(m) => {
                let peer = self.peers.get_mut(&pid).expect("checked");
                let Some(track) = peer.published.iter_mut().find(|t| t.sid == m.track_sid) else {
                    return self.signal(pid, err(ErrorCode::TrackNotFound, "no such track of yours", kind));
                };
                track.muted = m.muted;
                let event =
                    TrackMuted { participant_sid: peer.sid.clone(), track_sid: m.track_sid.clone(), muted: m.muted };
                self.broadcast(pid, ServerMessage::TrackMuted(event));
            }
            ClientMessage::UpdateMetadata(u) => {
                let peer = self.peers.get_mut(&pid).expect("checked");
                if u.name.is_some() {
                    peer.name = u.name;
                }
                if u.metadata.is_some() {
                    peer.metadata = u.metadata;
                }
                let info = peer.info();
                self.broadcast(pid, ServerMessage::ParticipantUpdated(ParticipantEvent { participant: info }));
            }
            ClientMessage::Data(d) => self.relay_data(pid, d),
            ClientMessage::Leave(_) => self.leave(now, pid, LeaveReason::ClientRequest),
            // Handled by the session.
            ClientMessage::Join(_) | ClientMessage::Resume(_) | ClientMessage::Ping(_) | ClientMessage::Pong(_) => {}
        }
        self.mark_dirty(pid);
    }

    fn client_offer(&mut self, pid: Pid, sd: SessionDescription) {
        let peer = self.peers.get_mut(&pid).expect("checked");
        let offer = match SdpOffer::from_sdp_string(&sd.sdp) {
            Ok(o) => o,
            Err(e) => {
                return self.signal(pid, err(ErrorCode::NegotiationFailed, format!("bad SDP offer: {e}"), "offer"));
            }
        };
        // The server yields on glare: its own pending offer is dropped and redone later.
        if peer.pending.take().is_some() {
            peer.rollback_pending();
        }
        match peer.rtc.sdp_api().accept_offer(offer) {
            Ok(answer) => {
                peer.remote_described = true;
                let msg = ServerMessage::Answer(SessionDescription { sdp: answer.to_sdp_string(), id: sd.id });
                self.signal(pid, msg);
            }
            Err(e) => self.signal(pid, err(ErrorCode::NegotiationFailed, format!("offer refused: {e}"), "offer")),
        }
    }

    fn client_answer(&mut self, now: Instant, pid: Pid, sd: SessionDescription) {
        let peer = self.peers.get_mut(&pid).expect("checked");
        let Some((id, pending)) = peer.pending.take() else { return };
        if id != sd.id {
            // An answer to an offer we already withdrew.
            peer.pending = Some((id, pending));
            return;
        }
        let answer = match SdpAnswer::from_sdp_string(&sd.sdp) {
            Ok(a) => a,
            Err(e) => {
                peer.rollback_pending();
                return self.negotiation_failed(now, pid, format!("bad SDP answer: {e}"));
            }
        };
        if let Err(e) = peer.rtc.sdp_api().accept_answer(pending, answer) {
            peer.rollback_pending();
            return self.negotiation_failed(now, pid, format!("answer refused: {e}"));
        }
        peer.failed_answers = 0;
        let opened = peer.commit_pending();
        for (publisher, pub_mid, track_sid) in opened {
            let publisher_sid = self.peers.get(&publisher).map(|p| p.sid.clone()).unwrap_or_default();
            self.signal(
                pid,
                ServerMessage::SubscriptionUpdated(SubscriptionUpdated {
                    track_sid,
                    participant_sid: publisher_sid,
                    subscribed: true,
                    error: None,
                }),
            );
            self.request_keyframe(now, publisher, pub_mid, None, KeyframeRequestKind::Pli);
        }
    }

    /// A refused answer is retried with a fresh offer; a client whose answers keep being
    /// refused is told so and removed (it may join again), rather than re-offered forever.
    fn negotiation_failed(&mut self, now: Instant, pid: Pid, message: String) {
        const MAX_FAILED_ANSWERS: u32 = 3;
        self.signal(pid, err(ErrorCode::NegotiationFailed, message, "answer"));
        let Some(peer) = self.peers.get_mut(&pid) else { return };
        peer.failed_answers += 1;
        if peer.failed_answers >= MAX_FAILED_ANSWERS {
            self.signal(
                pid,
                ServerMessage::Leave(ServerLeave {
                    reason: LeaveReason::ServerShutdown,
                    can_reconnect: true,
                    retry_after_ms: Some(500),
                    message: format!("{MAX_FAILED_ANSWERS} answers in a row were refused; join again"),
                }),
            );
            self.leave(now, pid, LeaveReason::ServerShutdown);
        }
    }

    fn announce(&mut self, pid: Pid, req: PublishTrackRequest) {
        let peer = self.peers.get_mut(&pid).expect("checked");
        let source = req.source;
        if let Err(e) = peer.claims_authorize_publish(source) {
            return self.signal(pid, err(ErrorCode::PermissionDenied, e.to_string(), "publish_track"));
        }
        peer.announced.push_back(req);
    }

    fn unpublish(&mut self, pid: Pid, track_sid: &str) {
        let peer = self.peers.get_mut(&pid).expect("checked");
        let Some(i) = peer.published.iter().position(|t| t.sid == track_sid) else {
            return self.signal(pid, err(ErrorCode::TrackNotFound, "no such track of yours", "unpublish_track"));
        };
        let track = peer.published.remove(i);
        let info = peer.info();
        for m in self.room_members(pid) {
            if let Some(p) = self.peers.get_mut(&m) {
                p.drop_track(pid, track.mid);
            }
            self.mark_dirty(m);
        }
        self.signal(pid, ServerMessage::TrackUnpublished(TrackRef { track_sid: track.sid }));
        self.broadcast(pid, ServerMessage::ParticipantUpdated(ParticipantEvent { participant: info }));
    }

    fn update_subscription(
        &mut self,
        now: Instant,
        pid: Pid,
        track_sid: &str,
        subscribe: bool,
        quality: Option<VideoQuality>,
    ) {
        let found = self.room_members(pid).into_iter().filter(|&m| m != pid).find_map(|m| {
            let p = self.peers.get(&m)?;
            let t = p.published.iter().find(|t| t.sid == track_sid)?;
            Some((m, p.sid.clone(), t.mid, t.media_kind(), t.rid_for(quality)))
        });
        let Some((publisher, publisher_sid, pub_mid, kind, rid)) = found else {
            return self.signal(
                pid,
                ServerMessage::SubscriptionUpdated(SubscriptionUpdated {
                    track_sid: track_sid.into(),
                    participant_sid: String::new(),
                    subscribed: false,
                    error: Some(ErrorCode::TrackNotFound),
                }),
            );
        };
        let peer = self.peers.get_mut(&pid).expect("checked");
        if subscribe && !peer.grants.can_subscribe {
            return self.signal(
                pid,
                ServerMessage::SubscriptionUpdated(SubscriptionUpdated {
                    track_sid: track_sid.into(),
                    participant_sid: publisher_sid,
                    subscribed: false,
                    error: Some(ErrorCode::PermissionDenied),
                }),
            );
        }
        let existing = peer.subs.iter_mut().find(|s| s.publisher == publisher && s.pub_mid == pub_mid);
        match (subscribe, existing) {
            (true, Some(sub)) => {
                if rid.is_some() && sub.target_rid != rid {
                    sub.target_rid = rid;
                    self.request_keyframe(now, publisher, pub_mid, rid, KeyframeRequestKind::Pli);
                }
            }
            (true, None) => {
                let mut sub = Sub::new(publisher, publisher_sid.clone(), pub_mid, kind, track_sid.to_owned());
                if rid.is_some() {
                    sub.target_rid = rid;
                }
                peer.subs.push(sub);
            }
            (false, Some(_)) => {
                peer.drop_track(publisher, pub_mid);
                self.signal(
                    pid,
                    ServerMessage::SubscriptionUpdated(SubscriptionUpdated {
                        track_sid: track_sid.into(),
                        participant_sid: publisher_sid,
                        subscribed: false,
                        error: None,
                    }),
                );
            }
            (false, None) => {}
        }
        self.mark_dirty(pid);
    }

    fn relay_data(&mut self, pid: Pid, d: switchyard_api::signal::DataMessage) {
        let peer = &self.peers[&pid];
        if let Err(e) = peer.claims_authorize_data() {
            return self.signal(pid, err(ErrorCode::PermissionDenied, e.to_string(), "data"));
        }
        let len = base64::engine::general_purpose::STANDARD.decode(&d.payload).map(|b| b.len());
        match len {
            Err(_) => return self.signal(pid, err(ErrorCode::BadRequest, "payload is not base64", "data")),
            Ok(n) if n > MAX_DATA_PAYLOAD_BYTES => {
                return self.signal(
                    pid,
                    err(
                        ErrorCode::BadRequest,
                        format!("payload is {n} bytes; the limit is {MAX_DATA_PAYLOAD_BYTES}"),
                        "data",
                    ),
                );
            }
            Ok(_) => {}
        }
        let msg = ServerMessage::Data(DataReceived {
            participant_sid: peer.sid.clone(),
            identity: peer.identity.clone(),
            kind: d.kind,
            topic: d.topic,
            payload: d.payload,
        });
        for m in self.room_members(pid) {
            let wanted = self.peers.get(&m).is_some_and(|p| {
                m != pid && (d.destination_identities.is_empty() || d.destination_identities.contains(&p.identity))
            });
            if wanted {
                self.signal(m, msg.clone());
            }
        }
    }

    fn request_keyframe(
        &mut self,
        now: Instant,
        publisher: Pid,
        mid: Mid,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
    ) {
        let Some(p) = self.peers.get_mut(&publisher) else { return };
        let Some(track) = p.published.iter_mut().find(|t| t.mid == mid) else { return };
        if track.kind != TrackKind::Video || track.last_keyframe_request.is_some_and(|t| now < t + KEYFRAME_THROTTLE) {
            return;
        }
        track.last_keyframe_request = Some(now);
        track.keyframe_requests += 1;
        let rids: Vec<Option<Rid>> =
            if rid.is_some() { vec![rid] } else { track.rids().into_iter().map(Some).chain([None]).collect() };
        let mut api = p.rtc.direct_api();
        for rid in rids {
            if let Some(rx) = api.stream_rx_by_mid(mid, rid) {
                rx.request_keyframe(kind);
            }
        }
        self.mark_dirty(publisher);
    }

    /// Poll every dirty participant's `Rtc` until it has nothing more to say.
    fn drive(&mut self, now: Instant) {
        while let Some(pid) = self.dirty.pop() {
            if let Some(p) = self.peers.get_mut(&pid) {
                p.dirty = false;
            }
            self.negotiate(pid);
            while let Some(peer) = self.peers.get_mut(&pid) {
                if !peer.rtc.is_alive() {
                    self.leave(now, pid, LeaveReason::Timeout);
                    break;
                }
                match peer.rtc.poll_output() {
                    Ok(RtcOutput::Transmit(t)) => self.out.push_back(Output::Transmit(t)),
                    Ok(RtcOutput::Timeout(t)) => {
                        peer.next_timeout = Some(t);
                        break;
                    }
                    Ok(RtcOutput::Event(e)) => self.handle_event(now, pid, e),
                    Err(e) => {
                        tracing::info!(pid, error = %e, "participant's connection failed");
                        self.leave(now, pid, LeaveReason::Timeout);
                        break;
                    }
                }
            }
        }
    }

    fn negotiate(&mut self, pid: Pid) {
        let Some(peer) = self.peers.get_mut(&pid) else { return };
        let Some((offer, id)) = peer.create_offer() else { return };
        self.signal(pid, ServerMessage::Offer(SessionDescription { sdp: offer.to_sdp_string(), id }));
    }

    fn handle_event(&mut self, now: Instant, pid: Pid, event: Event) {
        match event {
            Event::RtpPacket(pkt) => self.forward(now, pid, pkt),
            Event::MediaAdded(added) => {
                if matches!(added.direction, Direction::RecvOnly | Direction::SendRecv) {
                    self.publication(pid, added.mid, added.kind);
                }
            }
            Event::KeyframeRequest(req) => {
                let Some(peer) = self.peers.get(&pid) else { return };
                let Some(sub) = peer.subs.iter().find(|s| s.state == SubState::Open(req.mid)) else { return };
                let (publisher, pub_mid, rid) = (sub.publisher, sub.pub_mid, sub.current_rid.or(sub.target_rid));
                self.request_keyframe(now, publisher, pub_mid, rid, req.kind);
            }
            Event::Connected => {
                if let Some(p) = self.peers.get_mut(&pid) {
                    p.state = ParticipantState::Joined;
                }
            }
            Event::ChannelOpen(cid, label) => {
                if let Some(p) = self.peers.get_mut(&pid) {
                    p.channels.push((cid, label));
                }
            }
            Event::ChannelClose(cid) => {
                if let Some(p) = self.peers.get_mut(&pid) {
                    p.channels.retain(|(c, _)| *c != cid);
                }
            }
            Event::ChannelData(data) => self.relay_channel(pid, data),
            _ => {}
        }
    }

    fn publication(&mut self, pid: Pid, mid: Mid, media: MediaKind) {
        let Some(peer) = self.peers.get_mut(&pid) else { return };
        if peer.published.iter().any(|t| t.mid == mid) || peer.subs.iter().any(|s| s.out_mid() == Some(mid)) {
            return;
        }
        let kind = if media == MediaKind::Audio { TrackKind::Audio } else { TrackKind::Video };
        let announced = peer.announced.iter().position(|r| r.kind == kind).and_then(|i| peer.announced.remove(i));
        let source = announced.as_ref().map(|r| r.source).unwrap_or(switchyard_api::signal::TrackSource::Unknown);
        if let Err(e) = peer.claims_authorize_publish(source) {
            // The media line stays, but nothing it carries is forwarded.
            return self.signal(pid, err(ErrorCode::PermissionDenied, e.to_string(), "offer"));
        }
        self.next_id += 1;
        let sid = format!("TR_{}{}", self.next_id, random_token(6));
        let peer = self.peers.get_mut(&pid).expect("checked");
        let track = Published::new(sid.clone(), mid, kind, announced);
        let info = track.info();
        let cid = track.cid.clone();
        peer.published.push(track);
        let participant = peer.info();
        let (room, identity, publisher_sid) = (peer.room.clone(), peer.identity.clone(), peer.sid.clone());
        self.signal(pid, ServerMessage::TrackPublished(TrackPublished { cid, track: info }));
        self.out.push_back(Output::Event(RoomEvent::TrackPublished { room, identity, track_sid: sid.clone() }));
        for m in self.room_members(pid) {
            if m == pid {
                continue;
            }
            self.signal(m, ServerMessage::ParticipantUpdated(ParticipantEvent { participant: participant.clone() }));
            if let Some(p) = self.peers.get_mut(&m)
                && p.auto_subscribe
                && p.grants.can_subscribe
            {
                p.subs.push(Sub::new(pid, publisher_sid.clone(), mid, media, sid.clone()));
                self.mark_dirty(m);
            }
        }
    }

    /// The hot path: one incoming RTP packet to every subscriber of its track.
    fn forward(&mut self, now: Instant, from: Pid, pkt: str0m::rtp::RtpPacket) {
        let Some(publisher) = self.peers.get_mut(&from) else { return };
        let ssrc = pkt.header.ssrc;
        let Some((mid, rid)) = publisher.stream_of(ssrc) else { return };
        let Some(track) = publisher.published.iter_mut().find(|t| t.mid == mid) else { return };
        let Some(spec) = track.spec_for(pkt.header.payload_type, &publisher.rtc) else { return };
        let video = track.kind == TrackKind::Video;
        let muted = track.muted;
        track.packets += 1;
        track.bytes += pkt.payload.len() as u64;
        self.stats.packets_in += 1;
        self.stats.bytes_in += pkt.payload.len() as u64;
        if muted {
            return;
        }
        let keyframe = video && is_keyframe(spec.codec, &pkt.payload);
        let Some(room) = self.rooms.get_mut(&publisher.room) else { return };
        // Borrow the member list without copying it: put it back below.
        let members = std::mem::take(&mut room.members);
        let exts = ExtensionValues {
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            video_orientation: pkt.header.ext_vals.video_orientation,
            ..Default::default()
        };
        let mut want_keyframe = false;
        for &m in &members {
            if m == from {
                continue;
            }
            let Some(sub_peer) = self.peers.get_mut(&m) else { continue };
            let Some(sub) = sub_peer.subs.iter_mut().find(|s| s.publisher == from && s.pub_mid == mid) else {
                continue;
            };
            let SubState::Open(out_mid) = sub.state else { continue };
            if video && (sub.current_rid != rid || sub.waiting_keyframe) {
                {
                    let wanted = sub.target_rid.is_none() || sub.target_rid == rid;
                    if !(wanted && keyframe) {
                        want_keyframe |= wanted;
                        continue;
                    }
                    sub.current_rid = rid;
                    sub.waiting_keyframe = false;
                }
            }
            let Some(pt) = sub.pt_for(spec, out_mid, &sub_peer.rtc) else { continue };
            let (seq, ts) = sub.rewriter.rewrite(*ssrc, *pkt.seq_no, pkt.header.timestamp);
            let mut api = sub_peer.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(out_mid, None) else { continue };
            tx.write_rtp(
                RtpWrite::new(pt, seq.into(), ts, pkt.timestamp, pkt.payload.clone())
                    .marker(pkt.header.marker)
                    .ext_vals(exts.clone())
                    .nackable(video),
            );
            sub.packets += 1;
            self.stats.packets_out += 1;
            self.stats.bytes_out += pkt.payload.len() as u64;
            if !sub_peer.dirty {
                sub_peer.dirty = true;
                self.dirty.push(m);
            }
        }
        if let Some(publisher) = self.peers.get(&from)
            && let Some(room) = self.rooms.get_mut(&publisher.room)
        {
            room.members = members;
        }
        if want_keyframe {
            self.request_keyframe(now, from, mid, rid, KeyframeRequestKind::Pli);
        }
    }

    fn relay_channel(&mut self, from: Pid, data: str0m::channel::ChannelData) {
        let Some(peer) = self.peers.get(&from) else { return };
        if !peer.grants.can_publish_data || data.data.len() > MAX_DATA_PAYLOAD_BYTES {
            return;
        }
        let Some(label) = peer.channels.iter().find(|(c, _)| *c == data.id).map(|(_, l)| l.clone()) else { return };
        for m in self.room_members(from) {
            if m == from {
                continue;
            }
            let Some(p) = self.peers.get_mut(&m) else { continue };
            let Some(&(cid, _)) = p.channels.iter().find(|(_, l)| *l == label) else { continue };
            if let Some(mut ch) = p.rtc.channel(cid) {
                let _ = ch.write(data.binary, &data.data);
            }
            self.mark_dirty(m);
        }
    }
}

#[cfg(test)]
mod tests;
