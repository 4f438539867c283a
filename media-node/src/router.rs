//! The one owner of routing state: which shard hosts a room, and which (shard,
//! participant) an ICE ufrag or a 5-tuple leads to. Like quinn-proto's `Endpoint` and its
//! connection-id tables, it does no I/O and learns only from what the engines output.
//!
//! ```text
//!  session ── reserve(room) ─────────────► rooms: room → (shard, open, joins in flight)
//!  engine ── Output::Route / RoomEvent ──► apply(): admitted, refused, ICE restart, dialed, closed
//!  UDP / TCP ── route(proto, src, bytes) ─► (shard, pid) or counted as unrouted
//!                 STUN USERNAME → ufrags: ufrag → (shard, pid), learns the 5-tuple
//!                 anything else → paths:  (proto, src) → (shard, pid), learnt or dialed
//!                 (an edge's relay: the origin's address, told by `Route::Dialed`)
//! ```
//!
//! Invariants (tested below):
//! - An entry exists only while the engine says its participant or room exists, or while
//!   a join for the room is in flight: a refused join, a leave, a room close and an ICE
//!   restart leave nothing behind.
//! - A participant has at most [`MAX_PATHS`] 5-tuples; a NAT rebinding adds one and drops
//!   the oldest, and a 5-tuple leads to one participant only.
//! - `unrouted_datagrams` has one writer: [`Router::route`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::RwLock;

use prometheus_client::metrics::counter::Counter;
use str0m::net::Protocol;

use crate::config::Capacity;
use crate::engine::{Pid, RoomEvent, Route, stun};

/// 5-tuples remembered per participant (host, server-reflexive, relay, one rebinding).
pub(crate) const MAX_PATHS: usize = 4;

/// Where a datagram goes: the shard and the participant it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dest {
    pub(crate) shard: usize,
    pub(crate) pid: Pid,
}

type Path = (Protocol, SocketAddr);

#[derive(Debug, Clone, PartialEq, Eq)]
struct RoomRoute {
    shard: usize,
    /// The engine opened the room (and has not closed it).
    open: bool,
    /// Joins sent to the shard whose outcome has not come back.
    joining: u32,
}

#[derive(Debug)]
struct Member {
    ufrag: String,
    paths: VecDeque<Path>,
}

/// A join the node's capacity refuses: which limit, and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    Rooms(u64),
    Participants(u64),
    Bandwidth(u64),
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Full::Rooms(n) => write!(f, "this node has its maximum of {n} rooms"),
            Full::Participants(n) => write!(f, "this node has its maximum of {n} participants"),
            Full::Bandwidth(n) => write!(f, "this node carries its maximum of {n} bit/s"),
        }
    }
}

/// The routing tables, without locking: every rule lives here.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    shards: usize,
    rooms: HashMap<String, RoomRoute>,
    ufrags: HashMap<String, Dest>,
    paths: HashMap<Path, Dest>,
    members: HashMap<Pid, Member>,
}

impl Tables {
    pub(crate) fn new(shards: usize) -> Self {
        Self { shards: shards.max(1), ..Self::default() }
    }

    /// Admission against the node's capacity, then [`Tables::reserve`]. Participants
    /// count those admitted and the joins in flight, rooms count those open or reserved,
    /// so concurrent joins never overshoot a limit.
    pub(crate) fn admit(&mut self, room: &str, cap: &Capacity, bandwidth_bps: u64) -> Result<usize, Full> {
        let joining: u64 = self.rooms.values().map(|r| u64::from(r.joining)).sum();
        if cap.participants > 0 && self.members.len() as u64 + joining >= cap.participants {
            return Err(Full::Participants(cap.participants));
        }
        if cap.rooms > 0 && !self.rooms.contains_key(room) && self.rooms.len() as u64 >= cap.rooms {
            return Err(Full::Rooms(cap.rooms));
        }
        if cap.bandwidth_bps > 0 && bandwidth_bps >= cap.bandwidth_bps {
            return Err(Full::Bandwidth(cap.bandwidth_bps));
        }
        Ok(self.reserve(room))
    }

