//! The `MediaCluster` custom resource: one SFU fleet (`media-node` pods) and one TURN
//! fleet (`turn-node` pods), with everything they share (auth keys, webhooks, room
//! defaults, autoscaling behaviour).
//!
//! Cross-field rules are CEL (`x-kubernetes-validations`), so the apiserver rejects a bad
//! spec at `kubectl apply` time with the message written here, and the same rules run
//! client-side in unit tests (`MediaCluster::validate_cel`).

// `KubeSchema` re-emits each struct inside a private scope to build its schema, which
// trips `unreachable_pub` on every field type; the types here are all reachable.
#![allow(unreachable_pub)]
// Printer columns legitimately repeat `type_ = "integer"` and the like.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Switchyard media cluster: scaled SFU pods (`media-node`), scaled TURN pods
/// (`turn-node`), their Services, Secrets and monitoring, reconciled by the operator.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "MediaCluster",
    doc = "A Switchyard media cluster: scaled SFU (media-node) and TURN (turn-node) fleets, reconciled by the operator.",
    namespaced,
    cel,
    status = "MediaClusterStatus",
    shortname = "mc",
    category = "switchyard",
    printcolumn(
        name = "SFU",
        type_ = "integer",
        description = "Ready media-node pods",
        json_path = ".status.sfu.ready"
    ),
    printcolumn(
        name = "TURN",
        type_ = "integer",
        description = "Ready turn-node pods",
        json_path = ".status.turn.ready"
    ),
    printcolumn(
        name = "Bandwidth",
        type_ = "string",
        description = "Relayed TURN bandwidth (bits/s)",
        json_path = ".status.turnBandwidth"
    ),
    printcolumn(
        name = "Rooms",
        type_ = "integer",
        description = "Rooms open on this cluster",
        json_path = ".status.rooms"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        description = "The Ready condition",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(format!("self.metadata.name.matches('{CLUSTER_NAME_PATTERN}') && size(self.metadata.name) <= {MAX_CLUSTER_NAME}"))
        .message(Message::Message(format!("metadata.name must be at most {MAX_CLUSTER_NAME} lowercase letters, digits and '-', starting with a letter and ending with a letter or digit: it prefixes the names of the cluster's Services and StatefulSet (<name>-turn-admin, <name>-sfu)")))
)]
#[x_kube(validation = Rule::new("self.media.mode != 'Gateway' || self.turn.replicas.min >= 1")
    .message("media.mode Gateway sends all media through TURN: turn.replicas.min must be at least 1"))]
#[x_kube(validation = Rule::new("self.sfu.replicas.max == 0 || self.sfu.replicas.min >= 1")
    .message("sfu.replicas.min must be at least 1 unless sfu.replicas.max is 0 (parked): the autoscaler scales on participants, and none can join without a media-node"))]
#[x_kube(validation = Rule::new("self.signaling.port != self.media.tcpPort")
    .message("signaling.port and media.tcpPort must differ: media-node listens on both over TCP"))]
#[x_kube(validation = Rule::new(format!("self.signaling.port != {ADMIN_PORT} && self.media.tcpPort != {ADMIN_PORT}"))
    .message(Message::Message(format!("signaling.port and media.tcpPort must not be {ADMIN_PORT}: that is media-node's admin port"))))]
#[serde(rename_all = "camelCase")]
pub struct MediaClusterSpec {
    /// The SFU fleet: how many `media-node` pods and what each may carry.
    #[serde(default)]
    pub sfu: SfuSpec,
    /// How clients reach the SFU pods' media ports.
    #[serde(default)]
    pub media: MediaExposure,
    /// The TURN fleet: how many `turn-node` pods, their listeners and their limits.
    #[serde(default)]
    pub turn: TurnSpec,
    /// How browsers reach the signaling endpoint (`/rtc`).
    #[serde(default)]
    pub signaling: SignalingSpec,
    /// Where the API keys that sign access tokens come from.
    #[serde(default)]
    pub auth: AuthSpec,
    /// HTTP endpoints that receive room and participant events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub webhooks: Vec<WebhookSpec>,
    /// Defaults for rooms that do not say otherwise.
    #[serde(default)]
    pub room_defaults: RoomDefaults,
    /// How fast the autoscaler reacts.
    #[serde(default)]
    pub autoscaling: AutoscalingBehavior,
    /// Which monitoring objects the operator creates.
    #[serde(default)]
    pub monitoring: MonitoringSpec,
}

/// The port both node binaries serve their admin API on (health, metrics, status, drain);
/// no listener of the spec may take it.
pub const ADMIN_PORT: i32 = 9090;

/// The longest MediaCluster name: `<name>-sfu` is a StatefulSet, whose
/// `controller-revision-hash` label (`<name>-sfu-<10 characters>`) must fit in 63.
pub const MAX_CLUSTER_NAME: usize = 48;

/// A MediaCluster name prefixes Service names, which are DNS-1035 labels.
pub const CLUSTER_NAME_PATTERN: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";

/// A DNS name as clients resolve it: dot-separated labels, the last starting with a
/// letter (so `999.1.1.1` is not mistaken for a name). IPs are checked with `isIP`.
pub const HOST_NAME_PATTERN: &str = "^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?[.])*[a-z]([-a-z0-9]{0,61}[a-z0-9])?$";

/// A replica range for one fleet.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(cel, validation = Rule::new("self.min <= self.max").message("replicas.min must be less than or equal to replicas.max"))]
pub struct ReplicaRange {
    /// The fewest pods the autoscaler keeps.
    #[schemars(range(min = 0, max = 1000))]
    pub min: i32,
    /// The most pods the autoscaler creates.
    #[schemars(range(min = 0, max = 1000))]
    pub max: i32,
}

