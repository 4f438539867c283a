//! turn-node's `config.yaml`, which is also turn-node's runtime configuration: flags and
//! environment override the file's values, then [`TurnNodeConfig::validate`] checks the
//! whole.
//!
//! Settings the operator leaves to the node (lifetimes, workers, the secrets file's poll
//! interval, nonce lifetime, inline secrets and static users) are left out of a rendered
//! document while at their defaults, so a node's own defaults apply to them.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::invalid;
use crate::Result;

/// Client transport of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TURN over UDP.
    Udp,
    /// TURN over TCP.
    Tcp,
    /// TURN over TLS (e.g. port 443 or 5349).
    Tls,
}

/// One listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    /// Transport.
    pub protocol: Protocol,
    /// Bind address (port 0 picks a free port; the bound one is reported).
    pub address: SocketAddr,
}

impl FromStr for Listener {
    type Err = String;

    /// `udp://0.0.0.0:3478`, `tcp://…`, `tls://…`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (proto, addr) =
            s.split_once("://").ok_or_else(|| format!("`{s}`: expected PROTO://ADDR:PORT (udp, tcp or tls)"))?;
        let protocol = match proto {
            "udp" => Protocol::Udp,
            "tcp" => Protocol::Tcp,
            "tls" => Protocol::Tls,
            p => return Err(format!("`{s}`: unknown protocol `{p}` (udp, tcp or tls)")),
        };
        let address = addr.parse().map_err(|e| format!("`{s}`: {e}"))?;
        Ok(Listener { protocol, address })
    }
}

/// TLS certificate and key (PEM files).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, PEM.
    pub cert_file: PathBuf,
    /// Private key, PEM.
    pub key_file: PathBuf,
}

/// Relay sockets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RelayConfig {
    /// The address clients are told to reach their relay at (the pod IP).
    /// Defaults to the first listener's address when that is not a wildcard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// Where relay sockets bind; defaults to `address`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_address: Option<IpAddr>,
    /// A relay address of the other family than `address` (dual stack):
    /// with it, clients may allocate IPv4 and IPv6 relayed addresses together
    /// (RFC 8656 ADDITIONAL-ADDRESS-FAMILY) or either one alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additional_address: Option<IpAddr>,
    /// Where relay sockets of `additionalAddress`'s family bind; defaults to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additional_bind_address: Option<IpAddr>,
    /// Lowest relay port (0 with `portMax` 0: let the kernel pick).
    pub port_min: u16,
    /// Highest relay port.
    pub port_max: u16,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            address: None,
            bind_address: None,
            additional_address: None,
            additional_bind_address: None,
            port_min: 49152,
            port_max: 65535,
        }
    }
}

/// A fixed user (testing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticUser {
    /// Username.
    pub username: String,
    /// Password.
    pub password: String,
}

/// Authentication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AuthConfig {
    /// TURN REST API shared secrets; all are accepted (rotation).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// File with one secret per line ('#' comments), re-read when it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets_file: Option<PathBuf>,
    /// How often to look at the secrets file's mtime, seconds.
    #[serde(skip_serializing_if = "AuthConfig::is_default_poll")]
    pub secrets_poll_seconds: u64,
    /// Static users (for testing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub static_users: Vec<StaticUser>,
    /// Nonce lifetime, seconds.
    #[serde(skip_serializing_if = "AuthConfig::is_default_nonce_lifetime")]
    pub nonce_lifetime_seconds: u64,
}

impl AuthConfig {
    const DEFAULT_POLL_SECONDS: u64 = 5;
    const DEFAULT_NONCE_LIFETIME_SECONDS: u64 = 3600;

    fn is_default_poll(v: &u64) -> bool {
        *v == Self::DEFAULT_POLL_SECONDS
    }

    fn is_default_nonce_lifetime(v: &u64) -> bool {
        *v == Self::DEFAULT_NONCE_LIFETIME_SECONDS
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            secrets: Vec::new(),
            secrets_file: None,
            secrets_poll_seconds: Self::DEFAULT_POLL_SECONDS,
            static_users: Vec::new(),
            nonce_lifetime_seconds: Self::DEFAULT_NONCE_LIFETIME_SECONDS,
        }
    }
}

/// Peer filtering on top of the built-in deny list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PeerConfig {
    /// CIDRs always allowed (win over every deny rule).
    pub allow: Vec<IpNet>,
    /// Extra CIDRs denied (e.g. the cluster's service CIDR).
    pub deny: Vec<IpNet>,
}

