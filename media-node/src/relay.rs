//! The node's ends of a relay (ARCHITECTURE.md, "Rooms across nodes"): the origin's relay
//! endpoint and the edge's dial. The engine holds the relay peer (`engine::relay`); this
//! module carries its signaling between the two nodes over one internal WebSocket.
//!
//! ```text
//!  operator ── POST /internal/rooms/{room}/relay {originNode, originAdmin, originMedia} ──► edge
//!  edge ── ws://originAdmin/internal/relay ── hello {room, node, key, protocolVersion} ──► origin
//!                                   origin: RelayHello::check, else close 4401 (key) / 4400
//!  edge shard ◄── offer / answer / trickle (RelayMessage, JSON text frames) ──► origin shard
//!  edge UDP port ◄═══════════════ ICE, DTLS-SRTP (str0m both ends) ═══════════► origin UDP port
//! ```
//!
//! - Both endpoints are on the admin port (the pod IP, never the public Service), and
//!   both need the cluster's relay secret (`--relay-secret`): without it the origin
//!   refuses the upgrade (503) and the edge dials nothing.
//! - The room key is checked before anything else exists: a refused relay opens no room,
//!   no peer and no route.
//! - A relay lives as long as its socket: when the socket ends, the relay peer leaves
//!   (its tracks unpublish on that node); when the engine removes the relay peer (its
//!   ICE timed out, the room closed), the socket is closed.
//! - Relay signaling is bounded like a session's: one outbound queue of
//!   `--session-queue` messages, frames up to 4× `--max-message-bytes`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use switchyard_api::relay::{CLOSE_BAD_HELLO, RELAY_PROTOCOL_VERSION, RelayAttach, RelayHello, RelayMessage, room_key};
use switchyard_api::signal::LeaveReason;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite;

use crate::engine::relay::{RelayArgs, RelaySide};
use crate::engine::{Command, RoomSettings};
use crate::node::{SessionOut, ShardMsg, Shared};

/// How long an edge may take to send `hello`, and an edge to reach the origin.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The namespace a room key is derived for: the pod's in Kubernetes, `default` outside.
fn namespace(shared: &Shared) -> &str {
    shared.cfg.kubernetes.as_ref().map(|k| k.namespace.as_str()).unwrap_or("default")
}

fn room_settings(shared: &Shared) -> RoomSettings {
    RoomSettings {
        max_participants: shared.cfg.max_participants,
        empty_timeout: shared.cfg.empty_timeout(),
        ..RoomSettings::default()
    }
}

/// One relay socket, whichever end: text frames in and out, and a close with a code.
trait RelaySocket {
    /// The next text frame; `None` when the socket is gone or closed.
    async fn recv(&mut self) -> Option<String>;
    /// Send a text frame; false when the socket is gone.
    async fn send(&mut self, text: String) -> bool;
    /// Send a close frame and stop.
    async fn close(&mut self, code: u16, reason: &str);
}

/// The origin's end: the socket the edge opened.
impl RelaySocket for WebSocket {
    async fn recv(&mut self) -> Option<String> {
        loop {
            match self.next().await? {
                Ok(Message::Text(t)) => return Some(t.as_str().to_owned()),
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(Message::Binary(_) | Message::Close(_)) | Err(_) => return None,
            }
        }
    }

    async fn send(&mut self, text: String) -> bool {
        SinkExt::send(self, Message::Text(Utf8Bytes::from(text))).await.is_ok()
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let reason = Utf8Bytes::from(reason.chars().take(120).collect::<String>());
        let _ = SinkExt::send(self, Message::Close(Some(CloseFrame { code, reason }))).await;
    }
}

type EdgeSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// The edge's end: the socket it dialed.
impl RelaySocket for EdgeSocket {
    async fn recv(&mut self) -> Option<String> {
        loop {
            match self.next().await? {
                Ok(tungstenite::Message::Text(t)) => return Some(t.as_str().to_owned()),
                Ok(tungstenite::Message::Close(frame)) => {
                    if let Some(f) = frame {
                        tracing::warn!(code = u16::from(f.code), reason = %f.reason, "the origin closed the relay");
                    }
                    return None;
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    async fn send(&mut self, text: String) -> bool {
        SinkExt::send(self, tungstenite::Message::text(text)).await.is_ok()
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let frame = tungstenite::protocol::CloseFrame { code: code.into(), reason: reason.to_owned().into() };
        let _ = SinkExt::send(self, tungstenite::Message::Close(Some(frame))).await;
    }
}

/// `GET /internal/relay` (admin port): an edge's relay. Refused before the upgrade when
/// this node has no relay secret.
pub(crate) async fn accept(State(shared): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    let Some(secret) = shared.cfg.relay_secret.clone() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "this node has no relay secret: relays are off").into_response();
    };
    let max = shared.cfg.max_message_bytes * 4;
    ws.max_message_size(max).max_frame_size(max).on_upgrade(move |socket| origin(socket, shared, secret))
}

/// The origin's side of one relay: `hello` checked, then the relay peer opened and its
/// signaling carried until either end stops.
async fn origin(mut ws: WebSocket, shared: Arc<Shared>, secret: String) {
    let first = tokio::time::timeout(HELLO_TIMEOUT, RelaySocket::recv(&mut ws)).await;
    let hello = match first.map(|t| t.map(|t| serde_json::from_str::<RelayMessage>(&t))) {
        Ok(Some(Ok(RelayMessage::Hello(h)))) => h,
        Ok(Some(Ok(_))) => return RelaySocket::close(&mut ws, CLOSE_BAD_HELLO, "send hello first").await,
        Ok(Some(Err(e))) => return RelaySocket::close(&mut ws, CLOSE_BAD_HELLO, &format!("bad hello: {e}")).await,
        Ok(None) => return,
        Err(_) => return RelaySocket::close(&mut ws, CLOSE_BAD_HELLO, "no hello within 10 s").await,
    };
    if let Err(refusal) = hello.check(secret.as_bytes(), namespace(&shared)) {
        tracing::warn!(room = %hello.room, node = %hello.node, %refusal, "relay refused");
        return RelaySocket::close(&mut ws, refusal.close_code(), &refusal.to_string()).await;
    }
    if let Err(e) = switchyard_api::names::check_room_name(&hello.room) {
        return RelaySocket::close(&mut ws, CLOSE_BAD_HELLO, &e.to_string()).await;
    }
    let shard = match shared.shard_for(&hello.room) {
        Ok(shard) => shard,
        Err(e) => return RelaySocket::close(&mut ws, e.code.close_code(), &e.message).await,
    };
    tracing::info!(room = %hello.room, edge = %hello.node, "relay opened (origin)");
    run(ws, &shared, shard, hello.room, hello.node, RelaySide::Origin).await;
}

/// `POST /internal/rooms/{room}/relay` (admin port): become an edge of `room` and dial
/// its origin. Accepted once the body is valid; the relay then runs on its own (its
/// refusals are logged).
pub(crate) async fn attach(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
    body: Result<axum::Json<RelayAttach>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let axum::Json(attach) = match body {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    if let Err(e) = switchyard_api::names::check_room_name(&room) {
        return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
    }
    let Some(secret) = shared.cfg.relay_secret.clone() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "this node has no relay secret: relays are off").into_response();
    };
    if attach.origin_node == shared.cfg.node_name {
        return (StatusCode::BAD_REQUEST, "a node is no edge of its own room").into_response();
    }
    tokio::spawn(async move {
        if let Err(e) = edge(shared, room.clone(), attach, secret).await {
            tracing::warn!(%room, error = %e, "relay to the origin failed");
        }
    });
    StatusCode::ACCEPTED.into_response()
}

/// The edge's side of one relay: dial, `hello`, then the relay peer opened (a full ICE
/// agent with the origin's media address as its remote candidate).
async fn edge(shared: Arc<Shared>, room: String, attach: RelayAttach, secret: String) -> Result<(), String> {
    let tcp = tokio::time::timeout(HELLO_TIMEOUT, tokio::net::TcpStream::connect(attach.origin_admin))
        .await
        .map_err(|_| format!("{}: connect timed out", attach.origin_admin))?
        .map_err(|e| format!("{}: {e}", attach.origin_admin))?;
    // The relay sends from the address that reaches the origin, on this node's media port.
    let via = tcp.local_addr().map_err(|e| e.to_string())?.ip();
    let udp = shared.udp_addr;
    let local = if udp.ip().is_unspecified() { SocketAddr::new(via, udp.port()) } else { udp };
    let url = format!("ws://{}/internal/relay", attach.origin_admin);
    let (mut ws, _) = tokio::time::timeout(HELLO_TIMEOUT, tokio_tungstenite::client_async(url, tcp))
        .await
        .map_err(|_| "the WebSocket handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let hello = RelayMessage::Hello(RelayHello {
        room: room.clone(),
        node: shared.cfg.node_name.clone(),
        key: room_key(secret.as_bytes(), namespace(&shared), &room),
        protocol_version: RELAY_PROTOCOL_VERSION,
    });
    if !RelaySocket::send(&mut ws, serde_json::to_string(&hello).expect("relay messages serialize")).await {
        return Err("the origin closed the socket before hello".into());
    }
    let shard = match shared.shard_for(&room) {
        Ok(shard) => shard,
        Err(e) => {
            RelaySocket::close(&mut ws, 1000, &e.message).await;
            return Err(e.message);
        }
    };
    tracing::info!(%room, origin = %attach.origin_node, %local, remote = %attach.origin_media, "relay opened (edge)");
    run(ws, &shared, shard, room, attach.origin_node, RelaySide::Edge { local, origin: attach.origin_media }).await;
    Ok(())
}

