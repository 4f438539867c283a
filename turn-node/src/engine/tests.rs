//! Engine rules on a virtual clock: no sockets, no sleeping. Time is an
//! `Instant` we advance by hand, so a 10-minute lifetime takes microseconds.

use super::*;
use crate::auth::{long_term_key, rest_password};
use crate::filter::PeerFilter;
use crate::stun::{MAX_DATA_INDICATION_OVERHEAD, parse};

const REALM: &str = "switchyard.test";
const SECRET: &[u8] = b"s3cret";
const T0_UNIX: u64 = 1_700_000_000;

struct Harness {
    engine: Engine,
    shared: Arc<Shared>,
    now: Instant,
    five: FiveTuple,
    user: String,
    key: Key,
    nonce: Vec<u8>,
    relay_port: u16,
}

struct Reply {
    bytes: Vec<u8>,
}

impl Reply {
    fn msg(&self) -> Message<'_> {
        parse(&self.bytes).expect("engine emits valid STUN")
    }
    fn code(&self) -> Option<u16> {
        self.msg().error_code
    }
}

fn shared_with(limits: Limits, filter: PeerFilter) -> Arc<Shared> {
    shared_on(limits, filter, "192.0.2.1".parse().unwrap())
}

fn shared_on(limits: Limits, filter: PeerFilter, relay_ip: IpAddr) -> Arc<Shared> {
    shared_relaying(limits, filter, RelayIps::single(relay_ip))
}

fn shared_relaying(limits: Limits, filter: PeerFilter, relay: RelayIps) -> Arc<Shared> {
    Arc::new(Shared {
        credentials: Credentials::new(REALM, vec![SECRET.to_vec()], &[]),
        nonces: NonceMinter::new([9; 32], 3600),
        filter: filter.into(),
        limits,
        quotas: Quotas::default(),
        metrics: Arc::new(Metrics::new()),
        draining: AtomicBool::new(false),
        relay,
    })
}

/// The built-in policy, plus the documentation and benchmarking ranges the
/// tests' peers come from (denied by default: they are not globally reachable).
fn allow_all_public() -> PeerFilter {
    PeerFilter::new(vec!["203.0.113.0/24".parse().unwrap(), "198.18.0.0/15".parse().unwrap()], vec![], vec![])
}

impl Harness {
    fn new() -> Self {
        Self::with(Limits::default(), allow_all_public())
    }

    fn with(limits: Limits, filter: PeerFilter) -> Self {
        let shared = shared_with(limits, filter);
        Self::on(shared, 1)
    }

    fn on(shared: Arc<Shared>, client: u16) -> Self {
        let now = Instant::now();
        let user = format!("{}:alice", T0_UNIX + 86_400);
        let password = rest_password(SECRET, &user);
        Harness {
            engine: Engine::new(shared.clone(), 0, 1, now, T0_UNIX),
            key: long_term_key(&user, REALM, &password),
            shared,
            now,
            five: FiveTuple {
                client: SocketAddr::from(([198, 51, 100, 7], client)),
                server: "192.0.2.1:3478".parse().unwrap(),
                transport: Transport::Udp,
            },
            user,
            nonce: Vec::new(),
            relay_port: 50_000,
        }
    }

    fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.engine.handle_timeout(self.now);
    }

    /// Feed raw bytes; bind relays as requested; return the transmits.
    fn feed(&mut self, data: &[u8]) -> Vec<Reply> {
        let fwd = self.engine.handle_client(self.now, &self.five, data);
        assert_eq!(fwd, Forward::None, "control message must not forward");
        let mut replies = Vec::new();
        while let Some(o) = self.engine.poll_output() {
            match o {
                Output::Transmit { to, data } => {
                    assert_eq!(to, self.five);
                    replies.push(Reply { bytes: data });
                }
                Output::BindRelay { id, family, .. } => {
                    self.relay_port += 2;
                    let ip = self.shared.relay.get(family).expect("the engine asks only for relayed families");
                    self.engine.relay_bound(self.now, id, Some(SocketAddr::new(ip, self.relay_port)));
                }
                Output::Release { .. } => {}
            }
        }
        replies
    }

    /// Send an authenticated request (fetching a nonce first if needed).
    fn request(&mut self, m: u16, build: impl Fn(&mut MessageWriter<'_>)) -> Reply {
        for _ in 0..2 {
            let mut buf = Vec::new();
            let mut w = MessageWriter::new(&mut buf, m, Class::Request, rand::random());
            build(&mut w);
            if !self.nonce.is_empty() {
                w.attr(attr::USERNAME, self.user.as_bytes())
                    .attr(attr::REALM, REALM.as_bytes())
                    .attr(attr::NONCE, &self.nonce)
                    .integrity(&self.key);
            }
            w.finish_with_fingerprint();
            let mut r = self.feed(&buf);
            assert_eq!(r.len(), 1, "one response per request");
            let reply = r.pop().unwrap();
            let (code, nonce) = {
                let msg = reply.msg();
                (msg.error_code, msg.nonce.map(<[u8]>::to_vec))
            };
            match (code, nonce) {
                (Some(401 | 438), Some(n)) if self.nonce != n => self.nonce = n,
                _ => return reply,
            }
        }
        panic!("authentication did not converge")
    }

    fn allocate(&mut self) -> Reply {
        self.request(method::ALLOCATE, |w| {
            w.u32(attr::REQUESTED_TRANSPORT, 17 << 24);
        })
    }

    fn permit(&mut self, peer: SocketAddr) -> Reply {
        self.request(method::CREATE_PERMISSION, |w| {
            w.xor_addr(attr::XOR_PEER_ADDRESS, peer);
        })
    }

    fn bind(&mut self, channel: u16, peer: SocketAddr) -> Reply {
        self.request(method::CHANNEL_BIND, |w| {
            w.u32(attr::CHANNEL_NUMBER, u32::from(channel) << 16).xor_addr(attr::XOR_PEER_ADDRESS, peer);
        })
    }

    fn refresh(&mut self, lifetime: u32) -> Reply {
        self.request(method::REFRESH, |w| {
            w.u32(attr::LIFETIME, lifetime);
        })
    }

    fn alloc_id(&self) -> AllocId {
        *self.engine.by_five.get(&self.five).expect("allocation exists")
    }

    /// Client → peer over a channel; returns the peer it would reach.
    fn channel_send(&mut self, channel: u16, payload: &[u8]) -> Option<SocketAddr> {
        let mut buf = channel.to_be_bytes().to_vec();
        buf.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        buf.extend_from_slice(payload);
        match self.engine.handle_client(self.now, &self.five, &buf) {
            Forward::ToPeer { peer, payload: p, .. } => {
                assert_eq!(p, payload);
                Some(peer)
            }
            Forward::None => None,
        }
    }

    /// Client → peer in a Send indication; returns the peer it would reach.
    fn send(&mut self, peer: SocketAddr, payload: &[u8]) -> Option<SocketAddr> {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, method::SEND, Class::Indication, [4; 12]);
        w.xor_addr(attr::XOR_PEER_ADDRESS, peer).attr(attr::DATA, payload);
        w.finish();
        match self.engine.handle_client(self.now, &self.five, &buf) {
            Forward::ToPeer { peer: p, payload: got, .. } => {
                assert_eq!(got, payload);
                Some(p)
            }
            Forward::None => None,
        }
    }

    /// Peer → client; returns the framed message the client would get.
    fn peer_sends(&mut self, peer: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
        let head = MAX_DATA_INDICATION_OVERHEAD;
        let mut buf = vec![0u8; head + payload.len() + 4];
        buf[head..head + payload.len()].copy_from_slice(payload);
        let id = self.alloc_id();
        let (to, range) = self.engine.handle_peer(self.now, id, peer, &mut buf, head, payload.len())?;
        assert_eq!(to, self.five);
        Some(buf[range].to_vec())
    }
}

