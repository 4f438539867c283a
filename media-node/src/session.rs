//! One signaling WebSocket: waits for `join`, then relays between the client and its
//! room's shard, enforcing frame size, message rate and keepalive.
//!
//! A client that does not read never costs more than its bounded queue: the shard only
//! `try_send`s into it ([`Outbox`]), a full queue closes the session with 1008, and every
//! socket send gives up after `--send-timeout-seconds`. Closing sends the close frame and
//! then reads on until the client's reply ([`LINGER`]), so the socket ends with a FIN and
//! the client sees its close code instead of a reset.
//!
//! A socket lost without a close frame (or silent past the keepalive) does not make its
//! participant leave: the engine holds it for the resume window ([`Command::Detach`]). A
//! session may start with `resume` instead of `join`: its own access token was checked at
//! the upgrade, the engine checks the reconnect token and that the identity and room
//! match, and on success the session speaks for the participant it took back
//! ([`SessionOut::Adopt`]). Each connection gets a fresh reconnect token from a CSPRNG.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::StreamExt;
use switchyard_api::rate::TokenBucket;
use switchyard_api::signal::{ClientMessage, ErrorCode, ErrorMessage, LeaveReason, Ping, ServerMessage};
use switchyard_api::token::Claims;
use tokio::sync::{Notify, mpsc};

use crate::cluster::Route;
use crate::engine::{Command, JoinArgs, Pid, ResumeArgs, RoomSettings};
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

/// How long a closing session reads on after its close frame, waiting for the client's.
const LINGER: Duration = Duration::from_secs(2);

/// The shard's end of a session's outbound queue. Bounded, and never blocks the shard: a
/// message that does not fit marks the session too slow, and the session closes it (1008).
#[derive(Debug)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<SessionOut>,
    overflow: Arc<Notify>,
}

impl Outbox {
    /// Queue `out`, or drop it and signal the overflow.
    pub(crate) fn send(&self, out: SessionOut) -> Result<(), SessionOut> {
        self.tx.try_send(out).map_err(|e| {
            if let mpsc::error::TrySendError::Full(_) = &e {
                self.overflow.notify_one();
            }
            e.into_inner()
        })
    }
}

/// A session's outbound queue of `capacity` messages: the shard's end, the session's end,
/// and the overflow signal.
pub(crate) fn outbox(capacity: usize) -> (Outbox, mpsc::Receiver<SessionOut>, Arc<Notify>) {
    let (tx, rx) = mpsc::channel(capacity);
    let overflow = Arc::new(Notify::new());
    (Outbox { tx, overflow: overflow.clone() }, rx, overflow)
}

/// The socket did not take a frame in time, or is gone.
#[derive(Debug, PartialEq, Eq)]
enum SendError {
    Stuck,
    Gone,
}

/// Send one frame, giving up after `timeout`: a client that does not read must not hold
/// its session (and its keepalive) in a send forever.
async fn send(ws: &mut WebSocket, frame: Message, timeout: Duration) -> Result<(), SendError> {
    match tokio::time::timeout(timeout, ws.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(SendError::Gone),
        Err(_) => Err(SendError::Stuck),
    }
}

fn send_timeout(shared: &Shared) -> Duration {
    Duration::from_secs(shared.cfg.send_timeout_seconds)
}

/// Read and discard until the client's close frame (or the end of the socket, or
/// [`LINGER`]). Closing a TCP socket with unread data in its receive buffer sends a reset,
/// which can destroy what the client has not read yet: our last messages and close frame.
async fn linger(ws: &mut WebSocket) {
    let _ = tokio::time::timeout(LINGER, async { while let Some(Ok(_)) = ws.next().await {} }).await;
}

/// Send a close frame, then [`linger`] for the client's.
async fn close(ws: &mut WebSocket, shared: &Shared, code: u16, reason: &str) {
    let frame = CloseFrame { code, reason: Utf8Bytes::from(reason.chars().take(120).collect::<String>()) };
    if send(ws, Message::Close(Some(frame)), send_timeout(shared)).await.is_ok() {
        linger(ws).await;
    }
}

