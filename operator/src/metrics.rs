//! The operator's Prometheus metrics, all under `switchyard_operator_`.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `switchyard_operator_reconciles_total` | counter | `controller`, `result` (`ok` or the error label) |
//! | `switchyard_operator_reconcile_duration_seconds` | histogram | `controller` |
//! | `switchyard_operator_rooms` | gauge | `phase` |
//! | `switchyard_operator_placement_latency_seconds` | histogram | — (room creation → placed) |
//! | `switchyard_operator_placements_total` | counter | `result` (`scheduled`, `unschedulable`) |
//! | `switchyard_operator_autoscaler_desired_replicas` | gauge | `namespace`, `cluster`, `fleet` |
//! | `switchyard_operator_autoscaler_current_replicas` | gauge | `namespace`, `cluster`, `fleet` |
//! | `switchyard_operator_autoscaler_wanted_replicas` | gauge | `namespace`, `cluster`, `fleet` (what the load asks for, before the bounds) |
//! | `switchyard_operator_autoscaler_min_replicas`, `_max_replicas` | gauge | `namespace`, `cluster`, `fleet` (the spec's bounds) |
//! | `switchyard_operator_turn_bandwidth_bits_per_second` | gauge | `namespace`, `cluster` |
//! | `switchyard_operator_leader` | gauge | — (1 while this replica leads) |
//!
//! Labels are bounded: controllers, results, phases, fleets and clusters are few; room
//! and pod names never become labels.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    controller: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FleetLabels {
    namespace: String,
    cluster: String,
    fleet: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    namespace: String,
    cluster: String,
}