fn peer() -> SocketAddr {
    "203.0.113.5:4000".parse().unwrap()
}

#[test]
fn binding_needs_no_auth() {
    let mut h = Harness::new();
    let mut buf = Vec::new();
    MessageWriter::new(&mut buf, method::BINDING, Class::Request, [1; 12]).finish();
    let r = h.feed(&buf);
    let msg = r[0].msg();
    assert_eq!(msg.class, Class::Success);
}

#[test]
fn allocate_challenges_then_succeeds_with_default_lifetime() {
    let mut h = Harness::new();
    let r = h.allocate();
    assert_eq!(r.code(), None);
    let msg = r.msg();
    assert!(msg.relayed.is_some());
    assert_eq!(msg.lifetime, Some(600));
    assert!(stun::verify_integrity(&msg, &h.key));
    let m = &h.shared.metrics;
    assert_eq!(m.alloc_result_count(AllocResult::Challenged), 1);
    assert_eq!(m.alloc_result_count(AllocResult::Ok), 1);
    assert_eq!(m.allocations.get(), 1);
}

#[test]
fn lifetime_is_clamped_between_default_and_max() {
    let mut h = Harness::new();
    let r = h.request(method::ALLOCATE, |w| {
        w.u32(attr::REQUESTED_TRANSPORT, 17 << 24).u32(attr::LIFETIME, 999_999);
    });
    assert_eq!(r.msg().lifetime, Some(3600));
    assert_eq!(h.refresh(30).msg().lifetime, Some(600));
    assert_eq!(h.refresh(1200).msg().lifetime, Some(1200));
}

#[test]
fn allocation_expires_without_refresh_and_survives_with_it() {
    let mut h = Harness::new();
    h.allocate();
    h.advance(599);
    assert_eq!(h.refresh(600).code(), None, "still alive at 599 s");
    h.advance(599);
    assert_eq!(h.engine.allocation_count(), 1, "refresh moved the deadline");
    h.advance(1);
    assert_eq!(h.engine.allocation_count(), 0);
    assert_eq!(h.shared.metrics.allocations.get(), 0);
    assert_eq!(h.shared.quotas.total(), 0, "quota released on expiry");
    assert_eq!(h.refresh(600).code(), Some(437));
}

#[test]
fn refresh_zero_deletes() {
    let mut h = Harness::new();
    h.allocate();
    let r = h.refresh(0);
    assert_eq!(r.msg().lifetime, Some(0));
    assert_eq!(h.engine.allocation_count(), 0);
    let mut saw_release = false;
    while let Some(o) = h.engine.poll_output() {
        saw_release |= matches!(o, Output::Release { .. });
    }
    // Release was drained by `feed`; the allocation is gone either way.
    assert!(!saw_release);
    assert_eq!(h.refresh(600).code(), Some(437));
}

#[test]
fn second_allocate_on_same_five_tuple_is_437_and_retransmit_is_replayed() {
    let mut h = Harness::new();
    h.allocate();
    assert_eq!(h.allocate().code(), Some(437));
    // A retransmission (same transaction id) gets the original answer again.
    let id = h.alloc_id();
    let tid = h.engine.allocs[&id].allocate_tid;
    let original = h.engine.allocs[&id].allocate_response.clone();
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, method::ALLOCATE, Class::Request, tid);
    w.u32(attr::REQUESTED_TRANSPORT, 17 << 24)
        .attr(attr::USERNAME, h.user.as_bytes())
        .attr(attr::REALM, REALM.as_bytes())
        .attr(attr::NONCE, &h.nonce.clone())
        .integrity(&h.key.clone());
    w.finish_with_fingerprint();
    let r = h.feed(&buf);
    assert_eq!(r[0].bytes, original);
}

#[test]
fn permission_times_out_after_300_s() {
    let mut h = Harness::new();
    h.allocate();
    assert_eq!(h.permit(peer()).code(), None);
    assert!(h.peer_sends(peer(), b"x").is_some());
    // Another port on the same IP is covered: permissions are per IP.
    let other_port = SocketAddr::new(peer().ip(), 9);
    assert!(h.peer_sends(other_port, b"x").is_some());
    h.advance(299);
    assert!(h.peer_sends(peer(), b"x").is_some());
    h.advance(1);
    assert!(h.peer_sends(peer(), b"x").is_none());
    assert_eq!(h.shared.metrics.permissions.get(), 0);
    assert_eq!(h.shared.metrics.dropped_count(DropReason::NoPermission), 1);
}

