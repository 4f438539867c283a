//! Security behaviour of the real server on loopback, driven by a raw STUN
//! client: peer filtering (every denied address form gets 403 and no packet
//! leaves), credentials (expired/forged get 401), quotas (486), malformed
//! input (400 or dropped, no crash), safe defaults, drain, and secret rotation
//! from a file.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use switchyard_turn_node::Config;
use switchyard_turn_node::auth::long_term_key;
use switchyard_turn_node::metrics::{AllocResult, DropReason};
use switchyard_turn_node::stun::{Class, MessageWriter, attr, method, parse};
use tokio::net::UdpSocket;

/// A minimal TURN client over UDP built on the crate's codec; it follows the
/// 401/438 challenge like any long-term-credential client.
struct Raw {
    sock: UdpSocket,
    server: SocketAddr,
    username: String,
    key: [u8; 16],
    nonce: Vec<u8>,
}

struct Answer {
    bytes: Vec<u8>,
}

impl Answer {
    fn code(&self) -> Option<u16> {
        parse(&self.bytes).expect("valid STUN answer").error_code
    }
    fn class(&self) -> Class {
        parse(&self.bytes).unwrap().class
    }
}

impl Raw {
    async fn new(server: SocketAddr, username: String, password: &str) -> Self {
        Raw {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
            key: long_term_key(&username, REALM, password),
            username,
            nonce: Vec::new(),
        }
    }

    async fn rest(server: SocketAddr, user: &str) -> Self {
        let (u, p) = rest_credentials(SECRET, user, Duration::from_secs(600));
        Self::new(server, u, &p).await
    }

