//! The SFU core: rooms, participants, tracks and RTP forwarding, with no sockets, no clock
//! and no randomness of its own (sans-IO, like the str0m `Rtc`s it owns): time comes in
//! with every input, wall-clock time is derived from the instant and wall time the engine
//! was started with, and identifiers come from an RNG seeded by the caller.
//!
//! ```text
//!  session ── Command ────────────────────►┐
//!  router ── datagram (pid, proto, src) ──►│ Engine ── Output::Transmit ──► socket
//!  driver ── timeout(now) ────────────────►┘        ── Output::Signal ────► session
//!                                                    ── Output::Route ─────► router
//!                                                    ── Output::Event ─────► webhooks, router
//! ```
//!
//! Split by ownership; each part owns its state and the facade here is the only thing
//! that crosses participants:
//!
//! | part | owns |
//! | --- | --- |
//! | [`room`] | rooms: admission (the room's limit; the node's capacity is the router's), leave, close, drain |
//! | [`resume`] | a participant held after its socket dropped, taken back by `resume` |
//! | [`participant`] | a participant's `Rtc` and its SDP state: offer, answer, glare, rollback, re-offer |
//! | [`track`] | published tracks, and the index publisher track → subscribers |
//! | [`subscription`] | what a participant receives: negotiation state, layer selector, waiting for a keyframe |
//! | [`forward`] | the hot path: one packet through the index to its subscribers, via the [`munger`] |
//! | [`keyframe`] | codec keyframe detection and the PLI/FIR throttle |
//! | [`data`] | signaling `data` messages and data channels |
//! | [`speakers`] | audio levels (RFC 6464) and the room's active speakers |
//! | [`quality`] | RTCP statistics: connection quality per participant, loss/RTT/jitter histograms, NACK/PLI/FIR counts |
//! | [`report`] | counters and the admin API's room reports |
//! | [`admin`] | the Room service's operations: open, inspect, update and close rooms; list, update, remove participants; mute; server data |
//! | [`relay`] | a room's end on another node: the relay participant, its full-ICE `Rtc` at an edge, glare by role |
//! | [`allocation`] | bandwidth allocation: each subscriber's estimate over its video subscriptions (a pure decision), `stream_state`, dynacast |
//!
//! Rules of the run loop:
//! - After any input, call [`Engine::poll_output`] until it returns `None`, then sleep
//!   until [`Engine::next_timeout`]. Several datagrams may be fed before polling (a batch):
//!   their events are dispatched when polled.
//! - str0m's rule: every mutation of an `Rtc` (input, `write_rtp`, keyframe request, SDP
//!   change, channel write) is followed by a full drain of that `Rtc` to its timeout before
//!   the next mutation of it. [`Engine::drain`] is that drain; events it yields are queued
//!   and dispatched after, so no drain ever nests inside another.
//! - Routing state (ufrags, 5-tuples, room → shard) is the router's: the engine says who
//!   was admitted, refused, restarted ICE or closed ([`Route`]), and a datagram arrives
//!   already naming its participant.

pub mod admin;
pub(crate) mod allocation;
mod data;
mod forward;
pub(crate) mod keyframe;
pub(crate) mod munger;
mod participant;
mod probe;
pub mod quality;
pub mod relay;
pub mod report;
mod resume;
mod room;
mod speakers;
pub mod stun;
mod subscription;
mod track;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;
use str0m::media::{KeyframeRequestKind, Mid, Rid};
use str0m::net::{Protocol, Receive};
use str0m::{Event, Input, Output as RtcOutput};
use switchyard_api::room::Codec;
use switchyard_api::signal::{
    ClientMessage, ErrorCode, ErrorMessage, IceServer, IceTransportPolicy, LeaveReason, ServerMessage,
};
use switchyard_api::token::Claims;

use self::participant::Peer;
pub use self::report::{EngineStats, PAUSE_REASONS, ParticipantReport, RoomReport, SubscriptionReport, TrackReport};
pub use self::resume::{ResumeArgs, ResumeFailure};
use self::room::Room;
use self::track::TrackIndex;

