//! The `Room` custom resource: one conversation, placed by the operator on one
//! `media-node` of a `MediaCluster`.
//!
//! Apps create Rooms themselves (kubectl, or the HTTP room API), or media-node creates
//! them on first join when a token allows it (those carry [`AUTO_CREATED_LABEL`]).

// `KubeSchema` re-emits each struct inside a private scope to build its schema, which
// trips `unreachable_pub` on every field type; the types here are all reachable.
#![allow(unreachable_pub)]
// Printer columns legitimately repeat `type_ = "integer"` and the like.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label on Rooms that media-node created on first join; the operator deletes them after
/// their empty timeout.
pub const AUTO_CREATED_LABEL: &str = "switchyard.dev/auto-created";

/// A conversation: participants publish and subscribe to each other's tracks on the
/// media-node the operator placed the room on.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "Room",
    doc = "A Switchyard room: one conversation, placed on one media-node of a MediaCluster.",
    namespaced,
    cel,
    status = "RoomStatus",
    shortname = "room",
    category = "switchyard",
    printcolumn(name = "Cluster", type_ = "string", description = "The MediaCluster", json_path = ".spec.clusterRef"),
    printcolumn(
        name = "Node",
        type_ = "string",
        description = "The media-node hosting the room",
        json_path = ".status.node"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        description = "Pending, Scheduled, Active, Closed or Failed",
        json_path = ".status.phase"
    ),
    printcolumn(
        name = "Participants",
        type_ = "integer",
        description = "Participants connected",
        json_path = ".status.participants"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // The room name rule of `names::check_room_name`: the apiserver already makes every
    // name a DNS-1123 subdomain; a room name (in tokens and signaling) is at most 63.
    validation = Rule::new("self.metadata.name.size() <= 63")
        .message("a Room name is at most 63 characters: it is the room name in tokens and signaling")
)]
#[serde(rename_all = "camelCase")]
pub struct RoomSpec {
    /// The name of the MediaCluster (same namespace) that hosts this room: a DNS-1123
    /// label (lower-case letters, digits and '-', at most 63). Immutable.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("clusterRef is immutable: delete and recreate the Room to move it"))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("clusterRef must name a MediaCluster: lower-case letters, digits and '-', starting and ending with a letter or digit"))]
    pub cluster_ref: String,
    /// Participants allowed at once; absent means the cluster's default, 0 means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub max_participants: Option<i32>,
    /// Close the room this many seconds after its last participant left; absent means the
    /// cluster's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub empty_timeout_seconds: Option<i32>,
    /// Only these codecs are negotiated in this room (for example only VP9 for a medical
    /// imaging app); empty means all supported codecs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(d, d == c))").message("allowedCodecs must not repeat a codec"))]
    pub allowed_codecs: Vec<Codec>,
    /// Free-form application data handed to every participant: at most 64 KiB, counted
    /// in bytes of UTF-8 (the schema's `maxLength` counts characters, so CEL checks bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    #[x_kube(validation = Rule::new("size(bytes(self)) <= 65536")
        .message("metadata must be at most 64 KiB: 65536 bytes of UTF-8"))]
    pub metadata: Option<String>,
}

/// A media codec a room may negotiate.
#[allow(clippy::upper_case_acronyms)]
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Codec {
    /// Opus audio.
    Opus,
    /// VP8 video.
    VP8,
    /// VP9 video.
    VP9,
    /// H.264 video.
    H264,
    /// AV1 video.
    AV1,
}

impl Codec {
    /// Every codec, in preference order.
    pub const ALL: [Codec; 5] = [Codec::Opus, Codec::VP8, Codec::VP9, Codec::H264, Codec::AV1];

    /// True for audio codecs.
    pub fn is_audio(self) -> bool {
        matches!(self, Codec::Opus)
    }
}

/// Where a room is in its life.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RoomPhase {
    /// Waiting for placement.
    #[default]
    Pending,
    /// Placed on a node; nobody has joined yet.
    Scheduled,
    /// At least one participant has joined.
    Active,
    /// Closed (empty timeout, deleted, or closed by an admin).
    Closed,
    /// Could not be placed or its node failed and it could not be moved.
    Failed,
}