    async fn recv(&self, within: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        match tokio::time::timeout(within, self.sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    async fn raw(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        self.sock.send_to(bytes, self.server).await.unwrap();
        self.recv(Duration::from_millis(500)).await
    }

    async fn request(&mut self, m: u16, build: impl Fn(&mut MessageWriter<'_>)) -> Answer {
        for _ in 0..2 {
            let mut buf = Vec::new();
            let mut w = MessageWriter::new(&mut buf, m, Class::Request, rand::random());
            build(&mut w);
            if !self.nonce.is_empty() {
                w.attr(attr::USERNAME, self.username.as_bytes())
                    .attr(attr::REALM, REALM.as_bytes())
                    .attr(attr::NONCE, &self.nonce)
                    .integrity(&self.key);
            }
            w.finish_with_fingerprint();
            let bytes = self.raw(&buf).await.expect("server answers requests");
            let msg = parse(&bytes).unwrap();
            match (msg.error_code, msg.nonce) {
                (Some(401 | 438), Some(n)) if n != self.nonce.as_slice() => self.nonce = n.to_vec(),
                _ => return Answer { bytes },
            }
        }
        panic!("challenge did not converge")
    }

    async fn allocate(&mut self) -> Answer {
        self.request(method::ALLOCATE, |w| {
            w.u32(attr::REQUESTED_TRANSPORT, 17 << 24);
        })
        .await
    }

    async fn refresh(&mut self, lifetime: u32) -> Answer {
        self.request(method::REFRESH, |w| {
            w.u32(attr::LIFETIME, lifetime);
        })
        .await
    }

    async fn permit(&mut self, peer: SocketAddr) -> Answer {
        self.request(method::CREATE_PERMISSION, |w| {
            w.xor_addr(attr::XOR_PEER_ADDRESS, peer);
        })
        .await
    }

    async fn bind(&mut self, channel: u16, peer: SocketAddr) -> Answer {
        self.request(method::CHANNEL_BIND, |w| {
            w.u32(attr::CHANNEL_NUMBER, u32::from(channel) << 16).xor_addr(attr::XOR_PEER_ADDRESS, peer);
        })
        .await
    }

    async fn send_indication(&self, peer: SocketAddr, data: &[u8]) {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, method::SEND, Class::Indication, rand::random());
        w.xor_addr(attr::XOR_PEER_ADDRESS, peer).attr(attr::DATA, data);
        w.finish();
        self.sock.send_to(&buf, self.server).await.unwrap();
    }
}

fn no_allow_list(dir: &std::path::Path) -> Config {
    let mut c = loopback_config(dir);
    c.peers.allow.clear();
    c
}

/// Every form of a forbidden destination, with `port` where it reaches loopback.
fn denied_forms(port: u16) -> Vec<SocketAddr> {
    [
        "127.0.0.1",
        "127.0.0.2",
        "0.0.0.0",
        "169.254.169.254",
        "169.254.1.1",
        "224.0.0.251",
        "255.255.255.255",
        "[::1]",
        "[::]",
        "[fe80::1]",
        "[ff02::1]",
        "[fd00::1]",
        "[fc00::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:169.254.169.254]",
        "[::ffff:0.0.0.0]",
        "[::ffff:224.0.0.1]",
        "[::127.0.0.1]",
        "[64:ff9b::7f00:1]",
        // Found granted by the issue 11 probe: 6to4, local-use NAT64, SIIT, Teredo,
        // discard-only, documentation; shared, IETF and benchmarking IPv4.
        "[2002:7f00:1::]",
        "[2002:a9fe:a9fe::]",
        "[64:ff9b:1::7f00:1]",
        "[::ffff:0:7f00:1]",
        "[2001:0:7f00:1::f7f7:f7f7]",
        "[100::1]",
        "[2001:db8::1]",
        "100.64.0.1",
        "192.0.0.1",
        "198.18.0.1",
    ]
    .iter()
    .map(|a| format!("{a}:{port}").parse().unwrap())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_denied_address_form_gets_403_and_no_packet_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(no_allow_list(dir.path())).await;
    // A "victim" service on loopback that must never hear from the relay.
    let victim = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = victim.local_addr().unwrap().port();
    let mut c = Raw::rest(server.addrs().udp[0], "attacker").await;
    assert_eq!(c.allocate().await.code(), None);
    let mut channel = 0x4000;
    for peer in denied_forms(port) {
        assert_eq!(c.permit(peer).await.code(), Some(403), "CreatePermission to {peer}");
        assert_eq!(c.bind(channel, peer).await.code(), Some(403), "ChannelBind to {peer}");
        channel += 1;
        c.send_indication(peer, b"leak?").await;
    }
    // ChannelData on channels that were refused goes nowhere either.
    for ch in 0x4000..channel {
        let mut frame = ch.to_be_bytes().to_vec();
        frame.extend_from_slice(&[0, 4, b'l', b'e', b'a', b'k']);
        c.sock.send_to(&frame, c.server).await.unwrap();
    }
    let mut buf = [0u8; 64];
    let heard = tokio::time::timeout(Duration::from_millis(500), victim.recv_from(&mut buf)).await;
    assert!(heard.is_err(), "a packet reached loopback through the relay");
    let m = server.metrics();
    assert_eq!(m.permissions.get(), 0);
    assert_eq!(m.channels.get(), 0);
    let forms = denied_forms(port).len() as u64;
    assert_eq!(m.dropped_count(DropReason::DeniedPeer), forms, "every Send was refused by the filter");
    assert_eq!(m.alloc_result_count(AllocResult::DeniedPeer), 2 * forms);
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_wins_over_the_default_deny() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(loopback_config(dir.path())).await;
    let peer = echo_peer().await;
    let mut c = Raw::rest(server.addrs().udp[0], "gateway").await;
    c.allocate().await;
    assert_eq!(c.permit(peer).await.code(), None);
    c.send_indication(peer, b"echo me").await;
    let back = c.recv(Duration::from_secs(2)).await.expect("echo through relay");
    let msg = parse(&back).unwrap();
    assert_eq!((msg.method, msg.data), (method::DATA, Some(&b"echo me"[..])));
    // Link-local stays denied even with loopback allowed.
    assert_eq!(c.permit("169.254.169.254:80".parse().unwrap()).await.code(), Some(403));
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_listener_is_never_a_peer_even_when_allowed() {
    // Gateway mode allows the pod CIDR, which holds the TURN pod itself:
    // relaying into our own listener would loop TURN through TURN.
    let dir = tempfile::tempdir().unwrap();
    let server = start(loopback_config(dir.path())).await;
    let own = server.addrs().udp[0];
    let mut c = Raw::rest(own, "looper").await;
    assert_eq!(c.allocate().await.code(), None);
    assert_eq!(c.bind(0x4000, own).await.code(), Some(403), "ChannelBind to our own listener");
    let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{}", own.port()).parse().unwrap();
    assert_eq!(c.bind(0x4001, mapped).await.code(), Some(403), "IPv4-mapped form of it");
    // A permission for the IP is fine (other ports on it are allowed peers),
    // but a Send to the listener port is still refused.
    assert_eq!(c.permit(own).await.code(), None);
    let before = server.metrics().dropped_count(DropReason::DeniedPeer);
    c.send_indication(own, b"loop").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.metrics().dropped_count(DropReason::DeniedPeer), before + 1);
    assert_eq!(server.status().allocations, 1, "no second allocation appeared through the loop");
    server.shutdown();
}

/// `switchyard dev`'s embedded TURN: an `only_peers` list of the SFU's media port. A
/// permission for its IP is granted whatever port it names (browsers' permissions must
/// work), and data goes to and comes from exactly the listed port, never another
/// service on the same host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_only_list_relays_to_the_listed_port_and_no_other_port_of_its_host() {
    let dir = tempfile::tempdir().unwrap();
    let sfu = echo_peer().await;
    let victim = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let other_port = victim.local_addr().unwrap();
    let mut config = loopback_config(dir.path());
    config.only_peers = vec![sfu];
    let server = start(config).await;
    let mut c = Raw::rest(server.addrs().udp[0], "browser").await;
    let relayed = parse(&c.allocate().await.bytes).unwrap().relayed.expect("relayed address");
    assert_eq!(c.permit(other_port).await.code(), None, "a permission is per IP");
    assert_eq!(c.permit(sfu).await.code(), None);
    assert_eq!(c.bind(0x4000, other_port).await.code(), Some(403), "ChannelBind to another port");
    assert_eq!(c.bind(0x4001, sfu).await.code(), None);
    c.send_indication(other_port, b"leak?").await;
    c.send_indication(sfu, b"media").await;
    let back = c.recv(Duration::from_secs(2)).await.expect("echo from the SFU port");
    assert_eq!(back, [0x40, 0x01, 0, 5, b'm', b'e', b'd', b'i', b'a'], "over its channel");
    // The other port of the host hears nothing, and what it sends is not relayed back.
    let mut buf = [0u8; 64];
    let heard = tokio::time::timeout(Duration::from_millis(300), victim.recv_from(&mut buf)).await;
    assert!(heard.is_err(), "a packet reached another port of the SFU's host");
    victim.send_to(b"unsolicited", relayed).await.unwrap();
    assert_eq!(c.recv(Duration::from_millis(300)).await, None, "relayed back from another port");
    assert_eq!(server.metrics().dropped_count(DropReason::DeniedPeer), 2, "the Send and the answer");
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_forged_credentials_get_401() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(loopback_config(dir.path())).await;
    let addr = server.addrs().udp[0];
    // Expired: signed with the right secret, expiry in the past.
    let username = "1000000000:alice".to_string();
    let password = switchyard_turn_node::auth::rest_password(SECRET.as_bytes(), &username);
    let mut expired = Raw::new(addr, username, &password).await;
    assert_eq!(expired.allocate().await.code(), Some(401));
    // Forged: valid expiry, signed with another secret.
    let (u, p) = rest_credentials("guessed", "mallory", Duration::from_secs(600));
    let mut forged = Raw::new(addr, u, &p).await;
    assert_eq!(forged.allocate().await.code(), Some(401));
    // Not a REST username at all.
    let mut nobody = Raw::new(addr, "root".into(), "root").await;
    assert_eq!(nobody.allocate().await.code(), Some(401));
    assert_eq!(server.status().allocations, 0);
    assert_eq!(server.metrics().alloc_result_count(AllocResult::Unauthorized), 3);
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_exceeded_gets_486() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = loopback_config(dir.path());
    config.quotas.max_allocations_per_user = 2;
    config.quotas.max_allocations = 3;
    let server = start(config).await;
    let addr = server.addrs().udp[0];
    let mut alice = Vec::new();
    for _ in 0..3 {
        alice.push(Raw::rest(addr, "alice").await);
    }
    assert_eq!(alice[0].allocate().await.code(), None);
    assert_eq!(alice[1].allocate().await.code(), None);
    assert_eq!(alice[2].allocate().await.code(), Some(486), "per-user quota");
    let mut bob = Raw::rest(addr, "bob").await;
    assert_eq!(bob.allocate().await.code(), None);
    let mut carol = Raw::rest(addr, "carol").await;
    assert_eq!(carol.allocate().await.code(), Some(486), "node quota");
    assert_eq!(server.metrics().alloc_result_count(AllocResult::Quota), 2);
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_come_from_the_configured_port_range_and_exhaustion_gets_508() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = loopback_config(dir.path());
    let port = free_udp_port_outside_ephemeral_range();
    config.relay.port_min = port;
    config.relay.port_max = port;
    let server = start(config).await;
    let addr = server.addrs().udp[0];
    let mut first = Raw::rest(addr, "first").await;
    let answer = first.allocate().await;
    let relayed = parse(&answer.bytes).unwrap().relayed.expect("XOR-RELAYED-ADDRESS");
    assert_eq!(relayed, SocketAddr::from(([127, 0, 0, 1], port)), "relay port from the range");
    let mut second = Raw::rest(addr, "second").await;
    assert_eq!(second.allocate().await.code(), Some(508), "range exhausted");
    assert_eq!(server.status().allocations, 1);
    let m = server.metrics();
    assert_eq!(m.alloc_result_count(AllocResult::RelayPortsExhausted), 1, "its own result");
    assert_eq!(m.alloc_result_count(AllocResult::Error), 0);
    // The refused allocation released its quota reservation.
    assert_eq!(first.refresh(0).await.code(), None);
    // The first relay socket closes when its worker next runs; a client on
    // another worker can ask before that, so give it a moment.
    let mut freed = false;
    for _ in 0..20 {
        let mut third = Raw::rest(addr, "third").await;
        if third.allocate().await.code().is_none() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "port free again after the first ended");
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_400_or_is_dropped_and_the_server_survives() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(loopback_config(dir.path())).await;
    let c = Raw::rest(server.addrs().udp[0], "fuzzer").await;
    // A well-framed request with a malformed attribute value: 400.
    let mut req = Vec::new();
    let mut w = MessageWriter::new(&mut req, method::ALLOCATE, Class::Request, [5; 12]);
    w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0, 0, 0, 0, 0]);
    w.finish();
    let answer = Answer { bytes: c.raw(&req).await.expect("400 answer") };
    assert_eq!((answer.class(), answer.code()), (Class::Error, Some(400)));
    // A request whose attribute overruns the message, a bad FINGERPRINT, bytes
    // after the message (each got a 400 before), and junk of every shape:
    // dropped without an answer (RFC 8489 §6.3).
    let mut overrun = Vec::new();
    MessageWriter::new(&mut overrun, method::ALLOCATE, Class::Request, [5; 12]).finish();
    overrun.extend_from_slice(&[0x00, 0x19, 0x00, 0x40, 17, 0, 0, 0]);
    overrun[3] = 8;
    let mut bad_fingerprint = Vec::new();
    MessageWriter::new(&mut bad_fingerprint, method::BINDING, Class::Request, [6; 12]).finish_with_fingerprint();
    *bad_fingerprint.last_mut().unwrap() ^= 0xff;
    let mut trailing = Vec::new();
    MessageWriter::new(&mut trailing, method::BINDING, Class::Request, [7; 12]).finish();
    trailing.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    let junk: Vec<Vec<u8>> = vec![
        overrun,
        bad_fingerprint,
        trailing,
        vec![],
        vec![0],
        vec![0xff; 1200],
        vec![0x40, 0x00, 0xff, 0xff],
        vec![0x00, 0x01, 0x00, 0x04, 0, 0, 0, 0],
        (0..=255).collect(),
    ];
    for j in &junk {
        c.sock.send_to(j, c.server).await.unwrap();
    }
    assert!(c.recv(Duration::from_millis(300)).await.is_none(), "junk gets no answer");
    // Over TCP, a garbage stream is closed; the server keeps serving.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(server.addrs().tcp[0]).await.unwrap();
        s.write_all(&[0xffu8; 64]).await.unwrap();
        let mut b = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await.unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "garbage stream closed");
    }
    let mut binding = Vec::new();
    MessageWriter::new(&mut binding, method::BINDING, Class::Request, [6; 12]).finish();
    let ok = Answer { bytes: c.raw(&binding).await.expect("still alive") };
    assert_eq!(ok.class(), Class::Success);
    assert!(server.metrics().dropped_count(DropReason::Malformed) >= junk.len() as u64);
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_refuses_new_allocations_keeps_refreshing_and_stays_drained_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(loopback_config(dir.path())).await;
    let addr = server.addrs().udp[0];
    let admin = server.addrs().admin;
    let mut c = Raw::rest(addr, "stays").await;
    assert_eq!(c.allocate().await.code(), None);
    assert_eq!(http("GET", admin, "/readyz").await.0, 200);
    let (code, body) = http("POST", admin, "/drain").await;
    assert_eq!(code, 202);
    let status: switchyard_api::node::TurnNodeStatus = serde_json::from_str(&body).unwrap();
    assert!(status.draining);
    assert_eq!(status.allocations, 1);
    assert!(status.drain_remaining_seconds.is_some());
    assert_eq!(http("GET", admin, "/readyz").await.0, 503);
    assert_eq!(http("GET", admin, "/healthz").await.0, 200);
    let metrics = http("GET", admin, "/metrics").await.1;
    assert_eq!(metric(&metrics, "switchyard_turn_draining"), Some(1.0));
    let mut late = Raw::rest(addr, "late").await;
    assert_eq!(late.allocate().await.code(), Some(508), "no new allocations while draining");
    assert_eq!(c.refresh(600).await.code(), None, "existing allocations keep refreshing");
    assert_eq!(c.refresh(0).await.code(), None);
    // Drained through the admin API, the node stays up (a process that exited would be
    // restarted as a fresh node) until it is stopped, and then stops at once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, body) = http("GET", admin, "/internal/status").await;
    assert_eq!(code, 200, "still up after the last allocation ended");
    let status: switchyard_api::node::TurnNodeStatus = serde_json::from_str(&body).unwrap();
    assert!(status.draining && status.allocations == 0, "{status:?}");
    assert_eq!(http("GET", admin, "/readyz").await.0, 503);
    server.drain();
    tokio::time::timeout(Duration::from_secs(5), server.wait()).await.expect("a drained node stops at once").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_grace_period_ends_the_server_with_live_allocations() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = loopback_config(dir.path());
    config.drain_grace_seconds = 1;
    let server = start(config).await;
    let mut c = Raw::rest(server.addrs().udp[0], "lingers").await;
    c.allocate().await;
    server.drain();
    tokio::time::timeout(Duration::from_secs(5), server.wait()).await.expect("grace period ends the drain").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_rotate_from_file_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::write(&secrets, "# rotated by the operator\nold-secret\n").unwrap();
    let mut config = loopback_config(dir.path());
    config.auth.secrets.clear();
    config.auth.secrets_file = Some(secrets.clone());
    config.auth.secrets_poll_seconds = 1;
    let server = start(config).await;
    let addr = server.addrs().udp[0];
    let client = |secret: &'static str| async move {
        let (u, p) = rest_credentials(secret, "rotating", Duration::from_secs(600));
        Raw::new(addr, u, &p).await
    };
    assert_eq!(client("old-secret").await.allocate().await.code(), None);
    assert_eq!(client("new-secret").await.allocate().await.code(), Some(401));
    // Rotation: new secret added, then old removed, no restart.
    std::fs::write(&secrets, "new-secret\n").unwrap();
    let mut rotated = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if client("new-secret").await.allocate().await.code().is_none() {
            rotated = true;
            break;
        }
    }
    assert!(rotated, "new secret accepted after the file changed");
    assert_eq!(client("old-secret").await.allocate().await.code(), Some(401));
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_node_caps_users_and_unauthenticated_floods_by_default() {
    // Config::default, no quota set: one user got 975 allocations and 50,000 of
    // 50,000 unauthenticated requests (Binding included) were answered before.
    let dir = tempfile::tempdir().unwrap();
    let server = start(loopback_config(dir.path())).await;
    let addr = server.addrs().udp[0];
    let mut greedy = Vec::new();
    for _ in 0..11 {
        greedy.push(Raw::rest(addr, "greedy").await);
    }
    for (i, c) in greedy.iter_mut().enumerate() {
        let want = if i < 10 { None } else { Some(486) };
        assert_eq!(c.allocate().await.code(), want, "allocation {i} of one user");
    }
    let flood = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let mut binding = Vec::new();
    MessageWriter::new(&mut binding, method::BINDING, Class::Request, [1; 12]).finish_with_fingerprint();
    for _ in 0..200 {
        flood.send_to(&binding, addr).await.unwrap();
    }
    let mut answered = 0;
    let mut buf = [0u8; 256];
    while tokio::time::timeout(Duration::from_millis(300), flood.recv_from(&mut buf)).await.is_ok() {
        answered += 1;
    }
    // A burst of twice the rate (per worker shard, which keeps its own buckets), then silence.
    assert!((40..=80 + 10).contains(&answered), "{answered} of 200 Binding requests answered");
    assert!(server.metrics().dropped_count(DropReason::RateLimited) >= 100);
    server.shutdown();
}

