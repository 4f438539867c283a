//! Reconciles against a mocked apiserver: the exact requests, in order.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};
use switchyard_api::node::{MediaNodeStatus, TurnNodeStatus};
use switchyard_api::{MediaCluster, Room};

use super::testing::{FakeNodes, Seen, context, echo, finish, list};
use super::{ObservedNode, media_cluster, room};

fn cluster(spec: Value) -> MediaCluster {
    let mut mc = MediaCluster::new("edge", serde_json::from_value(spec).unwrap());
    mc.metadata.namespace = Some("media".into());
    mc.metadata.uid = Some("6f1c9a52-0000-4000-8000-000000000001".into());
    mc.metadata.generation = Some(3);
    mc
}

const MC: &str = "/apis/switchyard.dev/v1alpha1/namespaces/media/mediaclusters/edge";

fn assert_apply(s: &Seen) {
    assert_eq!(s.method, "PATCH", "{}", s.line());
    assert_eq!(s.content_type, "application/apply-patch+yaml", "{}", s.line());
    assert!(s.query.contains("fieldManager=switchyard-operator"), "{} ?{}", s.line(), s.query);
    assert!(s.query.contains("force=true"), "{} ?{}", s.line(), s.query);
}

#[tokio::test]
async fn a_new_media_cluster_applies_every_object_then_its_status() {
    let nodes = Arc::new(FakeNodes::default());
    let (ctx, server) = context(echo, nodes, &[], &[]);
    let action = media_cluster::reconcile(Arc::new(cluster(json!({}))), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(10)));
    let seen = finish(ctx, server).await;
    let lines: Vec<String> = seen.iter().map(Seen::line).collect();
    let sel = "labelSelector=app.kubernetes.io%2Fcomponent%3D";
    assert_eq!(
        lines,
        vec![
            // Observe.
            "GET /api/v1/namespaces/media/secrets/edge-turn-secret",
            "GET /api/v1/namespaces/media/secrets/edge-keys",
            "GET /apis/apps/v1/namespaces/media/statefulsets/edge-sfu",
            "GET /apis/apps/v1/namespaces/media/deployments/edge-turn",
            "GET /api/v1/namespaces/media/pods",
            "GET /api/v1/namespaces/media/pods",
            "GET /api/v1/namespaces/media/services/edge-turn",
            // Apply, in render order.
            "PATCH /api/v1/namespaces/media/secrets/edge-keys",
            "PATCH /api/v1/namespaces/media/secrets/edge-turn-secret",
            "PATCH /api/v1/namespaces/media/configmaps/edge-sfu-config",
            "PATCH /api/v1/namespaces/media/serviceaccounts/edge-media-node",
            "PATCH /apis/rbac.authorization.k8s.io/v1/namespaces/media/roles/edge-media-node",
            "PATCH /apis/rbac.authorization.k8s.io/v1/namespaces/media/rolebindings/edge-media-node",
            "PATCH /api/v1/namespaces/media/services/edge-sfu",
            "PATCH /api/v1/namespaces/media/services/edge-signaling",
            "PATCH /apis/apps/v1/namespaces/media/statefulsets/edge-sfu",
            "PATCH /apis/policy/v1/namespaces/media/poddisruptionbudgets/edge-sfu",
            "PATCH /api/v1/namespaces/media/configmaps/edge-turn-config",
            "PATCH /api/v1/namespaces/media/services/edge-turn",
            "PATCH /api/v1/namespaces/media/services/edge-turn-admin",
            "PATCH /apis/apps/v1/namespaces/media/deployments/edge-turn",
            "PATCH /apis/policy/v1/namespaces/media/poddisruptionbudgets/edge-turn",
            "PATCH /apis/networking.k8s.io/v1/namespaces/media/networkpolicies/edge-turn-egress",
            // Prune: look for optional objects that are no longer rendered.
            "GET /apis/networking.k8s.io/v1/namespaces/media/ingresses/edge-signaling",
            "GET /apis/monitoring.coreos.com/v1/namespaces/media/servicemonitors/edge-sfu",
            "GET /apis/monitoring.coreos.com/v1/namespaces/media/servicemonitors/edge-turn",
            // Report.
            &format!("PATCH {MC}/status"),
        ]
    );
    assert!(seen[4].query.contains(&format!("{sel}sfu")), "{}", seen[4].query);
    assert!(seen[5].query.contains(&format!("{sel}turn")), "{}", seen[5].query);
    for s in seen[7..23].iter().chain(seen.last()) {
        assert_apply(s);
    }

    // Secrets were generated (a key pair and the TURN secret), base64 in `data`.
    let keys = &seen[7].body["data"];
    let (key, secret) = keys.as_object().unwrap().iter().next().unwrap();
    assert!(key.starts_with("API") && key.len() == 15, "{key}");
    assert!(secret.as_str().unwrap().len() >= 40);
    assert!(seen[8].body["data"]["secret"].as_str().unwrap().len() >= 48);
    // A new cluster starts at replicas.min.
    assert_eq!(seen[15].body["spec"]["replicas"], 1);
    assert_eq!(seen[20].body["spec"]["replicas"], 1);

    let status = &seen.last().unwrap().body;
    assert_eq!(status["apiVersion"], "switchyard.dev/v1alpha1");
    assert_eq!(status["kind"], "MediaCluster");
    let status = &status["status"];
    assert_eq!(status["observedGeneration"], 3);
    assert_eq!(status["sfu"], json!({"desired": 1, "current": 0, "ready": 0, "draining": 0}));
    assert_eq!(status["turn"], json!({"desired": 1, "current": 0, "ready": 0, "draining": 0}));
    assert_eq!(status["turnBandwidthBps"], 0);
    assert_eq!(status["endpoints"]["signalingUrl"], "ws://edge-signaling.media.svc:7880/rtc");
    assert_eq!(
        status["endpoints"]["turnUris"],
        json!(["turn:edge-turn.media.svc:3478?transport=udp", "turn:edge-turn.media.svc:3478?transport=tcp"])
    );
    let cond = |t: &str| status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == t).unwrap().clone();
    assert_eq!(
        (cond("Ready")["status"].clone(), cond("Ready")["reason"].clone()),
        (json!("False"), json!("NoReadyMediaNode"))
    );
    assert_eq!(cond("Ready")["message"], "no media-node pod exists yet");
    assert_eq!(cond("Progressing")["message"], "media-node 0/1 ready, turn-node 0/1 ready");
    assert_eq!(cond("Ready")["observedGeneration"], 3);
    assert_eq!(cond("Progressing")["reason"], "Scaling");
    assert_eq!(cond("Degraded")["status"], "False");
}