impl ReplicaRange {
    /// A fixed size: `min == max == n`.
    pub fn fixed(n: i32) -> Self {
        Self { min: n, max: n }
    }
}

impl Default for ReplicaRange {
    fn default() -> Self {
        Self::fixed(1)
    }
}

/// The SFU fleet.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SfuSpec {
    /// Replica range for `media-node` pods; scaled on participants per node.
    #[serde(default)]
    pub replicas: ReplicaRange,
    /// What one `media-node` pod may carry; placement never exceeds it.
    #[serde(default)]
    pub capacity: NodeCapacity,
    /// Container image override (defaults to the operator's own version of media-node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new("self.matches('^[^\\\\s]+$')").message("sfu.image must name an image: not empty, no spaces"))]
    pub image: Option<String>,
    /// CPU and memory requests and limits for each `media-node` container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// How long a draining pod waits for its rooms to empty before it exits, in seconds.
    #[serde(default = "default_sfu_drain_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub drain_grace_period_seconds: i64,
    /// How long a participant whose signaling connection dropped is kept (its tracks,
    /// subscriptions and media) for the client to `resume`, in seconds; 0 turns resume
    /// off (a dropped connection leaves at once).
    #[serde(default = "default_resume_window_seconds")]
    #[schemars(range(min = 0, max = 300))]
    pub resume_window_seconds: i64,
}

fn default_sfu_drain_seconds() -> i64 {
    3600
}

fn default_resume_window_seconds() -> i64 {
    15
}

impl Default for SfuSpec {
    fn default() -> Self {
        Self {
            replicas: ReplicaRange::default(),
            capacity: NodeCapacity::default(),
            image: None,
            resources: None,
            drain_grace_period_seconds: default_sfu_drain_seconds(),
            resume_window_seconds: default_resume_window_seconds(),
        }
    }
}

/// What one `media-node` pod may carry. A zero means "no limit" for that dimension.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeCapacity {
    /// Rooms per pod.
    #[serde(default = "default_capacity_rooms")]
    #[schemars(range(min = 0))]
    pub rooms: i32,
    /// Participants per pod; also the autoscaler's target per pod.
    #[serde(default = "default_capacity_participants")]
    #[schemars(range(min = 0))]
    pub participants: i32,
    /// Media bandwidth per pod in bits/s (a quantity such as `800M`); absent means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))")
        .message("capacity.bandwidth must be a positive quantity in bits/s, such as 800M"))]
    pub bandwidth: Option<Quantity>,
}

fn default_capacity_rooms() -> i32 {
    100
}
fn default_capacity_participants() -> i32 {
    500
}

impl Default for NodeCapacity {
    fn default() -> Self {
        Self { rooms: default_capacity_rooms(), participants: default_capacity_participants(), bandwidth: None }
    }
}

/// How media reaches the SFU pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.udpPort != self.tcpPort").message("media.udpPort and media.tcpPort must differ"))]
#[serde(rename_all = "camelCase")]
pub struct MediaExposure {
    /// `Gateway`: SFU pods stay private and every client relays through TURN.
    /// `Direct`: SFU pods are reachable on a host port with the node's external IP
    /// advertised, and TURN is the fallback.
    #[serde(default)]
    pub mode: ExposureMode,
    /// The one UDP port all of a pod's peer connections share.
    #[serde(default = "default_udp_port")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("media.udpPort must be between 1 and 65535"))]
    pub udp_port: i32,
    /// The passive ICE-TCP port, for clients whose UDP is blocked.
    #[serde(default = "default_tcp_port")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("media.tcpPort must be between 1 and 65535"))]
    pub tcp_port: i32,
    /// Addresses to advertise as host candidates instead of the node's external IP
    /// (Direct mode; NAT 1:1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(max = 45)))]
    #[x_kube(validation = Rule::new("self.all(a, isIP(a))")
        .message(Message::Expression(name_bad("media.advertisedAddresses must be IP addresses; not: ", "self.filter(x, !isIP(x))"))))]
    pub advertised_addresses: Vec<String>,
}

fn default_udp_port() -> i32 {
    7882
}
fn default_tcp_port() -> i32 {
    7881
}

impl Default for MediaExposure {
    fn default() -> Self {
        Self {
            mode: ExposureMode::default(),
            udp_port: default_udp_port(),
            tcp_port: default_tcp_port(),
            advertised_addresses: Vec::new(),
        }
    }
}

/// See [`MediaExposure::mode`].
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExposureMode {
    /// SFU pods private; all media via TURN.
    #[default]
    Gateway,
    /// SFU pods on host ports; TURN as fallback.
    Direct,
}