/// A dual-stack node on loopback (127.0.0.1 and ::1): one Allocate with
/// ADDITIONAL-ADDRESS-FAMILY gets a relayed address of each family, and data
/// reaches an IPv4 and an IPv6 peer through the one allocation, each from the
/// relay socket of its family, and comes back; a Refresh keeps both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_allocation_relays_to_ipv4_and_ipv6_peers() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = loopback_config(dir.path());
    config.relay.additional_address = Some("::1".parse().unwrap());
    config.peers.allow.push("::1/128".parse().unwrap());
    let server = start(config).await;
    let peer4 = echo_peer().await;
    let sock6 = UdpSocket::bind("[::1]:0").await.unwrap();
    let peer6 = sock6.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = sock6.recv_from(&mut buf).await {
            let _ = sock6.send_to(&buf[..n], from).await;
        }
    });
    let mut c = Raw::rest(server.addrs().udp[0], "dual").await;
    let a = c
        .request(method::ALLOCATE, |w| {
            w.u32(attr::REQUESTED_TRANSPORT, 17 << 24).u32(attr::ADDITIONAL_ADDRESS_FAMILY, 2 << 24);
        })
        .await;
    let msg = parse(&a.bytes).unwrap();
    assert_eq!(msg.error_code, None);
    let (r4, r6) = (msg.relayed.expect("IPv4 relayed"), msg.relayed_additional.expect("IPv6 relayed"));
    assert_eq!((r4.ip().to_string(), r6.ip().to_string()), ("127.0.0.1".into(), "::1".into()));
    assert_eq!(c.permit(peer4).await.code(), None);
    assert_eq!(c.bind(0x4000, peer6).await.code(), None);
    c.send_indication(peer4, b"four").await;
    let back = parse(&c.recv(Duration::from_secs(5)).await.expect("IPv4 echo")).unwrap().data.map(<[u8]>::to_vec);
    assert_eq!(back.as_deref(), Some(&b"four"[..]));
    c.sock.send_to(&[0x40, 0x00, 0, 3, b's', b'i', b'x', 0], c.server).await.unwrap();
    let back = c.recv(Duration::from_secs(5)).await.expect("IPv6 echo");
    assert_eq!(back, [0x40, 0x00, 0, 3, b's', b'i', b'x'], "over its channel, from the IPv6 relay");
    // The IPv6 echo went out of the IPv6 relay socket: a packet to it from the
    // peer's address family reaches the client, the IPv4 relay is not involved.
    let probe = UdpSocket::bind("[::1]:0").await.unwrap();
    assert_eq!(c.permit(probe.local_addr().unwrap()).await.code(), None);
    probe.send_to(b"v6 in", r6).await.unwrap();
    let got = parse(&c.recv(Duration::from_secs(5)).await.expect("Data indication")).unwrap().data.map(<[u8]>::to_vec);
    assert_eq!(got.as_deref(), Some(&b"v6 in"[..]));
    let refreshed = c
        .request(method::REFRESH, |w| {
            w.u32(attr::LIFETIME, 600).u32(attr::REQUESTED_ADDRESS_FAMILY, 2 << 24);
        })
        .await;
    assert_eq!(refreshed.code(), None);
    c.send_indication(peer4, b"still").await;
    assert!(c.recv(Duration::from_secs(5)).await.is_some(), "IPv4 relay alive after the Refresh");
    server.shutdown();
}
