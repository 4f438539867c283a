//! Prometheus metrics, all under `switchyard_turn_`, updated as packets flow
//! (not at session end) so the operator can autoscale on live bandwidth.
//!
//! Label sets are bounded enums; usernames and addresses never become labels.
//! The relay fast path holds pre-resolved counter handles, so counting a
//! packet is two relaxed atomic adds and no label lookup.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::engine::Transport;

/// Outcome of an Allocate request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum AllocResult {
    /// Allocation created.
    Ok,
    /// First request without credentials, answered with the 401 challenge
    /// (normal for every client; kept apart so `unauthorized` means bad creds).
    Challenged,
    /// Bad or expired credentials.
    Unauthorized,
    /// Nonce expired or not ours (438).
    StaleNonce,
    /// Per-user or total allocation quota reached (486).
    Quota,
    /// Refused because the node is draining.
    Draining,
    /// No relay port free in the configured range (508): the node is full
    /// whatever its quotas say.
    RelayPortsExhausted,
    /// Peer refused by the filter (CreatePermission/ChannelBind, counted here
    /// so one family tells the whole admission story).
    DeniedPeer,
    /// Any other error (400, 420, 437, 440, 442, other 508s).
    Error,
}

/// Label values in Prometheus' snake_case.
macro_rules! snake_labels {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                use std::fmt::Write as _;
                encoder.write_str(match self { $(Self::$v => $s),* })
            }
        }
    };
}

snake_labels!(AllocResult { Ok => "ok", Challenged => "challenged", Unauthorized => "unauthorized", StaleNonce => "stale_nonce", Quota => "quota", Draining => "draining", RelayPortsExhausted => "relay_ports_exhausted", DeniedPeer => "denied_peer", Error => "error" });
snake_labels!(Direction { ClientToPeer => "client_to_peer", PeerToClient => "peer_to_client" });
snake_labels!(TransportLabel { Udp => "udp", Tcp => "tcp", Tls => "tls" });
snake_labels!(DropReason { NoPermission => "no_permission", DeniedPeer => "denied_peer", Bandwidth => "bandwidth", RateLimited => "rate_limited", Malformed => "malformed" });

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: AllocResult,
}

