//! Relay signaling: what two media-nodes say to each other when a room spans them (see
//! ARCHITECTURE.md, "Rooms across nodes"). The edge node dials the room's origin node
//! over the pod network and opens one relay per room; media then flows between the two
//! nodes' str0m peers as SRTP, and this module is the signaling that sets it up.
//!
//! ```text
//!  edge ── hello {room, node, key, protocolVersion} ──► origin   verify_room_key, else refused
//!  edge ◄── offer / answer / trickle ──────────────────► origin   both ways, strictly in order
//! ```
//!
//! - **The room key** is `base64url(HMAC-SHA256(cluster secret, "switchyard-relay-v1\n" +
//!   namespace + "\n" + room))` ([`room_key`]): the operator's per-cluster secret never
//!   crosses the wire, and a key opens only the room it was derived for. The origin
//!   recomputes it and compares in constant time ([`verify_room_key`]; the whole check of a
//!   `hello` is [`RelayHello::check`]).
//! - **SDP**: each engine sees the relay as one of its participants, so each offers its
//!   own subscription lines and answers the other's. The messages are the signaling
//!   protocol's [`SessionDescription`] and [`Trickle`]; [`RelayMessage::from_server`] and
//!   [`RelayMessage::into_client`] turn what one engine says to its relay participant into
//!   what the other engine hears from its own. Glare: the edge yields, the origin does not.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::signal::{ClientMessage, ServerMessage, SessionDescription, Trickle};

/// The relay protocol's version; an origin refuses a `hello` with another.
pub const RELAY_PROTOCOL_VERSION: u32 = 1;

/// The domain separator in every room key, so a relay key is never valid as any other
/// HMAC the cluster secret signs.
const KEY_CONTEXT: &str = "switchyard-relay-v1";

/// The relay key of `room` in `namespace` under the cluster's relay secret.
pub fn room_key(cluster_secret: &[u8], namespace: &str, room: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(mac(cluster_secret, namespace, room).finalize().into_bytes())
}

/// True when `presented` is `room`'s key (compared in constant time).
pub fn verify_room_key(cluster_secret: &[u8], namespace: &str, room: &str, presented: &str) -> bool {
    let Ok(tag) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(presented) else { return false };
    mac(cluster_secret, namespace, room).verify_slice(&tag).is_ok()
}

fn mac(cluster_secret: &[u8], namespace: &str, room: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(cluster_secret).expect("HMAC takes any key length");
    // Newlines cannot occur in a namespace or a room name, so the message is unambiguous.
    mac.update(format!("{KEY_CONTEXT}\n{namespace}\n{room}").as_bytes());
    mac
}

/// The edge's first message on a relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayHello {
    /// The room the relay carries.
    pub room: String,
    /// The edge node's name (its pod name).
    pub node: String,
    /// [`room_key`] of the room.
    pub key: String,
    /// [`RELAY_PROTOCOL_VERSION`] of the edge.
    pub protocol_version: u32,
}

/// Why an origin refuses a `hello`: each with a message the edge logs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelloRefusal {
    /// The edge speaks another relay protocol version.
    #[error("relay protocol {got} is not spoken here (this node speaks {RELAY_PROTOCOL_VERSION})")]
    Version {
        /// The version the edge sent.
        got: u32,
    },
    /// The key is not the room's key under this cluster's secret.
    #[error("the relay key does not open room {room:?}")]
    Key {
        /// The room the edge asked for.
        room: String,
    },
}

impl RelayHello {
    /// The origin's check of an edge's `hello`, for a room in `namespace`: the version,
    /// then the key (constant time).
    pub fn check(&self, cluster_secret: &[u8], namespace: &str) -> Result<(), HelloRefusal> {
        if self.protocol_version != RELAY_PROTOCOL_VERSION {
            return Err(HelloRefusal::Version { got: self.protocol_version });
        }
        if !verify_room_key(cluster_secret, namespace, &self.room, &self.key) {
            return Err(HelloRefusal::Key { room: self.room.clone() });
        }
        Ok(())
    }
}

/// What the operator tells a node that is to be an edge of a room
/// (`POST /internal/rooms/{room}/relay` on the node's admin port): dial the room's origin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelayAttach {
    /// The origin node's name (its pod name).
    pub origin_node: String,
    /// The origin's admin address (pod IP and admin port), where its relay endpoint
    /// `/internal/relay` listens.
    pub origin_admin: std::net::SocketAddr,
    /// The origin's media address (pod IP and UDP port): the relay's remote candidate.
    pub origin_media: std::net::SocketAddr,
}

/// The WebSocket close code of a relay refused for its key (the origin's `unauthorized`).
pub const CLOSE_UNAUTHORIZED: u16 = 4401;
/// The WebSocket close code of a relay refused for its protocol version or a malformed
/// `hello`.
pub const CLOSE_BAD_HELLO: u16 = 4400;

impl HelloRefusal {
    /// The close code the origin ends the relay's socket with.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::Version { .. } => CLOSE_BAD_HELLO,
            Self::Key { .. } => CLOSE_UNAUTHORIZED,
        }
    }
}

/// One relay signaling message, either way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RelayMessage {
    /// Edge → origin, first and once.
    Hello(RelayHello),
    /// An offer of the sender's subscription lines.
    Offer(SessionDescription),
    /// The answer to the other side's offer (same id).
    Answer(SessionDescription),
    /// An ICE candidate.
    Trickle(Trickle),
}

