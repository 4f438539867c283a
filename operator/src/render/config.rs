//! The `config.yaml` each node reads (`--config /etc/switchyard/config/config.yaml`), rendered
//! from the MediaCluster. Field names are camelCase like the CRD. `turnNode` follows
//! turn-node's existing configuration file exactly; `mediaNode` is the contract media-node
//! implements.

use serde::Serialize;
use switchyard_api::media_cluster::{ExposureMode, TurnListener, TurnProtocol, WebhookSpec};
use switchyard_api::quantity::parse_quantity;
use switchyard_api::{MediaCluster, quantity};

use crate::{Error, Result};

/// Where node containers find their files.
pub mod paths {
    /// The config file. The whole ConfigMap is mounted as a directory (never `subPath`)
    /// so the kubelet updates the file in place when the operator changes it.
    pub const CONFIG: &str = "/etc/switchyard/config/config.yaml";
    /// The directory the config ConfigMap is mounted at.
    pub const CONFIG_DIR: &str = "/etc/switchyard/config";
    /// The TURN shared secret directory (file `secret`).
    pub const TURN_SECRET_DIR: &str = "/etc/switchyard/turn";
    /// The TURN shared secret file.
    pub const TURN_SECRET: &str = "/etc/switchyard/turn/secret";
    /// media-node's API keys: one file per key.
    pub const KEYS_DIR: &str = "/etc/switchyard/keys";
    /// TLS material of TURN listener `<name>`: `<dir>/<name>/tls.crt`, `tls.key`.
    pub const TLS_DIR: &str = "/etc/switchyard/tls";
}

fn bandwidth(q: &Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>, what: &'static str) -> Result<u64> {
    match q {
        Some(q) => parse_quantity(&q.0).map_err(|e| Error::Invalid { what, message: e.to_string() }),
        None => Ok(0),
    }
}

/// media-node's configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaNodeConfig {
    /// The MediaCluster name (Rooms with this `clusterRef` are served).
    pub cluster: String,
    /// Signaling HTTP port (`/rtc`, room API).
    pub signaling_port: i32,
    /// Admin port (health, metrics, internal status, drain).
    pub admin_port: i32,
    /// `Gateway` or `Direct`.
    pub mode: ExposureMode,
    /// The shared UDP media port.
    pub udp_port: i32,
    /// The ICE-TCP port.
    pub tcp_port: i32,
    /// Addresses to advertise (Direct mode); empty: `HOST_IP`.
    pub advertised_addresses: Vec<String>,
    /// Limits the node enforces itself (0: none).
    pub capacity: CapacityConfig,
    /// API keys directory.
    pub keys_dir: String,
    /// TURN servers handed to clients, and the secret to mint their credentials.
    pub turn: TurnClientConfig,
    /// Defaults for rooms.
    pub room_defaults: switchyard_api::media_cluster::RoomDefaults,
    /// Webhook receivers.
    pub webhooks: Vec<WebhookSpec>,
    /// How long a drain waits for rooms to empty.
    pub drain_grace_seconds: i64,
}

/// Per-node limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityConfig {
    /// Rooms.
    pub rooms: i32,
    /// Participants.
    pub participants: i32,
    /// Bits/s.
    pub bandwidth_bps: u64,
}

/// What media-node needs to hand out TURN servers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnClientConfig {
    /// The TURN URIs (`turn:host:3478?transport=udp`).
    pub uris: Vec<String>,
    /// The realm.
    pub realm: String,
    /// The shared secret file.
    pub secret_file: String,
    /// Lifetime of minted TURN credentials.
    pub credential_ttl_seconds: u64,
}

/// Render media-node's config. `turn_uris` come from the TURN Service's address.
pub fn media_node(mc: &MediaCluster, cluster: &str, turn_uris: Vec<String>) -> Result<MediaNodeConfig> {
    let s = &mc.spec;
    Ok(MediaNodeConfig {
        cluster: cluster.to_owned(),
        signaling_port: s.signaling.port,
        admin_port: super::ADMIN_PORT,
        mode: s.media.mode,
        udp_port: s.media.udp_port,
        tcp_port: s.media.tcp_port,
        advertised_addresses: s.media.advertised_addresses.clone(),
        capacity: CapacityConfig {
            rooms: s.sfu.capacity.rooms,
            participants: s.sfu.capacity.participants,
            bandwidth_bps: bandwidth(&s.sfu.capacity.bandwidth, "sfu.capacity.bandwidth")?,
        },
        keys_dir: paths::KEYS_DIR.into(),
        turn: TurnClientConfig {
            uris: turn_uris,
            realm: s.turn.realm.clone(),
            secret_file: paths::TURN_SECRET.into(),
            credential_ttl_seconds: 86_400,
        },
        room_defaults: s.room_defaults.clone(),
        webhooks: s.webhooks.clone(),
        drain_grace_seconds: s.sfu.drain_grace_period_seconds,
    })
}

