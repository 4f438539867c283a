//! media-node configuration: flags and environment, or the config file the operator
//! renders (`switchyard_api::node_config::MediaNodeConfig`), whose settings win.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use switchyard_api::media_cluster::WebhookSpec;
use switchyard_api::node_config::MediaNodeConfig;

use crate::{Error, Result};

/// media-node's settings.
#[derive(Debug, Clone, Parser)]
#[command(name = "media-node", version, about = "Switchyard SFU: signaling and media forwarding")]
pub struct Config {
    /// A YAML file (as the operator renders it); its settings override flags and
    /// environment. Re-read while running for the TURN servers and secret.
    #[arg(long, env = "SWITCHYARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Admin listen address: health, metrics, `/internal/status`, `/drain`, room close.
    /// Never expose it publicly.
    #[arg(long, env = "SWITCHYARD_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_addr: SocketAddr,
    /// HTTP listen address: `/rtc` WebSocket, health, metrics.
    #[arg(long, env = "SWITCHYARD_HTTP_ADDR", default_value = "0.0.0.0:7880")]
    pub http_addr: SocketAddr,
    /// The one UDP port all peer connections share.
    #[arg(long, env = "SWITCHYARD_UDP_ADDR", default_value = "0.0.0.0:7882")]
    pub udp_addr: SocketAddr,
    /// Passive ICE-TCP listener, for clients whose UDP is blocked.
    #[arg(long, env = "SWITCHYARD_TCP_ADDR", default_value = "0.0.0.0:7881")]
    pub tcp_addr: SocketAddr,
    /// Listen on this IP instead of the wildcard address of each listener (the operator
    /// sets it to the pod IP, so every pod's sockets are its own even where pods share a
    /// network namespace).
    #[arg(long, env = "SWITCHYARD_BIND_IP")]
    pub bind_ip: Option<IpAddr>,
    /// Do not listen for ICE over TCP.
    #[arg(long, env = "SWITCHYARD_NO_ICE_TCP")]
    pub no_ice_tcp: bool,
    /// Advertise only the ICE-TCP candidate (for networks where UDP cannot reach the node).
    #[arg(long, env = "SWITCHYARD_ICE_TCP_ONLY", conflicts_with = "no_ice_tcp")]
    pub ice_tcp_only: bool,
    /// Addresses advertised as ICE host candidates (the pod IP, or NAT 1:1 external IPs).
    /// Defaults to the bound address, or 127.0.0.1 when bound to 0.0.0.0.
    #[arg(long = "advertise-ip", env = "SWITCHYARD_ADVERTISE_IPS", value_delimiter = ',')]
    pub advertise_ips: Vec<IpAddr>,
    /// API keys as `key:secret`, comma-separated.
    #[arg(long = "api-key", env = "SWITCHYARD_API_KEYS", value_delimiter = ',', value_parser = parse_key, hide_env_values = true)]
    pub api_keys: Vec<(String, String)>,
    /// This node's name (the pod name in Kubernetes).
    #[arg(long, env = "POD_NAME", default_value = "media-node-0")]
    pub node_name: String,
    /// The MediaCluster this node belongs to (named in webhook events).
    #[arg(long, env = "SWITCHYARD_CLUSTER", default_value = "local")]
    pub cluster: String,
    /// A URL to POST room events to (all events, signed with the first API key);
    /// repeatable, or comma-separated in the environment.
    #[arg(long = "webhook", env = "SWITCHYARD_WEBHOOKS", value_delimiter = ',', value_parser = parse_webhook)]
    pub webhooks: Vec<WebhookSpec>,
    /// TURN URIs handed to clients, comma-separated (`turn:host:3478?transport=udp`).
    #[arg(long = "turn-uri", env = "SWITCHYARD_TURN_URIS", value_delimiter = ',')]
    pub turn_uris: Vec<String>,
    /// TURN REST-API shared secret used to mint per-participant credentials.
    #[arg(long, env = "SWITCHYARD_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// The cluster's relay secret: the room keys that open relays between nodes of one
    /// room are derived from it (`api::relay::room_key`). Without it the relay endpoint
    /// refuses every relay and this node dials none.
    #[arg(long, env = "SWITCHYARD_RELAY_SECRET", hide_env_values = true)]
    pub relay_secret: Option<String>,
    /// Lifetime of the TURN credentials handed out, seconds.
    #[arg(long, env = "SWITCHYARD_TURN_TTL", default_value_t = 86400)]
    pub turn_ttl_seconds: u64,
    /// Tell clients to use relay candidates only (Gateway mode).
    #[arg(long, env = "SWITCHYARD_RELAY_ONLY")]
    pub relay_only: bool,
    /// Worker shards (rooms are spread over them); 0 means one per CPU.
    #[arg(long, env = "SWITCHYARD_SHARDS", default_value_t = 0)]
    pub shards: usize,
    /// Create a room on first join (tokens with `roomCreate` may always create).
    #[arg(long, env = "SWITCHYARD_AUTO_CREATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create: bool,
    /// Seconds an empty room stays open.
    #[arg(long, env = "SWITCHYARD_EMPTY_TIMEOUT", default_value_t = 300)]
    pub empty_timeout_seconds: u64,
    /// Participants per room by default; 0 means no limit.
    #[arg(long, env = "SWITCHYARD_MAX_PARTICIPANTS", default_value_t = 0)]
    pub max_participants: u32,
    /// Largest signaling frame accepted, bytes.
    #[arg(long, env = "SWITCHYARD_MAX_MESSAGE_BYTES", default_value_t = switchyard_api::signal::MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Signaling messages per second one connection may send (burst: twice that).
    #[arg(long, env = "SWITCHYARD_MESSAGES_PER_SECOND", default_value_t = 50)]
    pub messages_per_second: u32,
    /// Keepalive interval told to clients, seconds.
    #[arg(long, env = "SWITCHYARD_PING_INTERVAL", default_value_t = 10)]
    pub ping_interval_seconds: u32,
    /// A session with no frame for this long is closed, seconds.
    #[arg(long, env = "SWITCHYARD_PING_TIMEOUT", default_value_t = 30)]
    pub ping_timeout_seconds: u32,
    /// How long a participant whose signaling socket dropped is kept for `resume`
    /// (tracks, subscriptions and media stay), seconds; 0 turns resume off.
    #[arg(long, env = "SWITCHYARD_RESUME_WINDOW", default_value_t = 15)]
    pub resume_window_seconds: u64,
    /// How long a draining node waits for its rooms to empty, seconds.
    #[arg(long, env = "SWITCHYARD_DRAIN_GRACE", default_value_t = 3600)]
    pub drain_grace_seconds: u64,
    /// Serve the demo call page at `/` (for `switchyard dev`).
    #[arg(long, env = "SWITCHYARD_DEMO")]
    pub demo: bool,
    /// Kubernetes mode: how long a join waits for its room to be created and placed,
    /// seconds.
    #[arg(long, env = "SWITCHYARD_PLACEMENT_TIMEOUT", default_value_t = 10)]
    pub placement_timeout_seconds: u64,
    /// Kubernetes mode: smallest interval between two `Room.status` reports of one room,
    /// milliseconds.
    #[arg(long, env = "SWITCHYARD_ROOM_STATUS_INTERVAL_MS", default_value_t = 2000)]
    pub room_status_interval_ms: u64,
    /// Never use the Kubernetes API, even in a pod (rooms are then local to this node).
    #[arg(long, env = "SWITCHYARD_STANDALONE")]
    pub standalone: bool,
    /// Set by [`Config::apply_file`] when running in a pod of a MediaCluster.
    #[arg(skip)]
    pub kubernetes: Option<crate::cluster::KubeMode>,
    /// Token clock leeway, seconds.
    #[arg(long, env = "SWITCHYARD_TOKEN_LEEWAY", default_value_t = 10)]
    pub token_leeway_seconds: u64,
    /// The limits this node enforces at admission (the file's `capacity` replaces them).
    #[command(flatten)]
    pub capacity: Capacity,
    /// A connection must send its HTTP request headers within this many seconds (both
    /// ports); an idle keep-alive connection is closed after as long.
    #[arg(long, env = "SWITCHYARD_HEADER_TIMEOUT", default_value_t = 10)]
    pub header_timeout_seconds: u64,
    /// Open connections on the signaling port, every client together (WebSockets
    /// included); 0 means no limit.
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS", default_value_t = 10000)]
    pub max_connections: usize,
    /// Open connections on the signaling port from one client address (an IPv6 client:
    /// its /64); 0 means no limit. Behind a proxy, list it in --trusted-proxies so the
    /// cap applies to the clients it forwards instead of to the proxy.
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,
    /// Proxies in front of the signaling port (CIDRs, comma-separated: an ingress
    /// controller's pods, a load balancer that rewrites source addresses). Their
    /// connections count toward --max-connections only; each WebSocket they forward
    /// counts toward --max-connections-per-ip under the client address in its
    /// X-Forwarded-For (the right-most entry that is not a trusted proxy). X-Forwarded-For
    /// from anyone else is ignored. In Kubernetes mode the fleet's media-node pods are
    /// trusted too (they proxy signaling to each other).
    #[arg(long, env = "SWITCHYARD_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Messages queued for one client; a client that lets more pile up is closed with
    /// 1008 (it cannot keep up).
    #[arg(long, env = "SWITCHYARD_SESSION_QUEUE", default_value_t = 1024)]
    pub session_queue: usize,
    /// A frame the client's socket does not take within this many seconds ends the
    /// session (the client is not reading).
    #[arg(long, env = "SWITCHYARD_SEND_TIMEOUT", default_value_t = 10)]
    pub send_timeout_seconds: u64,
    /// Also serve `/metrics` on the public signaling port (it is always on the admin port).
    #[arg(long, env = "SWITCHYARD_PUBLIC_METRICS")]
    pub public_metrics: bool,
}