#[test]
fn send_indication_needs_permission() {
    let mut h = Harness::new();
    h.allocate();
    assert_eq!(h.send(peer(), b"ping"), None);
    h.permit(peer());
    assert_eq!(h.send(peer(), b"ping"), Some(peer()));
    // Without a channel the peer's answer comes back as a Data indication.
    let back = h.peer_sends(peer(), b"pong").unwrap();
    let msg = parse(&back).unwrap();
    assert_eq!((msg.method, msg.class), (method::DATA, Class::Indication));
    assert_eq!(msg.data, Some(&b"pong"[..]));
    assert_eq!(msg.peers[0], Some(peer()));
}

/// `switchyard dev`'s list of the SFU's media addresses: permissions are granted by IP
/// (browsers send their candidate's port, or none that matters), relayed data by
/// address and port, both ways.
#[test]
fn an_only_list_permits_by_ip_and_relays_only_to_its_ports() {
    let sfu = peer();
    let same_host = SocketAddr::new(sfu.ip(), 22);
    let mut h = Harness::with(Limits::default(), allow_all_public().with_only([sfu]));
    h.allocate();
    assert_eq!(h.permit(SocketAddr::new(sfu.ip(), 0)).code(), None, "permission for the SFU's IP, port 0");
    assert_eq!(h.permit(same_host).code(), None, "permission for the SFU's IP, another port");
    assert_eq!(h.permit("203.0.113.6:4000".parse().unwrap()).code(), Some(403), "another host");
    assert_eq!(h.send(sfu, b"media"), Some(sfu));
    assert_eq!(h.send(same_host, b"ssh?"), None, "another port of the SFU's host");
    assert_eq!(h.shared.metrics.dropped_count(DropReason::DeniedPeer), 1);
    assert_eq!(h.bind(0x4000, same_host).code(), Some(403), "ChannelBind to another port");
    assert_eq!(h.bind(0x4001, sfu).code(), None);
    assert_eq!(h.channel_send(0x4001, b"media"), Some(sfu));
    assert!(h.peer_sends(sfu, b"back").is_some(), "the SFU answers");
    assert!(h.peer_sends(same_host, b"other").is_none(), "another port of its host is not relayed back");
    assert_eq!(h.shared.metrics.dropped_count(DropReason::DeniedPeer), 2);
}

#[test]
fn channel_bind_rules() {
    let mut h = Harness::new();
    h.allocate();
    let other: SocketAddr = "203.0.113.6:4000".parse().unwrap();
    assert_eq!(h.bind(0x3FFF, peer()).code(), Some(400), "below range");
    assert_eq!(h.bind(0x8000, peer()).code(), Some(400), "above range");
    assert_eq!(h.bind(0x4000, peer()).code(), None);
    assert_eq!(h.bind(0x4000, peer()).code(), None, "same pair refreshes");
    assert_eq!(h.bind(0x4000, other).code(), Some(400), "channel taken by another peer");
    assert_eq!(h.bind(0x4001, peer()).code(), Some(400), "peer already on another channel");
    assert_eq!(h.channel_send(0x4000, b"hi"), Some(peer()));
    assert_eq!(h.channel_send(0x4001, b"hi"), None, "unbound channel drops");
    // Peer data now comes back as ChannelData.
    let back = h.peer_sends(peer(), b"yo").unwrap();
    assert_eq!(back, [0x40, 0x00, 0, 2, b'y', b'o']);
    assert_eq!(h.shared.metrics.channels.get(), 1);
}

#[test]
fn channel_binding_installs_permission_and_expires_with_cooldown() {
    let mut h = Harness::new();
    h.allocate();
    h.refresh(3600);
    h.bind(0x4000, peer());
    // The binding refreshed the permission, which would lapse at 300 s without
    // traffic-independent refreshes; keep it alive like a client does.
    for _ in 0..2 {
        h.advance(240);
        h.permit(peer());
    }
    h.advance(120); // 600 s: channel expires
    assert_eq!(h.channel_send(0x4000, b"x"), None);
    assert_eq!(h.shared.metrics.channels.get(), 0);
    let other: SocketAddr = "203.0.113.6:4000".parse().unwrap();
    assert_eq!(h.bind(0x4000, other).code(), Some(400), "number in cooldown");
    assert_eq!(h.bind(0x4002, peer()).code(), Some(400), "peer in cooldown");
    assert_eq!(h.bind(0x4000, peer()).code(), None, "same pair may rebind");
    h.advance(600);
    h.advance(300);
    assert_eq!(h.bind(0x4001, other).code(), None);
}

#[test]
fn channel_send_without_permission_is_dropped() {
    let mut h = Harness::new();
    h.allocate();
    h.refresh(3600);
    h.bind(0x4000, peer());
    h.advance(301); // permission gone, channel still bound
    assert_eq!(h.channel_send(0x4000, b"x"), None);
}

#[test]
fn nonce_goes_stale_and_client_recovers() {
    let mut h = Harness::new();
    h.allocate();
    let old = h.nonce.clone();
    h.advance(3600); // nonce lifetime; allocation also expires here
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, method::ALLOCATE, Class::Request, [8; 12]);
    w.u32(attr::REQUESTED_TRANSPORT, 17 << 24)
        .attr(attr::USERNAME, h.user.as_bytes())
        .attr(attr::REALM, REALM.as_bytes())
        .attr(attr::NONCE, &old)
        .integrity(&h.key.clone());
    w.finish_with_fingerprint();
    let r = h.feed(&buf);
    assert_eq!(r[0].code(), Some(438));
    let fresh = r[0].msg().nonce.unwrap().to_vec();
    assert_ne!(fresh, old);
    assert_eq!(h.shared.metrics.alloc_result_count(AllocResult::StaleNonce), 1);
    assert_eq!(h.allocate().code(), None, "retry with the fresh nonce works");
}