/// Quotas (0 = unlimited). The defaults are the operator's (`MediaCluster`
/// `spec.turn.quotas`), so a standalone node is as safe as a rendered one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Allocations per user id.
    pub max_allocations_per_user: usize,
    /// Allocations per node.
    pub max_allocations: usize,
    /// Relayed bandwidth per allocation, bits per second, both directions.
    pub bandwidth_per_allocation_bps: u64,
    /// Answers per second per source IP that no credential vouches for
    /// (401 challenges, failed authentication, Binding, 400s); the excess is dropped.
    pub unauthenticated_requests_per_second: u32,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            max_allocations_per_user: 10,
            max_allocations: 0,
            bandwidth_per_allocation_bps: 0,
            unauthenticated_requests_per_second: 20,
        }
    }
}

/// Allocation lifetimes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LifetimeConfig {
    /// Default allocation lifetime, seconds.
    pub default_seconds: u64,
    /// Maximum allocation lifetime, seconds.
    pub max_seconds: u64,
}

impl Default for LifetimeConfig {
    fn default() -> Self {
        LifetimeConfig { default_seconds: 600, max_seconds: 3600 }
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// turn-node's whole configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TurnNodeConfig {
    /// Realm for long-term credentials.
    pub realm: String,
    /// Listeners (several at once).
    pub listeners: Vec<Listener>,
    /// TLS material (required with a TLS listener).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Relay sockets.
    pub relay: RelayConfig,
    /// Authentication.
    pub auth: AuthConfig,
    /// Peer filter.
    pub peers: PeerConfig,
    /// Quotas.
    pub quotas: QuotaConfig,
    /// Lifetimes.
    #[serde(skip_serializing_if = "is_default")]
    pub lifetimes: LifetimeConfig,
    /// Admin HTTP address (metrics, health, status, drain).
    pub admin_address: SocketAddr,
    /// Longest a drain waits for allocations to end, seconds.
    pub drain_grace_seconds: u64,
    /// Worker threads, each with its own sockets (0: one per CPU).
    #[serde(skip_serializing_if = "is_default")]
    pub workers: usize,
    /// Not part of the document: the file it was read from, which turn-node re-reads
    /// while running for `peers`.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Not part of the document: when not empty, the only peer transport addresses
    /// relayed to, whatever `peers` says (set by `switchyard dev`: the embedded SFU's
    /// media ports).
    #[serde(skip)]
    pub only_peers: Vec<SocketAddr>,
}

impl Default for TurnNodeConfig {
    fn default() -> Self {
        TurnNodeConfig {
            realm: "switchyard".into(),
            listeners: vec![Listener { protocol: Protocol::Udp, address: SocketAddr::from(([0, 0, 0, 0], 3478)) }],
            tls: None,
            relay: RelayConfig::default(),
            auth: AuthConfig::default(),
            peers: PeerConfig::default(),
            quotas: QuotaConfig::default(),
            lifetimes: LifetimeConfig::default(),
            admin_address: SocketAddr::from(([0, 0, 0, 0], 9090)),
            drain_grace_seconds: 3600,
            workers: 0,
            source: None,
            only_peers: Vec::new(),
        }
    }
}

impl TurnNodeConfig {
    /// A loopback-only configuration for `switchyard dev` (everything on one
    /// host): UDP and TCP on `127.0.0.1:port` (0 picks one), relays on
    /// 127.0.0.1 with kernel-chosen ports, loopback peers allowed (the SFU
    /// runs on the same host), the admin API on an ephemeral port.
    pub fn dev(port: u16, secret: &str) -> Self {
        let listen = |protocol| Listener { protocol, address: SocketAddr::from(([127, 0, 0, 1], port)) };
        let mut c = TurnNodeConfig {
            realm: "switchyard.dev".into(),
            listeners: vec![listen(Protocol::Udp), listen(Protocol::Tcp)],
            admin_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 1,
            ..TurnNodeConfig::default()
        };
        c.relay =
            RelayConfig { address: Some([127, 0, 0, 1].into()), port_min: 0, port_max: 0, ..RelayConfig::default() };
        c.auth.secrets = vec![secret.to_owned()];
        c.peers.allow = vec![IpNet::new(IpAddr::from([127, 0, 0, 0]), 8).expect("a valid prefix length")];
        c
    }

    /// Parse `config.yaml` text read from `file`; errors name the file and the field.
    pub fn from_yaml(text: &str, file: &Path) -> Result<Self> {
        super::from_yaml(text, file)
    }

    /// The relay address clients are told about.
    pub fn relay_address(&self) -> Option<IpAddr> {
        self.relay.address.or_else(|| self.listeners.iter().map(|l| l.address.ip()).find(|ip| !ip.is_unspecified()))
    }

