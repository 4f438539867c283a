//! HTTP: the `/rtc` WebSocket (token verified before the upgrade completes), the Room
//! service (`/api/v1`, in `room_api`), health,
//! the internal API the operator calls, and the demo page.
//!
//! Both ports are served by one accept loop ([`run`]): every connection must send its
//! request headers within `--header-timeout-seconds`, and on the signaling port a
//! [`Gate`] caps open connections in total and per client address. A connection's slot
//! travels with its socket, so an upgraded WebSocket holds it until the session ends.
//! A trusted proxy's connection is counted in total only; the WebSocket it forwards takes
//! a per-address slot for the client it names ([`crate::forwarded`]).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Path, Query, RawQuery, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use switchyard_api::token::Claims;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::engine::Command;
use crate::metrics::{Metrics, Reason};
use crate::node::{ShardMsg, Shared, drain, unix_now};

// The demo app and the client SDK (`@switchyard/client`) as `switchyard dev` serves them:
// bundles checked in under sdk/demo/assets (a test in sdk/client-js fails when stale).
const DEMO_PAGE: &str = include_str!("../../sdk/demo/index.html");
const DEMO_APP: &str = include_str!("../../sdk/demo/assets/app.js");
const SDK_JS: &str = include_str!("../../sdk/demo/assets/switchyard.js");

/// The public signaling server: `/rtc`, health, and the demo page in dev mode; `/metrics`
/// only with `--public-metrics`.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let mut app = axum::Router::new()
        .route("/rtc", get(rtc))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(crate::room_api::routes());
    if shared.cfg.public_metrics {
        app = app.route("/metrics", get(metrics));
    }
    if shared.cfg.demo {
        app = app
            .route("/", get(|| async { Html(DEMO_PAGE) }))
            .route("/assets/app.js", get(|| async { javascript(DEMO_APP) }))
            .route("/switchyard.js", get(|| async { javascript(SDK_JS) }))
            .route("/dev/token", get(dev_token));
    }
    let gate = Gate::new(
        Limits { total: shared.cfg.max_connections, per_ip: shared.cfg.max_connections_per_ip },
        &shared.metrics,
        Box::new({
            let proxies = crate::forwarded::TrustedProxies::new(shared.cfg.trusted_proxies.clone());
            let cluster = shared.cluster.clone();
            move |ip| proxies.contains(ip) || cluster.as_ref().is_some_and(|c| c.is_fleet_pod(ip))
        }),
    );
    let timeout = Duration::from_secs(shared.cfg.header_timeout_seconds);
    let metrics = shared.metrics.http_refused.clone();
    tokio::spawn(trim_after_bursts(Arc::downgrade(&gate)));
    run(listener, app.with_state(shared), shutdown, Some(gate), timeout, metrics).await;
}

/// The admin server (never public): health, metrics, status, drain and room close, for
/// kubelet probes, Prometheus and the operator.
pub(crate) async fn serve_admin(listener: TcpListener, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/internal/status", get(status))
        .route("/internal/rooms", get(rooms))
        .route("/drain", post(drain_node))
        .route("/internal/drain", post(drain_node))
        .route("/internal/rooms/{name}/close", post(close_room))
        .route("/internal/rooms/{name}/relay", post(crate::relay::attach))
        .route("/internal/relay", get(crate::relay::accept));
    let timeout = Duration::from_secs(shared.cfg.header_timeout_seconds);
    // The admin port's own refusals are not counted: the metric is about the public port.
    let uncounted = prometheus_client::metrics::family::Family::default();
    run(listener, app.with_state(shared), shutdown, None, timeout, uncounted).await;
}

/// Connection limits of the signaling port; 0 means no limit.
#[derive(Debug, Clone, Copy)]
struct Limits {
    total: usize,
    per_ip: usize,
}

/// Open connections, in total and per client key.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
    trimmer: crate::trim::Trimmer,
}

