//! Rendering: one `MediaCluster` (plus a few observed facts) → every object the cluster
//! needs, as plain JSON ready for server-side apply. Pure: no API calls, no clock, no
//! randomness (generated secrets come in as [`SecretMaterial`]).
//!
//! # Objects (for a cluster named `edge`)
//!
//! | object | name | why |
//! | --- | --- | --- |
//! | StatefulSet | `edge-sfu` | media-node pods with stable names (`edge-sfu-0`…): rooms are placed on a pod by name |
//! | Service (headless) | `edge-sfu` | per-pod DNS `edge-sfu-0.edge-sfu.<ns>.svc`, for proxying signaling and scraping |
//! | Service | `edge-signaling` | the one signaling endpoint (`/rtc`) in front of all media-nodes |
//! | Ingress (optional) | `edge-signaling` | `signaling.ingress` |
//! | Deployment | `edge-turn` | turn-node pods; any pod serves any client, so no stable identity is needed |
//! | Service | `edge-turn` | the TURN listeners, `sessionAffinity: ClientIP` so a client's UDP and TCP reach one pod |
//! | Service (headless) | `edge-turn-admin` | the TURN pods' admin port, kept off the public TURN Service |
//! | Secret | `edge-keys` | API key/secret pair, only when `auth.keysSecretRef` is absent |
//! | Secret | `edge-turn-secret` | the TURN REST shared secret both fleets mount |
//! | ConfigMap | `edge-sfu-config`, `edge-turn-config` | the nodes' `config.yaml` |
//! | PodDisruptionBudget | `edge-sfu`, `edge-turn` | voluntary evictions one pod at a time |
//! | NetworkPolicy | `edge-turn-egress` | Gateway mode: TURN may only reach the SFU pods' media ports |
//! | ServiceAccount, Role, RoleBinding | `edge-media-node` | media-node watches and creates Rooms |
//! | ServiceMonitor | `edge-sfu`, `edge-turn` | when enabled and the Prometheus Operator CRD exists |
//!
//! Every object carries a controller owner reference to the MediaCluster, so deleting
//! the cluster garbage-collects all of it.
//!
//! # Node contract (args, env, files, ports)
//!
//! Both node binaries are started as `<binary> --config /etc/switchyard/config/config.yaml` and
//! get, from the downward API: `POD_NAME`, `POD_NAMESPACE`, `POD_IP`, `HOST_IP`,
//! `NODE_NAME`; plus `SWITCHYARD_CLUSTER` (the MediaCluster name) and
//! `SWITCHYARD_BIND_IP=$(POD_IP)` (listen on the pod IP, not the wildcard: a
//! node's sockets stay its own wherever pods share an address space, as on a loopback
//! test cluster; probes and Services reach pods by their IP). turn-node additionally
//! gets `SWITCHYARD_TURN_RELAY_ADDRESS=$(POD_IP)` (its existing flag's env). Both serve
//! the admin port **9090**: `GET /healthz` (liveness), `GET /readyz` (readiness: false
//! while draining), `GET /metrics`, `GET /internal/status` (`api::node::*Status` JSON),
//! `POST /drain`; media-node also `POST /internal/rooms/<name>/close`.
//!
//! Files: `/etc/switchyard/config/config.yaml` (the ConfigMap mounted as a directory, so
//! edits reach the running node; see [`config`] for its fields; the fields that change
//! at run time — `turn.uris`, `peers.allow` — are left out of the config hash and must be
//! re-read by the node),
//! `/etc/switchyard/turn/secret` (the TURN shared secret, one a line: turn-node's
//! `auth.secretsFile`, and media-node mints TURN credentials with it),
//! `/etc/switchyard/keys/<apiKey>` (media-node: one file per API key holding its secret),
//! `/etc/switchyard/tls/<listener>/tls.{crt,key}` (turn-node TLS listeners), and a
//! writable `/tmp` (the root filesystem is read-only).
//!
//! Direct mode: media-node's UDP and TCP media ports are also host ports, and it
//! advertises `media.advertisedAddresses` if set, else `HOST_IP`.

pub mod config;
mod sfu;
mod turn;
mod validate;

pub use validate::validate;

use std::collections::BTreeMap;

use kube::Resource;
use serde_json::{Value, json};
use switchyard_api::MediaCluster;