#[tokio::test]
async fn generated_secrets_are_read_back_never_rotated() {
    let nodes = Arc::new(FakeNodes::default());
    let respond = |s: &Seen| match s.line().as_str() {
        "GET /api/v1/namespaces/media/secrets/edge-turn-secret" => (
            200,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "edge-turn-secret"}, "data": {"secret": "a2VlcC1tZQ=="}}),
        ),
        "GET /api/v1/namespaces/media/secrets/edge-keys" => (
            200,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "edge-keys"}, "data": {"APIold": "b2xkLXNlY3JldA=="}}),
        ),
        _ => echo(s),
    };
    let (ctx, server) = context(respond, nodes, &[], &[]);
    media_cluster::reconcile(Arc::new(cluster(json!({}))), ctx.clone()).await.unwrap();
    let seen = finish(ctx, server).await;
    let applied =
        |path: &str| seen.iter().find(|s| s.method == "PATCH" && s.path.ends_with(path)).unwrap().body.clone();
    assert_eq!(applied("secrets/edge-turn-secret")["data"], json!({"secret": "a2VlcC1tZQ=="}));
    assert_eq!(applied("secrets/edge-keys")["data"], json!({"APIold": "b2xkLXNlY3JldA=="}));
}

fn pod(name: &str, ip: &str, component: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "media", "labels": {"app.kubernetes.io/component": component}},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    })
}

#[tokio::test]
async fn turn_scale_down_drains_the_emptiest_pod_first_then_removes_it() {
    let nodes = Arc::new(FakeNodes::default());
    nodes.turn.lock().unwrap().extend([
        ("edge-turn-a".to_owned(), TurnNodeStatus { bandwidth_bps: 10_000_000, allocations: 9, ..Default::default() }),
        ("edge-turn-b".to_owned(), TurnNodeStatus { bandwidth_bps: 1_000_000, allocations: 2, ..Default::default() }),
    ]);
    let respond = |s: &Seen| match s.line().as_str() {
        "GET /apis/apps/v1/namespaces/media/deployments/edge-turn" => (
            200,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "edge-turn"},
                "spec": {"replicas": 2, "selector": {}, "template": {}},
                "status": {"replicas": 2, "readyReplicas": 2},
            }),
        ),
        "GET /api/v1/namespaces/media/pods" if s.query.contains("turn") => {
            list("PodList", vec![pod("edge-turn-a", "10.244.0.10", "turn"), pod("edge-turn-b", "10.244.0.11", "turn")])
        }
        "GET /api/v1/namespaces/media/pods" => list("PodList", vec![]),
        // The secrets exist (an apiserver would have kept the first apply's).
        "GET /api/v1/namespaces/media/secrets/edge-turn-secret" => (
            200,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "edge-turn-secret"}, "data": {"secret": "dA=="}}),
        ),
        "GET /api/v1/namespaces/media/secrets/edge-keys" => (
            200,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "edge-keys"}, "data": {"APIk": "cw=="}}),
        ),
        _ => echo(s),
    };
    let mc = Arc::new(cluster(json!({
        "turn": {"replicas": {"min": 1, "max": 4}},
        "autoscaling": {"scaleDownStabilizationSeconds": 0},
    })));
    let (ctx, server) = context(respond, nodes.clone(), &[], &[]);

    // 11M over 2 pods at 200M each: one pod is plenty. The victim has fewer allocations.
    media_cluster::reconcile(mc.clone(), ctx.clone()).await.unwrap();
    assert_eq!(nodes.calls(), vec!["drain edge-turn-b 10.244.0.11"]);

    // Still 2 allocations: keep waiting.
    media_cluster::reconcile(mc.clone(), ctx.clone()).await.unwrap();
    assert_eq!(nodes.calls().len(), 1, "one drain, not one per poll");

    // Empty now: the replica goes.
    nodes.turn.lock().unwrap().get_mut("edge-turn-b").unwrap().allocations = 0;
    media_cluster::reconcile(mc.clone(), ctx.clone()).await.unwrap();
    let seen = finish(ctx, server).await;

    let deletion_cost: Vec<&Seen> =
        seen.iter().filter(|s| s.line() == "PATCH /api/v1/namespaces/media/pods/edge-turn-b").collect();
    assert_eq!(deletion_cost.len(), 1);
    assert_eq!(deletion_cost[0].content_type, "application/merge-patch+json");
    assert_eq!(deletion_cost[0].body["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"], "-1000");
    let replicas: Vec<Value> = seen
        .iter()
        .filter(|s| s.line() == "PATCH /apis/apps/v1/namespaces/media/deployments/edge-turn")
        .map(|s| s.body["spec"]["replicas"].clone())
        .collect();
    // The waiting poll renders the same objects and applies nothing; replicas drop only
    // after the drain.
    assert_eq!(replicas, vec![json!(2), json!(1)]);
    let applies = seen
        .iter()
        .filter(|s| s.content_type == "application/apply-patch+yaml" && !s.path.ends_with("/status"))
        .count();
    assert_eq!(applies, 2 * 16, "two applies of the 16 objects, none for the unchanged poll");
    let prune_lookups = seen.iter().filter(|s| s.method == "GET" && s.path.contains("servicemonitors")).count();
    assert_eq!(prune_lookups, 2 * 2, "prune looks only when it applies");
    let reasons: Vec<Value> = seen
        .iter()
        .filter(|s| s.method == "POST" && s.path.ends_with("/events"))
        .map(|s| s.body["reason"].clone())
        .collect();
    assert_eq!(reasons, vec![json!("Draining"), json!("ScaledDown")]);
    let statuses: Vec<&Value> =
        seen.iter().filter(|s| s.path.ends_with("/status")).map(|s| &s.body["status"]).collect();
    assert_eq!(statuses[0]["turn"]["draining"], 1);
    assert_eq!(statuses[0]["turnBandwidth"], "11M");
    assert_eq!(statuses[2]["turn"]["draining"], 0);
}