#[test]
fn wrong_key_and_expired_username_get_401() {
    let mut h = Harness::new();
    h.allocate();
    h.refresh(600);
    h.key = [0; 16];
    assert_eq!(h.refresh(600).code(), Some(401));
    let mut h = Harness::new();
    h.user = format!("{}:alice", T0_UNIX - 1);
    h.key = long_term_key(&h.user, REALM, &rest_password(SECRET, &h.user));
    assert_eq!(h.allocate().code(), Some(401));
    assert_eq!(h.shared.metrics.alloc_result_count(AllocResult::Unauthorized), 1);
}

#[test]
fn other_users_credentials_on_allocation_get_441() {
    let mut h = Harness::new();
    h.allocate();
    h.user = format!("{}:mallory", T0_UNIX + 86_400);
    h.key = long_term_key(&h.user, REALM, &rest_password(SECRET, &h.user));
    assert_eq!(h.refresh(600).code(), Some(441));
}

#[test]
fn denied_peers_get_403_and_nothing_is_installed() {
    let mut h = Harness::with(Limits::default(), PeerFilter::default());
    h.allocate();
    for p in ["127.0.0.1:1", "169.254.169.254:80", "0.0.0.0:1"] {
        let p: SocketAddr = p.parse().unwrap();
        assert_eq!(h.permit(p).code(), Some(403), "{p}");
        assert_eq!(h.bind(0x4000, p).code(), Some(403), "{p}");
    }
    // One bad peer in a batch refuses the whole request.
    let r = h.request(method::CREATE_PERMISSION, |w| {
        w.xor_addr(attr::XOR_PEER_ADDRESS, peer()).xor_addr(attr::XOR_PEER_ADDRESS, "127.0.0.1:1".parse().unwrap());
    });
    assert_eq!(r.code(), Some(403));
    assert_eq!(h.shared.metrics.permissions.get(), 0);
    assert_eq!(h.permit("[::1]:1".parse().unwrap()).code(), Some(403), "denied before family");
    assert_eq!(h.permit("[2001:db8::1]:1".parse().unwrap()).code(), Some(403), "documentation range");
    assert_eq!(h.permit("[2001:4860::1]:1".parse().unwrap()).code(), Some(443), "v6 peer on a v4 relay");
}

#[test]
fn quotas_per_user_and_total() {
    let limits = Limits { max_allocations_per_user: 2, max_allocations: 3, ..Limits::default() };
    let shared = shared_with(limits, allow_all_public());
    let mut clients: Vec<Harness> = (1..=4).map(|c| Harness::on(shared.clone(), c)).collect();
    assert_eq!(clients[0].allocate().code(), None);
    assert_eq!(clients[1].allocate().code(), None);
    assert_eq!(clients[2].allocate().code(), Some(486), "third for alice");
    clients[3].user = format!("{}:bob", T0_UNIX + 86_400);
    clients[3].key = long_term_key(&clients[3].user, REALM, &rest_password(SECRET, &clients[3].user));
    assert_eq!(clients[3].allocate().code(), None);
    clients[2].user = format!("{}:carol", T0_UNIX + 86_400);
    clients[2].key = long_term_key(&clients[2].user, REALM, &rest_password(SECRET, &clients[2].user));
    assert_eq!(clients[2].allocate().code(), Some(486), "node total reached");
    clients[0].refresh(0);
    assert_eq!(clients[2].allocate().code(), None, "freed quota is reusable");
    assert_eq!(shared.metrics.alloc_result_count(AllocResult::Quota), 2);
}

#[test]
fn draining_refuses_new_but_refreshes_existing() {
    let mut h = Harness::new();
    h.allocate();
    h.shared.draining.store(true, Ordering::Relaxed);
    assert_eq!(h.refresh(600).code(), None);
    let mut other = Harness::on(h.shared.clone(), 2);
    assert_eq!(other.allocate().code(), Some(508));
}

#[test]
fn unsupported_transport_and_family() {
    let mut h = Harness::new();
    let r = h.request(method::ALLOCATE, |w| {
        w.u32(attr::REQUESTED_TRANSPORT, 6 << 24);
    });
    assert_eq!(r.code(), Some(442));
    let r = h.request(method::ALLOCATE, |_| {});
    assert_eq!(r.code(), Some(400));
    let r = h.request(method::ALLOCATE, |w| {
        w.u32(attr::REQUESTED_TRANSPORT, 17 << 24).u32(attr::REQUESTED_ADDRESS_FAMILY, 2 << 24);
    });
    assert_eq!(r.code(), Some(440));
}

#[test]
fn bandwidth_cap_drops_excess() {
    let limits = Limits { bandwidth_per_allocation: 1000, ..Limits::default() };
    let mut h = Harness::with(limits, allow_all_public());
    h.allocate();
    h.bind(0x4000, peer());
    let payload = [0u8; 400];
    let sent = (0..5).filter(|_| h.channel_send(0x4000, &payload).is_some()).count();
    assert_eq!(sent, 2, "1000 bytes of burst");
    h.now += Duration::from_millis(500);
    assert!(h.channel_send(0x4000, &payload).is_some(), "refilled 500 bytes");
    assert!(h.shared.metrics.dropped_count(DropReason::Bandwidth) >= 3);
}

#[test]
fn unauthenticated_requests_are_rate_limited() {
    let limits = Limits { unauthenticated_rate: 5, ..Limits::default() };
    let mut h = Harness::with(limits, allow_all_public());
    let mut answered = 0;
    for _ in 0..50 {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, method::ALLOCATE, Class::Request, rand::random());
        w.u32(attr::REQUESTED_TRANSPORT, 17 << 24);
        w.finish();
        answered += h.feed(&buf).len();
    }
    assert_eq!(answered, 10, "burst of 2x rate, then silence");
    h.now += Duration::from_secs(1);
    let mut buf = Vec::new();
    MessageWriter::new(&mut buf, method::REFRESH, Class::Request, [1; 12]).finish();
    assert_eq!(h.feed(&buf).len(), 1, "refilled after a second");
}