    /// Default allocation lifetime.
    pub fn default_lifetime(&self) -> Duration {
        Duration::from_secs(self.lifetimes.default_seconds)
    }

    /// Check the configuration as a whole; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if self.realm.is_empty() {
            return Err(invalid("realm", "must not be empty"));
        }
        if self.listeners.is_empty() {
            return Err(invalid("listeners", "at least one listener is required"));
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if l.protocol == Protocol::Tls && self.tls.is_none() {
                return Err(invalid(
                    format!("listeners[{i}]"),
                    "a tls listener needs `tls.certFile` and `tls.keyFile`",
                ));
            }
        }
        let Some(relay) = self.relay_address() else {
            return Err(invalid(
                "relay.address",
                "required when every listener binds a wildcard address (set it to the pod IP)",
            ));
        };
        if relay.is_unspecified() {
            return Err(invalid("relay.address", "must be a concrete address, not a wildcard"));
        }
        if let Some(bind) = self.relay.bind_address
            && bind.is_ipv4() != relay.is_ipv4()
        {
            return Err(invalid("relay.bindAddress", "must be the same family as relay.address"));
        }
        match self.relay.additional_address {
            Some(extra) if extra.is_ipv4() == relay.is_ipv4() => {
                return Err(invalid("relay.additionalAddress", "must be of the other family than relay.address"));
            }
            Some(extra) if extra.is_unspecified() => {
                return Err(invalid("relay.additionalAddress", "must be a concrete address, not a wildcard"));
            }
            Some(extra) => {
                if let Some(bind) = self.relay.additional_bind_address
                    && bind.is_ipv4() != extra.is_ipv4()
                {
                    return Err(invalid(
                        "relay.additionalBindAddress",
                        "must be the same family as relay.additionalAddress",
                    ));
                }
            }
            None if self.relay.additional_bind_address.is_some() => {
                return Err(invalid("relay.additionalBindAddress", "needs relay.additionalAddress"));
            }
            None => {}
        }
        let (min, max) = (self.relay.port_min, self.relay.port_max);
        if min > max {
            return Err(invalid("relay.portMin", format!("{min} is above relay.portMax {max}")));
        }
        if min == 0 && max != 0 {
            return Err(invalid("relay.portMin", "0 is only allowed together with portMax 0 (kernel-chosen ports)"));
        }
        let auth = &self.auth;
        if auth.secrets.is_empty() && auth.secrets_file.is_none() && auth.static_users.is_empty() {
            return Err(invalid("auth", "no credentials: set auth.secrets, auth.secretsFile or auth.staticUsers"));
        }
        if auth.secrets.iter().any(String::is_empty) {
            return Err(invalid("auth.secrets", "empty secret"));
        }
        if auth.nonce_lifetime_seconds == 0 {
            return Err(invalid("auth.nonceLifetimeSeconds", "must be positive"));
        }
        if auth.secrets_poll_seconds == 0 {
            return Err(invalid("auth.secretsPollSeconds", "must be positive"));
        }
        let lt = &self.lifetimes;
        if lt.default_seconds == 0 || lt.default_seconds > lt.max_seconds {
            return Err(invalid(
                "lifetimes.defaultSeconds",
                format!("must be in 1..=lifetimes.maxSeconds ({})", lt.max_seconds),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn parse(yaml: &str) -> Result<TurnNodeConfig> {
        TurnNodeConfig::from_yaml(yaml, Path::new("t.yaml"))
    }

    #[test]
    fn yaml_parses_and_validates() {
        let yaml = r#"
realm: example.org
listeners:
  - { protocol: udp, address: "10.0.0.5:3478" }
  - { protocol: tls, address: "10.0.0.5:443" }
tls: { certFile: /c.pem, keyFile: /k.pem }
relay: { portMin: 50000, portMax: 50100 }
auth: { secrets: [a, b] }
peers: { allow: ["10.244.0.0/16"], deny: ["10.96.0.0/12"] }
quotas: { maxAllocationsPerUser: 10 }
"#;
        let c = parse(yaml).unwrap();
        c.validate().unwrap();
        assert_eq!(c.relay_address(), Some("10.0.0.5".parse().unwrap()));
        assert_eq!(c.quotas.max_allocations_per_user, 10);
        assert_eq!(c.listeners[1].protocol, Protocol::Tls);
        assert_eq!(c.lifetimes, LifetimeConfig::default(), "absent fields take the defaults");
    }

    #[test]
    fn errors_name_the_field() {
        let err = |yaml: &str| match parse(yaml).and_then(|c| c.validate()) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("accepted: {yaml}"),
        };
        assert!(err("auth: { secrets: [a] }").contains("relay.address"));
        assert!(
            err("relay: { address: 10.0.0.1, portMin: 9, portMax: 8 }\nauth: { secrets: [a] }")
                .contains("relay.portMin")
        );
        assert!(err("relay: { address: 10.0.0.1 }").contains("`auth`"));
        assert!(
            err("relay: { address: 10.0.0.1 }\nauth: { secrets: [a] }\nlisteners: [{ protocol: tls, address: '0.0.0.0:443' }]")
                .contains("listeners[0]")
        );
        assert!(err("peers: { deny: [not-a-cidr] }").contains("t.yaml"));
        let auth = "\nauth: { secrets: [a] }";
        assert!(
            err(&format!("relay: {{ address: 10.0.0.1, additionalAddress: 10.0.0.2 }}{auth}"))
                .contains("relay.additionalAddress")
        );
        assert!(
            err(&format!("relay: {{ address: 10.0.0.1, additionalAddress: '::' }}{auth}"))
                .contains("relay.additionalAddress")
        );
        assert!(
            err(&format!("relay: {{ address: 10.0.0.1, additionalBindAddress: '::1' }}{auth}"))
                .contains("relay.additionalBindAddress")
        );
        assert!(
            err(&format!(
                "relay: {{ address: 10.0.0.1, additionalAddress: 'fd00::1', additionalBindAddress: 10.0.0.9 }}{auth}"
            ))
            .contains("relay.additionalBindAddress")
        );
        let dual = parse(&format!("relay: {{ address: 10.0.0.1, additionalAddress: 'fd00::1' }}{auth}")).unwrap();
        dual.validate().unwrap();
        assert_eq!(dual.relay.additional_address, Some("fd00::1".parse().unwrap()));
    }

    #[test]
    fn unknown_fields_are_refused_by_name_at_every_level() {
        for (yaml, field) in [
            ("relayy: {}", "relayy"),
            ("relay: { portMin: 1, portMax: 2, portMid: 1 }", "portMid"),
            ("auth: { secretFile: /s }", "secretFile"),
            ("quotas: { maxAllocationsPerIp: 3 }", "maxAllocationsPerIp"),
            ("listeners: [{ protocol: udp, address: '0.0.0.0:1', reusePort: true }]", "reusePort"),
        ] {
            let err = parse(yaml).unwrap_err();
            let Error::ConfigParse { file, message } = &err else { panic!("{err:?}") };
            assert_eq!(file, "t.yaml");
            assert!(message.contains(&format!("unknown field `{field}`")), "{yaml}: {message}");
        }
    }

    #[test]
    fn dev_config_is_valid_and_loopback_only() {
        let c = TurnNodeConfig::dev(0, "s");
        c.validate().unwrap();
        assert!(c.listeners.iter().all(|l| l.address.ip().is_loopback()));
        assert!(c.relay_address().unwrap().is_loopback());
    }

    #[test]
    fn round_trips_and_leaves_node_defaults_out() {
        let mut c = TurnNodeConfig::dev(3478, "s");
        c.auth.secrets.clear();
        c.auth.secrets_file = Some("/etc/switchyard/turn/secret".into());
        c.workers = 0;
        let text = super::super::to_yaml(&c).unwrap();
        for absent in ["lifetimes", "workers", "secretsPollSeconds", "nonceLifetimeSeconds", "staticUsers", "secrets:"]
        {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
        assert_eq!(parse(&text).unwrap(), c);
        c.lifetimes.max_seconds = 7200;
        c.auth.nonce_lifetime_seconds = 60;
        c.workers = 2;
        c.tls = Some(TlsConfig { cert_file: "/c".into(), key_file: "/k".into() });
        c.peers.deny = vec!["10.96.0.0/12".parse().unwrap(), "fd00::/8".parse().unwrap()];
        let text = super::super::to_yaml(&c).unwrap();
        assert!(text.contains("maxSeconds: 7200") && text.contains("workers: 2"), "{text}");
        assert_eq!(parse(&text).unwrap(), c);
    }

    #[test]
    fn listeners_parse_from_flags() {
        let l: Listener = "tls://0.0.0.0:443".parse().unwrap();
        assert_eq!((l.protocol, l.address.port()), (Protocol::Tls, 443));
        assert!("bogus://x".parse::<Listener>().unwrap_err().contains("bogus"));
        assert!("udp:0.0.0.0:1".parse::<Listener>().is_err());
    }
}
