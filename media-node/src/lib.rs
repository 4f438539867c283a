//! media-node: Switchyard's SFU.
//!
//! ```text
//!             ┌──────────── HTTP (axum) ─────────────┐
//! browser ──► │ /rtc  token checked before upgrade   │──► session task ──┐ Command
//!             │ /api/v1 Room service (room_api)       │      │ admit     ▼ (never dropped)
//!             │ /healthz /readyz /metrics /internal/* │      │
//!             └──────────────────────────────────────┘      ▼     shard task (Engine)
//!                                                          router ◄── Route, room events
//! UDP :7882 ──► recv task ── router: (shard, pid) ── batch ──► shard    │ Transmit
//! TCP :7881 ──► conn task ── RFC 4571 frames ────────────────► shard    ▼
//!                                                     UDP socket / TCP conn
//! ```
//!
//! Rooms are spread over shards (one per core by default); a room lives on exactly one
//! shard, so forwarding never crosses threads. Every shard owns an [`engine::Engine`], the
//! sans-IO core, and is the only writer of its state. The router (`router`) is the only
//! owner of routing state, fed by what the engines output. Room events leave the shards
//! for the webhook receivers through bounded queues (`webhook`), so a slow receiver never
//! holds a shard up.
#![deny(unsafe_code)]

mod cluster;
pub mod config;
pub mod engine;
mod forwarded;
mod http;
mod metrics;
mod node;
mod proxy;
mod relay;
mod room_api;
mod room_kube;
mod router;
mod session;
mod trim;
mod webhook;

pub use cluster::KubeMode;
pub use config::Config;
pub use node::{Node, NodeHandle};

/// Everything that can go wrong in media-node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is invalid; the message names it.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A socket could not be bound or used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Error {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
