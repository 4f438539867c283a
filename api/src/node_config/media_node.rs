//! media-node's `config.yaml`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Result;
use crate::media_cluster::{ExposureMode, WebhookEvent, WebhookSpec};

/// media-node's configuration, as the operator renders it from a MediaCluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MediaNodeConfig {
    /// The MediaCluster name (Rooms with this `clusterRef` are served).
    pub cluster: String,
    /// Signaling HTTP port (`/rtc`, room API).
    pub signaling_port: u16,
    /// Admin port (health, metrics, internal status, drain).
    pub admin_port: u16,
    /// `Gateway` (clients relay through TURN) or `Direct`.
    pub mode: ExposureMode,
    /// The shared UDP media port.
    pub udp_port: u16,
    /// The ICE-TCP port.
    pub tcp_port: u16,
    /// Addresses to advertise; empty: the pod IP (Gateway) or the host IP (Direct).
    #[serde(default)]
    pub advertised_addresses: Vec<IpAddr>,
    /// Limits the node enforces itself (0: none).
    #[serde(default)]
    pub capacity: Capacity,
    /// One file per API key, named after the key, holding its secret.
    pub keys_dir: PathBuf,
    /// TURN servers handed to clients, and the secret to mint their credentials.
    pub turn: TurnClient,
    /// Defaults for rooms.
    pub room_defaults: RoomDefaults,
    /// Webhook receivers.
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
    /// How long a drain waits for rooms to empty, seconds.
    pub drain_grace_seconds: u64,
    /// How long a participant whose signaling socket dropped is kept for `resume`,
    /// seconds; 0: off.
    #[serde(default = "default_resume_window_seconds")]
    pub resume_window_seconds: u64,
    /// Open signaling connections from one client address (0: no limit).
    pub max_connections_per_client: u32,
    /// Proxies whose `X-Forwarded-For` names the client (media-node's `--trusted-proxies`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

fn default_resume_window_seconds() -> u64 {
    15
}

impl MediaNodeConfig {
    /// Parse `config.yaml` text read from `file`; errors name the file and the field.
    pub fn from_yaml(text: &str, file: &Path) -> Result<Self> {
        super::from_yaml(text, file)
    }
}

/// Per-node limits; 0 means no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Capacity {
    /// Rooms hosted at once.
    pub rooms: u32,
    /// Participants connected at once.
    pub participants: u32,
    /// Media bandwidth, bits/s.
    pub bandwidth_bps: u64,
}

/// What media-node needs to hand out TURN servers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TurnClient {
    /// The TURN URIs (`turn:host:3478?transport=udp`).
    #[serde(default)]
    pub uris: Vec<String>,
    /// The TURN realm.
    #[serde(default)]
    pub realm: String,
    /// The shared secret file (its first line that is not empty or a `#` comment); re-read
    /// while running.
    pub secret_file: PathBuf,
    /// Lifetime of minted TURN credentials, seconds.
    pub credential_ttl_seconds: u64,
}

/// Defaults for rooms created on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoomDefaults {
    /// Create a room on first join (tokens with `roomCreate` may always create).
    pub auto_create: bool,
    /// Seconds an empty room stays open.
    pub empty_timeout_seconds: u64,
    /// Participants per room; 0 means no limit.
    pub max_participants: u32,
}

/// A webhook receiver (the document's form of [`WebhookSpec`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Webhook {
    /// The URL events are POSTed to.
    pub url: String,
    /// Events to send; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<WebhookEvent>,
    /// The API key whose secret signs each request; absent: the first key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

impl From<&WebhookSpec> for Webhook {
    fn from(w: &WebhookSpec) -> Self {
        Webhook { url: w.url.clone(), events: w.events.clone(), api_key: w.api_key.clone() }
    }
}

impl From<&Webhook> for WebhookSpec {
    fn from(w: &Webhook) -> Self {
        WebhookSpec { url: w.url.clone(), events: w.events.clone(), api_key: w.api_key.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn example() -> MediaNodeConfig {
        MediaNodeConfig {
            cluster: "edge".into(),
            signaling_port: 7880,
            admin_port: 9090,
            mode: ExposureMode::Direct,
            udp_port: 7882,
            tcp_port: 7881,
            advertised_addresses: vec!["203.0.113.7".parse().unwrap(), "2001:db8::7".parse().unwrap()],
            capacity: Capacity { rooms: 50, participants: 400, bandwidth_bps: 800_000_000 },
            keys_dir: "/etc/switchyard/keys".into(),
            turn: TurnClient {
                uris: vec!["turn:turn.example.com:3478?transport=udp".into()],
                realm: "switchyard".into(),
                secret_file: "/etc/switchyard/turn/secret".into(),
                credential_ttl_seconds: 86_400,
            },
            room_defaults: RoomDefaults { auto_create: true, empty_timeout_seconds: 300, max_participants: 0 },
            webhooks: vec![Webhook {
                url: "https://app.example.com/hooks".into(),
                events: vec![WebhookEvent::RoomFinished],
                api_key: Some("APIedge".into()),
            }],
            drain_grace_seconds: 600,
            resume_window_seconds: 20,
            max_connections_per_client: 256,
            trusted_proxies: vec!["10.244.0.0/16".parse().unwrap()],
        }
    }

    #[test]
    fn round_trips_through_yaml() {
        let doc = example();
        let text = super::super::to_yaml(&doc).unwrap();
        assert_eq!(MediaNodeConfig::from_yaml(&text, Path::new("config.yaml")).unwrap(), doc, "{text}");
    }

    #[test]
    fn unknown_fields_are_refused_by_name_at_every_level() {
        let text = super::super::to_yaml(&example()).unwrap();
        let cases = [
            text.replace("cluster: edge\n", "cluster: edge\nshards: 4\n"),
            text.replace("  rooms: 50\n", "  rooms: 50\n  tracks: 9\n"),
            text.replace("  autoCreate: true\n", "  autoCreate: true\n  autoCreat: false\n"),
            text.replace("  realm: switchyard\n", "  realm: switchyard\n  secret: inline\n"),
            text.replace("  apiKey: APIedge\n", "  apiKey: APIedge\n  secret: s\n"),
        ];
        for (yaml, field) in cases.iter().zip(["shards", "tracks", "autoCreat", "secret", "secret"]) {
            assert_ne!(yaml, &text, "the case must change the document ({field})");
            let err = MediaNodeConfig::from_yaml(yaml, Path::new("/etc/switchyard/config/config.yaml")).unwrap_err();
            let Error::ConfigParse { file, message } = &err else { panic!("{err:?}") };
            assert_eq!(file, "/etc/switchyard/config/config.yaml");
            assert!(message.contains(&format!("unknown field `{field}`")), "{message}");
        }
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let err = MediaNodeConfig::from_yaml("cluster: edge\nsignalingPort: seventy\n", Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.yaml") && err.contains("signalingPort"), "{err}");
        let text = super::super::to_yaml(&example()).unwrap().replace("udpPort: 7882", "udpPort: 70000");
        let err = MediaNodeConfig::from_yaml(&text, Path::new("c.yaml")).unwrap_err().to_string();
        assert!(err.contains("udpPort"), "{err}");
    }

    #[test]
    fn webhooks_convert_both_ways() {
        let spec = WebhookSpec { url: "http://a/".into(), events: vec![WebhookEvent::ParticipantLeft], api_key: None };
        assert_eq!(WebhookSpec::from(&Webhook::from(&spec)), spec);
    }
}