    /// True when a join into a new room would be refused (what placement should know).
    pub(crate) fn full(&self, cap: &Capacity, bandwidth_bps: u64) -> bool {
        let joining: u64 = self.rooms.values().map(|r| u64::from(r.joining)).sum();
        (cap.participants > 0 && self.members.len() as u64 + joining >= cap.participants)
            || (cap.rooms > 0 && self.rooms.len() as u64 >= cap.rooms)
            || (cap.bandwidth_bps > 0 && bandwidth_bps >= cap.bandwidth_bps)
    }

    /// A join for `room` is about to be sent: the room's shard, the least loaded one
    /// (by rooms) if the room is new.
    pub(crate) fn reserve(&mut self, room: &str) -> usize {
        if let Some(r) = self.rooms.get_mut(room) {
            r.joining += 1;
            return r.shard;
        }
        let mut load = vec![0usize; self.shards];
        for r in self.rooms.values() {
            load[r.shard] += 1;
        }
        let shard = (0..self.shards).min_by_key(|&i| load[i]).unwrap_or(0);
        self.rooms.insert(room.to_owned(), RoomRoute { shard, open: false, joining: 1 });
        shard
    }

    /// The shard to open `room` on without a join (the Room service's create): its
    /// shard if it is known already, else the least loaded one, if the node's capacity
    /// takes one more room. The entry becomes open with the engine's `room_started`.
    pub(crate) fn place(&mut self, room: &str, cap: &Capacity, bandwidth_bps: u64) -> Result<usize, Full> {
        if let Some(r) = self.rooms.get(room) {
            return Ok(r.shard);
        }
        if cap.rooms > 0 && self.rooms.len() as u64 >= cap.rooms {
            return Err(Full::Rooms(cap.rooms));
        }
        if cap.bandwidth_bps > 0 && bandwidth_bps >= cap.bandwidth_bps {
            return Err(Full::Bandwidth(cap.bandwidth_bps));
        }
        let shard = self.reserve(room);
        self.rooms.get_mut(room).expect("reserved").joining -= 1;
        Ok(shard)
    }

    /// The shard of `room`, if the engine has it open.
    pub(crate) fn open_room(&self, room: &str) -> Option<usize> {
        self.rooms.get(room).filter(|r| r.open).map(|r| r.shard)
    }

    /// Apply a routing change shard `shard` output.
    pub(crate) fn apply(&mut self, shard: usize, change: &Route) {
        match change {
            Route::Admitted { pid, room, ufrag } => {
                self.join_done(room);
                self.forget(*pid);
                self.ufrags.insert(ufrag.clone(), Dest { shard, pid: *pid });
                self.members.insert(*pid, Member { ufrag: ufrag.clone(), paths: VecDeque::new() });
            }
            Route::Refused { room, .. } => self.join_done(room),
            Route::IceRestart { pid, ufrag } => {
                // A new ICE session: the old ufrag and 5-tuples lead nowhere any more.
                self.forget(*pid);
                self.ufrags.insert(ufrag.clone(), Dest { shard, pid: *pid });
                self.members.insert(*pid, Member { ufrag: ufrag.clone(), paths: VecDeque::new() });
            }
            Route::Dialed { pid, remote } => {
                if self.members.contains_key(pid) {
                    self.claim((Protocol::Udp, *remote), Dest { shard, pid: *pid });
                }
            }
            Route::Closed { pid } => self.forget(*pid),
            // The participant keeps its ufrag and 5-tuples: media never stopped.
            Route::Resumed { .. } => {}
        }
    }

    /// Apply a room event: rooms open and close.
    pub(crate) fn event(&mut self, shard: usize, event: &RoomEvent) {
        match event {
            RoomEvent::RoomStarted { room, .. } => {
                let r = self.rooms.entry(room.clone()).or_insert(RoomRoute { shard, open: false, joining: 0 });
                r.open = true;
            }
            RoomEvent::RoomFinished { room, .. } => {
                if let Some(r) = self.rooms.get_mut(room) {
                    r.open = false;
                }
                self.drop_if_unused(room);
            }
            _ => {}
        }
    }

