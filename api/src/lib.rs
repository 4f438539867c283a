//! Switchyard's shared vocabulary: the custom resources (`MediaCluster`, `Room`), the
//! signaling protocol spoken over `/rtc`, and access tokens. Types and pure functions only:
//! no I/O, no async runtime.
//!
//! ```text
//!  app backend ── mint (token) ──► browser ── /rtc?access_token ──► media-node ── verify (token)
//!  kubectl / room API ── Room, MediaCluster (crd) ──► apiserver ◄── operator, media-node
//!  browser ◄── ClientMessage / ServerMessage (signal) ──► media-node
//!  media-node ── WebhookEvent, signed (webhook) ──► app backend ── verify (webhook)
//! ```
#![forbid(unsafe_code)]

pub mod crd;
mod error;
pub mod media_cluster;
pub mod names;
pub mod node;
pub mod quantity;
pub mod room;
pub mod signal;
pub mod token;
pub mod webhook;

pub use error::{Error, Result};
pub use media_cluster::{MediaCluster, MediaClusterSpec, MediaClusterStatus};
pub use room::{Room, RoomSpec, RoomStatus};
