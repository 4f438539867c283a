//! The engine with no sockets and a virtual clock: str0m clients exchange datagrams with
//! the engine in memory, so rooms, negotiation and forwarding are tested in milliseconds.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc};
use switchyard_api::signal::{
    ClientMessage, IceTransportPolicy, LeaveReason, ServerMessage, SessionDescription, TrackKind, TrackRef,
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
    added: Vec<Mid>,
    connected: bool,
    closed: bool,
}

struct Net {
    engine: Engine,
    clients: Vec<Client>,
    now: Instant,
    events: Vec<RoomEvent>,
}

fn config() -> EngineConfig {
    EngineConfig {
        node: "test-node".into(),
        udp_candidates: vec![SERVER.parse().unwrap()],
        tcp_candidates: vec![],
        ice_transport_policy: IceTransportPolicy::All,
        ping_interval_seconds: 10,
        ping_timeout_seconds: 30,
    }
}

impl Net {
    fn new() -> Self {
        Self { engine: Engine::new(config()), clients: vec![], now: Instant::now(), events: vec![] }
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
            added: vec![],
            connected: false,
            closed: false,
        });
        self.engine.handle_command(self.now, Command::Join(Box::new(args)));
        self.flush();
        pid
    }

    /// The client's first offer: optionally a sending media line, always a data channel.
    fn offer(&mut self, pid: Pid, send: Option<MediaKind>) -> Option<Mid> {
        let c = self.client(pid);
        let mut api = c.rtc.sdp_api();
        let mid = send.map(|k| api.add_media(k, Direction::SendOnly, None, None, None));
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
                        continue;
                    };
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
                    let now = self.now;
                    let c = self.client(pid);
                    match &*msg {
                        ServerMessage::Answer(a) => {
                            let answer = SdpAnswer::from_sdp_string(&a.sdp).unwrap();
                            let pending = c.pending.take().expect("an offer is pending");
                            c.rtc.sdp_api().accept_answer(pending, answer).unwrap();
                        }
                        ServerMessage::Offer(o) => {
                            let offer = SdpOffer::from_sdp_string(&o.sdp).unwrap();
                            let answer = c.rtc.sdp_api().accept_offer(offer).unwrap();
                            let msg =
                                ClientMessage::Answer(SessionDescription { sdp: answer.to_sdp_string(), id: o.id });
                            self.engine.handle_command(now, Command::Client { pid, msg });
                        }
                        _ => {}
                    }
                    self.client(pid).signals.push(*msg);
                }
                Output::Closed { pid, .. } => self.client(pid).closed = true,
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
                            Event::MediaData(d) => c.frames.push((d.mid, d.data.to_vec())),
                            _ => {}
                        },
                        Ok(RtcOutput::Timeout(_)) | Err(_) => break,
                    }
                }
                for (src, dst, data) in to_server {
                    self.engine.handle_receive(self.now, Protocol::Udp, src, dst, &data);
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
    assert_eq!(net.events[0], RoomEvent::RoomStarted { room: "r".into() });
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
    assert!(net.events.contains(&RoomEvent::RoomFinished { room: "r".into() }));
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
            Output::Closed { pid: 9, .. } => saw.1 = true,
            _ => {}
        }
    }
    assert_eq!(saw, (true, true));
}

#[test]
fn datagrams_from_strangers_are_counted_and_dropped() {
    let mut net = Net::new();
    let routed = net.engine.handle_receive(
        net.now,
        Protocol::Udp,
        "10.9.9.9:1".parse().unwrap(),
        SERVER.parse().unwrap(),
        &[0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
    );
    assert!(!routed);
    assert_eq!(net.engine.stats().unrouted, 1);
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
