//! Kubernetes mode: signaling routing across the media-nodes of one MediaCluster.
//!
//! ```text
//!  client ──ws──► any media-node ── route(room) ─┬─ hosted here ──────► local session
//!                  (Room + Pod reflectors)       ├─ hosted on pod B ──► proxy ──ws──► pod B
//!                                                ├─ no Room, may create ► create Room, wait for
//!                                                │                        the operator's placement
//!                                                └─ closed / full / … ──► error, then close
//! ```
//!
//! Every node keeps in-memory reflectors of the cluster's `Room` objects and of its
//! media-node pods (for the hosting pod's IP: per-pod DNS needs a resolver, a pod IP
//! does not). A join is routed by a pure function, [`decide`], re-evaluated as the
//! reflectors change until it settles or the placement deadline passes, so a client
//! never waits on a socket without an end.
//!
//! The hosting node reports its rooms' `participants`, `startedAt` and `emptySince` to
//! `Room.status` with a merge patch, at most once per room per interval and only when
//! something changed (the operator owns the other status fields).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use switchyard_api::Room;
use switchyard_api::room::{AUTO_CREATED_LABEL, RoomPhase, RoomSpec};
use switchyard_api::signal::{ErrorCode, ErrorMessage};

use crate::engine::RoomSettings;
use crate::{Error, Result};

/// The request header a node sets when it proxies a join to the hosting node; the
/// receiver never proxies such a join again.
pub(crate) const FORWARDED_HEADER: &str = "x-switchyard-forwarded-by";

/// Where this node sits: set from the pod's environment and the operator's config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeMode {
    /// The pod's namespace (the MediaCluster's).
    pub namespace: String,
    /// The MediaCluster name.
    pub cluster: String,
    /// How long a join waits for its room to be created and placed.
    pub placement_timeout: Duration,
    /// Smallest interval between two `Room.status` patches of one room.
    pub status_interval: Duration,
}

/// What to do with a join, given what the reflectors show now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// The room is placed on this node: serve it, with the Room's settings.
    Serve(Box<RoomSpec>),
    /// The room is on another node: proxy to it.
    Proxy { node: String, ip: IpAddr },
    /// There is no Room and the join may create one.
    Create,
    /// Not settled yet (placement pending, a reflector lagging); the reason is what the
    /// client is told if the deadline passes.
    Wait(&'static str),
    /// A final answer.
    Refuse(ErrorCode, String),
}

/// What a join knows about itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JoinFacts<'a> {
    pub(crate) room: &'a str,
    /// The token (or the cluster's autoCreate) allows creating the room.
    pub(crate) may_create: bool,
    /// Another node proxied this join here.
    pub(crate) forwarded: bool,
    /// This node already created the Room for this join.
    pub(crate) created: bool,
}

/// Route one join (pure: the reflectors' view in, a decision out).
pub(crate) fn decide(
    join: JoinFacts<'_>,
    room: Option<&Room>,
    me: &str,
    cluster: &str,
    pod_ip: impl Fn(&str) -> Option<IpAddr>,
) -> Decision {
    let Some(room) = room else {
        return if join.forwarded || join.created {
            // The node that sent it here saw the Room, or we just created it: our
            // reflector has yet to catch up.
            Decision::Wait("the room is not visible yet")
        } else if join.may_create {
            Decision::Create
        } else {
            Decision::Refuse(ErrorCode::RoomNotFound, format!("room {} does not exist", join.room))
        };
    };
    if room.spec.cluster_ref != cluster {
        return Decision::Refuse(
            ErrorCode::RoomNotFound,
            format!("room {} belongs to cluster {}, not {cluster}", join.room, room.spec.cluster_ref),
        );
    }
    let status = room.status.clone().unwrap_or_default();
    if room.metadata.deletion_timestamp.is_some() || status.phase == RoomPhase::Closed {
        return Decision::Refuse(ErrorCode::RoomClosed, format!("room {} is closed", join.room));
    }
    match status.node.as_deref() {
        None => Decision::Wait("the room is waiting for placement"),
        Some(node) if node == me => Decision::Serve(Box::new(room.spec.clone())),
        // Proxied here, but our view says elsewhere: a move is in flight. Never a second hop.
        Some(_) if join.forwarded => Decision::Wait("the room is moving between nodes"),
        Some(node) => match pod_ip(node) {
            Some(ip) => Decision::Proxy { node: node.to_owned(), ip },
            None => Decision::Wait("the room's node has no address yet"),
        },
    }
}