    fn join_done(&mut self, room: &str) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.joining = r.joining.saturating_sub(1);
        }
        self.drop_if_unused(room);
    }

    fn drop_if_unused(&mut self, room: &str) {
        if self.rooms.get(room).is_some_and(|r| !r.open && r.joining == 0) {
            self.rooms.remove(room);
        }
    }

    fn forget(&mut self, pid: Pid) {
        let Some(m) = self.members.remove(&pid) else { return };
        if self.ufrags.get(&m.ufrag).is_some_and(|d| d.pid == pid) {
            self.ufrags.remove(&m.ufrag);
        }
        for p in m.paths {
            if self.paths.get(&p).is_some_and(|d| d.pid == pid) {
                self.paths.remove(&p);
            }
        }
    }

    /// The destination of a STUN request naming `ufrag`, learning its 5-tuple.
    fn learn(&mut self, ufrag: &str, path: Path) -> Option<Dest> {
        let dest = *self.ufrags.get(ufrag)?;
        self.claim(path, dest)
    }

    /// Datagrams on `path` lead to `dest` (a member) from now on.
    fn claim(&mut self, path: Path, dest: Dest) -> Option<Dest> {
        match self.paths.insert(path, dest) {
            Some(old) if old == dest => return Some(dest),
            // The 5-tuple moved to another participant (a port reused by the NAT).
            Some(old) => {
                if let Some(m) = self.members.get_mut(&old.pid) {
                    m.paths.retain(|p| *p != path);
                }
            }
            None => {}
        }
        let member = self.members.get_mut(&dest.pid).expect("a path is claimed for a member");
        member.paths.push_back(path);
        if member.paths.len() > MAX_PATHS
            && let Some(oldest) = member.paths.pop_front()
        {
            self.paths.remove(&oldest);
        }
        Some(dest)
    }

    /// Entries held: (rooms, ufrags, 5-tuples, participants).
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize, usize, usize) {
        (self.rooms.len(), self.ufrags.len(), self.paths.len(), self.members.len())
    }
}

/// The tables behind a lock, shared by the receive loops (readers) and the shard tasks
/// (writers, only with what their engine output).
#[derive(Debug)]
pub(crate) struct Router {
    tables: RwLock<Tables>,
    unrouted: Counter,
}

impl Router {
    pub(crate) fn new(shards: usize, unrouted: Counter) -> Self {
        Self { tables: RwLock::new(Tables::new(shards)), unrouted }
    }

    pub(crate) fn admit(&self, room: &str, cap: &Capacity, bandwidth_bps: u64) -> Result<usize, Full> {
        self.tables.write().expect("router").admit(room, cap, bandwidth_bps)
    }

    pub(crate) fn full(&self, cap: &Capacity, bandwidth_bps: u64) -> bool {
        self.tables.read().expect("router").full(cap, bandwidth_bps)
    }

    pub(crate) fn open_room(&self, room: &str) -> Option<usize> {
        self.tables.read().expect("router").open_room(room)
    }

    pub(crate) fn place(&self, room: &str, cap: &Capacity, bandwidth_bps: u64) -> Result<usize, Full> {
        self.tables.write().expect("router").place(room, cap, bandwidth_bps)
    }

    pub(crate) fn apply(&self, shard: usize, change: &Route) {
        self.tables.write().expect("router").apply(shard, change);
    }

    pub(crate) fn event(&self, shard: usize, event: &RoomEvent) {
        if matches!(event, RoomEvent::RoomStarted { .. } | RoomEvent::RoomFinished { .. }) {
            self.tables.write().expect("router").event(shard, event);
        }
    }

    /// Where a datagram from `source` goes; `None` (and counted) if nobody claims it. A
    /// STUN request names its participant and wins over a stale 5-tuple entry.
    pub(crate) fn route(&self, proto: Protocol, source: SocketAddr, data: &[u8]) -> Option<Dest> {
        let path = (proto, source);
        let dest = match stun::local_ufrag(data) {
            Some(ufrag) => {
                let known = {
                    let t = self.tables.read().expect("router");
                    t.ufrags.get(ufrag).copied().filter(|d| t.paths.get(&path) == Some(d))
                };
                known.or_else(|| self.tables.write().expect("router").learn(ufrag, path))
            }
            None => self.tables.read().expect("router").paths.get(&path).copied(),
        };
        if dest.is_none() {
            self.unrouted.inc();
        }
        dest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(ufrag: &str) -> Vec<u8> {
        let username = format!("{ufrag}:remote");
        let mut attrs = vec![0x00, 0x06];
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        msg.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&attrs);
        msg
    }

