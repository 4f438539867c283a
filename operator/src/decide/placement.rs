//! Room placement: which media-node hosts a new room.
//!
//! The rule is "power of two choices": among the nodes that can take the room, pick two
//! at random and keep the less loaded one. Always picking the globally least-loaded node
//! herds: loads are only refreshed every poll interval, so a burst of rooms created
//! between two polls would all see the same "emptiest" node and land on it. Two random
//! choices spread such a burst almost evenly while still steering away from hot nodes
//! (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing").
//!
//! A node's `rooms` must count every room that will be on it, not only the ones it
//! reports: [`rooms_per_node`] joins the three views the controller has, each of which
//! lags in its own way, so that capacity holds under any burst.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rand::Rng;

/// What one media-node may carry. `None` means "no limit" in that dimension.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    /// Rooms per node.
    pub rooms: Option<u64>,
    /// Participants per node.
    pub participants: Option<u64>,
    /// Media bandwidth per node, bits/s.
    pub bandwidth_bps: Option<u64>,
}

impl Capacity {
    /// From the CRD's convention, where 0 means "no limit".
    pub fn from_limits(rooms: i64, participants: i64, bandwidth_bps: Option<u64>) -> Self {
        let limit = |v: i64| (v > 0).then_some(v as u64);
        Self { rooms: limit(rooms), participants: limit(participants), bandwidth_bps: bandwidth_bps.filter(|b| *b > 0) }
    }
}

/// One media-node as placement sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeLoad {
    /// The pod name.
    pub name: String,
    /// The pod is Ready and its status endpoint answered.
    pub ready: bool,
    /// The node was told to drain; it takes no new rooms.
    pub draining: bool,
    /// Rooms open (or placed) on the node.
    pub rooms: u64,
    /// Participants connected.
    pub participants: u64,
    /// Media bandwidth, bits/s.
    pub bandwidth_bps: u64,
    /// The node reports itself at its own capacity (it refuses joins with `node_full`).
    pub full: bool,
}

impl NodeLoad {
    /// True when one more room would exceed a limit, or a limit is already reached.
    pub fn is_full(&self, cap: &Capacity) -> bool {
        self.full
            || cap.rooms.is_some_and(|c| self.rooms >= c)
            || cap.participants.is_some_and(|c| self.participants >= c)
            || cap.bandwidth_bps.is_some_and(|c| self.bandwidth_bps >= c)
    }

    /// The node's load as the fullest of its limited dimensions (0.0 = idle, 1.0 = full).
    /// With no limits at all, rooms count as the load so rooms still spread.
    fn score(&self, cap: &Capacity) -> f64 {
        let ratio = |used: u64, c: Option<u64>| c.map(|c| used as f64 / c as f64);
        [
            ratio(self.rooms, cap.rooms),
            ratio(self.participants, cap.participants),
            ratio(self.bandwidth_bps, cap.bandwidth_bps),
        ]
        .into_iter()
        .flatten()
        .reduce(f64::max)
        .unwrap_or(self.rooms as f64)
    }

    /// Less loaded first; ties by fewer rooms. Equal nodes compare equal: the caller
    /// then keeps its first random draw, because a fixed tie-break (say by name) would
    /// starve the last-named node whenever loads are equal and stale.
    fn cmp_load(&self, other: &Self, cap: &Capacity) -> Ordering {
        self.score(cap).total_cmp(&other.score(cap)).then(self.rooms.cmp(&other.rooms))
    }
}

/// Why a room could not be placed. The text goes into the Room's `Scheduled` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unschedulable {
    /// The cluster has no media-node pods at all.
    NoNodes,
    /// Every node is unready, draining or full.
    NoCapacity {
        /// Nodes that are not Ready (or did not answer the status poll).
        unready: usize,
        /// Nodes that are draining.
        draining: usize,
        /// Nodes at a capacity limit.
        full: usize,
    },
}

impl Unschedulable {
    /// A short CamelCase reason for conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Unschedulable::NoNodes => "NoNodes",
            Unschedulable::NoCapacity { .. } => "NoCapacity",
        }
    }
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unschedulable::NoNodes => write!(f, "unschedulable: the cluster has no media-node pods"),
            Unschedulable::NoCapacity { unready, draining, full } => write!(
                f,
                "unschedulable: no media-node can take the room ({unready} unready, {draining} draining, {full} full)"
            ),
        }
    }
}