fn room(name: &str, finalizer: bool, status: Value) -> Room {
    let mut r = Room::new(name, serde_json::from_value(json!({"clusterRef": "edge"})).unwrap());
    r.metadata.namespace = Some("media".into());
    r.metadata.generation = Some(1);
    r.metadata.uid = Some(format!("uid-{name}"));
    if finalizer {
        r.metadata.finalizers = Some(vec![room::FINALIZER.into()]);
    }
    r.status = serde_json::from_value(status).unwrap();
    r
}

fn observed(name: &str, ip: &str, ready: bool, draining: bool, rooms: u64) -> ObservedNode {
    ObservedNode {
        name: name.into(),
        ip: Some(ip.parse().unwrap()),
        ready,
        draining,
        status: Some(MediaNodeStatus { rooms, ..Default::default() }),
    }
}

#[tokio::test]
async fn a_room_is_placed_on_the_only_eligible_node() {
    let mc = cluster(json!({"sfu": {"capacity": {"rooms": 10}}}));
    let (ctx, server) = context(echo, Arc::new(FakeNodes::default()), std::slice::from_ref(&mc), &[]);
    ctx.set_observed_nodes(
        ObjectRef::from_obj(&mc),
        vec![
            observed("edge-sfu-0", "10.244.0.5", true, true, 0),   // draining
            observed("edge-sfu-1", "10.244.0.6", false, false, 0), // unready
            observed("edge-sfu-2", "10.244.0.7", true, false, 10), // full
            observed("edge-sfu-3", "10.244.0.8", true, false, 9),
        ],
    );
    let r = room("standup", true, Value::Null);
    let action = room::reconcile(Arc::new(r), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    let seen = finish(ctx, server).await;
    let lines: Vec<String> = seen.iter().map(Seen::line).collect();
    assert_eq!(
        lines,
        vec![
            "PATCH /apis/switchyard.dev/v1alpha1/namespaces/media/rooms/standup/status",
            "POST /apis/events.k8s.io/v1/namespaces/media/events",
        ]
    );
    assert_eq!(seen[0].content_type, "application/merge-patch+json");
    let status = &seen[0].body["status"];
    assert_eq!(status["phase"], "Scheduled");
    assert_eq!(status["node"], "edge-sfu-3");
    assert_eq!(status["signalingUrl"], "ws://edge-sfu-3.edge-sfu.media.svc:7880/rtc");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["conditions"][0]["type"], "Scheduled");
    assert_eq!(status["conditions"][0]["status"], "True");
    assert_eq!(status["conditions"][0]["message"], "placed on edge-sfu-3");
    assert_eq!(seen[1].body["reason"], "Scheduled");
    assert_eq!(seen[1].body["regarding"]["name"], "standup");
}

#[tokio::test]
async fn an_unplaceable_room_says_why() {
    let mc = cluster(json!({"sfu": {"capacity": {"rooms": 1}}}));
    let (ctx, server) = context(echo, Arc::new(FakeNodes::default()), std::slice::from_ref(&mc), &[]);
    ctx.set_observed_nodes(ObjectRef::from_obj(&mc), vec![observed("edge-sfu-0", "10.244.0.5", true, false, 1)]);
    let action = room::reconcile(Arc::new(room("standup", true, Value::Null)), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(10)));
    let seen = finish(ctx, server).await;
    let status = &seen[0].body["status"];
    assert_eq!(status["phase"], "Pending");
    assert_eq!(status["conditions"][0]["reason"], "NoCapacity");
    assert_eq!(
        status["conditions"][0]["message"],
        "unschedulable: no media-node can take the room (0 unready, 0 draining, 1 full)"
    );
    assert_eq!(seen[1].body["type"], "Warning");
    assert_eq!(seen[1].body["reason"], "Unschedulable");
}

