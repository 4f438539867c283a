//! One signaling WebSocket: waits for `join`, then relays between the client and its
//! room's shard, enforcing frame size, message rate and keepalive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::StreamExt;
use switchyard_api::rate::TokenBucket;
use switchyard_api::signal::{ClientMessage, ErrorCode, ErrorMessage, LeaveReason, Ping, ServerMessage};
use switchyard_api::token::Claims;
use tokio::sync::mpsc;

use crate::cluster::Route;
use crate::engine::{Command, JoinArgs, RoomSettings};
use crate::node::{SessionOut, ShardMsg, Shared};
use crate::proxy::Upstream;

/// How long a new connection may take to send `join`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The message rate limit: `rate` per second, bursts up to `2 × rate` (the shared
/// token bucket).
struct RateLimit {
    bucket: TokenBucket,
    rate: f64,
}

impl RateLimit {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate);
        Self { bucket: TokenBucket::full(Instant::now(), rate * 2.0), rate }
    }

    fn allow(&mut self, now: Instant) -> bool {
        self.bucket.take(now, self.rate, self.rate * 2.0, 1.0)
    }
}

fn encode(msg: &ServerMessage) -> Message {
    Message::Text(Utf8Bytes::from(serde_json::to_string(msg).expect("server messages serialize")))
}

async fn close(ws: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame { code, reason: Utf8Bytes::from(reason.chars().take(120).collect::<String>()) };
    let _ = ws.send(Message::Close(Some(frame))).await;
}

async fn fail(ws: &mut WebSocket, shared: &Shared, e: ErrorMessage) {
    shared.metrics.signal_errors.get_or_create(&crate::metrics::Code { code: e.code.as_str() }).inc();
    let code = e.code;
    let reason = e.message.clone();
    let _ = ws.send(encode(&ServerMessage::Error(e))).await;
    if code.is_fatal() {
        close(ws, code.close_code(), &reason).await;
    }
}

/// Send a final error and close, fatal or not (routing refusals end the socket).
pub(crate) async fn refuse(ws: &mut WebSocket, shared: &Shared, e: ErrorMessage) {
    let code = e.code;
    let reason = e.message.clone();
    fail(ws, shared, e).await;
    if !code.is_fatal() {
        close(ws, code.close_code(), &reason).await;
    }
}

/// Read the next text frame as a client message. `Err(None)` means the socket is gone.
fn parse(frame: Message, max: usize) -> Result<Option<ClientMessage>, Option<ErrorMessage>> {
    match frame {
        Message::Text(t) if t.len() > max => Err(Some(ErrorMessage::new(
            ErrorCode::MessageTooLarge,
            format!("frame is {} bytes; the limit is {max}", t.len()),
        ))),
        Message::Text(t) => ClientMessage::parse(t.as_str()).map(Some).map_err(Some),
        Message::Binary(_) => {
            Err(Some(ErrorMessage::new(ErrorCode::BadRequest, "binary frames are not part of the protocol")))
        }
        Message::Close(_) => Err(None),
        Message::Ping(_) | Message::Pong(_) => Ok(None),
    }
}

/// Kubernetes mode: serve the room here (with its Room's settings), proxy the socket to
/// the node hosting it, or refuse. `None` means the socket was handed off or closed.
async fn route(
    ws: WebSocket,
    shared: &Arc<Shared>,
    claims: &Claims,
    room: &str,
    up: Request,
    defaults: RoomSettings,
) -> Option<(WebSocket, RoomSettings)> {
    let Some(cluster) = shared.cluster.clone() else { return Some((ws, defaults)) };
    let started = Instant::now();
    let may_create = shared.cfg.auto_create || claims.grants.room_create;
    let decision = cluster.route(room, may_create, up.forwarded).await;
    shared.metrics.routing_seconds.observe(started.elapsed().as_secs_f64());
    match decision {
        Route::Serve(spec) => Some((ws, crate::cluster::room_settings(&spec, defaults))),
        Route::Proxy { node, ip } => {
            crate::proxy::run(ws, shared.clone(), node, ip, up.upstream).await;
            None
        }
        Route::Refuse(e) => {
            let mut ws = ws;
            refuse(&mut ws, shared, e).await;
            None
        }
    }
}

/// What of the HTTP request a session needs besides the token.
#[derive(Debug, Default)]
pub(crate) struct Request {
    /// Passed on when the session is proxied.
    pub(crate) upstream: Upstream,
    /// Another node proxied this request here.
    pub(crate) forwarded: bool,
}

pub(crate) async fn run(ws: WebSocket, shared: Arc<Shared>, claims: Claims, room: String, req: Request) {
    let cfg = &shared.cfg;
    let defaults = RoomSettings {
        max_participants: cfg.max_participants,
        empty_timeout: cfg.empty_timeout(),
        allowed_codecs: vec![],
        metadata: None,
    };
    let Some((ws, settings)) = route(ws, &shared, &claims, &room, req, defaults).await else { return };
    serve(ws, shared, claims, room, settings).await;
}