/// A participant's id inside one node.
pub type Pid = u64;

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
    /// How long a participant whose socket dropped is held for `resume`; zero: it
    /// leaves at once.
    pub resume_window: Duration,
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
    /// The room's sid when the control plane names it (Kubernetes: from the Room
    /// object's uid, so every node reports the same); a new one otherwise.
    pub sid: Option<String>,
}

impl Default for RoomSettings {
    fn default() -> Self {
        Self {
            max_participants: 0,
            empty_timeout: Duration::from_secs(300),
            allowed_codecs: vec![],
            metadata: None,
            sid: None,
        }
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
        /// The session that ended (a late leave from a socket a resume replaced is
        /// ignored: the participant lives on in the new one).
        session: Pid,
        /// Why.
        reason: LeaveReason,
    },
    /// The participant's socket is gone without a leave: hold it for a resume.
    Detach {
        /// Who.
        pid: Pid,
        /// The session that lost its socket (a late detach from a replaced socket is
        /// ignored).
        session: Pid,
    },
    /// A new socket takes a held (or still attached) participant back.
    Resume(Box<ResumeArgs>),
    /// Close a room and remove everyone in it.
    CloseRoom {
        /// Which.
        room: String,
    },
    /// A Room service operation; its answer goes back with [`Engine::take_reply`].
    Admin(admin::Admin),
    /// Tell everyone to reconnect elsewhere (the node drains).
    Drain,
    /// Open this node's end of a relay to another node for a room.
    Relay(Box<relay::RelayArgs>),
}

/// A participant an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    /// The identity from the token.
    pub identity: String,
    /// The session's sid.
    pub sid: String,
}

/// Something that happened that the outside world may want to hear of (webhooks,
/// status, metrics). Every event names its room and the room's sid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// A room opened on this node.
    RoomStarted {
        /// The room.
        room: String,
        /// Its sid.
        room_sid: String,
    },
    /// A room closed.
    RoomFinished {
        /// The room.
        room: String,
        /// Its sid.
        room_sid: String,
    },
    /// A participant joined.
    ParticipantJoined {
        /// The room.
        room: String,
        /// Its sid.
        room_sid: String,
        /// Who.
        participant: Who,
    },
    /// A participant left.
    ParticipantLeft {
        /// The room.
        room: String,
        /// Its sid.
        room_sid: String,
        /// Who.
        participant: Who,
        /// Why.
        reason: LeaveReason,
    },
    /// A track was published.
    TrackPublished {
        /// The room.
        room: String,
        /// Its sid.
        room_sid: String,
        /// The publisher.
        participant: Who,
        /// The track.
        track_sid: String,
    },
    /// A track was unpublished (by its publisher, by a permission change, or because
    /// its publisher left).
    TrackUnpublished {
        /// The room.
        room: String,
        /// Its sid.
        room_sid: String,
        /// The publisher.
        participant: Who,
        /// The track.
        track_sid: String,
    },
}

/// A routing change, for the router (the only owner of routing state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The join was admitted: datagrams naming `ufrag` lead to `pid`.
    Admitted {
        /// Who.
        pid: Pid,
        /// The room joined.
        room: String,
        /// The participant's ICE ufrag.
        ufrag: String,
    },
    /// The join was refused: the session closes, the room's reservation ends.
    Refused {
        /// Who.
        pid: Pid,
        /// The room asked for.
        room: String,
    },
    /// The client restarted ICE: the old ufrag and 5-tuples lead nowhere.
    IceRestart {
        /// Who.
        pid: Pid,
        /// The new ufrag.
        ufrag: String,
    },
    /// A resume succeeded: the session registered as `session` now speaks for `pid`
    /// (and a socket still attached to `pid` closes). Nothing changes for media.
    Resumed {
        /// The resuming session's own id.
        session: Pid,
        /// The participant it took back.
        pid: Pid,
    },
    /// The participant dialed `remote` itself (an edge's end of a relay, a full ICE
    /// agent talking to an ice-lite origin): datagrams from `remote` lead to `pid`,
    /// though none of them names its ufrag.
    Dialed {
        /// Who.
        pid: Pid,
        /// The address it sends to (UDP).
        remote: SocketAddr,
    },
    /// The participant is gone: its session should close after flushing, and nothing
    /// routes to it any more.
    Closed {
        /// Who.
        pid: Pid,
    },
}

