//! Configuration: a YAML file, overridden by environment variables and flags
//! (clap reads both), then validated as a whole. Field names in the YAML are
//! camelCase to match the `MediaCluster` resource the operator renders them from.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Client transport of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, PEM.
    pub cert_file: PathBuf,
    /// Private key, PEM.
    pub key_file: PathBuf,
}

/// Relay sockets.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RelayConfig {
    /// The address clients are told to reach their relay at (the pod IP).
    /// Defaults to the first listener's address when that is not a wildcard.
    pub address: Option<IpAddr>,
    /// Where relay sockets bind; defaults to `address`.
    pub bind_address: Option<IpAddr>,
    /// Lowest relay port (0 with `portMax` 0: let the kernel pick).
    pub port_min: u16,
    /// Highest relay port.
    pub port_max: u16,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig { address: None, bind_address: None, port_min: 49152, port_max: 65535 }
    }
}

/// A fixed user (testing).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticUser {
    /// Username.
    pub username: String,
    /// Password.
    pub password: String,
}

/// Authentication.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AuthConfig {
    /// TURN REST API shared secrets; all are accepted (rotation).
    pub secrets: Vec<String>,
    /// File with one secret per line ('#' comments), re-read when it changes.
    pub secrets_file: Option<PathBuf>,
    /// How often to look at the secrets file's mtime.
    pub secrets_poll_seconds: u64,
    /// Static users (for testing).
    pub static_users: Vec<StaticUser>,
    /// Nonce lifetime.
    pub nonce_lifetime_seconds: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            secrets: Vec::new(),
            secrets_file: None,
            secrets_poll_seconds: 5,
            static_users: Vec::new(),
            nonce_lifetime_seconds: 3600,
        }
    }
}

/// Peer filtering on top of the built-in deny list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PeerConfig {
    /// CIDRs always allowed (win over every deny rule).
    pub allow: Vec<IpNet>,
    /// Extra CIDRs denied (e.g. the cluster's service CIDR).
    pub deny: Vec<IpNet>,
}

/// Quotas (0 = unlimited). The defaults are the operator's (`MediaCluster`
/// `spec.turn.quotas`), so a standalone node is as safe as a rendered one.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LifetimeConfig {
    /// Default allocation lifetime.
    pub default_seconds: u64,
    /// Maximum allocation lifetime.
    pub max_seconds: u64,
}

impl Default for LifetimeConfig {
    fn default() -> Self {
        LifetimeConfig { default_seconds: 600, max_seconds: 3600 }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// Realm for long-term credentials.
    pub realm: String,
    /// Listeners (several at once).
    pub listeners: Vec<Listener>,
    /// TLS material (required with a TLS listener).
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
    pub lifetimes: LifetimeConfig,
    /// Admin HTTP address (metrics, health, status, drain).
    pub admin_address: SocketAddr,
    /// Longest a drain waits for allocations to end.
    pub drain_grace_seconds: u64,
    /// Worker threads, each with its own sockets (0: one per CPU).
    pub workers: usize,
    /// The file this configuration was read from, re-read while running for `peers`.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            realm: "switchyard".into(),
            listeners: vec![Listener { protocol: Protocol::Udp, address: "0.0.0.0:3478".parse().expect("literal") }],
            tls: None,
            relay: RelayConfig::default(),
            auth: AuthConfig::default(),
            peers: PeerConfig::default(),
            quotas: QuotaConfig::default(),
            lifetimes: LifetimeConfig::default(),
            admin_address: "0.0.0.0:9090".parse().expect("literal"),
            drain_grace_seconds: 3600,
            workers: 0,
            source: None,
        }
    }
}

impl Config {
    /// A loopback-only configuration for `switchyard dev` (everything on one
    /// host): UDP and TCP on `127.0.0.1:port` (0 picks one), relays on
    /// 127.0.0.1 with kernel-chosen ports, loopback peers allowed (the SFU
    /// runs on the same host), the admin API on an ephemeral port.
    pub fn dev(port: u16, secret: &str) -> Self {
        let listen = |protocol| Listener { protocol, address: SocketAddr::from(([127, 0, 0, 1], port)) };
        let mut c = Config {
            realm: "switchyard.dev".into(),
            listeners: vec![listen(Protocol::Udp), listen(Protocol::Tcp)],
            admin_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 1,
            ..Config::default()
        };
        c.relay = RelayConfig { address: Some([127, 0, 0, 1].into()), bind_address: None, port_min: 0, port_max: 0 };
        c.auth.secrets = vec![secret.to_owned()];
        c.peers.allow = vec!["127.0.0.0/8".parse().expect("literal")];
        c
    }