/// Open this node's relay peer on `shard` and carry its signaling until the socket or
/// the peer ends; then the other one goes too.
async fn run<S: RelaySocket>(
    mut ws: S,
    shared: &Shared,
    shard: usize,
    room: String,
    peer_node: String,
    side: RelaySide,
) {
    let pid = shared.next_pid();
    let (tx, mut rx, overflow): (_, _, Arc<Notify>) = crate::session::outbox(shared.cfg.session_queue);
    shared.send(shard, ShardMsg::Register(pid, tx));
    let args = RelayArgs { pid, room: room.clone(), peer_node, side, settings: room_settings(shared) };
    shared.send(shard, ShardMsg::Command(Command::Relay(Box::new(args))));
    let reason = loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(SessionOut::Msg(msg)) => {
                    let Some(relayed) = RelayMessage::from_server(&msg) else { continue };
                    if !ws.send(serde_json::to_string(&relayed).expect("relay messages serialize")).await {
                        break LeaveReason::Timeout;
                    }
                }
                Some(SessionOut::Adopt(_)) => {}
                Some(SessionOut::Close) | None => {
                    // The engine removed the relay peer already.
                    ws.close(1000, "relay ended").await;
                    tracing::info!(%room, "relay closed by this node");
                    return;
                }
            },
            _ = overflow.notified() => {
                ws.close(1008, "relay signaling cannot keep up").await;
                break LeaveReason::Timeout;
            }
            text = ws.recv() => match text.map(|t| serde_json::from_str::<RelayMessage>(&t)) {
                Some(Ok(msg)) => {
                    if let Some(msg) = msg.into_client() {
                        shared.send(shard, ShardMsg::Command(Command::Client { pid, msg }));
                    }
                }
                Some(Err(e)) => {
                    ws.close(CLOSE_BAD_HELLO, &format!("bad relay message: {e}")).await;
                    break LeaveReason::ClientRequest;
                }
                None => break LeaveReason::ClientRequest,
            },
        }
    };
    tracing::info!(%room, "relay socket ended: the relay peer leaves");
    shared.send(shard, ShardMsg::Command(Command::Leave { pid, session: pid, reason }));
}