/// Whether one more connection fits: in total (`total`), and from `client` (when known);
/// the refusal names the limit.
fn admit(open: &Open, total: bool, client: Option<IpAddr>, limits: Limits) -> Result<(), &'static str> {
    if total && limits.total > 0 && open.total >= limits.total {
        return Err("total_limit");
    }
    if let Some(client) = client
        && limits.per_ip > 0
        && open.by_client.get(&client).copied().unwrap_or(0) >= limits.per_ip
    {
        return Err("per_ip_limit");
    }
    Ok(())
}

/// What counts as one client: an IPv4 address (IPv4-mapped IPv6 included), or an IPv6
/// /64, since one IPv6 host commonly holds a whole /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

/// Counts the signaling port's open connections against its [`Limits`].
struct Gate {
    limits: Limits,
    open: Mutex<Open>,
    gauge: prometheus_client::metrics::gauge::Gauge,
    /// Whether a peer is a trusted proxy ([`crate::forwarded`]).
    trusted: Box<dyn Fn(IpAddr) -> bool + Send + Sync>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("limits", &self.limits).field("open", &self.open).finish_non_exhaustive()
    }
}

impl Gate {
    fn new(limits: Limits, metrics: &Metrics, trusted: Box<dyn Fn(IpAddr) -> bool + Send + Sync>) -> Arc<Self> {
        Arc::new(Self { limits, open: Mutex::new(Open::default()), gauge: metrics.http_connections.clone(), trusted })
    }

    /// A new connection from `ip`: counted in total, and per address unless it is a
    /// trusted proxy's.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let client = (!(self.trusted)(ip)).then(|| client_key(ip));
        self.take(true, client)
    }

    /// A WebSocket a trusted proxy forwards for `client`: one more per-address slot (its
    /// connection has its slot in the total already).
    fn enter_forwarded(self: &Arc<Self>, client: IpAddr) -> Result<Slot, &'static str> {
        self.take(false, Some(client_key(client)))
    }

    fn take(self: &Arc<Self>, total: bool, client: Option<IpAddr>) -> Result<Slot, &'static str> {
        let mut open = self.open.lock().expect("connection counts");
        admit(&open, total, client, self.limits)?;
        if total {
            open.total += 1;
            let n = open.total;
            open.trimmer.opened(n);
            self.gauge.set(n as i64);
        }
        if let Some(c) = client {
            *open.by_client.entry(c).or_default() += 1;
        }
        Ok(Slot { gate: self.clone(), total, client })
    }
}

/// Give the memory of many closed connections back ([`crate::trim`]), for as long as the
/// gate lives.
async fn trim_after_bursts(gate: std::sync::Weak<Gate>) {
    loop {
        tokio::time::sleep(crate::trim::EVERY).await;
        let Some(gate) = gate.upgrade() else { return };
        let due = {
            let mut open = gate.open.lock().expect("connection counts");
            let n = open.total;
            open.trimmer.look(n)
        };
        drop(gate);
        if due {
            // It walks the whole heap: not on a runtime thread.
            let _ = tokio::task::spawn_blocking(crate::trim::trim).await;
        }
    }
}

/// One admitted connection (or forwarded WebSocket); released when dropped.
#[derive(Debug)]
struct Slot {
    gate: Arc<Gate>,
    total: bool,
    client: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock().expect("connection counts");
        if self.total {
            open.total = open.total.saturating_sub(1);
            self.gate.gauge.set(open.total as i64);
        }
        if let Some(client) = self.client
            && let Some(n) = open.by_client.get_mut(&client)
        {
            *n -= 1;
            if *n == 0 {
                // Forget the address: the map never holds more entries than open connections.
                open.by_client.remove(&client);
            }
        }
    }
}

/// Who is at the other end of a signaling connection, as its requests see it.
#[derive(Clone, Debug)]
struct Peer {
    ip: IpAddr,
    /// Set for a trusted proxy's connection: the gate that counts who it forwards.
    forwarding: Option<Arc<Gate>>,
}