/// A Binding request with `attrs`, and FINGERPRINT when asked.
fn binding(tid: u8, fingerprint: bool, attrs: impl Fn(&mut MessageWriter<'_>)) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, method::BINDING, Class::Request, [tid; 12]);
    attrs(&mut w);
    if fingerprint {
        w.finish_with_fingerprint();
    } else {
        w.finish();
    }
    buf
}

#[test]
fn malformed_input_gets_400_or_is_dropped() {
    let mut h = Harness::new();
    // Well framed, but REQUESTED-TRANSPORT is 8 bytes long: 400.
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, method::ALLOCATE, Class::Request, [2; 12]);
    w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0, 0, 0, 0, 0]);
    w.finish();
    let r = h.feed(&buf);
    assert_eq!(r[0].code(), Some(400));
    // Garbage, empty, short ChannelData: dropped, no answer.
    assert!(h.feed(&[]).is_empty());
    assert!(h.feed(&[0xff; 64]).is_empty());
    assert!(h.feed(&[0x40, 0x00, 0x10, 0x00]).is_empty());
}

/// RFC 8489 §6.3: a message failing the basic checks is discarded silently.
/// Each of these got a 400 before.
#[test]
fn bad_fingerprint_and_junk_after_the_header_are_dropped_silently() {
    let mut h = Harness::new();
    let good = binding(3, true, |_| {});
    assert_eq!(h.feed(&good).len(), 1, "the well-formed request is answered");
    let mut bad_fp = good.clone();
    *bad_fp.last_mut().unwrap() ^= 1;
    // An attribute that runs past the message (REQUESTED-TRANSPORT claims 8 bytes, 4 follow).
    let mut overrun = binding(4, false, |_| {});
    overrun.extend_from_slice(&[0x00, 0x19, 0x00, 0x08, 17, 0, 0, 0]);
    overrun[3] = 8;
    // Junk covered by the header's length: no attribute framing at all.
    let mut junk = binding(5, false, |_| {});
    junk.extend_from_slice(&[0xff; 8]);
    junk[3] = 8;
    // A complete message with bytes after it in the same datagram.
    let mut trailing = binding(6, false, |_| {});
    trailing.extend_from_slice(b"junk");
    // FINGERPRINT that is not the last attribute.
    let mut misplaced = Vec::new();
    let mut w = MessageWriter::new(&mut misplaced, method::BINDING, Class::Request, [7; 12]);
    w.attr(attr::FINGERPRINT, &[0; 4]).attr(attr::SOFTWARE, b"x");
    w.finish();
    let before = h.shared.metrics.dropped_count(DropReason::Malformed);
    for (name, bytes) in [
        ("bad fingerprint", &bad_fp),
        ("overrun", &overrun),
        ("junk", &junk),
        ("trailing", &trailing),
        ("misplaced", &misplaced),
    ] {
        assert!(h.feed(bytes).is_empty(), "{name}: dropped without an answer");
    }
    assert_eq!(h.shared.metrics.dropped_count(DropReason::Malformed), before + 5);
}

#[test]
fn unknown_comprehension_required_attributes_get_420_listing_them_all() {
    let mut h = Harness::new();
    // Binding succeeded before, whatever it carried.
    let req = binding(8, true, |w| {
        w.attr(0x0030, b"abcd").attr(0x8030, b"optional").attr(0x7fff, b"").attr(0x0030, b"again");
    });
    let r = h.feed(&req);
    assert_eq!(r.len(), 1);
    let msg = r[0].msg();
    assert_eq!((msg.class, msg.error_code), (Class::Error, Some(420)));
    assert_eq!(attribute(&r[0].bytes, attr::UNKNOWN_ATTRIBUTES), Some(vec![0x00, 0x30, 0x7f, 0xff]));
    // Comprehension-optional attributes alone are fine.
    let r = h.feed(&binding(9, true, |w| {
        w.attr(0x8030, b"optional");
    }));
    assert_eq!(r[0].msg().class, Class::Success);
    // TURN requests: checked after authentication, and the 420 is signed.
    let r = h.request(method::ALLOCATE, |w| {
        w.u32(attr::REQUESTED_TRANSPORT, 17 << 24).attr(0x0031, b"abcd").attr(0x0032, b"");
    });
    assert_eq!(r.code(), Some(420));
    assert!(stun::verify_integrity(&r.msg(), &h.key), "the 420 carries MESSAGE-INTEGRITY");
    assert_eq!(attribute(&r.bytes, attr::UNKNOWN_ATTRIBUTES), Some(vec![0x00, 0x31, 0x00, 0x32]));
    assert_eq!(h.engine.allocation_count(), 0);
    // An indication with one is discarded.
    assert_eq!(h.allocate().code(), None);
    h.permit(peer());
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, method::SEND, Class::Indication, [4; 12]);
    w.xor_addr(attr::XOR_PEER_ADDRESS, peer()).attr(attr::DATA, b"ping").attr(0x0030, b"");
    w.finish();
    assert_eq!(h.engine.handle_client(h.now, &h.five, &buf), Forward::None);
}

/// The raw value of the first `typ` attribute of a message.
fn attribute(raw: &[u8], typ: u16) -> Option<Vec<u8>> {
    let mut pos = stun::HEADER_LEN;
    while pos + 4 <= raw.len() {
        let t = u16::from_be_bytes([raw[pos], raw[pos + 1]]);
        let len = usize::from(u16::from_be_bytes([raw[pos + 2], raw[pos + 3]]));
        if t == typ {
            return Some(raw[pos + 4..pos + 4 + len].to_vec());
        }
        pos += 4 + len.next_multiple_of(4);
    }
    None
}