/// A room this node serves: its Room's spec, and the sid its uid gives it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Served {
    pub(crate) spec: RoomSpec,
    pub(crate) sid: Option<String>,
}

/// The sid of the room a Room object declares: the same on every node and in every
/// answer of the Room service.
pub(crate) fn room_sid(room: &Room) -> Option<String> {
    room.metadata.uid.as_ref().map(|uid| format!("RM_{uid}"))
}

/// The Room's settings over the cluster defaults.
pub(crate) fn room_settings(served: &Served, defaults: RoomSettings) -> RoomSettings {
    let spec = &served.spec;
    RoomSettings {
        sid: served.sid.clone(),
        max_participants: spec.max_participants.map_or(defaults.max_participants, |m| u32::try_from(m).unwrap_or(0)),
        empty_timeout: spec
            .empty_timeout_seconds
            .map_or(defaults.empty_timeout, |s| Duration::from_secs(u64::try_from(s).unwrap_or(0))),
        allowed_codecs: spec.allowed_codecs.clone(),
        metadata: spec.metadata.clone().or(defaults.metadata),
    }
}

/// The reflectors and the API of one MediaCluster.
pub(crate) struct Cluster {
    mode: KubeMode,
    me: String,
    api: Api<Room>,
    rooms: Store<Room>,
    pods: Store<Pod>,
    synced: AtomicBool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("mode", &self.mode).field("me", &self.me).finish()
    }
}

/// How a routed join ends.
#[derive(Debug)]
pub(crate) enum Route {
    Serve(Served),
    Proxy { node: String, ip: IpAddr },
    Refuse(ErrorMessage),
}

impl Cluster {
    /// Connect with the pod's in-cluster credentials and start the reflectors.
    pub(crate) async fn start(mode: KubeMode, me: String) -> Result<Arc<Self>> {
        let client = Client::try_default().await.map_err(|e| Error::Config(format!("kubernetes client: {e}")))?;
        let api: Api<Room> = Api::namespaced(client.clone(), &mode.namespace);
        let pods_api: Api<Pod> = Api::namespaced(client, &mode.namespace);
        let (rooms, rooms_writer) = reflector::store();
        let (pods, pods_writer) = reflector::store();
        let room_stream = reflector::reflector(rooms_writer, watcher(api.clone(), watcher::Config::default()))
            .default_backoff()
            .applied_objects();
        let selector = format!("app.kubernetes.io/component=sfu,switchyard.dev/cluster={}", mode.cluster);
        let pod_stream =
            reflector::reflector(pods_writer, watcher(pods_api, watcher::Config::default().labels(&selector)))
                .default_backoff()
                .applied_objects();
        tokio::spawn(drive(room_stream, "rooms"));
        tokio::spawn(drive(pod_stream, "pods"));
        let cluster = Arc::new(Self { mode, me, api, rooms, pods, synced: AtomicBool::new(false) });
        let c = cluster.clone();
        tokio::spawn(async move {
            let (a, b) = tokio::join!(c.rooms.wait_until_ready(), c.pods.wait_until_ready());
            if a.is_ok() && b.is_ok() {
                c.synced.store(true, Ordering::Relaxed);
                tracing::info!(cluster = %c.mode.cluster, "room and pod reflectors synced");
            }
        });
        Ok(cluster)
    }

    /// Both reflectors have listed once (the node's readiness waits for this).
    pub(crate) fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    fn room(&self, name: &str) -> Option<Arc<Room>> {
        self.rooms.get(&ObjectRef::new(name).within(&self.mode.namespace))
    }

    /// The Room object of `name` in this cluster, unless it is being deleted or closed.
    pub(crate) fn room_object(&self, name: &str) -> Option<Arc<Room>> {
        self.room(name).filter(|r| live(r, &self.mode.cluster))
    }

    /// The cluster's live Room objects, by name.
    pub(crate) fn room_objects(&self) -> Vec<Arc<Room>> {
        let mut all: Vec<_> = self.rooms.state().into_iter().filter(|r| live(r, &self.mode.cluster)).collect();
        all.sort_by_key(|r| r.name_any());
        all
    }

