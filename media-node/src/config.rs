//! media-node configuration: flags and environment (the operator sets the environment).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Parser;

use crate::{Error, Result};

/// media-node's settings.
#[derive(Debug, Clone, Parser)]
#[command(name = "media-node", version, about = "Switchyard SFU: signaling and media forwarding")]
pub struct Config {
    /// HTTP listen address: `/rtc` WebSocket, health, metrics, internal API.
    #[arg(long, env = "SWITCHYARD_HTTP_ADDR", default_value = "0.0.0.0:7880")]
    pub http_addr: SocketAddr,
    /// The one UDP port all peer connections share.
    #[arg(long, env = "SWITCHYARD_UDP_ADDR", default_value = "0.0.0.0:7882")]
    pub udp_addr: SocketAddr,
    /// Passive ICE-TCP listener, for clients whose UDP is blocked.
    #[arg(long, env = "SWITCHYARD_TCP_ADDR", default_value = "0.0.0.0:7881")]
    pub tcp_addr: SocketAddr,
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
    /// TURN URIs handed to clients, comma-separated (`turn:host:3478?transport=udp`).
    #[arg(long = "turn-uri", env = "SWITCHYARD_TURN_URIS", value_delimiter = ',')]
    pub turn_uris: Vec<String>,
    /// TURN REST-API shared secret used to mint per-participant credentials.
    #[arg(long, env = "SWITCHYARD_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
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
    /// How long a draining node waits for its rooms to empty, seconds.
    #[arg(long, env = "SWITCHYARD_DRAIN_GRACE", default_value_t = 3600)]
    pub drain_grace_seconds: u64,
    /// Serve the demo call page at `/` (for `switchyard dev`).
    #[arg(long, env = "SWITCHYARD_DEMO")]
    pub demo: bool,
    /// Token clock leeway, seconds.
    #[arg(long, env = "SWITCHYARD_TOKEN_LEEWAY", default_value_t = 10)]
    pub token_leeway_seconds: u64,
}

fn parse_key(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once(':') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err("expected key:secret".into()),
    }
}

impl Config {
    /// Settings for tests and the dev server: loopback, ephemeral ports, one key.
    pub fn local(api_key: &str, api_secret: &str) -> Self {
        let mut c = Config::parse_from(["media-node"]);
        let lo: SocketAddr = "127.0.0.1:0".parse().expect("literal");
        c.http_addr = lo;
        c.udp_addr = lo;
        c.tcp_addr = lo;
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

    /// Empty-room timeout.
    pub fn empty_timeout(&self) -> Duration {
        Duration::from_secs(self.empty_timeout_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn keys_and_addresses_parse() {
        let c =
            Config::parse_from(["media-node", "--api-key", "a:b,c:d", "--no-ice-tcp", "--advertise-ip", "10.1.2.3"]);
        assert_eq!(c.api_keys, vec![("a".into(), "b".into()), ("c".into(), "d".into())]);
        assert!(c.no_ice_tcp);
        assert_eq!(c.candidate_ips("0.0.0.0".parse().unwrap()), vec!["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert!(Config::try_parse_from(["media-node", "--api-key", "nosecret"]).is_err());
    }
}
