//! The MediaCluster controller: observe, decide, apply, report.
//!
//! ```text
//!  reconcile(MediaCluster)
//!   ├─ read back generated Secrets (generate once if absent; never rotate)
//!   ├─ get StatefulSet/Deployment, list pods, GET /internal/status on every pod
//!   ├─ autoscale each fleet (decide::autoscale) and step its drain (decide::drain)
//!   ├─ render (render::render) and server-side apply every object
//!   └─ patch status (conditions, replicas, loads, bandwidth, endpoints); requeue at the
//!      poll interval
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::future::join_all;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod, Secret, Service};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use switchyard_api::media_cluster::{Endpoints, ExposureMode, FleetStatus, MediaClusterStatus, ServiceType};
use switchyard_api::quantity::parse_quantity;
use switchyard_api::room::RoomPhase;
use switchyard_api::{MediaCluster, Room};
use tracing::instrument;

use super::{Context, ObservedNode, now_time, set_condition};
use crate::decide::autoscale::{self, PodLoad, Policy, Recommendation, Scale};
use crate::decide::drain::{self, DrainStep, Draining};
use crate::decide::health::{self, PodHealth};
use crate::metrics::FleetGauges;
use crate::nodes::NodeAddr;
use crate::render::config::{human_bandwidth, turn_uris, turn_uris_at};
use crate::render::{self, FIELD_MANAGER, Fleet, Inputs, Names, Object, SecretMaterial};
use crate::{Error, Result};

/// The annotation that makes a ReplicaSet delete the victim first when scaling down.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// An unchanged object set is re-applied this often anyway, to undo hand edits.
///
/// Applying ~16 objects on every poll (10 s) of every cluster would be a steady stream of
/// writes for nothing; so objects are applied when what renders changes, and otherwise
/// only every `REAPPLY_INTERVAL`. A hand edit of an owned object is thus undone within
/// this interval, or at once on the next change of the MediaCluster.
pub const REAPPLY_INTERVAL: Duration = Duration::from_secs(300);

/// Reconcile one MediaCluster (see the module docs).
#[instrument(skip_all, fields(namespace = mc.namespace().unwrap_or_default(), name = mc.name_any()))]
pub async fn reconcile(mc: Arc<MediaCluster>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer("mediacluster");
    let result = reconcile_inner(&mc, &ctx).await;
    ctx.metrics.reconciled("mediacluster", result.as_ref().map_or_else(Error::label, |_| "ok"));
    result
}

/// Retry after an error, sooner or later depending on the error.
pub fn error_policy(_mc: Arc<MediaCluster>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "mediacluster reconcile failed");
    Action::requeue(error.retry_after())
}

/// A pod as the controller sees it.
#[derive(Clone, Debug)]
struct PodObs {
    name: String,
    node: Option<String>,
    ip: Option<IpAddr>,
    ready: bool,
    terminating: bool,
    /// Why its container cannot start, if the kubelet says so.
    problem: Option<String>,
}

/// Waiting reasons that mean a container will not come up by itself.
const STUCK_REASONS: [&str; 7] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Why a pod's node cannot start, from its container status: the kubelet's waiting
/// reason, the restart count, and the last exit code and message (the containers use
/// `terminationMessagePolicy: FallbackToLogsOnError`, so a node that exits with an error
/// leaves its last log line there). `None` while nothing is known to be wrong.
pub(crate) fn pod_problem(p: &Pod) -> Option<String> {
    let cs = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
    let waiting = cs.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref().filter(|r| STUCK_REASONS.contains(r))?;
    let mut out = reason.to_owned();
    if cs.restart_count > 0 {
        out.push_str(&format!(", restarted {} times", cs.restart_count));
    }
    let last_words = |m: &str| m.lines().map(str::trim).rfind(|l| !l.is_empty()).map(str::to_owned);
    match cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
        Some(t) => {
            out.push_str(&format!(", last exit {}", t.exit_code));
            if let Some(m) = t.message.as_deref().and_then(last_words) {
                out.push_str(&format!(": {m}"));
            }
        }
        None => {
            if let Some(m) = waiting.message.as_deref().and_then(last_words) {
                out.push_str(&format!(": {m}"));
            }
        }
    }
    // A condition message is for humans; keep one pod's part short.
    if out.chars().count() > 240 {
        out = out.chars().take(239).chain(['…']).collect();
    }
    Some(out)
}