    /// Parse YAML text.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self> {
        serde_saphyr::from_str(text).map_err(|e| Error::Parse { path: path.to_owned(), message: e.to_string() })
    }

    /// Read and parse a YAML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
        Self::from_yaml(&text, path)
    }

    /// The relay address clients are told about.
    pub fn relay_address(&self) -> Option<IpAddr> {
        self.relay.address.or_else(|| self.listeners.iter().map(|l| l.address.ip()).find(|ip| !ip.is_unspecified()))
    }

    /// Check the configuration as a whole; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if self.realm.is_empty() {
            return Err(Error::config("realm", "must not be empty"));
        }
        if self.listeners.is_empty() {
            return Err(Error::config("listeners", "at least one listener is required"));
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if l.protocol == Protocol::Tls && self.tls.is_none() {
                return Err(Error::config(
                    format!("listeners[{i}]"),
                    "a tls listener needs `tls.certFile` and `tls.keyFile`",
                ));
            }
        }
        let Some(relay) = self.relay_address() else {
            return Err(Error::config(
                "relay.address",
                "required when every listener binds a wildcard address (set it to the pod IP)",
            ));
        };
        if relay.is_unspecified() {
            return Err(Error::config("relay.address", "must be a concrete address, not a wildcard"));
        }
        if let Some(bind) = self.relay.bind_address
            && bind.is_ipv4() != relay.is_ipv4()
        {
            return Err(Error::config("relay.bindAddress", "must be the same family as relay.address"));
        }
        let (min, max) = (self.relay.port_min, self.relay.port_max);
        if min > max {
            return Err(Error::config("relay.portMin", format!("{min} is above relay.portMax {max}")));
        }
        if min == 0 && max != 0 {
            return Err(Error::config(
                "relay.portMin",
                "0 is only allowed together with portMax 0 (kernel-chosen ports)",
            ));
        }
        let auth = &self.auth;
        if auth.secrets.is_empty() && auth.secrets_file.is_none() && auth.static_users.is_empty() {
            return Err(Error::config(
                "auth",
                "no credentials: set auth.secrets, auth.secretsFile or auth.staticUsers",
            ));
        }
        if auth.secrets.iter().any(String::is_empty) {
            return Err(Error::config("auth.secrets", "empty secret"));
        }
        if auth.nonce_lifetime_seconds == 0 {
            return Err(Error::config("auth.nonceLifetimeSeconds", "must be positive"));
        }
        if auth.secrets_poll_seconds == 0 {
            return Err(Error::config("auth.secretsPollSeconds", "must be positive"));
        }
        let lt = &self.lifetimes;
        if lt.default_seconds == 0 || lt.default_seconds > lt.max_seconds {
            return Err(Error::config(
                "lifetimes.defaultSeconds",
                format!("must be in 1..=lifetimes.maxSeconds ({})", lt.max_seconds),
            ));
        }
        Ok(())
    }

    /// Default lifetime.
    pub fn default_lifetime(&self) -> Duration {
        Duration::from_secs(self.lifetimes.default_seconds)
    }
}

/// Read a secrets file: one secret per line, blank lines and `#` comments skipped.
pub fn read_secrets_file(path: &Path) -> Result<Vec<Vec<u8>>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.as_bytes().to_vec())
        .collect())
}