#[test]
fn binding_requests_are_rate_limited_unless_the_five_tuple_holds_an_allocation() {
    let limits = Limits { unauthenticated_rate: 5, ..Limits::default() };
    let mut h = Harness::with(limits, allow_all_public());
    let answered: usize = (0..50).map(|i| h.feed(&binding(i, true, |_| {})).len()).sum();
    assert_eq!(answered, 10, "burst of 2x rate, then silence (all 50 were answered before)");
    assert_eq!(h.shared.metrics.dropped_count(DropReason::RateLimited), 40);
    // A client that allocated keeps its keepalives whatever its neighbours send.
    h.now += Duration::from_secs(1);
    assert_eq!(h.allocate().code(), None);
    let answered: usize = (0..50).map(|i| h.feed(&binding(i, true, |_| {})).len()).sum();
    assert_eq!(answered, 50);
}

#[test]
fn the_lifetime_granted_is_the_lifetime_reported() {
    // The driver binds the relay a little after the Allocate was handled;
    // the allocation's lifetime starts then, and the answer says 3600, not 3599.
    let mut h = Harness::new();
    h.allocate();
    h.refresh(0);
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, method::ALLOCATE, Class::Request, [9; 12]);
    w.u32(attr::REQUESTED_TRANSPORT, 17 << 24)
        .u32(attr::LIFETIME, 3600)
        .attr(attr::USERNAME, h.user.as_bytes())
        .attr(attr::REALM, REALM.as_bytes())
        .attr(attr::NONCE, &h.nonce.clone())
        .integrity(&h.key.clone());
    w.finish_with_fingerprint();
    assert_eq!(h.engine.handle_client(h.now, &h.five, &buf), Forward::None);
    let Some(Output::BindRelay { id, .. }) = h.engine.poll_output() else { panic!("a relay is requested") };
    let bound_at = h.now + Duration::from_millis(3);
    h.engine.relay_bound(bound_at, id, Some("192.0.2.1:50000".parse().unwrap()));
    let Some(Output::Transmit { data, .. }) = h.engine.poll_output() else { panic!("an answer") };
    assert_eq!(parse(&data).unwrap().lifetime, Some(3600));
    assert_eq!(h.engine.poll_timeout(), Some(bound_at + MAX_LIFETIME), "expires 3600 s after it exists");
}

#[test]
fn relay_port_exhaustion_is_its_own_allocate_result() {
    let mut h = Harness::new();
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, method::ALLOCATE, Class::Request, [1; 12]);
    w.u32(attr::REQUESTED_TRANSPORT, 17 << 24);
    w.finish();
    let challenge = h.feed(&buf);
    h.nonce = challenge[0].msg().nonce.unwrap().to_vec();
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, method::ALLOCATE, Class::Request, [2; 12]);
    w.u32(attr::REQUESTED_TRANSPORT, 17 << 24)
        .attr(attr::USERNAME, h.user.as_bytes())
        .attr(attr::REALM, REALM.as_bytes())
        .attr(attr::NONCE, &h.nonce.clone())
        .integrity(&h.key.clone());
    w.finish_with_fingerprint();
    h.engine.handle_client(h.now, &h.five, &buf);
    let Some(Output::BindRelay { id, .. }) = h.engine.poll_output() else { panic!("a relay is requested") };
    h.engine.relay_bound(h.now, id, None);
    let answer = std::iter::from_fn(|| h.engine.poll_output())
        .find_map(|o| match o {
            Output::Transmit { data, .. } => Some(data),
            _ => None,
        })
        .expect("an answer");
    assert_eq!(parse(&answer).unwrap().error_code, Some(508));
    let m = &h.shared.metrics;
    assert_eq!(m.alloc_result_count(AllocResult::RelayPortsExhausted), 1);
    assert_eq!(m.alloc_result_count(AllocResult::Error), 0, "counted as error before");
    assert_eq!(h.shared.quotas.total(), 0, "the reservation is released");
}

#[test]
fn poll_timeout_reports_the_earliest_deadline() {
    let mut h = Harness::new();
    assert_eq!(h.engine.poll_timeout(), None);
    h.allocate();
    assert_eq!(h.engine.poll_timeout(), Some(h.now + DEFAULT_LIFETIME));
    h.permit(peer());
    assert_eq!(h.engine.poll_timeout(), Some(h.now + PERMISSION_LIFETIME));
}

#[test]
fn permissions_per_allocation_are_capped() {
    let mut h = Harness::new();
    h.allocate();
    for i in 0..MAX_PERMISSIONS as u32 {
        let p = SocketAddr::from((std::net::Ipv4Addr::from(0xCB00_7100 + i), 1));
        assert_eq!(h.permit(p).code(), None, "permission {i}");
    }
    let one_more = SocketAddr::from(([198, 18, 0, 1], 1));
    assert_eq!(h.permit(one_more).code(), Some(508));
    assert_eq!(h.bind(0x4000, one_more).code(), Some(508));
    // Refreshing an existing one is always fine.
    assert_eq!(h.permit(SocketAddr::from(([203, 0, 113, 0], 9))).code(), None);
    assert_eq!(h.shared.metrics.permissions.get(), MAX_PERMISSIONS as i64);
}

