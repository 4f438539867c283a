//! Configuration: a YAML file (the `TurnNodeConfig` document in `api`, which the operator
//! renders), overridden by environment variables and flags (clap reads both), then
//! validated as a whole. Field names in the YAML are camelCase to match the
//! `MediaCluster` resource the operator renders them from.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
pub use switchyard_api::node_config::turn_node::{
    AuthConfig, LifetimeConfig, Listener, PeerConfig, Protocol, QuotaConfig, RelayConfig, StaticUser, TlsConfig,
};

use crate::error::{Error, Result};

/// The whole configuration: the document the operator renders
/// (`switchyard_api::node_config::TurnNodeConfig`), defined once in `api` and used as is.
pub type Config = switchyard_api::node_config::TurnNodeConfig;

/// Read and parse a YAML config file; an unknown field is an error naming it and the file.
pub fn read(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
    Ok(Config::from_yaml(&text, path)?)
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
    /// A second relay address of the other family (dual-stack allocations).
    #[arg(long, env = "SWITCHYARD_TURN_RELAY_ADDITIONAL_ADDRESS")]
    pub relay_additional_address: Option<IpAddr>,
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
            Some(p) => Config { source: Some(p.clone()), ..read(p)? },
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
        if let Some(a) = self.relay_additional_address {
            c.relay.additional_address = Some(a);
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

    /// turn-node's `config.yaml` from one of the operator's golden files.
    fn golden_config(file: &str) -> String {
        let path = format!("{}/../operator/tests/golden/{file}", env!("CARGO_MANIFEST_DIR"));
        let golden = std::fs::read_to_string(&path).unwrap();
        let doc = golden
            .split("\n---\n")
            .find(|d| d.contains("kind: ConfigMap") && d.contains("name: edge-turn-config"))
            .expect("the turn-node ConfigMap");
        let cm: serde_json::Value = serde_saphyr::from_str(doc).unwrap();
        cm["data"]["config.yaml"].as_str().unwrap().to_owned()
    }

    /// The ConfigMaps the operator renders (its golden files) start a node: they parse,
    /// and with the relay address the pod gets from its environment they validate.
    #[test]
    fn reads_the_config_the_operator_renders() {
        let dir = tempfile::tempdir().unwrap();
        for golden in ["gateway-defaults.yaml", "direct-full.yaml"] {
            let path = dir.path().join(golden);
            std::fs::write(&path, golden_config(golden)).unwrap();
            let args = Args {
                config: Some(path.clone()),
                relay_address: Some("10.244.2.9".parse().unwrap()),
                ..Args::default()
            };
            let c = args.into_config().unwrap_or_else(|e| panic!("{golden}: {e}"));
            assert_eq!(c.source.as_deref(), Some(path.as_path()));
            assert_eq!(c.auth.secrets_file.as_deref(), Some(Path::new("/etc/switchyard/turn/secret")));
            assert_eq!(c.lifetimes, LifetimeConfig::default(), "left to the node");
            assert!(c.listeners.iter().all(|l| l.address.ip().is_unspecified()), "{golden}");
        }
        let direct = read(&dir.path().join("direct-full.yaml")).unwrap();
        assert_eq!(direct.peers.deny, vec!["10.96.0.0/12".parse::<IpNet>().unwrap()]);
        assert_eq!(direct.quotas.bandwidth_per_allocation_bps, 10_000_000);
        assert!(direct.tls.is_some());
    }

    #[test]
    fn an_unknown_field_fails_start_up_naming_it_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        let yaml = golden_config("gateway-defaults.yaml").replace("quotas:\n", "quotas:\n  maxAllocationsPerIp: 3\n");
        std::fs::write(&path, yaml).unwrap();
        let args =
            Args { config: Some(path.clone()), relay_address: Some("10.0.0.1".parse().unwrap()), ..Args::default() };
        let err = args.into_config().unwrap_err().to_string();
        assert!(err.contains("unknown field `maxAllocationsPerIp`"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        let missing = read(&dir.path().join("absent.yaml")).unwrap_err().to_string();
        assert!(missing.contains("absent.yaml"), "{missing}");
    }
}
