//! The engine with no sockets and a virtual clock: str0m clients exchange datagrams with
//! the engine in memory, so rooms, negotiation and forwarding are tested in milliseconds.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc};
use switchyard_api::signal::{
    ClientMessage, ErrorCode, IceTransportPolicy, LeaveReason, PublishTrackRequest, ServerMessage, SessionDescription,
    TrackKind, TrackRef, TrackSource, VideoQuality,
};
use switchyard_api::token::{Claims, Grants};

use super::*;

const SERVER: &str = "10.0.0.1:5000";

struct Client {
    pid: Pid,
    addr: SocketAddr,
    rtc: Rtc,
    pending: Option<SdpPendingOffer>,
    signals: Vec<ServerMessage>,
    frames: Vec<(Mid, Vec<u8>)>,
    /// The RTP sequence numbers (first, last) each received frame was carried in.
    seqs: Vec<(Mid, u64, u64)>,
    added: Vec<Mid>,
    connected: bool,
    closed: bool,
    /// What the client does with a server offer.
    offers: Offers,
    /// Keyframe requests (PLI/FIR) that reached the client's sending tracks.
    keyframe_requests: u32,
    /// The simulcast layer of each of those requests.
    keyframe_rids: Vec<Option<Rid>>,
    /// Its signaling socket is gone: messages for it are lost.
    detached: bool,
    /// Share of datagrams lost each way between this client and the server.
    loss: f64,
}

/// How a test client treats a server offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offers {
    /// Apply it and answer.
    Answer,
    /// Never see it (lost, or dropped by a client that should not have).
    Drop,
    /// Answer with an SDP that is not one.
    Garbage,
}

struct Net {
    engine: Engine,
    clients: Vec<Client>,
    now: Instant,
    events: Vec<RoomEvent>,
    /// What the engine told the router.
    routes: Vec<Route>,
    /// Messages for sessions that are no test client (a resume's own session).
    stray: Vec<(Pid, ServerMessage)>,
    /// Seeded: which datagrams a lossy link drops.
    rng: rand::rngs::StdRng,
    /// Datagrams dropped by lossy links.
    lost: u64,
    /// Datagrams for addresses that are no test client (another node's), as
    /// (source, destination, contents).
    unrouted: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
}

fn config() -> EngineConfig {
    EngineConfig {
        node: "test-node".into(),
        udp_candidates: vec![SERVER.parse().unwrap()],
        tcp_candidates: vec![],
        ice_transport_policy: IceTransportPolicy::All,
        ping_interval_seconds: 10,
        ping_timeout_seconds: 30,
        resume_window: Duration::from_secs(15),
    }
}

impl Net {
    fn new() -> Self {
        let now = Instant::now();
        let wall = std::time::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        Self {
            engine: Engine::new(config(), 7, now, wall),
            clients: vec![],
            now,
            events: vec![],
            routes: vec![],
            stray: vec![],
            rng: rand::SeedableRng::seed_from_u64(12),
            lost: 0,
            unrouted: vec![],
        }
    }

    fn client(&mut self, pid: Pid) -> &mut Client {
        self.clients.iter_mut().find(|c| c.pid == pid).expect("client exists")
    }

    /// Join `room` as `identity`; returns the pid.
    fn join(&mut self, identity: &str, room: &str, edit: impl FnOnce(&mut Grants)) -> Pid {
        self.join_with(
            identity,
            room,
            edit,
            true,
            RoomSettings { empty_timeout: Duration::from_secs(5), ..RoomSettings::default() },
        )
    }

    fn join_with(
        &mut self,
        identity: &str,
        room: &str,
        edit: impl FnOnce(&mut Grants),
        auto_subscribe: bool,
        settings: RoomSettings,
    ) -> Pid {
        let pid = self.clients.len() as Pid + 1;
        let mut grants = Grants::join(room);
        edit(&mut grants);
        let claims = Claims::new("k", identity, 0, 600).with_grants(grants);
        let args = JoinArgs {
            pid,
            room: room.into(),
            claims,
            auto_subscribe,
            may_create: true,
            settings,
            ice_servers: vec![],
            reconnect_token: "rt".into(),
        };
        let addr: SocketAddr = format!("10.0.1.{pid}:4000").parse().unwrap();
        let mut rtc = Rtc::builder().build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        self.clients.push(Client {
            pid,
            addr,
            rtc,
            pending: None,
            signals: vec![],
            frames: vec![],
            seqs: vec![],
            added: vec![],
            connected: false,
            closed: false,
            offers: Offers::Answer,
            keyframe_requests: 0,
            keyframe_rids: vec![],
            detached: false,
            loss: 0.0,
        });
        self.engine.handle_command(self.now, Command::Join(Box::new(args)));
        self.flush();
        pid
    }

    /// The client's first offer: optionally a sending media line, always a data channel.
    fn offer(&mut self, pid: Pid, send: Option<MediaKind>) -> Option<Mid> {
        self.offer_layers(pid, send, None)
    }

    /// [`Net::offer`], the sending line simulcast with `simulcast`'s layers.
    fn offer_layers(&mut self, pid: Pid, send: Option<MediaKind>, simulcast: Option<Simulcast>) -> Option<Mid> {
        self.offer_dir(pid, send, Direction::SendOnly, simulcast)
    }

    /// [`Net::offer`] with the sending line's direction `dir`.
    fn offer_dir(
        &mut self,
        pid: Pid,
        send: Option<MediaKind>,
        dir: Direction,
        simulcast: Option<Simulcast>,
    ) -> Option<Mid> {
        let c = self.client(pid);
        let mut api = c.rtc.sdp_api();
        let mid = send.map(|k| api.add_media(k, dir, None, None, simulcast));
        api.add_channel("reliable".into());
        let (offer, pending) = api.apply().expect("changes");
        c.pending = Some(pending);
        let msg = ClientMessage::Offer(SessionDescription { sdp: offer.to_sdp_string(), id: 1 });
        self.engine.handle_command(self.now, Command::Client { pid, msg });
        self.flush();
        mid
    }

    fn send(&mut self, pid: Pid, msg: ClientMessage) {
        self.engine.handle_command(self.now, Command::Client { pid, msg });
        self.flush();
    }

    /// Deliver every engine output.
    fn flush(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Transmit(t) => {
                    let Some(c) = self.clients.iter_mut().find(|c| c.addr == t.destination && !c.closed) else {
                        self.unrouted.push((t.source, t.destination, t.contents.to_vec()));
                        continue;
                    };
                    if c.loss > 0.0 && rand::Rng::random_bool(&mut self.rng, c.loss) {
                        self.lost += 1;
                        continue;
                    }
                    let input = Input::Receive(
                        self.now,
                        Receive {
                            proto: Protocol::Udp,
                            source: t.source,
                            destination: t.destination,
                            contents: (&t.contents[..]).try_into().unwrap(),
                        },
                    );
                    let _ = c.rtc.handle_input(input);
                }
                Output::Signal(pid, msg) => {
                    if !self.clients.iter().any(|c| c.pid == pid && !c.detached) {
                        self.stray.push((pid, *msg));
                        continue;
                    }
                    let now = self.now;
                    let c = self.client(pid);
                    match &*msg {
                        ServerMessage::Answer(a) => {
                            let answer = SdpAnswer::from_sdp_string(&a.sdp).unwrap();
                            let pending = c.pending.take().expect("an offer is pending");
                            c.rtc.sdp_api().accept_answer(pending, answer).unwrap();
                        }
                        ServerMessage::Offer(o) if c.offers == Offers::Answer => {
                            let offer = SdpOffer::from_sdp_string(&o.sdp).unwrap();
                            let answer = c.rtc.sdp_api().accept_offer(offer).unwrap();
                            let msg =
                                ClientMessage::Answer(SessionDescription { sdp: answer.to_sdp_string(), id: o.id });
                            self.engine.handle_command(now, Command::Client { pid, msg });
                        }
                        ServerMessage::Offer(o) if c.offers == Offers::Garbage => {
                            let msg = ClientMessage::Answer(SessionDescription { sdp: "v=0 no".into(), id: o.id });
                            self.engine.handle_command(now, Command::Client { pid, msg });
                        }
                        _ => {}
                    }
                    self.client(pid).signals.push(*msg);
                }
                Output::Route(r) => {
                    if let Route::Closed { pid } | Route::Refused { pid, .. } = &r
                        && let Some(c) = self.clients.iter_mut().find(|c| c.pid == *pid)
                    {
                        c.closed = true;
                    }
                    if let Route::Resumed { pid, .. } = &r {
                        self.client(*pid).detached = false;
                    }
                    self.routes.push(r);
                }
                Output::Event(e) => self.events.push(e),
            }
        }
    }

    /// Move time forward `ms` milliseconds, one at a time, shuttling every datagram.
    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now += Duration::from_millis(1);
            self.engine.handle_timeout(self.now);
            self.flush();
            for i in 0..self.clients.len() {
                if self.clients[i].closed {
                    continue;
                }
                let _ = self.clients[i].rtc.handle_input(Input::Timeout(self.now));
                let mut to_server = VecDeque::new();
                loop {
                    let c = &mut self.clients[i];
                    match c.rtc.poll_output() {
                        Ok(RtcOutput::Transmit(t)) => {
                            to_server.push_back((t.source, t.destination, t.contents.to_vec()))
                        }
                        Ok(RtcOutput::Event(e)) => match e {
                            Event::Connected => c.connected = true,
                            Event::MediaAdded(m) => c.added.push(m.mid),
                            Event::MediaData(d) => {
                                c.seqs.push((d.mid, **d.seq_range.start(), **d.seq_range.end()));
                                c.frames.push((d.mid, d.data.to_vec()));
                            }
                            Event::KeyframeRequest(r) => {
                                c.keyframe_requests += 1;
                                c.keyframe_rids.push(r.rid);
                            }
                            _ => {}
                        },
                        Ok(RtcOutput::Timeout(_)) | Err(_) => break,
                    }
                }
                // The test is the router: it knows whose address this is.
                let (pid, loss) = (self.clients[i].pid, self.clients[i].loss);
                for (src, dst, data) in to_server {
                    if loss > 0.0 && rand::Rng::random_bool(&mut self.rng, loss) {
                        self.lost += 1;
                        continue;
                    }
                    self.engine.handle_receive(self.now, pid, Protocol::Udp, src, dst, &data);
                }
                self.flush();
            }
        }
    }

    /// Write one frame on the client's sending media line.
    fn write_frame(&mut self, pid: Pid, mid: Mid, n: u32, data: &[u8]) {
        let now = self.now;
        let c = self.client(pid);
        let writer = c.rtc.writer(mid).expect("writer");
        let pt = writer.payload_params().next().expect("a negotiated codec").pt();
        let time = MediaTime::from_90khz(u64::from(n) * 3000);
        writer.write(pt, now, time, data.to_vec()).unwrap();
    }

    /// Everything `pid`'s client sends, collected without handing it to the engine.
    fn client_datagrams(&mut self, pid: Pid) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
        let now = self.now;
        let c = self.client(pid);
        let _ = c.rtc.handle_input(Input::Timeout(now));
        let mut out = vec![];
        loop {
            match c.rtc.poll_output() {
                Ok(RtcOutput::Transmit(t)) => out.push((t.source, t.destination, t.contents.to_vec())),
                Ok(RtcOutput::Event(_)) => {}
                Ok(RtcOutput::Timeout(_)) | Err(_) => break,
            }
        }
        out
    }

    /// The server offers `pid` got, as (id, sdp).
    fn offers(&self, pid: Pid) -> Vec<(u32, String)> {
        self.signals(pid)
            .iter()
            .filter_map(|m| if let ServerMessage::Offer(o) = m { Some((o.id, o.sdp.clone())) } else { None })
            .collect()
    }

    fn errors(&self, pid: Pid, code: switchyard_api::signal::ErrorCode) -> usize {
        self.signals(pid).iter().filter(|m| matches!(m, ServerMessage::Error(e) if e.code == code)).count()
    }

    fn signals(&self, pid: Pid) -> &[ServerMessage] {
        &self.clients.iter().find(|c| c.pid == pid).unwrap().signals
    }
}

