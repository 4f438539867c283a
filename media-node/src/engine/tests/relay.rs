//! Two engines in one test, the origin and an edge of one room, joined by a relay: the
//! relay is a str0m peer pair, its datagrams and signaling shuttled between the two
//! engines in memory on the same virtual clock as their clients.

use super::*;
use crate::engine::relay::{RelayArgs, RelaySide};
use switchyard_api::relay::RelayMessage;

/// The relay peer's pid on both engines (clients count from 1).
const RELAY: Pid = 1000;
/// The edge's relay end sends from here; the origin's media address is `SERVER`.
const EDGE_RELAY: &str = "10.0.9.1:6000";

struct Cascade {
    origin: Net,
    edge: Net,
    /// Relay signaling messages delivered, each way.
    to_origin: u32,
    to_edge: u32,
}

impl Cascade {
    /// Two engines (seeded apart) and the relay for room `r` opened at both ends.
    fn new() -> Self {
        let origin = Net::new();
        let mut edge = Net::new();
        edge.now = origin.now;
        let wall = std::time::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        edge.engine = Engine::new(EngineConfig { node: "edge-node".into(), ..config() }, 8, origin.now, wall);
        let mut c = Self { origin, edge, to_origin: 0, to_edge: 0 };
        let settings = RoomSettings { empty_timeout: Duration::from_secs(5), ..RoomSettings::default() };
        let relay = |side| RelayArgs {
            pid: RELAY,
            room: "r".into(),
            peer_node: if side == RelaySide::Origin { "edge-node".into() } else { "test-node".into() },
            side,
            settings: settings.clone(),
        };
        let now = c.origin.now;
        c.origin.engine.handle_command(now, Command::Relay(Box::new(relay(RelaySide::Origin))));
        c.origin.flush();
        let edge_side = RelaySide::Edge { local: EDGE_RELAY.parse().unwrap(), origin: SERVER.parse().unwrap() };
        c.edge.engine.handle_command(now, Command::Relay(Box::new(relay(edge_side))));
        c.edge.flush();
        c
    }

    /// Both engines and their clients `ms` milliseconds on, the relay shuttled each one.
    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.origin.run(1);
            self.edge.run(1);
            self.shuttle();
        }
    }

    /// Deliver what each engine sent the other until neither sends more.
    fn shuttle(&mut self) {
        for _ in 0..1000 {
            let to_edge = pass(&mut self.origin, &mut self.edge);
            let to_origin = pass(&mut self.edge, &mut self.origin);
            self.to_edge += to_edge.0;
            self.to_origin += to_origin.0;
            if !(to_edge.1 || to_origin.1) {
                return;
            }
        }
        panic!("the relay's signaling does not settle: the two engines keep answering each other");
    }
}

/// What `from`'s engine sent over the relay, delivered to `to`'s: (signaling messages,
/// whether anything moved).
fn pass(from: &mut Net, to: &mut Net) -> (u32, bool) {
    let now = from.now;
    let (mut signals, mut moved) = (0, false);
    let stray: Vec<(Pid, ServerMessage)> = from.stray.drain(..).collect();
    for (pid, msg) in stray {
        if pid != RELAY {
            from.stray.push((pid, msg));
            continue;
        }
        let Some(msg) = RelayMessage::from_server(&msg).and_then(RelayMessage::into_client) else { continue };
        to.engine.handle_command(now, Command::Client { pid: RELAY, msg });
        signals += 1;
        moved = true;
    }
    // The test is both routers: the origin's relay datagrams go to the edge's relay
    // address, the edge's to the origin's media address.
    let relay_addrs: [SocketAddr; 2] = [EDGE_RELAY.parse().unwrap(), SERVER.parse().unwrap()];
    let datagrams: Vec<_> = from.unrouted.drain(..).collect();
    for (src, dst, data) in datagrams {
        if relay_addrs.contains(&dst) {
            to.engine.handle_receive(now, RELAY, Protocol::Udp, src, dst, &data);
            moved = true;
        }
    }
    to.flush();
    (signals, moved)
}