#[tokio::test]
async fn a_new_room_gets_the_finalizer_first() {
    let mc = cluster(json!({}));
    let (ctx, server) = context(echo, Arc::new(FakeNodes::default()), &[mc], &[]);
    room::reconcile(Arc::new(room("standup", false, Value::Null)), ctx.clone()).await.unwrap();
    let seen = finish(ctx, server).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].line(), "PATCH /apis/switchyard.dev/v1alpha1/namespaces/media/rooms/standup");
    assert_eq!(seen[0].content_type, "application/json-patch+json");
    assert!(seen[0].body.to_string().contains(room::FINALIZER), "{}", seen[0].body);
}

#[tokio::test]
async fn deleting_a_room_closes_it_on_its_node_then_drops_the_finalizer() {
    let mc = cluster(json!({}));
    let nodes = Arc::new(FakeNodes::default());
    let (ctx, server) = context(echo, nodes.clone(), std::slice::from_ref(&mc), &[]);
    ctx.set_observed_nodes(ObjectRef::from_obj(&mc), vec![observed("edge-sfu-1", "10.244.0.6", true, false, 1)]);
    let mut r = room("standup", true, json!({"phase": "Active", "node": "edge-sfu-1"}));
    r.metadata.deletion_timestamp = Some(super::now_time());
    room::reconcile(Arc::new(r), ctx.clone()).await.unwrap();
    let seen = finish(ctx, server).await;
    assert_eq!(nodes.calls(), vec!["close standup on edge-sfu-1 10.244.0.6"]);
    let patch = seen.iter().find(|s| s.method == "PATCH").unwrap();
    assert_eq!(patch.line(), "PATCH /apis/switchyard.dev/v1alpha1/namespaces/media/rooms/standup");
    assert_eq!(patch.content_type, "application/json-patch+json");
    assert!(patch.body.to_string().contains("remove"), "{}", patch.body);
}

#[tokio::test]
async fn a_room_on_a_vanished_node_is_moved() {
    let mc = cluster(json!({}));
    let (ctx, server) = context(echo, Arc::new(FakeNodes::default()), std::slice::from_ref(&mc), &[]);
    ctx.set_observed_nodes(ObjectRef::from_obj(&mc), vec![observed("edge-sfu-0", "10.244.0.5", true, false, 0)]);
    let r = room("standup", true, json!({"phase": "Active", "node": "edge-sfu-4"}));
    room::reconcile(Arc::new(r), ctx.clone()).await.unwrap();
    let seen = finish(ctx, server).await;
    assert_eq!(seen[0].body["status"]["node"], "edge-sfu-0");
    assert_eq!(seen[0].body["status"]["conditions"][0]["message"], "moved to edge-sfu-0 (NodeGone)");
    assert_eq!(seen[1].body["reason"], "Rescheduled");
}

#[tokio::test]
async fn an_expired_auto_created_room_is_deleted() {
    let mc = cluster(json!({"roomDefaults": {"emptyTimeoutSeconds": 60}}));
    let (ctx, server) = context(echo, Arc::new(FakeNodes::default()), std::slice::from_ref(&mc), &[]);
    ctx.set_observed_nodes(ObjectRef::from_obj(&mc), vec![observed("edge-sfu-0", "10.244.0.5", true, false, 1)]);
    let mut r = room(
        "lobby",
        true,
        json!({"phase": "Active", "node": "edge-sfu-0", "participants": 0, "emptySince": "2020-01-01T00:00:00Z", "startedAt": "2020-01-01T00:00:00Z"}),
    );
    r.metadata.labels = Some([(switchyard_api::room::AUTO_CREATED_LABEL.to_owned(), "true".to_owned())].into());
    room::reconcile(Arc::new(r.clone()), ctx.clone()).await.unwrap();
    // The same room without the label is someone's on purpose: kept.
    r.metadata.labels = None;
    let action = room::reconcile(Arc::new(r), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(10)));
    let seen = finish(ctx, server).await;
    let lines: Vec<String> = seen.iter().map(Seen::line).collect();
    assert_eq!(
        lines,
        vec![
            "POST /apis/events.k8s.io/v1/namespaces/media/events",
            "DELETE /apis/switchyard.dev/v1alpha1/namespaces/media/rooms/lobby",
        ]
    );
    assert_eq!(seen[0].body["reason"], "Expired");
}

#[tokio::test]
async fn a_room_of_a_missing_cluster_is_pending_with_a_reason() {
    let (ctx, server) = context(echo, Arc::new(FakeNodes::default()), &[], &[]);
    let err = room::reconcile(Arc::new(room("standup", true, Value::Null)), ctx.clone()).await.unwrap_err();
    assert_eq!(err.label(), "cluster_not_found");
    let seen = finish(ctx, server).await;
    assert_eq!(seen[0].body["status"]["conditions"][0]["reason"], "ClusterNotFound");
}

#[tokio::test]
async fn an_unchanged_status_is_not_written_again() {
    let (ctx, server) = context(echo, Arc::new(FakeNodes::default()), &[], &[]);
    media_cluster::reconcile(Arc::new(cluster(json!({}))), ctx.clone()).await.unwrap();
    let first = finish(ctx, server).await;
    let written = first.last().unwrap().body["status"].clone();
    assert!(first.last().unwrap().path.ends_with("/status"));

    // The watch hands back the cluster with the status just written.
    let mut mc = cluster(json!({}));
    mc.status = Some(serde_json::from_value(written).unwrap());
    let (ctx, server) = context(echo, Arc::new(FakeNodes::default()), &[], &[]);
    media_cluster::reconcile(Arc::new(mc), ctx.clone()).await.unwrap();
    let second = finish(ctx, server).await;
    assert!(second.iter().all(|s| !s.path.ends_with("/status")), "{:?}", second.last().map(Seen::line));
}