/// The TURN fleet.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TurnSpec {
    /// Replica range for `turn-node` pods; scaled on relayed bandwidth.
    #[serde(default)]
    pub replicas: ReplicaRange,
    /// The relayed bandwidth one pod should carry, in bits/s (a quantity such as `200M`).
    /// The autoscaler aims for total bandwidth / this many pods.
    #[serde(default = "default_target_bandwidth")]
    #[x_kube(validation = Rule::new("isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))")
        .message("turn.targetBandwidthPerPod must be a positive quantity in bits/s, such as 200M"))]
    pub target_bandwidth_per_pod: Quantity,
    /// Where clients reach TURN. Several may be set (for example UDP 3478 and TLS 443).
    #[serde(default = "default_listeners")]
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(validation = Rule::new("self.all(l, self.exists_one(m, m.port == l.port && (m.protocol == 'UDP') == (l.protocol == 'UDP')))")
        .message("turn.listeners must not share a port on the same transport"))]
    #[x_kube(validation = Rule::new("self.all(l, self.exists_one(m, m.name == l.name))")
        .message("turn.listeners names must be unique: each names a Service port"))]
    #[x_kube(validation = Rule::new(format!("self.all(l, l.protocol == 'UDP' || l.port != {ADMIN_PORT})"))
        .message(Message::Message(format!("turn.listeners: a TCP or TLS listener must not use port {ADMIN_PORT}, turn-node's admin port"))))]
    pub listeners: Vec<TurnListener>,
    /// The long-term credential realm.
    #[serde(default = "default_realm")]
    #[schemars(length(min = 1, max = 253))]
    pub realm: String,
    /// The UDP ports relayed allocations are bound to.
    #[serde(default)]
    pub relay_port_range: PortRange,
    /// Which peers a client may relay to. Loopback, link-local, multicast and similar
    /// addresses are always denied unless an allow CIDR names them.
    #[serde(default)]
    pub peers: PeerPolicy,
    /// Per-user and per-pod limits.
    #[serde(default)]
    pub quotas: TurnQuotas,
    /// How the TURN Service is exposed.
    #[serde(default)]
    pub service: TurnServiceSpec,
    /// Container image override (defaults to the operator's own version of turn-node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new("self.matches('^[^\\\\s]+$')").message("turn.image must name an image: not empty, no spaces"))]
    pub image: Option<String>,
    /// CPU and memory requests and limits for each `turn-node` container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// How long a draining pod keeps existing allocations alive before it exits, in seconds.
    #[serde(default = "default_turn_drain_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub drain_grace_period_seconds: i64,
}

fn default_target_bandwidth() -> Quantity {
    Quantity("200M".into())
}
fn default_listeners() -> Vec<TurnListener> {
    vec![
        TurnListener { name: "udp".into(), protocol: TurnProtocol::UDP, port: 3478, tls_secret_ref: None },
        TurnListener { name: "tcp".into(), protocol: TurnProtocol::TCP, port: 3478, tls_secret_ref: None },
    ]
}
fn default_realm() -> String {
    "switchyard".into()
}
fn default_turn_drain_seconds() -> i64 {
    3600
}

impl Default for TurnSpec {
    fn default() -> Self {
        Self {
            replicas: ReplicaRange::default(),
            target_bandwidth_per_pod: default_target_bandwidth(),
            listeners: default_listeners(),
            realm: default_realm(),
            relay_port_range: PortRange::default(),
            peers: PeerPolicy::default(),
            quotas: TurnQuotas::default(),
            service: TurnServiceSpec::default(),
            image: None,
            resources: None,
            drain_grace_period_seconds: default_turn_drain_seconds(),
        }
    }
}

/// One TURN listener.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.protocol != 'TLS' || has(self.tlsSecretRef)")
    .message("a TLS listener needs tlsSecretRef naming a kubernetes.io/tls Secret"))]
#[serde(rename_all = "camelCase")]
pub struct TurnListener {
    /// A short name, used for the Service port name.
    #[schemars(length(min = 1, max = 15), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// The transport.
    pub protocol: TurnProtocol,
    /// The port clients connect to (443 is allowed, for clients behind strict firewalls).
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("listener port must be between 1 and 65535"))]
    pub port: i32,
    /// The Secret (type `kubernetes.io/tls`) holding the certificate of a TLS listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_ref: Option<SecretRef>,
}

/// A TURN transport.
#[allow(clippy::upper_case_acronyms)]
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnProtocol {
    /// TURN over UDP.
    UDP,
    /// TURN over TCP.
    TCP,
    /// TURN over TLS (TCP).
    TLS,
}

/// A reference to a Secret in the same namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// An inclusive port range.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(cel, validation = Rule::new("self.min <= self.max").message("relayPortRange.min must be less than or equal to relayPortRange.max"))]
#[x_kube(validation = Rule::new("self.min >= 1024 && self.max <= 65535").message("relayPortRange must lie within 1024-65535"))]
pub struct PortRange {
    /// The first port.
    pub min: i32,
    /// The last port.
    pub max: i32,
}

impl Default for PortRange {
    fn default() -> Self {
        Self { min: 49152, max: 65535 }
    }
}

/// The ranges turn-node never relays to unless an allow CIDR names them: loopback,
/// "this network", link-local (incl. the 169.254.169.254 metadata service), multicast,
/// reserved and broadcast; IPv6 unspecified, loopback, link-local, site-local, ULA and
/// multicast. (IPv4-mapped and NAT64 forms are judged as the IPv4 address they carry.)
pub const BUILT_IN_DENIED: [&str; 11] = [
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "fe80::/10",
    "fec0::/10",
    "fc00::/7",
    "ff00::/8",
];

/// A CEL `messageExpression`: `prefix` and the first two entries of the list `bad`
/// (then `, …`). `join` would name them all, but the apiserver cannot bound its cost and
/// refuses the CRD.
fn name_bad(prefix: &str, bad: &str) -> String {
    format!("'{prefix}' + {bad}[0] + (size({bad}) > 1 ? ', ' + {bad}[1] : '') + (size({bad}) > 2 ? ', …' : '')")
}

/// CEL: true when CIDR `c` overlaps a built-in denied range.
fn overlaps_built_in(c: &str) -> String {
    let list = BUILT_IN_DENIED.map(|b| format!("'{b}'")).join(", ");
    format!("isCIDR({c}) && [{list}].exists(b, cidr(b).containsIP(cidr({c}).ip()) || cidr({c}).containsCIDR(b))")
}

