//! The admin HTTP API on its own port: metrics, health, status, drain.
//! Kept off the TURN listeners so probes and scrapes never compete with media.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::server::Control;

pub(crate) async fn serve(listener: TcpListener, control: Arc<Control>) {
    let mut stop = control.shutdown_signal();
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/internal/status", get(status))
        .route("/drain", post(drain))
        .with_state(control);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin server failed");
    }
}

async fn metrics(State(c): State<Arc<Control>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], c.shared.metrics.encode())
        .into_response()
}

async fn readyz(State(c): State<Arc<Control>>) -> Response {
    if c.status().draining {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else {
        (StatusCode::OK, "ready").into_response()
    }
}

async fn status(State(c): State<Arc<Control>>) -> Response {
    axum::Json(c.status()).into_response()
}

async fn drain(State(c): State<Arc<Control>>) -> Response {
    c.drain(false);
    (StatusCode::ACCEPTED, axum::Json(c.status())).into_response()
}