#[tokio::test]
async fn before_the_first_poll_placed_rooms_are_left_alone() {
    let mc = cluster(json!({}));
    let (ctx, server) = context(echo, Arc::new(FakeNodes::default()), std::slice::from_ref(&mc), &[]);
    let placed = room("standup", true, json!({"phase": "Active", "node": "edge-sfu-0"}));
    let action = room::reconcile(Arc::new(placed), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(2)));
    let unplaced = room("lobby", true, Value::Null);
    room::reconcile(Arc::new(unplaced), ctx.clone()).await.unwrap();
    let seen = finish(ctx, server).await;
    // Only the unplaced room is told it waits; the placed one is not flipped to Pending.
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].line(), "PATCH /apis/switchyard.dev/v1alpha1/namespaces/media/rooms/lobby/status");
    assert_eq!(seen[0].body["status"]["conditions"][0]["reason"], "WaitingForNodes");
}

#[tokio::test]
async fn sfu_load_scales_up_at_once_and_is_reported_per_node() {
    let nodes = Arc::new(FakeNodes::default());
    nodes.media.lock().unwrap().insert(
        "edge-sfu-0".into(),
        MediaNodeStatus {
            rooms: 4,
            participants: 1_200,
            bandwidth_bps: 90_000_000,
            draining: false,
            room_names: vec![],
            ..Default::default()
        },
    );
    let respond = |s: &Seen| match s.line().as_str() {
        "GET /apis/apps/v1/namespaces/media/statefulsets/edge-sfu" => (
            200,
            json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "edge-sfu"},
                "spec": {"replicas": 1, "serviceName": "edge-sfu", "selector": {}, "template": {}},
                "status": {"replicas": 1, "readyReplicas": 1},
            }),
        ),
        "GET /api/v1/namespaces/media/pods" if s.query.contains("sfu") => {
            list("PodList", vec![pod("edge-sfu-0", "10.244.2.9", "sfu")])
        }
        _ => echo(s),
    };
    let (ctx, server) = context(respond, nodes, &[], &[]);
    let mc = cluster(json!({"sfu": {"replicas": {"min": 1, "max": 10}, "capacity": {"participants": 500}}}));
    media_cluster::reconcile(Arc::new(mc), ctx.clone()).await.unwrap();
    let seen = finish(ctx, server).await;

    let sts = seen.iter().find(|s| s.line() == "PATCH /apis/apps/v1/namespaces/media/statefulsets/edge-sfu").unwrap();
    assert_eq!(sts.body["spec"]["replicas"], 3, "ceil(1200 / 500) at once");
    let event = seen.iter().find(|s| s.path.ends_with("/events")).unwrap();
    assert_eq!(event.body["reason"], "ScalingUp");
    assert_eq!(event.body["note"], "sfu: 1 → 3 replicas (load wants 3)");
    // Gateway mode: TURN may relay to this SFU pod.
    let turn_cfg = seen.iter().find(|s| s.path.ends_with("configmaps/edge-turn-config")).unwrap();
    assert!(turn_cfg.body["data"]["config.yaml"].as_str().unwrap().contains("- 10.244.2.9/32"));

    let status = &seen.last().unwrap().body["status"];
    assert_eq!(status["sfu"], json!({"desired": 3, "current": 1, "ready": 1, "draining": 0}));
    assert_eq!(status["rooms"], 4);
    assert_eq!(
        status["nodes"],
        json!([{"name": "edge-sfu-0", "rooms": 4, "participants": 1200, "bandwidthBps": 90000000, "ready": true, "draining": false}])
    );
}

#[tokio::test]
async fn a_terminating_pod_is_never_the_next_victim() {
    let nodes = Arc::new(FakeNodes::default());
    nodes.turn.lock().unwrap().extend([
        ("edge-turn-a".to_owned(), TurnNodeStatus { allocations: 9, ..Default::default() }),
        // The previous victim, on its way out: draining and empty.
        ("edge-turn-b".to_owned(), TurnNodeStatus { allocations: 0, draining: true, ..Default::default() }),
        ("edge-turn-c".to_owned(), TurnNodeStatus { allocations: 2, ..Default::default() }),
    ]);
    let respond = |s: &Seen| match s.line().as_str() {
        "GET /apis/apps/v1/namespaces/media/deployments/edge-turn" => (
            200,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "edge-turn"},
                "spec": {"replicas": 2, "selector": {}, "template": {}},
            }),
        ),
        "GET /api/v1/namespaces/media/pods" if s.query.contains("turn") => {
            let mut leaving = pod("edge-turn-b", "10.244.0.11", "turn");
            leaving["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            list(
                "PodList",
                vec![pod("edge-turn-a", "10.244.0.10", "turn"), leaving, pod("edge-turn-c", "10.244.0.12", "turn")],
            )
        }
        _ => echo(s),
    };
    let mc = Arc::new(cluster(json!({
        "turn": {"replicas": {"min": 1, "max": 4}},
        "autoscaling": {"scaleDownStabilizationSeconds": 0},
    })));
    let (ctx, server) = context(respond, nodes.clone(), &[], &[]);
    media_cluster::reconcile(mc, ctx.clone()).await.unwrap();
    finish(ctx, server).await;
    assert_eq!(nodes.calls(), vec!["drain edge-turn-c 10.244.0.12"]);
}