/// A VP8 keyframe's first bytes followed by a marker, so frames can be told apart.
fn vp8_frame(n: u32) -> Vec<u8> {
    let mut f = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
    f.extend_from_slice(&n.to_be_bytes());
    f.extend(std::iter::repeat_n(0xab, 200));
    f
}

/// Alice publishes a video track and Bob (auto-subscribed) receives it; both connected.
fn alice_publishes_to_bob() -> (Net, Pid, Pid, Mid) {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let b = net.join("bob", "r", |_| {});
    let mid = net.offer(a, Some(MediaKind::Video)).unwrap();
    net.offer(b, None);
    net.run(300);
    (net, a, b, mid)
}

impl Net {
    /// The sid of the first track `pid` published.
    fn published_sid(&self, pid: Pid) -> String {
        self.signals(pid)
            .iter()
            .find_map(|m| if let ServerMessage::TrackPublished(t) = m { Some(t.track.sid.clone()) } else { None })
            .expect("a track was published")
    }
}

#[test]
fn join_reports_room_and_others() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let b = net.join("bob", "r", |_| {});
    let ServerMessage::Joined(j) = &net.signals(b)[0] else { panic!("{:?}", net.signals(b)) };
    assert_eq!(j.room.name, "r");
    assert_eq!(j.participant.identity, "bob");
    assert_eq!(j.other_participants.iter().map(|p| p.identity.as_str()).collect::<Vec<_>>(), ["alice"]);
    assert!(
        net.signals(a)
            .iter()
            .any(|m| matches!(m, ServerMessage::ParticipantJoined(p) if p.participant.identity == "bob"))
    );
    let RoomEvent::RoomStarted { room, room_sid } = &net.events[0] else { panic!("{:?}", net.events) };
    assert_eq!(room, "r");
    assert_eq!(&j.room.sid, room_sid, "the event carries the room's sid");
    assert_eq!(net.engine.stats().participants, 2);
}

#[test]
fn hidden_participants_are_not_announced() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    net.join("recorder", "r", |g| g.hidden = true);
    assert!(!net.signals(a).iter().any(|m| matches!(m, ServerMessage::ParticipantJoined(_))));
}

#[test]
fn a_published_video_track_reaches_a_subscriber_frame_for_frame() {
    let (mut net, a, b, mid) = alice_publishes_to_bob();
    assert!(net.client(a).connected && net.client(b).connected, "ICE and DTLS complete in memory");
    assert!(
        net.signals(a)
            .iter()
            .any(|m| matches!(m, ServerMessage::TrackPublished(t) if t.track.kind == TrackKind::Video)),
        "{:?}",
        net.signals(a)
    );
    // The server offered bob a media line for alice's track, and bob answered.
    assert!(net.signals(b).iter().any(|m| matches!(m, ServerMessage::Offer(_))));
    assert!(net.signals(b).iter().any(|m| matches!(m, ServerMessage::SubscriptionUpdated(s) if s.subscribed)));
    for n in 0..30 {
        net.write_frame(a, mid, n, &vp8_frame(n));
        net.run(33);
    }
    let got: Vec<&Vec<u8>> = net.client(b).frames.iter().map(|(_, d)| d).collect();
    assert!(got.len() >= 25, "bob got {} of 30 frames", got.len());
    for frame in &got {
        let n = u32::from_be_bytes(frame[10..14].try_into().unwrap());
        assert_eq!(**frame, vp8_frame(n), "frame {n} arrives intact");
    }
    let stats = net.engine.stats();
    assert!(stats.packets_out >= 25 && stats.packets_in >= stats.packets_out, "{stats:?}");
    assert_eq!(net.client(a).frames.len(), 0, "alice does not get her own media back");
}

#[test]
fn unpublish_and_leave_stop_forwarding_and_tell_the_room() {
    let (mut net, a, b, mid) = alice_publishes_to_bob();
    let track_sid = net.published_sid(a);
    net.send(a, ClientMessage::UnpublishTrack(TrackRef { track_sid: track_sid.clone() }));
    net.run(100);
    assert!(net.signals(a).iter().any(|m| matches!(m, ServerMessage::TrackUnpublished(t) if t.track_sid == track_sid)));
    let offers = net.signals(b).iter().filter(|m| matches!(m, ServerMessage::Offer(_))).count();
    assert_eq!(offers, 2, "one offer to add the track, one to stop it");
    let before = net.client(b).frames.len();
    net.write_frame(a, mid, 1, &vp8_frame(1));
    net.run(50);
    assert_eq!(net.client(b).frames.len(), before, "nothing forwarded after unpublish");

    net.send(a, ClientMessage::Leave(Default::default()));
    assert!(net.signals(b).iter().any(|m| matches!(m, ServerMessage::ParticipantLeft(p)
        if p.identity == "alice" && p.reason == LeaveReason::ClientRequest)));
    assert!(net.client(a).closed);
}

#[test]
fn a_muted_track_is_not_forwarded() {
    let (mut net, a, b, mid) = alice_publishes_to_bob();
    let sid = net.published_sid(a);
    net.send(a, ClientMessage::MuteTrack(switchyard_api::signal::MuteTrack { track_sid: sid.clone(), muted: true }));
    assert!(net.signals(b).iter().any(|m| matches!(m, ServerMessage::TrackMuted(t) if t.track_sid == sid && t.muted)));
    for n in 0..5 {
        net.write_frame(a, mid, n, &vp8_frame(n));
        net.run(33);
    }
    assert_eq!(net.client(b).frames.len(), 0);
    net.send(a, ClientMessage::MuteTrack(switchyard_api::signal::MuteTrack { track_sid: sid, muted: false }));
    for n in 5..10 {
        net.write_frame(a, mid, n, &vp8_frame(n));
        net.run(33);
    }
    assert!(net.client(b).frames.len() >= 3, "forwarding resumes after unmute");
}

#[test]
fn an_empty_room_closes_after_its_timeout() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    net.send(a, ClientMessage::Leave(Default::default()));
    assert!(net.engine.has_room("r"));
    net.run(4_000);
    assert!(net.engine.has_room("r"), "still inside the 5 s timeout");
    net.run(1_500);
    assert!(!net.engine.has_room("r"));
    assert!(net.events.iter().any(|e| matches!(e, RoomEvent::RoomFinished { room, .. } if room == "r")));
}

#[test]
fn closing_a_room_removes_everyone_with_a_reason() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    net.engine.handle_command(net.now, Command::CloseRoom { room: "r".into() });
    net.flush();
    assert!(
        net.signals(a)
            .iter()
            .any(|m| matches!(m, ServerMessage::Leave(l) if l.reason == LeaveReason::RoomClosed && !l.can_reconnect))
    );
    assert!(net.client(a).closed);
    assert!(!net.engine.has_room("r"));
}

#[test]
fn the_same_identity_joining_again_replaces_the_first_session() {
    let mut net = Net::new();
    let first = net.join("alice", "r", |_| {});
    let second = net.join("alice", "r", |_| {});
    assert!(net.client(first).closed);
    assert!(!net.client(second).closed);
    assert_eq!(net.engine.stats().participants, 1);
}

#[test]
fn a_room_that_may_not_be_created_is_not_found() {
    let mut net = Net::new();
    let claims = Claims::new("k", "x", 0, 60).with_grants(Grants::join("nope"));
    let args = JoinArgs {
        pid: 9,
        room: "nope".into(),
        claims,
        auto_subscribe: true,
        may_create: false,
        settings: RoomSettings::default(),
        ice_servers: vec![],
        reconnect_token: String::new(),
    };
    net.engine.handle_command(net.now, Command::Join(Box::new(args)));
    let mut saw = (false, false);
    while let Some(o) = net.engine.poll_output() {
        match o {
            Output::Signal(9, m) => {
                saw.0 =
                    matches!(*m, ServerMessage::Error(e) if e.code == switchyard_api::signal::ErrorCode::RoomNotFound)
            }
            Output::Route(Route::Refused { pid: 9, room }) => saw.1 = room == "nope",
            Output::Event(e) => panic!("a refused join opens nothing: {e:?}"),
            _ => {}
        }
    }
    assert_eq!(saw, (true, true));
    assert!(!net.engine.has_room("nope"));
}

#[test]
fn a_datagram_for_a_participant_that_left_is_dropped() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    net.send(a, ClientMessage::Leave(Default::default()));
    let before = net.engine.stats();
    net.engine.handle_receive(
        net.now,
        a,
        Protocol::Udp,
        "10.9.9.9:1".parse().unwrap(),
        SERVER.parse().unwrap(),
        &[0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
    );
    assert!(net.engine.poll_output().is_none());
    assert_eq!(net.engine.stats().packets_in, before.packets_in);
    assert!(
        matches!(&net.routes[..], [Route::Admitted { pid, .. }, Route::Closed { pid: closed }] if *pid == a && *closed == a),
        "admitted, then closed: {:?}",
        net.routes
    );
}

