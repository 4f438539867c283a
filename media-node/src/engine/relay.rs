//! The relay: the participant that carries a room between two media-nodes (ARCHITECTURE.md,
//! "Rooms across nodes"). On the room's **origin** it is the edge's one subscriber to every
//! track published there and the publisher of the edge's tracks; on the **edge** it is the
//! publisher of the origin's tracks and the one subscriber to the edge's. Either way it
//! is a hidden, auto-subscribed [`Peer`] with a str0m `Rtc`, so the forwarding path, the
//! munger (each local subscriber gets its own numbering), the keyframe throttle and the
//! negotiation code are the ones every participant goes through; what differs lives here:
//!
//! ```text
//!          origin engine                                     edge engine
//!  alice ─► track ─► index ─► relay peer (ice-lite) ══SRTP══ relay peer (full ICE) ─► track ─► index ─► bob, carol
//!                             subscriber of alice            publisher of alice's line    (one Sub each, own seq)
//!  erin ◄── index ◄── track ◄─ publisher of dave's line ◄══ subscriber of dave ◄── track ◄── dave
//! ```
//!
//! - **ICE**: the origin's end is the usual ice-lite server peer; the edge's end is a full
//!   agent with the edge's relay address as its host candidate and the origin's pod
//!   address as its remote one (str0m makes the full agent controlling, whoever offers
//!   first). The relay needs no TURN and no trickle.
//! - **Signaling**: what an engine says to its relay peer goes to the other node as
//!   [`RelayMessage`](switchyard_api::relay::RelayMessage) (offers, answers, candidates), and
//!   comes in there as that engine's relay peer's [`ClientMessage`](switchyard_api::signal::ClientMessage).
//!   Each engine offers its own subscription lines and answers the other's.
//! - **Glare**: the edge yields, as the engine yields to every client; the origin keeps
//!   its offer and ignores the edge's ([`Peer::keeps_offer_on_glare`]), and the edge
//!   offers again after answering.
//! - **Keyframes**: an edge subscriber's PLI is throttled on the relay peer's track (one
//!   per layer per window) before it crosses, and again on the publisher's track at the
//!   origin, so a publisher hears one request per window from an edge, not one per
//!   subscriber behind it.
//! - **Accounting**: a relay is no participant in the node's counts, its room reports or
//!   its room events (webhooks): the other node reports what the relay carries.
//! - **Identity**: the relay peer's identity is `relay:<the other node>`; a second relay
//!   from the same node replaces the first (the duplicate-identity rule).

use std::net::SocketAddr;
use std::time::Instant;

use str0m::Candidate;
use switchyard_api::token::{Claims, Grants};

use super::participant::Peer;
use super::{Engine, JoinArgs, Pid, RoomSettings};

/// Which end of a relay this engine holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelaySide {
    /// This node is the room's origin and the edge dialed in: the relay peer is an
    /// ice-lite peer on the node's media port, like any participant.
    Origin,
    /// This node is an edge: the relay peer is a full ICE agent sending from `local` to
    /// the origin's media address `origin`.
    Edge {
        /// This node's address the relay sends from (its pod IP and media port).
        local: SocketAddr,
        /// The origin's media address (its pod IP and media port).
        origin: SocketAddr,
    },
}

/// Open one end of a relay for a room ([`Command::Relay`](super::Command::Relay)). The
/// caller has authenticated the other node (the origin checks the room key of the
/// edge's `hello`).
#[derive(Debug, Clone)]
pub struct RelayArgs {
    /// The relay peer's id on this node.
    pub pid: Pid,
    /// The room it carries.
    pub room: String,
    /// The other node's name.
    pub peer_node: String,
    /// Which end this is.
    pub side: RelaySide,
    /// Settings for the room if the relay opens it here (an edge whose first local
    /// participant has not joined yet).
    pub settings: RoomSettings,
}

/// The relay peer's identity for the node at the other end.
pub fn relay_identity(peer_node: &str) -> String {
    format!("relay:{peer_node}")
}

impl Peer {
    /// On glare, does this peer's end keep its own offer (and ignore the one that
    /// crossed it)? Only the origin's end of a relay: a client, and the edge, yield.
    pub(super) fn keeps_offer_on_glare(&self) -> bool {
        self.relay == Some(RelaySide::Origin)
    }
}

impl Engine {
    /// Are `pid`'s comings and goings room events here (webhooks, `Room.status`)? Not a
    /// relay's: the participants and tracks it carries are the other node's, and that
    /// node reports them.
    pub(super) fn announces(&self, pid: Pid) -> bool {
        self.peers.get(&pid).is_some_and(|p| p.relay.is_none())
    }

    /// Open this engine's end of a relay: a hidden, auto-subscribed participant of the
    /// room; at an edge, its `Rtc` is a full ICE agent that reaches the origin.
    pub(super) fn open_relay(&mut self, now: Instant, args: RelayArgs) {
        let mut grants = Grants::join(&args.room);
        grants.hidden = true;
        let claims = Claims::new("relay", relay_identity(&args.peer_node), 0, 0).with_grants(grants);
        let reconnect_token = self.random_token(24);
        let join = JoinArgs {
            pid: args.pid,
            room: args.room.clone(),
            claims,
            auto_subscribe: true,
            may_create: true,
            settings: args.settings.clone(),
            ice_servers: vec![],
            reconnect_token,
        };
        self.joining_relay = Some((args.pid, args.side));
        self.join(now, join);
        self.joining_relay = None;
        if !self.peers.contains_key(&args.pid) {
            return;
        }
        if let RelaySide::Edge { local, origin } = args.side {
            let ufrag = self.random_token(8);
            let creds = str0m::IceCreds { ufrag: ufrag.clone(), pass: self.random_token(24) };
            let settings = self.rooms.get(&args.room).map(|r| r.settings.clone()).unwrap_or_default();
            let mut rtc = self.rtc_config(&settings).set_ice_lite(false).set_local_ice_credentials(creds).build(now);
            if let Ok(c) = Candidate::host(local, "udp") {
                rtc.add_local_candidate(c);
            }
            if let Ok(c) = Candidate::host(origin, "udp") {
                rtc.add_remote_candidate(c);
            }
            let peer = self.peers.get_mut(&args.pid).expect("just joined");
            peer.rtc = rtc;
            peer.ufrag = ufrag.clone();
            // The router forgets the ufrag the join announced.
            self.out.push_back(super::Output::Route(super::Route::IceRestart { pid: args.pid, ufrag }));
            // The origin only answers the relay's checks: nothing it sends names a ufrag.
            self.out.push_back(super::Output::Route(super::Route::Dialed { pid: args.pid, remote: origin }));
        }
        self.drain(args.pid);
    }
}