/// Limits a node enforces on itself; 0 means no limit. A join past one gets `node_full`
/// with a retry hint, and `/internal/status` reports the node full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::Args)]
pub struct Capacity {
    /// Rooms open on the node at most (0: no limit).
    #[arg(long = "capacity-rooms", env = "SWITCHYARD_CAPACITY_ROOMS", default_value_t = 0)]
    pub rooms: u64,
    /// Participants connected to the node at most (0: no limit).
    #[arg(long = "capacity-participants", env = "SWITCHYARD_CAPACITY_PARTICIPANTS", default_value_t = 0)]
    pub participants: u64,
    /// Media bandwidth (in plus out, bits/s) above which joins are refused (0: no limit).
    #[arg(long = "capacity-bandwidth-bps", env = "SWITCHYARD_CAPACITY_BANDWIDTH_BPS", default_value_t = 0)]
    pub bandwidth_bps: u64,
}

impl From<Capacity> for switchyard_api::node::MediaNodeCapacity {
    fn from(c: Capacity) -> Self {
        Self { rooms: c.rooms, participants: c.participants, bandwidth_bps: c.bandwidth_bps }
    }
}

/// Read and parse the config file the operator renders (`MediaNodeConfig`, defined once in
/// `api` for both sides); errors name the file and the field (an unknown field is an
/// error, so a setting is never silently ignored).
pub fn read_file(path: &Path) -> Result<MediaNodeConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Config(format!("config {}: {e}", path.display())))?;
    MediaNodeConfig::from_yaml(&text, path).map_err(|e| Error::Config(e.to_string()))
}

