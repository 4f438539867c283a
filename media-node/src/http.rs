//! HTTP: the `/rtc` WebSocket (token verified before the upgrade completes), health,
//! metrics, the internal API the operator calls, and the demo page.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, Query, RawQuery, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use switchyard_api::token::Claims;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::engine::Command;
use crate::node::{ShardMsg, Shared, drain, unix_now};

const DEMO_PAGE: &str = include_str!("../../sdk/js/demo.html");
const SDK_JS: &str = include_str!("../../sdk/js/switchyard.js");

/// The public signaling server: `/rtc`, health, metrics, and the demo page in dev mode.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let mut app = axum::Router::new()
        .route("/rtc", get(rtc))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if shared.cfg.demo {
        app = app
            .route("/", get(|| async { Html(DEMO_PAGE) }))
            .route("/switchyard.js", get(sdk))
            .route("/dev/token", get(dev_token));
    }
    run(listener, app.with_state(shared), shutdown).await;
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
        .route("/internal/rooms/{name}/close", post(close_room));
    run(listener, app.with_state(shared), shutdown).await;
}

async fn run(listener: TcpListener, app: axum::Router, mut shutdown: watch::Receiver<bool>) {
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}

async fn sdk() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SDK_JS)
}

/// Demo mode only: a join token for `?room=&identity=`, signed with the first API key,
/// so the demo page works without an app backend. Never enabled outside `switchyard dev`.
async fn dev_token(State(shared): State<Arc<Shared>>, Query(params): Query<HashMap<String, String>>) -> Response {
    let room = params.get("room").cloned().unwrap_or_else(|| "demo".into());
    let identity = params.get("identity").cloned().unwrap_or_else(|| "guest".into());
    let (key, secret) = &shared.cfg.api_keys[0];
    let claims =
        Claims::new(key.clone(), identity, unix_now(), 6 * 3600).with_grants(switchyard_api::token::Grants::join(room));
    match switchyard_api::token::mint(&claims, secret) {
        Ok(t) => t.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
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
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let token = params.get("access_token").cloned().or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
    });
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
        upstream: crate::proxy::Upstream { query, authorization: headers.get(header::AUTHORIZATION).cloned() },
        forwarded: headers.contains_key(crate::cluster::FORWARDED_HEADER),
    };
    // Frames beyond 4× the protocol limit are cut by the WebSocket layer; the session
    // answers those in between with a message_too_large error and close code 1009.
    let max = shared.cfg.max_message_bytes;
    ws.max_message_size(max * 4)
        .max_frame_size(max * 4)
        .on_upgrade(move |socket| crate::session::run(socket, shared, claims, room, req))
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
