//! Prometheus metrics, all under `switchyard_media_`. Labels are bounded sets: never a
//! room name or an identity.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::engine::EngineStats;
use crate::engine::quality::{ESTIMATE_BUCKETS, Hist, JITTER_BUCKETS, LOSS_BUCKETS, RTT_BUCKETS};

/// A histogram the engine shards fill (cumulative [`Hist`] counts, summed over shards) and
/// the metrics loop copies in once a second.
#[derive(Clone, Debug)]
pub(crate) struct ShardHistogram {
    bounds: &'static [f64; 9],
    snapshot: Arc<Mutex<Hist>>,
}

impl ShardHistogram {
    fn new(bounds: &'static [f64; 9]) -> Self {
        Self { bounds, snapshot: Arc::default() }
    }

    fn set(&self, h: Hist) {
        *self.snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = h;
    }
}

impl TypedMetric for ShardHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = *self.snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let buckets: Vec<(f64, u64)> = self.bounds.iter().copied().chain([f64::INFINITY]).zip(h.counts).collect();
        encoder.encode_histogram::<NoLabelSet>(h.sum, h.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Kind {
    pub(crate) kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Quality {
    pub(crate) quality: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Direction {
    pub(crate) direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Outcome {
    pub(crate) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Code {
    pub(crate) code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Side {
    pub(crate) side: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Reason {
    pub(crate) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct WebhookResult {
    pub(crate) event: &'static str,
    pub(crate) result: &'static str,
}

/// A Room service request: its operation (`CreateRoom`, …) and its result code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ApiRequest {
    pub(crate) operation: &'static str,
    pub(crate) code: &'static str,
}

#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) rooms: Gauge,
    pub(crate) participants: Gauge,
    pub(crate) tracks: Gauge,
    pub(crate) layer_switches: Counter,
    pub(crate) keyframe_requests: Counter,
    pub(crate) paused_streams: Family<Reason, Gauge>,
    pub(crate) packets: Family<Direction, Counter>,
    pub(crate) bytes: Family<Direction, Counter>,
    pub(crate) loss: ShardHistogram,
    pub(crate) rtt: ShardHistogram,
    pub(crate) jitter: ShardHistogram,
    pub(crate) estimate: ShardHistogram,
    pub(crate) nacks: Family<Direction, Counter>,
    pub(crate) keyframe_requests_in: Family<Kind, Counter>,
    pub(crate) by_quality: Family<Quality, Gauge>,
    pub(crate) unrouted: Counter,
    pub(crate) shard_queue_drops: Counter,
    pub(crate) udp_send_drops: Counter,
    pub(crate) connections: Family<Outcome, Counter>,
    pub(crate) signal_errors: Family<Code, Counter>,
    pub(crate) join_seconds: Histogram,
    pub(crate) draining: Gauge,
    pub(crate) webhooks: Family<WebhookResult, Counter>,
    pub(crate) webhook_seconds: Histogram,
    pub(crate) status_patches: Family<Outcome, Counter>,
    pub(crate) proxied: Family<Outcome, Counter>,
    pub(crate) proxied_active: Gauge,
    pub(crate) proxy_stuck: Family<Side, Counter>,
    pub(crate) routing_seconds: Histogram,
    pub(crate) http_connections: Gauge,
    pub(crate) http_refused: Family<Reason, Counter>,
    pub(crate) slow_clients: Family<Reason, Counter>,
    pub(crate) room_api: Family<ApiRequest, Counter>,
    pub(crate) room_api_seconds: Histogram,
    pub(crate) resumes: Family<Outcome, Counter>,
    pub(crate) sessions_held: Gauge,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("switchyard_media");
        let m = Self {
            rooms: Gauge::default(),
            participants: Gauge::default(),
            tracks: Gauge::default(),
            layer_switches: Counter::default(),
            keyframe_requests: Counter::default(),
            paused_streams: Family::default(),
            packets: Family::default(),
            bytes: Family::default(),
            loss: ShardHistogram::new(&LOSS_BUCKETS),
            rtt: ShardHistogram::new(&RTT_BUCKETS),
            estimate: ShardHistogram::new(&ESTIMATE_BUCKETS),
            jitter: ShardHistogram::new(&JITTER_BUCKETS),
            nacks: Family::default(),
            keyframe_requests_in: Family::default(),
            by_quality: Family::default(),
            unrouted: Counter::default(),
            shard_queue_drops: Counter::default(),
            udp_send_drops: Counter::default(),
            connections: Family::default(),
            signal_errors: Family::default(),
            join_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            draining: Gauge::default(),
            webhooks: Family::default(),
            webhook_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            status_patches: Family::default(),
            proxied: Family::default(),
            proxied_active: Gauge::default(),
            proxy_stuck: Family::default(),
            routing_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            http_connections: Gauge::default(),
            http_refused: Family::default(),
            slow_clients: Family::default(),
            room_api: Family::default(),
            room_api_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            resumes: Family::default(),
            sessions_held: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "room_api_requests",
            "Room service requests by operation and result code (ok, an error code, or relayed from the hosting node)",
            m.room_api.clone(),
        );
        registry.register(
            "room_api_request_duration_seconds",
            "Time to answer a Room service request, placement waits and forwarding included",
            m.room_api_seconds.clone(),
        );
        registry.register("rooms", "Rooms open on this node", m.rooms.clone());
        registry.register("participants", "Participants connected to this node", m.participants.clone());
        registry.register("tracks", "Tracks published on this node", m.tracks.clone());
        registry.register(
            "simulcast_layer_switches",
            "Simulcast layer changes decided by the bandwidth allocator",
            m.layer_switches.clone(),
        );
        registry.register(
            "keyframe_requests",
            "Keyframe requests (PLI/FIR) sent to publishers, after the per-layer throttle",
            m.keyframe_requests.clone(),
        );
        registry.register(
            "paused_video_streams",
            "Video subscriptions paused now, by reason (bandwidth: not even the lowest layer fits the subscriber's estimate; hidden; publisher_muted)",
            m.paused_streams.clone(),
        );
        registry.register(
            "rtp_packets",
            "RTP packets received from publishers (in) and sent to subscribers (out)",
            m.packets.clone(),
        );
        registry.register("rtp_payload_bytes", "RTP payload bytes in and out", m.bytes.clone());
        registry.register(
            "packet_loss_ratio",
            "Fraction of media packets lost, per participant and RTCP report (once a second), the worse direction",
            m.loss.clone(),
        );
        registry.register(
            "rtt_seconds",
            "Round-trip time to participants, per participant and RTCP report",
            m.rtt.clone(),
        );
        registry.register(
            "jitter_seconds",
            "Interarrival jitter of the worst stream, per participant and RTCP report",
            m.jitter.clone(),
        );
        registry.register(
            "downlink_estimate_bits_per_second",
            "Estimated downlink of each subscriber receiving video (str0m's BWE from TWCC, or the client's REMB), once a second",
            m.estimate.clone(),
        );
        registry.register(
            "nacks",
            "RTCP NACKs received from subscribers (in: they lost packets we sent) and sent to publishers (out)",
            m.nacks.clone(),
        );
        registry.register(
            "keyframe_requests_received",
            "Keyframe requests subscribers sent (pli, fir); what reaches publishers is throttled per track",
            m.keyframe_requests_in.clone(),
        );
        registry.register(
            "participants_by_quality",
            "Participants by their connection quality verdict (excellent, good, poor, lost)",
            m.by_quality.clone(),
        );
        registry.register("unrouted_datagrams", "Datagrams that matched no participant", m.unrouted.clone());
        registry.register(
            "shard_queue_dropped_datagrams",
            "Datagrams dropped because their shard's media queue was full",
            m.shard_queue_drops.clone(),
        );
        registry.register(
            "udp_send_dropped_datagrams",
            "Datagrams the kernel refused to send on the media socket (no buffer space, no route)",
            m.udp_send_drops.clone(),
        );
        registry.register("signal_connections", "WebSocket connection attempts by result", m.connections.clone());
        registry.register("signal_errors", "Error messages sent to clients by code", m.signal_errors.clone());
        registry.register(
            "join_duration_seconds",
            "Time from a join message to the joined reply",
            m.join_seconds.clone(),
        );
        registry.register("draining", "1 while the node drains", m.draining.clone());
        registry.register(
            "webhooks",
            "Webhook events by kind and result (delivered, failed after retries or refused, dropped on a full queue)",
            m.webhooks.clone(),
        );
        registry.register(
            "webhook_delivery_duration_seconds",
            "Time from an event to its delivery to one receiver, retries included",
            m.webhook_seconds.clone(),
        );
        registry.register(
            "room_status_patches",
            "Room.status reports sent to the Kubernetes API, by result",
            m.status_patches.clone(),
        );
        registry.register(
            "proxied_sessions",
            "Signaling sessions proxied to the node hosting their room, by result",
            m.proxied.clone(),
        );
        registry.register("proxied_sessions_active", "Signaling sessions being proxied now", m.proxied_active.clone());
        registry.register(
            "proxied_sessions_stuck",
            "Proxied sessions ended because one side (client, node) did not take a frame within the send timeout",
            m.proxy_stuck.clone(),
        );
        registry.register(
            "routing_duration_seconds",
            "Kubernetes mode: time to route a join (room lookup, creation, placement wait)",
            m.routing_seconds.clone(),
        );
        registry.register(
            "http_connections",
            "Open connections on the signaling port (WebSockets included)",
            m.http_connections.clone(),
        );
        registry.register(
            "http_connections_refused",
            "Signaling-port connections refused or cut: per_ip_limit, total_limit, header_timeout",
            m.http_refused.clone(),
        );
        registry.register(
            "signal_slow_clients",
            "Sessions ended because the client did not read: queue_full (closed 1008), send_timeout",
            m.slow_clients.clone(),
        );
        registry.register(
            "resumes",
            "Resume attempts by result: ok, or why it failed (unknown_session, bad_token, wrong_identity)",
            m.resumes.clone(),
        );
        registry.register(
            "sessions_held",
            "Participants whose signaling socket dropped, held for a resume",
            m.sessions_held.clone(),
        );
        Self { registry, ..m }
    }

    /// Fold the shards' cumulative counters in: `now` and `before` are sums over shards.
    pub(crate) fn observe(&self, now: &EngineStats, before: &EngineStats) {
        self.rooms.set(now.rooms as i64);
        self.participants.set(now.participants as i64);
        self.tracks.set(now.tracks as i64);
        self.sessions_held.set(now.held as i64);
        for (reason, n) in crate::engine::PAUSE_REASONS.iter().zip(now.paused_streams) {
            self.paused_streams.get_or_create(&Reason { reason: reason.as_str() }).set(n as i64);
        }
        let delta = |a: u64, b: u64| a.saturating_sub(b);
        self.resumes.get_or_create(&Outcome { result: "ok" }).inc_by(delta(now.resumes, before.resumes));
        for f in crate::engine::ResumeFailure::ALL {
            let (a, b) = (now.resume_failures[f as usize], before.resume_failures[f as usize]);
            self.resumes.get_or_create(&Outcome { result: f.as_str() }).inc_by(delta(a, b));
        }
        self.layer_switches.inc_by(delta(now.layer_switches, before.layer_switches));
        self.keyframe_requests.inc_by(delta(now.keyframe_requests, before.keyframe_requests));
        self.packets.get_or_create(&Direction { direction: "in" }).inc_by(delta(now.packets_in, before.packets_in));
        self.packets.get_or_create(&Direction { direction: "out" }).inc_by(delta(now.packets_out, before.packets_out));
        self.bytes.get_or_create(&Direction { direction: "in" }).inc_by(delta(now.bytes_in, before.bytes_in));
        self.bytes.get_or_create(&Direction { direction: "out" }).inc_by(delta(now.bytes_out, before.bytes_out));
        let (q, b) = (&now.quality, &before.quality);
        self.loss.set(q.loss);
        self.rtt.set(q.rtt);
        self.jitter.set(q.jitter);
        self.estimate.set(q.estimate);
        self.nacks.get_or_create(&Direction { direction: "in" }).inc_by(delta(q.nacks_in, b.nacks_in));
        self.nacks.get_or_create(&Direction { direction: "out" }).inc_by(delta(q.nacks_out, b.nacks_out));
        self.keyframe_requests_in.get_or_create(&Kind { kind: "pli" }).inc_by(delta(q.plis_in, b.plis_in));
        self.keyframe_requests_in.get_or_create(&Kind { kind: "fir" }).inc_by(delta(q.firs_in, b.firs_in));
        for (i, quality) in ["lost", "poor", "good", "excellent"].into_iter().enumerate() {
            self.by_quality.get_or_create(&Quality { quality }).set(q.participants[i] as i64);
        }
    }

    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