/// Relay direction.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    /// From the TURN client out to a peer.
    ClientToPeer,
    /// From a peer back to the TURN client.
    PeerToClient,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum TransportLabel {
    Udp,
    Tcp,
    Tls,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RelayLabels {
    direction: Direction,
    transport: TransportLabel,
}

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DropReason {
    /// No permission for the peer (or no allocation/channel).
    NoPermission,
    /// Peer refused by the filter (Send indication).
    DeniedPeer,
    /// Allocation exceeded its bandwidth cap.
    Bandwidth,
    /// Unauthenticated request rate limit.
    RateLimited,
    /// Could not be parsed.
    Malformed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: DropReason,
}

#[derive(Clone, Debug)]
struct Pair {
    bytes: Counter,
    packets: Counter,
}

/// All metrics of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Live allocations.
    pub allocations: Gauge,
    /// Live permissions.
    pub permissions: Gauge,
    /// Live channel bindings.
    pub channels: Gauge,
    /// Relayed bandwidth over the moving window, bits per second.
    pub bandwidth_bps: Gauge,
    /// 1 while draining.
    pub draining: Gauge,
    alloc_requests: Family<ResultLabels, Counter>,
    dropped: Family<DropLabels, Counter>,
    // [direction][transport]
    fast: [[Pair; 3]; 2],
    total_bytes: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every metric in a fresh registry with the `switchyard_turn` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchyard_turn");
        let allocations = Gauge::default();
        let permissions = Gauge::default();
        let channels = Gauge::default();
        let bandwidth_bps = Gauge::default();
        let draining = Gauge::default();
        let alloc_requests = Family::<ResultLabels, Counter>::default();
        let dropped = Family::<DropLabels, Counter>::default();
        let bytes = Family::<RelayLabels, Counter>::default();
        let packets = Family::<RelayLabels, Counter>::default();
        registry.register("allocations", "Live TURN allocations", allocations.clone());
        registry.register("permissions", "Live TURN permissions", permissions.clone());
        registry.register("channels", "Live TURN channel bindings", channels.clone());
        registry.register(
            "relayed_bandwidth_bits_per_second",
            "Relayed bandwidth, both directions, over a short moving window",
            bandwidth_bps.clone(),
        );
        registry.register("draining", "1 while the node is draining", draining.clone());
        registry.register("allocation_requests", "Allocate requests by result", alloc_requests.clone());
        registry.register("dropped_packets", "Packets dropped by reason", dropped.clone());
        registry.register("relayed_bytes", "Relayed payload bytes", bytes.clone());
        registry.register("relayed_packets", "Relayed packets", packets.clone());
        let pair = |direction, transport| Pair {
            bytes: bytes.get_or_create(&RelayLabels { direction, transport }).clone(),
            packets: packets.get_or_create(&RelayLabels { direction, transport }).clone(),
        };
        let row = |d| [pair(d, TransportLabel::Udp), pair(d, TransportLabel::Tcp), pair(d, TransportLabel::Tls)];
        // Pre-create every result so dashboards see zeros, not gaps.
        for result in [
            AllocResult::Ok,
            AllocResult::Challenged,
            AllocResult::Unauthorized,
            AllocResult::StaleNonce,
            AllocResult::Quota,
            AllocResult::Draining,
            AllocResult::RelayPortsExhausted,
            AllocResult::DeniedPeer,
            AllocResult::Error,
        ] {
            let _ = alloc_requests.get_or_create(&ResultLabels { result });
        }
        for reason in [
            DropReason::NoPermission,
            DropReason::DeniedPeer,
            DropReason::Bandwidth,
            DropReason::RateLimited,
            DropReason::Malformed,
        ] {
            let _ = dropped.get_or_create(&DropLabels { reason });
        }
        Metrics {
            registry: Mutex::new(registry),
            allocations,
            permissions,
            channels,
            bandwidth_bps,
            draining,
            alloc_requests,
            dropped,
            fast: [row(Direction::ClientToPeer), row(Direction::PeerToClient)],
            total_bytes: AtomicU64::new(0),
        }
    }

    /// Count one Allocate (or permission) outcome.
    pub fn alloc_result(&self, result: AllocResult) {
        self.alloc_requests.get_or_create(&ResultLabels { result }).inc();
    }

    /// Current count for an outcome (tests, status).
    pub fn alloc_result_count(&self, result: AllocResult) -> u64 {
        self.alloc_requests.get_or_create(&ResultLabels { result }).get()
    }

    /// Count a dropped packet.
    pub fn drop_packet(&self, reason: DropReason) {
        self.dropped.get_or_create(&DropLabels { reason }).inc();
    }

    /// Dropped packets so far for a reason.
    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.dropped.get_or_create(&DropLabels { reason }).get()
    }

    /// Count one relayed packet of `bytes` payload bytes.
    #[inline]
    pub fn relayed(&self, direction: Direction, transport: Transport, bytes: usize) {
        let t = match transport {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
        };
        let p = &self.fast[direction as usize][t];
        p.bytes.inc_by(bytes as u64);
        p.packets.inc();
        self.total_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Relayed packets so far in one direction, all transports.
    pub fn relayed_packets(&self, direction: Direction) -> u64 {
        self.fast[direction as usize].iter().map(|p| p.packets.get()).sum()
    }

    /// Relayed payload bytes so far, both directions.
    pub fn total_relayed_bytes(&self) -> u64 {
        self.total_bytes.load(Ordering::Relaxed)
    }

    /// Text exposition for `/metrics`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// Turns the relayed-bytes counter into a bits/s gauge over a moving window
/// of `N` one-second samples.
#[derive(Debug)]
pub struct BandwidthWindow<const N: usize> {
    samples: [u64; N],
    next: usize,
    filled: usize,
}

impl<const N: usize> Default for BandwidthWindow<N> {
    fn default() -> Self {
        BandwidthWindow { samples: [0; N], next: 0, filled: 0 }
    }
}

impl<const N: usize> BandwidthWindow<N> {
    /// Feed the counter value sampled once a second; returns bits/s averaged
    /// over the samples in the window.
    pub fn sample(&mut self, total_bytes: u64) -> u64 {
        let oldest = if self.filled < N { self.samples[0] } else { self.samples[self.next] };
        let span = self.filled.clamp(1, N) as u64;
        self.samples[self.next] = total_bytes;
        self.next = (self.next + 1) % N;
        if self.filled < N {
            self.filled += 1;
            if self.filled == 1 {
                return 0;
            }
            return total_bytes.saturating_sub(oldest) * 8 / (self.filled as u64 - 1);
        }
        total_bytes.saturating_sub(oldest) * 8 / span
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_window_averages() {
        let mut w = BandwidthWindow::<5>::default();
        assert_eq!(w.sample(0), 0);
        assert_eq!(w.sample(1000), 8000);
        assert_eq!(w.sample(2000), 8000);
        for i in 3..20 {
            assert_eq!(w.sample(i * 1000), 8000);
        }
        // Traffic stops: the gauge decays to zero within the window.
        for _ in 0..5 {
            w.sample(19_000);
        }
        assert_eq!(w.sample(19_000), 0);
    }

    #[test]
    fn encodes_with_prefix() {
        let m = Metrics::new();
        m.relayed(Direction::ClientToPeer, Transport::Udp, 100);
        let text = m.encode();
        assert!(
            text.contains("switchyard_turn_relayed_bytes_total{direction=\"client_to_peer\",transport=\"udp\"} 100"),
            "{text}"
        );
        assert!(text.contains("switchyard_turn_allocations "));
    }
}