impl RelayMessage {
    /// What an engine says to its relay participant that the other node must hear;
    /// `None` for what stays on this node (its `joined`, its room's notices).
    pub fn from_server(msg: &ServerMessage) -> Option<Self> {
        match msg {
            ServerMessage::Offer(sd) => Some(Self::Offer(sd.clone())),
            ServerMessage::Answer(sd) => Some(Self::Answer(sd.clone())),
            ServerMessage::Trickle(t) => Some(Self::Trickle(t.clone())),
            _ => None,
        }
    }

    /// The message the receiving engine gets from its relay participant; `None` for
    /// `hello` (the node's, not the engine's).
    pub fn into_client(self) -> Option<ClientMessage> {
        match self {
            Self::Hello(_) => None,
            Self::Offer(sd) => Some(ClientMessage::Offer(sd)),
            Self::Answer(sd) => Some(ClientMessage::Answer(sd)),
            Self::Trickle(t) => Some(ClientMessage::Trickle(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_key_opens_only_its_room_under_its_secret() {
        let key = room_key(b"cluster secret", "media", "standup");
        assert!(verify_room_key(b"cluster secret", "media", "standup", &key));
        assert!(!verify_room_key(b"cluster secret", "media", "standup2", &key), "another room");
        assert!(!verify_room_key(b"cluster secret", "other", "standup", &key), "another namespace");
        assert!(!verify_room_key(b"another secret", "media", "standup", &key), "another cluster");
        assert!(!verify_room_key(b"cluster secret", "media", "standup", &key[1..]), "truncated");
        assert!(!verify_room_key(b"cluster secret", "media", "standup", "not base64!"), "garbage");
        assert!(!verify_room_key(b"cluster secret", "media", "standup", ""), "empty");
        // Fixed vector: `printf 'switchyard-relay-v1\nmedia\nstandup' |
        // openssl dgst -sha256 -hmac 'cluster secret' -binary | basenc --base64url`, unpadded.
        assert_eq!(key, VECTOR);
    }

    const VECTOR: &str = "MsOKsCaC4je8zCP7gDZjoPw0BGSSYdrr2B3itO88-2I";

    #[test]
    fn an_origin_refuses_a_hello_with_another_version_or_another_rooms_key() {
        let hello = |room: &str, key_room: &str, protocol_version| RelayHello {
            room: room.into(),
            node: "edge-media-1".into(),
            key: room_key(b"s", "media", key_room),
            protocol_version,
        };
        assert_eq!(hello("standup", "standup", RELAY_PROTOCOL_VERSION).check(b"s", "media"), Ok(()));
        let other = hello("standup", "retro", RELAY_PROTOCOL_VERSION).check(b"s", "media").unwrap_err();
        assert_eq!(other, HelloRefusal::Key { room: "standup".into() });
        assert_eq!(other.to_string(), "the relay key does not open room \"standup\"");
        let version = hello("standup", "standup", 2).check(b"s", "media").unwrap_err();
        assert_eq!(version.to_string(), "relay protocol 2 is not spoken here (this node speaks 1)");
        assert!(hello("standup", "standup", 1).check(b"s", "other").is_err(), "the namespace is in the key");
    }

    #[test]
    fn an_attach_names_the_origin_and_refuses_unknown_fields() {
        let attach: RelayAttach = serde_json::from_str(
            r#"{"originNode":"media-0","originAdmin":"10.0.0.5:9090","originMedia":"10.0.0.5:7882"}"#,
        )
        .unwrap();
        assert_eq!(attach.origin_media, "10.0.0.5:7882".parse().unwrap());
        assert!(
            serde_json::from_str::<RelayAttach>(
                r#"{"originNode":"m","originAdmin":"10.0.0.5:9090","originMedia":"10.0.0.5:7882","x":1}"#
            )
            .is_err()
        );
        assert_eq!(HelloRefusal::Key { room: "r".into() }.close_code(), 4401);
        assert_eq!(HelloRefusal::Version { got: 2 }.close_code(), 4400);
    }

    #[test]
    fn relay_messages_round_trip_as_json() {
        let hello = RelayMessage::Hello(RelayHello {
            room: "standup".into(),
            node: "edge-media-1".into(),
            key: "k".into(),
            protocol_version: RELAY_PROTOCOL_VERSION,
        });
        let json = serde_json::to_value(&hello).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "hello", "room": "standup", "node": "edge-media-1", "key": "k", "protocolVersion": 1})
        );
        assert_eq!(serde_json::from_value::<RelayMessage>(json).unwrap(), hello);
        assert!(serde_json::from_str::<RelayMessage>(r#"{"type":"join"}"#).is_err(), "unknown types are refused");
    }

    #[test]
    fn only_sdp_and_candidates_cross_from_one_engine_to_the_other() {
        let sd = SessionDescription { sdp: "v=0".into(), id: 3 };
        let offer = RelayMessage::from_server(&ServerMessage::Offer(sd.clone())).unwrap();
        assert_eq!(offer.into_client(), Some(ClientMessage::Offer(sd.clone())));
        let answer = RelayMessage::from_server(&ServerMessage::Answer(sd.clone())).unwrap();
        assert_eq!(answer.into_client(), Some(ClientMessage::Answer(sd)));
        let pong = ServerMessage::Pong(crate::signal::Ping { timestamp_ms: 1, rtt_ms: None });
        assert_eq!(RelayMessage::from_server(&pong), None, "a node's own notices stay on the node");
    }
}