/// Alice publishes video on the origin; bob and carol, on the edge, subscribe to it.
fn alice_on_the_origin_to_bob_and_carol_on_the_edge() -> (Cascade, Pid, Mid, Pid, Pid) {
    let mut c = Cascade::new();
    let a = c.origin.join("alice", "r", |_| {});
    let b = c.edge.join("bob", "r", |_| {});
    let carol = c.edge.join("carol", "r", |_| {});
    let mid = c.origin.offer(a, Some(MediaKind::Video)).unwrap();
    c.edge.offer(b, None);
    c.edge.offer(carol, None);
    c.run(1500);
    (c, a, mid, b, carol)
}

/// Each received frame's sequence numbers follow the previous frame's: no gap, no
/// duplicate, no reordering.
fn assert_contiguous(who: &str, seqs: &[(Mid, u64, u64)]) {
    for w in seqs.windows(2) {
        assert_eq!(w[1].1, w[0].2 + 1, "{who}: frame after seq {} starts at {}: {seqs:?}", w[0].2, w[1].1);
    }
}

#[test]
fn an_origin_track_reaches_edge_subscribers_through_one_relay_line_renumbered_per_subscriber() {
    let (mut c, a, mid, b, carol) = alice_on_the_origin_to_bob_and_carol_on_the_edge();
    assert!(c.to_origin > 0 && c.to_edge > 0, "SDP crossed both ways");
    assert!(
        c.edge.routes.contains(&Route::Dialed { pid: RELAY, remote: SERVER.parse().unwrap() }),
        "the edge's router learns the origin's address for the relay: {:?}",
        c.edge.routes
    );
    assert_eq!(c.origin.engine.index.subscribers(a, mid), [RELAY], "the origin sends alice's track once, to the relay");
    for n in 0..30 {
        c.origin.write_frame(a, mid, n, &vp8_frame(n));
        c.run(33);
    }
    for (who, pid) in [("bob", b), ("carol", carol)] {
        let client = c.edge.client(pid);
        let got: Vec<u32> =
            client.frames.iter().map(|(_, f)| u32::from_be_bytes(f[10..14].try_into().unwrap())).collect();
        assert_eq!(got, (0..30).collect::<Vec<_>>(), "{who} gets every frame, in order");
        for (_, f) in &client.frames {
            let n = u32::from_be_bytes(f[10..14].try_into().unwrap());
            assert_eq!(*f, vp8_frame(n), "{who}: frame {n} arrives intact");
        }
        assert_contiguous(who, &client.seqs);
    }
    let (bob_first, carol_first) = (c.edge.client(b).seqs[0].1, c.edge.client(carol).seqs[0].1);
    assert_ne!(bob_first, carol_first, "each edge subscriber has its own numbering");
    let (origin, edge) = (c.origin.engine.stats(), c.edge.engine.stats());
    assert_eq!(origin.packets_out, 30, "the origin sent each packet once over the relay: {origin:?}");
    assert_eq!(edge.packets_in, 30, "{edge:?}");
    assert_eq!(edge.packets_out, 60, "the edge fanned each packet out to its two subscribers: {edge:?}");
    assert!(
        !c.edge
            .signals(b)
            .iter()
            .any(|m| matches!(m, ServerMessage::ParticipantJoined(p) if p.participant.identity.starts_with("relay:"))),
        "the relay is hidden"
    );
    assert_eq!((origin.participants, edge.participants), (1, 2), "a relay is no participant in the node's counts");
    let reported =
        |net: &Net| net.engine.report()[0].participants.iter().map(|p| p.identity.clone()).collect::<Vec<_>>();
    assert_eq!(reported(&c.origin), ["alice"]);
    assert_eq!(reported(&c.edge), ["bob", "carol"]);
    let relay_events = |net: &Net| {
        net.events
            .iter()
            .filter(|e| match e {
                RoomEvent::ParticipantJoined { participant, .. }
                | RoomEvent::ParticipantLeft { participant, .. }
                | RoomEvent::TrackPublished { participant, .. }
                | RoomEvent::TrackUnpublished { participant, .. } => participant.identity.starts_with("relay:"),
                _ => false,
            })
            .count()
    };
    assert!(c.edge.events.iter().any(|e| matches!(e, RoomEvent::ParticipantJoined { .. })), "the edge reports its own");
    assert_eq!(
        (relay_events(&c.origin), relay_events(&c.edge)),
        (0, 0),
        "nor in room events: the other node reports those"
    );
}