#[test]
fn without_auto_subscribe_a_track_flows_only_after_an_explicit_subscription() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let b = net.join_with("bob", "r", |_| {}, false, RoomSettings::default());
    let mid = net.offer(a, Some(MediaKind::Video)).unwrap();
    net.offer(b, None);
    net.run(300);
    for n in 0..3 {
        net.write_frame(a, mid, n, &vp8_frame(n));
        net.run(33);
    }
    assert_eq!(net.client(b).frames.len(), 0, "not subscribed yet");
    let track_sid = net.published_sid(a);
    let update = switchyard_api::signal::UpdateSubscription {
        track_sids: vec![track_sid.clone()],
        subscribe: true,
        quality: None,
    };
    net.send(b, ClientMessage::UpdateSubscription(update));
    net.run(100);
    assert!(
        net.signals(b)
            .iter()
            .any(|m| matches!(m, ServerMessage::SubscriptionUpdated(s) if s.track_sid == track_sid && s.subscribed))
    );
    for n in 3..13 {
        net.write_frame(a, mid, n, &vp8_frame(n));
        net.run(33);
    }
    assert!(net.client(b).frames.len() >= 8, "bob got {}", net.client(b).frames.len());

    let unknown = switchyard_api::signal::UpdateSubscription {
        track_sids: vec!["TR_nope".into()],
        subscribe: true,
        quality: None,
    };
    net.send(b, ClientMessage::UpdateSubscription(unknown));
    assert!(net.signals(b).iter().any(|m| matches!(m, ServerMessage::SubscriptionUpdated(s)
        if s.track_sid == "TR_nope" && s.error == Some(switchyard_api::signal::ErrorCode::TrackNotFound))));
}

#[test]
fn a_room_limited_to_vp9_does_not_negotiate_vp8() {
    let mut net = Net::new();
    let vp9_only = RoomSettings { allowed_codecs: vec![Codec::VP9, Codec::Opus], ..RoomSettings::default() };
    let a = net.join_with("alice", "clinic", |_| {}, true, vp9_only.clone());
    let mid = net.offer(a, Some(MediaKind::Video)).unwrap();
    net.run(300);
    let c = net.client(a);
    let codecs: Vec<_> =
        c.rtc.writer(mid).map(|w| w.payload_params().map(|p| p.spec().codec).collect()).unwrap_or_default();
    assert!(!codecs.is_empty(), "a video codec was negotiated");
    assert!(codecs.iter().all(|&k| k == str0m::format::Codec::Vp9), "only VP9 was accepted: {codecs:?}");
    let ServerMessage::Joined(j) = &net.signals(a)[0] else { panic!() };
    assert_eq!(j.room.enabled_codecs, vec![Codec::VP9, Codec::Opus]);
}

/// Alice publishes video; Bob joins and offers, but treats server offers as `offers` says.
fn bob_with(offers: Offers) -> (Net, Pid, Pid, Mid) {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let b = net.join("bob", "r", |_| {});
    net.client(b).offers = offers;
    let mid = net.offer(a, Some(MediaKind::Video)).unwrap();
    net.offer(b, None);
    // Alice's track appears once her connection is up; then the server offers it to bob.
    while net.offers(b).is_empty() && !net.client(b).closed {
        net.run(1);
    }
    (net, a, b, mid)
}

/// Issue 11 item 2: a client that missed the server's offer (it was still applying the
/// answer to its own) used to keep its subscriptions open with no media, for good. The
/// server now sends an unanswered offer again, unchanged.
#[test]
fn an_offer_the_client_missed_is_sent_again_and_media_flows() {
    let (mut net, a, b, mid) = bob_with(Offers::Drop);
    net.run(100);
    assert_eq!(net.offers(b).len(), 1, "offered once");
    net.client(b).offers = Offers::Answer;
    net.run(participant::REOFFER_AFTER.as_millis() as u64 + 300);
    let offers = net.offers(b);
    assert_eq!(offers.len(), 2, "sent again after {:?}", participant::REOFFER_AFTER);
    assert_eq!(offers[0], offers[1], "the same offer under the same id");
    assert!(net.signals(b).iter().any(|m| matches!(m, ServerMessage::SubscriptionUpdated(s) if s.subscribed)));
    for n in 0..10 {
        net.write_frame(a, mid, n, &vp8_frame(n));
        net.run(33);
    }
    assert!(net.client(b).frames.len() >= 8, "bob got {} frames", net.client(b).frames.len());
    net.run(10_000);
    assert_eq!(net.offers(b).len(), 2, "an answered offer is not sent again");
}

#[test]
fn an_offer_never_answered_fails_after_its_resends_and_is_offered_afresh() {
    let (mut net, _a, b, _mid) = bob_with(Offers::Drop);
    let mut waited = participant::REOFFER_AFTER;
    for resend in 0..participant::MAX_RESENDS {
        waited += participant::REOFFER_AFTER * 2u32.pow(resend + 1);
    }
    net.run(waited.as_millis() as u64 - 100);
    assert_eq!(net.offers(b).len(), 1 + participant::MAX_RESENDS as usize, "bounded resends");
    assert_eq!(net.errors(b, ErrorCode::NegotiationFailed), 0);
    net.run(200);
    assert_eq!(net.errors(b, ErrorCode::NegotiationFailed), 1, "withdrawn and reported");
    let offers = net.offers(b);
    assert_eq!(
        offers.last().unwrap().0,
        2,
        "then offered afresh under a new id: {:?}",
        offers.iter().map(|o| o.0).collect::<Vec<_>>()
    );
    assert!(!net.client(b).closed, "one failure does not remove the participant");
}

#[test]
fn answers_that_keep_failing_end_in_negotiation_failed_and_a_leave() {
    let (mut net, a, b, _mid) = bob_with(Offers::Garbage);
    net.run(50);
    assert_eq!(net.errors(b, ErrorCode::NegotiationFailed), participant::MAX_FAILED as usize);
    let ids: Vec<u32> = net.offers(b).iter().map(|o| o.0).collect();
    assert_eq!(ids, [1, 2, 3], "each failure is followed by a fresh offer, up to the limit");
    assert!(matches!(net.signals(b).last(), Some(ServerMessage::Leave(l))
        if l.reason == LeaveReason::ServerShutdown && l.can_reconnect));
    assert!(net.client(b).closed);
    assert!(net.routes.contains(&Route::Closed { pid: b }), "the router forgets bob");
    assert!(net.signals(a).iter().any(|m| matches!(m, ServerMessage::ParticipantLeft(p) if p.identity == "bob")));
}

/// Glare: bob offers while the server's offer to him is outstanding. The server yields:
/// it answers bob, withdraws its offer (a late answer to it is ignored) and offers again.
#[test]
fn glare_the_server_yields_and_offers_again() {
    let (mut net, a, b, mid) = bob_with(Offers::Drop);
    assert_eq!(net.offers(b).iter().map(|o| o.0).collect::<Vec<_>>(), [1], "the server's offer is out");
    // Bob adds a track of his own and offers, as a browser publishing would.
    net.client(b).offers = Offers::Answer;
    let c = net.client(b);
    let mut api = c.rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().expect("changes");
    c.pending = Some(pending);
    net.send(b, ClientMessage::Offer(SessionDescription { sdp: offer.to_sdp_string(), id: 2 }));
    let answers: Vec<u32> = net
        .signals(b)
        .iter()
        .filter_map(|m| if let ServerMessage::Answer(a) = m { Some(a.id) } else { None })
        .collect();
    assert_eq!(answers, [1, 2], "bob's offer is answered");
    assert_eq!(net.offers(b).iter().map(|o| o.0).collect::<Vec<_>>(), [1, 2], "and the server offers again");
    // A late answer to the withdrawn offer changes nothing.
    net.send(b, ClientMessage::Answer(SessionDescription { sdp: "v=0 late".into(), id: 1 }));
    assert_eq!(net.errors(b, ErrorCode::NegotiationFailed), 0, "an answer to a withdrawn offer is ignored");
    net.run(300);
    for n in 0..10 {
        net.write_frame(a, mid, n, &vp8_frame(n));
        net.run(33);
    }
    assert!(net.client(b).frames.len() >= 8, "bob got {} frames", net.client(b).frames.len());
    net.run(participant::REOFFER_AFTER.as_millis() as u64 * 4);
    assert_eq!(net.offers(b).len(), 2, "nothing left unanswered");
}

#[test]
fn keyframe_requests_are_throttled_and_the_held_back_one_is_sent_later() {
    let (mut net, a, _b, mid) = alice_publishes_to_bob();
    let requests = |net: &Net| {
        let report = net.engine.report();
        report[0].participants.iter().find(|p| p.identity == "alice").unwrap().tracks[0].keyframe_requests
    };
    assert_eq!(requests(&net), 1, "bob's new subscription asked for a keyframe");
    // Alice's stream exists once she sends; then requests can reach her.
    for n in 0..20 {
        net.write_frame(a, mid, n, &vp8_frame(n));
        net.run(33);
    }
    let at_alice = net.client(a).keyframe_requests;
    let c = net.join("carol", "r", |_| {});
    net.offer(c, None);
    assert_eq!(requests(&net), 2, "carol's new subscription asks at once");
    net.run(100);
    let d = net.join("dave", "r", |_| {});
    net.offer(d, None);
    assert_eq!(requests(&net), 2, "dave's, 100 ms later, is held back");
    net.run(390);
    assert_eq!(requests(&net), 2);
    net.run(20);
    assert_eq!(requests(&net), 3, "and sent when the 500 ms window ends");
    net.run(100);
    assert!(net.client(a).keyframe_requests >= at_alice + 2, "both reached alice");
    // Both new subscribers start with the next keyframe.
    net.write_frame(a, mid, 0, &vp8_frame(0));
    net.run(50);
    assert!(!net.client(c).frames.is_empty() && !net.client(d).frames.is_empty());
}

/// Several packets for one subscriber in one batch (the driver feeds a receive burst
/// before polling): each `write_rtp` is followed by a drain of the subscriber's `Rtc`
/// (a debug assertion in the forwarder checks it), and every packet arrives, in order.
#[test]
fn several_packets_for_one_subscriber_in_one_batch_all_arrive_in_order() {
    let (mut net, a, b, mid) = alice_publishes_to_bob();
    let now = net.now;
    let mut burst = vec![];
    for n in 0..8 {
        net.write_frame(a, mid, n, &vp8_frame(n));
        burst.extend(net.client_datagrams(a));
    }
    assert!(burst.len() >= 8, "a burst of {} datagrams", burst.len());
    for (src, dst, data) in burst {
        net.engine.handle_receive(now, a, Protocol::Udp, src, dst, &data);
    }
    net.flush();
    net.run(50);
    let got: Vec<u32> =
        net.client(b).frames.iter().map(|(_, d)| u32::from_be_bytes(d[10..14].try_into().unwrap())).collect();
    assert_eq!(got, (0..8).collect::<Vec<_>>());
    let report = net.engine.report();
    let bob = report[0].participants.iter().find(|p| p.identity == "bob").unwrap();
    assert_eq!(bob.subscriptions[0].packets, 8);
}