    /// `name`'s Room if it is placed on this node, waiting up to 2 s for the reflector to
    /// show a placement made a moment ago.
    pub(crate) async fn placed_here_eventually(&self, name: &str) -> Option<Arc<Room>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(r) = self.room_object(name)
                && r.status.as_ref().and_then(|s| s.node.as_deref()) == Some(self.me.as_str())
            {
                return Some(r);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// This node's pod name.
    pub(crate) fn me(&self) -> &str {
        &self.me
    }

    /// Where this node sits.
    pub(crate) fn mode(&self) -> &KubeMode {
        &self.mode
    }

    /// The Room API of the cluster's namespace.
    pub(crate) fn api(&self) -> &Api<Room> {
        &self.api
    }

    /// Whether `ip` is one of the fleet's media-node pods (they proxy signaling to each
    /// other, so they are trusted proxies).
    pub(crate) fn is_fleet_pod(&self, ip: IpAddr) -> bool {
        let ip = ip.to_string();
        self.pods.state().iter().any(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_deref()) == Some(ip.as_str()))
    }

    pub(crate) fn pod_ip(&self, name: &str) -> Option<IpAddr> {
        let pod = self.pods.get(&ObjectRef::new(name).within(&self.mode.namespace))?;
        if pod.metadata.deletion_timestamp.is_some() {
            return None;
        }
        pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
    }