use crate::{Error, Result};

/// The admin port both node binaries serve health, metrics, status and drain on.
pub const ADMIN_PORT: i32 = 9090;
/// The one field manager for everything the operator applies.
pub const FIELD_MANAGER: &str = "switchyard-operator";
/// Pod-template annotation that changes with the node config, so config edits roll pods.
pub const CONFIG_HASH_ANNOTATION: &str = "switchyard.dev/config-hash";
/// Label with the MediaCluster name on every object.
pub const CLUSTER_LABEL: &str = "switchyard.dev/cluster";
/// Label naming the fleet: `sfu` or `turn`.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Label on Services telling them apart (ServiceMonitors select on it).
pub const SERVICE_LABEL: &str = "switchyard.dev/service";

/// Default container images, overridable per cluster (`spec.*.image`) and per operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    /// media-node image.
    pub media_node: String,
    /// turn-node image.
    pub turn_node: String,
}

impl Default for Images {
    fn default() -> Self {
        let v = env!("CARGO_PKG_VERSION");
        Self {
            media_node: format!("ghcr.io/switchyard-dev/media-node:{v}"),
            turn_node: format!("ghcr.io/switchyard-dev/turn-node:{v}"),
        }
    }
}

/// Secret values the operator generated once (or read back from the existing Secrets).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretMaterial {
    /// The generated API key and secret; `None` when `auth.keysSecretRef` names the user's own.
    pub api_key: Option<(String, String)>,
    /// The TURN REST shared secret.
    pub turn_secret: String,
}

impl std::fmt::Debug for SecretMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secret values into logs.
        f.debug_struct("SecretMaterial")
            .field("api_key", &self.api_key.as_ref().map(|(k, _)| k))
            .finish_non_exhaustive()
    }
}

/// Everything rendering needs besides the MediaCluster itself.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// Generated secret values.
    pub secrets: &'a SecretMaterial,
    /// media-node replicas (the autoscaler's decision).
    pub sfu_replicas: i32,
    /// turn-node replicas (the autoscaler's decision).
    pub turn_replicas: i32,
    /// The SFU pods' IPs: TURN's peer allow list in Gateway mode.
    pub sfu_pod_ips: &'a [String],
    /// The TURN URIs clients get (external addresses, the load balancer, or node ports);
    /// `None` uses the Service's in-cluster DNS name.
    pub turn_uris: Option<&'a [String]>,
    /// The `servicemonitors.monitoring.coreos.com` CRD exists.
    pub service_monitor_crd: bool,
    /// Default images.
    pub images: &'a Images,
}

/// One object to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    /// `apiVersion`, such as `apps/v1`.
    pub api_version: &'static str,
    /// `kind`.
    pub kind: &'static str,
    /// The resource's plural (URL segment).
    pub plural: &'static str,
    /// `metadata.name`.
    pub name: String,
    /// The whole object.
    pub body: Value,
}

impl Object {
    fn new(api_version: &'static str, kind: &'static str, plural: &'static str, meta: Value, rest: Value) -> Self {
        let name = meta["name"].as_str().unwrap_or_default().to_owned();
        let mut body = json!({ "apiVersion": api_version, "kind": kind, "metadata": meta });
        if let (Some(b), Value::Object(rest)) = (body.as_object_mut(), rest) {
            b.extend(rest);
        }
        Self { api_version, kind, plural, name, body }
    }

    /// The API group (`""` for the core group).
    pub fn group(&self) -> &'static str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// The API version without the group.
    pub fn version(&self) -> &'static str {
        self.api_version.rsplit_once('/').map_or(self.api_version, |(_, v)| v)
    }
}

/// Object names derived from the cluster name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    cluster: String,
}

