//! Room lifecycle: what to do with an existing Room on each reconcile.
//!
//! ```text
//!  closed, auto-created ────────────────► Delete
//!  closed ──────────────────────────────► Keep (a closed room is never placed again)
//!  no node ─────────────────────────────► Place
//!  node pod gone ───────────────────────► Reschedule (at once: its rooms died with it)
//!  node unready for ≥ threshold ────────► Reschedule
//!  node unready for < threshold ────────► Wait until the threshold
//!  auto-created, empty for ≥ timeout ───► Delete
//!  auto-created, empty for < timeout ───► Wait until the timeout
//!  otherwise ───────────────────────────► Keep
//! ```
//!
//! An unready node gets a grace period because readiness flaps (a slow GC pause, a
//! probe timeout) are far more common than dead nodes, and moving a room disconnects
//! everyone in it. Only auto-created rooms expire: a Room someone created on purpose is
//! theirs to delete.

use std::time::{Duration, SystemTime};

/// The facts about one Room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomFacts {
    /// `status.node`, if placed.
    pub node: Option<String>,
    /// The room was closed (phase `Closed`): it only waits to be deleted.
    pub closed: bool,
    /// Carries the `switchyard.dev/auto-created` label.
    pub auto_created: bool,
    /// Participants connected now.
    pub participants: u32,
    /// When the room became empty (`status.emptySince`), else when it was created.
    pub empty_since: Option<SystemTime>,
    /// How long an empty auto-created room lives.
    pub empty_timeout: Duration,
}

/// The facts about the node a Room is placed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeHealth {
    /// The pod does not exist (deleted, or scaled away).
    Gone,
    /// The pod exists but is not Ready (or its status poll failed) since this time.
    Unready {
        /// Since when.
        since: SystemTime,
    },
    /// Ready.
    Ready,
}

/// What to do with the Room now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomAction {
    /// Choose a node.
    Place,
    /// Move the room: its node is gone or has been unready too long.
    Reschedule {
        /// Why, for the event and the condition.
        reason: &'static str,
    },
    /// Delete the (auto-created, expired) Room.
    Delete,
    /// Nothing now; look again after this long.
    WaitFor(Duration),
    /// Nothing to do.
    Keep,
}

/// Decide. `node` is the health of `facts.node` (ignored when unplaced).
pub fn decide(facts: &RoomFacts, node: NodeHealth, unready_threshold: Duration, now: SystemTime) -> RoomAction {
    if facts.closed {
        return if facts.auto_created { RoomAction::Delete } else { RoomAction::Keep };
    }
    if facts.node.is_none() {
        return RoomAction::Place;
    }
    match node {
        NodeHealth::Gone => return RoomAction::Reschedule { reason: "NodeGone" },
        NodeHealth::Unready { since } => {
            let elapsed = now.duration_since(since).unwrap_or_default();
            if elapsed >= unready_threshold {
                return RoomAction::Reschedule { reason: "NodeUnready" };
            }
            return RoomAction::WaitFor(unready_threshold - elapsed);
        }
        NodeHealth::Ready => {}
    }
    if facts.auto_created
        && facts.participants == 0
        && let Some(since) = facts.empty_since
    {
        let elapsed = now.duration_since(since).unwrap_or_default();
        if elapsed >= facts.empty_timeout {
            return RoomAction::Delete;
        }
        return RoomAction::WaitFor(facts.empty_timeout - elapsed);
    }
    RoomAction::Keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn placed(auto_created: bool, participants: u32, empty_since: Option<SystemTime>) -> RoomFacts {
        RoomFacts {
            node: Some("edge-sfu-0".into()),
            closed: false,
            auto_created,
            participants,
            empty_since,
            empty_timeout: Duration::from_secs(300),
        }
    }

    #[test]
    fn decision_table() {
        let threshold = Duration::from_secs(30);
        let now = t(1_000);
        let unplaced = RoomFacts { node: None, ..placed(false, 0, None) };
        let cases = [
            ("unplaced", unplaced.clone(), NodeHealth::Gone, RoomAction::Place),
            ("closed, unplaced", RoomFacts { closed: true, ..unplaced.clone() }, NodeHealth::Gone, RoomAction::Keep),
            (
                "closed on a dead node",
                RoomFacts { closed: true, ..placed(false, 0, None) },
                NodeHealth::Gone,
                RoomAction::Keep,
            ),
            ("node gone", placed(false, 5, None), NodeHealth::Gone, RoomAction::Reschedule { reason: "NodeGone" }),
            (
                "unready 30s",
                placed(false, 5, None),
                NodeHealth::Unready { since: t(970) },
                RoomAction::Reschedule { reason: "NodeUnready" },
            ),
            (
                "unready 10s",
                placed(false, 5, None),
                NodeHealth::Unready { since: t(990) },
                RoomAction::WaitFor(Duration::from_secs(20)),
            ),
            ("auto, empty 300s", placed(true, 0, Some(t(700))), NodeHealth::Ready, RoomAction::Delete),
            (
                "auto, empty 100s",
                placed(true, 0, Some(t(900))),
                NodeHealth::Ready,
                RoomAction::WaitFor(Duration::from_secs(200)),
            ),
            ("auto, occupied", placed(true, 3, Some(t(0))), NodeHealth::Ready, RoomAction::Keep),
            ("manual, empty for ages", placed(false, 0, Some(t(0))), NodeHealth::Ready, RoomAction::Keep),
            ("auto, no timestamp", placed(true, 0, None), NodeHealth::Ready, RoomAction::Keep),
            (
                "clock behind emptySince",
                placed(true, 0, Some(t(2_000))),
                NodeHealth::Ready,
                RoomAction::WaitFor(Duration::from_secs(300)),
            ),
        ];
        for (name, facts, health, want) in cases {
            assert_eq!(decide(&facts, health, threshold, now), want, "{name}");
        }
    }

    #[test]
    fn a_dead_node_wins_over_expiry() {
        // An expired auto-created room on a dead node is moved, not deleted: the node may
        // have held participants the operator has not seen yet.
        let facts = placed(true, 0, Some(t(0)));
        assert_eq!(
            decide(&facts, NodeHealth::Gone, Duration::from_secs(30), t(1_000)),
            RoomAction::Reschedule { reason: "NodeGone" }
        );
    }
}