/// What the engine wants done.
#[derive(Debug)]
pub enum Output {
    /// Send a datagram (or a TCP frame).
    Transmit(str0m::net::Transmit),
    /// Send a message to one participant's session.
    Signal(Pid, Box<ServerMessage>),
    /// Tell the router.
    Route(Route),
    /// Something happened.
    Event(RoomEvent),
}

/// Wall-clock time derived from the monotonic input: the engine never reads a clock.
#[derive(Debug, Clone, Copy)]
struct WallClock {
    at: Instant,
    unix_ms: u64,
}

impl WallClock {
    fn unix_ms(&self, now: Instant) -> u64 {
        self.unix_ms + now.saturating_duration_since(self.at).as_millis() as u64
    }
}

/// The SFU core for a set of rooms (one shard of a node).
pub struct Engine {
    cfg: EngineConfig,
    dtls_cert: str0m::config::DtlsCert,
    clock: WallClock,
    rng: StdRng,
    /// The time of the latest input.
    now: Instant,
    rooms: HashMap<String, Room>,
    peers: HashMap<Pid, Peer>,
    index: TrackIndex,
    out: VecDeque<Output>,
    /// Events drained from `Rtc`s, dispatched after the drain that produced them.
    events: VecDeque<(Pid, Event)>,
    /// Participants whose subscriptions changed: offer if needed.
    renegotiate: Vec<Pid>,
    /// Participants whose `Rtc` failed or closed.
    failed: Vec<Pid>,
    next_id: u64,
    stats: EngineStats,
    /// Scratch list of the participants whose timeout is due.
    due: Vec<Pid>,
    /// Scratch list of the held-back keyframe requests now due.
    due_keyframes: Vec<(Pid, Mid, Option<Rid>, KeyframeRequestKind)>,
    /// The answer to the last [`Command::Admin`], until taken.
    reply: Option<admin::Reply>,
    /// When the periodic allocation pass is due, and when layer rates were last measured.
    next_allocation: Instant,
    last_measure: Instant,
    /// The relay [`Engine::open_relay`] is joining, so its join knows it for one.
    joining_relay: Option<(Pid, relay::RelaySide)>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("rooms", &self.rooms.len()).field("peers", &self.peers.len()).finish()
    }
}

pub(crate) fn err(code: ErrorCode, message: impl Into<String>, request: &str) -> ServerMessage {
    let mut e = ErrorMessage::new(code, message);
    e.request_type = Some(request.to_owned());
    ServerMessage::Error(e)
}

impl Engine {
    /// A new engine at `now`, when the wall clock read `wall`; identifiers come from an
    /// RNG seeded with `seed`. Installs str0m's crypto provider on first use.
    pub fn new(cfg: EngineConfig, seed: u64, now: Instant, wall: SystemTime) -> Self {
        let provider = str0m::crypto::from_feature_flags();
        let dtls_cert = provider.dtls_provider.generate_certificate().expect("DTLS certificate generation");
        let unix_ms = wall.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        Self {
            cfg,
            dtls_cert,
            clock: WallClock { at: now, unix_ms },
            rng: StdRng::seed_from_u64(seed),
            now,
            rooms: HashMap::new(),
            peers: HashMap::new(),
            index: TrackIndex::default(),
            // Sized for a busy shard's burst (a packet's fan-out plus the Rtcs' statistics
            // events): growing them mid-call would allocate on the forwarding path.
            out: VecDeque::with_capacity(1024),
            events: VecDeque::with_capacity(256),
            renegotiate: Vec::new(),
            failed: Vec::new(),
            next_id: 1,
            stats: EngineStats::default(),
            due: Vec::with_capacity(64),
            due_keyframes: Vec::with_capacity(16),
            reply: None,
            next_allocation: now + allocation::PERIOD,
            last_measure: now,
            joining_relay: None,
        }
    }

    /// Names of the open rooms.
    pub fn room_names(&self) -> Vec<String> {
        self.rooms.keys().cloned().collect()
    }

