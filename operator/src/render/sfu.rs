//! The media-node fleet: StatefulSet, headless and signaling Services, Ingress, config,
//! RBAC, PDB, ServiceMonitor.

use serde_json::json;
use switchyard_api::media_cluster::{ExposureMode, ServiceType};

use super::config::{self, paths};
use super::{
    ADMIN_PORT, CONFIG_HASH_ANNOTATION, Ctx, Fleet, Object, SERVICE_LABEL, container_security, downward_env, fnv1a,
    pdb, pod_security, probes, resources, selector_labels, service_monitor, termination_grace,
};
use crate::{Error, Result};

pub(super) fn render(ctx: &Ctx<'_>) -> Result<Vec<Object>> {
    let spec = &ctx.mc.spec;
    let names = &ctx.names;
    let cluster = names.cluster();
    let selector = selector_labels(cluster, Fleet::Sfu);
    let mut out = Vec::new();

    // Config. The hash leaves out the TURN URIs: they change when a load balancer gets
    // its address, and rolling every SFU pod (ending every call) for that would be absurd;
    // media-node re-reads the mounted file instead.
    let uris = match ctx.inputs.turn_uris {
        Some(uris) => uris.to_vec(),
        None => config::turn_uris(ctx.mc, &format!("{}.{}.svc", names.turn(), ctx.namespace)),
    };
    let mut cfg = config::media_node(ctx.mc, cluster, uris)?;
    let yaml = |c: &config::MediaNodeConfig| {
        serde_saphyr::to_string(c).map_err(|e| Error::Invalid { what: "media-node config", message: e.to_string() })
    };
    let text = yaml(&cfg)?;
    cfg.turn.uris.clear();
    let hash = fnv1a(yaml(&cfg)?.as_bytes());
    out.push(Object::new(
        "v1",
        "ConfigMap",
        "configmaps",
        ctx.meta(names.sfu_config(), Some(Fleet::Sfu)),
        json!({ "data": { "config.yaml": text } }),
    ));

    // RBAC: media-node keeps a reflector of Rooms and creates auto-created ones.
    let account = names.media_node_account();
    out.push(Object::new(
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        ctx.meta(account.clone(), Some(Fleet::Sfu)),
        json!({}),
    ));
    out.push(Object::new(
        "rbac.authorization.k8s.io/v1",
        "Role",
        "roles",
        ctx.meta(account.clone(), Some(Fleet::Sfu)),
        json!({ "rules": [
            // create: a join that may create its room, and the Room service's create;
            // patch (metadata) and delete: the Room service.
            { "apiGroups": ["switchyard.dev"], "resources": ["rooms"], "verbs": ["get", "list", "watch", "create", "patch", "delete"] },
            { "apiGroups": ["switchyard.dev"], "resources": ["rooms/status"], "verbs": ["get", "patch"] },
            // Signaling routing: the hosting pod's IP, from the media-node pods.
            { "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"] },
        ] }),
    ));
    out.push(Object::new(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "rolebindings",
        ctx.meta(account.clone(), Some(Fleet::Sfu)),
        json!({
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account },
            "subjects": [{ "kind": "ServiceAccount", "name": account, "namespace": ctx.namespace }],
        }),
    ));

    // Headless Service: per-pod DNS, and published before readiness so a proxying peer
    // can still reach a node that is draining (unready) to finish its rooms.
    let direct = spec.media.mode == ExposureMode::Direct;
    let mut headless_meta = ctx.meta(names.sfu(), Some(Fleet::Sfu));
    headless_meta["labels"][SERVICE_LABEL] = json!("sfu");
    out.push(Object::new(
        "v1",
        "Service",
        "services",
        headless_meta,
        json!({ "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": true,
            "selector": selector,
            "ports": [
                { "name": "signaling", "port": spec.signaling.port, "targetPort": "signaling", "protocol": "TCP" },
                { "name": "admin", "port": ADMIN_PORT, "targetPort": "admin", "protocol": "TCP" },
                { "name": "media-udp", "port": spec.media.udp_port, "targetPort": "media-udp", "protocol": "UDP" },
                { "name": "media-tcp", "port": spec.media.tcp_port, "targetPort": "media-tcp", "protocol": "TCP" },
            ],
        } }),
    ));

    // Signaling Service: any node accepts /rtc and proxies to the room's node.
    let mut sig_meta = ctx.meta(names.signaling(), Some(Fleet::Sfu));
    sig_meta["labels"][SERVICE_LABEL] = json!("signaling");
    let mut sig_spec = json!({
        "type": service_type(spec.signaling.service_type),
        "selector": selector,
        "ports": [{ "name": "signaling", "port": spec.signaling.port, "targetPort": "signaling", "protocol": "TCP" }],
    });
    if matches!(spec.signaling.service_type, ServiceType::LoadBalancer | ServiceType::NodePort) {
        // Keep the client's source address: media-node caps connections per client
        // address, and behind SNAT every client would be a node's address.
        sig_spec["externalTrafficPolicy"] = json!("Local");
    }
    out.push(Object::new("v1", "Service", "services", sig_meta, json!({ "spec": sig_spec })));

    if let Some(ing) = &spec.signaling.ingress {
        let mut meta = ctx.meta(names.signaling(), Some(Fleet::Sfu));
        if !ing.annotations.is_empty() {
            meta["annotations"] = json!(ing.annotations);
        }
        let mut ispec = json!({
            "rules": [{ "host": ing.host, "http": { "paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": { "service": { "name": names.signaling(), "port": { "name": "signaling" } } },
            }] } }],
        });
        if let Some(class) = &ing.class_name {
            ispec["ingressClassName"] = json!(class);
        }
        if let Some(tls) = &ing.tls_secret_ref {
            ispec["tls"] = json!([{ "hosts": [ing.host], "secretName": tls.name }]);
        }
        out.push(Object::new("networking.k8s.io/v1", "Ingress", "ingresses", meta, json!({ "spec": ispec })));
    }

    // The StatefulSet.
    let media_port = |name: &str, port: i32, protocol: &str| {
        let mut p = json!({ "name": name, "containerPort": port, "protocol": protocol });
        if direct {
            p["hostPort"] = json!(port);
        }
        p
    };
    let (readiness, liveness) = probes();
    let keys_secret = spec.auth.keys_secret_ref.as_ref().map(|r| r.name.clone()).unwrap_or_else(|| names.keys_secret());
    let container = json!({
        "name": "media-node",
        "image": spec.sfu.image.clone().unwrap_or_else(|| ctx.inputs.images.media_node.clone()),
        "args": ["--config", paths::CONFIG],
        "env": downward_env(cluster),
        "ports": [
            { "name": "signaling", "containerPort": spec.signaling.port, "protocol": "TCP" },
            { "name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP" },
            media_port("media-udp", spec.media.udp_port, "UDP"),
            media_port("media-tcp", spec.media.tcp_port, "TCP"),
        ],
        "readinessProbe": readiness,
        "livenessProbe": liveness,
        "resources": resources(&spec.sfu.resources)?,
        "securityContext": container_security(),
        // A node that exits at start leaves its last log line in the pod status, where
        // the operator reads it into the MediaCluster's Degraded condition.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            { "name": "config", "mountPath": paths::CONFIG_DIR, "readOnly": true },
            { "name": "keys", "mountPath": paths::KEYS_DIR, "readOnly": true },
            { "name": "turn-secret", "mountPath": paths::TURN_SECRET_DIR, "readOnly": true },
            { "name": "tmp", "mountPath": "/tmp" },
        ],
    });
    let mut template_labels = super::labels(cluster, Some(Fleet::Sfu));
    if let Some(l) = template_labels.as_object_mut() {
        l.extend(selector.iter().map(|(k, v)| (k.clone(), json!(v))));
    }
    out.push(Object::new(
        "apps/v1",
        "StatefulSet",
        "statefulsets",
        ctx.meta(names.sfu(), Some(Fleet::Sfu)),
        json!({ "spec": {
            "replicas": ctx.inputs.sfu_replicas,
            "serviceName": names.sfu(),
            // Pods are independent: start and stop them in parallel, not one by one.
            "podManagementPolicy": "Parallel",
            "selector": { "matchLabels": selector },
            "template": {
                "metadata": { "labels": template_labels, "annotations": { CONFIG_HASH_ANNOTATION: hash } },
                "spec": {
                    "serviceAccountName": account,
                    "terminationGracePeriodSeconds": termination_grace(spec.sfu.drain_grace_period_seconds),
                    "securityContext": pod_security(false),
                    "containers": [container],
                    "volumes": [
                        { "name": "config", "configMap": { "name": names.sfu_config() } },
                        { "name": "keys", "secret": { "secretName": keys_secret } },
                        { "name": "turn-secret", "secret": { "secretName": names.turn_secret() } },
                        { "name": "tmp", "emptyDir": {} },
                    ],
                },
            },
        } }),
    ));

    out.push(pdb(ctx, names.sfu(), Fleet::Sfu));
    if spec.monitoring.service_monitor && ctx.inputs.service_monitor_crd {
        out.push(service_monitor(ctx, names.sfu(), Fleet::Sfu, "sfu"));
    }
    Ok(out)
}

pub(super) fn service_type(t: ServiceType) -> &'static str {
    match t {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    }
}