    const RTP: &[u8] = &[0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn admitted(pid: Pid, room: &str, ufrag: &str) -> Route {
        Route::Admitted { pid, room: room.into(), ufrag: ufrag.into() }
    }

    #[test]
    fn a_refused_join_leaves_no_room_behind() {
        let mut t = Tables::new(2);
        let shard = t.reserve("nope");
        assert_eq!(t.open_room("nope"), None, "not open before the engine says so");
        t.apply(shard, &Route::Refused { pid: 1, room: "nope".into() });
        assert_eq!(t.sizes(), (0, 0, 0, 0));
    }

    #[test]
    fn a_leave_and_a_close_leave_no_entry_behind() {
        let router = Router::new(2, Counter::default());
        let shard = router.admit("r", &Capacity::default(), 0).unwrap();
        router.event(shard, &RoomEvent::RoomStarted { room: "r".into(), room_sid: "RM_r".into() });
        router.apply(shard, &admitted(1, "r", "ufragA"));
        assert_eq!(router.open_room("r"), Some(shard));
        let second = router.admit("r", &Capacity::default(), 0).unwrap();
        assert_eq!(second, shard, "a room lives on one shard");
        router.apply(shard, &admitted(2, "r", "ufragB"));

        assert_eq!(router.route(Protocol::Udp, addr(1), &binding("ufragA")), Some(Dest { shard, pid: 1 }));
        assert_eq!(router.route(Protocol::Udp, addr(1), RTP), Some(Dest { shard, pid: 1 }), "then by 5-tuple");
        assert_eq!(router.route(Protocol::Tcp, addr(2), &binding("ufragB")), Some(Dest { shard, pid: 2 }));

        router.apply(shard, &Route::Closed { pid: 1 });
        assert_eq!(router.route(Protocol::Udp, addr(1), RTP), None, "a leave drops the 5-tuple");
        assert_eq!(router.route(Protocol::Udp, addr(1), &binding("ufragA")), None, "and the ufrag");
        assert_eq!(router.unrouted.get(), 2);

        // The room closes: its last participant goes, then the room.
        router.apply(shard, &Route::Closed { pid: 2 });
        router.event(shard, &RoomEvent::RoomFinished { room: "r".into(), room_sid: "RM_r".into() });
        assert_eq!(router.open_room("r"), None);
        assert_eq!(router.tables.read().unwrap().sizes(), (0, 0, 0, 0));
    }

    #[test]
    fn a_room_closing_while_a_join_is_in_flight_keeps_its_shard() {
        let mut t = Tables::new(4);
        let shard = t.reserve("r");
        t.event(shard, &RoomEvent::RoomStarted { room: "r".into(), room_sid: "RM_r".into() });
        t.apply(shard, &admitted(1, "r", "u1"));
        assert_eq!(t.reserve("r"), shard);
        t.apply(shard, &Route::Closed { pid: 1 });
        t.event(shard, &RoomEvent::RoomFinished { room: "r".into(), room_sid: "RM_r".into() });
        assert_eq!(t.sizes().0, 1, "the join in flight still needs the room's shard");
        t.event(shard, &RoomEvent::RoomStarted { room: "r".into(), room_sid: "RM_r".into() });
        t.apply(shard, &admitted(2, "r", "u2"));
        assert_eq!(t.open_room("r"), Some(shard));
    }

    #[test]
    fn capacity_counts_joins_in_flight_and_frees_with_leaves() {
        let mut t = Tables::new(1);
        let cap = Capacity { rooms: 2, participants: 3, bandwidth_bps: 1_000 };
        assert_eq!(t.admit("a", &cap, 0), Ok(0));
        assert_eq!(t.admit("a", &cap, 0), Ok(0));
        assert_eq!(t.admit("b", &cap, 0), Ok(0), "two joins in flight, a third");
        assert_eq!(t.admit("a", &cap, 0), Err(Full::Participants(3)), "in-flight joins count");
        assert!(t.full(&cap, 0));
        t.event(0, &RoomEvent::RoomStarted { room: "a".into(), room_sid: "RM_a".into() });
        t.apply(0, &admitted(1, "a", "u1"));
        t.apply(0, &Route::Refused { pid: 2, room: "a".into() });
        t.apply(0, &Route::Refused { pid: 3, room: "b".into() });
        assert!(!t.full(&cap, 0));
        assert_eq!(t.admit("b", &cap, 0), Ok(0));
        assert_eq!(t.admit("c", &cap, 0), Err(Full::Rooms(2)), "a and b are open or reserved");
        assert_eq!(t.admit("a", &cap, 1_000), Err(Full::Bandwidth(1_000)));
        assert_eq!(t.admit("a", &Capacity::default(), u64::MAX), Ok(0), "0 means no limit");
    }

    #[test]
    fn new_rooms_go_to_the_least_loaded_shard() {
        let mut t = Tables::new(3);
        let shards: Vec<usize> = ["a", "b", "c", "d"].iter().map(|r| t.reserve(r)).collect();
        assert_eq!(shards, [0, 1, 2, 0]);
        t.apply(1, &Route::Refused { pid: 1, room: "b".into() });
        assert_eq!(t.reserve("e"), 1, "a refused room frees its place");
    }

    #[test]
    fn nat_rebinding_and_ice_restart_drop_old_paths() {
        let mut t = Tables::new(1);
        t.reserve("r");
        t.event(0, &RoomEvent::RoomStarted { room: "r".into(), room_sid: "RM_r".into() });
        t.apply(0, &admitted(1, "r", "u1"));
        for port in 1..=(MAX_PATHS as u16 + 2) {
            assert_eq!(t.learn("u1", (Protocol::Udp, addr(port))), Some(Dest { shard: 0, pid: 1 }));
        }
        assert_eq!(t.sizes().2, MAX_PATHS, "the oldest rebinding is forgotten");
        assert!(!t.paths.contains_key(&(Protocol::Udp, addr(1))));

        // Another participant gets a 5-tuple the NAT reused: it moves.
        t.apply(0, &admitted(2, "r", "u2"));
        let reused = (Protocol::Udp, addr(MAX_PATHS as u16 + 2));
        assert_eq!(t.learn("u2", reused), Some(Dest { shard: 0, pid: 2 }));
        assert_eq!(t.members[&1].paths.len(), MAX_PATHS - 1);

        t.apply(0, &Route::IceRestart { pid: 1, ufrag: "u1b".into() });
        assert_eq!(t.learn("u1", (Protocol::Udp, addr(50))), None, "the old ufrag is gone");
        assert_eq!(t.sizes(), (1, 2, 1, 2), "only participant 2's path is left");
        assert_eq!(t.learn("u1b", (Protocol::Udp, addr(51))), Some(Dest { shard: 0, pid: 1 }));
    }

    #[test]
    fn a_relay_that_dialed_its_origin_gets_the_origins_datagrams_until_it_closes() {
        let mut t = Tables::new(1);
        t.apply(0, &admitted(1, "r", "u1"));
        let origin = addr(7);
        t.apply(0, &Route::Dialed { pid: 1, remote: origin });
        assert_eq!(t.paths.get(&(Protocol::Udp, origin)), Some(&Dest { shard: 0, pid: 1 }), "no ufrag needed");
        t.apply(0, &Route::Dialed { pid: 9, remote: addr(8) });
        assert!(!t.paths.contains_key(&(Protocol::Udp, addr(8))), "only a member's dial is routed");
        t.apply(0, &Route::Closed { pid: 1 });
        assert_eq!(t.sizes(), (0, 0, 0, 0), "closing the relay forgets its path");
    }

    #[test]
    fn a_room_opened_without_a_join_counts_against_the_rooms_limit() {
        let mut t = Tables::new(2);
        let cap = Capacity { rooms: 2, ..Capacity::default() };
        let a = t.place("a", &cap, 0).unwrap();
        assert_eq!(t.open_room("a"), None, "open once the engine says so");
        t.event(a, &RoomEvent::RoomStarted { room: "a".into(), room_sid: "RM_a".into() });
        assert_eq!(t.open_room("a"), Some(a));
        assert_eq!(t.place("a", &cap, 0), Ok(a), "the same room stays on its shard");
        let b = t.place("b", &cap, 0).unwrap();
        assert_ne!(a, b, "the least loaded shard");
        assert_eq!(t.place("c", &cap, 0), Err(Full::Rooms(2)));
        t.event(a, &RoomEvent::RoomFinished { room: "a".into(), room_sid: "RM_a".into() });
        assert_eq!(t.sizes().0, 1, "a closed room leaves nothing behind");
    }
}