/// Read a secret file: the first line that is not empty or a `#` comment.
pub fn read_secret(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Config(format!("secret {}: {e}", path.display())))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .ok_or_else(|| Error::Config(format!("secret {}: the file holds no secret", path.display())))
}

/// API keys from a directory: each file's name is a key, its contents the secret. Names
/// starting with `.` (the kubelet's `..data` links) are skipped.
pub fn read_keys_dir(dir: &Path) -> Result<Vec<(String, String)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Config(format!("keysDir {}: {e}", dir.display())))?;
    let mut keys = vec![];
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_file() {
            continue;
        }
        keys.push((name, read_secret(&entry.path())?));
    }
    keys.sort();
    Ok(keys)
}

fn parse_webhook(s: &str) -> std::result::Result<WebhookSpec, String> {
    let spec = WebhookSpec { url: s.trim().to_owned(), events: vec![], api_key: None };
    crate::webhook::receivers(std::slice::from_ref(&spec), &[("k".into(), "s".into())]).map_err(|e| e.to_string())?;
    Ok(spec)
}

fn parse_key(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once(':') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err("expected key:secret".into()),
    }
}

impl Config {
    /// Apply a config file on top of flags and environment. `env` looks up `POD_IP`,
    /// `HOST_IP` and `POD_NAME`.
    pub fn apply_file(&mut self, file: &MediaNodeConfig, env: impl Fn(&str) -> Option<String>) -> Result<()> {
        let any = self.bind_ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        self.http_addr = SocketAddr::new(any, file.signaling_port);
        self.admin_addr = SocketAddr::new(any, file.admin_port);
        self.udp_addr = SocketAddr::new(any, file.udp_port);
        self.tcp_addr = SocketAddr::new(any, file.tcp_port);
        let gateway = file.mode == switchyard_api::media_cluster::ExposureMode::Gateway;
        self.advertise_ips = if !file.advertised_addresses.is_empty() {
            file.advertised_addresses.clone()
        } else {
            let var = if gateway { "POD_IP" } else { "HOST_IP" };
            let ip = env(var).ok_or_else(|| Error::Config(format!("{var}: required to advertise an address")))?;
            vec![ip.parse().map_err(|e| Error::Config(format!("{var}: {ip:?}: {e}")))?]
        };
        if let Some(name) = env("POD_NAME") {
            self.node_name = name;
        }
        self.api_keys = read_keys_dir(&file.keys_dir)?;
        self.turn_uris = file.turn.uris.clone();
        self.turn_secret = Some(read_secret(&file.turn.secret_file)?);
        self.turn_ttl_seconds = file.turn.credential_ttl_seconds;
        self.relay_only = gateway;
        self.auto_create = file.room_defaults.auto_create;
        self.empty_timeout_seconds = file.room_defaults.empty_timeout_seconds;
        self.max_participants = file.room_defaults.max_participants;
        self.drain_grace_seconds = file.drain_grace_seconds;
        self.resume_window_seconds = file.resume_window_seconds;
        self.max_connections_per_ip = file.max_connections_per_client as usize;
        self.trusted_proxies = file.trusted_proxies.clone();
        self.cluster = file.cluster.clone();
        self.webhooks = file.webhooks.iter().map(WebhookSpec::from).collect();
        let c = &file.capacity;
        self.capacity =
            Capacity { rooms: c.rooms.into(), participants: c.participants.into(), bandwidth_bps: c.bandwidth_bps };
        self.kubernetes = match env("POD_NAMESPACE") {
            Some(namespace) if !self.standalone => Some(crate::cluster::KubeMode {
                namespace,
                cluster: file.cluster.clone(),
                placement_timeout: Duration::from_secs(self.placement_timeout_seconds),
                status_interval: Duration::from_millis(self.room_status_interval_ms.max(100)),
            }),
            _ => None,
        };
        Ok(())
    }