    /// Route a join: wait (bounded) until [`decide`] settles.
    pub(crate) async fn route(&self, room: &str, may_create: bool, forwarded: bool) -> Route {
        let deadline = tokio::time::Instant::now() + self.mode.placement_timeout;
        let mut created = false;
        loop {
            let decision = if self.synced() {
                let facts = JoinFacts { room, may_create, forwarded, created };
                decide(facts, self.room(room).as_deref(), &self.me, &self.mode.cluster, |n| self.pod_ip(n))
            } else {
                Decision::Wait("this node has not listed the cluster's rooms yet")
            };
            let waiting = match decision {
                Decision::Serve(spec) => {
                    let sid = self.room(room).as_deref().and_then(room_sid);
                    return Route::Serve(Served { spec: *spec, sid });
                }
                Decision::Proxy { node, ip } => return Route::Proxy { node, ip },
                Decision::Refuse(code, message) => return Route::Refuse(ErrorMessage::new(code, message)),
                Decision::Create => {
                    if let Err(e) = self.create(room).await {
                        let mut err = ErrorMessage::new(ErrorCode::Internal, format!("creating room {room}: {e}"));
                        err.retry_after_ms = Some(1000);
                        return Route::Refuse(err);
                    }
                    created = true;
                    continue;
                }
                Decision::Wait(why) => why,
            };
            if tokio::time::Instant::now() >= deadline {
                let mut e = ErrorMessage::new(
                    ErrorCode::PlacementTimeout,
                    format!("{waiting} after {} s", self.mode.placement_timeout.as_secs()),
                );
                e.retry_after_ms = Some(1000);
                return Route::Refuse(e);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn create(&self, name: &str) -> kube::Result<()> {
        let spec = RoomSpec {
            cluster_ref: self.mode.cluster.clone(),
            max_participants: None,
            empty_timeout_seconds: None,
            allowed_codecs: vec![],
            metadata: None,
        };
        match self.create_room(name, spec).await {
            Ok(_) => {
                tracing::info!(room = name, "created Room for a join");
                Ok(())
            }
            // Another node (or a concurrent join) created it first: that is the same room.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Create a Room object labelled auto-created (the operator deletes it once it
    /// expires, as a room of dev mode disappears), annotated with this node's name.
    pub(crate) async fn create_room(&self, name: &str, spec: RoomSpec) -> kube::Result<Room> {
        let mut room = Room::new(name, spec);
        room.metadata.labels = Some(BTreeMap::from([(AUTO_CREATED_LABEL.to_owned(), "true".to_owned())]));
        room.metadata.annotations = Some(BTreeMap::from([("switchyard.dev/created-by".to_owned(), self.me.clone())]));
        self.api.create(&PostParams::default(), &room).await
    }

    /// The rooms this node hosts according to the API, with their reported status.
    fn hosted(&self) -> Vec<Arc<Room>> {
        self.rooms
            .state()
            .into_iter()
            .filter(|r| {
                r.spec.cluster_ref == self.mode.cluster
                    && r.metadata.deletion_timestamp.is_none()
                    && r.status.as_ref().and_then(|s| s.node.as_deref()) == Some(self.me.as_str())
            })
            .collect()
    }
}

/// A Room of `cluster` that is neither being deleted nor closed.
fn live(r: &Room, cluster: &str) -> bool {
    r.spec.cluster_ref == cluster
        && r.metadata.deletion_timestamp.is_none()
        && r.status.as_ref().is_none_or(|s| s.phase != RoomPhase::Closed)
}

async fn drive<S, K>(stream: S, what: &'static str)
where
    S: futures_util::Stream<Item = std::result::Result<K, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            tracing::warn!(what, error = %e, "watch error (retrying)");
        }
    }
}

/// The merge patch that brings `Room.status` up to date with `participants` now, or
/// `None` when nothing changed.
pub(crate) fn status_patch(room: &Room, participants: i32, now: SystemTime) -> Option<serde_json::Value> {
    let status = room.status.clone().unwrap_or_default();
    let first_join = participants > 0 && status.started_at.is_none();
    let becomes_active = participants > 0 && status.phase != RoomPhase::Active;
    if status.participants == participants && !first_join && !becomes_active {
        return None;
    }
    let now = Time(k8s_openapi::jiff::Timestamp::try_from(now).unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now()));
    let mut patch = json!({ "participants": participants });
    if participants > 0 {
        patch["phase"] = json!(RoomPhase::Active);
        patch["emptySince"] = serde_json::Value::Null;
        if first_join {
            patch["startedAt"] = json!(now);
        }
    } else {
        patch["emptySince"] = json!(now);
    }
    Some(json!({ "status": patch }))
}

/// Report the hosted rooms' participants to `Room.status`, every `status_interval`,
/// only on change, and at most `max_patches` per round so a node with thousands of rooms
/// cannot flood the apiserver.
pub(crate) async fn report_status(
    cluster: Arc<Cluster>,
    shared: Arc<crate::node::Shared>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    const MAX_PATCHES: usize = 50;
    let mut tick = tokio::time::interval(cluster.mode.status_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if !cluster.synced() {
            continue;
        }
        let counts: HashMap<String, i32> = shared
            .rooms()
            .await
            .into_iter()
            .map(|r| (r.name, i32::try_from(r.participants.len()).unwrap_or(i32::MAX)))
            .collect();
        let mut sent = 0;
        for room in cluster.hosted() {
            if sent >= MAX_PATCHES {
                break;
            }
            let name = room.name_any();
            let n = counts.get(&name).copied().unwrap_or(0);
            let Some(patch) = status_patch(&room, n, SystemTime::now()) else { continue };
            sent += 1;
            let result = cluster.api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
            let label = if result.is_ok() { "ok" } else { "error" };
            shared.metrics.status_patches.get_or_create(&crate::metrics::Outcome { result: label }).inc();
            if let Err(e) = result {
                tracing::warn!(room = %name, error = %e, "Room status patch failed");
            }
        }
    }
}

/// Check at start that the pod's credentials may read Rooms (a clear error beats a
/// reflector retrying forever on 403).
pub(crate) async fn check_access(cluster: &Cluster) -> Result<()> {
    cluster.api.list(&ListParams::default().limit(1)).await.map(|_| ()).map_err(|e| {
        Error::Config(format!("listing Rooms in namespace {}: {e} (check the media-node Role)", cluster.mode.namespace))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use switchyard_api::room::RoomStatus;

    use super::*;

    fn room(cluster: &str, node: Option<&str>, phase: RoomPhase) -> Room {
        let mut r = Room::new(
            "standup",
            RoomSpec {
                cluster_ref: cluster.into(),
                max_participants: Some(3),
                empty_timeout_seconds: None,
                allowed_codecs: vec![],
                metadata: None,
            },
        );
        r.status = Some(RoomStatus { phase, node: node.map(str::to_owned), ..RoomStatus::default() });
        r
    }

    fn facts(may_create: bool, forwarded: bool, created: bool) -> JoinFacts<'static> {
        JoinFacts { room: "standup", may_create, forwarded, created }
    }

    fn ips(name: &str) -> Option<IpAddr> {
        BTreeMap::from([("edge-sfu-1", "127.1.0.5".parse().unwrap())]).get(name).copied()
    }

    fn run(join: JoinFacts<'_>, room: Option<&Room>) -> Decision {
        decide(join, room, "edge-sfu-0", "edge", ips)
    }

    #[test]
    fn a_missing_room_is_created_only_when_allowed() {
        assert_eq!(run(facts(true, false, false), None), Decision::Create);
        assert!(matches!(run(facts(false, false, false), None), Decision::Refuse(ErrorCode::RoomNotFound, _)));
        assert!(matches!(run(facts(true, false, true), None), Decision::Wait(_)), "created: wait for the reflector");
        assert!(matches!(run(facts(false, true, false), None), Decision::Wait(_)), "forwarded: the sender saw it");
    }

    #[test]
    fn a_placed_room_is_served_or_proxied() {
        let here = room("edge", Some("edge-sfu-0"), RoomPhase::Scheduled);
        match run(facts(false, false, false), Some(&here)) {
            Decision::Serve(spec) => assert_eq!(spec.max_participants, Some(3)),
            other => panic!("{other:?}"),
        }
        let there = room("edge", Some("edge-sfu-1"), RoomPhase::Active);
        assert_eq!(
            run(facts(false, false, false), Some(&there)),
            Decision::Proxy { node: "edge-sfu-1".into(), ip: "127.1.0.5".parse().unwrap() }
        );
        // Never a second hop: a proxied join whose room we see elsewhere waits.
        assert!(matches!(run(facts(false, true, false), Some(&there)), Decision::Wait(_)));
        // A node with no known IP (gone, or not yet started): wait for the operator.
        let gone = room("edge", Some("edge-sfu-7"), RoomPhase::Active);
        assert!(matches!(run(facts(false, false, false), Some(&gone)), Decision::Wait(_)));
    }

    #[test]
    fn pending_closed_and_foreign_rooms() {
        let pending = room("edge", None, RoomPhase::Pending);
        assert_eq!(run(facts(true, false, false), Some(&pending)), Decision::Wait("the room is waiting for placement"));
        let closed = room("edge", Some("edge-sfu-0"), RoomPhase::Closed);
        assert!(matches!(run(facts(true, false, false), Some(&closed)), Decision::Refuse(ErrorCode::RoomClosed, _)));
        let mut deleting = room("edge", Some("edge-sfu-0"), RoomPhase::Active);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert!(matches!(run(facts(true, false, false), Some(&deleting)), Decision::Refuse(ErrorCode::RoomClosed, _)));
        let foreign = room("core", Some("core-sfu-0"), RoomPhase::Active);
        match run(facts(true, false, false), Some(&foreign)) {
            Decision::Refuse(ErrorCode::RoomNotFound, m) => assert!(m.contains("belongs to cluster core"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn room_settings_override_the_defaults() {
        let defaults = RoomSettings {
            max_participants: 10,
            empty_timeout: Duration::from_secs(300),
            allowed_codecs: vec![],
            metadata: None,
            sid: None,
        };
        let mut spec = room("edge", None, RoomPhase::Pending).spec;
        spec.empty_timeout_seconds = Some(5);
        spec.allowed_codecs = vec![switchyard_api::room::Codec::VP9];
        let s = room_settings(&Served { spec: spec.clone(), sid: Some("RM_u1".into()) }, defaults.clone());
        assert_eq!(s.sid.as_deref(), Some("RM_u1"));
        assert_eq!(s.max_participants, 3);
        assert_eq!(s.empty_timeout, Duration::from_secs(5));
        assert_eq!(s.allowed_codecs, vec![switchyard_api::room::Codec::VP9]);
        spec.max_participants = None;
        assert_eq!(room_settings(&Served { spec, sid: None }, defaults).max_participants, 10);
    }

    #[test]
    fn status_is_patched_only_on_change() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut r = room("edge", Some("edge-sfu-0"), RoomPhase::Scheduled);
        // Nobody has joined: nothing to report (the operator counts an unjoined room as
        // empty since its creation).
        assert_eq!(status_patch(&r, 0, t0), None, "nothing changed");

        let p = status_patch(&r, 2, t0).unwrap();
        assert_eq!(p["status"]["phase"], "Active");
        assert_eq!(p["status"]["participants"], 2);
        assert!(p["status"]["startedAt"].is_string());
        assert!(p["status"]["emptySince"].is_null());
        let s = r.status.as_mut().unwrap();
        s.phase = RoomPhase::Active;
        s.participants = 2;
        s.started_at = Some(Time(k8s_openapi::jiff::Timestamp::try_from(t0).unwrap()));
        s.empty_since = None;
        assert_eq!(status_patch(&r, 2, t0), None);

        let p = status_patch(&r, 0, t0).unwrap();
        assert_eq!(p["status"]["participants"], 0);
        assert!(p["status"]["emptySince"].is_string(), "the empty timeout starts");
        assert!(p["status"].get("startedAt").is_none(), "startedAt is kept");
    }
}