/// Send an error message (counted by code).
async fn error(ws: &mut WebSocket, shared: &Shared, e: ErrorMessage) -> Result<(), SendError> {
    shared.metrics.signal_errors.get_or_create(&crate::metrics::Code { code: e.code.as_str() }).inc();
    send(ws, encode(&ServerMessage::Error(e)), send_timeout(shared)).await
}

/// Send an error, and close if it is fatal.
async fn fail(ws: &mut WebSocket, shared: &Shared, e: ErrorMessage) {
    let code = e.code;
    let reason = e.message.clone();
    if error(ws, shared, e).await.is_ok() && code.is_fatal() {
        close(ws, shared, code.close_code(), &reason).await;
    }
}

/// Send a final error and close, fatal or not (routing refusals end the socket).
pub(crate) async fn refuse(ws: &mut WebSocket, shared: &Shared, e: ErrorMessage) {
    let code = e.code;
    let reason = e.message.clone();
    if error(ws, shared, e).await.is_ok() {
        close(ws, shared, code.close_code(), &reason).await;
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
        sid: None,
    };
    let Some((ws, settings)) = route(ws, &shared, &claims, &room, req, defaults).await else { return };
    serve(ws, shared, claims, room, settings).await;
}

/// How a joined session ends, once its participant has been told to leave.
enum End {
    /// Send a close frame with this code and reason, then linger for the client's.
    Close(u16, String),
    /// The client closed: answer it and linger.
    Linger,
    /// The socket is gone or stuck: drop it.
    Drop,
}