/// Which peer addresses TURN relays to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(format!("(has(self.unsafeLiftBuiltInDenies) && self.unsafeLiftBuiltInDenies) || !has(self.allow) || !self.allow.exists(c, {})", overlaps_built_in("c")))
    .message(Message::Expression(name_bad("peers.allow entries that overlap the built-in denies (loopback, link-local incl. 169.254.169.254, multicast, reserved, IPv6 ULA) let clients relay into the TURN pods\\' own network: set peers.unsafeLiftBuiltInDenies: true to mean that; overlapping: ", &format!("self.allow.filter(x, {})", overlaps_built_in("x"))))))]
pub struct PeerPolicy {
    /// CIDRs that are allowed even if a listed deny rule matches. In Gateway mode the
    /// operator adds the SFU pods' addresses here. An entry that overlaps a built-in denied
    /// range ([`BUILT_IN_DENIED`]) needs `unsafeLiftBuiltInDenies`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 49)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))")
        .message(Message::Expression(name_bad("peers.allow entries must be CIDRs such as 10.0.0.0/8; not: ", "self.filter(x, !isCIDR(x))"))))]
    pub allow: Vec<String>,
    /// Extra CIDRs to deny, such as the cluster's Service CIDR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 49)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))")
        .message(Message::Expression(name_bad("peers.deny entries must be CIDRs such as 10.96.0.0/12; not: ", "self.filter(x, !isCIDR(x))"))))]
    pub deny: Vec<String>,
    /// Let `allow` lift the built-in denies (loopback, link-local and metadata addresses,
    /// multicast…): clients may then relay into the TURN pods' own network. Off unless you
    /// mean exactly that.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsafe_lift_built_in_denies: bool,
}

/// TURN limits. A zero means "no limit".
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TurnQuotas {
    /// Live allocations one user (the part after `:` in a REST username) may hold.
    #[serde(default = "default_allocations_per_user")]
    #[schemars(range(min = 0))]
    pub allocations_per_user: i32,
    /// Live allocations one pod may hold.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub total_allocations: i32,
    /// Bandwidth cap per allocation in bits/s (a quantity such as `10M`); absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))")
        .message("quotas.bandwidthPerAllocation must be a positive quantity in bits/s, such as 10M"))]
    pub bandwidth_per_allocation: Option<Quantity>,
    /// Unauthenticated requests per second one client address may send.
    #[serde(default = "default_unauth_rate")]
    #[schemars(range(min = 0))]
    pub unauthenticated_requests_per_second: i32,
}

fn default_allocations_per_user() -> i32 {
    10
}
fn default_unauth_rate() -> i32 {
    20
}

impl Default for TurnQuotas {
    fn default() -> Self {
        Self {
            allocations_per_user: default_allocations_per_user(),
            total_allocations: 0,
            bandwidth_per_allocation: None,
            unauthenticated_requests_per_second: default_unauth_rate(),
        }
    }
}

/// The TURN Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TurnServiceSpec {
    /// The Service type.
    #[serde(default)]
    pub r#type: ServiceType,
    /// Annotations for the Service (for example a cloud load balancer's settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Hosts or IPs clients use to reach TURN (a DNS name you manage, a load balancer in
    /// front of the nodes), each with the listeners' ports. Overrides the discovered
    /// address: the load balancer's, or for NodePort the nodes running turn pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 253)))]
    #[x_kube(validation = Rule::new(format!("self.all(a, isIP(a) || a.matches('{HOST_NAME_PATTERN}'))"))
        .message(Message::Expression(name_bad("turn.service.externalAddresses must be DNS names or IP addresses, without ports or paths; not: ", &format!("self.filter(x, !(isIP(x) || x.matches('{HOST_NAME_PATTERN}')))")))))]
    pub external_addresses: Vec<String>,
}

/// A Kubernetes Service type.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    ClusterIP,
    /// A port on every node.
    NodePort,
    /// A cloud load balancer.
    #[default]
    LoadBalancer,
}

/// The signaling endpoint.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SignalingSpec {
    /// The HTTP port of media-node (WebSocket `/rtc` and the room API).
    #[serde(default = "default_signaling_port")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("signaling.port must be between 1 and 65535"))]
    pub port: i32,
    /// The signaling Service type.
    #[serde(default = "default_signaling_service_type")]
    pub service_type: ServiceType,
    /// An optional Ingress in front of the signaling Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// Proxies in front of media-node whose `X-Forwarded-For` names the client: the
    /// ingress controller's pods, a load balancer that rewrites source addresses (CIDRs).
    /// Their connections count toward the node's total only, and each WebSocket they
    /// forward counts toward `maxConnectionsPerClient` under the client they name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 49)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))")
        .message(Message::Expression(name_bad("signaling.trustedProxies entries must be CIDRs such as 10.244.0.0/16; not: ", "self.filter(x, !isCIDR(x))"))))]
    pub trusted_proxies: Vec<String>,
    /// Open signaling connections from one client address on each media-node (an IPv6
    /// client: its /64); 0 means no limit. Default 256, except with an `ingress` and no
    /// `trustedProxies`: every client then arrives from the ingress controller's
    /// addresses, so the default is 0 (list the controller in `trustedProxies` to keep
    /// a per-client cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("signaling.maxConnectionsPerClient must not be negative"))]
    pub max_connections_per_client: Option<i32>,
}

impl SignalingSpec {
    /// The per-client connection cap media-node enforces (see `maxConnectionsPerClient`).
    pub fn connections_per_client(&self) -> i32 {
        let behind_unknown_proxy = self.ingress.is_some() && self.trusted_proxies.is_empty();
        self.max_connections_per_client.unwrap_or(if behind_unknown_proxy { 0 } else { 256 })
    }
}