#[test]
fn keyframe_requests_from_edge_subscribers_reach_the_publisher_once_per_window() {
    let (mut c, a, mid, b, carol) = alice_on_the_origin_to_bob_and_carol_on_the_edge();
    let d = c.edge.join("dave", "r", |_| {});
    c.edge.offer(d, None);
    c.run(1000);
    // Media flows to all three, and the requests their subscriptions started with are done.
    for n in 0..10 {
        c.origin.write_frame(a, mid, n, &vp8_frame(n));
        c.run(33);
    }
    c.run(1000);
    let edge = [b, carol, d];
    for &pid in &edge {
        assert!(!c.edge.client(pid).frames.is_empty(), "{pid} receives alice");
    }
    let before = c.origin.client(a).keyframe_requests;
    // Every edge subscriber asks for a keyframe at the same moment (a PLI each).
    for &pid in &edge {
        let client = c.edge.client(pid);
        let recv_mid = client.frames[0].0;
        let mut api = client.rtc.direct_api();
        let rx = api.stream_rx_by_mid(recv_mid, None).expect("bob's receive stream");
        rx.request_keyframe(str0m::media::KeyframeRequestKind::Pli);
    }
    c.run(100);
    assert_eq!(c.origin.client(a).keyframe_requests, before + 1, "three PLIs on the edge, one at the publisher");
    // The keyframe answers all three: nobody still waits when the window ends, so no
    // held-back request follows.
    c.origin.write_frame(a, mid, 10, &vp8_frame(10));
    c.run(1000);
    assert_eq!(c.origin.client(a).keyframe_requests, before + 1, "and none held back was sent after it");
}

#[test]
fn an_edge_track_reaches_an_origin_subscriber_while_origin_tracks_reach_the_edge() {
    let mut c = Cascade::new();
    // Both sides publish, so both engines offer the relay at once: glare, settled by role.
    let a = c.origin.join("alice", "r", |_| {});
    let erin = c.origin.join("erin", "r", |_| {});
    let dave = c.edge.join("dave", "r", |_| {});
    let alice_mid = c.origin.offer(a, Some(MediaKind::Video)).unwrap();
    c.origin.offer(erin, None);
    let dave_mid = c.edge.offer(dave, Some(MediaKind::Video)).unwrap();
    c.run(2000);
    for n in 0..20 {
        c.edge.write_frame(dave, dave_mid, n, &vp8_frame(n));
        c.origin.write_frame(a, alice_mid, n, &vp8_frame(n));
        c.run(33);
    }
    let from_dave = |client: &Client| client.frames.iter().filter(|(_, f)| f.len() == vp8_frame(0).len()).count();
    assert_eq!(from_dave(c.origin.client(erin)), 40, "erin gets dave's 20 frames over the relay and alice's 20");
    let erin_seqs = c.origin.client(erin).seqs.clone();
    for line in [erin_seqs[0].0, erin_seqs.iter().find(|s| s.0 != erin_seqs[0].0).expect("two tracks").0] {
        assert_contiguous("erin", &erin_seqs.iter().filter(|s| s.0 == line).copied().collect::<Vec<_>>());
    }
    assert_eq!(c.edge.client(dave).frames.len(), 20, "dave gets alice's frames, not his own back");
    assert_eq!(c.origin.client(a).frames.len(), 20, "alice gets dave's frames, not her own back");
    assert_eq!(c.edge.engine.index.subscribers(dave, dave_mid), [RELAY], "the edge sends dave's track once");
}