fn observe_pod(p: &Pod) -> PodObs {
    let status = p.status.as_ref();
    PodObs {
        name: p.name_any(),
        node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
        ip: status.and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok()),
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        terminating: p.metadata.deletion_timestamp.is_some(),
        problem: pod_problem(p),
    }
}

fn random_string(len: usize) -> String {
    switchyard_api::random::token(&mut rand::rng(), len)
}

fn secret_value(s: &Secret, key: &str) -> Option<String> {
    s.data.as_ref()?.get(key).and_then(|b| String::from_utf8(b.0.clone()).ok())
}

/// Read back generated secrets, or generate them the first time. Reading them back on
/// every reconcile is what keeps apply from rotating them.
async fn secret_material(mc: &MediaCluster, names: &Names, secrets: &Api<Secret>) -> Result<SecretMaterial> {
    let turn_secret = match secrets.get_opt(&names.turn_secret()).await? {
        Some(s) => secret_value(&s, "secret").unwrap_or_else(|| random_string(48)),
        None => random_string(48),
    };
    let api_key = if mc.spec.auth.keys_secret_ref.is_some() {
        None
    } else {
        let existing = secrets.get_opt(&names.keys_secret()).await?.and_then(|s| {
            let (k, v) = s.data?.into_iter().next()?;
            Some((k, String::from_utf8(v.0).ok()?))
        });
        Some(existing.unwrap_or_else(|| (format!("API{}", random_string(12)), random_string(40))))
    };
    Ok(SecretMaterial { api_key, turn_secret })
}

/// The autoscaling policy of one fleet, whatever an object stored before the schema
/// refused `min: 0` says: in Gateway mode every call relays through TURN, so TURN never
/// goes below one pod; and an SFU fleet that may run at all keeps one media-node (load
/// comes from participants, and none can join without one). SFU 0/0 stays parked.
fn policy(fleet: Fleet, mc: &MediaCluster) -> Policy {
    let range = match fleet {
        Fleet::Sfu => &mc.spec.sfu.replicas,
        Fleet::Turn => &mc.spec.turn.replicas,
    };
    let floor = u32::from(match fleet {
        Fleet::Sfu => range.max >= 1,
        Fleet::Turn => mc.spec.media.mode == ExposureMode::Gateway,
    });
    let b = &mc.spec.autoscaling;
    let secs = |s: i32| Duration::from_secs(u64::try_from(s).unwrap_or(0));
    Policy {
        min: u32::try_from(range.min).unwrap_or(0).max(floor),
        max: u32::try_from(range.max).unwrap_or(0).max(floor),
        tolerance_percent: u32::try_from(b.tolerance_percent).unwrap_or(0),
        scale_up_window: secs(b.scale_up_stabilization_seconds),
        scale_down_window: secs(b.scale_down_stabilization_seconds),
    }
}

fn to_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Where clients reach a Service from outside: the load balancer address if any.
/// Where clients reach TURN, most specific first: `turn.service.externalAddresses`; the
/// load balancer's address; for NodePort, the nodes running ready turn pods (external IP,
/// else internal) with the Service's node ports (`externalTrafficPolicy: Local` serves
/// only there). `None` means the in-cluster DNS name.
async fn discover_turn_uris(
    mc: &MediaCluster,
    names: &Names,
    services: &Api<Service>,
    turn_pods: &[PodObs],
    client: &kube::Client,
) -> Result<Option<Vec<String>>> {
    let spec = &mc.spec.turn.service;
    if !spec.external_addresses.is_empty() {
        return Ok(Some(turn_uris_at(mc, &spec.external_addresses, |l| Some(l.port))));
    }
    match spec.r#type {
        ServiceType::ClusterIP => Ok(None),
        ServiceType::LoadBalancer => {
            Ok(services.get_opt(&names.turn()).await?.as_ref().and_then(lb_host).map(|h| turn_uris(mc, &h)))
        }
        ServiceType::NodePort => {
            let Some(svc) = services.get_opt(&names.turn()).await? else { return Ok(None) };
            let nodes_api: Api<Node> = Api::all(client.clone());
            let mut hosts = std::collections::BTreeSet::new();
            for name in turn_pods.iter().filter(|p| p.ready && !p.terminating).filter_map(|p| p.node.as_deref()) {
                if let Some(node) = nodes_api.get_opt(name).await?
                    && let Some(ip) = node_address(&node)
                {
                    hosts.insert(ip);
                }
            }
            if hosts.is_empty() {
                return Ok(None);
            }
            let hosts: Vec<String> = hosts.into_iter().collect();
            Ok(Some(turn_uris_at(mc, &hosts, |l| node_port(&svc, l))))
        }
    }
}