/// What the operator and the hosting node last observed of a Room.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RoomStatus {
    /// Where the room is in its life.
    #[serde(default)]
    pub phase: RoomPhase,
    /// The media-node pod hosting the room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The WebSocket URL of the hosting node's signaling endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signaling_url: Option<String>,
    /// Participants connected now.
    #[serde(default)]
    pub participants: i32,
    /// When the first participant joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the room last became empty (drives the empty timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_since: Option<Time>,
    /// `Scheduled` and `Ready`, each with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(spec: serde_json::Value) -> Room {
        Room::new("standup", serde_json::from_value(spec).unwrap())
    }

    fn messages(result: Result<(), kube::core::cel::ValidationErrors>) -> Vec<String> {
        result.err().map(|e| e.iter().map(|e| e.message.clone()).collect()).unwrap_or_default()
    }

    #[test]
    fn a_valid_room_passes() {
        let r = room(serde_json::json!({
            "clusterRef": "edge", "maxParticipants": 50, "emptyTimeoutSeconds": 60,
            "allowedCodecs": ["VP9", "Opus"], "metadata": "{\"topic\":\"x\"}"
        }));
        assert_eq!(messages(r.validate_cel()), Vec::<String>::new());
        assert_eq!(r.spec.allowed_codecs, vec![Codec::VP9, Codec::Opus]);
    }

    #[test]
    fn cluster_ref_is_immutable() {
        let old = room(serde_json::json!({"clusterRef": "edge"}));
        let moved = room(serde_json::json!({"clusterRef": "core"}));
        assert_eq!(
            messages(moved.validate_cel_update(&old)),
            vec!["clusterRef is immutable: delete and recreate the Room to move it"]
        );
        let same = room(serde_json::json!({"clusterRef": "edge", "maxParticipants": 3}));
        assert_eq!(messages(same.validate_cel_update(&old)), Vec::<String>::new());
    }

    #[test]
    fn names_follow_the_room_name_rule() {
        let mut long = room(serde_json::json!({"clusterRef": "edge"}));
        long.metadata.name = Some("a".repeat(64));
        assert_eq!(
            messages(long.validate_cel()),
            vec!["a Room name is at most 63 characters: it is the room name in tokens and signaling"]
        );
        long.metadata.name = Some("a".repeat(63));
        assert_eq!(messages(long.validate_cel()), Vec::<String>::new());
        for bad in ["Edge", "../edge", "edge.core", "-edge", "edge\n"] {
            let r = room(serde_json::json!({ "clusterRef": bad }));
            assert!(messages(r.validate_cel())[0].starts_with("clusterRef must name a MediaCluster"), "{bad:?}");
        }
    }

    #[test]
    fn repeated_codecs_are_rejected() {
        let r = room(serde_json::json!({"clusterRef": "edge", "allowedCodecs": ["VP8", "VP8"]}));
        assert_eq!(messages(r.validate_cel()), vec!["allowedCodecs must not repeat a codec"]);
    }

    /// Issue 18, finding 6: the doc says 64 KiB, so the limit counts bytes, not characters.
    #[test]
    fn metadata_is_limited_in_bytes() {
        let with = |m: String| room(serde_json::json!({"clusterRef": "edge", "metadata": m}));
        assert_eq!(messages(with("a".repeat(65_536)).validate_cel()), Vec::<String>::new());
        // 40,000 characters, 80,000 bytes: under the schema's maxLength, over 64 KiB.
        assert_eq!(
            messages(with("é".repeat(40_000)).validate_cel()),
            vec!["metadata must be at most 64 KiB: 65536 bytes of UTF-8"]
        );
        assert_eq!(messages(with("é".repeat(32_768)).validate_cel()), Vec::<String>::new());
    }

    #[test]
    fn unknown_codecs_do_not_deserialize() {
        let err =
            serde_json::from_value::<RoomSpec>(serde_json::json!({"clusterRef": "e", "allowedCodecs": ["MPEG2"]}))
                .unwrap_err();
        assert!(err.to_string().contains("unknown variant `MPEG2`"), "{err}");
    }
}