#[test]
fn leaving_empties_the_track_index() {
    let (mut net, a, b, _mid) = alice_publishes_to_bob();
    assert_eq!(net.engine.index.len(), 1, "alice's track has a subscriber");
    net.send(b, ClientMessage::Leave(Default::default()));
    assert_eq!(net.engine.index.len(), 0);
    let c = net.join("carol", "r", |_| {});
    net.offer(c, None);
    net.run(100);
    assert_eq!(net.engine.index.len(), 1);
    net.send(a, ClientMessage::Leave(Default::default()));
    assert_eq!(net.engine.index.len(), 0, "a publisher leaving takes its tracks out");
}

/// The forwarding path allocates nothing per packet in our code: one publisher, three
/// subscribers, packets fed to the engine and its outputs taken, as the shard does. The
/// counting allocator (`probe`) tallies this thread's allocations, with str0m's own
/// (decrypting, queueing, encrypting) counted apart.
#[test]
fn forwarding_allocates_nothing_per_packet_in_our_code() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let subscribers: Vec<Pid> = ["bob", "carol", "dave"].iter().map(|s| net.join(s, "r", |_| {})).collect();
    let mid = net.offer(a, Some(MediaKind::Video)).unwrap();
    for &s in &subscribers {
        net.offer(s, None);
    }
    net.run(300);
    // Frames go from alice's client to the engine; the engine's output is taken and
    // dropped (the subscribers' clients are not needed for this), as the shard sends it.
    let forward = |net: &mut Net, frames: std::ops::Range<u32>| {
        let mut datagrams = vec![];
        for n in frames {
            net.write_frame(a, mid, n, &vp8_frame(n));
            datagrams.extend(net.client_datagrams(a));
        }
        let mut transmits = 0u64;
        let before = probe::counts();
        // One packet every 3 ms (about 570 kbit/s to each subscriber, under the pacer's
        // rate at the initial bandwidth estimate), with the timeouts the shard would serve (str0m
        // paces its sends: most transmits leave on a timeout).
        for (src, dst, data) in &datagrams {
            net.engine.handle_receive(net.now, a, Protocol::Udp, *src, *dst, data);
            net.now += Duration::from_millis(3);
            net.engine.handle_timeout(net.now);
            while let Some(out) = net.engine.poll_output() {
                if matches!(out, Output::Transmit(_)) {
                    transmits += 1;
                }
            }
        }
        let after = probe::counts();
        let spent = probe::Counts { ours: after.ours - before.ours, str0m: after.str0m - before.str0m };
        (spent, transmits)
    };
    // Warm-up: the engine's queues grow to their working size.
    let (_, warm) = forward(&mut net, 0..100);
    assert!(warm >= 300, "{warm} transmits for 100 packets to 3 subscribers");
    // The allocation pass (once per `allocation::PERIOD`, not per packet) builds its
    // lists on the heap: the measured window (200 packets, 600 ms) sits between two.
    net.now = net.engine.next_allocation;
    net.engine.handle_timeout(net.now);
    while net.engine.poll_output().is_some() {}
    let (counts, transmits) = forward(&mut net, 100..300);
    assert!(transmits >= 600, "{transmits} transmits for 200 packets to 3 subscribers");
    assert!(counts.str0m > 0, "the probe sees str0m's allocations: {counts:?}");
    println!(
        "200 packets to 3 subscribers: {transmits} transmits; allocations: ours {}, str0m {} ({:.1} per transmit)",
        counts.ours,
        counts.str0m,
        counts.str0m as f64 / transmits as f64
    );
    assert_eq!(counts.ours, 0, "our code allocated on the forwarding path: {counts:?}");
}

/// A VP8 frame of simulcast layer `layer` (0 = q, 1 = h, 2 = f): a keyframe or a delta
/// frame, with the layer and `n` after the header so the subscriber can tell them apart.
fn vp8_layer_frame(layer: u8, n: u32, keyframe: bool) -> Vec<u8> {
    let mut f =
        if keyframe { vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01] } else { vec![0x11; 10] };
    f.push(layer);
    f.extend_from_slice(&n.to_be_bytes());
    f.extend(std::iter::repeat_n(0xab, 200));
    f
}

const RIDS: [&str; 3] = ["q", "h", "f"];

impl Net {
    /// `pid` announces and offers one three-layer simulcast video track.
    fn offer_simulcast(&mut self, pid: Pid) -> Mid {
        let layers = RIDS
            .iter()
            .zip([VideoQuality::Low, VideoQuality::Medium, VideoQuality::High])
            .enumerate()
            .map(|(i, (rid, quality))| switchyard_api::signal::SimulcastLayer {
                rid: (*rid).into(),
                quality,
                width: 320 << i,
                height: 180 << i,
                max_bitrate_bps: None,
            })
            .collect();
        self.send(
            pid,
            ClientMessage::PublishTrack(PublishTrackRequest {
                cid: "cam".into(),
                name: "camera".into(),
                kind: TrackKind::Video,
                source: TrackSource::Camera,
                muted: false,
                width: Some(1280),
                height: Some(720),
                layers,
            }),
        );
        let mut sim = Simulcast::new();
        for rid in RIDS {
            sim.add_send_layer(SimulcastLayer::new(rid));
        }
        self.offer_layers(pid, Some(MediaKind::Video), Some(sim)).expect("a sending line")
    }

    /// One frame on every layer (`key`: which layers send a keyframe), 33 ms apart.
    fn simulcast_frames(&mut self, pid: Pid, mid: Mid, n: u32, key: [bool; 3]) {
        let now = self.now;
        let c = self.client(pid);
        for (i, rid) in RIDS.iter().enumerate() {
            let writer = c.rtc.writer(mid).expect("writer").rid(Rid::from(*rid));
            let pt = writer.payload_params().next().expect("a negotiated codec").pt();
            let time = MediaTime::from_90khz(u64::from(n) * 3000);
            writer.write(pt, now, time, vp8_layer_frame(i as u8, n, key[i])).unwrap();
        }
        self.run(33);
    }

    /// The layers of the frames `pid` received since `from` (index into its frames).
    fn layers_received(&self, pid: Pid, from: usize) -> Vec<u8> {
        let c = self.clients.iter().find(|c| c.pid == pid).unwrap();
        c.frames[from..].iter().map(|(_, d)| d[10]).collect()
    }
}

/// Simulcast on the virtual clock: a subscriber starts on the default layer (medium)
/// once it brings a keyframe, and a keyframe of another layer does not start it; asked for another layer it keeps the current one (no freeze) and asks the
/// publisher for a keyframe of the new one, then switches on that keyframe and receives
/// that layer alone, every frame of it.
#[test]
fn simulcast_switches_layers_only_on_a_keyframe_of_the_asked_layer() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let b = net.join("bob", "r", |_| {});
    let mid = net.offer_simulcast(a);
    net.offer(b, None);
    net.run(300);
    let sid = net.published_sid(a);
    let mut n = 0;
    let mut frames = |net: &mut Net, count: u32, key: [bool; 3]| {
        for i in 0..count {
            let key = if i == 0 { key } else { [false; 3] };
            net.simulcast_frames(a, mid, n, key);
            n += 1;
        }
    };

    // Delta frames only: nothing reaches bob, and alice is asked for a keyframe.
    let asked = net.client(a).keyframe_requests;
    frames(&mut net, 10, [false; 3]);
    assert!(net.layers_received(b, 0).is_empty(), "no keyframe yet: {:?}", net.layers_received(b, 0));
    assert!(net.client(a).keyframe_requests > asked, "a subscriber waiting for a keyframe asks for one");

    // A keyframe on the low layer does not start bob: not his layer.
    frames(&mut net, 3, [true, false, false]);
    assert!(net.layers_received(b, 0).is_empty(), "{:?}", net.layers_received(b, 0));
    // A keyframe on the medium layer, the default: bob starts there and stays there.
    frames(&mut net, 10, [false, true, false]);
    let start = net.layers_received(b, 0);
    assert!(start.len() >= 9 && start.iter().all(|&l| l == 1), "medium layer only: {start:?}");

    // Bob asks for high: the medium layer goes on until high's keyframe, which is asked for.
    let mark = net.client(b).frames.len();
    let rids_before = net.client(a).keyframe_rids.len();
    net.send(
        b,
        ClientMessage::UpdateSubscription(switchyard_api::signal::UpdateSubscription {
            track_sids: vec![sid],
            subscribe: true,
            quality: Some(VideoQuality::High),
        }),
    );
    frames(&mut net, 10, [false; 3]);
    let waiting = net.layers_received(b, mark);
    assert!(waiting.len() >= 9 && waiting.iter().all(|&l| l == 1), "no freeze while waiting: {waiting:?}");
    let asked_for: Vec<_> = net.client(a).keyframe_rids[rids_before..].to_vec();
    assert!(asked_for.contains(&Some(Rid::from("f"))), "a keyframe of the high layer was asked for: {asked_for:?}");

    // High's keyframe: bob switches and gets every high frame, nothing else.
    let mark = net.client(b).frames.len();
    frames(&mut net, 10, [false, false, true]);
    // (The medium layer's frame written just before that keyframe still goes out.)
    let after = net.layers_received(b, mark);
    let high: Vec<u8> = after.iter().copied().skip_while(|&l| l == 1).collect();
    assert_eq!(high, vec![2; 10], "from the keyframe on, the high layer alone, all 10 frames: {after:?}");
    assert!(after.len() - high.len() <= 1, "at most the one medium frame before the keyframe: {after:?}");
}

#[test]
fn a_room_opened_by_the_room_service_expires_empty_and_keeps_a_given_sid() {
    use super::admin::{Admin, Answer};
    let mut net = Net::new();
    let open = |exclusive| Admin::OpenRoom {
        room: "r".into(),
        settings: RoomSettings {
            empty_timeout: Duration::from_secs(3),
            sid: Some("RM_uid-1".into()),
            ..RoomSettings::default()
        },
        exclusive,
    };
    net.engine.handle_command(net.now, Command::Admin(open(true)));
    let Some(Ok(Answer::Room(info))) = net.engine.take_reply() else { panic!("opened") };
    assert_eq!((info.sid.as_str(), info.num_participants), ("RM_uid-1", 0));
    net.engine.handle_command(net.now, Command::Admin(open(true)));
    assert!(
        matches!(net.engine.take_reply(), Some(Err(e)) if e.code == switchyard_api::room_service::ApiErrorCode::RoomExists)
    );
    net.engine.handle_command(net.now, Command::Admin(open(false)));
    assert!(matches!(net.engine.take_reply(), Some(Ok(Answer::Room(_)))), "not exclusive: the open room");
    net.run(2_000);
    assert!(net.engine.has_room("r"), "inside the empty timeout");
    net.run(1_500);
    assert!(!net.engine.has_room("r"), "nobody came");
    assert!(net.events.iter().any(|e| matches!(e, RoomEvent::RoomFinished { room_sid, .. } if room_sid == "RM_uid-1")));
}

