//! The Room controller: place, watch over, and clean up rooms.
//!
//! ```text
//!  reconcile(Room) ── finalizer ─┬─ Apply:   decide::lifecycle::decide
//!                                │            Place/Reschedule → decide::placement::place
//!                                │              → status {phase Scheduled, node, signalingUrl}
//!                                │            Delete → delete the Room (auto-created, expired)
//!                                │            Wait/Keep → requeue
//!                                └─ Cleanup: POST /internal/rooms/<name>/close on its node,
//!                                            then the finalizer is removed
//! ```
//!
//! Room status is written with a merge patch, not server-side apply: media-node owns
//! `participants`, `startedAt`, `emptySince` and the `Active` phase of the same status,
//! and the operator must not take those fields over.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use switchyard_api::media_cluster::NodeCapacity;
use switchyard_api::quantity::parse_quantity;
use switchyard_api::room::{AUTO_CREATED_LABEL, RoomPhase};
use switchyard_api::{MediaCluster, Room};
use tracing::instrument;

use super::{ClusterState, Context, now_time, set_condition};
use crate::decide::lifecycle::{self, NodeHealth, RoomAction, RoomFacts};
use crate::decide::placement::{self, Capacity, KnownRoom, NodeLoad, Reported};
use crate::nodes::{Closed, NodeAddr};
use crate::render::Names;
use crate::{Error, Result};

/// The finalizer that makes the operator close a room on its node before it goes.
pub const FINALIZER: &str = "switchyard.dev/room-cleanup";

/// How long a node may be unready before its rooms move elsewhere.
pub const UNREADY_THRESHOLD: Duration = Duration::from_secs(30);

/// Reconcile one Room (see the module docs).
#[instrument(skip_all, fields(namespace = room.namespace().unwrap_or_default(), name = room.name_any()))]
pub async fn reconcile(room: Arc<Room>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer("room");
    let result = reconcile_inner(room, &ctx).await;
    ctx.metrics.reconciled("room", result.as_ref().map_or_else(Error::label, |_| "ok"));
    result
}

/// Retry after an error.
pub fn error_policy(_room: Arc<Room>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "room reconcile failed");
    Action::requeue(error.retry_after())
}

