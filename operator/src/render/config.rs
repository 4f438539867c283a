//! The `config.yaml` each node reads (`--config /etc/switchyard/config/config.yaml`), rendered
//! from the MediaCluster. The documents are defined once, in `switchyard_api::node_config`,
//! and the nodes parse them with the same types (refusing unknown fields).

use std::net::{IpAddr, SocketAddr};

use switchyard_api::media_cluster::{ExposureMode, TurnListener, TurnProtocol};
use switchyard_api::node_config::media_node::{Capacity, RoomDefaults, TurnClient, Webhook};
use switchyard_api::node_config::turn_node::{
    AuthConfig, IpNet, Listener, PeerConfig, Protocol, QuotaConfig, RelayConfig, TlsConfig,
};
pub use switchyard_api::node_config::{MediaNodeConfig, TurnNodeConfig};
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

fn invalid(what: &'static str, message: impl std::fmt::Display) -> Error {
    Error::Invalid { what, message: message.to_string() }
}

/// A number from the spec as the unsigned type the document holds (the CRD's CEL rules
/// already keep it in range; this catches a spec that bypassed them).
fn unsigned<T: TryFrom<i64>>(v: impl Into<i64>, what: &'static str) -> Result<T> {
    let v = v.into();
    T::try_from(v).map_err(|_| invalid(what, format!("{v} is out of range")))
}

/// CIDRs from the spec.
pub(super) fn cidrs(list: &[String], what: &'static str) -> Result<Vec<IpNet>> {
    list.iter().map(|c| c.parse().map_err(|e| invalid(what, format!("{c:?}: {e}")))).collect()
}

/// Render media-node's config. `turn_uris` come from the TURN Service's address.
pub fn media_node(mc: &MediaCluster, cluster: &str, turn_uris: Vec<String>) -> Result<MediaNodeConfig> {
    let s = &mc.spec;
    let advertised_addresses = s
        .media
        .advertised_addresses
        .iter()
        .map(|a| a.parse().map_err(|e| invalid("media.advertisedAddresses", format!("{a:?}: {e}"))))
        .collect::<Result<_>>()?;
    Ok(MediaNodeConfig {
        cluster: cluster.to_owned(),
        signaling_port: unsigned(s.signaling.port, "signaling.port")?,
        admin_port: super::ADMIN_PORT as u16,
        mode: s.media.mode,
        udp_port: unsigned(s.media.udp_port, "media.udpPort")?,
        tcp_port: unsigned(s.media.tcp_port, "media.tcpPort")?,
        advertised_addresses,
        capacity: Capacity {
            rooms: unsigned(s.sfu.capacity.rooms, "sfu.capacity.rooms")?,
            participants: unsigned(s.sfu.capacity.participants, "sfu.capacity.participants")?,
            bandwidth_bps: bandwidth(&s.sfu.capacity.bandwidth, "sfu.capacity.bandwidth")?,
        },
        keys_dir: paths::KEYS_DIR.into(),
        turn: TurnClient {
            uris: turn_uris,
            realm: s.turn.realm.clone(),
            secret_file: paths::TURN_SECRET.into(),
            credential_ttl_seconds: 86_400,
        },
        room_defaults: RoomDefaults {
            auto_create: s.room_defaults.auto_create,
            empty_timeout_seconds: unsigned(s.room_defaults.empty_timeout_seconds, "roomDefaults.emptyTimeoutSeconds")?,
            max_participants: unsigned(s.room_defaults.max_participants, "roomDefaults.maxParticipants")?,
        },
        webhooks: s.webhooks.iter().map(Webhook::from).collect(),
        drain_grace_seconds: unsigned(s.sfu.drain_grace_period_seconds, "sfu.drainGracePeriodSeconds")?,
        resume_window_seconds: unsigned(s.sfu.resume_window_seconds, "sfu.resumeWindowSeconds")?,
        max_connections_per_client: unsigned(
            s.signaling.connections_per_client(),
            "signaling.maxConnectionsPerClient",
        )?,
        trusted_proxies: cidrs(&s.signaling.trusted_proxies, "signaling.trustedProxies")?,
    })
}