fn default_signaling_port() -> i32 {
    7880
}
fn default_signaling_service_type() -> ServiceType {
    ServiceType::ClusterIP
}

impl Default for SignalingSpec {
    fn default() -> Self {
        Self {
            port: default_signaling_port(),
            service_type: default_signaling_service_type(),
            ingress: None,
            trusted_proxies: Vec::new(),
            max_connections_per_client: None,
        }
    }
}

/// An Ingress for signaling.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// The public host name.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// The IngressClass to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// A `kubernetes.io/tls` Secret for the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_ref: Option<SecretRef>,
    /// Extra annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Access-token signing keys.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// A Secret whose keys are API keys and whose values are their secrets. When absent,
    /// the operator generates one (`<cluster>-keys`) with a single key pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_secret_ref: Option<SecretRef>,
}

/// A webhook receiver.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// The URL events are POSTed to.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && (self.startsWith('http://') || self.startsWith('https://')) && url(self).getHostname() != ''")
        .message("webhook url must be an http(s) URL with a host, such as https://app.example.com/switchyard/events"))]
    pub url: String,
    /// Which events to send (`room_started`, `room_finished`, `participant_joined`,
    /// `participant_left`, `track_published`, `track_unpublished`); empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub events: Vec<WebhookEvent>,
    /// The API key whose secret signs each request (`Authorization` header); defaults
    /// to the first key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

/// A webhook event kind.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEvent {
    /// A room opened on a node.
    RoomStarted,
    /// A room closed.
    RoomFinished,
    /// A participant joined.
    ParticipantJoined,
    /// A participant left.
    ParticipantLeft,
    /// A track was published.
    TrackPublished,
    /// A track was unpublished.
    TrackUnpublished,
}

/// Room defaults.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoomDefaults {
    /// Create a room on first join when the token has `roomCreate` or names the room.
    #[serde(default = "default_true")]
    pub auto_create: bool,
    /// Close a room this many seconds after its last participant left.
    #[serde(default = "default_empty_timeout")]
    #[schemars(range(min = 0, max = 86400))]
    pub empty_timeout_seconds: i32,
    /// Participants per room; 0 means no limit.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub max_participants: i32,
}

fn default_true() -> bool {
    true
}
fn default_empty_timeout() -> i32 {
    300
}

impl Default for RoomDefaults {
    fn default() -> Self {
        Self { auto_create: true, empty_timeout_seconds: default_empty_timeout(), max_participants: 0 }
    }
}

/// Autoscaling behaviour, shared by both fleets.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingBehavior {
    /// How often node load is polled, in seconds.
    #[serde(default = "default_poll_seconds")]
    #[schemars(range(min = 1, max = 300))]
    pub poll_interval_seconds: i32,
    /// Load must stay below target this long before a pod is removed, in seconds.
    #[serde(default = "default_scale_down_window")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_stabilization_seconds: i32,
    /// Load must stay above target this long before a pod is added, in seconds.
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_up_stabilization_seconds: i32,
    /// No change while the load is within this percentage of the target.
    #[serde(default = "default_tolerance")]
    #[schemars(range(min = 0, max = 100))]
    pub tolerance_percent: i32,
}

fn default_poll_seconds() -> i32 {
    10
}
fn default_scale_down_window() -> i32 {
    300
}
fn default_tolerance() -> i32 {
    10
}

impl Default for AutoscalingBehavior {
    fn default() -> Self {
        Self {
            poll_interval_seconds: default_poll_seconds(),
            scale_down_stabilization_seconds: default_scale_down_window(),
            scale_up_stabilization_seconds: 0,
            tolerance_percent: default_tolerance(),
        }
    }
}

/// Monitoring objects.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Create ServiceMonitors (when the Prometheus Operator's CRD exists).
    #[serde(default = "default_true")]
    pub service_monitor: bool,
    /// Create PrometheusRules with the shipped alerts (when that CRD exists).
    #[serde(default = "default_true")]
    pub alert_rules: bool,
}

impl Default for MonitoringSpec {
    fn default() -> Self {
        Self { service_monitor: true, alert_rules: true }
    }
}

/// What the operator last observed of a MediaCluster.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MediaClusterStatus {
    /// `Ready`, `Progressing` and `Degraded`, each with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The SFU fleet's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sfu: Option<FleetStatus>,
    /// The TURN fleet's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<FleetStatus>,
    /// Rooms open across the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<i64>,
    /// Measured relayed TURN bandwidth in bits/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_bandwidth_bps: Option<i64>,
    /// The same, human-readable (`12.5M`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_bandwidth: Option<String>,
    /// Each media-node's last reported load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub nodes: Vec<NodeLoad>,
    /// Where clients connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
}

/// Replica counts of one fleet.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FleetStatus {
    /// What the autoscaler wants.
    pub desired: i32,
    /// What exists.
    pub current: i32,
    /// What is ready.
    pub ready: i32,
    /// Pods that are draining.
    #[serde(default)]
    pub draining: i32,
}

/// One media-node's load.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeLoad {
    /// The pod name.
    pub name: String,
    /// Rooms open.
    pub rooms: i64,
    /// Participants connected.
    pub participants: i64,
    /// Media bandwidth in bits/s.
    pub bandwidth_bps: i64,
    /// Ready for new rooms.
    pub ready: bool,
    /// Draining: takes no new rooms.
    pub draining: bool,
}