/// Command line and environment; every flag overrides the YAML file.
#[derive(Clone, Debug, Default, clap::Parser)]
#[command(name = "turn-node", version, about = "Switchyard TURN server")]
pub struct Args {
    /// YAML configuration file.
    #[arg(long, env = "SWITCHYARD_TURN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Realm.
    #[arg(long, env = "SWITCHYARD_TURN_REALM")]
    pub realm: Option<String>,
    /// Listeners, e.g. udp://0.0.0.0:3478,tls://0.0.0.0:443 (replaces the file's list).
    #[arg(long = "listen", env = "SWITCHYARD_TURN_LISTEN", value_delimiter = ',')]
    pub listen: Vec<Listener>,
    /// Listen on this IP instead of the wildcard address of each listener and the admin
    /// address (the operator sets it to the pod IP).
    #[arg(long, env = "SWITCHYARD_BIND_IP")]
    pub bind_ip: Option<IpAddr>,
    /// Relay address advertised to clients (pod IP).
    #[arg(long, env = "SWITCHYARD_TURN_RELAY_ADDRESS")]
    pub relay_address: Option<IpAddr>,
    /// Relay port range MIN-MAX.
    #[arg(long, env = "SWITCHYARD_TURN_RELAY_PORTS")]
    pub relay_ports: Option<String>,
    /// REST API secrets (comma-separated).
    #[arg(long = "secret", env = "SWITCHYARD_TURN_SECRETS", value_delimiter = ',', hide_env_values = true)]
    pub secrets: Vec<String>,
    /// File with REST API secrets, one a line, reloaded on change.
    #[arg(long, env = "SWITCHYARD_TURN_SECRETS_FILE")]
    pub secrets_file: Option<PathBuf>,
    /// Static user USER:PASSWORD (testing).
    #[arg(long = "user")]
    pub users: Vec<String>,
    /// Peer CIDRs always allowed (comma-separated).
    #[arg(long = "allow-peer", env = "SWITCHYARD_TURN_ALLOW_PEERS", value_delimiter = ',')]
    pub allow_peers: Vec<IpNet>,
    /// Extra peer CIDRs denied (comma-separated).
    #[arg(long = "deny-peer", env = "SWITCHYARD_TURN_DENY_PEERS", value_delimiter = ',')]
    pub deny_peers: Vec<IpNet>,
    /// TLS certificate chain (PEM).
    #[arg(long, env = "SWITCHYARD_TURN_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "SWITCHYARD_TURN_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Admin HTTP address.
    #[arg(long, env = "SWITCHYARD_TURN_ADMIN")]
    pub admin: Option<SocketAddr>,
    /// Drain grace period, seconds.
    #[arg(long, env = "SWITCHYARD_TURN_DRAIN_GRACE_SECONDS")]
    pub drain_grace_seconds: Option<u64>,
    /// Worker threads (0 = one per CPU).
    #[arg(long, env = "SWITCHYARD_TURN_WORKERS")]
    pub workers: Option<usize>,
    /// Max allocations per node.
    #[arg(long, env = "SWITCHYARD_TURN_MAX_ALLOCATIONS")]
    pub max_allocations: Option<usize>,
    /// Max allocations per user (default 10; 0 = unlimited).
    #[arg(long, env = "SWITCHYARD_TURN_MAX_ALLOCATIONS_PER_USER")]
    pub max_allocations_per_user: Option<usize>,
    /// Bandwidth cap per allocation, bits/s.
    #[arg(long, env = "SWITCHYARD_TURN_BANDWIDTH_PER_ALLOCATION_BPS")]
    pub bandwidth_per_allocation_bps: Option<u64>,
    /// Unauthenticated requests per second per source IP (default 20; 0 = unlimited).
    #[arg(long, env = "SWITCHYARD_TURN_UNAUTHENTICATED_RPS")]
    pub unauthenticated_rps: Option<u32>,
}

