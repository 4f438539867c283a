//! The relay fast path allocates nothing per packet: ChannelData and Send
//! indications from the client, and peer datagrams framed as ChannelData or
//! Data indications, are counted through a measuring global allocator.
//! The allocator counts per thread: the test harness's own thread does its bookkeeping
//! for the test while it runs (about one run in fifty on a loaded machine a global
//! counter saw its 4 allocations), and that is not the fast path.

#![allow(unsafe_code)] // the counting allocator: a GlobalAlloc impl forwarding to System

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use switchyard_turn_node::auth::{Credentials, NonceMinter, long_term_key};
use switchyard_turn_node::engine::{Engine, FiveTuple, Forward, Limits, Output, Quotas, Shared, Transport};
use switchyard_turn_node::filter::PeerFilter;
use switchyard_turn_node::metrics::Metrics;
use switchyard_turn_node::stun::{self, Class, MessageWriter, attr, method};

/// The system allocator, counting this thread's allocations and reallocations.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static REALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn bump(counter: &'static std::thread::LocalKey<Cell<u64>>) {
    let _ = counter.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is forwarded unchanged to `System`; counting touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump(&ALLOCATIONS);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump(&ALLOCATIONS);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump(&REALLOCATIONS);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// This thread's (allocations, reallocations) so far.
fn counts() -> (u64, u64) {
    (ALLOCATIONS.with(Cell::get), REALLOCATIONS.with(Cell::get))
}

const REALM: &str = "r";

fn request(
    engine: &mut Engine,
    now: Instant,
    five: &FiveTuple,
    nonce: &str,
    m: u16,
    build: impl Fn(&mut MessageWriter<'_>),
) {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, m, Class::Request, [m as u8; 12]);
    build(&mut w);
    w.attr(attr::USERNAME, b"u")
        .attr(attr::REALM, REALM.as_bytes())
        .attr(attr::NONCE, nonce.as_bytes())
        .integrity(&long_term_key("u", REALM, "p"));
    w.finish_with_fingerprint();
    assert_eq!(engine.handle_client(now, five, &buf), Forward::None);
    while let Some(out) = engine.poll_output() {
        match out {
            Output::BindRelay { id, .. } => engine.relay_bound(now, id, Some("203.0.113.1:50000".parse().unwrap())),
            Output::Transmit { data, .. } => assert_eq!(stun::parse(&data).unwrap().error_code, None),
            Output::Release { .. } => {}
        }
    }
}

#[test]
fn relaying_allocates_nothing_per_packet() {
    let shared = Arc::new(Shared {
        credentials: Credentials::new(REALM, vec![], &[("u".into(), "p".into())]),
        nonces: NonceMinter::new([3; 32], 3600),
        // The peers are documentation addresses, which the built-in policy denies.
        filter: PeerFilter::new(vec!["192.0.2.0/24".parse().unwrap()], vec![], vec![]).into(),
        limits: Limits { bandwidth_per_allocation: 1 << 40, ..Limits::default() },
        quotas: Quotas::default(),
        metrics: Arc::new(Metrics::new()),
        draining: AtomicBool::new(false),
        relay: switchyard_turn_node::engine::RelayIps::single("203.0.113.1".parse().unwrap()),
    });
    let t0 = Instant::now();
    let mut engine = Engine::new(shared.clone(), 0, 1, t0, 1_700_000_000);
    let five = FiveTuple {
        client: "198.51.100.2:40000".parse().unwrap(),
        server: "203.0.113.1:3478".parse().unwrap(),
        transport: Transport::Udp,
    };
    let nonce = shared.nonces.mint(1_700_000_000);
    let peer_a: SocketAddr = "192.0.2.10:5000".parse().unwrap();
    let peer_b: SocketAddr = "192.0.2.11:5000".parse().unwrap();
    request(&mut engine, t0, &five, &nonce, method::ALLOCATE, |w| {
        w.u32(attr::REQUESTED_TRANSPORT, 17 << 24);
    });
    request(&mut engine, t0, &five, &nonce, method::CHANNEL_BIND, |w| {
        w.u32(attr::CHANNEL_NUMBER, 0x4000 << 16).xor_addr(attr::XOR_PEER_ADDRESS, peer_a);
    });
    request(&mut engine, t0, &five, &nonce, method::CREATE_PERMISSION, |w| {
        w.xor_addr(attr::XOR_PEER_ADDRESS, peer_b);
    });
    let id = match engine.handle_client(t0, &five, &[0x40, 0x00, 0x00, 0x01, 7]) {
        Forward::ToPeer { alloc, .. } => alloc,
        Forward::None => panic!("channel is bound"),
    };

    // Inputs prepared before measuring: the driver's buffers are reused too.
    let mut channel_data = vec![0x40, 0x00, 0x04, 0xB0];
    channel_data.extend_from_slice(&[0xAB; 1200]);
    let mut send = Vec::new();
    let mut w = MessageWriter::new(&mut send, method::SEND, Class::Indication, [9; 12]);
    w.xor_addr(attr::XOR_PEER_ADDRESS, peer_b).attr(attr::DATA, &[0xCD; 1200]);
    w.finish();
    let head = stun::MAX_DATA_INDICATION_OVERHEAD;
    let mut buf = vec![0u8; head + 1500];

    let before = counts();
    let mut relayed = 0;
    for i in 0..10_000u32 {
        let now = t0 + Duration::from_micros(u64::from(i));
        if let Forward::ToPeer { payload, .. } = engine.handle_client(now, &five, &channel_data) {
            relayed += payload.len();
        }
        if let Forward::ToPeer { payload, .. } = engine.handle_client(now, &five, &send) {
            relayed += payload.len();
        }
        // From the channel peer: framed as ChannelData; from the other: Data indication.
        for peer in [peer_a, peer_b] {
            if let Some((to, range)) = engine.handle_peer(now, id, peer, &mut buf, head, 1200) {
                assert_eq!(to, five);
                relayed += range.len();
            }
        }
    }
    let after = counts();
    let (allocations, reallocations) = (after.0 - before.0, after.1 - before.1);
    assert!(relayed > 4 * 10_000 * 1200, "everything was relayed ({relayed} bytes)");
    assert_eq!(allocations, 0, "fast path allocated {allocations} times");
    assert_eq!(reallocations, 0, "fast path reallocated {reallocations} times");
}