#[test]
fn leaving_with_tracks_unpublishes_them_with_sids_and_the_reason() {
    let (mut net, a, _b, _mid) = alice_publishes_to_bob();
    let track = net.published_sid(a);
    net.send(a, ClientMessage::Leave(Default::default()));
    let unpublished = net.events.iter().find_map(|e| match e {
        RoomEvent::TrackUnpublished { participant, track_sid, room_sid, .. } => {
            Some((participant, track_sid, room_sid))
        }
        _ => None,
    });
    let (who, sid, room_sid) = unpublished.expect("track_unpublished on leave");
    assert_eq!((who.identity.as_str(), sid.as_str()), ("alice", track.as_str()));
    assert!(room_sid.starts_with("RM_"));
    assert!(net.events.iter().any(|e| matches!(e, RoomEvent::ParticipantLeft { participant, reason, .. }
        if participant.identity == "alice" && *reason == LeaveReason::ClientRequest)));
}

impl Net {
    /// `pid`'s socket drops: the engine holds it; the test client hears nothing more.
    fn detach(&mut self, pid: Pid) {
        self.client(pid).detached = true;
        self.engine.handle_command(self.now, Command::Detach { pid, session: pid });
        self.flush();
    }

    /// A new socket (session `session`) of `identity` in `room` resumes `participant_sid`.
    fn resume(&mut self, session: Pid, identity: &str, room: &str, participant_sid: &str, token: &str) {
        let claims = Claims::new("k", identity, 0, 600).with_grants(Grants::join(room));
        let args = ResumeArgs {
            session,
            room: room.into(),
            claims,
            participant_sid: participant_sid.into(),
            reconnect_token: token.into(),
            next_token: format!("rt{session}"),
            ice_servers: vec![],
        };
        self.engine.handle_command(self.now, Command::Resume(Box::new(args)));
        self.flush();
    }

    fn participant_sid(&self, pid: Pid) -> String {
        self.signals(pid)
            .iter()
            .find_map(|m| if let ServerMessage::Joined(j) = m { Some(j.participant.sid.clone()) } else { None })
            .expect("joined")
    }

    /// The `resume_failed` errors sent to session `session`.
    fn resume_failed(&self, session: Pid) -> usize {
        self.stray
            .iter()
            .filter(|(p, m)| *p == session && matches!(m, ServerMessage::Error(e) if e.code == ErrorCode::ResumeFailed))
            .count()
    }

    fn left(&self, pid: Pid, identity: &str) -> Option<LeaveReason> {
        self.signals(pid).iter().find_map(|m| match m {
            ServerMessage::ParticipantLeft(p) if p.identity == identity => Some(p.reason),
            _ => None,
        })
    }

    /// Write one 20 ms Opus frame with an RFC 6464 level (`dbov`: 0 loudest, 127 silence).
    fn write_audio(&mut self, pid: Pid, mid: Mid, n: u32, dbov: i8) {
        let now = self.now;
        let c = self.client(pid);
        let writer = c.rtc.writer(mid).expect("writer").audio_level(-dbov, dbov < 60);
        let pt = writer.payload_params().next().expect("a negotiated codec").pt();
        let time = MediaTime::new(u64::from(n) * 960, str0m::media::Frequency::FORTY_EIGHT_KHZ);
        writer.write(pt, now, time, vec![0xfc, 0xff, 0xfe, n as u8]).unwrap();
    }

    /// `ms` of audio from each `(pid, mid, dbov)`, a frame every 20 ms.
    fn talk(&mut self, ms: u64, voices: &[(Pid, Mid, i8)], n: &mut u32) {
        for _ in 0..ms / 20 {
            for &(pid, mid, dbov) in voices {
                self.write_audio(pid, mid, *n, dbov);
            }
            *n += 1;
            self.run(20);
        }
    }

    /// The `active_speakers` messages `pid` got, as lists of participant sids.
    fn speaker_lists(&self, pid: Pid) -> Vec<Vec<String>> {
        self.signals(pid)
            .iter()
            .filter_map(|m| match m {
                ServerMessage::ActiveSpeakers(s) => {
                    Some(s.speakers.iter().map(|s| s.participant_sid.clone()).collect())
                }
                _ => None,
            })
            .collect()
    }

    fn sid_of(&self, pid: Pid) -> String {
        self.engine.peers[&pid].sid.clone()
    }

    /// The last connection-quality verdict `pid` heard about `about`.
    fn quality_of(&self, pid: Pid, about: Pid) -> Option<switchyard_api::signal::ConnectionQuality> {
        let sid = self.sid_of(about);
        self.signals(pid).iter().rev().find_map(|m| match m {
            ServerMessage::ConnectionQuality(q) => {
                q.updates.iter().find(|u| u.participant_sid == sid).map(|u| u.quality)
            }
            _ => None,
        })
    }
}

/// The lines of `sdp`'s media section `mid`.
fn section(sdp: &str, mid: Mid) -> &str {
    let tag = format!("\r\na=mid:{mid}\r\n");
    sdp.split("\r\nm=").find(|s| format!("{s}\r\n").contains(&tag)).unwrap_or_else(|| panic!("no mid {mid} in {sdp}"))
}

#[test]
fn a_line_the_client_offers_sendrecv_is_answered_recvonly_and_stays_so() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let b = net.join("bob", "r", |_| {});
    let mid = net.offer_dir(a, Some(MediaKind::Video), Direction::SendRecv, None).unwrap();
    let answer = net
        .signals(a)
        .iter()
        .find_map(|m| if let ServerMessage::Answer(x) = m { Some(x.sdp.clone()) } else { None })
        .expect("answered");
    assert!(section(&answer, mid).contains("a=recvonly"), "{answer}");
    assert_eq!(net.client(a).rtc.media(mid).unwrap().direction(), Direction::SendOnly);
    // Bob publishes: alice's next offer from the server keeps her line receive-only.
    net.offer(b, Some(MediaKind::Video));
    net.run(300);
    let offers = net.offers(a);
    let (_, offer) = offers.last().expect("alice was offered bob's track");
    assert!(section(offer, mid).contains("a=recvonly"), "{offer}");
    assert_eq!(net.client(a).rtc.media(mid).unwrap().direction(), Direction::SendOnly);
    assert!(!net.client(a).added.contains(&mid));
}

#[test]
fn track_info_carries_the_negotiated_mime_type_before_any_packet() {
    let (net, a, b, _) = alice_publishes_to_bob();
    let published = net
        .signals(a)
        .iter()
        .find_map(|m| if let ServerMessage::TrackPublished(t) = m { Some(t.track.clone()) } else { None })
        .unwrap();
    assert_eq!(published.mime_type.as_deref(), Some("video/VP8"));
    let updated = net
        .signals(b)
        .iter()
        .find_map(|m| match m {
            ServerMessage::ParticipantUpdated(p) if !p.participant.tracks.is_empty() => {
                Some(p.participant.tracks[0].clone())
            }
            _ => None,
        })
        .expect("bob heard of alice's track");
    assert_eq!(updated.mime_type.as_deref(), Some("video/VP8"));
}

impl Net {
    /// Give `pid`'s client its own codec list (before it offers).
    fn codecs(&mut self, pid: Pid, edit: impl FnOnce(str0m::RtcConfig) -> str0m::RtcConfig) {
        let now = self.now;
        let c = self.client(pid);
        c.rtc = edit(Rtc::builder()).build(now);
        c.rtc.add_local_candidate(Candidate::host(c.addr, "udp").unwrap());
    }
}

#[test]
fn a_held_participant_keeps_its_media_flowing_and_resumes_with_a_snapshot() {
    let (mut net, a, b, mid) = alice_publishes_to_bob();
    let sid = net.participant_sid(a);
    let track = net.published_sid(a);
    net.detach(a);
    assert_eq!(net.engine.stats().held, 1);
    // 10 s without a socket: alice's media still reaches bob, and bob sees no leave.
    let before = net.client(b).frames.len();
    for n in 0..300 {
        net.write_frame(a, mid, n, &vp8_frame(n));
        net.run(33);
    }
    let during = net.client(b).frames.len() - before;
    assert!(during >= 290, "bob got {during} of 300 frames while alice's socket was down");
    assert_eq!(net.left(b, "alice"), None);
    assert!(!net.events.iter().any(|e| matches!(e, RoomEvent::TrackUnpublished { .. })));

    net.resume(100, "alice", "r", &sid, "rt");
    assert!(net.routes.contains(&Route::Resumed { session: 100, pid: a }));
    let resumed = net
        .signals(a)
        .iter()
        .find_map(|m| if let ServerMessage::Resumed(r) = m { Some(r.clone()) } else { None })
        .expect("resumed");
    assert_eq!(resumed.participant.sid, sid);
    assert!(resumed.participant.tracks.iter().any(|t| t.sid == track), "{:?}", resumed.participant);
    assert_eq!(resumed.other_participants.iter().map(|p| p.identity.as_str()).collect::<Vec<_>>(), ["bob"]);
    assert_eq!(resumed.reconnect_token, "rt100", "a fresh token for the next resume");
    let stats = net.engine.stats();
    assert_eq!((stats.held, stats.resumes), (0, 1));
    // Past the window: resumed, so held no more; still in the room.
    net.run(16_000);
    assert_eq!(net.left(b, "alice"), None);
    assert!(!net.client(a).closed);
}

#[test]
fn after_the_window_a_held_participant_leaves_with_timeout_and_a_resume_fails() {
    let (mut net, a, b, _mid) = alice_publishes_to_bob();
    let sid = net.participant_sid(a);
    let track = net.published_sid(a);
    net.detach(a);
    net.run(14_900);
    assert_eq!(net.left(b, "alice"), None, "within the window");
    net.run(200);
    assert_eq!(net.left(b, "alice"), Some(LeaveReason::Timeout));
    assert!(
        net.events.iter().any(|e| matches!(e, RoomEvent::TrackUnpublished { track_sid, .. } if *track_sid == track))
    );
    assert!(net.routes.contains(&Route::Closed { pid: a }));
    assert_eq!(net.engine.stats().held, 0);

    net.resume(100, "alice", "r", &sid, "rt");
    assert_eq!(net.resume_failed(100), 1);
    assert!(net.routes.contains(&Route::Closed { pid: 100 }), "the resuming socket closes");
    assert_eq!(net.engine.stats().resume_failures[ResumeFailure::UnknownSession as usize], 1);
}

