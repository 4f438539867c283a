//! The two controllers and what they share.
//!
//! The MediaCluster controller is the only one that talks to the nodes' status
//! endpoints; it leaves what it saw in the [`Context`] (per-cluster state), where the Room controller
//! reads node loads for placement and node health for rescheduling.

pub mod media_cluster;
pub mod room;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use rand::SeedableRng;
use rand::rngs::StdRng;
use switchyard_api::node::MediaNodeStatus;
use switchyard_api::{MediaCluster, Room};

use crate::decide::autoscale::Autoscaler;
use crate::decide::drain::Draining;
use crate::metrics::Metrics;
use crate::nodes::NodeApi;
use crate::render::Images;

/// Everything a reconcile needs.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Kubernetes Events.
    pub events: Events,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The nodes' internal API.
    pub nodes: Arc<dyn NodeApi>,
    /// Default node images.
    pub images: Images,
    /// Whether the ServiceMonitor CRD exists (checked at start-up).
    pub service_monitor_crd: bool,
    /// All Rooms (the Room controller's reflector).
    pub rooms: Store<Room>,
    /// All MediaClusters (the MediaCluster controller's reflector).
    pub media_clusters: Store<MediaCluster>,
    clusters: Mutex<HashMap<ObjectRef<MediaCluster>, ClusterState>>,
    rng: Mutex<StdRng>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("service_monitor_crd", &self.service_monitor_crd).finish_non_exhaustive()
    }
}

impl Context {
    /// Build a context. `seed` seeds placement's RNG (tests pass a fixed one).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        nodes: Arc<dyn NodeApi>,
        images: Images,
        service_monitor_crd: bool,
        rooms: Store<Room>,
        media_clusters: Store<MediaCluster>,
        seed: u64,
    ) -> Self {
        Self {
            events: Events::new(client.clone(), reporter),
            client,
            metrics,
            nodes,
            images,
            service_monitor_crd,
            rooms,
            media_clusters,
            clusters: Mutex::default(),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// The per-cluster state. Never held across an `.await`.
    pub(crate) fn clusters(&self) -> MutexGuard<'_, HashMap<ObjectRef<MediaCluster>, ClusterState>> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.clusters.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn rng(&self) -> MutexGuard<'_, StdRng> {
        self.rng.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publish an event about `obj`; failures are logged, never fatal: an event is a
    /// courtesy to the humans reading `kubectl describe`.
    pub(crate) async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        if let Err(e) = self.events.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "publishing event failed");
        }
    }

    /// Record what the MediaCluster controller observed (tests use this to seed nodes).
    pub fn set_observed_nodes(&self, cluster: ObjectRef<MediaCluster>, nodes: Vec<ObservedNode>) {
        let mut clusters = self.clusters();
        let state = clusters.entry(cluster).or_default();
        state.nodes = nodes;
        state.observed = true;
    }
}

/// Publishes Kubernetes Events, one series per object, reason and note.
///
/// kube's `Recorder` folds every Event with the same object, reason and action into one
/// series whatever its note says: "turn: 1 → 2 replicas" and then "turn: 2 → 3" would
/// read as the first one twice, and the second drained pod would never be named. Here
/// each distinct note gets its own series (its own `Recorder`), and a true repeat still
/// only bumps its series' count.
pub struct Events {
    client: Client,
    reporter: Reporter,
    series: Mutex<HashMap<SeriesKey, (Recorder, Instant)>>,
}

/// The object (uid), reason and note of an Event series.
type SeriesKey = (String, String, String);

/// How long a series is remembered (kube's `Recorder` keeps its cache as long).
const SERIES_TTL: Duration = Duration::from_secs(6 * 60);

/// At most this many series are remembered; the oldest go first.
const MAX_SERIES: usize = 4096;

impl Events {
    /// Publish as `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter, series: Mutex::default() }
    }

    fn recorder(&self, key: SeriesKey) -> Recorder {
        let mut series = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        series.retain(|_, (_, at)| at.elapsed() < SERIES_TTL);
        if series.len() >= MAX_SERIES
            && let Some(oldest) = series.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| k.clone())
        {
            series.remove(&oldest);
        }
        let entry = series
            .entry(key)
            .or_insert_with(|| (Recorder::new(self.client.clone(), self.reporter.clone()), Instant::now()));
        entry.1 = Instant::now();
        entry.0.clone()
    }

    /// Publish `ev` about `reference`.
    pub async fn publish(&self, ev: &Event, reference: &ObjectReference) -> Result<(), kube::Error> {
        let object = reference.uid.clone().or_else(|| reference.name.clone()).unwrap_or_default();
        let recorder = self.recorder((object, ev.reason.clone(), ev.note.clone().unwrap_or_default()));
        recorder.publish(ev, reference).await
    }

    /// Series remembered now (for tests).
    pub fn series(&self) -> usize {
        self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("series", &self.series()).finish()
    }
}

/// What the operator remembers about one MediaCluster between reconciles.
#[derive(Debug, Default)]
pub struct ClusterState {
    pub(crate) sfu_autoscaler: Autoscaler,
    pub(crate) turn_autoscaler: Autoscaler,
    pub(crate) sfu_drain: Option<Draining>,
    pub(crate) turn_drain: Option<Draining>,
    /// The media-nodes at the last poll.
    pub(crate) nodes: Vec<ObservedNode>,
    /// When each unready node was first seen unready.
    pub(crate) unready_since: BTreeMap<String, SystemTime>,
    /// The first poll has happened.
    pub(crate) observed: bool,
    /// Placements this operator made that the Room cache does not show yet: room name →
    /// node. Placement counts them on their node (with the cache and the nodes' own
    /// reports, [`crate::decide::placement::rooms_per_node`]); an entry goes when the
    /// cache shows that node, the room is re-placed or unschedulable, or it is deleted.
    pub(crate) placed: BTreeMap<String, String>,
    /// Hash of the last applied object set, and when it was applied.
    pub(crate) last_applied: Option<(String, std::time::Instant)>,
}

/// One media-node as last observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedNode {
    /// Pod name.
    pub name: String,
    /// Pod IP.
    pub ip: Option<IpAddr>,
    /// Pod Ready and its status endpoint answered.
    pub ready: bool,
    /// Draining (told to, chosen as victim, or being deleted).
    pub draining: bool,
    /// The last status document.
    pub status: Option<MediaNodeStatus>,
}

/// Upsert a condition, keeping `lastTransitionTime` when the status did not change.
pub(crate) fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" };
    let existing = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match existing.map(|i| &conditions[i]) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    let c = Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    };
    match existing {
        Some(i) => conditions[i] = c,
        None => conditions.push(c),
    }
}

pub(crate) fn now_time() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