/// Client-facing endpoints.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// The WebSocket URL for `/rtc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signaling_url: Option<String>,
    /// The TURN URIs handed to clients (`turn:host:3478?transport=udp`, `turns:host:443`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turn_uris: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(spec: MediaClusterSpec) -> MediaCluster {
        MediaCluster::new("edge", spec)
    }

    fn default_spec() -> MediaClusterSpec {
        serde_json::from_str("{}").unwrap()
    }

    /// The messages of every rule `spec` breaks, sorted.
    fn violations(spec: MediaClusterSpec) -> Vec<String> {
        match cluster(spec).validate_cel() {
            Ok(()) => vec![],
            Err(errors) => {
                let mut m: Vec<String> = errors.iter().map(|e| e.message.clone()).collect();
                m.sort();
                m
            }
        }
    }

    #[test]
    fn empty_spec_defaults_to_a_valid_gateway_cluster() {
        let spec = default_spec();
        assert_eq!(spec.media.mode, ExposureMode::Gateway);
        assert_eq!(spec.turn.listeners.len(), 2);
        assert_eq!(spec.turn.target_bandwidth_per_pod, Quantity("200M".into()));
        assert_eq!(spec.sfu.drain_grace_period_seconds, 3600, "an absent sfu block drains for an hour");
        assert_eq!(spec.turn.drain_grace_period_seconds, 3600);
        assert_eq!(violations(spec), Vec::<String>::new());
    }

    #[test]
    fn a_full_valid_spec_passes() {
        let mut spec = default_spec();
        spec.media.mode = ExposureMode::Direct;
        spec.media.advertised_addresses = vec!["203.0.113.7".into(), "2001:db8::7".into()];
        spec.sfu.replicas = ReplicaRange { min: 2, max: 10 };
        spec.sfu.capacity.bandwidth = Some(Quantity("800M".into()));
        spec.turn.replicas = ReplicaRange { min: 0, max: 20 };
        spec.turn.listeners.push(TurnListener {
            name: "tls".into(),
            protocol: TurnProtocol::TLS,
            port: 443,
            tls_secret_ref: Some(SecretRef { name: "turn-cert".into() }),
        });
        spec.turn.peers.allow = vec!["10.244.0.0/16".into()];
        spec.turn.peers.deny = vec!["10.96.0.0/12".into(), "fd00::/8".into()];
        spec.turn.quotas.bandwidth_per_allocation = Some(Quantity("10M".into()));
        spec.webhooks = vec![WebhookSpec {
            url: "https://hooks.example.com/switchyard".into(),
            events: vec![WebhookEvent::RoomStarted],
            api_key: None,
        }];
        assert_eq!(violations(spec), Vec::<String>::new());
    }

    #[test]
    fn replica_min_above_max_is_rejected_for_both_fleets() {
        let mut spec = default_spec();
        spec.sfu.replicas = ReplicaRange { min: 5, max: 2 };
        spec.turn.replicas = ReplicaRange { min: 3, max: 1 };
        assert_eq!(
            violations(spec),
            vec![
                "replicas.min must be less than or equal to replicas.max",
                "replicas.min must be less than or equal to replicas.max"
            ]
        );
    }

    /// Issue 18, finding 5: `min: 0` let the autoscaler take the last TURN pod away.
    #[test]
    fn gateway_mode_needs_a_turn_pod_at_all_times() {
        for range in [ReplicaRange::fixed(0), ReplicaRange { min: 0, max: 5 }] {
            let mut spec = default_spec();
            spec.turn.replicas = range.clone();
            assert_eq!(
                violations(spec.clone()),
                vec!["media.mode Gateway sends all media through TURN: turn.replicas.min must be at least 1"],
                "{range:?}"
            );
            spec.media.mode = ExposureMode::Direct;
            assert_eq!(violations(spec), Vec::<String>::new(), "Direct mode may run without TURN");
        }
    }

    /// Issue 18, finding 5: an SFU fleet that may scale to zero never comes back (no
    /// participant can join to make load); parked at 0/0 is allowed (and not Ready).
    #[test]
    fn the_sfu_fleet_scales_from_one_or_is_parked() {
        let mut spec = default_spec();
        spec.sfu.replicas = ReplicaRange { min: 0, max: 4 };
        assert_eq!(
            violations(spec.clone()),
            vec![
                "sfu.replicas.min must be at least 1 unless sfu.replicas.max is 0 (parked): the autoscaler scales on participants, and none can join without a media-node"
            ]
        );
        spec.sfu.replicas = ReplicaRange::fixed(0);
        assert_eq!(violations(spec), Vec::<String>::new());
    }

    fn named(name: &str) -> MediaCluster {
        MediaCluster::new(name, default_spec())
    }

    /// Issue 18, finding 4: the name prefixes Service names (DNS-1035 labels) and the
    /// StatefulSet's revision label; `edge.v2` or 64 characters could not be rendered.
    #[test]
    fn cluster_names_that_cannot_prefix_object_names_are_refused() {
        let msg = "metadata.name must be at most 48 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit: it prefixes the names of the cluster's Services and StatefulSet (<name>-turn-admin, <name>-sfu)";
        for bad in ["edge.v2", &"a".repeat(64), &"a".repeat(49), "1edge", "edge-"] {
            let errors = named(bad).validate_cel().unwrap_err();
            let got: Vec<String> = errors.iter().map(|e| e.message.clone()).collect();
            assert_eq!(got, vec![msg], "{bad}");
        }
        for good in ["edge", "e", &"a".repeat(48), "edge-v2"] {
            assert!(named(good).validate_cel().is_ok(), "{good}");
        }
    }

    /// Issue 18, finding 4: clashing ports and names the operator could not render.
    #[test]
    fn listener_names_and_ports_that_clash_are_refused() {
        let mut spec = default_spec();
        spec.turn.listeners[1].name = "udp".into();
        assert_eq!(violations(spec), vec!["turn.listeners names must be unique: each names a Service port"]);

        let mut spec = default_spec();
        spec.turn.listeners[1].port = ADMIN_PORT;
        assert_eq!(
            violations(spec),
            vec!["turn.listeners: a TCP or TLS listener must not use port 9090, turn-node's admin port"]
        );
        let mut spec = default_spec();
        spec.turn.listeners[0].port = ADMIN_PORT;
        assert_eq!(violations(spec), Vec::<String>::new(), "UDP 9090 does not meet the TCP admin port");

        let mut spec = default_spec();
        spec.signaling.port = spec.media.tcp_port;
        assert_eq!(
            violations(spec),
            vec!["signaling.port and media.tcpPort must differ: media-node listens on both over TCP"]
        );
        for (signaling, tcp) in [(ADMIN_PORT, 7881), (7880, ADMIN_PORT)] {
            let mut spec = default_spec();
            spec.signaling.port = signaling;
            spec.media.tcp_port = tcp;
            assert_eq!(
                violations(spec),
                vec!["signaling.port and media.tcpPort must not be 9090: that is media-node's admin port"]
            );
        }
    }

    #[test]
    fn images_must_name_something() {
        let mut spec = default_spec();
        spec.sfu.image = Some(String::new());
        spec.turn.image = Some("registry.example/turn node:1".into());
        assert_eq!(
            violations(spec.clone()),
            vec![
                "sfu.image must name an image: not empty, no spaces",
                "turn.image must name an image: not empty, no spaces"
            ]
        );
        spec.sfu.image = Some("registry.example/media-node@sha256:0123".into());
        spec.turn.image = None;
        assert_eq!(violations(spec), Vec::<String>::new());
    }

    /// Issue 18, finding 6: `allow: [0.0.0.0/0]` silently lifted the loopback and metadata
    /// denies; it now needs the loudly named field.
    #[test]
    fn allowing_built_in_denied_ranges_needs_the_unsafe_field() {
        let msg = |entries: &str| {
            format!(
                "peers.allow entries that overlap the built-in denies (loopback, link-local incl. 169.254.169.254, multicast, reserved, IPv6 ULA) let clients relay into the TURN pods' own network: set peers.unsafeLiftBuiltInDenies: true to mean that; overlapping: {entries}"
            )
        };
        let cases: [(&[&str], Option<&str>); 8] = [
            (&["0.0.0.0/0"], Some("0.0.0.0/0")),
            (&["10.0.0.0/8", "169.254.169.254/32"], Some("169.254.169.254/32")),
            (&["127.0.0.1/32", "::/0"], Some("127.0.0.1/32, ::/0")),
            (&["0.0.0.0/1", "fe80::/64", "ff02::1/128"], Some("0.0.0.0/1, fe80::/64, …")),
            (&["128.0.0.0/1"], Some("128.0.0.0/1")), // holds multicast and reserved
            (&["fd00::/8"], Some("fd00::/8")),
            (&["10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"], None),
            (&["1.0.0.0/8", "100.64.0.0/10"], None),
        ];
        for (allow, bad) in cases {
            let mut spec = default_spec();
            spec.turn.peers.allow = allow.iter().map(|s| (*s).to_owned()).collect();
            let want: Vec<String> = bad.map(msg).into_iter().collect();
            assert_eq!(violations(spec.clone()), want, "{allow:?}");
            spec.turn.peers.unsafe_lift_built_in_denies = true;
            assert_eq!(violations(spec), Vec::<String>::new(), "{allow:?} with the unsafe field");
        }
    }

    #[test]
    fn port_rules() {
        let mut spec = default_spec();
        spec.media.udp_port = 70000;
        spec.media.tcp_port = 0;
        spec.signaling.port = -1;
        spec.turn.listeners[0].port = 65536;
        assert_eq!(
            violations(spec),
            vec![
                "listener port must be between 1 and 65535",
                "media.tcpPort must be between 1 and 65535",
                "media.udpPort must be between 1 and 65535",
                "signaling.port must be between 1 and 65535",
            ]
        );

        let mut spec = default_spec();
        spec.media.tcp_port = spec.media.udp_port;
        assert_eq!(violations(spec), vec!["media.udpPort and media.tcpPort must differ"]);
    }

    #[test]
    fn relay_port_range_rules() {
        let mut spec = default_spec();
        spec.turn.relay_port_range = PortRange { min: 60000, max: 50000 };
        assert_eq!(violations(spec), vec!["relayPortRange.min must be less than or equal to relayPortRange.max"]);

        let mut spec = default_spec();
        spec.turn.relay_port_range = PortRange { min: 80, max: 70000 };
        assert_eq!(violations(spec), vec!["relayPortRange must lie within 1024-65535"]);
    }

    #[test]
    fn target_bandwidth_must_be_a_positive_quantity() {
        for bad in ["0", "-5M", "lots", "0M"] {
            let mut spec = default_spec();
            spec.turn.target_bandwidth_per_pod = Quantity(bad.into());
            assert_eq!(
                violations(spec),
                vec!["turn.targetBandwidthPerPod must be a positive quantity in bits/s, such as 200M"],
                "{bad}"
            );
        }
        let mut spec = default_spec();
        spec.turn.target_bandwidth_per_pod = Quantity("1.5G".into());
        assert_eq!(violations(spec), Vec::<String>::new());
    }

    #[test]
    fn tls_listener_needs_a_secret_and_ports_are_unique_per_transport() {
        let mut spec = default_spec();
        spec.turn.listeners.push(TurnListener {
            name: "tls".into(),
            protocol: TurnProtocol::TLS,
            port: 443,
            tls_secret_ref: None,
        });
        assert_eq!(violations(spec), vec!["a TLS listener needs tlsSecretRef naming a kubernetes.io/tls Secret"]);

        let mut spec = default_spec();
        // TCP 3478 exists already; TLS on 3478 collides with it (both are TCP).
        spec.turn.listeners.push(TurnListener {
            name: "tls".into(),
            protocol: TurnProtocol::TLS,
            port: 3478,
            tls_secret_ref: Some(SecretRef { name: "c".into() }),
        });
        assert_eq!(violations(spec), vec!["turn.listeners must not share a port on the same transport"]);
    }

    #[test]
    fn peer_cidrs_and_advertised_addresses_are_checked() {
        let mut spec = default_spec();
        spec.turn.peers.allow = vec!["10.0.0.0/8".into(), "not-a-cidr".into()];
        spec.turn.peers.deny = vec!["10.96.0.1".into()];
        spec.media.advertised_addresses = vec!["example.com".into()];
        // Each message names the entries that are wrong (finding 6).
        assert_eq!(
            violations(spec),
            vec![
                "media.advertisedAddresses must be IP addresses; not: example.com",
                "peers.allow entries must be CIDRs such as 10.0.0.0/8; not: not-a-cidr",
                "peers.deny entries must be CIDRs such as 10.96.0.0/12; not: 10.96.0.1",
            ]
        );
    }

    #[test]
    fn signaling_trusted_proxies_are_cidrs_and_the_per_client_cap_has_a_default() {
        let mut spec = default_spec();
        assert_eq!(spec.signaling.connections_per_client(), 256);
        spec.signaling.ingress = Some(IngressSpec {
            host: "rtc.example.com".into(),
            class_name: None,
            tls_secret_ref: None,
            annotations: BTreeMap::new(),
        });
        assert_eq!(spec.signaling.connections_per_client(), 0, "behind an ingress nobody named as trusted");
        spec.signaling.trusted_proxies = vec!["10.244.0.0/16".into()];
        assert_eq!(spec.signaling.connections_per_client(), 256);
        spec.signaling.max_connections_per_client = Some(32);
        assert_eq!(spec.signaling.connections_per_client(), 32);
        assert_eq!(violations(spec.clone()), Vec::<String>::new());
        spec.signaling.trusted_proxies.push("ingress-nginx".into());
        spec.signaling.max_connections_per_client = Some(-1);
        assert_eq!(
            violations(spec),
            vec![
                "signaling.maxConnectionsPerClient must not be negative",
                "signaling.trustedProxies entries must be CIDRs such as 10.244.0.0/16; not: ingress-nginx",
            ]
        );
    }

    #[test]
    fn turn_external_addresses_are_hosts_or_ips() {
        let mut spec = default_spec();
        spec.turn.service.external_addresses =
            vec!["turn.example.com".into(), "2001:db8::1".into(), "203.0.113.9".into()];
        assert_eq!(violations(spec.clone()), Vec::<String>::new());
        spec.turn.service.external_addresses = vec!["turn".into(), "a-1.b2.example".into()];
        assert_eq!(violations(spec.clone()), Vec::<String>::new());
        // Issue 18, finding 6: these passed and became TURN URIs handed to clients. The
        // message names the entry.
        let msg = "turn.service.externalAddresses must be DNS names or IP addresses, without ports or paths; not: ";
        for bad in [
            "turn.example.com:3478",
            "not a host!",
            "10.0.0.0/8",
            "999.1.1.1",
            "host/path?x=1",
            "Turn.Example.com",
            "-x.example.com",
        ] {
            spec.turn.service.external_addresses = vec!["turn.example.com".into(), bad.into()];
            assert_eq!(violations(spec.clone()), vec![format!("{msg}{bad}")], "{bad}");
        }
        spec.turn.service.external_addresses =
            ["a b", "turn.example.com", "1.2.3.999", "x/y"].map(String::from).to_vec();
        assert_eq!(violations(spec.clone()), vec![format!("{msg}a b, 1.2.3.999, …")]);
    }

    #[test]
    fn webhook_urls_must_be_http() {
        let msg = "webhook url must be an http(s) URL with a host, such as https://app.example.com/switchyard/events";
        // `http://` (finding 3) made media-node exit at start in a restart loop.
        for bad in ["ftp://example.com/x", "http://", "https://", "http://:8080/x", "example.com"] {
            let mut spec = default_spec();
            spec.webhooks = vec![WebhookSpec { url: bad.into(), events: vec![], api_key: None }];
            assert_eq!(violations(spec), vec![msg], "{bad}");
        }
        for good in ["http://receiver:8080/hooks", "https://[2001:db8::1]/x", "http://10.0.0.1"] {
            let mut spec = default_spec();
            spec.webhooks = vec![WebhookSpec { url: good.into(), events: vec![], api_key: None }];
            assert_eq!(violations(spec), Vec::<String>::new(), "{good}");
        }
    }

    #[test]
    fn fragment_rules_run_on_their_own() {
        let ok = serde_json::json!({"min": 1, "max": 3});
        let bad = serde_json::json!({"min": 4, "max": 3});
        assert!(ReplicaRange::validate_cel(&ok, None).is_ok());
        assert!(ReplicaRange::validate_cel(&bad, None).is_err());
        assert!(PortRange::validate_cel(&serde_json::json!({"min": 5000, "max": 4000}), None).is_err());
    }
}