async fn serve(mut ws: WebSocket, shared: Arc<Shared>, claims: Claims, room: String, settings: RoomSettings) {
    let max = shared.cfg.max_message_bytes;
    let mut limit = RateLimit::new(shared.cfg.messages_per_second);
    // Wait for join.
    let join = loop {
        let frame = match tokio::time::timeout(JOIN_TIMEOUT, ws.next()).await {
            Err(_) => {
                return fail(&mut ws, &shared, ErrorMessage::new(ErrorCode::BadRequest, "no join within 10 s")).await;
            }
            Ok(None) | Ok(Some(Err(_))) => return,
            Ok(Some(Ok(f))) => f,
        };
        match parse(frame, max) {
            Ok(Some(ClientMessage::Join(j))) => break j,
            Ok(Some(ClientMessage::Resume(_))) => {
                let e = ErrorMessage::new(ErrorCode::ResumeFailed, "this node cannot resume that session; join again");
                return fail(&mut ws, &shared, e).await;
            }
            Ok(Some(ClientMessage::Ping(p))) => {
                let _ = ws.send(encode(&ServerMessage::Pong(p))).await;
            }
            Ok(Some(other)) => {
                let mut e = ErrorMessage::new(ErrorCode::NotJoined, "send join first");
                e.request_type = Some(other.type_name().into());
                fail(&mut ws, &shared, e).await;
            }
            Ok(None) => {}
            Err(Some(e)) => fail(&mut ws, &shared, e).await,
            Err(None) => return,
        }
    };
    if join.protocol_version != switchyard_api::signal::PROTOCOL_VERSION {
        let e = ErrorMessage::new(
            ErrorCode::BadRequest,
            format!("protocol version {} is not supported (this server speaks 1)", join.protocol_version),
        );
        fail(&mut ws, &shared, e).await;
        close(&mut ws, 4400, "unsupported protocol version").await;
        return;
    }

    let started = Instant::now();
    let pid = shared.next_pid();
    let shard = match shared.shard_for(&room) {
        Ok(shard) => shard,
        Err(e) => return refuse(&mut ws, &shared, e).await,
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    shared.send(shard, ShardMsg::Register(pid, tx));
    let cfg = &shared.cfg;
    let args = JoinArgs {
        pid,
        room: room.clone(),
        ice_servers: shared.ice_servers(&claims.sub),
        may_create: cfg.auto_create || claims.grants.room_create,
        settings,
        auto_subscribe: join.auto_subscribe,
        reconnect_token: format!("{pid}"),
        claims,
    };
    shared.send(shard, ShardMsg::Command(Command::Join(Box::new(args))));

    let timeout = Duration::from_secs(u64::from(cfg.ping_timeout_seconds));
    let mut last_frame = Instant::now();
    let mut joined = false;
    let mut last_fatal: Option<ErrorCode> = None;
    let mut leave_reason = LeaveReason::ClientRequest;
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(SessionOut::Msg(msg)) => {
                    if let ServerMessage::Joined(_) = &*msg && !joined {
                        joined = true;
                        shared.metrics.join_seconds.observe(started.elapsed().as_secs_f64());
                    }
                    if let ServerMessage::Error(e) = &*msg && e.code.is_fatal() {
                        last_fatal = Some(e.code);
                    }
                    if ws.send(encode(&msg)).await.is_err() {
                        leave_reason = LeaveReason::Timeout;
                        break;
                    }
                }
                Some(SessionOut::Close) | None => {
                    let code = last_fatal.map(ErrorCode::close_code).unwrap_or(1000);
                    close(&mut ws, code, "session ended").await;
                    return;
                }
            },
            frame = ws.next() => {
                let frame = match frame {
                    Some(Ok(f)) => f,
                    _ => { leave_reason = LeaveReason::Timeout; break; }
                };
                last_frame = Instant::now();
                if !limit.allow(last_frame) {
                    let e = ErrorMessage::new(ErrorCode::RateLimited, format!("more than {} messages per second", cfg.messages_per_second));
                    fail(&mut ws, &shared, e).await;
                    break;
                }
                match parse(frame, max) {
                    Ok(Some(ClientMessage::Ping(p))) => {
                        let pong = ServerMessage::Pong(Ping { timestamp_ms: p.timestamp_ms, rtt_ms: None });
                        let _ = ws.send(encode(&pong)).await;
                    }
                    Ok(Some(ClientMessage::Pong(_))) | Ok(None) => {}
                    Ok(Some(ClientMessage::Join(_) | ClientMessage::Resume(_))) => {
                        fail(&mut ws, &shared, ErrorMessage::new(ErrorCode::AlreadyJoined, "this session has joined already")).await;
                    }
                    Ok(Some(ClientMessage::Leave(_))) => break,
                    Ok(Some(msg)) => shared.send(shard, ShardMsg::Command(Command::Client { pid, msg })),
                    Err(Some(e)) => {
                        let fatal = e.code.is_fatal();
                        fail(&mut ws, &shared, e).await;
                        if fatal { break; }
                    }
                    Err(None) => break,
                }
            }
            _ = tokio::time::sleep_until((last_frame + timeout).into()) => {
                let e = ErrorMessage::new(ErrorCode::BadRequest, format!("no frame for {} s", timeout.as_secs()));
                let _ = ws.send(encode(&ServerMessage::Error(e))).await;
                close(&mut ws, 4408, "keepalive timeout").await;
                leave_reason = LeaveReason::Timeout;
                break;
            }
        }
    }
    shared.send(shard, ShardMsg::Command(Command::Leave { pid, reason: leave_reason }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_a_burst_then_the_rate() {
        let mut r = RateLimit::new(5);
        let t0 = Instant::now();
        let burst = (0..20).filter(|_| r.allow(t0)).count();
        assert_eq!(burst, 10, "burst is twice the rate");
        assert!(!r.allow(t0));
        assert!(r.allow(t0 + Duration::from_millis(200)), "one token per 1/rate seconds");
        assert!(!r.allow(t0 + Duration::from_millis(210)));
    }
}