/// A TCP stream holding its [`Slot`] (if counted) for as long as it lives.
struct Counted {
    stream: TcpStream,
    _slot: Option<Slot>,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The answer to a connection over a limit, written before it is closed.
fn refusal(reason: &str) -> &'static [u8] {
    if reason == "per_ip_limit" {
        b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\nconnection: close\r\nretry-after: 1\r\n\r\n"
    } else {
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\nretry-after: 1\r\n\r\n"
    }
}

/// Accept connections and serve HTTP/1.1 (with upgrades) on each until `shutdown`; then
/// finish the requests in flight. Upgraded WebSockets go on: their sessions end them.
async fn run(
    listener: TcpListener,
    app: axum::Router,
    mut shutdown: watch::Receiver<bool>,
    gate: Option<Arc<Gate>>,
    header_timeout: Duration,
    refused: prometheus_client::metrics::family::Family<Reason, prometheus_client::metrics::counter::Counter>,
) {
    // Every connection task holds a clone of `live`; `all_done` resolves when none is left.
    let (all_done, live) = watch::channel(());
    let (stop, stopping) = watch::channel(false);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, most likely: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match &gate {
            Some(gate) => match gate.enter(peer.ip()) {
                Ok(slot) => Some(slot),
                Err(reason) => {
                    refused.get_or_create(&Reason { reason }).inc();
                    let _ = stream.try_write(refusal(reason));
                    continue;
                }
            },
            None => None,
        };
        // A connection not counted per address is a trusted proxy's.
        let forwarding = gate.clone().filter(|_| slot.as_ref().is_some_and(|s| s.client.is_none()));
        let who = Peer { ip: peer.ip(), forwarding };
        let io = TokioIo::new(Counted { stream, _slot: slot });
        let service = TowerToHyperService::new(tower_layer::Layer::layer(&Extension(who), app.clone()));
        let mut stopping = stopping.clone();
        let live = live.clone();
        let refused = refused.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
            let conn = builder.serve_connection(io, service).with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = async { let _ = stopping.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                if e.is_timeout() {
                    refused.get_or_create(&Reason { reason: "header_timeout" }).inc();
                }
                tracing::debug!(error = %e, %peer, "HTTP connection");
            }
            drop(live);
        });
    }
    let _ = stop.send(true);
    drop(live);
    all_done.closed().await;
}

fn javascript(body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], body)
}

