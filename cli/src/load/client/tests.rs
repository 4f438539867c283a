//! The client against turn-node's sans-IO engine on a virtual clock: an hour
//! of refreshes, lost packets and stale nonces take microseconds.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use switchyard_turn_node::auth::{Credentials as ServerCredentials, NonceMinter, rest_password};
use switchyard_turn_node::engine::{Engine, FiveTuple, Forward, Limits, Output, Quotas, Shared, Transport};
use switchyard_turn_node::filter::PeerFilter;
use switchyard_turn_node::metrics::Metrics;

use super::*;

const REALM: &str = "switchyard.test";
const SECRET: &str = "s3cret";
const T0_UNIX: u64 = 1_700_000_000;

fn peer() -> SocketAddr {
    "198.51.100.9:5000".parse().unwrap()
}

/// One server engine and its clients; packets are delivered in order, or dropped on request.
struct Net {
    engine: Engine,
    now: Instant,
    next_relay_port: u16,
    clients: Vec<Side>,
}

struct Side {
    client: Client,
    five: FiveTuple,
    events: Vec<Event>,
    /// Drop this many of the client's next messages to the server.
    drop_to_server: usize,
    /// Drop everything to the server from now on.
    blackhole: bool,
}

impl Net {
    fn new(limits: Limits, nonce_lifetime_secs: u64) -> Self {
        let shared = Arc::new(Shared {
            credentials: ServerCredentials::new(REALM, vec![SECRET.as_bytes().to_vec()], &[]),
            nonces: NonceMinter::new([9; 32], nonce_lifetime_secs),
            // The peer is a documentation address, which the built-in policy denies.
            filter: PeerFilter::new(vec!["198.51.100.0/24".parse().unwrap()], vec![], vec![]).into(),
            limits,
            quotas: Quotas::default(),
            metrics: Arc::new(Metrics::new()),
            draining: AtomicBool::new(false),
            relay: switchyard_turn_node::engine::RelayIps::single("192.0.2.1".parse().unwrap()),
        });
        let now = Instant::now();
        Net { engine: Engine::new(shared, 0, 1, now, T0_UNIX), now, next_relay_port: 50_000, clients: Vec::new() }
    }

    fn add(&mut self, secret: &str, peer: SocketAddr) -> usize {
        let username = format!("{}:load", T0_UNIX + 7 * 86_400);
        let password = rest_password(secret.as_bytes(), &username);
        let creds = Credentials { username, password, realm: None, on_401: "check --secret" };
        let port = 40_000 + self.clients.len() as u16;
        let five = FiveTuple {
            client: SocketAddr::from(([198, 51, 100, 7], port)),
            server: "192.0.2.1:3478".parse().unwrap(),
            transport: Transport::Udp,
        };
        let client = if peer.port() == 0 {
            Client::allocate_only(self.now, creds, false)
        } else {
            Client::new(self.now, creds, peer, 0x4000, false, None)
        };
        self.clients.push(Side { client, five, events: Vec::new(), drop_to_server: 0, blackhole: false });
        self.progress();
        self.clients.len() - 1
    }