#[test]
fn a_resume_needs_the_current_token_the_same_identity_and_room() {
    let (mut net, a, b, _mid) = alice_publishes_to_bob();
    let sid = net.participant_sid(a);
    net.detach(a);
    net.resume(100, "alice", "r", &sid, "rT");
    net.resume(101, "alice", "r", &sid, "r");
    net.resume(102, "mallory", "r", &sid, "rt");
    net.resume(103, "alice", "other", &sid, "rt");
    net.resume(104, "alice", "r", "PA_nobody", "rt");
    for session in 100..=104 {
        assert_eq!(net.resume_failed(session), 1, "session {session}");
    }
    let f = net.engine.stats().resume_failures;
    assert_eq!(
        (
            f[ResumeFailure::BadToken as usize],
            f[ResumeFailure::WrongIdentity as usize],
            f[ResumeFailure::UnknownSession as usize]
        ),
        (2, 1, 2)
    );
    assert_eq!(net.engine.stats().held, 1, "failed resumes leave the held participant alone");
    assert!(!net.signals(a).iter().any(|m| matches!(m, ServerMessage::Resumed(_))));

    net.resume(105, "alice", "r", &sid, "rt");
    assert!(net.routes.contains(&Route::Resumed { session: 105, pid: a }));
    // The token is spent: the same one again fails, the new one works.
    net.detach(a);
    assert_eq!(net.engine.stats().held, 0, "a detach from the replaced session is ignored");
    net.engine.handle_command(net.now, Command::Detach { pid: a, session: 105 });
    assert_eq!(net.engine.stats().held, 1);
    net.resume(106, "alice", "r", &sid, "rt");
    assert_eq!(net.resume_failed(106), 1, "a spent token");
    net.resume(107, "alice", "r", &sid, "rt105");
    assert!(net.routes.contains(&Route::Resumed { session: 107, pid: a }));
    assert_eq!(net.left(b, "alice"), None);
    // A leave from a replaced socket (its close frame arriving after the resume) is
    // ignored too; one from the attached session is a leave.
    let leave = |session| Command::Leave { pid: a, session, reason: LeaveReason::ClientRequest };
    net.engine.handle_command(net.now, leave(105));
    net.flush();
    assert_eq!(net.left(b, "alice"), None, "a late leave from a replaced socket");
    net.engine.handle_command(net.now, leave(107));
    net.flush();
    assert_eq!(net.left(b, "alice"), Some(LeaveReason::ClientRequest));
}

#[test]
fn with_no_resume_window_a_lost_socket_leaves_at_once() {
    let mut net = Net::new();
    net.engine.cfg.resume_window = Duration::ZERO;
    let a = net.join("alice", "r", |_| {});
    let b = net.join("bob", "r", |_| {});
    net.detach(a);
    assert_eq!(net.left(b, "alice"), Some(LeaveReason::Timeout));
}

#[test]
fn a_draining_node_tells_clients_to_rejoin_through_the_signaling_url() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    net.engine.handle_command(net.now, Command::Drain);
    net.flush();
    let leave = net
        .signals(a)
        .iter()
        .find_map(|m| if let ServerMessage::Leave(l) = m { Some(l.clone()) } else { None })
        .expect("leave");
    assert_eq!(leave.reason, LeaveReason::NodeDraining);
    assert!(leave.can_reconnect);
    assert_eq!(leave.reconnect, Some(switchyard_api::signal::Reconnect::Rejoin));
}

#[test]
fn active_speakers_follow_the_audio_levels_loudest_first_and_only_on_change() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let b = net.join("bob", "r", |_| {});
    let c = net.join("carol", "r", |_| {});
    let am = net.offer(a, Some(MediaKind::Audio)).unwrap();
    let bm = net.offer(b, Some(MediaKind::Audio)).unwrap();
    net.offer(c, None);
    net.run(300);
    let (alice, bob) = (net.sid_of(a), net.sid_of(b));
    let mut n = 0;
    net.talk(1500, &[(a, am, 20), (b, bm, 127)], &mut n);
    assert_eq!(net.speaker_lists(c), vec![vec![alice.clone()]], "alice speaks, bob is silent");
    net.talk(1500, &[(a, am, 30), (b, bm, 10)], &mut n);
    assert_eq!(net.speaker_lists(c).last(), Some(&vec![bob.clone(), alice.clone()]), "both, bob louder");
    net.talk(3000, &[(a, am, 127), (b, bm, 127)], &mut n);
    let lists = net.speaker_lists(c);
    assert_eq!(lists.last(), Some(&vec![]), "nobody speaks: an empty list");
    assert!(lists.len() <= 5, "only changes are sent: {lists:?}");
    assert_eq!(net.speaker_lists(a), lists, "everyone in the room hears the same");
    // Pauses between words (one silent interval) do not drop a speaker.
    let before = net.speaker_lists(c).len();
    for _ in 0..6 {
        net.talk(300, &[(a, am, 20), (b, bm, 127)], &mut n);
        net.talk(300, &[(a, am, 127), (b, bm, 127)], &mut n);
    }
    assert_eq!(net.speaker_lists(c).len(), before + 1, "one change (alice speaks), no flapping");
}

#[test]
fn a_muted_speaker_is_not_listed() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let c = net.join("carol", "r", |_| {});
    let am = net.offer(a, Some(MediaKind::Audio)).unwrap();
    net.offer(c, None);
    net.run(300);
    let sid = net.published_sid(a);
    net.send(a, ClientMessage::MuteTrack(switchyard_api::signal::MuteTrack { track_sid: sid, muted: true }));
    let mut n = 0;
    net.talk(1500, &[(a, am, 10)], &mut n);
    assert!(net.speaker_lists(c).is_empty(), "{:?}", net.speaker_lists(c));
}

#[test]
fn connection_quality_is_excellent_on_a_clean_link_poor_with_loss_and_sent_on_change() {
    use switchyard_api::signal::ConnectionQuality;
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let b = net.join("bob", "r", |_| {});
    let am = net.offer(a, Some(MediaKind::Audio)).unwrap();
    net.offer(b, None);
    net.run(300);
    let mut n = 0;
    net.talk(7000, &[(a, am, 30)], &mut n);
    assert_eq!(net.quality_of(b, a), Some(ConnectionQuality::Excellent), "{:?}", net.signals(b));
    assert_eq!(net.quality_of(a, a), Some(ConnectionQuality::Excellent), "a participant hears its own");
    let updates =
        |net: &Net| net.signals(b).iter().filter(|m| matches!(m, ServerMessage::ConnectionQuality(_))).count();
    let quiet = updates(&net);
    net.talk(4000, &[(a, am, 30)], &mut n);
    assert_eq!(updates(&net), quiet, "nothing changed, nothing sent");
    // About one datagram in six between alice and the server is lost, each way.
    net.client(a).loss = 0.17;
    net.talk(8000, &[(a, am, 30)], &mut n);
    assert_eq!(net.quality_of(b, a), Some(ConnectionQuality::Poor), "{:?}", &net.signals(b)[quiet..]);
    let stats = net.engine.stats().quality;
    assert!(stats.loss.count() > 0 && stats.loss.counts[9] == 0, "loss fractions observed: {:?}", stats.loss);
    // Receiver reports lag by a report or two, and a verdict needs two evaluations.
    net.client(a).loss = 0.0;
    net.talk(12_000, &[(a, am, 30)], &mut n);
    assert_eq!(net.quality_of(b, a), Some(ConnectionQuality::Excellent), "recovers");
}

#[test]
fn a_subscriber_is_offered_the_publishers_codec_and_its_rtx_only() {
    let (net, _, b, _) = alice_publishes_to_bob();
    let offers = net.offers(b);
    let (_, offer) = offers.iter().find(|(_, sdp)| sdp.contains("m=video")).expect("bob was offered the video");
    let video = offer.split("\r\nm=").find(|s| s.starts_with("video")).unwrap();
    let codecs: Vec<&str> = video
        .split("\r\n")
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|l| l.split(' ').nth(1)?.split('/').next())
        .collect();
    assert!(!codecs.is_empty() && codecs.iter().all(|&c| c == "VP8" || c == "rtx"), "{codecs:?}");
    assert!(codecs.contains(&"rtx"), "the codec's RTX is offered too: {codecs:?}");
    let pts = video.split("\r\n").next().unwrap().split(' ').skip(3).count();
    assert_eq!(pts, codecs.len(), "the m= line lists exactly the kept payload types: {video}");
}

#[test]
fn a_subscriber_that_cannot_decode_the_publishers_codec_is_told_so() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let b = net.join("bob", "r", |_| {});
    net.codecs(a, |c| c.clear_codecs().enable_vp9(true));
    net.codecs(b, |c| c.clear_codecs().enable_vp8(true));
    net.offer(a, Some(MediaKind::Video));
    net.offer(b, None);
    net.run(300);
    let sid = net.published_sid(a);
    let updates: Vec<_> = net
        .signals(b)
        .iter()
        .filter_map(|m| if let ServerMessage::SubscriptionUpdated(s) = m { Some(s.clone()) } else { None })
        .collect();
    assert!(
        updates.iter().any(|s| s.track_sid == sid && !s.subscribed && s.error == Some(ErrorCode::CodecNotSupported)),
        "{updates:?}"
    );
    assert!(!updates.iter().any(|s| s.subscribed), "{updates:?}");
    assert!(
        net.signals(b).iter().any(|m| matches!(m, ServerMessage::Error(e)
        if e.code == ErrorCode::CodecNotSupported && e.message.contains("VP9"))),
        "{:?}",
        net.signals(b)
    );
}

#[test]
fn a_subscribe_only_client_that_never_offers_is_offered_its_subscriptions() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let b = net.join("bob", "r", |_| {});
    let mid = net.offer(a, Some(MediaKind::Video)).unwrap();
    net.run(100);
    assert!(net.offers(b).is_empty(), "within the grace the server waits for bob's own offer");
    net.run(900);
    assert_eq!(net.offers(b).len(), 1, "{:?}", net.signals(b));
    assert!(net.client(b).connected, "ICE and DTLS complete with the server as offerer");
    assert!(net.signals(b).iter().any(|m| matches!(m, ServerMessage::SubscriptionUpdated(s) if s.subscribed)));
    for n in 0..10 {
        net.write_frame(a, mid, n, &vp8_frame(n));
        net.run(33);
    }
    assert!(net.client(b).frames.len() >= 8, "bob got {} of 10 frames", net.client(b).frames.len());
}

#[test]
fn a_client_that_announced_a_track_is_not_offered_first() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let b = net.join("bob", "r", |_| {});
    net.offer(a, Some(MediaKind::Video));
    net.send(
        b,
        ClientMessage::PublishTrack(PublishTrackRequest {
            cid: "cam".into(),
            name: "cam".into(),
            kind: TrackKind::Video,
            source: TrackSource::Camera,
            muted: false,
            width: None,
            height: None,
            layers: vec![],
        }),
    );
    net.run(2000);
    assert!(net.offers(b).is_empty(), "bob will offer his track; the server waits for that offer");
}