/// A Node's ExternalIP, else its InternalIP.
fn node_address(node: &Node) -> Option<String> {
    let addrs = node.status.as_ref()?.addresses.as_ref()?;
    let find = |t: &str| addrs.iter().find(|a| a.type_ == t).map(|a| a.address.clone());
    find("ExternalIP").or_else(|| find("InternalIP"))
}

/// The node port the Service allocated for a listener.
fn node_port(svc: &Service, l: &switchyard_api::media_cluster::TurnListener) -> Option<i32> {
    let proto = if l.protocol == switchyard_api::media_cluster::TurnProtocol::UDP { "UDP" } else { "TCP" };
    svc.spec
        .as_ref()?
        .ports
        .as_ref()?
        .iter()
        .find(|p| p.port == l.port && p.protocol.as_deref() == Some(proto))?
        .node_port
}

fn lb_host(svc: &Service) -> Option<String> {
    let ing = svc.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref()?.first()?;
    ing.hostname.clone().or_else(|| ing.ip.clone())
}

/// A pod's load for drain decisions. A pod whose status could not be read is assumed
/// busy: it is never picked as the emptiest, and a draining pod that stops answering is
/// waited for until its grace deadline instead of being removed with its sessions.
pub(crate) fn known_load(reported: Option<u64>) -> u64 {
    reported.unwrap_or(u64::MAX)
}

/// The outcome of one fleet's autoscaling and drain step.
struct FleetPlan {
    replicas: u32,
    rec: Recommendation,
    step: DrainStep,
}

#[allow(clippy::too_many_arguments)]
fn plan_fleet(
    rec: Recommendation,
    current: u32,
    draining: Option<&Draining>,
    loads: &[PodLoad],
    victim: Option<&PodLoad>,
    now: SystemTime,
) -> FleetPlan {
    let victim_load = draining.and_then(|d| loads.iter().find(|p| p.name == d.pod)).map(|p| p.load);
    let step = drain::next_step(rec.scale, current, draining, victim_load, victim.map(|v| v.name.as_str()), now);
    let replicas = match (&rec.scale, &step) {
        (Scale::Up(n), _) => *n,
        (_, DrainStep::Remove(_)) => current.saturating_sub(1),
        // Scaling down waits for the drain; without a victim (no pods yet) just set it.
        (Scale::Down(n), DrainStep::Idle) => *n,
        _ => current,
    };
    FleetPlan { replicas, rec, step }
}