/// turn-node's configuration (its `Config` struct, field for field).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnNodeConfig {
    /// Realm.
    pub realm: String,
    /// Listeners.
    pub listeners: Vec<TurnListenerConfig>,
    /// TLS files (first TLS listener's Secret; turn-node has one certificate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Relay ports (the relay address comes from `SWITCHYARD_TURN_RELAY_ADDRESS`).
    pub relay: RelayConfig,
    /// Credentials.
    pub auth: AuthConfig,
    /// Peer filter.
    pub peers: PeersConfig,
    /// Quotas.
    pub quotas: QuotaConfig,
    /// Admin address.
    pub admin_address: String,
    /// Drain grace.
    pub drain_grace_seconds: i64,
}

#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnListenerConfig {
    pub protocol: &'static str,
    pub address: String,
}

#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsConfig {
    pub cert_file: String,
    pub key_file: String,
}

#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayConfig {
    pub port_min: i32,
    pub port_max: i32,
}

#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthConfig {
    pub secrets_file: String,
}

#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeersConfig {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaConfig {
    pub max_allocations_per_user: i32,
    pub max_allocations: i32,
    pub bandwidth_per_allocation_bps: u64,
    pub unauthenticated_requests_per_second: i32,
}

fn protocol(p: TurnProtocol) -> &'static str {
    match p {
        TurnProtocol::UDP => "udp",
        TurnProtocol::TCP => "tcp",
        TurnProtocol::TLS => "tls",
    }
}

/// Render turn-node's config. In Gateway mode every peer is denied except the SFU pods
/// (`sfu_pod_ips`, as host routes) and the user's allow list: TURN is then a gateway
/// into the media fleet, not an open relay into the pod network.
pub fn turn_node(mc: &MediaCluster, sfu_pod_ips: &[String]) -> Result<TurnNodeConfig> {
    let t = &mc.spec.turn;
    let tls = t.listeners.iter().find(|l| l.protocol == TurnProtocol::TLS).map(|l| TlsConfig {
        cert_file: format!("{}/{}/tls.crt", paths::TLS_DIR, l.name),
        key_file: format!("{}/{}/tls.key", paths::TLS_DIR, l.name),
    });
    let mut allow = t.peers.allow.clone();
    let mut deny = t.peers.deny.clone();
    if mc.spec.media.mode == ExposureMode::Gateway {
        let mut ips: Vec<String> = sfu_pod_ips
            .iter()
            .map(|ip| if ip.contains(':') { format!("{ip}/128") } else { format!("{ip}/32") })
            .collect();
        ips.sort();
        allow.extend(ips);
        deny.extend(["0.0.0.0/0".to_owned(), "::/0".to_owned()]);
    }
    Ok(TurnNodeConfig {
        realm: t.realm.clone(),
        listeners: t
            .listeners
            .iter()
            .map(|l| TurnListenerConfig { protocol: protocol(l.protocol), address: format!("0.0.0.0:{}", l.port) })
            .collect(),
        tls,
        relay: RelayConfig { port_min: t.relay_port_range.min, port_max: t.relay_port_range.max },
        auth: AuthConfig { secrets_file: paths::TURN_SECRET.into() },
        peers: PeersConfig { allow, deny },
        quotas: QuotaConfig {
            max_allocations_per_user: t.quotas.allocations_per_user,
            max_allocations: t.quotas.total_allocations,
            bandwidth_per_allocation_bps: bandwidth(
                &t.quotas.bandwidth_per_allocation,
                "turn.quotas.bandwidthPerAllocation",
            )?,
            unauthenticated_requests_per_second: t.quotas.unauthenticated_requests_per_second,
        },
        admin_address: format!("0.0.0.0:{}", super::ADMIN_PORT),
        drain_grace_seconds: t.drain_grace_period_seconds,
    })
}

/// The TURN URIs clients get for a TURN Service reachable at `host`.
pub fn turn_uris(mc: &MediaCluster, host: &str) -> Vec<String> {
    turn_uris_at(mc, &[host.to_owned()], |l| Some(l.port))
}

/// The TURN URIs for every host × listener; `port` maps a listener to the port clients
/// dial (its own port, or the Service's node port), `None` skips it.
pub fn turn_uris_at(mc: &MediaCluster, hosts: &[String], port: impl Fn(&TurnListener) -> Option<i32>) -> Vec<String> {
    let mut out = vec![];
    for host in hosts {
        // An IPv6 literal goes in brackets.
        let host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
        for l in &mc.spec.turn.listeners {
            let Some(p) = port(l) else { continue };
            out.push(match l.protocol {
                TurnProtocol::UDP => format!("turn:{host}:{p}?transport=udp"),
                TurnProtocol::TCP => format!("turn:{host}:{p}?transport=tcp"),
                TurnProtocol::TLS => format!("turns:{host}:{p}?transport=tcp"),
            });
        }
    }
    out
}

/// `200000000` → `200M`, for status.
pub fn human_bandwidth(bps: u64) -> String {
    quantity::format_bandwidth(bps)
}