#[tokio::test]
async fn switching_to_direct_prunes_the_owned_network_policy_only() {
    let owner = json!([{"apiVersion": "switchyard.dev/v1alpha1", "kind": "MediaCluster", "name": "edge",
        "uid": "6f1c9a52-0000-4000-8000-000000000001", "controller": true}]);
    let respond = move |s: &Seen| match s.line().as_str() {
        "GET /apis/networking.k8s.io/v1/namespaces/media/networkpolicies/edge-turn-egress" => (
            200,
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "edge-turn-egress", "ownerReferences": owner.clone()},
            }),
        ),
        // Someone's own Ingress that happens to carry the name: not ours.
        "GET /apis/networking.k8s.io/v1/namespaces/media/ingresses/edge-signaling" => (
            200,
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "edge-signaling"},
            }),
        ),
        _ => echo(s),
    };
    let (ctx, server) = context(respond, Arc::new(FakeNodes::default()), &[], &[]);
    media_cluster::reconcile(Arc::new(cluster(json!({"media": {"mode": "Direct"}}))), ctx.clone()).await.unwrap();
    let seen = finish(ctx, server).await;
    let deletes: Vec<String> = seen.iter().filter(|s| s.method == "DELETE").map(Seen::line).collect();
    assert_eq!(deletes, vec!["DELETE /apis/networking.k8s.io/v1/namespaces/media/networkpolicies/edge-turn-egress"]);
}

/// Events with different notes are different Events (each drained pod is named, each
/// scaling step told); only a true repeat bumps a series' count.
#[tokio::test]
async fn events_are_one_series_per_note() {
    let (ctx, server) = context(echo, Arc::new(FakeNodes::default()), &[], &[]);
    let mc = cluster(json!({}));
    for note in ["turn: 1 → 2 replicas", "turn: 2 → 3 replicas", "turn: 2 → 3 replicas"] {
        ctx.event(&mc, EventType::Normal, "ScalingUp", "Scale", note.into()).await;
    }
    assert_eq!(ctx.events.series(), 2);
    let seen = finish(ctx, server).await;
    let events: Vec<(String, Value)> = seen
        .iter()
        .filter(|s| s.path.contains("/events"))
        .map(|s| (s.method.clone(), s.body["note"].clone()))
        .collect();
    assert_eq!(
        events,
        vec![
            ("POST".into(), json!("turn: 1 → 2 replicas")),
            ("POST".into(), json!("turn: 2 → 3 replicas")),
            ("PATCH".into(), json!("turn: 2 → 3 replicas")),
        ]
    );
}

#[test]
fn an_unreachable_pod_counts_as_busy() {
    use crate::decide::autoscale::{PodLoad, turn_victim};
    let load = super::media_cluster::known_load;
    let pods = [
        PodLoad { name: "t-a".into(), load: load(None), draining: false },
        PodLoad { name: "t-b".into(), load: load(Some(3)), draining: false },
    ];
    assert_eq!(turn_victim(&pods).unwrap().name, "t-b", "the pod that did not answer may hold allocations");
}

/// Issue 18, finding 1: media-node opens a room on its first join, so a Room nobody joined
/// is unknown to its node (404). Deleting it must finish, not retry every 5 s forever.
#[tokio::test]
async fn deleting_a_room_nobody_joined_finishes() {
    let mc = cluster(json!({}));
    let nodes = Arc::new(FakeNodes::default());
    // The node is up and reports no open room.
    nodes.media.lock().unwrap().insert("edge-sfu-1".into(), MediaNodeStatus::default());
    let (ctx, server) = context(echo, nodes.clone(), std::slice::from_ref(&mc), &[]);
    ctx.set_observed_nodes(ObjectRef::from_obj(&mc), vec![observed("edge-sfu-1", "10.244.0.6", true, false, 0)]);
    let mut r = room("never-joined", true, json!({"phase": "Scheduled", "node": "edge-sfu-1"}));
    r.metadata.deletion_timestamp = Some(super::now_time());
    let action = room::reconcile(Arc::new(r), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    let seen = finish(ctx, server).await;
    assert_eq!(nodes.calls(), vec!["close never-joined on edge-sfu-1 10.244.0.6"]);
    let event = seen.iter().find(|s| s.path.ends_with("/events")).unwrap();
    assert_eq!(event.body["note"], "edge-sfu-1 did not have it open (nobody joined, or it closed already)");
    let patch = seen.iter().find(|s| s.method == "PATCH").unwrap();
    assert_eq!(patch.line(), "PATCH /apis/switchyard.dev/v1alpha1/namespaces/media/rooms/never-joined");
    assert!(patch.body.to_string().contains("remove"), "the finalizer goes: {}", patch.body);
}

/// Issue 18, finding 2: a burst of Rooms with node polls in between. Nobody joins (the
/// nodes report no rooms) and the Room cache never shows a placement (the mock does not
/// feed it back, as a lagging watch would not): capacity must hold anyway.
#[tokio::test]
async fn a_burst_of_rooms_never_overfills_a_node_across_polls() {
    let nodes = Arc::new(FakeNodes::default());
    for n in ["edge-sfu-0", "edge-sfu-1"] {
        nodes.media.lock().unwrap().insert(n.into(), MediaNodeStatus::default());
    }
    let respond = |s: &Seen| match s.line().as_str() {
        "GET /apis/apps/v1/namespaces/media/statefulsets/edge-sfu" => (
            200,
            json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "edge-sfu"},
                "spec": {"replicas": 2, "serviceName": "edge-sfu", "selector": {}, "template": {}},
                "status": {"replicas": 2, "readyReplicas": 2},
            }),
        ),
        "GET /api/v1/namespaces/media/pods" if s.query.contains("sfu") => {
            list("PodList", vec![pod("edge-sfu-0", "10.244.0.5", "sfu"), pod("edge-sfu-1", "10.244.0.6", "sfu")])
        }
        _ => echo(s),
    };
    let mc = cluster(json!({"sfu": {"replicas": {"min": 2, "max": 2}, "capacity": {"rooms": 3}}}));
    let rooms: Vec<Room> = (0..8).map(|i| room(&format!("r{i}"), true, Value::Null)).collect();
    let (ctx, server) = context(respond, nodes, std::slice::from_ref(&mc), &rooms);
    let mc = Arc::new(mc);
    media_cluster::reconcile(mc.clone(), ctx.clone()).await.unwrap();
    for (i, r) in rooms.into_iter().enumerate() {
        room::reconcile(Arc::new(r), ctx.clone()).await.unwrap();
        if i % 2 == 1 {
            // A poll between placements (the old count of "placed since the poll" reset here).
            media_cluster::reconcile(mc.clone(), ctx.clone()).await.unwrap();
        }
    }
    let seen = finish(ctx, server).await;
    let mut per_node = std::collections::BTreeMap::<String, u32>::new();
    let mut pending = vec![];
    for s in seen.iter().filter(|s| s.path.contains("/rooms/") && s.path.ends_with("/status")) {
        match s.body["status"]["node"].as_str() {
            Some(node) => *per_node.entry(node.to_owned()).or_default() += 1,
            None => pending.push(s.body["status"]["conditions"][0]["reason"].clone()),
        }
    }
    assert_eq!(per_node, [("edge-sfu-0".to_owned(), 3), ("edge-sfu-1".to_owned(), 3)].into());
    assert_eq!(pending, vec![json!("NoCapacity"), json!("NoCapacity")]);
}