async fn reconcile_inner(mc: &MediaCluster, ctx: &Context) -> Result<Action> {
    if mc.meta().deletion_timestamp.is_some() {
        // Owner references garbage-collect everything we created; forget our memory of it.
        ctx.clusters().remove(&ObjectRef::from_obj(mc));
        return Ok(Action::await_change());
    }
    let ns = mc.namespace().ok_or_else(|| Error::Invalid { what: "metadata.namespace", message: "missing".into() })?;
    let name = mc.name_any();
    let names = Names::new(&name);
    let key = ObjectRef::from_obj(mc);
    let client = ctx.client.clone();
    let spec = &mc.spec;
    let poll = Duration::from_secs(u64::try_from(spec.autoscaling.poll_interval_seconds).unwrap_or(10).max(1));
    let now = SystemTime::now();
    let instant = Instant::now();

    // A spec that cannot be rendered is reported where its owner looks, not only logged.
    let problems = render::validate(mc);
    if !problems.is_empty() {
        return report_invalid(mc, ctx, &ns, problems.join("; ")).await;
    }

    // Observe.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let material = secret_material(mc, &names, &secrets).await?;
    let sts = Api::<StatefulSet>::namespaced(client.clone(), &ns).get_opt(&names.sfu()).await?;
    let dep = Api::<Deployment>::namespaced(client.clone(), &ns).get_opt(&names.turn()).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let list = |fleet| ListParams::default().labels(&render::selector_string(&name, fleet));
    let sfu_pods: Vec<PodObs> = pods.list(&list(Fleet::Sfu)).await?.items.iter().map(observe_pod).collect();
    let turn_pods: Vec<PodObs> = pods.list(&list(Fleet::Turn)).await?.items.iter().map(observe_pod).collect();
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let turn_uris = discover_turn_uris(mc, &names, &services, &turn_pods, &client).await?;
    let signaling_host = match (&spec.signaling.ingress, spec.signaling.service_type) {
        (None, ServiceType::LoadBalancer) => services.get_opt(&names.signaling()).await?.as_ref().and_then(lb_host),
        _ => None,
    };

    let media_status = join_all(sfu_pods.iter().map(|p| async {
        match p.ip {
            Some(ip) => ctx.nodes.media_status(NodeAddr { name: &p.name, ip }).await.ok(),
            None => None,
        }
    }))
    .await;
    let turn_status = join_all(turn_pods.iter().map(|p| async {
        match p.ip {
            Some(ip) => ctx.nodes.turn_status(NodeAddr { name: &p.name, ip }).await.ok(),
            None => None,
        }
    }))
    .await;

    // Decide.
    let sfu_policy = policy(Fleet::Sfu, mc);
    let turn_policy = policy(Fleet::Turn, mc);
    let sfu_current =
        sts.as_ref().and_then(|s| s.spec.replicas).map_or(sfu_policy.min, |r| u32::try_from(r).unwrap_or(0));
    let turn_current =
        dep.as_ref().and_then(|d| d.spec.replicas).map_or(turn_policy.min, |r| u32::try_from(r).unwrap_or(0));
    let participants: u64 = media_status.iter().flatten().map(|s| s.participants).sum();
    let bandwidth: u64 = turn_status.iter().flatten().map(|s| s.bandwidth_bps).sum();
    let target_bw = match parse_quantity(&spec.turn.target_bandwidth_per_pod.0) {
        Ok(bw) => bw,
        Err(e) => return report_invalid(mc, ctx, &ns, format!("turn.targetBandwidthPerPod: {e}")).await,
    };
    let target_participants = u64::try_from(spec.sfu.capacity.participants).unwrap_or(0);
    let cap = match super::room::capacity(&spec.sfu.capacity) {
        Ok(cap) => cap,
        Err(e) => return report_invalid(mc, ctx, &ns, e.to_string()).await,
    };

    let sfu_loads: Vec<PodLoad> = sfu_pods
        .iter()
        .zip(&media_status)
        .map(|(p, s)| PodLoad {
            name: p.name.clone(),
            load: known_load(s.as_ref().map(|s| s.participants)),
            draining: s.as_ref().is_some_and(|s| s.draining),
        })
        .collect();
    let turn_loads: Vec<PodLoad> = turn_pods
        .iter()
        .zip(&turn_status)
        .map(|(p, s)| PodLoad {
            name: p.name.clone(),
            load: known_load(s.as_ref().map(|s| s.allocations)),
            draining: s.as_ref().is_some_and(|s| s.draining),
        })
        .collect();

    // A pod already being deleted (the last victim, a rollout) is never the next victim:
    // it reports `draining` and no load, and picking it would lower replicas again
    // without draining anyone.
    let candidates = |loads: &[PodLoad], pods: &[PodObs]| -> Vec<PodLoad> {
        loads.iter().zip(pods).filter(|(_, p)| !p.terminating).map(|(l, _)| l.clone()).collect()
    };
    let sfu_candidates = candidates(&sfu_loads, &sfu_pods);
    let turn_candidates = candidates(&turn_loads, &turn_pods);

    let (sfu_plan, turn_plan, health) = {
        let mut clusters = ctx.clusters();
        let state = clusters.entry(key.clone()).or_default();
        let sfu_rec =
            state.sfu_autoscaler.recommend(&sfu_policy, sfu_current, participants, target_participants, instant);
        let turn_rec = state.turn_autoscaler.recommend(&turn_policy, turn_current, bandwidth, target_bw, instant);
        let sfu_plan = plan_fleet(
            sfu_rec,
            sfu_current,
            state.sfu_drain.as_ref(),
            &sfu_loads,
            autoscale::sfu_victim(&sfu_candidates),
            now,
        );
        let turn_plan = plan_fleet(
            turn_rec,
            turn_current,
            state.turn_drain.as_ref(),
            &turn_loads,
            autoscale::turn_victim(&turn_candidates),
            now,
        );
        let grace = |s: i64| Duration::from_secs(u64::try_from(s).unwrap_or(0));
        for (plan, slot, g) in [
            (&sfu_plan, &mut state.sfu_drain, grace(spec.sfu.drain_grace_period_seconds)),
            (&turn_plan, &mut state.turn_drain, grace(spec.turn.drain_grace_period_seconds)),
        ] {
            match &plan.step {
                DrainStep::Start(pod) => *slot = Some(Draining { pod: pod.clone(), deadline: now + g }),
                DrainStep::Remove(_) | DrainStep::Replace(_) => *slot = None,
                DrainStep::Idle | DrainStep::Wait => {}
            }
        }

        // What placement and rescheduling will read.
        let victim = state.sfu_drain.as_ref().map(|d| d.pod.clone());
        state.nodes = sfu_pods
            .iter()
            .zip(&media_status)
            .map(|(p, s)| ObservedNode {
                name: p.name.clone(),
                ip: p.ip,
                ready: p.ready && s.is_some(),
                draining: p.terminating
                    || s.as_ref().is_some_and(|s| s.draining)
                    || victim.as_deref() == Some(p.name.as_str()),
                status: s.clone(),
            })
            .collect();
        // A placement the Room cache now shows is counted from there; one whose Room is
        // gone from the cache was deleted. (Under this lock, so a placement being counted
        // right now sees either the entry or the cache's copy.)
        state.placed.retain(|room, node| {
            ctx.rooms
                .get(&ObjectRef::new(room).within(&ns))
                .is_some_and(|r| r.status.as_ref().and_then(|s| s.node.as_deref()) != Some(node.as_str()))
        });
        let since = std::mem::take(&mut state.unready_since);
        state.unready_since = state
            .nodes
            .iter()
            .filter(|n| !n.ready)
            .map(|n| (n.name.clone(), since.get(&n.name).copied().unwrap_or(now)))
            .collect();
        state.observed = true;

        // Health: which pods serve, and whether a media-node has room for one more room.
        let counts = super::room::rooms_per_node(ctx, state, &ns, &name, "");
        let loads = super::room::node_loads(state, &counts);
        let sfu = state
            .nodes
            .iter()
            .zip(&loads)
            .zip(&sfu_pods)
            .map(|((n, load), p)| PodHealth {
                name: n.name.clone(),
                ready: p.ready,
                answered: n.status.is_some(),
                draining: n.draining,
                full: load.is_full(&cap),
                problem: p.problem.clone(),
            })
            .collect();
        let turn = turn_pods
            .iter()
            .zip(&turn_status)
            .map(|(p, s)| PodHealth {
                name: p.name.clone(),
                ready: p.ready,
                answered: s.is_some(),
                draining: p.terminating || s.as_ref().is_some_and(|s| s.draining),
                full: false,
                problem: p.problem.clone(),
            })
            .collect();
        let health = health::Facts {
            sfu,
            turn,
            sfu_max: spec.sfu.replicas.max,
            gateway: spec.media.mode == ExposureMode::Gateway,
            below_min: false,
        };
        (sfu_plan, turn_plan, health)
    };

    // Act on drains before applying replicas: the victim must be draining (and, for the
    // Deployment, the cheapest to delete) before a lower replica count can pick it.
    act_on_drain(mc, ctx, &pods, Fleet::Sfu, &sfu_plan.step, &sfu_pods).await?;
    act_on_drain(mc, ctx, &pods, Fleet::Turn, &turn_plan.step, &turn_pods).await?;
    for (fleet, plan, current, exists) in
        [(Fleet::Sfu, &sfu_plan, sfu_current, sts.is_some()), (Fleet::Turn, &turn_plan, turn_current, dep.is_some())]
    {
        // A new workload starting at replicas.min is not a scaling decision.
        if let Scale::Up(n) = plan.rec.scale
            && exists
        {
            let note = format!("{}: {current} → {n} replicas (load wants {})", fleet.component(), plan.rec.raw);
            ctx.event(mc, EventType::Normal, "ScalingUp", "Scale", note).await;
        }
    }

    // Apply.
    let sfu_ips: Vec<String> = sfu_pods.iter().filter_map(|p| p.ip.map(|ip| ip.to_string())).collect();
    let inputs = Inputs {
        secrets: &material,
        sfu_replicas: to_i32(sfu_plan.replicas),
        turn_replicas: to_i32(turn_plan.replicas),
        sfu_pod_ips: &sfu_ips,
        turn_uris: turn_uris.as_deref(),
        service_monitor_crd: ctx.service_monitor_crd,
        images: &ctx.images,
    };
    let objects = match render::render(mc, &inputs) {
        Ok(objects) => objects,
        Err(e @ Error::Invalid { .. }) => return report_invalid(mc, ctx, &ns, e.to_string()).await,
        Err(e) => return Err(e),
    };
    let hash = render::fnv1a(
        serde_json::to_string(&objects.iter().map(|o| &o.body).collect::<Vec<_>>())
            .map_err(|source| Error::Serialize { kind: "objects", source })?
            .as_bytes(),
    );
    let stale = ctx
        .clusters()
        .get(&key)
        .and_then(|s| s.last_applied.clone())
        .is_none_or(|(h, at)| h != hash || instant.saturating_duration_since(at) >= REAPPLY_INTERVAL);
    if stale {
        for object in &objects {
            match apply(ctx, &ns, object).await {
                Ok(()) => {}
                // The apiserver refuses the object as rendered from this spec: retrying
                // will not help, its owner has to change something.
                Err(Error::Kube(kube::Error::Api(e))) if e.code == 422 || e.code == 400 => {
                    let message = format!("the apiserver refused {} {}: {}", object.kind, object.name, e.message);
                    return report_invalid(mc, ctx, &ns, message).await;
                }
                Err(e) => return Err(e),
            }
        }
        prune(ctx, &ns, mc, &names, &objects).await?;
        if let Some(state) = ctx.clusters().get_mut(&key) {
            state.last_applied = Some((hash, instant));
        }
    }

    // Report.
    let status = status(
        mc,
        &names,
        &ns,
        &sts,
        &dep,
        (&sfu_plan, &turn_plan),
        &sfu_pods,
        &media_status,
        bandwidth,
        health,
        turn_uris.as_deref(),
        signaling_host.as_deref(),
        ctx,
    );
    // Conditions keep their transition times, so an unchanged fleet yields an equal status.
    if mc.status.as_ref() != Some(&status) {
        let patch = json!({ "apiVersion": "switchyard.dev/v1alpha1", "kind": "MediaCluster", "status": status });
        Api::<MediaCluster>::namespaced(client, &ns)
            .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await?;
    }

    for (fleet, plan, current, policy) in
        [("sfu", &sfu_plan, sfu_current, &sfu_policy), ("turn", &turn_plan, turn_current, &turn_policy)]
    {
        let gauges =
            FleetGauges { desired: plan.rec.desired, current, wanted: plan.rec.raw, min: policy.min, max: policy.max };
        ctx.metrics.fleet(&ns, &name, fleet, gauges);
    }
    ctx.metrics.turn_bandwidth(&ns, &name, bandwidth);
    ctx.metrics.set_rooms(&room_phase_counts(&ctx.rooms.state()));
    Ok(Action::requeue(poll))
}

