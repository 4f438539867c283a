//! The internal status documents that `turn-node` and `media-node` serve on
//! `GET /internal/status` and the operator polls (placement, autoscaling, drain).
//!
//! These are plain JSON documents on the pod network, not part of the public API;
//! they live here so the data plane and the operator share one definition.

use serde::{Deserialize, Serialize};

/// What a `turn-node` reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnNodeStatus {
    /// Relayed bandwidth over the node's short moving window, in bits per second,
    /// both directions added.
    pub bandwidth_bps: u64,
    /// Allocations that are currently live.
    pub allocations: u64,
    /// True once the node was told to drain: it refuses new allocations.
    pub draining: bool,
    /// Seconds until the drain grace period ends (absent when not draining).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_remaining_seconds: Option<u64>,
}

/// What a `media-node` reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaNodeStatus {
    /// Rooms open on this node.
    pub rooms: u64,
    /// Participants connected to this node.
    pub participants: u64,
    /// Media bandwidth through the node (in plus out), bits per second.
    pub bandwidth_bps: u64,
    /// True once the node was told to drain: it takes no new rooms.
    pub draining: bool,
    /// Names of the rooms open on this node.
    #[serde(default)]
    pub room_names: Vec<String>,
    /// The limits the node enforces itself (0: none).
    #[serde(default)]
    pub capacity: MediaNodeCapacity,
    /// True while the node is at one of its limits: it refuses joins that would exceed
    /// it with `node_full`, so placement should not send it new rooms.
    #[serde(default)]
    pub full: bool,
}

/// A media-node's own limits, as the operator renders them into its config (`capacity`)
/// or flags set them; 0 means no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaNodeCapacity {
    /// Rooms open on the node.
    pub rooms: u64,
    /// Participants connected to the node.
    pub participants: u64,
    /// Media bandwidth (in plus out), bits per second.
    pub bandwidth_bps: u64,
}
