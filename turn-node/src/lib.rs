//! `switchyard-turn-node`: Switchyard's TURN server (RFC 8656 over RFC 8489).
//!
//! # Invariant
//! Nothing is relayed to or from a peer unless an authenticated client holds
//! an unexpired permission for that peer's IP, and no permission is ever
//! installed for an address the [`filter::PeerFilter`] refuses (every range
//! the IANA special-purpose registries mark not globally reachable, multicast,
//! reserved space, and every IPv6 form embedding those), unless an allow CIDR
//! says so.
//!
//! # Flow
//! ```text
//!            ┌────────────── worker thread × cores (SO_REUSEPORT) ───────────────┐
//!  client ──►│ UDP/TCP/TLS listener ─► engine::Engine (sans-IO) ─► relay socket ─┼─► peer
//!  client ◄──│ listener / stream    ◄─ header written in place ◄─ relay socket ◄─┼── peer
//!            └───────────────────────────────────────────────────────────────────┘
//!  admin port: /metrics /healthz /readyz /internal/status POST /drain
//! ```
//! [`engine::Engine`] takes `(Instant, datagram)` and returns datagrams,
//! relay-socket requests and deadlines; it owns no socket and reads no clock,
//! so lifetimes, permission and channel rules and nonce staleness are unit
//! tested on a virtual clock. [`server`] is the tokio driver around it.
//!
//! # Why our own STUN codec
//! The `stun` crate decodes a message into a `Vec` of owned attributes
//! (`Message { attributes: Vec<RawAttribute{ value: Vec<u8> }>, raw: Vec<u8> }`),
//! i.e. several heap allocations per packet. Send indications and peer data
//! are on the relay fast path, so [`stun`] parses by borrowing from the
//! datagram and writes Data-indication/ChannelData headers in place in front
//! of the payload. The webrtc-rs `turn` crate is still used, as an independent
//! client implementation, in the integration tests.
//!
//! # Embedding
//! ```no_run
//! # async fn f() -> switchyard_turn_node::Result<()> {
//! use switchyard_turn_node::{Config, TurnServer};
//! let handle = TurnServer::start(Config::dev(3478, "dev-secret")).await?;
//! println!("TURN on {:?}, admin on {}", handle.addrs().udp, handle.addrs().admin);
//! handle.drain(); // or handle.shutdown(); dropping the handle also stops it
//! handle.wait().await
//! # }
//! ```
#![forbid(unsafe_code)] // batched socket I/O lives in switchyard-udp

mod admin;
pub mod auth;
pub mod config;
pub mod engine;
mod error;
pub mod filter;
pub mod metrics;
pub mod server;
pub mod stun;

pub use config::{Args, Config};
pub use error::{Error, Result};
pub use server::{BoundAddrs, TurnHandle, TurnServer, run_until_signal};