#[allow(missing_docs)]
impl Names {
    pub fn new(cluster: &str) -> Self {
        Self { cluster: cluster.to_owned() }
    }
    pub fn cluster(&self) -> &str {
        &self.cluster
    }
    pub fn sfu(&self) -> String {
        format!("{}-sfu", self.cluster)
    }
    pub fn signaling(&self) -> String {
        format!("{}-signaling", self.cluster)
    }
    pub fn turn(&self) -> String {
        format!("{}-turn", self.cluster)
    }
    pub fn turn_admin(&self) -> String {
        format!("{}-turn-admin", self.cluster)
    }
    pub fn keys_secret(&self) -> String {
        format!("{}-keys", self.cluster)
    }
    pub fn turn_secret(&self) -> String {
        format!("{}-turn-secret", self.cluster)
    }
    pub fn sfu_config(&self) -> String {
        format!("{}-sfu-config", self.cluster)
    }
    pub fn turn_config(&self) -> String {
        format!("{}-turn-config", self.cluster)
    }
    pub fn turn_egress(&self) -> String {
        format!("{}-turn-egress", self.cluster)
    }
    pub fn media_node_account(&self) -> String {
        format!("{}-media-node", self.cluster)
    }
    /// Per-pod DNS name of one media-node (through the headless Service).
    pub fn sfu_pod_host(&self, pod: &str, namespace: &str) -> String {
        format!("{pod}.{}.{namespace}.svc", self.sfu())
    }
}

/// The fleet a pod belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fleet {
    /// media-node.
    Sfu,
    /// turn-node.
    Turn,
}

impl Fleet {
    /// The component label value.
    pub fn component(self) -> &'static str {
        match self {
            Fleet::Sfu => "sfu",
            Fleet::Turn => "turn",
        }
    }
    fn app(self) -> &'static str {
        match self {
            Fleet::Sfu => "media-node",
            Fleet::Turn => "turn-node",
        }
    }
}

/// The labels that select one fleet's pods (stable: they are immutable selectors).
pub fn selector_labels(cluster: &str, fleet: Fleet) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CLUSTER_LABEL.to_owned(), cluster.to_owned()),
        (COMPONENT_LABEL.to_owned(), fleet.component().to_owned()),
    ])
}

/// `key=value,…` for list calls.
pub fn selector_string(cluster: &str, fleet: Fleet) -> String {
    selector_labels(cluster, fleet).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn labels(cluster: &str, fleet: Option<Fleet>) -> Value {
    let mut l = json!({
        "app.kubernetes.io/instance": cluster,
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
        "app.kubernetes.io/part-of": "switchyard",
        CLUSTER_LABEL: cluster,
    });
    if let Some(f) = fleet {
        l["app.kubernetes.io/name"] = json!(f.app());
        l[COMPONENT_LABEL] = json!(f.component());
    }
    l
}

struct Ctx<'a> {
    mc: &'a MediaCluster,
    names: Names,
    namespace: String,
    owner: Value,
    inputs: &'a Inputs<'a>,
}

impl Ctx<'_> {
    fn meta(&self, name: String, fleet: Option<Fleet>) -> Value {
        json!({
            "name": name,
            "namespace": self.namespace,
            "labels": labels(self.names.cluster(), fleet),
            "ownerReferences": [self.owner],
        })
    }
}

/// Render every object of `mc`. Fails only on a spec the CRD schema should have
/// rejected (an unparsable quantity) or a cluster without name, namespace or uid.
pub fn render(mc: &MediaCluster, inputs: &Inputs<'_>) -> Result<Vec<Object>> {
    let invalid = |what, message: &str| Error::Invalid { what, message: message.to_owned() };
    let name = mc.metadata.name.clone().ok_or_else(|| invalid("metadata.name", "missing"))?;
    let namespace = mc.metadata.namespace.clone().ok_or_else(|| invalid("metadata.namespace", "missing"))?;
    let owner = mc.controller_owner_ref(&()).ok_or_else(|| invalid("metadata.uid", "missing"))?;
    let owner = serde_json::to_value(owner).map_err(|source| Error::Serialize { kind: "OwnerReference", source })?;
    let ctx = Ctx { mc, names: Names::new(&name), namespace, owner, inputs };

    let mut out = Vec::new();
    out.extend(secrets(&ctx));
    out.extend(sfu::render(&ctx)?);
    out.extend(turn::render(&ctx)?);
    Ok(out)
}

fn secrets(ctx: &Ctx<'_>) -> Vec<Object> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut out = Vec::new();
    if let (None, Some((key, secret))) = (&ctx.mc.spec.auth.keys_secret_ref, &ctx.inputs.secrets.api_key) {
        out.push(Object::new(
            "v1",
            "Secret",
            "secrets",
            ctx.meta(ctx.names.keys_secret(), None),
            json!({ "type": "Opaque", "data": { key: b64(secret) } }),
        ));
    }
    out.push(Object::new(
        "v1",
        "Secret",
        "secrets",
        ctx.meta(ctx.names.turn_secret(), None),
        json!({ "type": "Opaque", "data": { "secret": b64(&ctx.inputs.secrets.turn_secret) } }),
    ));
    out
}