/// The spec cannot be rendered as written: `Ready=False` and `Degraded=True` with reason
/// `InvalidSpec` and `message` (what to change), a Warning Event saying the same, and an
/// `invalid` error (counted, retried slowly; a spec change reconciles at once).
async fn report_invalid(mc: &MediaCluster, ctx: &Context, ns: &str, message: String) -> Result<Action> {
    let now = now_time();
    let generation = mc.metadata.generation;
    let mut status = mc.status.clone().unwrap_or_default();
    set_condition(&mut status.conditions, "Ready", false, "InvalidSpec", message.clone(), generation, &now);
    set_condition(&mut status.conditions, "Degraded", true, "InvalidSpec", message.clone(), generation, &now);
    status.observed_generation = generation;
    if mc.status.as_ref() != Some(&status) {
        let patch = json!({ "apiVersion": "switchyard.dev/v1alpha1", "kind": "MediaCluster", "status": status });
        Api::<MediaCluster>::namespaced(ctx.client.clone(), ns)
            .patch_status(&mc.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await?;
    }
    ctx.event(mc, EventType::Warning, "InvalidSpec", "Reconcile", message.clone()).await;
    Err(Error::Invalid { what: "spec", message })
}

fn room_phase_counts(rooms: &[Arc<Room>]) -> Vec<(&'static str, i64)> {
    let mut counts: BTreeMap<&'static str, i64> =
        ["Pending", "Scheduled", "Active", "Closed", "Failed"].into_iter().map(|p| (p, 0)).collect();
    for r in rooms {
        let phase = match r.status.as_ref().map(|s| s.phase).unwrap_or_default() {
            RoomPhase::Pending => "Pending",
            RoomPhase::Scheduled => "Scheduled",
            RoomPhase::Active => "Active",
            RoomPhase::Closed => "Closed",
            RoomPhase::Failed => "Failed",
        };
        *counts.entry(phase).or_default() += 1;
    }
    counts.into_iter().collect()
}

async fn act_on_drain(
    mc: &MediaCluster,
    ctx: &Context,
    pods: &Api<Pod>,
    fleet: Fleet,
    step: &DrainStep,
    observed: &[PodObs],
) -> Result<()> {
    match step {
        DrainStep::Start(victim) => {
            if fleet == Fleet::Turn {
                // A StatefulSet always removes its highest ordinal (which is the SFU
                // victim); a ReplicaSet removes the lowest deletion cost first.
                let patch = json!({ "metadata": { "annotations": { POD_DELETION_COST: "-1000" } } });
                pods.patch(victim, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            }
            if let Some(ip) = observed.iter().find(|p| &p.name == victim).and_then(|p| p.ip) {
                ctx.nodes.drain(NodeAddr { name: victim, ip }).await?;
            }
            let note = format!("draining {victim} before removing it");
            ctx.event(mc, EventType::Normal, "Draining", "ScaleDown", note).await;
        }
        DrainStep::Remove(victim) => {
            let note = format!("{victim} drained; removing it");
            ctx.event(mc, EventType::Normal, "ScaledDown", "ScaleDown", note).await;
        }
        DrainStep::Replace(victim) => {
            pods.delete(victim, &DeleteParams::default()).await?;
            let note = format!("{victim} drained but load came back; replacing it with a fresh pod");
            ctx.event(mc, EventType::Normal, "DrainCancelled", "ScaleDown", note).await;
        }
        DrainStep::Idle | DrainStep::Wait => {}
    }
    Ok(())
}

fn dynamic_api(ctx: &Context, ns: &str, object: &Object) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: object.group().into(),
        version: object.version().into(),
        api_version: object.api_version.into(),
        kind: object.kind.into(),
        plural: object.plural.into(),
    };
    Api::namespaced_with(ctx.client.clone(), ns, &ar)
}