fn condition(status: &Value, type_: &str) -> (String, String, String) {
    let c = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == type_).unwrap();
    let s = |k: &str| c[k].as_str().unwrap().to_owned();
    (s("status"), s("reason"), s("message"))
}

fn sts(replicas: i32, ready: i32) -> (u16, Value) {
    (
        200,
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "edge-sfu"},
            "spec": {"replicas": replicas, "serviceName": "edge-sfu", "selector": {}, "template": {}},
            "status": {"replicas": replicas, "readyReplicas": ready},
        }),
    )
}

/// Issue 18, finding 3: a media-node that exits at start (here the kubelet's view of the
/// `webhook "http://"` crash loop) must show in the MediaCluster's conditions, with the
/// node's last words; the cluster was Ready=True.
#[tokio::test]
async fn a_node_that_cannot_start_shows_in_the_conditions() {
    let nodes = Arc::new(FakeNodes::default());
    nodes.turn.lock().unwrap().insert("edge-turn-a".into(), TurnNodeStatus::default());
    let respond = |s: &Seen| match s.line().as_str() {
        "GET /apis/apps/v1/namespaces/media/statefulsets/edge-sfu" => sts(1, 0),
        "GET /api/v1/namespaces/media/pods" if s.query.contains("sfu") => {
            let mut crashing = pod("edge-sfu-0", "10.244.0.5", "sfu");
            crashing["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
            crashing["status"]["containerStatuses"] = json!([{
                "name": "media-node", "image": "media-node:test", "imageID": "", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                    "message": "{\"level\":\"INFO\",\"msg\":\"starting\"}\nError: webhook \"http://\": empty string\n"}},
            }]);
            list("PodList", vec![crashing])
        }
        "GET /api/v1/namespaces/media/pods" => list("PodList", vec![pod("edge-turn-a", "10.244.0.10", "turn")]),
        _ => echo(s),
    };
    let (ctx, server) = context(respond, nodes, &[], &[]);
    media_cluster::reconcile(Arc::new(cluster(json!({}))), ctx.clone()).await.unwrap();
    let seen = finish(ctx, server).await;
    let status = &seen.last().unwrap().body["status"];
    let why = "edge-sfu-0: CrashLoopBackOff, restarted 4 times, last exit 1: Error: webhook \"http://\": empty string";
    assert_eq!(
        condition(status, "Ready"),
        ("False".into(), "NodesNotStarting".into(), format!("no media-node can start: {why}"))
    );
    assert_eq!(condition(status, "Degraded"), ("True".into(), "NodesNotStarting".into(), why.into()));
}