impl Args {
    /// The file config with flags and env applied, validated.
    pub fn into_config(self) -> Result<Config> {
        let mut c = match &self.config {
            Some(p) => Config { source: Some(p.clone()), ..Config::from_file(p)? },
            None => Config::default(),
        };
        if let Some(r) = self.realm {
            c.realm = r;
        }
        if !self.listen.is_empty() {
            c.listeners = self.listen;
        }
        if let Some(a) = self.relay_address {
            c.relay.address = Some(a);
        }
        if let Some(r) = self.relay_ports {
            let (min, max) = r
                .split_once('-')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                .ok_or_else(|| Error::config("relay.portMin", format!("--relay-ports `{r}`: expected MIN-MAX")))?;
            c.relay.port_min = min;
            c.relay.port_max = max;
        }
        if !self.secrets.is_empty() {
            c.auth.secrets = self.secrets;
        }
        if let Some(f) = self.secrets_file {
            c.auth.secrets_file = Some(f);
        }
        for u in self.users {
            let (username, password) =
                u.split_once(':').ok_or_else(|| Error::config("auth.staticUsers", "--user expects USER:PASSWORD"))?;
            c.auth.static_users.push(StaticUser { username: username.into(), password: password.into() });
        }
        c.peers.allow.extend(self.allow_peers);
        c.peers.deny.extend(self.deny_peers);
        match (self.tls_cert, self.tls_key) {
            (Some(cert_file), Some(key_file)) => c.tls = Some(TlsConfig { cert_file, key_file }),
            (None, None) => {}
            _ => return Err(Error::config("tls", "--tls-cert and --tls-key go together")),
        }
        if let Some(a) = self.admin {
            c.admin_address = a;
        }
        if let Some(ip) = self.bind_ip {
            let addrs = c.listeners.iter_mut().map(|l| &mut l.address).chain([&mut c.admin_address]);
            for addr in addrs.filter(|a| a.ip().is_unspecified()) {
                addr.set_ip(ip);
            }
        }
        if let Some(g) = self.drain_grace_seconds {
            c.drain_grace_seconds = g;
        }
        if let Some(w) = self.workers {
            c.workers = w;
        }
        if let Some(v) = self.max_allocations {
            c.quotas.max_allocations = v;
        }
        if let Some(v) = self.max_allocations_per_user {
            c.quotas.max_allocations_per_user = v;
        }
        if let Some(v) = self.bandwidth_per_allocation_bps {
            c.quotas.bandwidth_per_allocation_bps = v;
        }
        if let Some(v) = self.unauthenticated_rps {
            c.quotas.unauthenticated_requests_per_second = v;
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let c = Config::from_yaml(yaml, Path::new("t.yaml")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.relay_address(), Some("10.0.0.5".parse().unwrap()));
        assert_eq!(c.quotas.max_allocations_per_user, 10);
        assert_eq!(c.listeners[1].protocol, Protocol::Tls);
    }

    #[test]
    fn errors_name_the_field() {
        let err = |yaml: &str| {
            let c = Config::from_yaml(yaml, Path::new("t.yaml"));
            match c.and_then(|c| c.validate()) {
                Err(e) => e.to_string(),
                Ok(()) => panic!("accepted: {yaml}"),
            }
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
        assert!(err("relayy: {}").contains("relayy"), "unknown fields are named");
    }

    #[test]
    fn dev_config_is_valid_and_loopback_only() {
        let c = Config::dev(0, "s");
        c.validate().unwrap();
        assert!(c.listeners.iter().all(|l| l.address.ip().is_loopback()));
        assert!(c.relay_address().unwrap().is_loopback());
    }

    #[test]
    fn flags_override_file() {
        let args = Args {
            listen: vec!["tcp://127.0.0.1:0".parse().unwrap()],
            secrets: vec!["s".into()],
            relay_ports: Some("40000-40010".into()),
            ..Args::default()
        };
        let c = args.into_config().unwrap();
        assert_eq!(c.listeners[0].protocol, Protocol::Tcp);
        assert_eq!((c.relay.port_min, c.relay.port_max), (40000, 40010));
        assert!("bogus://x".parse::<Listener>().is_err());
    }

    #[test]
    fn a_standalone_node_gets_the_operators_quotas() {
        // With no flags and no file it had none: 975 allocations from one
        // user, and every unauthenticated request answered.
        let c =
            Args { secrets: vec!["s".into()], relay_address: Some("192.0.2.1".parse().unwrap()), ..Args::default() }
                .into_config()
                .unwrap();
        assert_eq!(c.quotas.max_allocations_per_user, 10);
        assert_eq!(c.quotas.unauthenticated_requests_per_second, 20);
        let file = Config::from_yaml("quotas: { maxAllocations: 5 }", Path::new("t.yaml")).unwrap();
        assert_eq!(file.quotas.max_allocations_per_user, 10, "a partial quotas block keeps the others");
        let off = Args { max_allocations_per_user: Some(0), unauthenticated_rps: Some(0), ..Args::default() };
        let off = Args { secrets: vec!["s".into()], relay_address: Some("192.0.2.1".parse().unwrap()), ..off };
        let c = off.into_config().unwrap();
        assert_eq!((c.quotas.max_allocations_per_user, c.quotas.unauthenticated_requests_per_second), (0, 0));
    }

    #[test]
    fn bind_ip_replaces_only_wildcard_addresses() {
        let args = Args {
            listen: vec!["udp://0.0.0.0:3478".parse().unwrap(), "tcp://10.0.0.9:3478".parse().unwrap()],
            secrets: vec!["s".into()],
            bind_ip: Some("127.1.0.7".parse().unwrap()),
            ..Args::default()
        };
        let c = args.into_config().unwrap();
        assert_eq!(c.listeners[0].address, "127.1.0.7:3478".parse().unwrap());
        assert_eq!(c.listeners[1].address, "10.0.0.9:3478".parse().unwrap(), "an explicit address stays");
        assert_eq!(c.admin_address, "127.1.0.7:9090".parse().unwrap());
    }
}