/// One Room as the controller's Room cache shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownRoom<'a> {
    /// The Room's name (unique within its cluster's namespace).
    pub name: &'a str,
    /// `status.node`.
    pub node: Option<&'a str>,
    /// Phase `Closed`: no longer open on its node (unless the node still reports it).
    pub closed: bool,
}

/// What one node reported at the last poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reported<'a> {
    /// The pod name.
    pub node: &'a str,
    /// Rooms open on it.
    pub rooms: u64,
    /// Their names.
    pub names: &'a [String],
}

/// The rooms each node carries, for placement: the union, by room name, of
///
/// - `known`: Rooms whose `status.node` names the node in the Room cache (which lags the
///   status writes by a watch round trip, and much more under a burst);
/// - `placed`: every placement this operator made that the cache does not show yet
///   (room → node; the controller drops an entry once the cache shows it);
/// - `reported`: the rooms the node itself has open (only rooms someone joined: a node
///   opens a room on its first join).
///
/// `except` (the room being placed now) is left out: it is moving, or new. A room seen on
/// two nodes (being moved) counts on both, which errs on the side of capacity.
pub fn rooms_per_node<'a>(
    known: impl IntoIterator<Item = KnownRoom<'a>>,
    placed: &'a BTreeMap<String, String>,
    reported: impl IntoIterator<Item = Reported<'a>>,
    except: &str,
) -> BTreeMap<&'a str, u64> {
    let mut rooms = BTreeSet::<(&str, &str)>::new();
    let mut floor = BTreeMap::<&str, u64>::new();
    for r in known {
        if let (Some(node), false) = (r.node, r.closed) {
            rooms.insert((node, r.name));
        }
    }
    for (room, node) in placed {
        rooms.insert((node.as_str(), room.as_str()));
    }
    for r in reported {
        rooms.extend(r.names.iter().map(|n| (r.node, n.as_str())));
        // A node that reports a count without names still counts that many.
        floor.insert(r.node, r.rooms.saturating_sub(u64::from(r.names.iter().any(|n| n == except))));
    }
    let mut counts = BTreeMap::<&str, u64>::new();
    for (node, _) in rooms.iter().filter(|(_, room)| *room != except) {
        *counts.entry(node).or_default() += 1;
    }
    for (node, n) in floor {
        let c = counts.entry(node).or_default();
        *c = (*c).max(n);
    }
    counts
}