/// Issue 18, finding 4: a spec the apiserver refuses once rendered (here a Service) is
/// reported in the conditions and an Event, not only in the operator's log.
#[tokio::test]
async fn an_object_the_apiserver_refuses_is_reported_as_an_invalid_spec() {
    let respond = |s: &Seen| match s.line().as_str() {
        "PATCH /api/v1/namespaces/media/services/edge-sfu" => (
            422,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Invalid", "code": 422,
                "message": "Service \"edge-sfu\" is invalid: spec.ports[2]: Duplicate value"}),
        ),
        _ => echo(s),
    };
    let (ctx, server) = context(respond, Arc::new(FakeNodes::default()), &[], &[]);
    let err = media_cluster::reconcile(Arc::new(cluster(json!({}))), ctx.clone()).await.unwrap_err();
    assert_eq!(err.label(), "invalid");
    let seen = finish(ctx, server).await;
    let message =
        "the apiserver refused Service edge-sfu: Service \"edge-sfu\" is invalid: spec.ports[2]: Duplicate value";
    let status = &seen.iter().find(|s| s.path == format!("{MC}/status")).unwrap().body["status"];
    assert_eq!(condition(status, "Ready"), ("False".into(), "InvalidSpec".into(), message.into()));
    assert_eq!(condition(status, "Degraded"), ("True".into(), "InvalidSpec".into(), message.into()));
    let event = seen.iter().find(|s| s.path.ends_with("/events")).unwrap();
    assert_eq!((event.body["type"].clone(), event.body["reason"].clone()), (json!("Warning"), json!("InvalidSpec")));
    assert_eq!(event.body["note"], message);
    let after: Vec<String> =
        seen.iter().skip_while(|s| !s.path.ends_with("services/edge-sfu")).map(Seen::line).collect();
    assert!(
        !after.iter().any(|l| l.contains("statefulsets")),
        "nothing after the refused object is applied: {after:?}"
    );
}

/// Issue 18, finding 4: a stored spec the schema would refuse today (an object older than
/// the rule) is not applied at all; its conditions and an Event say what to change.
#[tokio::test]
async fn a_stored_spec_that_cannot_render_says_what_to_change() {
    let (ctx, server) = context(echo, Arc::new(FakeNodes::default()), &[], &[]);
    let mut mc = cluster(json!({"sfu": {"image": ""}}));
    mc.metadata.name = Some("edge.v2".into());
    let err = media_cluster::reconcile(Arc::new(mc), ctx.clone()).await.unwrap_err();
    assert_eq!(err.label(), "invalid");
    let seen = finish(ctx, server).await;
    let lines: Vec<String> = seen.iter().map(Seen::line).collect();
    assert_eq!(
        lines,
        vec![
            "PATCH /apis/switchyard.dev/v1alpha1/namespaces/media/mediaclusters/edge.v2/status",
            "POST /apis/events.k8s.io/v1/namespaces/media/events",
        ]
    );
    let (status, reason, message) = condition(&seen[0].body["status"], "Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert!(message.starts_with("metadata.name \"edge.v2\" cannot prefix"), "{message}");
    assert!(
        message.contains("; sfu.image \"\" names no image: set an image reference, or remove the field"),
        "{message}"
    );
    assert_eq!(seen[1].body["note"], message);
}

/// Issue 18, finding 5: Gateway mode with a stored `turn.replicas.min: 0` scaled TURN to
/// 0 and reported Ready. TURN stays at one pod; no TURN pod means not Ready.
#[tokio::test]
async fn gateway_mode_keeps_a_turn_pod_and_is_not_ready_without_one() {
    let nodes = Arc::new(FakeNodes::default());
    nodes.media.lock().unwrap().insert("edge-sfu-0".into(), MediaNodeStatus::default());
    let respond = |s: &Seen| match s.line().as_str() {
        "GET /apis/apps/v1/namespaces/media/statefulsets/edge-sfu" => sts(1, 1),
        "GET /apis/apps/v1/namespaces/media/deployments/edge-turn" => (
            200,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "edge-turn"},
                "spec": {"replicas": 1, "selector": {}, "template": {}}, "status": {"replicas": 1, "readyReplicas": 0},
            }),
        ),
        "GET /api/v1/namespaces/media/pods" if s.query.contains("sfu") => {
            list("PodList", vec![pod("edge-sfu-0", "10.244.0.5", "sfu")])
        }
        _ => echo(s),
    };
    let mc = Arc::new(cluster(json!({
        "turn": {"replicas": {"min": 0, "max": 3}},
        "autoscaling": {"scaleDownStabilizationSeconds": 0},
    })));
    let (ctx, server) = context(respond, nodes.clone(), &[], &[]);
    media_cluster::reconcile(mc.clone(), ctx.clone()).await.unwrap();
    media_cluster::reconcile(mc, ctx.clone()).await.unwrap();
    let seen = finish(ctx, server).await;
    let replicas: Vec<Value> = seen
        .iter()
        .filter(|s| s.line() == "PATCH /apis/apps/v1/namespaces/media/deployments/edge-turn")
        .map(|s| s.body["spec"]["replicas"].clone())
        .collect();
    // (Each reconcile applies: the mock keeps no Secrets, so fresh ones render.)
    assert_eq!(replicas, vec![json!(1), json!(1)], "no load, yet TURN keeps one pod");
    assert_eq!(nodes.calls(), Vec::<String>::new(), "nothing drained");
    let status = &seen.iter().rfind(|s| s.path == format!("{MC}/status")).unwrap().body["status"];
    let (ready, reason, _) = condition(status, "Ready");
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "NoReadyTurnNode"));
}

/// Issue 18, finding 5: SFU 0/0 reported Ready while every Room stayed Pending.
#[tokio::test]
async fn a_cluster_without_media_nodes_is_not_ready() {
    let (ctx, server) = context(echo, Arc::new(FakeNodes::default()), &[], &[]);
    let mc = cluster(json!({"sfu": {"replicas": {"min": 0, "max": 0}}, "media": {"mode": "Direct"}}));
    media_cluster::reconcile(Arc::new(mc), ctx.clone()).await.unwrap();
    let seen = finish(ctx, server).await;
    let status = &seen.last().unwrap().body["status"];
    assert_eq!(
        condition(status, "Ready"),
        ("False".into(), "NoMediaNodes".into(), "sfu.replicas.max is 0: no room can be placed".into())
    );
}
