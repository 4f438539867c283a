//! The sans-IO TURN allocation engine.
//!
//! Inputs are a time (`Instant`) and a datagram; outputs are datagrams,
//! relay-socket requests and the next deadline. The engine owns no socket and
//! reads no clock, so every lifetime rule is tested on a virtual clock.
//!
//! ```text
//!  client datagram ─► handle_client(now, 5-tuple, bytes)
//!     ├─ ChannelData / Send ─► Forward::ToPeer { alloc, peer, payload }   (fast path, borrows input)
//!     └─ STUN request ─► auth ─► Allocate/Refresh/CreatePermission/ChannelBind
//!                          └─► poll_output(): Output::Transmit | Output::BindRelay | Output::Release
//!  peer datagram ───► handle_peer(now, alloc, from, buf, head, len)
//!     └─ permission? ─► header written in place in front of the payload ─► (5-tuple, range)
//!  timer ───────────► handle_timeout(now)  (expire allocations, permissions, channels)
//! ```
//!
//! Invariants:
//! - A packet reaches a peer only if the allocation holds an unexpired
//!   permission for the peer's IP, and a permission exists only for addresses
//!   the [`PeerFilter`] permits.
//! - A peer's packet reaches the client only under the same permission.
//! - Quota reservations are taken before a relay is requested and released
//!   exactly once, when the allocation (or its failed request) goes away.
//! - The fast paths allocate nothing: they borrow the input buffer and write
//!   headers in place.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use switchyard_api::rate::TokenBucket;

use crate::auth::{Credentials, Key, NonceCheck, NonceMinter, Rejection};
use crate::filter::LiveFilter;
use crate::metrics::{AllocResult, Direction, DropReason, Metrics};
use crate::stun::{self, Class, Kind, Message, MessageWriter, attr, method};

/// Default allocation lifetime (RFC 8656 §7.2).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// Maximum allocation lifetime we grant.
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// Permission lifetime (RFC 8656 §9).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel binding lifetime (RFC 8656 §12).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// After a channel expires, neither its number nor its peer may be bound
/// differently for this long (RFC 8656 §12).
pub const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);
/// Permissions one allocation may hold (a WebRTC peer needs a handful).
pub const MAX_PERMISSIONS: usize = 64;
/// UDP, the only relay transport (REQUESTED-TRANSPORT value).
const PROTO_UDP: u8 = 17;

/// An address family of relayed addresses (RFC 8656 §18.10 values).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// IPv4 (wire value 0x01).
    V4,
    /// IPv6 (wire value 0x02).
    V6,
}

impl Family {
    /// The family an address belongs to for relaying: an IPv4-mapped IPv6
    /// address is IPv4 (it is relayed from the IPv4 socket).
    pub fn of(ip: IpAddr) -> Family {
        if canonical_ip(ip).is_ipv4() { Family::V4 } else { Family::V6 }
    }

    /// From a REQUESTED-/ADDITIONAL-ADDRESS-FAMILY value.
    pub fn from_wire(v: u8) -> Option<Family> {
        match v {
            0x01 => Some(Family::V4),
            0x02 => Some(Family::V6),
            _ => None,
        }
    }

    /// The wire value.
    pub fn wire(self) -> u8 {
        match self {
            Family::V4 => 0x01,
            Family::V6 => 0x02,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The relay addresses clients are told about: at most one per family. With
/// both, a client may ask for a dual allocation (RFC 8656
/// ADDITIONAL-ADDRESS-FAMILY).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayIps {
    v4: Option<IpAddr>,
    v6: Option<IpAddr>,
}

impl RelayIps {
    /// One relay address (either family).
    pub fn single(ip: IpAddr) -> Self {
        RelayIps::new(ip, None).expect("one address cannot clash")
    }

    /// A relay address and optionally one of the other family; `None` when
    /// both are of the same family.
    pub fn new(primary: IpAddr, additional: Option<IpAddr>) -> Option<Self> {
        let mut r = RelayIps { v4: None, v6: None };
        for ip in std::iter::once(primary).chain(additional) {
            let slot = if ip.is_ipv4() { &mut r.v4 } else { &mut r.v6 };
            if slot.replace(ip).is_some() {
                return None;
            }
        }
        Some(r)
    }

    /// The relay address of `family`, if this node relays it.
    pub fn get(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
    }

    /// Every relay address (IPv4 first).
    pub fn all(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.v4.into_iter().chain(self.v6)
    }
}

/// Client transport.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    /// Stream transports frame ChannelData with padding.
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// The client side of an allocation: who, at which listener, over what.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct FiveTuple {
    /// Client address as seen by the server.
    pub client: SocketAddr,
    /// Server listener address.
    pub server: SocketAddr,
    /// Transport.
    pub transport: Transport,
}

/// Identifies an allocation (and its relay socket in the driver). Never reused.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct AllocId(pub u64);

/// What the engine wants done.
#[derive(Debug)]
pub enum Output {
    /// Send `data` to the client of `to`.
    Transmit {
        /// Destination.
        to: FiveTuple,
        /// Message bytes.
        data: Vec<u8>,
    },
    /// Bind a relay socket of `family` for `id`, then call
    /// [`Engine::relay_bound`] with its address. A dual allocation asks for
    /// one of each family; its peers are reached from the socket of their
    /// family ([`Family::of`]).
    BindRelay {
        /// The allocation.
        id: AllocId,
        /// EVEN-PORT was requested.
        even_port: bool,
        /// The relayed address's family.
        family: Family,
    },
    /// The allocation is gone: close its relay socket(s).
    Release {
        /// The allocation.
        id: AllocId,
    },
}

/// A payload to send out of a relay socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Forward<'a> {
    /// Nothing to relay (control message handled, or dropped).
    None,
    /// Send `payload` from `alloc`'s relay socket to `peer`.
    ToPeer {
        /// The allocation whose relay socket sends.
        alloc: AllocId,
        /// Destination peer.
        peer: SocketAddr,
        /// Payload, borrowed from the input.
        payload: &'a [u8],
    },
}