/// Every metric the operator exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_duration: Family<ControllerLabel, Histogram>,
    rooms: Family<PhaseLabel, Gauge>,
    placement_latency: Histogram,
    placements: Family<ResultLabel, Counter>,
    desired: Family<FleetLabels, Gauge>,
    current: Family<FleetLabels, Gauge>,
    wanted: Family<FleetLabels, Gauge>,
    min: Family<FleetLabels, Gauge>,
    max: Family<FleetLabels, Gauge>,
    turn_bandwidth: Family<ClusterLabels, Gauge>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register everything in a fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchyard_operator");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register("reconciles", "Reconciles by controller and result", reconciles.clone());
        let reconcile_duration = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        registry.register("reconcile_duration_seconds", "Reconcile duration", reconcile_duration.clone());
        let rooms = Family::<PhaseLabel, Gauge>::default();
        registry.register("rooms", "Rooms by phase", rooms.clone());
        let placement_latency = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        registry.register(
            "placement_latency_seconds",
            "Time from a Room's creation to its placement on a node",
            placement_latency.clone(),
        );
        let placements = Family::<ResultLabel, Counter>::default();
        registry.register("placements", "Placement decisions by result", placements.clone());
        let desired = Family::<FleetLabels, Gauge>::default();
        registry.register("autoscaler_desired_replicas", "Replicas the autoscaler wants", desired.clone());
        let current = Family::<FleetLabels, Gauge>::default();
        registry.register("autoscaler_current_replicas", "Replicas the workload has", current.clone());
        let wanted = Family::<FleetLabels, Gauge>::default();
        registry.register(
            "autoscaler_wanted_replicas",
            "Replicas the load asks for, before tolerance and the min/max bounds",
            wanted.clone(),
        );
        let min = Family::<FleetLabels, Gauge>::default();
        registry.register("autoscaler_min_replicas", "The fleet's lower replica bound", min.clone());
        let max = Family::<FleetLabels, Gauge>::default();
        registry.register("autoscaler_max_replicas", "The fleet's upper replica bound", max.clone());
        let turn_bandwidth = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "turn_bandwidth_bits_per_second",
            "Relayed TURN bandwidth last observed",
            turn_bandwidth.clone(),
        );
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica holds the leader lease", leader.clone());
        Self {
            registry,
            reconciles,
            reconcile_duration,
            rooms,
            placement_latency,
            placements,
            desired,
            current,
            wanted,
            min,
            max,
            turn_bandwidth,
            leader,
        }
    }

    /// Start timing one reconcile; the guard records the duration when dropped.
    pub fn reconcile_timer(&self, controller: &'static str) -> ReconcileTimer {
        ReconcileTimer {
            histogram: self.reconcile_duration.get_or_create(&ControllerLabel { controller }).clone(),
            start: Instant::now(),
        }
    }

    /// Count a finished reconcile; `result` is `ok` or [`crate::Error::label`].
    pub fn reconciled(&self, controller: &'static str, result: &'static str) {
        self.reconciles.get_or_create(&ReconcileLabels { controller, result }).inc();
    }

    /// Set the number of rooms in each phase.
    pub fn set_rooms(&self, counts: &[(&'static str, i64)]) {
        for (phase, n) in counts {
            self.rooms.get_or_create(&PhaseLabel { phase }).set(*n);
        }
    }

    /// A placement decision; `latency` only for successful ones.
    pub fn placed(&self, scheduled: bool, latency_seconds: Option<f64>) {
        let result = if scheduled { "scheduled" } else { "unschedulable" };
        self.placements.get_or_create(&ResultLabel { result }).inc();
        if let Some(l) = latency_seconds {
            self.placement_latency.observe(l);
        }
    }

    /// Autoscaler state of one fleet.
    pub fn fleet(&self, namespace: &str, cluster: &str, fleet: &'static str, state: FleetGauges) {
        let l = FleetLabels { namespace: namespace.into(), cluster: cluster.into(), fleet };
        self.desired.get_or_create(&l).set(state.desired.into());
        self.current.get_or_create(&l).set(state.current.into());
        self.wanted.get_or_create(&l).set(state.wanted.into());
        self.min.get_or_create(&l).set(state.min.into());
        self.max.get_or_create(&l).set(state.max.into());
    }

    /// TURN bandwidth of one cluster.
    pub fn turn_bandwidth(&self, namespace: &str, cluster: &str, bps: u64) {
        let l = ClusterLabels { namespace: namespace.into(), cluster: cluster.into() };
        self.turn_bandwidth.get_or_create(&l).set(i64::try_from(bps).unwrap_or(i64::MAX));
    }

    /// Leadership.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// One fleet's autoscaler figures, as [`Metrics::fleet`] exports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FleetGauges {
    /// The replica count the autoscaler wants now (within the bounds).
    pub desired: u32,
    /// The workload's replica count.
    pub current: u32,
    /// What the load asks for before tolerance and clamping: above `max`, the fleet is
    /// too small for its load and cannot grow.
    pub wanted: u32,
    /// `spec.<fleet>.replicas.min`.
    pub min: u32,
    /// `spec.<fleet>.replicas.max`.
    pub max: u32,
}

/// Records a reconcile's duration when dropped, whichever way the reconcile returns.
#[derive(Debug)]
pub struct ReconcileTimer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_labels_and_the_timer_guard() {
        let m = Metrics::new();
        {
            let _t = m.reconcile_timer("room");
        }
        m.reconciled("room", "ok");
        m.reconciled("mediacluster", "kube");
        m.set_rooms(&[("Scheduled", 3)]);
        m.placed(true, Some(0.2));
        m.placed(false, None);
        m.fleet("media", "edge", "turn", FleetGauges { desired: 4, current: 2, wanted: 9, min: 1, max: 4 });
        m.turn_bandwidth("media", "edge", 12_500_000);
        m.set_leader(true);
        let text = m.encode();
        for line in [
            r#"switchyard_operator_reconciles_total{controller="room",result="ok"} 1"#,
            r#"switchyard_operator_reconciles_total{controller="mediacluster",result="kube"} 1"#,
            r#"switchyard_operator_reconcile_duration_seconds_count{controller="room"} 1"#,
            r#"switchyard_operator_rooms{phase="Scheduled"} 3"#,
            "switchyard_operator_placement_latency_seconds_count 1",
            r#"switchyard_operator_placements_total{result="unschedulable"} 1"#,
            r#"switchyard_operator_autoscaler_desired_replicas{namespace="media",cluster="edge",fleet="turn"} 4"#,
            r#"switchyard_operator_autoscaler_current_replicas{namespace="media",cluster="edge",fleet="turn"} 2"#,
            r#"switchyard_operator_autoscaler_wanted_replicas{namespace="media",cluster="edge",fleet="turn"} 9"#,
            r#"switchyard_operator_autoscaler_min_replicas{namespace="media",cluster="edge",fleet="turn"} 1"#,
            r#"switchyard_operator_autoscaler_max_replicas{namespace="media",cluster="edge",fleet="turn"} 4"#,
            r#"switchyard_operator_turn_bandwidth_bits_per_second{namespace="media",cluster="edge"} 12500000"#,
            "switchyard_operator_leader 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }
}