    /// True if `room` is open here.
    pub fn has_room(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// Next output, if any. Dispatches queued events first.
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.out.is_empty() {
            self.drive();
        }
        self.out.pop_front()
    }

    /// When [`Engine::handle_timeout`] should next be called.
    pub fn next_timeout(&self) -> Option<Instant> {
        let peers = self.peers.values().filter_map(Peer::next_deadline);
        let rooms = self
            .rooms
            .values()
            .flat_map(|r| [r.empty_since.map(|t| t + r.settings.empty_timeout), r.speakers.next_tick, r.quality_tick])
            .flatten();
        let allocation = (!self.peers.is_empty()).then_some(self.next_allocation);
        peers.chain(rooms).chain(allocation).min()
    }

    /// Feed a datagram (UDP) or a de-framed TCP packet the router found `pid`'s. A
    /// datagram for a participant that just left is dropped.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        pid: Pid,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        self.now = now;
        let Some(peer) = self.peers.get_mut(&pid) else { return };
        peer.quality.last_input = now;
        let Ok(contents) = data.try_into() else { return };
        let input = Input::Receive(now, Receive { proto, source, destination, contents });
        let handled = {
            let _str0m = probe::foreign();
            peer.rtc.handle_input(input)
        };
        if let Err(e) = handled {
            tracing::debug!(pid, error = %e, "rtc refused input");
        }
        self.drain(pid);
    }

    /// Advance time.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        // The list is reused: a timeout per paced send must not cost an allocation.
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        due.extend(self.peers.iter().filter(|(_, p)| p.next_timeout.is_none_or(|t| t <= now)).map(|(&pid, _)| pid));
        for &pid in &due {
            if let Some(p) = self.peers.get_mut(&pid) {
                let _str0m = probe::foreign();
                let _ = p.rtc.handle_input(Input::Timeout(now));
            }
            self.drain(pid);
        }
        self.due = due;
        self.keyframe_timeouts(now);
        self.offer_timeouts(now);
        self.speaker_ticks(now);
        self.quality_ticks(now);
        self.allocation_timeout(now);
        self.drive();
        self.expire_held(now);
        self.expire_rooms(now);
    }

    /// Handle a command.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        self.now = now;
        match cmd {
            Command::Join(args) => self.join(now, *args),
            Command::Client { pid, msg } => self.client_message(now, pid, msg),
            Command::Leave { pid, session, reason } => self.session_left(now, pid, session, reason),
            Command::Detach { pid, session } => self.detach(now, pid, session),
            Command::Resume(args) => self.resume(now, *args),
            Command::CloseRoom { room } => self.close_room(now, &room),
            Command::Admin(req) => {
                let reply = self.admin(now, req);
                self.reply = Some(reply);
            }
            Command::Drain => self.drain_node(),
            Command::Relay(args) => self.open_relay(now, *args),
        }
        self.drive();
    }

    fn new_sid(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        let n = self.next_id;
        format!("{prefix}_{n}{}", self.random_token(6))
    }

    fn random_token(&mut self, len: usize) -> String {
        switchyard_api::random::token(&mut self.rng, len)
    }

    fn signal(&mut self, pid: Pid, msg: ServerMessage) {
        if let ServerMessage::Error(e) = &msg
            && e.code == ErrorCode::NegotiationFailed
        {
            tracing::warn!(pid, message = %e.message, "negotiation failed");
        }
        self.out.push_back(Output::Signal(pid, Box::new(msg)));
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

    /// `pid`'s subscriptions changed: offer once the current work is done.
    fn mark_renegotiate(&mut self, pid: Pid) {
        if let Some(p) = self.peers.get_mut(&pid)
            && !p.renegotiate
        {
            p.renegotiate = true;
            self.renegotiate.push(pid);
        }
    }

    /// The drain that follows every mutation of `pid`'s `Rtc`.
    fn drain(&mut self, pid: Pid) {
        if let Some(peer) = self.peers.get_mut(&pid) {
            drain_rtc(pid, peer, &mut self.out, &mut self.events, &mut self.failed);
        }
    }

    /// Dispatch queued events, offer where subscriptions changed, and remove failed
    /// participants, until nothing is left to do.
    fn drive(&mut self) {
        let now = self.now;
        loop {
            if let Some((pid, event)) = self.events.pop_front() {
                self.handle_event(now, pid, event);
            } else if let Some(pid) = self.failed.pop() {
                self.leave(now, pid, LeaveReason::Timeout);
            } else if let Some(pid) = self.renegotiate.pop() {
                let Some(p) = self.peers.get_mut(&pid) else { continue };
                p.renegotiate = false;
                // No offers into a lost socket: a resume marks it again.
                if p.resume.held_until.is_none() {
                    self.negotiate(now, pid);
                }
            } else {
                break;
            }
        }
    }

    fn handle_event(&mut self, now: Instant, pid: Pid, event: Event) {
        match event {
            Event::RtpPacket(pkt) => self.forward(now, pid, pkt),
            Event::MediaAdded(added) => {
                if matches!(added.direction, str0m::media::Direction::RecvOnly | str0m::media::Direction::SendRecv) {
                    self.publication(now, pid, added.mid, added.kind);
                }
            }
            Event::KeyframeRequest(req) => self.subscriber_wants_keyframe(now, pid, req),
            Event::EgressBitrateEstimate(kind) => self.estimate(pid, kind),
            Event::Connected => {
                if let Some(p) = self.peers.get_mut(&pid) {
                    p.state = switchyard_api::signal::ParticipantState::Joined;
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
            Event::PeerStats(s) => self.peer_stats(pid, s),
            Event::MediaIngressStats(s) => self.ingress_stats(pid, s),
            Event::MediaEgressStats(s) => self.egress_stats(pid, s),
            _ => {}
        }
    }

    fn client_message(&mut self, now: Instant, pid: Pid, msg: ClientMessage) {
        if !self.peers.contains_key(&pid) {
            return;
        }
        match msg {
            ClientMessage::Offer(sd) => self.client_offer(pid, sd),
            ClientMessage::Answer(sd) => self.client_answer(now, pid, sd),
            ClientMessage::Trickle(t) => self.trickle(pid, t),
            ClientMessage::PublishTrack(req) => self.announce(pid, req),
            ClientMessage::UnpublishTrack(t) => self.unpublish(pid, &t.track_sid),
            ClientMessage::UpdateSubscription(u) => {
                for track_sid in &u.track_sids {
                    self.update_subscription(now, pid, track_sid, u.subscribe, u.quality);
                }
            }
            ClientMessage::UpdateTrackSettings(u) => self.track_settings(pid, u),
            ClientMessage::MuteTrack(m) => self.mute(pid, m),
            ClientMessage::UpdateMetadata(u) => self.update_metadata(pid, u),
            ClientMessage::Data(d) => self.relay_data(pid, d),
            ClientMessage::Leave(_) => self.leave(now, pid, LeaveReason::ClientRequest),
            // Handled by the session.
            ClientMessage::Join(_) | ClientMessage::Resume(_) | ClientMessage::Ping(_) | ClientMessage::Pong(_) => {}
        }
    }
}

/// Poll one participant's `Rtc` until it has nothing more to say: transmits go out,
/// events are queued for dispatch, a dead `Rtc` marks its participant failed.
fn drain_rtc(
    pid: Pid,
    peer: &mut Peer,
    out: &mut VecDeque<Output>,
    events: &mut VecDeque<(Pid, Event)>,
    failed: &mut Vec<Pid>,
) {
    peer.undrained = false;
    loop {
        if !peer.rtc.is_alive() {
            failed.push(pid);
            return;
        }
        let polled = {
            let _str0m = probe::foreign();
            peer.rtc.poll_output()
        };
        match polled {
            Ok(RtcOutput::Transmit(t)) => out.push_back(Output::Transmit(t)),
            Ok(RtcOutput::Timeout(t)) => {
                peer.next_timeout = Some(t);
                return;
            }
            Ok(RtcOutput::Event(e)) => events.push_back((pid, e)),
            Err(e) => {
                tracing::info!(pid, error = %e, "participant's connection failed");
                failed.push(pid);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