fn protocol(p: TurnProtocol) -> Protocol {
    match p {
        TurnProtocol::UDP => Protocol::Udp,
        TurnProtocol::TCP => Protocol::Tcp,
        TurnProtocol::TLS => Protocol::Tls,
    }
}

/// Render turn-node's config. The SFU pods (`sfu_pod_ips`, as host routes) and, in Direct
/// mode, the SFU's advertised addresses are always allowed, since the built-in rules deny
/// private addresses. In Gateway mode every other peer is denied except the user's allow
/// list: TURN is then a gateway into the media fleet, not an open relay into the pod
/// network. Settings the spec does
/// not cover (lifetimes, workers, …) keep turn-node's defaults and are not rendered.
pub fn turn_node(mc: &MediaCluster, sfu_pod_ips: &[String]) -> Result<TurnNodeConfig> {
    let t = &mc.spec.turn;
    let tls = t.listeners.iter().find(|l| l.protocol == TurnProtocol::TLS).map(|l| TlsConfig {
        cert_file: format!("{}/{}/tls.crt", paths::TLS_DIR, l.name).into(),
        key_file: format!("{}/{}/tls.key", paths::TLS_DIR, l.name).into(),
    });
    let mut allow = cidrs(&t.peers.allow, "turn.peers.allow")?;
    let mut deny = cidrs(&t.peers.deny, "turn.peers.deny")?;
    // The SFU is always a peer TURN may relay to, even at a private address (which the
    // built-in rules deny): its pods, and in Direct mode the addresses it advertises.
    let mut ips = sfu_pod_ips
        .iter()
        .map(|ip| ip.parse::<IpAddr>().map(IpNet::from).map_err(|e| invalid("SFU pod IP", format!("{ip:?}: {e}"))))
        .collect::<Result<Vec<_>>>()?;
    if mc.spec.media.mode == ExposureMode::Direct {
        for a in &mc.spec.media.advertised_addresses {
            let ip = a.parse::<IpAddr>().map_err(|e| invalid("media.advertisedAddresses", format!("{a:?}: {e}")))?;
            ips.push(IpNet::from(ip));
        }
    }
    ips.sort_by_key(|n| n.to_string());
    ips.dedup();
    allow.extend(ips);
    if mc.spec.media.mode == ExposureMode::Gateway {
        deny.extend(["0.0.0.0/0", "::/0"].map(|n| n.parse::<IpNet>().expect("literal")));
    }
    let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
    Ok(TurnNodeConfig {
        realm: t.realm.clone(),
        listeners: t
            .listeners
            .iter()
            .map(|l| {
                Ok(Listener { protocol: protocol(l.protocol), address: any(unsigned(l.port, "turn.listeners.port")?) })
            })
            .collect::<Result<_>>()?,
        tls,
        relay: RelayConfig {
            port_min: unsigned(t.relay_port_range.min, "turn.relayPortRange.min")?,
            port_max: unsigned(t.relay_port_range.max, "turn.relayPortRange.max")?,
            ..RelayConfig::default()
        },
        auth: AuthConfig { secrets_file: Some(paths::TURN_SECRET.into()), ..AuthConfig::default() },
        peers: PeerConfig { allow, deny },
        quotas: QuotaConfig {
            max_allocations_per_user: unsigned(t.quotas.allocations_per_user, "turn.quotas.allocationsPerUser")?,
            max_allocations: unsigned(t.quotas.total_allocations, "turn.quotas.totalAllocations")?,
            bandwidth_per_allocation_bps: bandwidth(
                &t.quotas.bandwidth_per_allocation,
                "turn.quotas.bandwidthPerAllocation",
            )?,
            unauthenticated_requests_per_second: unsigned(
                t.quotas.unauthenticated_requests_per_second,
                "turn.quotas.unauthenticatedRequestsPerSecond",
            )?,
        },
        admin_address: any(super::ADMIN_PORT as u16),
        drain_grace_seconds: unsigned(t.drain_grace_period_seconds, "turn.drainGracePeriodSeconds")?,
        ..TurnNodeConfig::default()
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