async fn serve(mut ws: WebSocket, shared: Arc<Shared>, claims: Claims, room: String, settings: RoomSettings) {
    let max = shared.cfg.max_message_bytes;
    let send_timeout = send_timeout(&shared);
    let mut limit = RateLimit::new(shared.cfg.messages_per_second);
    // Wait for join (or resume).
    let first = loop {
        let frame = match tokio::time::timeout(JOIN_TIMEOUT, ws.next()).await {
            Err(_) => {
                let e = ErrorMessage::new(ErrorCode::BadRequest, "no join within 10 s");
                if error(&mut ws, &shared, e).await.is_ok() {
                    close(&mut ws, &shared, 4408, "no join").await;
                }
                return;
            }
            Ok(None) | Ok(Some(Err(_))) => return,
            Ok(Some(Ok(f))) => f,
        };
        if !limit.allow(Instant::now()) {
            let e = ErrorMessage::new(
                ErrorCode::RateLimited,
                format!("more than {} messages per second", shared.cfg.messages_per_second),
            );
            return fail(&mut ws, &shared, e).await;
        }
        match parse(frame, max) {
            Ok(Some(ClientMessage::Join(j))) => break First::Join(j),
            Ok(Some(ClientMessage::Resume(r))) => break First::Resume(r),
            Ok(Some(ClientMessage::Ping(p))) => {
                if send(&mut ws, encode(&ServerMessage::Pong(p)), send_timeout).await.is_err() {
                    return;
                }
            }
            Ok(Some(other)) => {
                let mut e = ErrorMessage::new(ErrorCode::NotJoined, "send join first");
                e.request_type = Some(other.type_name().into());
                if error(&mut ws, &shared, e).await.is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(Some(e)) => {
                let fatal = e.code.is_fatal();
                fail(&mut ws, &shared, e).await;
                if fatal {
                    return;
                }
            }
            Err(None) => return linger(&mut ws).await,
        }
    };
    let started = Instant::now();
    // A session's own id; a resumed session speaks for the participant it took back.
    let session = shared.next_pid();
    let pid = session;
    let (tx, rx, overflow) = outbox(shared.cfg.session_queue);
    let cfg = &shared.cfg;
    // A fresh reconnect token per connection (CSPRNG): the one a resume presents is spent.
    let reconnect_token = switchyard_api::random::token(&mut rand::rng(), 32);
    let join = match first {
        First::Join(join) => join,
        First::Resume(r) => {
            // The socket's own access token was checked before the upgrade; the engine
            // checks it names the held participant's identity, in this room.
            let Some(shard) = shared.router.open_room(&room) else {
                shared.metrics.resumes.get_or_create(&crate::metrics::Outcome { result: "unknown_session" }).inc();
                let mut e = ErrorMessage::new(ErrorCode::ResumeFailed, "no session to resume here; join again");
                e.request_type = Some("resume".into());
                return fail(&mut ws, &shared, e).await;
            };
            shared.send(shard, ShardMsg::Register(session, tx));
            let args = ResumeArgs {
                session,
                room: room.clone(),
                ice_servers: shared.ice_servers(&claims.sub),
                participant_sid: r.participant_sid,
                reconnect_token: r.reconnect_token,
                next_token: reconnect_token,
                claims,
            };
            shared.send(shard, ShardMsg::Command(Command::Resume(Box::new(args))));
            return attached(ws, &shared, shard, session, pid, rx, overflow, limit, started).await;
        }
    };
    if join.protocol_version != switchyard_api::signal::PROTOCOL_VERSION {
        let e = ErrorMessage::new(
            ErrorCode::BadRequest,
            format!("protocol version {} is not supported (this server speaks 1)", join.protocol_version),
        );
        if error(&mut ws, &shared, e).await.is_ok() {
            close(&mut ws, &shared, 4400, "unsupported protocol version").await;
        }
        return;
    }

    let shard = match shared.shard_for(&room) {
        Ok(shard) => shard,
        Err(e) => return refuse(&mut ws, &shared, e).await,
    };
    shared.send(shard, ShardMsg::Register(pid, tx));
    let args = JoinArgs {
        pid,
        room: room.clone(),
        ice_servers: shared.ice_servers(&claims.sub),
        may_create: cfg.auto_create || claims.grants.room_create,
        settings,
        auto_subscribe: join.auto_subscribe,
        reconnect_token,
        claims,
    };
    shared.send(shard, ShardMsg::Command(Command::Join(Box::new(args))));
    attached(ws, &shared, shard, session, pid, rx, overflow, limit, started).await;
}

/// The first message of a session.
enum First {
    Join(switchyard_api::signal::JoinRequest),
    Resume(switchyard_api::signal::ResumeRequest),
}

/// How a joined session's participant goes when the session ends.
enum Gone {
    /// It leaves now.
    Leave(LeaveReason),
    /// Its socket is lost: it is held for a resume.
    Detach,
}

/// Relay between a joined (or resuming) session's socket and its shard until either ends.
#[allow(clippy::too_many_arguments)]
async fn attached(
    mut ws: WebSocket,
    shared: &Arc<Shared>,
    shard: usize,
    session: Pid,
    mut pid: Pid,
    mut rx: mpsc::Receiver<SessionOut>,
    overflow: Arc<Notify>,
    mut limit: RateLimit,
    started: Instant,
) {
    let shared = &**shared;
    let cfg = &shared.cfg;
    let max = cfg.max_message_bytes;
    let send_timeout = send_timeout(shared);

    let timeout = Duration::from_secs(u64::from(cfg.ping_timeout_seconds));
    let mut last_frame = Instant::now();
    let mut joined = false;
    let mut last_fatal: Option<ErrorCode> = None;
    let slow = |reason: &'static str| {
        shared.metrics.slow_clients.get_or_create(&crate::metrics::Reason { reason }).inc();
    };
    let stuck = |e: SendError| {
        if e == SendError::Stuck {
            slow("send_timeout");
        }
        (End::Drop, Gone::Detach)
    };
    // Every send in here gives up after the send timeout, or when the keepalive runs out
    // if that comes first: a client that neither reads nor sends is gone on time.
    let budget =
        |last_frame: Instant| send_timeout.min((last_frame + timeout).saturating_duration_since(Instant::now()));
    let (end, gone) = loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(SessionOut::Msg(msg)) => {
                    if let ServerMessage::Resumed(_) = &*msg {
                        joined = true;
                    }
                    if let ServerMessage::Joined(_) = &*msg && !joined {
                        joined = true;
                        shared.metrics.join_seconds.observe(started.elapsed().as_secs_f64());
                    }
                    if let ServerMessage::Error(e) = &*msg && e.code.is_fatal() {
                        last_fatal = Some(e.code);
                    }
                    if let Err(e) = send(&mut ws, encode(&msg), budget(last_frame)).await {
                        break stuck(e);
                    }
                }
                Some(SessionOut::Adopt(p)) => pid = p,
                Some(SessionOut::Close) | None => {
                    // The engine has removed the participant already.
                    let code = last_fatal.map(ErrorCode::close_code).unwrap_or(1000);
                    close(&mut ws, shared, code, "session ended").await;
                    return;
                }
            },
            _ = overflow.notified() => {
                slow("queue_full");
                let reason = format!("cannot keep up: more than {} messages queued", cfg.session_queue);
                break (End::Close(1008, reason), Gone::Leave(LeaveReason::Timeout));
            }
            frame = ws.next() => {
                let frame = match frame {
                    Some(Ok(f)) => f,
                    _ => break (End::Drop, Gone::Detach),
                };
                last_frame = Instant::now();
                if !limit.allow(last_frame) {
                    let e = ErrorMessage::new(ErrorCode::RateLimited, format!("more than {} messages per second", cfg.messages_per_second));
                    let reason = e.message.clone();
                    if let Err(e) = error(&mut ws, shared, e).await {
                        break stuck(e);
                    }
                    break (End::Close(ErrorCode::RateLimited.close_code(), reason), Gone::Leave(LeaveReason::ClientRequest));
                }
                match parse(frame, max) {
                    Ok(Some(ClientMessage::Ping(p))) => {
                        let pong = ServerMessage::Pong(Ping { timestamp_ms: p.timestamp_ms, rtt_ms: None });
                        if let Err(e) = send(&mut ws, encode(&pong), budget(last_frame)).await {
                            break stuck(e);
                        }
                    }
                    Ok(Some(ClientMessage::Pong(_))) | Ok(None) => {}
                    Ok(Some(ClientMessage::Join(_) | ClientMessage::Resume(_))) => {
                        let e = ErrorMessage::new(ErrorCode::AlreadyJoined, "this session has joined already");
                        if let Err(e) = error(&mut ws, shared, e).await {
                            break stuck(e);
                        }
                    }
                    Ok(Some(ClientMessage::Leave(_))) => break (End::Close(1000, "left".into()), Gone::Leave(LeaveReason::ClientRequest)),
                    Ok(Some(msg)) => shared.send(shard, ShardMsg::Command(Command::Client { pid, msg })),
                    Err(Some(e)) => {
                        let (fatal, code, reason) = (e.code.is_fatal(), e.code.close_code(), e.message.clone());
                        if let Err(e) = error(&mut ws, shared, e).await {
                            break stuck(e);
                        }
                        if fatal {
                            break (End::Close(code, reason), Gone::Leave(LeaveReason::ClientRequest));
                        }
                    }
                    Err(None) => break (End::Linger, Gone::Leave(LeaveReason::ClientRequest)),
                }
            }
            _ = tokio::time::sleep_until((last_frame + timeout).into()) => {
                let e = ErrorMessage::new(ErrorCode::BadRequest, format!("no frame for {} s", timeout.as_secs()));
                if let Err(e) = send(&mut ws, encode(&ServerMessage::Error(e)), send_timeout).await {
                    break stuck(e);
                }
                break (End::Close(4408, "keepalive timeout".into()), Gone::Detach);
            }
        }
    };
    // The participant leaves first; then the socket is closed (which may take a moment).
    let cmd = match gone {
        Gone::Leave(reason) => Command::Leave { pid, session, reason },
        Gone::Detach => Command::Detach { pid, session },
    };
    shared.send(shard, ShardMsg::Command(cmd));
    match end {
        End::Close(code, reason) => close(&mut ws, shared, code, &reason).await,
        End::Linger => linger(&mut ws).await,
        End::Drop => {}
    }
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