/// Demo mode only: a join token for `?room=&identity=`, signed with the first API key,
/// so the demo page works without an app backend. Never enabled outside `switchyard dev`.
/// A page served from another port of this machine (an app's own dev server) may fetch it
/// too: the response allows a loopback `Origin`, and no other.
async fn dev_token(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let room = params.get("room").cloned().unwrap_or_else(|| "demo".into());
    let identity = params.get("identity").cloned().unwrap_or_else(|| "guest".into());
    let (key, secret) = &shared.cfg.api_keys[0];
    let claims =
        Claims::new(key.clone(), identity, unix_now(), 6 * 3600).with_grants(switchyard_api::token::Grants::join(room));
    let mut response = match switchyard_api::token::mint(&claims, secret) {
        Ok(t) => t.into_response(),
        Err(e @ switchyard_api::Error::InvalidName(_)) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    if let Some(origin) = headers.get(header::ORIGIN).filter(|o| o.to_str().is_ok_and(is_loopback_origin)) {
        response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        response.headers_mut().insert(header::VARY, header::ORIGIN.as_str().parse().expect("literal"));
    }
    response
}

/// `http(s)://localhost[:port]`, `http(s)://127.x.y.z[:port]` or `http(s)://[::1][:port]`.
fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) else {
        return false;
    };
    let host = match rest.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, port)) if port.is_empty() || port.strip_prefix(':').is_some_and(is_port) => h,
            _ => return false,
        },
        None => match rest.split_once(':') {
            Some((h, port)) if is_port(port) => h,
            Some(_) => return false,
            None => rest,
        },
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A refusal before the upgrade: the status, and a JSON body with a stable code.
fn refuse(shared: &Shared, status: StatusCode, code: &'static str, message: String) -> Response {
    shared.metrics.connections.get_or_create(&crate::metrics::Outcome { result: code }).inc();
    let body = serde_json::json!({ "code": code, "message": message });
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

async fn rtc(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
    RawQuery(query): RawQuery,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // Behind a trusted proxy the client is who it names, and takes that address's slot.
    let mut client = peer.as_ref().map(|p| p.ip);
    let mut forwarded_slot = None;
    if let Some(Extension(Peer { forwarding: Some(gate), .. })) = &peer {
        let values = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        match crate::forwarded::forwarded_client(values, |ip| (gate.trusted)(ip)) {
            Ok(Some(ip)) => match gate.enter_forwarded(ip) {
                Ok(slot) => (client, forwarded_slot) = (Some(ip), Some(slot)),
                Err(reason) => {
                    shared.metrics.http_refused.get_or_create(&Reason { reason }).inc();
                    let message = format!("more than {} connections from {ip}", gate.limits.per_ip);
                    let mut r = refuse(&shared, StatusCode::TOO_MANY_REQUESTS, "too_many_connections", message);
                    r.headers_mut().insert(header::RETRY_AFTER, "1".parse().expect("literal"));
                    return r;
                }
            },
            Ok(None) => client = None,
            Err(e) => return refuse(&shared, StatusCode::BAD_REQUEST, "bad_forwarded_for", e),
        }
    }
    let token = params
        .get("access_token")
        .cloned()
        .or_else(|| headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer));
    let Some(token) = token else {
        return refuse(
            &shared,
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "pass ?access_token= or a Bearer token".into(),
        );
    };
    let claims: Claims = match shared.verifier.verify(&token, unix_now()) {
        Ok(c) => c,
        Err(e) => return refuse(&shared, StatusCode::UNAUTHORIZED, e.code(), e.to_string()),
    };
    let Some(room) = claims.grants.room.clone() else {
        return refuse(&shared, StatusCode::FORBIDDEN, "missing_grant", "the token names no room".into());
    };
    // A client may name the room it expects; a token for another room is refused.
    let requested = params.get("room").cloned().unwrap_or_else(|| room.clone());
    if let Err(e) = switchyard_api::names::check_room_name(&requested) {
        return refuse(&shared, StatusCode::BAD_REQUEST, "invalid_room_name", e.to_string());
    }
    if let Err(e) = claims.authorize_join(&requested) {
        return refuse(&shared, StatusCode::FORBIDDEN, e.code(), e.to_string());
    }
    if shared.draining.load(Ordering::Relaxed) {
        let mut r = refuse(&shared, StatusCode::SERVICE_UNAVAILABLE, "node_draining", "this node is draining".into());
        r.headers_mut().insert(header::RETRY_AFTER, "1".parse().expect("literal"));
        return r;
    }
    shared.metrics.connections.get_or_create(&crate::metrics::Outcome { result: "ok" }).inc();
    let req = crate::session::Request {
        upstream: crate::proxy::Upstream { query, authorization: headers.get(header::AUTHORIZATION).cloned(), client },
        forwarded: headers.contains_key(crate::cluster::FORWARDED_HEADER),
    };
    // Frames beyond 4× the protocol limit are cut by the WebSocket layer; the session
    // answers those in between with a message_too_large error and close code 1009.
    let max = shared.cfg.max_message_bytes;
    ws.max_message_size(max * 4).max_frame_size(max * 4).on_upgrade(move |socket| async move {
        crate::session::run(socket, shared, claims, room, req).await;
        drop(forwarded_slot);
    })
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is matched without
/// regard to case (RFC 9110 §11.1).
pub(crate) fn bearer(value: &str) -> Option<String> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else if shared.cluster.as_ref().is_some_and(|c| !c.synced()) {
        (StatusCode::SERVICE_UNAVAILABLE, "listing the cluster's rooms").into_response()
    } else {
        "ready".into_response()
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], shared.metrics.encode())
        .into_response()
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<switchyard_api::node::MediaNodeStatus> {
    Json(shared.status().await)
}