/// Engine limits, shared by all shards.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Allocations one user may hold (0 = unlimited).
    pub max_allocations_per_user: usize,
    /// Allocations the node may hold (0 = unlimited).
    pub max_allocations: usize,
    /// Relayed bytes per second per allocation, both directions (0 = unlimited).
    pub bandwidth_per_allocation: u64,
    /// Answers per second per source IP that no credential vouches for: 401
    /// challenges, failed authentication, Binding, 400s (0 = unlimited). A
    /// 5-tuple holding an allocation is exempt from it for Binding and 400s.
    pub unauthenticated_rate: u32,
    /// Default allocation lifetime.
    pub default_lifetime: Duration,
    /// Maximum allocation lifetime.
    pub max_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_allocations_per_user: 0,
            max_allocations: 0,
            bandwidth_per_allocation: 0,
            unauthenticated_rate: 0,
            default_lifetime: DEFAULT_LIFETIME,
            max_lifetime: MAX_LIFETIME,
        }
    }
}

/// Allocation counts shared by every shard, so quotas hold node-wide.
#[derive(Debug, Default)]
pub struct Quotas {
    total: AtomicUsize,
    per_user: Mutex<HashMap<String, usize>>,
}

impl Quotas {
    fn reserve(&self, user: &str, limits: &Limits) -> bool {
        let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        let n = per_user.get(user).copied().unwrap_or(0);
        if limits.max_allocations_per_user > 0 && n >= limits.max_allocations_per_user {
            return false;
        }
        if limits.max_allocations > 0 && self.total.load(Ordering::Relaxed) >= limits.max_allocations {
            return false;
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        per_user.insert(user.to_owned(), n + 1);
        true
    }

    fn release(&self, user: &str) {
        let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                per_user.remove(user);
            }
            self.total.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Allocations (live or being set up) node-wide.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// State shared by all engine shards of one server.
#[derive(Debug)]
pub struct Shared {
    /// Credentials.
    pub credentials: Credentials,
    /// Nonces.
    pub nonces: NonceMinter,
    /// Peer filter (its rules may be replaced while running).
    pub filter: LiveFilter,
    /// Limits.
    pub limits: Limits,
    /// Quota counters.
    pub quotas: Quotas,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Set when draining: new allocations are refused.
    pub draining: AtomicBool,
    /// The relay addresses clients are told about, per family.
    pub relay: RelayIps,
}

#[derive(Debug)]
struct Channel {
    peer: SocketAddr,
    expires: Instant,
}

#[derive(Debug)]
struct Allocation {
    five: FiveTuple,
    /// Relayed addresses per [`Family::index`], once bound.
    relays: [Option<SocketAddr>; 2],
    /// The families asked for, the requested (or default) one first.
    families: [Option<Family>; 2],
    /// All wanted relays are bound and the success response went out.
    ready: bool,
    /// ADDITIONAL-ADDRESS-FAMILY asked for IPv6 that this node does not
    /// relay: the response says so in ADDRESS-ERROR-CODE (RFC 8656 §7.2).
    v6_refused: bool,
    username: String,
    quota_user: String,
    key: Key,
    /// Granted lifetime; it runs from the moment the relay is bound.
    lifetime: Duration,
    expires: Instant,
    permissions: Vec<(IpAddr, Instant)>,
    channels: HashMap<u16, Channel>,
    peer_channel: HashMap<SocketAddr, u16>,
    /// Expired bindings still blocking reuse: (channel, peer, until).
    cooldown: Vec<(u16, SocketAddr, Instant)>,
    allocate_tid: [u8; 12],
    allocate_response: Vec<u8>,
    bucket: TokenBucket,
}

impl Allocation {
    fn has_family(&self, f: Family) -> bool {
        self.families.contains(&Some(f))
    }

    fn has_permission(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.iter().any(|(p, exp)| *p == ip && *exp > now)
    }
}

/// One shard's engine. Shards share [`Shared`] and own disjoint allocations.
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    allocs: HashMap<AllocId, Allocation>,
    by_five: HashMap<FiveTuple, AllocId>,
    next_id: u64,
    id_stride: u64,
    out: VecDeque<Output>,
    base_instant: Instant,
    base_unix: u64,
    rate: HashMap<IpAddr, TokenBucket>,
    keys: Vec<Key>,
    rng: u64,
}

enum AuthOutcome {
    Ok(Key, String),
    Responded,
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    crate::filter::canonical(ip)
}

impl Engine {
    /// A shard engine. `shard`/`shards` make allocation ids unique across
    /// shards; `base_instant` and `base_unix` tie the engine's `Instant`s to
    /// wall-clock seconds (credential and nonce expiry).
    pub fn new(shared: Arc<Shared>, shard: u64, shards: u64, base_instant: Instant, base_unix: u64) -> Self {
        Engine {
            shared,
            allocs: HashMap::new(),
            by_five: HashMap::new(),
            next_id: shard,
            id_stride: shards.max(1),
            out: VecDeque::new(),
            base_instant,
            base_unix,
            rate: HashMap::new(),
            keys: Vec::new(),
            rng: 0x9E37_79B9_7F4A_7C15 ^ (shard + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
        }
    }

    fn unix(&self, now: Instant) -> u64 {
        self.base_unix + now.saturating_duration_since(self.base_instant).as_secs()
    }

    fn next_tid(&mut self) -> [u8; 12] {
        // xorshift: Data indication transaction ids only need to be distinct.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let mut tid = [0u8; 12];
        tid[..8].copy_from_slice(&self.rng.to_le_bytes());
        tid
    }

    /// Live allocations in this shard.
    pub fn allocation_count(&self) -> usize {
        self.allocs.len()
    }

    /// The (first) relayed address of an allocation, once ready.
    pub fn relay_addr(&self, id: AllocId) -> Option<SocketAddr> {
        self.relay_addrs(id).next()
    }

    /// Every relayed address of a ready allocation, in response order.
    pub fn relay_addrs(&self, id: AllocId) -> impl Iterator<Item = SocketAddr> + '_ {
        let a = self.allocs.get(&id).filter(|a| a.ready);
        a.into_iter().flat_map(|a| a.families.iter().flatten().filter_map(|f| a.relays[f.index()]))
    }