/// Choose the node for one new room, or say why none fits. Deterministic for a given
/// RNG state.
pub fn place<'a, R: Rng + ?Sized>(
    nodes: &'a [NodeLoad],
    cap: &Capacity,
    rng: &mut R,
) -> Result<&'a NodeLoad, Unschedulable> {
    if nodes.is_empty() {
        return Err(Unschedulable::NoNodes);
    }
    let candidates: Vec<&NodeLoad> = nodes.iter().filter(|n| n.ready && !n.draining && !n.is_full(cap)).collect();
    match candidates.len() {
        0 => Err(Unschedulable::NoCapacity {
            unready: nodes.iter().filter(|n| !n.ready).count(),
            draining: nodes.iter().filter(|n| n.ready && n.draining).count(),
            full: nodes.iter().filter(|n| n.ready && !n.draining && n.is_full(cap)).count(),
        }),
        1 => Ok(candidates[0]),
        len => {
            let a = rng.random_range(0..len);
            // A second, distinct index: draw from the remaining len-1 slots.
            let mut b = rng.random_range(0..len - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (candidates[a], candidates[b]);
            Ok(if b.cmp_load(a, cap) == Ordering::Less { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn node(name: &str, rooms: u64) -> NodeLoad {
        NodeLoad {
            name: name.into(),
            ready: true,
            draining: false,
            rooms,
            participants: 0,
            bandwidth_bps: 0,
            full: false,
        }
    }

    fn rooms_cap(rooms: u64) -> Capacity {
        Capacity { rooms: Some(rooms), ..Capacity::default() }
    }

    #[test]
    fn skips_unready_draining_and_full_nodes() {
        // Table: (nodes, capacity, expected node name or error).
        let unready = NodeLoad { ready: false, ..node("unready", 0) };
        let draining = NodeLoad { draining: true, ..node("draining", 0) };
        let full_rooms = node("full-rooms", 10);
        let full_participants = NodeLoad { participants: 50, ..node("full-participants", 0) };
        let full_bw = NodeLoad { bandwidth_bps: 1_000, ..node("full-bw", 0) };
        // Below the cluster's limits, but the node says it is at its own.
        let says_full = NodeLoad { full: true, ..node("says-full", 0) };
        let cap = Capacity { rooms: Some(10), participants: Some(50), bandwidth_bps: Some(1_000) };
        let cases: Vec<(Vec<NodeLoad>, Result<&str, Unschedulable>)> = vec![
            (vec![unready.clone(), node("ok", 9)], Ok("ok")),
            (vec![draining.clone(), node("ok", 9)], Ok("ok")),
            (vec![full_rooms.clone(), node("ok", 9)], Ok("ok")),
            (vec![full_participants.clone(), node("ok", 9)], Ok("ok")),
            (vec![full_bw.clone(), node("ok", 9)], Ok("ok")),
            (vec![says_full.clone(), node("ok", 9)], Ok("ok")),
            (
                vec![unready, draining, full_rooms, full_participants, full_bw, says_full],
                Err(Unschedulable::NoCapacity { unready: 1, draining: 1, full: 4 }),
            ),
            (vec![], Err(Unschedulable::NoNodes)),
        ];
        for (i, (nodes, want)) in cases.into_iter().enumerate() {
            for seed in 0..20 {
                let got = place(&nodes, &cap, &mut StdRng::seed_from_u64(seed)).map(|n| n.name.as_str());
                assert_eq!(got, want.clone(), "case {i} seed {seed}");
            }
        }
    }

    #[test]
    fn unschedulable_reasons_are_clear() {
        let err = place(&[], &Capacity::default(), &mut StdRng::seed_from_u64(1)).unwrap_err();
        assert_eq!(err.reason(), "NoNodes");
        assert_eq!(err.to_string(), "unschedulable: the cluster has no media-node pods");
        let err = Unschedulable::NoCapacity { unready: 2, draining: 1, full: 3 };
        assert_eq!(err.reason(), "NoCapacity");
        assert_eq!(err.to_string(), "unschedulable: no media-node can take the room (2 unready, 1 draining, 3 full)");
    }

    #[test]
    fn never_exceeds_capacity_and_fills_exactly() {
        let cap = rooms_cap(100);
        let mut nodes: Vec<NodeLoad> = (0..10).map(|i| node(&format!("n{i}"), i * 7)).collect();
        let free: u64 = nodes.iter().map(|n| 100 - n.rooms).sum();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..free {
            let name = place(&nodes, &cap, &mut rng).unwrap().name.clone();
            nodes.iter_mut().find(|n| n.name == name).unwrap().rooms += 1;
            assert!(nodes.iter().all(|n| n.rooms <= 100));
        }
        assert!(nodes.iter().all(|n| n.rooms == 100));
        assert_eq!(
            place(&nodes, &cap, &mut rng).unwrap_err(),
            Unschedulable::NoCapacity { unready: 0, draining: 0, full: 10 }
        );
    }

    #[test]
    fn spreads_a_thousand_rooms_over_ten_nodes() {
        let cap = Capacity { rooms: Some(1_000), participants: Some(10_000), bandwidth_bps: None };
        for seed in 0..5 {
            let mut nodes: Vec<NodeLoad> = (0..10).map(|i| node(&format!("n{i}"), 0)).collect();
            let mut rng = StdRng::seed_from_u64(seed);
            for _ in 0..1_000 {
                let name = place(&nodes, &cap, &mut rng).unwrap().name.clone();
                nodes.iter_mut().find(|n| n.name == name).unwrap().rooms += 1;
            }
            let max = nodes.iter().map(|n| n.rooms).max().unwrap();
            let min = nodes.iter().map(|n| n.rooms).min().unwrap();
            assert_eq!(nodes.iter().map(|n| n.rooms).sum::<u64>(), 1_000);
            // Two choices with live counts keeps every node within a few rooms of 100.
            assert!(max as f64 / min as f64 <= 1.1, "seed {seed}: max {max} min {min}");
        }
    }

    #[test]
    fn a_burst_on_a_stale_snapshot_does_not_herd() {
        // Loads are not updated between placements (all rooms created within one poll
        // interval). Least-loaded would put all 100 on n0; two choices must not.
        let mut nodes: Vec<NodeLoad> = (0..10).map(|i| node(&format!("n{i}"), 10)).collect();
        nodes[0].rooms = 0;
        let mut rng = StdRng::seed_from_u64(3);
        let mut counts = std::collections::BTreeMap::<String, u32>::new();
        for _ in 0..100 {
            *counts.entry(place(&nodes, &rooms_cap(1_000), &mut rng).unwrap().name.clone()).or_default() += 1;
        }
        assert_eq!(counts.len(), 10, "every node gets some of the burst: {counts:?}");
        let most = counts.values().max().unwrap();
        assert!(*most < 40, "the emptiest node takes ~19% of the burst, not all of it: {counts:?}");
    }

    #[test]
    fn prefers_the_less_loaded_of_two() {
        // With exactly two candidates both are always drawn, so the lighter one wins.
        let cap = Capacity { rooms: Some(100), participants: Some(100), bandwidth_bps: None };
        let nodes =
            vec![NodeLoad { participants: 90, ..node("hot", 1) }, NodeLoad { participants: 10, ..node("cool", 20) }];
        for seed in 0..50 {
            assert_eq!(place(&nodes, &cap, &mut StdRng::seed_from_u64(seed)).unwrap().name, "cool");
        }
    }

    #[test]
    fn deterministic_for_a_seed() {
        let nodes: Vec<NodeLoad> = (0..10).map(|i| node(&format!("n{i}"), i)).collect();
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..50).map(|_| place(&nodes, &rooms_cap(100), &mut rng).unwrap().name.clone()).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn rooms_per_node_counts_each_room_once_from_every_view() {
        let placed: BTreeMap<String, String> =
            [("a".into(), "n0".into()), ("b".into(), "n0".into()), ("new".into(), "n1".into())].into();
        let known = [
            KnownRoom { name: "a", node: Some("n0"), closed: false }, // in all three views
            KnownRoom { name: "c", node: Some("n1"), closed: false }, // cache only
            KnownRoom { name: "gone", node: Some("n1"), closed: true }, // closed, not open
            KnownRoom { name: "shut", node: Some("n1"), closed: true }, // closed, still open
            KnownRoom { name: "p", node: None, closed: false },       // pending
        ];
        let (n0, n1) = (names(&["a", "d"]), names(&["shut"]));
        let reported = [Reported { node: "n0", rooms: 2, names: &n0 }, Reported { node: "n1", rooms: 1, names: &n1 }];
        let counts = rooms_per_node(known, &placed, reported, "new");
        // n0: a, b, d. n1: c, shut ("new" is the one being placed, "gone" is closed).
        assert_eq!(counts, BTreeMap::from([("n0", 3), ("n1", 2)]));
        let nameless = [Reported { node: "n2", rooms: 7, names: &[] }];
        assert_eq!(rooms_per_node([], &BTreeMap::new(), nameless, "x"), BTreeMap::from([("n2", 7)]));
    }

    /// Issue 18, finding 2: a burst of Rooms placed while neither the Room cache nor the
    /// nodes show any of them (nobody joined; the cache lags) must still stop at capacity.
    /// Counting only "placed since the last poll" forgot every placement at each poll.
    #[test]
    fn a_burst_that_no_view_shows_yet_still_stops_at_capacity() {
        let cap = rooms_cap(450);
        let mut placed = BTreeMap::<String, String>::new();
        let mut rng = StdRng::seed_from_u64(18);
        let mut pending = 0;
        for i in 0..1_000 {
            let room = format!("room-{i}");
            // The nodes report nothing (nobody joined) and the cache shows no placement,
            // however many polls happen in between.
            let counts = rooms_per_node([], &placed, [], &room);
            let nodes: Vec<NodeLoad> = ["n0", "n1"]
                .iter()
                .map(|n| NodeLoad { rooms: counts.get(n).copied().unwrap_or(0), ..node(n, 0) })
                .collect();
            match place(&nodes, &cap, &mut rng) {
                Ok(n) => {
                    placed.insert(room, n.name.clone());
                }
                Err(e) => {
                    assert_eq!(e, Unschedulable::NoCapacity { unready: 0, draining: 0, full: 2 });
                    pending += 1;
                }
            }
        }
        let counts = rooms_per_node([], &placed, [], "");
        assert_eq!(counts, BTreeMap::from([("n0", 450), ("n1", 450)]));
        assert_eq!(pending, 100);
    }

    #[test]
    fn zero_means_no_limit() {
        let cap = Capacity::from_limits(0, 0, Some(0));
        assert_eq!(cap, Capacity::default());
        assert!(!node("n", 1_000_000).is_full(&cap));
        let cap = Capacity::from_limits(5, 10, Some(100));
        assert_eq!(cap, Capacity { rooms: Some(5), participants: Some(10), bandwidth_bps: Some(100) });
    }
}
