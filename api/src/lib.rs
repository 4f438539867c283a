//! Switchyard's shared vocabulary: the custom resources (`MediaCluster`, `Room`), the
//! signaling protocol spoken over `/rtc`, access tokens, the nodes' config documents, and
//! the helpers more than one crate needs (TURN REST credentials, the token bucket, random
//! tokens). Types and pure functions only: no I/O, no async runtime; clocks and RNGs come
//! in as arguments.
//!
//! ```text
//!  app backend ── mint (token) ──► browser ── /rtc?access_token ──► media-node ── verify (token)
//!  kubectl ── Room, MediaCluster (crd) ──► apiserver ◄── operator, media-node
//!  app backend ── CreateRoomRequest, … (room_service) ──► media-node ── Room (crd) ──► apiserver
//!  browser ◄── ClientMessage / ServerMessage (signal) ──► media-node
//!  media-node ── WebhookEvent, signed (webhook) ──► app backend ── verify (webhook)
//!  operator ── MediaNodeConfig, TurnNodeConfig (node_config) ──► ConfigMap ──► media-node, turn-node
//!  edge media-node ── RelayMessage, keyed (relay) ──► origin media-node ── verify (relay)
//!  media-node ── mint (turn_rest) ──► browser ── TURN credentials ──► turn-node ── verify (turn_rest)
//! ```
#![forbid(unsafe_code)]

pub mod crd;
mod error;
pub mod media_cluster;
pub mod names;
pub mod node;
pub mod node_config;
pub mod quantity;
pub mod random;
pub mod rate;
pub mod relay;
pub mod room;
pub mod room_service;
pub mod signal;
pub mod token;
pub mod turn_rest;
pub mod webhook;

pub use error::{Error, Result};
pub use media_cluster::{MediaCluster, MediaClusterSpec, MediaClusterStatus};
pub use room::{Room, RoomSpec, RoomStatus};