    /// Next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The earliest deadline at which [`Engine::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut min: Option<Instant> = None;
        let mut see = |t: Instant| min = Some(min.map_or(t, |m| m.min(t)));
        for a in self.allocs.values() {
            see(a.expires);
            a.permissions.iter().for_each(|(_, t)| see(*t));
            a.channels.values().for_each(|c| see(c.expires));
            a.cooldown.iter().for_each(|(_, _, t)| see(*t));
        }
        min
    }

    /// Expire whatever is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let metrics = self.shared.metrics.clone();
        let mut dead = Vec::new();
        for (id, a) in self.allocs.iter_mut() {
            if a.expires <= now {
                dead.push(*id);
                continue;
            }
            let before = a.permissions.len();
            a.permissions.retain(|(_, t)| *t > now);
            metrics.permissions.dec_by((before - a.permissions.len()) as i64);
            let expired: Vec<u16> = a.channels.iter().filter(|(_, c)| c.expires <= now).map(|(n, _)| *n).collect();
            for n in expired {
                if let Some(c) = a.channels.remove(&n) {
                    a.peer_channel.remove(&c.peer);
                    a.cooldown.push((n, c.peer, c.expires + CHANNEL_COOLDOWN));
                    metrics.channels.dec();
                }
            }
            a.cooldown.retain(|(_, _, t)| *t > now);
        }
        for id in dead {
            self.remove(id);
        }
        // The unauthenticated rate table only needs recent sources.
        if self.rate.len() > 4096 {
            self.rate.clear();
        }
    }

    /// The client's connection closed (stream transports): its allocation ends.
    pub fn client_closed(&mut self, five: &FiveTuple) {
        if let Some(id) = self.by_five.get(five).copied() {
            self.remove(id);
        }
    }

    fn remove(&mut self, id: AllocId) {
        let Some(a) = self.allocs.remove(&id) else {
            return;
        };
        self.by_five.remove(&a.five);
        // A dual allocation whose first bind failed: its other bind is void.
        self.out.retain(|o| !matches!(o, Output::BindRelay { id: i, .. } if *i == id));
        tracing::debug!(id = id.0, client = %a.five.client, user = %a.username, "allocation ended");
        self.shared.quotas.release(&a.quota_user);
        let m = &self.shared.metrics;
        if a.ready {
            m.allocations.dec();
        }
        m.permissions.dec_by(a.permissions.len() as i64);
        m.channels.dec_by(a.channels.len() as i64);
        self.out.push_back(Output::Release { id });
    }

    /// The driver bound the relay socket for `id`, or found no relay port
    /// free (`None`: the allocation is refused with 508 and counted as
    /// [`AllocResult::RelayPortsExhausted`]).
    pub fn relay_bound(&mut self, now: Instant, id: AllocId, result: Option<SocketAddr>) {
        match result {
            Some(relay) => self.relay_ready(now, id, relay),
            None => self.relay_failed(id, AllocResult::RelayPortsExhausted),
        }
    }

    /// The driver could not bind the relay socket for `id` for another
    /// reason than a full port range (counted as [`AllocResult::Error`]).
    pub fn relay_bind_failed(&mut self, id: AllocId) {
        self.relay_failed(id, AllocResult::Error);
    }

    fn relay_ready(&mut self, now: Instant, id: AllocId, relay: SocketAddr) {
        let Some(a) = self.allocs.get_mut(&id) else {
            return;
        };
        let family = Family::of(relay.ip());
        if a.ready || !a.has_family(family) || a.relays[family.index()].is_some() {
            // A driver bug: the allocation keeps what it has.
            tracing::warn!(id = id.0, %relay, "unexpected relay bind result ignored");
            return;
        }
        a.relays[family.index()] = Some(relay);
        if a.families.iter().flatten().any(|f| a.relays[f.index()].is_none()) {
            return; // the other family's socket is still being bound
        }
        let five = a.five;
        a.ready = true;
        // The lifetime starts now, so the client is told exactly what it was
        // granted (not a second less for the bind's latency).
        a.expires = now + a.lifetime;
        let mut buf = Vec::with_capacity(160);
        let mut w = MessageWriter::new(&mut buf, method::ALLOCATE, Class::Success, a.allocate_tid);
        for f in a.families.iter().flatten() {
            w.xor_addr(attr::XOR_RELAYED_ADDRESS, a.relays[f.index()].expect("all bound"));
        }
        if a.v6_refused {
            w.address_error(Family::V6.wire(), 440, "Address Family not Supported");
        }
        w.u32(attr::LIFETIME, a.lifetime.as_secs() as u32)
            .xor_addr(attr::XOR_MAPPED_ADDRESS, five.client)
            .integrity(&a.key);
        w.finish_with_fingerprint();
        a.allocate_response = buf.clone();
        tracing::debug!(id = id.0, client = %five.client, relays = ?a.relays, user = %a.username, "allocation created");
        self.shared.metrics.allocations.inc();
        self.shared.metrics.alloc_result(AllocResult::Ok);
        self.out.push_back(Output::Transmit { to: five, data: buf });
    }

    fn relay_failed(&mut self, id: AllocId, result: AllocResult) {
        let Some(a) = self.allocs.get(&id) else {
            return;
        };
        let five = a.five;
        self.shared.metrics.alloc_result(result);
        let mut buf = Vec::with_capacity(96);
        let mut w = MessageWriter::new(&mut buf, method::ALLOCATE, Class::Error, a.allocate_tid);
        w.error(508, "Insufficient Capacity").integrity(&a.key);
        w.finish_with_fingerprint();
        self.remove(id);
        // `remove` queued a Release for a socket that never existed;
        // harmless for the driver and keeps one code path.
        self.out.push_back(Output::Transmit { to: five, data: buf });
    }

    /// A datagram (or one framed message on a stream) from a client.
    pub fn handle_client<'a>(&mut self, now: Instant, five: &FiveTuple, data: &'a [u8]) -> Forward<'a> {
        match stun::classify(data) {
            Kind::ChannelData => self.channel_data(now, five, data),
            Kind::Stun => match stun::parse(data) {
                Ok(msg) => self.stun(now, five, &msg),
                Err(e) => {
                    tracing::debug!(client = %five.client, error = %e, "malformed STUN");
                    self.shared.metrics.drop_packet(DropReason::Malformed);
                    if e.answerable() {
                        self.bad_request(now, five, data);
                    }
                    Forward::None
                }
            },
            Kind::Other => {
                self.shared.metrics.drop_packet(DropReason::Malformed);
                Forward::None
            }
        }
    }

    /// Answer 400 to a well-framed request with a malformed attribute value
    /// (framing and FINGERPRINT failures never get here: they are dropped).
    fn bad_request(&mut self, now: Instant, five: &FiveTuple, data: &[u8]) {
        let typ = u16::from_be_bytes([data[0], data[1]]);
        if typ & 0x0110 != 0 {
            return; // not a request: never answer indications or responses
        }
        if !self.may_answer_unauthenticated(now, five) {
            return;
        }
        let method = (typ & 0x000F) | ((typ & 0x00E0) >> 1) | ((typ & 0x3E00) >> 2);
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&data[8..20]);
        let mut buf = Vec::with_capacity(64);
        let mut w = MessageWriter::new(&mut buf, method, Class::Error, tid);
        w.error(400, "Bad Request");
        w.finish_with_fingerprint();
        self.out.push_back(Output::Transmit { to: *five, data: buf });
    }

    #[inline]
    fn channel_data<'a>(&mut self, now: Instant, five: &FiveTuple, data: &'a [u8]) -> Forward<'a> {
        let Some((channel, payload)) = stun::parse_channel_data(data) else {
            self.shared.metrics.drop_packet(DropReason::Malformed);
            return Forward::None;
        };
        let Some(&id) = self.by_five.get(five) else {
            self.shared.metrics.drop_packet(DropReason::NoPermission);
            return Forward::None;
        };
        let limits_bw = self.shared.limits.bandwidth_per_allocation;
        let a = self.allocs.get_mut(&id).expect("by_five and allocs agree");
        let Some(c) = a.channels.get(&channel) else {
            self.shared.metrics.drop_packet(DropReason::NoPermission);
            return Forward::None;
        };
        let peer = c.peer;
        if c.expires <= now || !a.has_permission(canonical_ip(peer.ip()), now) {
            self.shared.metrics.drop_packet(DropReason::NoPermission);
            return Forward::None;
        }
        if !Self::within_bandwidth(a, now, limits_bw, payload.len()) {
            self.shared.metrics.drop_packet(DropReason::Bandwidth);
            return Forward::None;
        }
        self.shared.metrics.relayed(Direction::ClientToPeer, five.transport, payload.len());
        Forward::ToPeer { alloc: id, peer, payload }
    }

    fn within_bandwidth(a: &mut Allocation, now: Instant, rate: u64, bytes: usize) -> bool {
        if rate == 0 {
            return true;
        }
        let rate = rate as f64;
        a.bucket.take(now, rate, rate, bytes as f64)
    }

    /// A datagram from `from` arrived on `alloc`'s relay socket. The payload
    /// sits at `buf[head..head + len]`, with at least
    /// [`stun::MAX_DATA_INDICATION_OVERHEAD`] free bytes before it and 3 after.
    /// Returns the client and the byte range of the framed message to send.
    #[inline]
    pub fn handle_peer(
        &mut self,
        now: Instant,
        alloc: AllocId,
        from: SocketAddr,
        buf: &mut [u8],
        head: usize,
        len: usize,
    ) -> Option<(FiveTuple, std::ops::Range<usize>)> {
        let limits_bw = self.shared.limits.bandwidth_per_allocation;
        let tid = self.next_tid();
        let a = self.allocs.get_mut(&alloc)?;
        // A relay socket receives from anyone; only permitted peers get through
        // (RFC 8656 §10.3), which also stops unsolicited traffic and scans.
        if !a.has_permission(canonical_ip(from.ip()), now) {
            self.shared.metrics.drop_packet(DropReason::NoPermission);
            return None;
        }
        if !self.shared.filter.relays_from(from) {
            self.shared.metrics.drop_packet(DropReason::DeniedPeer);
            return None;
        }
        if !Self::within_bandwidth(a, now, limits_bw, len) {
            self.shared.metrics.drop_packet(DropReason::Bandwidth);
            return None;
        }
        let (start, total) = match a.peer_channel.get(&from) {
            Some(&ch) => stun::write_channel_data_in_place(buf, head, len, ch, a.five.transport.is_stream()),
            None => stun::write_data_indication_in_place(buf, head, len, from, tid),
        };
        self.shared.metrics.relayed(Direction::PeerToClient, a.five.transport, len);
        Some((a.five, start..start + total))
    }

    fn stun<'a>(&mut self, now: Instant, five: &FiveTuple, msg: &Message<'a>) -> Forward<'a> {
        match (msg.class, msg.method) {
            // An indication with an unknown comprehension-required attribute
            // is discarded (RFC 8489 §6.3.2).
            (Class::Indication, method::SEND) if !msg.unknown_required().is_empty() => {
                self.shared.metrics.drop_packet(DropReason::Malformed);
                Forward::None
            }
            (Class::Indication, method::SEND) => self.send_indication(now, five, msg),
            (Class::Request, method::BINDING) => {
                // Binding needs no credentials, so it is an amplifier like
                // every unauthenticated answer: it shares their rate limit.
                if !self.may_answer_unauthenticated(now, five) {
                    return Forward::None;
                }
                if !msg.unknown_required().is_empty() {
                    self.unknown_attributes(five, msg, None);
                    return Forward::None;
                }
                self.respond(five, msg, Class::Success, None, |w| {
                    w.xor_addr(attr::XOR_MAPPED_ADDRESS, five.client);
                });
                Forward::None
            }
            (
                Class::Request,
                m @ (method::ALLOCATE | method::REFRESH | method::CREATE_PERMISSION | method::CHANNEL_BIND),
            ) => {
                let (key, username) = match self.authenticate(now, five, msg) {
                    AuthOutcome::Ok(k, u) => (k, u),
                    AuthOutcome::Responded => return Forward::None,
                };
                // Unknown attributes are checked once authentication is done
                // (RFC 8489 §6.3), so the 420 is signed like any answer.
                if !msg.unknown_required().is_empty() {
                    if m == method::ALLOCATE {
                        self.shared.metrics.alloc_result(AllocResult::Error);
                    }
                    self.unknown_attributes(five, msg, Some(&key));
                    return Forward::None;
                }
                match m {
                    method::ALLOCATE => self.allocate(now, five, msg, key, username),
                    method::REFRESH => self.refresh(now, five, msg, key, &username),
                    method::CREATE_PERMISSION => self.create_permission(now, five, msg, key, &username),
                    _ => self.channel_bind(now, five, msg, key, &username),
                }
                Forward::None
            }
            (Class::Request, _) => {
                if self.may_answer_unauthenticated(now, five) {
                    self.respond(five, msg, Class::Error, None, |w| {
                        w.error(400, "Bad Request: unknown method");
                    });
                }
                Forward::None
            }
            // Responses and other indications from clients mean nothing to us.
            _ => Forward::None,
        }
    }

    fn send_indication<'a>(&mut self, now: Instant, five: &FiveTuple, msg: &Message<'a>) -> Forward<'a> {
        let (Some(peer), Some(payload)) = (msg.peers[0], msg.data) else {
            self.shared.metrics.drop_packet(DropReason::Malformed);
            return Forward::None;
        };
        let Some(&id) = self.by_five.get(five) else {
            self.shared.metrics.drop_packet(DropReason::NoPermission);
            return Forward::None;
        };
        if !self.shared.filter.permits_addr(peer) {
            self.shared.metrics.drop_packet(DropReason::DeniedPeer);
            return Forward::None;
        }
        let limits_bw = self.shared.limits.bandwidth_per_allocation;
        let a = self.allocs.get_mut(&id).expect("by_five and allocs agree");
        if !a.has_permission(canonical_ip(peer.ip()), now) {
            self.shared.metrics.drop_packet(DropReason::NoPermission);
            return Forward::None;
        }
        if !Self::within_bandwidth(a, now, limits_bw, payload.len()) {
            self.shared.metrics.drop_packet(DropReason::Bandwidth);
            return Forward::None;
        }
        self.shared.metrics.relayed(Direction::ClientToPeer, five.transport, payload.len());
        Forward::ToPeer { alloc: id, peer, payload }
    }

    /// Queue a response. `key` adds MESSAGE-INTEGRITY.
    fn respond(
        &mut self,
        five: &FiveTuple,
        msg: &Message<'_>,
        class: Class,
        key: Option<&Key>,
        f: impl FnOnce(&mut MessageWriter<'_>),
    ) {
        let mut buf = Vec::with_capacity(128);
        let mut w = MessageWriter::new(&mut buf, msg.method, class, msg.transaction_id);
        f(&mut w);
        if let Some(k) = key {
            w.integrity(k);
        }
        w.finish_with_fingerprint();
        self.out.push_back(Output::Transmit { to: *five, data: buf });
    }

    /// 420 listing every unknown comprehension-required attribute.
    fn unknown_attributes(&mut self, five: &FiveTuple, msg: &Message<'_>, key: Option<&Key>) {
        let mut list = [0u8; 2 * stun::MAX_UNKNOWN];
        let n = msg.unknown_required().len();
        for (i, t) in msg.unknown_required().iter().enumerate() {
            list[2 * i..2 * i + 2].copy_from_slice(&t.to_be_bytes());
        }
        self.respond(five, msg, Class::Error, key, |w| {
            w.error(420, "Unknown Attribute").attr(attr::UNKNOWN_ATTRIBUTES, &list[..2 * n]);
        });
    }

    fn error(&mut self, five: &FiveTuple, msg: &Message<'_>, key: Option<&Key>, code: u16, reason: &str) {
        self.respond(five, msg, Class::Error, key, |w| {
            w.error(code, reason);
        });
    }

    fn challenge(&mut self, now: Instant, five: &FiveTuple, msg: &Message<'_>, code: u16, reason: &str) {
        let nonce = self.shared.nonces.mint(self.unix(now));
        let shared = self.shared.clone();
        self.respond(five, msg, Class::Error, None, |w| {
            w.error(code, reason)
                .attr(attr::REALM, shared.credentials.realm().as_bytes())
                .attr(attr::NONCE, nonce.as_bytes());
        });
    }

    /// Whether an answer that no credential vouches for (Binding, 400s) may
    /// go to this client: free on a 5-tuple that holds an allocation (its
    /// owner authenticated), otherwise under the unauthenticated rate limit.
    fn may_answer_unauthenticated(&mut self, now: Instant, five: &FiveTuple) -> bool {
        self.by_five.contains_key(five) || !self.rate_limited(now, five.client.ip())
    }

    fn rate_limited(&mut self, now: Instant, ip: IpAddr) -> bool {
        let rate = self.shared.limits.unauthenticated_rate;
        if rate == 0 {
            return false;
        }
        let (rate, burst) = (f64::from(rate), f64::from(rate) * 2.0);
        let bucket = self.rate.entry(ip).or_insert_with(|| TokenBucket::full(now, burst));
        if bucket.take(now, rate, burst, 1.0) {
            false
        } else {
            self.shared.metrics.drop_packet(DropReason::RateLimited);
            true
        }
    }

    /// RFC 8489 §9.2.4 long-term credential checks.
    fn authenticate(&mut self, now: Instant, five: &FiveTuple, msg: &Message<'_>) -> AuthOutcome {
        let is_alloc = msg.method == method::ALLOCATE;
        let count = |s: &Self, r| {
            if is_alloc {
                s.shared.metrics.alloc_result(r);
            }
        };
        if msg.integrity.is_none() {
            if self.rate_limited(now, five.client.ip()) {
                return AuthOutcome::Responded;
            }
            count(self, AllocResult::Challenged);
            self.challenge(now, five, msg, 401, "Unauthorized");
            return AuthOutcome::Responded;
        }
        let (Some(username), Some(_realm), Some(nonce)) = (msg.username, msg.realm, msg.nonce) else {
            count(self, AllocResult::Error);
            self.error(five, msg, None, 400, "Bad Request: USERNAME, REALM and NONCE are required");
            return AuthOutcome::Responded;
        };
        let unix = self.unix(now);
        match self.shared.nonces.check(nonce, unix) {
            NonceCheck::Valid => {}
            NonceCheck::Stale | NonceCheck::Invalid => {
                count(self, AllocResult::StaleNonce);
                self.challenge(now, five, msg, 438, "Stale Nonce");
                return AuthOutcome::Responded;
            }
        }
        let Ok(username) = std::str::from_utf8(username) else {
            count(self, AllocResult::Error);
            self.error(five, msg, None, 400, "Bad Request");
            return AuthOutcome::Responded;
        };
        let mut keys = std::mem::take(&mut self.keys);
        let result = self.shared.credentials.keys(username, unix, &mut keys);
        let matched = match result {
            Ok(()) => keys.iter().find(|k| stun::verify_integrity(msg, &k[..])).copied(),
            Err(Rejection::Expired | Rejection::Unknown) => None,
        };
        self.keys = keys;
        match matched {
            Some(key) => AuthOutcome::Ok(key, username.to_owned()),
            None => {
                if self.rate_limited(now, five.client.ip()) {
                    return AuthOutcome::Responded;
                }
                count(self, AllocResult::Unauthorized);
                self.challenge(now, five, msg, 401, "Unauthorized");
                AuthOutcome::Responded
            }
        }
    }

    fn lifetime(&self, requested: Option<u32>) -> Duration {
        let l = &self.shared.limits;
        match requested {
            Some(s) => Duration::from_secs(u64::from(s)).min(l.max_lifetime).max(l.default_lifetime),
            None => l.default_lifetime,
        }
    }

    fn allocate(&mut self, now: Instant, five: &FiveTuple, msg: &Message<'_>, key: Key, username: String) {
        let metrics = self.shared.metrics.clone();
        if let Some(&id) = self.by_five.get(five) {
            let a = &self.allocs[&id];
            if a.allocate_tid == msg.transaction_id {
                // Retransmitted Allocate: answer again (RFC 8656 §7.2).
                if !a.allocate_response.is_empty() {
                    let data = a.allocate_response.clone();
                    self.out.push_back(Output::Transmit { to: *five, data });
                }
                return;
            }
            metrics.alloc_result(AllocResult::Error);
            return self.error(five, msg, Some(&key), 437, "Allocation Mismatch");
        }
        if self.shared.draining.load(Ordering::Relaxed) {
            metrics.alloc_result(AllocResult::Draining);
            return self.error(five, msg, Some(&key), 508, "Insufficient Capacity (draining)");
        }
        match msg.requested_transport {
            None => {
                metrics.alloc_result(AllocResult::Error);
                return self.error(five, msg, Some(&key), 400, "Bad Request: REQUESTED-TRANSPORT missing");
            }
            Some(p) if p != PROTO_UDP => {
                metrics.alloc_result(AllocResult::Error);
                return self.error(five, msg, Some(&key), 442, "Unsupported Transport Protocol");
            }
            Some(_) => {}
        }
        if msg.reservation_token {
            metrics.alloc_result(AllocResult::Error);
            if msg.even_port || msg.requested_family.is_some() || msg.additional_family.is_some() {
                return self.error(
                    five,
                    msg,
                    Some(&key),
                    400,
                    "Bad Request: RESERVATION-TOKEN with EVEN-PORT or family",
                );
            }
            // We never hand out reservation tokens (EVEN-PORT's R bit is not
            // honoured), so any token is unknown (RFC 8656 §7.2 step 4).
            return self.error(five, msg, Some(&key), 508, "Insufficient Capacity: unknown reservation token");
        }
        // RFC 8656 §7.2: one family by REQUESTED-ADDRESS-FAMILY (IPv4 when
        // absent), or IPv4 plus IPv6 by ADDITIONAL-ADDRESS-FAMILY; never both.
        if msg.requested_family.is_some() && msg.additional_family.is_some() {
            metrics.alloc_result(AllocResult::Error);
            return self.error(
                five,
                msg,
                Some(&key),
                400,
                "Bad Request: REQUESTED-ADDRESS-FAMILY with ADDITIONAL-ADDRESS-FAMILY",
            );
        }
        if msg.additional_family.is_some_and(|f| f != Family::V6.wire()) {
            metrics.alloc_result(AllocResult::Error);
            return self.error(five, msg, Some(&key), 400, "Bad Request: ADDITIONAL-ADDRESS-FAMILY must be IPv6");
        }
        let primary = match msg.requested_family.map(Family::from_wire) {
            // RFC 8656 would refuse a request naming no family on a node
            // without IPv4 relays; RFC 5766 clients never name one, so such a
            // node hands out the one family it has.
            None if msg.additional_family.is_none() && self.shared.relay.get(Family::V4).is_none() => Family::V6,
            None => Family::V4,
            Some(Some(f)) => f,
            Some(None) => {
                metrics.alloc_result(AllocResult::Error);
                return self.error(five, msg, Some(&key), 440, "Address Family not Supported");
            }
        };
        if self.shared.relay.get(primary).is_none() {
            metrics.alloc_result(AllocResult::Error);
            return self.error(five, msg, Some(&key), 440, "Address Family not Supported");
        }
        // IPv6 asked for as the additional family but not relayed here: the
        // IPv4 allocation goes ahead and the response says why IPv6 is missing.
        let additional = msg.additional_family.map(|_| Family::V6);
        let v6_refused = additional.is_some_and(|f| self.shared.relay.get(f).is_none());
        let families = [Some(primary), additional.filter(|_| !v6_refused)];
        // REST usernames are "<expiry>:<user>": the quota belongs to the user,
        // not to one short-lived credential.
        let quota_user = username.split_once(':').map_or(username.as_str(), |(_, u)| u).to_owned();
        if !self.shared.quotas.reserve(&quota_user, &self.shared.limits) {
            metrics.alloc_result(AllocResult::Quota);
            return self.error(five, msg, Some(&key), 486, "Allocation Quota Reached");
        }
        let id = AllocId(self.next_id);
        self.next_id += self.id_stride;
        let lifetime = self.lifetime(msg.lifetime);
        self.allocs.insert(
            id,
            Allocation {
                five: *five,
                relays: [None; 2],
                families,
                ready: false,
                v6_refused,
                username,
                quota_user,
                key,
                lifetime,
                expires: now + lifetime,
                permissions: Vec::new(),
                channels: HashMap::new(),
                peer_channel: HashMap::new(),
                cooldown: Vec::new(),
                allocate_tid: msg.transaction_id,
                allocate_response: Vec::new(),
                bucket: TokenBucket::full(now, self.shared.limits.bandwidth_per_allocation as f64),
            },
        );
        self.by_five.insert(*five, id);
        for family in families.into_iter().flatten() {
            self.out.push_back(Output::BindRelay { id, even_port: msg.even_port, family });
        }
    }

    /// Find this 5-tuple's allocation for a non-Allocate request: 437 when
    /// there is none, 441 when another user's credentials are used.
    fn owned_allocation(&mut self, five: &FiveTuple, msg: &Message<'_>, key: &Key, username: &str) -> Option<AllocId> {
        let Some(&id) = self.by_five.get(five) else {
            self.error(five, msg, Some(key), 437, "Allocation Mismatch");
            return None;
        };
        let a = &self.allocs[&id];
        if !a.ready {
            self.error(five, msg, Some(key), 437, "Allocation Mismatch");
            return None;
        }
        if a.username != username {
            self.error(five, msg, Some(key), 441, "Wrong Credentials");
            return None;
        }
        Some(id)
    }

    fn refresh(&mut self, now: Instant, five: &FiveTuple, msg: &Message<'_>, key: Key, username: &str) {
        let Some(id) = self.owned_allocation(five, msg, &key, username) else {
            return;
        };
        // A Refresh names no family or one the allocation has (RFC 8656
        // §7.3); it always covers every relayed address of the allocation.
        let a = &self.allocs[&id];
        if msg.requested_family.is_some_and(|f| !Family::from_wire(f).is_some_and(|f| a.has_family(f))) {
            return self.error(five, msg, Some(&key), 443, "Peer Address Family Mismatch");
        }
        let granted = if msg.lifetime == Some(0) {
            self.remove(id);
            0
        } else {
            let lifetime = self.lifetime(msg.lifetime);
            if let Some(a) = self.allocs.get_mut(&id) {
                a.expires = now + lifetime;
            }
            lifetime.as_secs() as u32
        };
        self.respond(five, msg, Class::Success, Some(&key), |w| {
            w.u32(attr::LIFETIME, granted);
        });
    }

    /// Checks shared by CreatePermission and ChannelBind for one peer: the
    /// filter must permit it (`permitted`, else 403), and the allocation must
    /// hold a relayed address of its family (443).
    fn check_peer(
        &mut self,
        id: AllocId,
        five: &FiveTuple,
        msg: &Message<'_>,
        key: &Key,
        peer: IpAddr,
        permitted: bool,
    ) -> bool {
        // The filter goes first so every forbidden form gets the same 403,
        // whatever its family.
        if !permitted {
            self.shared.metrics.alloc_result(AllocResult::DeniedPeer);
            self.error(five, msg, Some(key), 403, "Forbidden");
            return false;
        }
        if !self.allocs[&id].has_family(Family::of(peer)) {
            self.error(five, msg, Some(key), 443, "Peer Address Family Mismatch");
            return false;
        }
        true
    }

    fn install_permission(&mut self, id: AllocId, ip: IpAddr, now: Instant) {
        let metrics = self.shared.metrics.clone();
        let a = self.allocs.get_mut(&id).expect("checked by caller");
        let ip = canonical_ip(ip);
        match a.permissions.iter_mut().find(|(p, _)| *p == ip) {
            Some((_, exp)) => *exp = now + PERMISSION_LIFETIME,
            None => {
                a.permissions.push((ip, now + PERMISSION_LIFETIME));
                metrics.permissions.inc();
            }
        }
    }

    fn create_permission(&mut self, now: Instant, five: &FiveTuple, msg: &Message<'_>, key: Key, username: &str) {
        let Some(id) = self.owned_allocation(five, msg, &key, username) else {
            return;
        };
        if msg.peer_count == 0 || msg.peer_count > stun::MAX_PEERS {
            return self.error(five, msg, Some(&key), 400, "Bad Request");
        }
        // All or nothing (RFC 8656 §9.2): check every peer before installing any.
        for peer in msg.peer_addrs() {
            // A permission is per IP: its port means nothing (RFC 8656 §9), so
            // only the IP is judged here; ports are checked per packet.
            let permitted = self.shared.filter.permits_permission(peer.ip());
            if !self.check_peer(id, five, msg, &key, peer.ip(), permitted) {
                return;
            }
        }
        if !self.room_for_permissions(id, now, msg.peer_addrs().map(|p| p.ip())) {
            return self.error(five, msg, Some(&key), 508, "Insufficient Capacity: too many permissions");
        }
        for peer in msg.peer_addrs() {
            self.install_permission(id, peer.ip(), now);
        }
        self.respond(five, msg, Class::Success, Some(&key), |_| {});
    }

    /// Whether installing permissions for `ips` keeps the allocation within
    /// [`MAX_PERMISSIONS`]: the relay path scans them per packet, so one
    /// client must not be able to grow the list without bound.
    fn room_for_permissions(&self, id: AllocId, now: Instant, ips: impl Iterator<Item = IpAddr>) -> bool {
        let a = &self.allocs[&id];
        let mut fresh: Vec<IpAddr> = ips.map(canonical_ip).filter(|ip| !a.has_permission(*ip, now)).collect();
        fresh.sort_unstable();
        fresh.dedup();
        a.permissions.len() + fresh.len() <= MAX_PERMISSIONS
    }

    fn channel_bind(&mut self, now: Instant, five: &FiveTuple, msg: &Message<'_>, key: Key, username: &str) {
        let Some(id) = self.owned_allocation(five, msg, &key, username) else {
            return;
        };
        let (Some(channel), Some(peer), 1) = (msg.channel, msg.peers[0], msg.peer_count) else {
            return self.error(five, msg, Some(&key), 400, "Bad Request");
        };
        if !stun::CHANNEL_RANGE.contains(&channel) {
            return self.error(five, msg, Some(&key), 400, "Bad Request: channel number out of range");
        }
        // A channel names one transport address, so its port is judged too.
        let permitted = self.shared.filter.permits_addr(peer);
        if !self.check_peer(id, five, msg, &key, peer.ip(), permitted) {
            return;
        }
        let a = &self.allocs[&id];
        // A channel stays tied to one peer and a peer to one channel, also for
        // the cooldown after expiry (RFC 8656 §12).
        let conflict = a.channels.get(&channel).is_some_and(|c| c.peer != peer)
            || a.peer_channel.get(&peer).is_some_and(|&c| c != channel)
            || a.cooldown.iter().any(|&(c, p, until)| until > now && ((c == channel) != (p == peer)));
        if conflict {
            return self.error(five, msg, Some(&key), 400, "Bad Request: channel or peer bound differently");
        }
        if !self.room_for_permissions(id, now, std::iter::once(peer.ip())) {
            return self.error(five, msg, Some(&key), 508, "Insufficient Capacity: too many permissions");
        }
        let metrics = self.shared.metrics.clone();
        let a = self.allocs.get_mut(&id).expect("exists");
        a.cooldown.retain(|&(c, _, _)| c != channel);
        match a.channels.get_mut(&channel) {
            Some(c) => c.expires = now + CHANNEL_LIFETIME,
            None => {
                a.channels.insert(channel, Channel { peer, expires: now + CHANNEL_LIFETIME });
                a.peer_channel.insert(peer, channel);
                metrics.channels.inc();
            }
        }
        self.install_permission(id, peer.ip(), now);
        self.respond(five, msg, Class::Success, Some(&key), |_| {});
    }
}

#[cfg(test)]
mod tests;