/// The forms the probe found granted, through CreatePermission and
/// ChannelBind on the relay family that reaches them.
#[test]
fn non_global_and_embedded_peers_are_refused_on_both_relay_families() {
    let v6_relay = shared_on(Limits::default(), PeerFilter::default(), "2001:4860::1".parse().unwrap());
    let mut h = Harness::on(v6_relay, 1);
    h.allocate();
    let forms = [
        "2002:7f00:1::",
        "2002:a9fe:a9fe::",
        "64:ff9b:1::7f00:1",
        "::ffff:0:7f00:1",
        "2001:0:7f00:1::f7f7:f7f7",
        "2001:0::1",
        "100::1",
        "2001:db8::1",
        "64:ff9b::a9fe:a9fe",
        "::127.0.0.1",
    ];
    for (i, p) in forms.iter().enumerate() {
        let peer = SocketAddr::new(p.parse().unwrap(), 3478);
        assert_eq!(h.permit(peer).code(), Some(403), "CreatePermission {p}");
        assert_eq!(h.bind(0x4000 + i as u16, peer).code(), Some(403), "ChannelBind {p}");
    }
    // Globally reachable IPv4 behind a translator or tunnel is an IPv6 peer.
    for p in ["64:ff9b::808:808", "2002:808:808::1", "2001:4860::8888"] {
        let peer = SocketAddr::new(p.parse().unwrap(), 3478);
        assert_eq!(h.permit(peer).code(), None, "CreatePermission {p}");
    }
    assert_eq!(h.shared.metrics.permissions.get(), 3);

    let mut h = Harness::with(Limits::default(), PeerFilter::default());
    h.allocate();
    for (i, p) in ["100.64.0.1", "192.0.0.1", "198.18.0.1", "10.0.0.1", "192.168.0.1", "172.16.0.1"].iter().enumerate()
    {
        let peer = SocketAddr::new(p.parse().unwrap(), 3478);
        assert_eq!(h.permit(peer).code(), Some(403), "CreatePermission {p}");
        assert_eq!(h.bind(0x4000 + i as u16, peer).code(), Some(403), "ChannelBind {p}");
    }
    assert_eq!(h.permit("8.8.8.8:53".parse().unwrap()).code(), None);
    assert_eq!(h.permit("[64:ff9b::808:808]:53".parse().unwrap()).code(), Some(443), "an IPv6 peer on an IPv4 relay");
}

fn dual_stack() -> Harness {
    let relay = RelayIps::new("192.0.2.1".parse().unwrap(), Some("2001:db8::1".parse().unwrap())).unwrap();
    Harness::on(shared_relaying(Limits::default(), allow_all_public(), relay), 1)
}

fn peer6() -> SocketAddr {
    "[2001:4860::5]:4000".parse().unwrap()
}

impl Harness {
    fn allocate_with(&mut self, typ: u16, family: u8) -> Reply {
        self.request(method::ALLOCATE, |w| {
            w.u32(attr::REQUESTED_TRANSPORT, 17 << 24).u32(typ, u32::from(family) << 24);
        })
    }

    /// Sends an authenticated dual (IPv4 + IPv6) Allocate and leaves its relay binds
    /// unanswered, for tests that drive `relay_bound` / `relay_bind_failed` themselves.
    /// True when the engine forwarded nothing (the request is the engine's to answer).
    fn send_dual_allocate_unbound(&mut self, txid: [u8; 12]) -> bool {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, method::ALLOCATE, Class::Request, txid);
        w.u32(attr::REQUESTED_TRANSPORT, 17 << 24)
            .u32(attr::ADDITIONAL_ADDRESS_FAMILY, 2 << 24)
            .attr(attr::USERNAME, self.user.as_bytes())
            .attr(attr::REALM, REALM.as_bytes())
            .attr(attr::NONCE, &self.nonce.clone())
            .integrity(&self.key.clone());
        w.finish_with_fingerprint();
        matches!(self.engine.handle_client(self.now, &self.five, &buf), Forward::None)
    }

    fn refresh_family(&mut self, lifetime: u32, family: u8) -> Reply {
        self.request(method::REFRESH, |w| {
            w.u32(attr::LIFETIME, lifetime).u32(attr::REQUESTED_ADDRESS_FAMILY, u32::from(family) << 24);
        })
    }
}