async fn rooms(State(shared): State<Arc<Shared>>) -> Json<Vec<crate::engine::RoomReport>> {
    Json(shared.rooms().await)
}

async fn drain_node(State(shared): State<Arc<Shared>>) -> StatusCode {
    drain(&shared);
    StatusCode::ACCEPTED
}

async fn close_room(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> StatusCode {
    match shared.shard_of_open_room(&name) {
        Some(shard) => {
            shared.send(shard, ShardMsg::Command(Command::CloseRoom { room: name }));
            StatusCode::ACCEPTED
        }
        None => StatusCode::NOT_FOUND,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for v in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR   abc ", " Bearer abc"] {
            assert_eq!(bearer(v).as_deref(), Some("abc"), "{v:?}");
        }
        for v in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", "abc"] {
            assert_eq!(bearer(v), None, "{v:?}");
        }
    }

    #[test]
    fn dev_tokens_are_shared_only_with_pages_of_this_machine() {
        for o in [
            "http://localhost:5173",
            "http://localhost",
            "https://127.0.0.1:8443",
            "http://127.1.2.3:80",
            "http://[::1]:3000",
            "http://[::1]",
        ] {
            assert!(is_loopback_origin(o), "{o}");
        }
        for o in [
            "http://localhost.evil.example",
            "http://evil.example",
            "http://192.168.1.5:5173",
            "http://localhost:5173@evil.example",
            "http://localhost:abc",
            "http://[::1]x",
            "file://localhost",
            "null",
        ] {
            assert!(!is_loopback_origin(o), "{o}");
        }
    }

    #[test]
    fn limits_count_in_total_and_per_client() {
        let limits = Limits { total: 3, per_ip: 2 };
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let mut open = Open::default();
        for (client, want) in [(a, Ok(())), (a, Ok(())), (a, Err("per_ip_limit")), (b, Ok(())), (b, Err("total_limit"))]
        {
            assert_eq!(admit(&open, true, Some(client), limits), want, "{client}");
            if want.is_ok() {
                open.total += 1;
                *open.by_client.entry(client).or_default() += 1;
            }
        }
        assert_eq!(admit(&open, true, Some(b), Limits { total: 0, per_ip: 0 }), Ok(()), "0 means no limit");
        assert_eq!(admit(&open, false, Some(b), limits), Ok(()), "a forwarded WebSocket is not a new connection");
        assert_eq!(admit(&open, false, Some(a), limits), Err("per_ip_limit"));
        assert_eq!(admit(&open, true, None, limits), Err("total_limit"), "a trusted proxy's connection");
    }

    #[test]
    fn a_trusted_proxy_is_counted_in_total_and_its_clients_per_address() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let gate = Gate::new(Limits { total: 10, per_ip: 2 }, &Metrics::new(), Box::new(move |ip| ip == proxy));
        let conns: Vec<Slot> = (0..5).map(|_| gate.enter(proxy).expect("no per-address cap for the proxy")).collect();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let a = gate.enter_forwarded(client).unwrap();
        let _b = gate.enter_forwarded(client).unwrap();
        assert_eq!(gate.enter_forwarded(client).unwrap_err(), "per_ip_limit", "the client's third WebSocket");
        assert!(gate.enter_forwarded("203.0.113.8".parse().unwrap()).is_ok(), "another client");
        drop(a);
        assert!(gate.enter_forwarded(client).is_ok(), "a slot comes back when its session ends");
        let direct = gate.enter(client).unwrap();
        assert_eq!(gate.enter(client).unwrap_err(), "per_ip_limit", "direct and forwarded share the address's slots");
        assert_eq!(gate.open.lock().unwrap().total, 6);
        drop((conns, direct));
        assert_eq!(gate.open.lock().unwrap().total, 0);
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::2"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
    }
}