#[test]
fn a_client_offer_crossing_the_servers_first_offer_wins_and_the_server_offers_again() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let b = net.join("bob", "r", |_| {});
    net.client(b).offers = Offers::Drop;
    net.offer(a, Some(MediaKind::Video));
    net.run(1000);
    assert_eq!(net.offers(b).len(), 1, "the server offered first");
    // Bob never saw it and offers himself: the server yields, answers, and offers again.
    net.client(b).offers = Offers::Answer;
    net.offer(b, None);
    net.run(300);
    let ids: Vec<u32> = net.offers(b).iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_ne!(ids[0], ids[1], "the withdrawn offer's changes come under a new id");
    assert!(net.signals(b).iter().any(|m| matches!(m, ServerMessage::Answer(_))));
    assert!(net.signals(b).iter().any(|m| matches!(m, ServerMessage::SubscriptionUpdated(s) if s.subscribed)));
}

#[test]
fn a_publisher_offering_only_disallowed_codecs_gets_codec_not_allowed_and_no_track() {
    let mut net = Net::new();
    let vp9_only = RoomSettings { allowed_codecs: vec![Codec::VP9, Codec::Opus], ..RoomSettings::default() };
    let a = net.join_with("alice", "clinic", |_| {}, true, vp9_only.clone());
    let b = net.join_with("bob", "clinic", |_| {}, true, vp9_only);
    net.codecs(a, |c| c.clear_codecs().enable_vp8(true).enable_h264(true));
    net.offer(a, Some(MediaKind::Video));
    net.offer(b, None);
    net.run(300);
    let errors: Vec<_> = net
        .signals(a)
        .iter()
        .filter_map(|m| if let ServerMessage::Error(e) = m { Some(e.clone()) } else { None })
        .collect();
    assert!(
        errors.iter().any(|e| e.code == ErrorCode::CodecNotAllowed && e.message.contains("VP9, Opus")),
        "{errors:?}"
    );
    assert!(!net.signals(a).iter().any(|m| matches!(m, ServerMessage::TrackPublished(_))));
    assert!(net.offers(b).is_empty(), "bob is offered nothing");
    assert!(!net.client(a).closed, "alice stays, and may publish an allowed codec");
}

#[test]
fn with_five_percent_loss_each_way_nacks_and_rtx_recover_nearly_every_packet() {
    let (mut net, a, b, mid) = alice_publishes_to_bob();
    net.client(a).loss = 0.05;
    net.client(b).loss = 0.05;
    let frames = 600;
    for n in 0..frames {
        net.write_frame(a, mid, n, &vp8_frame(n));
        net.run(33);
    }
    net.run(1000);
    let mut got: Vec<u32> =
        net.client(b).frames.iter().map(|(_, d)| u32::from_be_bytes(d[10..14].try_into().unwrap())).collect();
    got.sort_unstable();
    got.dedup();
    let residual = 1.0 - got.len() as f64 / f64::from(frames);
    println!(
        "frames {frames}, datagrams dropped {}, residual loss at the subscriber {:.2} %",
        net.lost,
        residual * 100.0
    );
    // Without retransmission about 1 - 0.95² = 9.75 % of the frames would be missing.
    assert!(net.lost as f64 > 0.08 * f64::from(frames), "the links did drop media: {}", net.lost);
    assert!(residual < 0.01, "residual loss {:.2} %", residual * 100.0);
}

#[test]
fn an_announcement_is_matched_to_its_line_by_the_msid_track_id() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    for (cid, source) in [("screen", TrackSource::ScreenShare), ("cam", TrackSource::Camera)] {
        net.send(
            a,
            ClientMessage::PublishTrack(PublishTrackRequest {
                cid: cid.into(),
                name: cid.into(),
                kind: TrackKind::Video,
                source,
                muted: false,
                width: None,
                height: None,
                layers: vec![],
            }),
        );
    }
    // The line carries `a=msid:s cam`: it is the camera, though the screen was announced first.
    let c = net.client(a);
    let mut api = c.rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, Some("s".into()), Some("cam".into()), None);
    let (offer, pending) = api.apply().unwrap();
    c.pending = Some(pending);
    net.send(a, ClientMessage::Offer(SessionDescription { sdp: offer.to_sdp_string(), id: 1 }));
    net.run(50);
    let published: Vec<_> = net
        .signals(a)
        .iter()
        .filter_map(|m| if let ServerMessage::TrackPublished(t) = m { Some(t.clone()) } else { None })
        .collect();
    assert_eq!(published.len(), 1, "{:?}", net.signals(a));
    assert_eq!(published[0].cid, "cam");
    assert_eq!(published[0].track.source, TrackSource::Camera);
}

impl Net {
    /// `frames` frames from a simulcast publisher that, like an encoder, answers every
    /// keyframe request that reached it with a keyframe on the layer asked (all layers
    /// for a request without a rid). Returns the keyframes it encoded per layer.
    fn responsive_simulcast(&mut self, pid: Pid, mid: Mid, first: u32, frames: u32) -> [u32; 3] {
        let mut encoded = [0; 3];
        let mut seen = self.client(pid).keyframe_rids.len();
        for n in first..first + frames {
            let asked: Vec<Option<Rid>> = self.client(pid).keyframe_rids[seen..].to_vec();
            seen += asked.len();
            let mut key = [false; 3];
            for rid in asked {
                for (i, r) in RIDS.iter().enumerate() {
                    if rid.is_none() || rid == Some(Rid::from(*r)) {
                        key[i] = true;
                    }
                }
            }
            for (i, k) in key.iter().enumerate() {
                encoded[i] += u32::from(*k);
            }
            self.simulcast_frames(pid, mid, n, key);
        }
        encoded
    }
}

/// Issue #12, finding 1: a subscriber that never sends `update_subscription` must not
/// make the server ask the simulcast publisher for keyframes over and over. It starts on
/// the default layer with one request, and after that the publisher encodes no more
/// keyframes than the ones it started with and the one asked for.
#[test]
fn a_subscriber_that_never_asks_causes_no_keyframe_storm() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let b = net.join("bob", "r", |_| {});
    let mid = net.offer_simulcast(a);
    net.offer(b, None);
    net.run(300);
    // 3% of alice's packets are lost (str0m's NACK/RTX repairs most).
    net.client(a).loss = 0.03;
    let asked_before = net.client(a).keyframe_rids.len();
    // 8 s of video at 30 fps.
    let encoded = net.responsive_simulcast(a, mid, 0, 240);
    let asked: Vec<_> = net.client(a).keyframe_rids[asked_before..].to_vec();
    let total: u32 = encoded.iter().sum();
    assert!(total <= 3 + 2, "keyframes encoded in 8 s per layer {encoded:?}, requests {asked:?}");
    let layers = net.layers_received(b, 0);
    assert!(layers.len() >= 200, "bob receives nearly every frame: {}", layers.len());
    let first = layers[0];
    assert!(layers.iter().all(|&l| l == first), "one layer, no flapping: {layers:?}");
}

/// Issue #12, finding 1 (the storm): a subscriber waiting for a layer whose encoder is
/// slow to answer asked on every packet, so the throttle sent a request every 500 ms for
/// as long as it waited. It asks once, and again only after `KEYFRAME_RETRY`.
#[test]
fn a_subscriber_waiting_for_a_keyframe_asks_once_per_retry_not_twice_a_second() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let b = net.join("bob", "r", |_| {});
    let mid = net.offer_simulcast(a);
    net.offer(b, None);
    net.run(300);
    let before = net.client(a).keyframe_rids.len();
    // 4 s of delta frames: the encoder does not answer.
    for n in 0..120 {
        net.simulcast_frames(a, mid, n, [false; 3]);
    }
    let asked: Vec<_> = net.client(a).keyframe_rids[before..].to_vec();
    let medium = asked.iter().filter(|r| **r == Some(Rid::from("h"))).count();
    assert!((3..=5).contains(&medium), "one request per second for the default layer: {asked:?}");
    assert!(asked.iter().all(|r| *r == Some(Rid::from("h"))), "only the layer waited for: {asked:?}");
}

/// Issue #12, finding 1 (every layer): two requests for different layers inside one
/// throttle window were merged into one for every layer, so the encoder made a keyframe
/// on a layer nobody waited for. Each layer's request goes to that layer alone.
#[test]
fn held_back_keyframe_requests_are_not_widened_to_every_layer() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let b = net.join("bob", "r", |_| {});
    let c = net.join("carol", "r", |_| {});
    let mid = net.offer_simulcast(a);
    net.offer(b, None);
    net.offer(c, None);
    net.run(300);
    let sid = net.published_sid(a);
    // Both start on medium.
    for n in 0..5 {
        net.simulcast_frames(a, mid, n, [false, n == 0, false]);
    }
    let before = net.client(a).keyframe_rids.len();
    for (who, quality) in [(b, VideoQuality::High), (c, VideoQuality::Low)] {
        net.send(
            who,
            ClientMessage::UpdateSubscription(switchyard_api::signal::UpdateSubscription {
                track_sids: vec![sid.clone()],
                subscribe: true,
                quality: Some(quality),
            }),
        );
    }
    for n in 5..40 {
        net.simulcast_frames(a, mid, n, [false; 3]);
    }
    let asked: Vec<_> = net.client(a).keyframe_rids[before..].to_vec();
    assert!(asked.contains(&Some(Rid::from("f"))) && asked.contains(&Some(Rid::from("q"))), "{asked:?}");
    assert!(!asked.contains(&Some(Rid::from("h"))) && !asked.contains(&None), "medium was not asked: {asked:?}");
}

impl Net {
    /// The `stream_state`s `pid` was sent.
    fn stream_states(&self, pid: Pid) -> Vec<switchyard_api::signal::StreamState> {
        self.signals(pid)
            .iter()
            .filter_map(|m| if let ServerMessage::StreamState(s) = m { Some(s.clone()) } else { None })
            .collect()
    }

    /// Inject a downlink estimate for `pid` at the allocation seam (what str0m's BWE
    /// reports as `EgressBitrateEstimate`; its TWCC estimator is not driven here).
    fn inject_estimate(&mut self, pid: Pid, bps: u64) {
        let mid = Mid::from("0");
        self.engine.estimate(pid, str0m::bwe::BweKind::Remb { estimate: str0m::bwe::Bitrate::bps(bps), mid });
        self.flush();
    }
}