/// Delete optional objects that are no longer rendered (mode switched to Direct, Ingress
/// removed, monitoring turned off), but only ones this cluster owns: a same-named object
/// someone else made is not ours to remove.
async fn prune(ctx: &Context, ns: &str, mc: &MediaCluster, names: &Names, rendered: &[Object]) -> Result<()> {
    let uid = mc.metadata.uid.as_deref();
    for stub in render::optional_objects(names) {
        if rendered.iter().any(|o| o.kind == stub.kind && o.name == stub.name) {
            continue;
        }
        let api = dynamic_api(ctx, ns, &stub);
        // An API group that does not exist here (no Prometheus Operator) answers 404 with a
        // plain-text body, which is an error rather than `None`: absent all the same.
        let existing = match api.get_opt(&stub.name).await {
            Ok(Some(existing)) => existing,
            Ok(None) => continue,
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(e.into()),
        };
        let owned = existing
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| Some(r.uid.as_str()) == uid && r.controller == Some(true));
        if owned {
            api.delete(&stub.name, &DeleteParams::default()).await?;
            tracing::info!(kind = stub.kind, name = %stub.name, "pruned an object the cluster no longer needs");
        }
    }
    Ok(())
}

/// Server-side apply one rendered object with the operator's field manager. `force`
/// takes fields back from anyone who edited them by hand: the MediaCluster is the
/// source of truth.
async fn apply(ctx: &Context, ns: &str, object: &Object) -> Result<()> {
    let api = dynamic_api(ctx, ns, object);
    api.patch(&object.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&object.body)).await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn status(
    mc: &MediaCluster,
    names: &Names,
    ns: &str,
    sts: &Option<StatefulSet>,
    dep: &Option<Deployment>,
    (sfu, turn): (&FleetPlan, &FleetPlan),
    sfu_pods: &[PodObs],
    media_status: &[Option<switchyard_api::node::MediaNodeStatus>],
    bandwidth: u64,
    mut health: health::Facts,
    turn_uris: Option<&[String]>,
    signaling_host: Option<&str>,
    ctx: &Context,
) -> MediaClusterStatus {
    let spec = &mc.spec;
    let now = now_time();
    let generation = mc.metadata.generation;
    let sts_status = sts.as_ref().and_then(|s| s.status.as_ref());
    let dep_status = dep.as_ref().and_then(|d| d.status.as_ref());
    let (sfu_draining, turn_draining) = {
        let clusters = ctx.clusters();
        let state = clusters.get(&ObjectRef::from_obj(mc));
        (
            i32::from(state.is_some_and(|s| s.sfu_drain.is_some())),
            i32::from(state.is_some_and(|s| s.turn_drain.is_some())),
        )
    };
    let sfu_fleet = FleetStatus {
        desired: to_i32(sfu.replicas),
        current: sts_status.map_or(0, |s| s.replicas),
        ready: sts_status.and_then(|s| s.ready_replicas).unwrap_or(0),
        draining: sfu_draining,
    };
    let turn_fleet = FleetStatus {
        desired: to_i32(turn.replicas),
        current: dep_status.and_then(|s| s.replicas).unwrap_or(0),
        ready: dep_status.and_then(|s| s.ready_replicas).unwrap_or(0),
        draining: turn_draining,
    };

    let mut conditions = mc.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    health.below_min = sts.is_some()
        && (sfu_fleet.ready < spec.sfu.replicas.min.min(sfu_fleet.desired)
            || turn_fleet.ready < spec.turn.replicas.min.min(turn_fleet.desired));
    let ready = health::ready(&health);
    set_condition(&mut conditions, "Ready", ready.status, ready.reason, ready.message, generation, &now);
    let all_ready = sfu_fleet.ready >= sfu_fleet.desired && turn_fleet.ready >= turn_fleet.desired;
    let (progressing, reason, msg) = if sfu_draining + turn_draining > 0 {
        (true, "Draining", "a pod is draining before it is removed".to_owned())
    } else if sfu_fleet.current != sfu_fleet.desired || turn_fleet.current != turn_fleet.desired || !all_ready {
        let msg = format!(
            "media-node {}/{} ready, turn-node {}/{} ready",
            sfu_fleet.ready, sfu_fleet.desired, turn_fleet.ready, turn_fleet.desired
        );
        (true, "Scaling", msg)
    } else {
        (false, "Stable", "every fleet is at its desired size".to_owned())
    };
    set_condition(&mut conditions, "Progressing", progressing, reason, msg, generation, &now);
    let degraded = health::degraded(&health);
    set_condition(&mut conditions, "Degraded", degraded.status, degraded.reason, degraded.message, generation, &now);

    let nodes: Vec<switchyard_api::media_cluster::NodeLoad> = sfu_pods
        .iter()
        .zip(media_status)
        .map(|(p, s)| switchyard_api::media_cluster::NodeLoad {
            name: p.name.clone(),
            rooms: s.as_ref().map_or(0, |s| i64::try_from(s.rooms).unwrap_or(i64::MAX)),
            participants: s.as_ref().map_or(0, |s| i64::try_from(s.participants).unwrap_or(i64::MAX)),
            bandwidth_bps: s.as_ref().map_or(0, |s| i64::try_from(s.bandwidth_bps).unwrap_or(i64::MAX)),
            ready: p.ready && s.is_some(),
            draining: s.as_ref().is_some_and(|s| s.draining),
        })
        .collect();
    let rooms = nodes.iter().map(|n| n.rooms).sum();

    let signaling_url = match (&spec.signaling.ingress, signaling_host) {
        (Some(ing), _) => {
            let scheme = if ing.tls_secret_ref.is_some() { "wss" } else { "ws" };
            format!("{scheme}://{}/rtc", ing.host)
        }
        (None, Some(host)) => format!("ws://{host}:{}/rtc", spec.signaling.port),
        (None, None) => format!("ws://{}.{ns}.svc:{}/rtc", names.signaling(), spec.signaling.port),
    };
    let turn_uris = match turn_uris {
        Some(uris) => uris.to_vec(),
        None => crate::render::config::turn_uris(mc, &format!("{}.{ns}.svc", names.turn())),
    };
    let turn_enabled = spec.turn.replicas.max > 0 || spec.media.mode == ExposureMode::Gateway;

    MediaClusterStatus {
        conditions,
        observed_generation: generation,
        sfu: Some(sfu_fleet),
        turn: Some(turn_fleet),
        rooms: Some(rooms),
        turn_bandwidth_bps: Some(i64::try_from(bandwidth).unwrap_or(i64::MAX)),
        turn_bandwidth: Some(human_bandwidth(bandwidth)),
        nodes,
        endpoints: Some(Endpoints {
            signaling_url: Some(signaling_url),
            turn_uris: if turn_enabled { turn_uris } else { Vec::new() },
        }),
    }
}