#[test]
fn dual_allocation_relays_both_families_and_refresh_keeps_both() {
    let mut h = dual_stack();
    let r = h.allocate_with(attr::ADDITIONAL_ADDRESS_FAMILY, 2);
    let msg = r.msg();
    assert_eq!(msg.error_code, None);
    let (v4, v6) = (msg.relayed.expect("IPv4 relayed address"), msg.relayed_additional.expect("IPv6 one"));
    assert_eq!((v4.ip(), v6.ip()), ("192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()));
    assert_eq!(msg.address_error, None);
    assert!(stun::verify_integrity(&msg, &h.key));
    let id = h.alloc_id();
    assert_eq!(h.engine.relay_addrs(id).collect::<Vec<_>>(), vec![v4, v6]);
    assert_eq!(h.shared.metrics.allocations.get(), 1, "one allocation, two relayed addresses");
    assert_eq!(h.shared.quotas.total(), 1);

    // Permissions and channels for peers of either family, on one allocation.
    assert_eq!(h.permit(peer()).code(), None);
    assert_eq!(h.permit(peer6()).code(), None);
    assert_eq!(h.bind(0x4001, peer6()).code(), None);
    assert_eq!(h.send(peer(), b"v4"), Some(peer()));
    assert_eq!(h.channel_send(0x4001, b"v6"), Some(peer6()));
    assert!(h.peer_sends(peer6(), b"x").is_some());
    assert!(h.peer_sends(peer(), b"x").is_some());

    // A Refresh covers both; naming either family is fine.
    h.advance(599);
    assert_eq!(h.refresh_family(600, 2).code(), None);
    h.advance(599);
    assert_eq!(h.refresh_family(600, 1).code(), None);
    h.advance(599);
    assert_eq!(h.refresh(600).code(), None);
    assert_eq!(h.engine.relay_addrs(id).collect::<Vec<_>>(), vec![v4, v6], "both survive 1797 s of refreshes");
    // Deleting releases the one allocation (the driver closes both sockets).
    h.refresh(0);
    assert_eq!(h.engine.allocation_count(), 0);
    assert_eq!((h.shared.metrics.allocations.get(), h.shared.quotas.total()), (0, 0));
}

#[test]
fn requested_family_gets_that_family_only_and_other_peers_get_443() {
    let mut h = dual_stack();
    let msg_bytes = h.allocate_with(attr::REQUESTED_ADDRESS_FAMILY, 2).bytes;
    let msg = parse(&msg_bytes).unwrap();
    assert_eq!(msg.error_code, None);
    assert!(msg.relayed.unwrap().is_ipv6());
    assert_eq!(msg.relayed_additional, None);
    assert_eq!(h.permit(peer6()).code(), None);
    assert_eq!(h.permit(peer()).code(), Some(443), "IPv4 peer on an IPv6-only allocation");
    assert_eq!(h.bind(0x4000, peer()).code(), Some(443));
    // CreatePermission is all or nothing: a mixed request installs nothing.
    let r = h.request(method::CREATE_PERMISSION, |w| {
        w.xor_addr(attr::XOR_PEER_ADDRESS, "[2001:4860::9]:1".parse().unwrap())
            .xor_addr(attr::XOR_PEER_ADDRESS, peer());
    });
    assert_eq!(r.code(), Some(443));
    assert_eq!(h.shared.metrics.permissions.get(), 1);
    assert_eq!(h.refresh_family(600, 1).code(), Some(443), "Refresh naming a family the allocation lacks");
    assert_eq!(h.refresh_family(600, 2).code(), None);

    // No family named: IPv4 (RFC 8656 §7.2), even on a dual-stack node.
    let mut h = dual_stack();
    let msg_bytes = h.allocate().bytes;
    let msg = parse(&msg_bytes).unwrap();
    assert!(msg.relayed.unwrap().is_ipv4());
    assert_eq!(msg.relayed_additional, None);
    assert_eq!(h.permit(peer6()).code(), Some(443));
}

#[test]
fn family_errors_400_and_440() {
    let mut h = dual_stack();
    let r = h.request(method::ALLOCATE, |w| {
        w.u32(attr::REQUESTED_TRANSPORT, 17 << 24)
            .u32(attr::REQUESTED_ADDRESS_FAMILY, 1 << 24)
            .u32(attr::ADDITIONAL_ADDRESS_FAMILY, 2 << 24);
    });
    assert_eq!(r.code(), Some(400), "both family attributes");
    assert_eq!(h.allocate_with(attr::ADDITIONAL_ADDRESS_FAMILY, 1).code(), Some(400), "additional must be IPv6");
    assert_eq!(h.allocate_with(attr::REQUESTED_ADDRESS_FAMILY, 3).code(), Some(440), "no such family");
    let r = h.request(method::ALLOCATE, |w| {
        w.u32(attr::REQUESTED_TRANSPORT, 17 << 24)
            .u32(attr::ADDITIONAL_ADDRESS_FAMILY, 2 << 24)
            .attr(attr::RESERVATION_TOKEN, &[0; 8]);
    });
    assert_eq!(r.code(), Some(400), "RESERVATION-TOKEN with ADDITIONAL-ADDRESS-FAMILY");
    assert_eq!(h.engine.allocation_count(), 0);
    assert_eq!(h.shared.quotas.total(), 0, "nothing reserved by refused requests");

    // An IPv6-only node: IPv4, alone or as the dual allocation's first
    // family, is not supported.
    let mut h = Harness::on(shared_on(Limits::default(), allow_all_public(), "2001:db8::1".parse().unwrap()), 1);
    assert_eq!(h.allocate_with(attr::REQUESTED_ADDRESS_FAMILY, 1).code(), Some(440));
    assert_eq!(h.allocate_with(attr::ADDITIONAL_ADDRESS_FAMILY, 2).code(), Some(440));
    let r = h.allocate();
    assert!(r.msg().relayed.unwrap().is_ipv6(), "a request naming no family gets the node's one family");
}

#[test]
fn ipv4_node_answers_a_dual_request_with_ipv4_and_address_error_code() {
    let mut h = Harness::new();
    let r = h.allocate_with(attr::ADDITIONAL_ADDRESS_FAMILY, 2);
    let msg = r.msg();
    assert_eq!(msg.error_code, None, "the IPv4 part is granted");
    assert!(msg.relayed.unwrap().is_ipv4());
    assert_eq!(msg.relayed_additional, None);
    assert_eq!(msg.address_error, Some((2, 440)), "and the response says why IPv6 is missing");
    assert_eq!(h.permit(peer6()).code(), Some(443));
}

#[test]
fn failed_second_bind_refuses_the_dual_allocation_and_releases_everything() {
    let mut h = dual_stack();
    h.allocate(); // fetch a nonce; it also makes a v4 allocation on this 5-tuple
    h.refresh(0);
    assert!(h.send_dual_allocate_unbound([8; 12]), "the engine answers an Allocate itself");
    let binds: Vec<(AllocId, Family)> = std::iter::from_fn(|| h.engine.poll_output())
        .filter_map(|o| match o {
            Output::BindRelay { id, family, .. } => Some((id, family)),
            _ => None,
        })
        .collect();
    assert_eq!(binds.iter().map(|b| b.1).collect::<Vec<_>>(), vec![Family::V4, Family::V6]);
    let id = binds[0].0;
    // The IPv4 socket binds, the IPv6 one finds no port.
    h.engine.relay_bound(h.now, id, Some("192.0.2.1:50000".parse().unwrap()));
    assert!(h.engine.poll_output().is_none(), "no answer until both families are bound");
    h.engine.relay_bound(h.now, id, None);
    let outs: Vec<Output> = std::iter::from_fn(|| h.engine.poll_output()).collect();
    assert!(outs.iter().any(|o| matches!(o, Output::Release { id: i } if *i == id)), "both sockets released");
    let answer = outs.iter().find_map(|o| match o {
        Output::Transmit { data, .. } => Some(parse(data).unwrap().error_code),
        _ => None,
    });
    assert_eq!(answer, Some(Some(508)));
    assert_eq!((h.engine.allocation_count(), h.shared.quotas.total(), h.shared.metrics.allocations.get()), (0, 0, 0));
}

#[test]
fn first_bind_failing_voids_the_queued_second_bind() {
    let mut h = dual_stack();
    h.allocate();
    h.refresh(0);
    h.send_dual_allocate_unbound([9; 12]);
    let Some(Output::BindRelay { id, family: Family::V4, .. }) = h.engine.poll_output() else {
        panic!("the IPv4 relay is requested first")
    };
    // The driver fails the first bind before looking at the second request.
    h.engine.relay_bind_failed(id);
    let outs: Vec<Output> = std::iter::from_fn(|| h.engine.poll_output()).collect();
    assert!(!outs.iter().any(|o| matches!(o, Output::BindRelay { .. })), "no socket bound for a dead allocation");
    assert_eq!(h.shared.quotas.total(), 0);
}
