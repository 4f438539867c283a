//! The turn-node fleet: Deployment, Services, config, PDB, NetworkPolicy, ServiceMonitor.

use serde_json::{Value, json};
use switchyard_api::media_cluster::{ExposureMode, ServiceType, TurnProtocol};

use super::config::{self, paths};
use super::{
    ADMIN_PORT, CONFIG_HASH_ANNOTATION, Ctx, Fleet, Object, SERVICE_LABEL, container_security, downward_env, fnv1a,
    pdb, pod_security, probes, resources, selector_labels, service_monitor, termination_grace,
};
use crate::{Error, Result};

pub(super) fn render(ctx: &Ctx<'_>) -> Result<Vec<Object>> {
    let spec = &ctx.mc.spec;
    let t = &spec.turn;
    let names = &ctx.names;
    let cluster = names.cluster();
    let selector = selector_labels(cluster, Fleet::Turn);
    let mut out = Vec::new();

    // Config; the hash leaves out the SFU pod IPs (Gateway allow list), which change
    // whenever an SFU pod restarts: TURN pods hold live calls and must not roll for that.
    let mut cfg = config::turn_node(ctx.mc, ctx.inputs.sfu_pod_ips)?;
    let yaml = |c: &config::TurnNodeConfig| {
        serde_saphyr::to_string(c).map_err(|e| Error::Invalid { what: "turn-node config", message: e.to_string() })
    };
    let text = yaml(&cfg)?;
    cfg.peers.allow = config::cidrs(&t.peers.allow, "turn.peers.allow")?;
    let hash = fnv1a(yaml(&cfg)?.as_bytes());
    out.push(Object::new(
        "v1",
        "ConfigMap",
        "configmaps",
        ctx.meta(names.turn_config(), Some(Fleet::Turn)),
        json!({ "data": { "config.yaml": text } }),
    ));

    // The public TURN Service.
    let svc_type = t.service.r#type;
    let mut meta = ctx.meta(names.turn(), Some(Fleet::Turn));
    meta["labels"][SERVICE_LABEL] = json!("turn");
    if !t.service.annotations.is_empty() {
        meta["annotations"] = json!(t.service.annotations);
    }
    let transport = |p: TurnProtocol| if p == TurnProtocol::UDP { "UDP" } else { "TCP" };
    let mut svc_spec = json!({
        "type": super::sfu::service_type(svc_type),
        "selector": selector,
        // A client's UDP and TCP/TLS attempts (and its refreshes) should meet the same pod.
        "sessionAffinity": "ClientIP",
        "ports": t.listeners.iter().map(|l| json!({
            "name": l.name, "port": l.port, "targetPort": l.name, "protocol": transport(l.protocol),
        })).collect::<Vec<_>>(),
    });
    if matches!(svc_type, ServiceType::LoadBalancer | ServiceType::NodePort) {
        // Keep the client's source address: TURN's per-IP rate limits and the
        // XOR-MAPPED-ADDRESS it returns are wrong behind SNAT.
        svc_spec["externalTrafficPolicy"] = json!("Local");
    }
    out.push(Object::new("v1", "Service", "services", meta, json!({ "spec": svc_spec })));

    // The admin port stays off the public Service (it has /drain).
    let mut admin_meta = ctx.meta(names.turn_admin(), Some(Fleet::Turn));
    admin_meta["labels"][SERVICE_LABEL] = json!("turn-admin");
    out.push(Object::new(
        "v1",
        "Service",
        "services",
        admin_meta,
        json!({ "spec": {
            "clusterIP": "None",
            "selector": selector,
            "ports": [{ "name": "admin", "port": ADMIN_PORT, "targetPort": "admin", "protocol": "TCP" }],
        } }),
    ));

    // The Deployment.
    let low_ports = t.listeners.iter().any(|l| l.port < 1024);
    let mut ports: Vec<Value> = t
        .listeners
        .iter()
        .map(|l| json!({ "name": l.name, "containerPort": l.port, "protocol": transport(l.protocol) }))
        .collect();
    ports.push(json!({ "name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP" }));
    let mut env = downward_env(cluster);
    env.push(json!({ "name": "SWITCHYARD_TURN_RELAY_ADDRESS", "value": "$(POD_IP)" }));
    let mut mounts = vec![
        json!({ "name": "config", "mountPath": paths::CONFIG_DIR, "readOnly": true }),
        json!({ "name": "turn-secret", "mountPath": paths::TURN_SECRET_DIR, "readOnly": true }),
        json!({ "name": "tmp", "mountPath": "/tmp" }),
    ];
    let mut volumes = vec![
        json!({ "name": "config", "configMap": { "name": names.turn_config() } }),
        json!({ "name": "turn-secret", "secret": { "secretName": names.turn_secret() } }),
        json!({ "name": "tmp", "emptyDir": {} }),
    ];
    for l in t.listeners.iter().filter(|l| l.protocol == TurnProtocol::TLS) {
        if let Some(secret) = &l.tls_secret_ref {
            let vol = format!("tls-{}", l.name);
            mounts
                .push(json!({ "name": vol, "mountPath": format!("{}/{}", paths::TLS_DIR, l.name), "readOnly": true }));
            volumes.push(json!({ "name": vol, "secret": { "secretName": secret.name } }));
        }
    }
    let (readiness, liveness) = probes();
    let container = json!({
        "name": "turn-node",
        "image": t.image.clone().unwrap_or_else(|| ctx.inputs.images.turn_node.clone()),
        "args": ["--config", paths::CONFIG],
        "env": env,
        "ports": ports,
        "readinessProbe": readiness,
        "livenessProbe": liveness,
        "resources": resources(&t.resources)?,
        "securityContext": container_security(),
        // A node that exits at start leaves its last log line in the pod status, where
        // the operator reads it into the MediaCluster's Degraded condition.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    });
    let mut template_labels = super::labels(cluster, Some(Fleet::Turn));
    if let Some(l) = template_labels.as_object_mut() {
        l.extend(selector.iter().map(|(k, v)| (k.clone(), json!(v))));
    }
    out.push(Object::new(
        "apps/v1",
        "Deployment",
        "deployments",
        ctx.meta(names.turn(), Some(Fleet::Turn)),
        json!({ "spec": {
            "replicas": ctx.inputs.turn_replicas,
            "selector": { "matchLabels": selector },
            // Never take capacity away during a rollout: old pods drain for a long time.
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 } },
            "template": {
                "metadata": { "labels": template_labels, "annotations": { CONFIG_HASH_ANNOTATION: hash } },
                "spec": {
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": termination_grace(t.drain_grace_period_seconds),
                    "securityContext": pod_security(low_ports),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        } }),
    ));

    out.push(pdb(ctx, names.turn(), Fleet::Turn));

    if spec.media.mode == ExposureMode::Gateway {
        // TURN relays only into the SFU pods' media ports; replies to clients are
        // ingress-initiated and stay allowed.
        out.push(Object::new(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "networkpolicies",
            ctx.meta(names.turn_egress(), Some(Fleet::Turn)),
            json!({ "spec": {
                "podSelector": { "matchLabels": selector },
                "policyTypes": ["Egress"],
                "egress": [{
                    "to": [{ "podSelector": { "matchLabels": selector_labels(cluster, Fleet::Sfu) } }],
                    "ports": [
                        { "protocol": "UDP", "port": spec.media.udp_port },
                        { "protocol": "TCP", "port": spec.media.tcp_port },
                    ],
                }],
            } }),
        ));
    }

    if spec.monitoring.service_monitor && ctx.inputs.service_monitor_crd {
        out.push(service_monitor(ctx, names.turn(), Fleet::Turn, "turn-admin"));
    }
    Ok(out)
}