async fn reconcile_inner(room: Arc<Room>, ctx: &Context) -> Result<Action> {
    let ns =
        room.namespace().ok_or_else(|| Error::Invalid { what: "metadata.namespace", message: "missing".into() })?;
    let api: Api<Room> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, room, |event| async {
        match event {
            Finalizer::Apply(room) => apply(&room, &api, ctx).await,
            Finalizer::Cleanup(room) => cleanup(&room, ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

/// Each media-node's load as placement sees it: its last status, with `counts` (from
/// [`rooms_per_node`]) as its rooms.
pub(crate) fn node_loads(state: &ClusterState, counts: &BTreeMap<String, u64>) -> Vec<NodeLoad> {
    state
        .nodes
        .iter()
        .map(|n| {
            let s = n.status.clone().unwrap_or_default();
            NodeLoad {
                name: n.name.clone(),
                ready: n.ready,
                draining: n.draining,
                rooms: counts.get(&n.name).copied().unwrap_or(0),
                participants: s.participants,
                bandwidth_bps: s.bandwidth_bps,
                full: s.full,
            }
        })
        .collect()
}

/// Rooms per node as placement counts them ([`placement::rooms_per_node`]): the Room
/// cache, this operator's unconfirmed placements and the nodes' reports. Called with the
/// cluster lock held (`state` comes from it), so a poll pruning a placement the cache
/// confirmed cannot slip between the two reads.
pub(crate) fn rooms_per_node(
    ctx: &Context,
    state: &ClusterState,
    ns: &str,
    cluster: &str,
    except: &str,
) -> BTreeMap<String, u64> {
    let cached = ctx.rooms.state();
    let known =
        cached.iter().filter(|r| r.namespace().as_deref() == Some(ns) && r.spec.cluster_ref == cluster).map(|r| {
            KnownRoom {
                name: r.metadata.name.as_deref().unwrap_or_default(),
                node: r.status.as_ref().and_then(|s| s.node.as_deref()),
                closed: r.status.as_ref().is_some_and(|s| s.phase == RoomPhase::Closed),
            }
        });
    let reported = state
        .nodes
        .iter()
        .filter_map(|n| n.status.as_ref().map(|s| Reported { node: &n.name, rooms: s.rooms, names: &s.room_names }));
    placement::rooms_per_node(known, &state.placed, reported, except)
        .into_iter()
        .map(|(node, n)| (node.to_owned(), n))
        .collect()
}

pub(crate) fn capacity(c: &NodeCapacity) -> Result<Capacity> {
    let bw = match &c.bandwidth {
        Some(q) => Some(
            parse_quantity(&q.0)
                .map_err(|e| Error::Invalid { what: "sfu.capacity.bandwidth", message: e.to_string() })?,
        ),
        None => None,
    };
    Ok(Capacity::from_limits(i64::from(c.rooms), i64::from(c.participants), bw))
}

fn to_system_time(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> SystemTime {
    SystemTime::from(t.0)
}

async fn apply(room: &Room, api: &Api<Room>, ctx: &Context) -> Result<Action> {
    let ns = room.namespace().unwrap_or_default();
    let cluster_key = ObjectRef::<MediaCluster>::new(&room.spec.cluster_ref).within(&ns);
    let Some(mc) = ctx.media_clusters.get(&cluster_key) else {
        set_pending(room, api, "ClusterNotFound", format!("MediaCluster {} does not exist", room.spec.cluster_ref))
            .await?;
        return Err(Error::ClusterNotFound(room.spec.cluster_ref.clone()));
    };
    let poll = Duration::from_secs(u64::try_from(mc.spec.autoscaling.poll_interval_seconds).unwrap_or(10).max(1));
    let now = SystemTime::now();
    let status = room.status.clone().unwrap_or_default();

    let (observed, health) = {
        let clusters = ctx.clusters();
        match clusters.get(&cluster_key) {
            Some(state) if state.observed => {
                let health = match status.node.as_deref().and_then(|n| state.nodes.iter().find(|o| o.name == n)) {
                    None => NodeHealth::Gone,
                    Some(n) if n.ready => NodeHealth::Ready,
                    Some(n) => NodeHealth::Unready { since: state.unready_since.get(&n.name).copied().unwrap_or(now) },
                };
                (true, health)
            }
            _ => (false, NodeHealth::Gone),
        }
    };
    if !observed {
        // The MediaCluster controller has not polled the nodes yet (operator start or
        // failover). A placed room keeps its status: flipping every room to Pending on
        // each leader change would be noise, and nothing is known to be wrong.
        if status.node.is_none() {
            set_pending(room, api, "WaitingForNodes", "waiting for the first node status poll".into()).await?;
        }
        return Ok(Action::requeue(Duration::from_secs(2)));
    }

    let empty_timeout = room.spec.empty_timeout_seconds.unwrap_or(mc.spec.room_defaults.empty_timeout_seconds);
    let facts = RoomFacts {
        node: status.node.clone(),
        closed: status.phase == RoomPhase::Closed,
        auto_created: room.labels().get(AUTO_CREATED_LABEL).is_some_and(|v| v == "true"),
        participants: u32::try_from(status.participants).unwrap_or(0),
        // A room nobody ever joined has been empty since it was created.
        empty_since: status
            .empty_since
            .as_ref()
            .or(if status.started_at.is_none() { room.meta().creation_timestamp.as_ref() } else { None })
            .map(to_system_time),
        empty_timeout: Duration::from_secs(u64::try_from(empty_timeout).unwrap_or(0)),
    };

    match lifecycle::decide(&facts, health, UNREADY_THRESHOLD, now) {
        RoomAction::Place => place(room, &mc, api, ctx, None).await,
        RoomAction::Reschedule { reason } => place(room, &mc, api, ctx, Some(reason)).await,
        RoomAction::Delete => {
            let note = format!("auto-created room empty for {empty_timeout}s; deleting it");
            ctx.event(room, EventType::Normal, "Expired", "Delete", note).await;
            api.delete(&room.name_any(), &DeleteParams::default()).await?;
            Ok(Action::await_change())
        }
        RoomAction::WaitFor(d) => Ok(Action::requeue(d.min(poll))),
        RoomAction::Keep => Ok(Action::requeue(poll)),
    }
}

async fn place(room: &Room, mc: &MediaCluster, api: &Api<Room>, ctx: &Context, moved: Option<&str>) -> Result<Action> {
    let ns = room.namespace().unwrap_or_default();
    let name = room.name_any();
    let cluster_key = ObjectRef::from_obj(mc);
    let cap = capacity(&mc.spec.sfu.capacity)?;

    let choice = {
        let mut clusters = ctx.clusters();
        let state = clusters.entry(cluster_key).or_default();
        let counts = rooms_per_node(ctx, state, &ns, &room.spec.cluster_ref, &name);
        let loads = node_loads(state, &counts);
        let choice = placement::place(&loads, &cap, &mut *ctx.rng()).map(|n| n.name.clone());
        match &choice {
            Ok(node) => state.placed.insert(name.clone(), node.clone()),
            Err(_) => state.placed.remove(&name),
        };
        choice
    };

    let now = now_time();
    let status = room.status.clone().unwrap_or_default();
    let mut conditions = status.conditions.clone();
    match choice {
        Ok(node) => {
            let url = format!(
                "ws://{}:{}/rtc",
                Names::new(&room.spec.cluster_ref).sfu_pod_host(&node, &ns),
                mc.spec.signaling.port
            );
            let message = match moved {
                Some(reason) => format!("moved to {node} ({reason})"),
                None => format!("placed on {node}"),
            };
            set_condition(&mut conditions, "Scheduled", true, "Placed", message.clone(), room.meta().generation, &now);
            patch_status(
                api,
                &name,
                json!({
                    "phase": RoomPhase::Scheduled,
                    "node": node,
                    "signalingUrl": url,
                    "conditions": conditions,
                    "observedGeneration": room.meta().generation,
                }),
            )
            .await?;
            let latency = room
                .meta()
                .creation_timestamp
                .as_ref()
                .and_then(|t| SystemTime::now().duration_since(to_system_time(t)).ok())
                .map(|d| d.as_secs_f64());
            ctx.metrics.placed(true, if moved.is_none() { latency } else { None });
            let (type_, reason) =
                if moved.is_some() { (EventType::Warning, "Rescheduled") } else { (EventType::Normal, "Scheduled") };
            ctx.event(room, type_, reason, "Place", message).await;
            Ok(Action::await_change())
        }
        Err(unschedulable) => {
            ctx.metrics.placed(false, None);
            let message = unschedulable.to_string();
            let changed = conditions.iter().find(|c| c.type_ == "Scheduled").is_none_or(|c| c.message != message);
            if changed || status.node.is_some() {
                set_condition(
                    &mut conditions,
                    "Scheduled",
                    false,
                    unschedulable.reason(),
                    message.clone(),
                    room.meta().generation,
                    &now,
                );
                patch_status(
                    api,
                    &name,
                    json!({
                        "phase": RoomPhase::Pending,
                        "node": null,
                        "signalingUrl": null,
                        "conditions": conditions,
                        "observedGeneration": room.meta().generation,
                    }),
                )
                .await?;
                ctx.event(room, EventType::Warning, "Unschedulable", "Place", message).await;
            }
            Ok(Action::requeue(Duration::from_secs(10)))
        }
    }
}

/// Mark the room Pending with a reason, unless it already says exactly that.
async fn set_pending(room: &Room, api: &Api<Room>, reason: &str, message: String) -> Result<()> {
    let status = room.status.clone().unwrap_or_default();
    let current: Option<&Condition> = status.conditions.iter().find(|c| c.type_ == "Scheduled");
    if current.is_some_and(|c| c.reason == reason) {
        return Ok(());
    }
    let mut conditions = status.conditions.clone();
    set_condition(&mut conditions, "Scheduled", false, reason, message, room.meta().generation, &now_time());
    patch_status(api, &room.name_any(), json!({ "phase": RoomPhase::Pending, "conditions": conditions })).await
}

async fn patch_status(api: &Api<Room>, name: &str, status: serde_json::Value) -> Result<()> {
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({ "status": status }))).await?;
    Ok(())
}

/// Tell the hosting node to close the room. A node that is gone or unready cannot be
/// told, and its rooms are gone with it: deletion must not hang on a dead pod.
async fn cleanup(room: &Room, ctx: &Context) -> Result<Action> {
    let ns = room.namespace().unwrap_or_default();
    let cluster_key = ObjectRef::<MediaCluster>::new(&room.spec.cluster_ref).within(&ns);
    // Whatever happens below, the room is going: placement stops counting it (if its
    // node still has it open, the node's own report counts it until it closes).
    if let Some(state) = ctx.clusters().get_mut(&cluster_key) {
        state.placed.remove(&room.name_any());
    }
    let Some(node) = room.status.as_ref().and_then(|s| s.node.clone()) else {
        return Ok(Action::await_change());
    };
    let target = {
        let clusters = ctx.clusters();
        clusters.get(&cluster_key).and_then(|s| s.nodes.iter().find(|n| n.name == node && n.ready).and_then(|n| n.ip))
    };
    if let Some(ip) = target {
        let note = match ctx.nodes.close_room(NodeAddr { name: &node, ip }, &room.name_any()).await? {
            Closed::Closed => format!("closed on {node}"),
            Closed::NotOpen => format!("{node} did not have it open (nobody joined, or it closed already)"),
        };
        ctx.event(room, EventType::Normal, "Closed", "Close", note).await;
    }
    Ok(Action::await_change())
}