    /// Replace wildcard listen addresses with `bind_ip`, when set.
    pub fn apply_bind_ip(&mut self) {
        let Some(ip) = self.bind_ip else { return };
        for addr in [&mut self.http_addr, &mut self.admin_addr, &mut self.udp_addr, &mut self.tcp_addr] {
            if addr.ip().is_unspecified() {
                addr.set_ip(ip);
            }
        }
    }

    /// Settings for tests and the dev server: loopback, ephemeral ports, one key.
    pub fn local(api_key: &str, api_secret: &str) -> Self {
        let mut c = Config::parse_from(["media-node"]);
        let lo: SocketAddr = "127.0.0.1:0".parse().expect("literal");
        c.http_addr = lo;
        c.udp_addr = lo;
        c.tcp_addr = lo;
        c.admin_addr = lo;
        c.api_keys = vec![(api_key.to_owned(), api_secret.to_owned())];
        c.shards = 1;
        c
    }

    /// Check what clap cannot, naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| Err(Error::Config(format!("{field}: {why}")));
        if self.api_keys.is_empty() {
            return bad("api-key (SWITCHYARD_API_KEYS)", "at least one key:secret is required");
        }
        if self.turn_uris.iter().any(|u| !(u.starts_with("turn:") || u.starts_with("turns:") || u.starts_with("stun:")))
        {
            return bad("turn-uri", "each must start with turn:, turns: or stun:");
        }
        if !self.turn_uris.is_empty()
            && self.turn_secret.is_none()
            && self.turn_uris.iter().any(|u| !u.starts_with("stun:"))
        {
            return bad("turn-secret", "required when TURN URIs are configured");
        }
        if self.relay_only && self.turn_uris.is_empty() {
            return bad("relay-only", "needs at least one TURN URI");
        }
        if self.max_message_bytes < 1024 {
            return bad("max-message-bytes", "must be at least 1024");
        }
        if self.messages_per_second == 0 {
            return bad("messages-per-second", "must be positive");
        }
        if self.header_timeout_seconds == 0 {
            return bad("header-timeout-seconds", "must be positive");
        }
        if self.session_queue == 0 {
            return bad("session-queue", "must be positive");
        }
        if self.send_timeout_seconds == 0 {
            return bad("send-timeout-seconds", "must be positive");
        }
        crate::webhook::receivers(&self.webhooks, &self.api_keys)?;
        Ok(())
    }

    /// The advertised candidate IPs for a socket bound to `bound`.
    pub fn candidate_ips(&self, bound: IpAddr) -> Vec<IpAddr> {
        if !self.advertise_ips.is_empty() {
            self.advertise_ips.clone()
        } else if bound.is_unspecified() {
            vec![IpAddr::from([127, 0, 0, 1])]
        } else {
            vec![bound]
        }
    }

    /// The ICE-TCP listen address, unless disabled.
    pub fn ice_tcp_addr(&self) -> Option<SocketAddr> {
        (!self.no_ice_tcp).then_some(self.tcp_addr)
    }

    /// The resume window.
    pub fn resume_window(&self) -> Duration {
        Duration::from_secs(self.resume_window_seconds)
    }

    /// Empty-room timeout.
    pub fn empty_timeout(&self) -> Duration {
        Duration::from_secs(self.empty_timeout_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// media-node's `config.yaml` from one of the operator's golden files.
    fn golden_config(file: &str) -> String {
        let path = format!("{}/../operator/tests/golden/{file}", env!("CARGO_MANIFEST_DIR"));
        let golden = std::fs::read_to_string(&path).unwrap();
        let doc = golden
            .split("\n---\n")
            .find(|d| d.contains("kind: ConfigMap") && d.contains("signalingPort"))
            .expect("the media-node ConfigMap");
        let cm: serde_json::Value = serde_saphyr::from_str(doc).unwrap();
        cm["data"]["config.yaml"].as_str().unwrap().to_owned()
    }

    /// The ConfigMap the operator renders (its golden file) is a config media-node reads.
    #[test]
    fn reads_the_config_the_operator_renders() {
        let yaml = golden_config("gateway-defaults.yaml");

        let dir = std::env::temp_dir().join(format!("mn-config-{}", std::process::id()));
        let keys = dir.join("keys");
        std::fs::create_dir_all(keys.join("..data")).unwrap();
        std::fs::write(keys.join("APIedge"), "s3cret\n").unwrap();
        std::fs::write(dir.join("turn-secret"), "# rotated daily\nturnsecret\n").unwrap();
        let yaml = yaml
            .replace("/etc/switchyard/keys", keys.to_str().unwrap())
            .replace("/etc/switchyard/turn/secret", dir.join("turn-secret").to_str().unwrap());
        let path = dir.join("config.yaml");
        std::fs::write(&path, yaml).unwrap();

        let file = read_file(&path).unwrap();
        assert_eq!(file.cluster, "edge");
        let mut c = Config::parse_from(["media-node"]);
        let env = |k: &str| match k {
            "POD_IP" => Some("10.244.1.7".to_owned()),
            "POD_NAME" => Some("edge-sfu-0".to_owned()),
            _ => None,
        };
        c.apply_file(&file, env).unwrap();
        assert_eq!(c.http_addr.port(), 7880);
        assert_eq!(c.max_connections_per_ip, 256);
        assert_eq!(c.admin_addr.port(), 9090);
        assert_eq!(c.advertise_ips, vec!["10.244.1.7".parse::<IpAddr>().unwrap()], "Gateway advertises the pod IP");
        assert_eq!(c.node_name, "edge-sfu-0");
        assert_eq!(c.api_keys, vec![("APIedge".to_owned(), "s3cret".to_owned())]);
        assert_eq!(c.turn_secret.as_deref(), Some("turnsecret"));
        assert!(c.relay_only);
        assert_eq!(c.turn_uris.len(), 2);
        assert_eq!(
            c.capacity,
            Capacity { rooms: 100, participants: 500, bandwidth_bps: 0 },
            "the capacity the operator renders is the one the node enforces"
        );
        assert!(c.validate().is_ok());
        assert_eq!(c.kubernetes, None, "no POD_NAMESPACE: not in a pod");
        let in_pod = |k: &str| if k == "POD_NAMESPACE" { Some("media".to_owned()) } else { env(k) };
        c.apply_file(&file, in_pod).unwrap();
        let mode = c.kubernetes.clone().expect("Kubernetes mode in a pod");
        assert_eq!((mode.namespace.as_str(), mode.cluster.as_str()), ("media", "edge"));
        let mut standalone = Config::parse_from(["media-node", "--standalone"]);
        standalone.apply_file(&file, in_pod).unwrap();
        assert_eq!(standalone.kubernetes, None);

        let mut bound = Config::parse_from(["media-node", "--bind-ip", "10.244.1.7"]);
        bound.apply_file(&file, env).unwrap();
        assert_eq!(bound.http_addr, "10.244.1.7:7880".parse().unwrap(), "listens on the pod IP only");
        assert_eq!(bound.udp_addr, "10.244.1.7:7882".parse().unwrap());

        let mut no_ip = Config::parse_from(["media-node"]);
        let err = no_ip.apply_file(&file, |_| None).unwrap_err();
        assert!(err.to_string().contains("POD_IP"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `capacity` as the operator renders it reaches the runtime config (the limits the
    /// node enforces); a file without it means no limits.
    #[test]
    fn capacity_survives_into_the_runtime_config() {
        let dir = std::env::temp_dir().join(format!("mn-capacity-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        std::fs::write(dir.join("keys/APIedge"), "s3cret\n").unwrap();
        std::fs::write(dir.join("turn-secret"), "turnsecret\n").unwrap();
        let yaml = golden_config("direct-full.yaml")
            .replace("/etc/switchyard/keys", dir.join("keys").to_str().unwrap())
            .replace("/etc/switchyard/turn/secret", dir.join("turn-secret").to_str().unwrap());
        let path = dir.join("config.yaml");
        std::fs::write(&path, &yaml).unwrap();
        let mut c = Config::parse_from(["media-node"]);
        assert_eq!(c.capacity, Capacity::default(), "flags alone: no limits");
        c.apply_file(&read_file(&path).unwrap(), |_| None).unwrap();
        assert_eq!(c.capacity, Capacity { rooms: 50, participants: 400, bandwidth_bps: 800_000_000 });
        assert_eq!(c.resume_window(), Duration::from_secs(30), "sfu.resumeWindowSeconds reaches the node");
        // The golden cluster has an ingress and no trusted proxies: no per-client cap.
        assert_eq!((c.max_connections_per_ip, c.trusted_proxies.len()), (0, 0));

        let start = yaml.find("capacity:").unwrap();
        let end = yaml.find("keysDir:").unwrap();
        std::fs::write(&path, format!("{}{}", &yaml[..start], &yaml[end..])).unwrap();
        c.apply_file(&read_file(&path).unwrap(), |_| None).unwrap();
        assert_eq!(c.capacity, Capacity::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A field media-node does not know fails its start-up, naming the field and the file.
    #[test]
    fn an_unknown_field_is_a_start_up_error() {
        let dir = std::env::temp_dir().join(format!("mn-unknown-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        for (from, to, field) in [
            ("drainGraceSeconds:", "maxRooms: 3\ndrainGraceSeconds:", "maxRooms"),
            ("  credentialTtlSeconds:", "  credentialTTL: 60\n  credentialTtlSeconds:", "credentialTTL"),
        ] {
            let yaml = golden_config("gateway-defaults.yaml");
            assert!(yaml.contains(from));
            std::fs::write(&path, yaml.replacen(from, to, 1)).unwrap();
            let err = read_file(&path).unwrap_err().to_string();
            assert!(err.contains(&format!("unknown field `{field}`")), "{err}");
            assert!(err.contains(path.to_str().unwrap()), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_config_file_names_the_problem() {
        let dir = std::env::temp_dir().join(format!("mn-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        std::fs::write(&path, "cluster: edge\nsignalingPort: seventy\n").unwrap();
        let err = read_file(&path).unwrap_err().to_string();
        assert!(err.contains("config.yaml") && err.contains("signalingPort"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = Config::local("k", "s");
        assert!(c.validate().is_ok());
        c.turn_uris = vec!["http://x".into()];
        assert!(c.validate().unwrap_err().to_string().contains("turn-uri"));
        c.turn_uris = vec!["turn:127.0.0.1:3478".into()];
        assert!(c.validate().unwrap_err().to_string().contains("turn-secret"));
        c.turn_secret = Some("s".into());
        assert!(c.validate().is_ok());
        c.api_keys.clear();
        assert!(c.validate().unwrap_err().to_string().contains("api-key"));
    }

    /// Webhooks as the operator renders them (the same `WebhookSpec` through the same YAML
    /// serialiser, into its golden ConfigMap) become the node's receivers.
    #[test]
    fn reads_the_webhooks_the_operator_renders() {
        use switchyard_api::media_cluster::WebhookEvent;
        let yaml = golden_config("direct-full.yaml");
        let file = MediaNodeConfig::from_yaml(&yaml, Path::new("direct-full.yaml")).unwrap();
        assert!(file.webhooks.is_empty(), "the golden cluster has none");

        let specs = vec![
            WebhookSpec {
                url: "https://app.example.com/hooks".into(),
                events: vec![WebhookEvent::RoomFinished, WebhookEvent::ParticipantJoined],
                api_key: Some("APIedge".into()),
            },
            WebhookSpec { url: "http://audit.media.svc:8080/".into(), events: vec![], api_key: None },
        ];
        let rendered = serde_saphyr::to_string(&specs).unwrap();
        assert!(yaml.contains("webhooks: []\n"));
        let dir = std::env::temp_dir().join(format!("mn-webhooks-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        std::fs::write(dir.join("keys/APIedge"), "s3cret\n").unwrap();
        std::fs::write(dir.join("turn-secret"), "turnsecret\n").unwrap();
        let yaml = yaml
            .replace("webhooks: []\n", &format!("webhooks:\n{rendered}"))
            .replace("/etc/switchyard/keys", dir.join("keys").to_str().unwrap())
            .replace("/etc/switchyard/turn/secret", dir.join("turn-secret").to_str().unwrap());
        let path = dir.join("config.yaml");
        std::fs::write(&path, yaml).unwrap();
        let file = read_file(&path).unwrap();
        assert_eq!(file.webhooks.iter().map(WebhookSpec::from).collect::<Vec<_>>(), specs);

        let mut c = Config::parse_from(["media-node", "--webhook", "http://127.0.0.1:9/ignored"]);
        c.apply_file(&file, |_| None).unwrap();
        assert_eq!(c.webhooks, specs, "the file replaces flags");
        assert_eq!(c.cluster, "edge");
        assert!(c.validate().is_ok());
        c.webhooks[0].api_key = Some("APIother".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("webhook") && err.contains("APIother"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn webhook_flags_take_every_event_and_the_first_key() {
        let c = Config::parse_from([
            "media-node",
            "--webhook",
            "http://a:8080/h,https://b.example/h",
            "--webhook",
            "http://c/",
        ]);
        let urls: Vec<_> = c.webhooks.iter().map(|w| w.url.as_str()).collect();
        assert_eq!(urls, ["http://a:8080/h", "https://b.example/h", "http://c/"]);
        assert!(c.webhooks.iter().all(|w| w.events.is_empty() && w.api_key.is_none()));
        assert!(Config::try_parse_from(["media-node", "--webhook", "ftp://a/h"]).is_err());
        assert_eq!(Config::parse_from(["media-node"]).cluster, "local");
    }

    #[test]
    fn keys_and_addresses_parse() {
        let c =
            Config::parse_from(["media-node", "--api-key", "a:b,c:d", "--no-ice-tcp", "--advertise-ip", "10.1.2.3"]);
        assert_eq!(c.api_keys, vec![("a".into(), "b".into()), ("c".into(), "d".into())]);
        assert!(c.no_ice_tcp);
        assert_eq!(c.candidate_ips("0.0.0.0".parse().unwrap()), vec!["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert!(Config::try_parse_from(["media-node", "--api-key", "nosecret"]).is_err());
        let c = Config::parse_from(["media-node", "--capacity-rooms", "3", "--capacity-participants", "40"]);
        assert_eq!(c.capacity, Capacity { rooms: 3, participants: 40, bandwidth_bps: 0 });
    }
}