/// The hardened container security context every node container gets.
fn container_security() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": { "drop": ["ALL"] },
    })
}

/// Pod security context; `low_ports` lets a non-root process bind ports below 1024
/// (TURN on 443) through a namespaced, "safe" sysctl instead of a capability.
fn pod_security(low_ports: bool) -> Value {
    let mut s = json!({
        "runAsNonRoot": true,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": { "type": "RuntimeDefault" },
    });
    if low_ports {
        s["sysctls"] = json!([{ "name": "net.ipv4.ip_unprivileged_port_start", "value": "0" }]);
    }
    s
}

fn field_env(name: &str, path: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": path } } })
}

/// The downward-API environment of the node contract.
fn downward_env(cluster: &str) -> Vec<Value> {
    vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("POD_IP", "status.podIP"),
        field_env("HOST_IP", "status.hostIP"),
        field_env("NODE_NAME", "spec.nodeName"),
        json!({ "name": "SWITCHYARD_CLUSTER", "value": cluster }),
        json!({ "name": "SWITCHYARD_BIND_IP", "value": "$(POD_IP)" }),
    ]
}

fn probes() -> (Value, Value) {
    let probe = |path: &str, period: i32| {
        json!({
            "httpGet": { "path": path, "port": "admin" },
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        })
    };
    (probe("/readyz", 5), probe("/healthz", 10))
}

/// Grace beyond the node's own drain deadline: time to close sockets and flush.
const TERMINATION_MARGIN_SECONDS: i64 = 30;

fn termination_grace(drain_seconds: i64) -> i64 {
    drain_seconds.max(0) + TERMINATION_MARGIN_SECONDS
}

/// FNV-1a, 64 bit: a stable hash for the config annotation (std's hasher may change
/// between Rust releases, which would roll every pod on an operator upgrade).
pub(crate) fn fnv1a(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn service_monitor(ctx: &Ctx<'_>, name: String, fleet: Fleet, service: &str) -> Object {
    Object::new(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        "servicemonitors",
        ctx.meta(name, Some(fleet)),
        json!({
            "spec": {
                "selector": { "matchLabels": { CLUSTER_LABEL: ctx.names.cluster(), SERVICE_LABEL: service } },
                "endpoints": [{ "port": "admin", "path": "/metrics", "interval": "15s" }],
            }
        }),
    )
}

fn pdb(ctx: &Ctx<'_>, name: String, fleet: Fleet) -> Object {
    Object::new(
        "policy/v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        ctx.meta(name, Some(fleet)),
        json!({ "spec": { "maxUnavailable": 1, "selector": { "matchLabels": selector_labels(ctx.names.cluster(), fleet) } } }),
    )
}

fn resources(r: &Option<k8s_openapi::api::core::v1::ResourceRequirements>) -> Result<Value> {
    match r {
        Some(r) => serde_json::to_value(r).map_err(|source| Error::Serialize { kind: "ResourceRequirements", source }),
        None => Ok(json!({})),
    }
}

/// Objects `render` produces only in some configurations (Ingress, Gateway-mode
/// NetworkPolicy, ServiceMonitors): when one is no longer rendered it must be deleted,
/// because server-side apply never removes whole objects. Returned as empty-bodied
/// [`Object`]s naming what to look for.
pub fn optional_objects(names: &Names) -> Vec<Object> {
    let stub = |api_version, kind, plural, name: String| Object { api_version, kind, plural, name, body: Value::Null };
    vec![
        stub("networking.k8s.io/v1", "Ingress", "ingresses", names.signaling()),
        stub("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", names.turn_egress()),
        stub("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors", names.sfu()),
        stub("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors", names.turn()),
    ]
}

/// Serialize the objects as one multi-document YAML stream (golden files, `--dry-run`).
pub fn to_yaml(objects: &[Object]) -> Result<String> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(
            &serde_saphyr::to_string(&o.body).map_err(|e| Error::Invalid { what: "yaml", message: e.to_string() })?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
