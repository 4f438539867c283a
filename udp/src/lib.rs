//! Batched UDP I/O shared by media-node and turn-node: one `recvmmsg(2)` drains up to
//! [`BATCH`] datagrams from a socket, one `sendmmsg(2)` sends up to [`BATCH`] queued
//! datagrams to as many destinations. On a forwarding node the syscall, not the copy,
//! is the per-packet cost that batching removes: an SFU fanning one packet out to 40
//! subscribers makes one system call for them instead of 40.
//!
//! This crate holds the project's socket-level `unsafe` code and nothing else; both
//! batches work on a raw, non-blocking file descriptor the caller owns (a tokio
//! `UdpSocket`'s), so they fit any runtime.
#![allow(unsafe_code)]

mod recv;
mod send;
mod sockaddr;

pub use recv::RecvBatch;
pub use send::{Flushed, SendBatch};

/// Datagrams per system call.
pub const BATCH: usize = 32;
