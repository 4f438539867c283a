//! Fuzz the STUN/TURN/ChannelData parsers and the engine's input path.
//!
//! The input is a script of operations against one engine shard. Besides raw
//! client and peer datagrams (which mostly exercise the parsers and the
//! unauthenticated paths), the `signed request` operation lets the harness
//! add valid USERNAME/REALM/NONCE/MESSAGE-INTEGRITY to fuzzer-chosen methods
//! and attributes, so the authenticated handlers (Allocate, Refresh,
//! CreatePermission, ChannelBind) and the relay paths are reached too.
#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use switchyard_turn_node::auth::{Credentials, NonceMinter, long_term_key};
use switchyard_turn_node::engine::{Engine, Family, FiveTuple, Limits, Output, Quotas, RelayIps, Shared, Transport};
use switchyard_turn_node::filter::PeerFilter;
use switchyard_turn_node::metrics::Metrics;
use switchyard_turn_node::stun::{self, Class, MessageWriter, attr};

const REALM: &str = "fuzz";
const UNIX: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    // Parsers on the raw input, whole.
    let _ = stun::parse(data);
    let _ = stun::parse_channel_data(data);
    let _ = stun::stream_frame_len(data);

    let shared = Arc::new(Shared {
        credentials: Credentials::new(REALM, vec![b"s".to_vec()], &[("u".into(), "p".into())]),
        nonces: NonceMinter::new([1; 32], 3600),
        filter: PeerFilter::new(vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()], vec![], vec![]).into(),
        limits: Limits {
            max_allocations_per_user: 3,
            bandwidth_per_allocation: 10_000,
            unauthenticated_rate: 50,
            ..Limits::default()
        },
        quotas: Quotas::default(),
        metrics: Arc::new(Metrics::new()),
        draining: AtomicBool::new(false),
        // Dual stack, so single and dual (ADDITIONAL-ADDRESS-FAMILY)
        // allocations, per-family permissions and 443s are all reachable.
        relay: RelayIps::new("127.0.0.1".parse().unwrap(), Some("::1".parse().unwrap())).unwrap(),
    });
    let t0 = Instant::now();
    let mut now = t0;
    let mut engine = Engine::new(shared.clone(), 0, 1, t0, UNIX);
    let key = long_term_key("u", REALM, "p");
    let mut port = 40_000u16;
    let mut buf = vec![0u8; stun::MAX_DATA_INDICATION_OVERHEAD + 70_000];

    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        rest = next;
        let five = FiveTuple {
            client: SocketAddr::from(([127, 0, 0, 1], 5000 + u16::from(op & 3))),
            server: "127.0.0.1:3478".parse().unwrap(),
            transport: [Transport::Udp, Transport::Tcp][usize::from(op >> 7)],
        };
        match (op >> 2) & 7 {
            0 | 1 => {
                let _ = engine.handle_client(now, &five, chunk);
            }
            2 => {
                // Signed request: chunk = method byte, then (type, len, value)* attributes.
                let Some((&m, mut attrs)) = chunk.split_first() else { continue };
                let mut msg = Vec::new();
                let mut w = MessageWriter::new(&mut msg, [1, 3, 4, 8, 9][usize::from(m) % 5], Class::Request, [m; 12]);
                while let [t, l, more @ ..] = attrs {
                    let l = usize::from(*l).min(more.len());
                    let typ = [
                        attr::REQUESTED_TRANSPORT,
                        attr::LIFETIME,
                        attr::XOR_PEER_ADDRESS,
                        attr::CHANNEL_NUMBER,
                        attr::DATA,
                        attr::EVEN_PORT,
                        attr::REQUESTED_ADDRESS_FAMILY,
                        attr::ADDITIONAL_ADDRESS_FAMILY,
                        u16::from(*t),
                    ][usize::from(*t) % 9];
                    w.attr(typ, &more[..l]);
                    attrs = &more[l..];
                }
                let nonce = shared.nonces.mint(UNIX + now.duration_since(t0).as_secs());
                w.attr(attr::USERNAME, b"u")
                    .attr(attr::REALM, REALM.as_bytes())
                    .attr(attr::NONCE, nonce.as_bytes())
                    .integrity(&key);
                w.finish_with_fingerprint();
                let _ = engine.handle_client(now, &five, &msg);
            }
            3 => {
                // Peer datagram to some allocation.
                let head = stun::MAX_DATA_INDICATION_OVERHEAD;
                buf[head..head + chunk.len()].copy_from_slice(chunk);
                let id = switchyard_turn_node::engine::AllocId(u64::from(op & 3));
                let from = match op & 0x20 {
                    0 => SocketAddr::from(([127, 0, 0, 1], 7000 + u16::from(op & 1))),
                    _ => SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 7000 + u16::from(op & 1))),
                };
                if let Some((_, range)) = engine.handle_peer(now, id, from, &mut buf, head, chunk.len()) {
                    assert!(range.end <= buf.len());
                }
            }
            4 => {
                now += Duration::from_secs(u64::from(*len) * 4);
                engine.handle_timeout(now);
            }
            5 => engine.client_closed(&five),
            _ => {
                let _ = engine.handle_client(now, &five, chunk);
            }
        }
        while let Some(out) = engine.poll_output() {
            match out {
                Output::BindRelay { id, family, .. } => {
                    port = port.wrapping_add(1);
                    let ip = shared.relay.get(family).expect("only relayed families are asked for");
                    assert_eq!(Family::of(ip), family);
                    // Sometimes fail, like a full port range or a bind error.
                    match port % 11 {
                        0 => engine.relay_bind_failed(id),
                        n => engine.relay_bound(now, id, (n % 7 != 0).then(|| SocketAddr::new(ip, port))),
                    }
                }
                Output::Transmit { data, .. } => {
                    // Everything the engine emits must itself parse, and a
                    // dual allocation's two relayed addresses differ in family.
                    if stun::classify(&data) == stun::Kind::Stun {
                        let msg = stun::parse(&data).expect("engine output parses");
                        if let (Some(a), Some(b)) = (msg.relayed, msg.relayed_additional) {
                            assert_ne!(a.is_ipv4(), b.is_ipv4());
                        }
                    }
                }
                Output::Release { .. } => {}
            }
        }
    }
    engine.handle_timeout(now + Duration::from_secs(10_000));
    while engine.poll_output().is_some() {}
    assert_eq!(engine.allocation_count(), 0, "everything expires");
    assert_eq!(shared.quotas.total(), 0, "quota released exactly once");
});