/// Layer choice from the estimate, pause and resume with `stream_state`, hidden via
/// `update_track_settings`, and dynacast telling the publisher which layers are unused.
#[test]
fn the_estimate_picks_the_layer_pauses_below_the_lowest_and_resumes() {
    use switchyard_api::signal::{StreamPauseReason, StreamStateKind, UpdateTrackSettings};
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let b = net.join("bob", "r", |_| {});
    let mid = net.offer_simulcast(a);
    net.offer(b, None);
    net.run(300);
    let sid = net.published_sid(a);
    let mut n = 0;
    let mut frames = |net: &mut Net, count: u32, key: [bool; 3]| {
        for i in 0..count {
            net.simulcast_frames(a, mid, n, if i == 0 { key } else { [false; 3] });
            n += 1;
        }
    };
    frames(&mut net, 10, [true; 3]);
    assert!(net.layers_received(b, 0).iter().all(|&l| l == 1), "the default: medium");
    assert!(net.stream_states(b).is_empty(), "the first active allocation is not announced");

    // 100 kbit/s: not even the low layer fits.
    net.inject_estimate(b, 100_000);
    let s = net.stream_states(b);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!((s[0].state, s[0].reason), (StreamStateKind::Paused, Some(StreamPauseReason::Bandwidth)));
    assert_eq!(s[0].track_sid, sid);
    assert_eq!(net.engine.stats().paused_streams, [1, 0, 0], "one, for bandwidth");
    let mark = net.client(b).frames.len();
    frames(&mut net, 10, [true; 3]);
    assert_eq!(net.client(b).frames.len(), mark, "paused: nothing forwarded");

    // Back to plenty: active again, on a keyframe.
    net.inject_estimate(b, 5_000_000);
    let s = net.stream_states(b);
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!((s[1].state, s[1].reason), (StreamStateKind::Active, None));
    frames(&mut net, 10, [false, true, false]);
    assert!(net.client(b).frames.len() >= mark + 9, "resumed");
    assert_eq!(net.engine.stats().paused_streams, [0; 3]);

    // Dynacast: only medium is received; after a period alice hears that q and f are not.
    net.run(1100);
    let told: Vec<_> = net
        .signals(a)
        .iter()
        .filter_map(|m| if let ServerMessage::SubscribedLayers(l) = m { Some(l.clone()) } else { None })
        .collect();
    let last = told.last().expect("subscribed_layers sent");
    let active: Vec<(&str, bool)> = last.layers.iter().map(|l| (l.rid.as_str(), l.active)).collect();
    assert_eq!(active, [("q", false), ("h", true), ("f", false)]);
    let count = told.len();
    net.run(2100);
    let again = net.signals(a).iter().filter(|m| matches!(m, ServerMessage::SubscribedLayers(_))).count();
    assert_eq!(again, count, "sent on change only");

    // Hidden: paused with that reason, whatever the bandwidth.
    net.send(
        b,
        ClientMessage::UpdateTrackSettings(UpdateTrackSettings {
            track_sids: vec![sid.clone()],
            disabled: Some(true),
            width: None,
            height: None,
            quality: None,
        }),
    );
    let s = net.stream_states(b);
    assert_eq!(
        (s.last().unwrap().state, s.last().unwrap().reason),
        (StreamStateKind::Paused, Some(StreamPauseReason::Hidden))
    );
    // A size for a track bob does not receive is a clear error.
    net.send(
        b,
        ClientMessage::UpdateTrackSettings(UpdateTrackSettings {
            track_sids: vec!["TR_nope".into()],
            disabled: None,
            width: Some(1),
            height: Some(1),
            quality: None,
        }),
    );
    assert_eq!(net.errors(b, ErrorCode::TrackNotFound), 1);
}

/// Shown large, with a high estimate, the subscriber moves up to the high layer on its
/// keyframe; the layer switch is counted.
#[test]
fn a_large_rendered_size_and_a_high_estimate_move_up_to_high() {
    use switchyard_api::signal::UpdateTrackSettings;
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let b = net.join("bob", "r", |_| {});
    let mid = net.offer_simulcast(a);
    net.offer(b, None);
    net.run(300);
    let sid = net.published_sid(a);
    net.simulcast_frames(a, mid, 0, [true; 3]);
    let switches = net.engine.stats().layer_switches;
    net.inject_estimate(b, 5_000_000);
    net.send(
        b,
        ClientMessage::UpdateTrackSettings(UpdateTrackSettings {
            track_sids: vec![sid],
            disabled: None,
            width: Some(1280),
            height: Some(720),
            quality: None,
        }),
    );
    assert_eq!(net.engine.stats().layer_switches, switches + 1);
    let mark = net.client(b).frames.len();
    for n in 1..10 {
        net.simulcast_frames(a, mid, n, [false, false, n == 3]);
    }
    let got = net.layers_received(b, mark);
    assert_eq!(got.iter().copied().skip_while(|&l| l == 1).collect::<Vec<_>>(), vec![2; 7], "{got:?}");
}

/// Priority: with room for one camera only, the active speaker's is the one served, and
/// when someone else starts speaking the allocation follows (within a speaker tick).
#[test]
fn with_room_for_one_camera_the_active_speakers_is_served() {
    use switchyard_api::signal::{StreamPauseReason, StreamStateKind};
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let c = net.join("carol", "r", |_| {});
    let b = net.join("bob", "r", |_| {});
    let (av, cv) = (net.offer_simulcast(a), net.offer_simulcast(c));
    net.run(100);
    let (aa, ca) = (net.offer(a, Some(MediaKind::Audio)).unwrap(), net.offer(c, Some(MediaKind::Audio)).unwrap());
    net.offer(b, None);
    net.run(300);
    let (alice_cam, carol_cam) = (net.published_sid(a), net.published_sid(c));
    let low = |net: &Net, pid: Pid| {
        let track = net.engine.peers[&pid].published.iter().find(|t| t.kind == TrackKind::Video).unwrap();
        track.allocation_layers().0[0].bitrate_bps
    };
    let mut n = 0;
    // Both cameras send (keyframes every 10 frames); `levels` are the voices' -dBov. With
    // `tight`, bob's estimate is held (str0m's own estimator runs here too) at room for
    // one camera's lowest layer and a half, after the audio reserve.
    let mut call = |net: &mut Net, ms: u64, levels: (i8, i8), tight: bool| {
        for _ in 0..ms / 66 {
            net.write_audio(a, aa, n, levels.0);
            net.write_audio(c, ca, n, levels.1);
            let key = [n % 10 == 0; 3];
            net.simulcast_frames(a, av, n, key);
            net.simulcast_frames(c, cv, n, key);
            n += 1;
            if tight {
                let widest = low(net, a).max(low(net, c));
                net.inject_estimate(b, 2 * allocation::AUDIO_RESERVE_BPS + widest * 3 / 2);
            }
        }
    };
    call(&mut net, 1500, (127, 127), false);
    assert!(low(&net, a).min(low(&net, c)) * 2 > low(&net, a).max(low(&net, c)) * 3 / 2, "both cost about the same");
    let last_state = |net: &Net, sid: &str| {
        net.stream_states(b).iter().rev().find(|s| s.track_sid == sid).map(|s| (s.state, s.reason))
    };
    let paused = Some((StreamStateKind::Paused, Some(StreamPauseReason::Bandwidth)));
    let active = Some((StreamStateKind::Active, None));

    call(&mut net, 2000, (127, 20), true);
    assert_eq!(last_state(&net, &alice_cam), paused, "carol speaks: alice's camera gives way");
    assert_ne!(last_state(&net, &carol_cam), paused, "carol speaks: her camera is served");

    call(&mut net, 3000, (20, 127), true);
    assert_eq!(last_state(&net, &carol_cam), paused, "now alice speaks: carol's camera gives way");
    assert_eq!(last_state(&net, &alice_cam), active, "alice's camera is served again");
}

/// A camera its publisher mutes is paused for its subscribers with that reason, and active
/// again (on a keyframe) when unmuted.
#[test]
fn a_muted_camera_is_paused_for_its_subscribers_and_resumes_on_unmute() {
    use switchyard_api::signal::{MuteTrack, StreamPauseReason, StreamStateKind};
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    let b = net.join("bob", "r", |_| {});
    let mid = net.offer_simulcast(a);
    net.offer(b, None);
    net.run(300);
    let sid = net.published_sid(a);
    let mut n = 0;
    let mut frames = |net: &mut Net, count: u32| {
        for i in 0..count {
            net.simulcast_frames(a, mid, n, [i == 0; 3]);
            n += 1;
        }
    };
    frames(&mut net, 10);
    assert!(net.stream_states(b).is_empty());
    net.send(a, ClientMessage::MuteTrack(MuteTrack { track_sid: sid.clone(), muted: true }));
    let s = net.stream_states(b);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(
        (s[0].track_sid.as_str(), s[0].state, s[0].reason),
        (sid.as_str(), StreamStateKind::Paused, Some(StreamPauseReason::PublisherMuted))
    );
    let mark = net.client(b).frames.len();
    frames(&mut net, 10);
    assert_eq!(net.client(b).frames.len(), mark, "a muted track's stray packets are not forwarded");
    net.send(a, ClientMessage::MuteTrack(MuteTrack { track_sid: sid, muted: false }));
    let s = net.stream_states(b);
    assert_eq!((s.len(), s[1].state, s[1].reason), (2, StreamStateKind::Active, None));
    frames(&mut net, 10);
    assert!(net.client(b).frames.len() >= mark + 9, "flowing again from the keyframe");
}

mod relay;
/// The offerer sends with the first codec of the answer. A publisher that prefers VP9 (and
/// also offers VP8) was answered in the server's order, VP8 first: it sent VP8 while its
/// track was announced, and offered to subscribers, as VP9, which none could decode.
#[test]
fn a_publisher_preferring_vp9_is_answered_vp9_first_and_its_track_is_vp9() {
    let mut net = Net::new();
    let a = net.join("alice", "r", |_| {});
    net.codecs(a, |c| c.clear_codecs().enable_vp9(true).enable_vp8(true));
    net.offer(a, Some(MediaKind::Video));
    net.run(300);
    let answer = net
        .signals(a)
        .iter()
        .find_map(|m| if let ServerMessage::Answer(sd) = m { Some(sd.sdp.clone()) } else { None })
        .expect("alice was answered");
    let video = answer.split("\r\nm=").find(|s| s.starts_with("video")).expect("a video line");
    let first = video.split("\r\n").next().unwrap().split(' ').nth(3).expect("a payload type");
    let codec = video
        .split("\r\n")
        .find_map(|l| l.strip_prefix(&format!("a=rtpmap:{first} ")))
        .and_then(|r| r.split('/').next())
        .expect("the first payload type has an rtpmap");
    assert_eq!(codec, "VP9", "the answer's first video codec: {video}");
    let published = net
        .signals(a)
        .iter()
        .find_map(|m| if let ServerMessage::TrackPublished(t) = m { Some(t.track.clone()) } else { None })
        .expect("published");
    assert_eq!(published.mime_type.as_deref(), Some("video/VP9"));
}