    /// Deliver everything in flight until nobody has anything to say.
    fn progress(&mut self) {
        loop {
            let mut moved = false;
            for side in &mut self.clients {
                while let Some(bytes) = side.client.poll_transmit() {
                    moved = true;
                    if side.blackhole {
                        continue;
                    }
                    if side.drop_to_server > 0 {
                        side.drop_to_server -= 1;
                        continue;
                    }
                    let _ = self.engine.handle_client(self.now, &side.five, &bytes);
                }
                side.events.extend(std::iter::from_fn(|| side.client.poll_event()));
            }
            while let Some(out) = self.engine.poll_output() {
                moved = true;
                match out {
                    Output::BindRelay { id, .. } => {
                        let relay = SocketAddr::new(IpAddr::from([192, 0, 2, 1]), self.next_relay_port);
                        self.next_relay_port += 1;
                        self.engine.relay_bound(self.now, id, Some(relay));
                    }
                    Output::Transmit { to, data } => {
                        let side = self.clients.iter_mut().find(|s| s.five == to).expect("known client");
                        side.client.handle_input(self.now, &data);
                    }
                    Output::Release { .. } => {}
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Run every deadline up to `until`.
    fn run_until(&mut self, until: Instant) {
        loop {
            let next =
                self.clients.iter().filter_map(|s| s.client.poll_timeout()).chain(self.engine.poll_timeout()).min();
            let Some(next) = next.filter(|&t| t <= until) else {
                self.now = until;
                return;
            };
            self.now = next.max(self.now);
            self.engine.handle_timeout(self.now);
            for side in &mut self.clients {
                side.client.handle_timeout(self.now);
            }
            self.progress();
        }
    }

    fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Whether a ChannelData payload from client `i` reaches the peer now.
    fn relays(&mut self, i: usize) -> bool {
        let side = &self.clients[i];
        let mut frame = vec![0u8; 4 + 8];
        stun::write_channel_data_in_place(&mut frame, 4, 8, side.client.channel(), false);
        matches!(self.engine.handle_client(self.now, &side.five, &frame), Forward::ToPeer { peer: p, .. } if p == peer())
    }

    fn failure(&self, i: usize) -> Failure {
        match self.clients[i].events.last() {
            Some(Event::Failed(f)) => f.clone(),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}

#[test]
fn allocates_permits_binds_and_relays() {
    let mut net = Net::new(Limits::default(), 3600);
    let i = net.add(SECRET, peer());
    let side = &net.clients[i];
    assert_eq!(side.client.state(), State::Ready);
    assert!(matches!(side.events[0], Event::Challenge(ref c) if c.realm == REALM));
    assert_eq!(side.events[1], Event::Ready { relayed: "192.0.2.1:50000".parse().unwrap() });
    assert!(net.relays(i));
}

/// `switchyard doctor`'s check: allocated is ready, without asking for any peer; an
/// immediate refresh is answered, and closing releases the allocation.
#[test]
fn allocate_only_is_ready_once_allocated_and_refreshes_on_demand() {
    let mut net = Net::new(Limits::default(), 3600);
    let i = net.add(SECRET, SocketAddr::from(([0, 0, 0, 0], 0)));
    let relayed: SocketAddr = "192.0.2.1:50000".parse().unwrap();
    assert_eq!(net.clients[i].events[1], Event::Ready { relayed });
    assert_eq!((net.clients[i].client.relayed(), net.clients[i].client.refreshes()), (Some(relayed), 0));
    assert!(!net.relays(i), "no permission was asked for");
    let now = net.now;
    net.clients[i].client.refresh_now(now);
    net.progress();
    assert_eq!(net.clients[i].client.refreshes(), 1);
    assert_eq!(net.engine.allocation_count(), 1);
    net.clients[i].client.close(now);
    net.progress();
    assert_eq!(net.clients[i].client.state(), State::Closed);
    assert_eq!(net.engine.allocation_count(), 0);
}

#[test]
fn refreshes_keep_the_allocation_and_channel_for_hours() {
    let mut net = Net::new(Limits::default(), 3600);
    let i = net.add(SECRET, peer());
    net.run_for(Duration::from_secs(3 * 3600));
    assert_eq!(net.clients[i].client.state(), State::Ready);
    assert_eq!(net.engine.allocation_count(), 1);
    assert!(net.relays(i), "permission and channel still installed");
}

#[test]
fn stale_nonces_are_renewed() {
    // Nonces last 60 s, refreshes come every 300 s: each refresh meets a 438.
    let mut net = Net::new(Limits::default(), 60);
    let i = net.add(SECRET, peer());
    net.run_for(Duration::from_secs(1800));
    assert_eq!(net.clients[i].client.state(), State::Ready);
    let challenges = net.clients[i].events.iter().filter(|e| matches!(e, Event::Challenge(_))).count();
    assert!(challenges > 3, "438 answered with a fresh nonce each time ({challenges})");
    assert!(net.relays(i));
}

#[test]
fn a_shared_challenge_skips_the_first_401() {
    let mut net = Net::new(Limits::default(), 3600);
    let first = net.add(SECRET, peer());
    let Event::Challenge(ch) = net.clients[first].events[0].clone() else { panic!() };
    let username = format!("{}:load", T0_UNIX + 7 * 86_400);
    let password = rest_password(SECRET.as_bytes(), &username);
    let creds = Credentials { username, password, realm: None, on_401: "check --secret" };
    let mut c = Client::new(net.now, creds, peer(), 0x4000, false, Some(ch));
    let msg = c.poll_transmit().unwrap();
    assert!(stun::parse(&msg).unwrap().integrity.is_some(), "the first Allocate is already signed");
}

#[test]
fn lost_requests_are_retransmitted() {
    let mut net = Net::new(Limits::default(), 3600);
    // Lose the first two transmissions of the unauthenticated Allocate.
    let username = format!("{}:load", T0_UNIX + 7 * 86_400);
    let password = rest_password(SECRET.as_bytes(), &username);
    let creds = Credentials { username, password, realm: None, on_401: "check --secret" };
    let five = FiveTuple {
        client: "198.51.100.7:40000".parse().unwrap(),
        server: "192.0.2.1:3478".parse().unwrap(),
        transport: Transport::Udp,
    };
    let client = Client::new(net.now, creds, peer(), 0x4000, false, None);
    net.clients.push(Side { client, five, events: Vec::new(), drop_to_server: 2, blackhole: false });
    net.progress();
    assert_eq!(net.clients[0].client.state(), State::Setup);
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.clients[0].client.state(), State::Ready, "resent after 0.5 s and 1 s more");
}

#[test]
fn silence_fails_after_the_request_timeout() {
    let mut net = Net::new(Limits::default(), 3600);
    let i = net.add(SECRET, peer());
    net.clients[i].blackhole = true;
    // The first request after setup, the ChannelBind renewal at 240 s, goes unanswered.
    net.run_for(REBIND_EVERY + REQUEST_TIMEOUT - Duration::from_millis(1));
    assert_eq!(net.clients[i].client.state(), State::Ready);
    net.run_for(Duration::from_millis(2));
    let f = net.failure(i);
    assert_eq!(f.code, None);
    assert!(f.message.contains("no response from the server within 15.5 s (ChannelBind)"), "{}", f.message);
}

#[test]
fn wrong_secret_fails_with_401() {
    let mut net = Net::new(Limits::default(), 3600);
    let i = net.add("not-the-secret", peer());
    let f = net.failure(i);
    assert_eq!(f.code, Some(401));
    assert_eq!(f.message, "401 after credentials: check --secret (Allocate)");
    assert_eq!(net.engine.allocation_count(), 0);
}

#[test]
fn denied_peer_fails_with_403() {
    let mut net = Net::new(Limits::default(), 3600);
    let i = net.add(SECRET, "127.0.0.1:9".parse().unwrap());
    let f = net.failure(i);
    assert_eq!(f.code, Some(403));
    assert!(f.message.starts_with("403: peer address denied by the server's peer policy"), "{}", f.message);
    assert!(f.message.contains("CreatePermission to 127.0.0.1:9"), "{}", f.message);
}

#[test]
fn quota_fails_with_486() {
    let mut net = Net::new(Limits { max_allocations_per_user: 1, ..Limits::default() }, 3600);
    let a = net.add(SECRET, peer());
    let b = net.add(SECRET, peer());
    assert_eq!(net.clients[a].client.state(), State::Ready);
    let f = net.failure(b);
    assert_eq!(f.code, Some(486));
    assert!(f.message.starts_with("486 allocation quota reached"), "{}", f.message);
    assert!(f.message.contains("--user-id 'load-{i}'"), "{}", f.message);
}

#[test]
fn close_deallocates() {
    let mut net = Net::new(Limits::default(), 3600);
    let i = net.add(SECRET, peer());
    assert_eq!(net.engine.allocation_count(), 1);
    let now = net.now;
    net.clients[i].client.close(now);
    net.progress();
    assert_eq!(net.clients[i].client.state(), State::Closed);
    assert_eq!(net.clients[i].events.last(), Some(&Event::Closed));
    assert_eq!(net.engine.allocation_count(), 0);
    assert_eq!(net.clients[i].client.poll_timeout(), None);
}
