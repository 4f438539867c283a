//! Kubernetes mode: relay a signaling WebSocket to the node hosting its room.
//!
//! Frames pass through one at a time in both directions (nothing is buffered beyond the
//! frame in hand); each hop answers its own WebSocket pings. The hosting node sees the
//! client's own token and query, plus [`FORWARDED_HEADER`] so it never proxies again.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::http::HeaderValue;
use futures_util::{SinkExt, StreamExt};
use switchyard_api::signal::{ErrorCode, ErrorMessage, ServerMessage};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::cluster::FORWARDED_HEADER;
use crate::metrics::Outcome;
use crate::node::Shared;

/// How long connecting to the hosting node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What of the client's request is passed on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Upstream {
    /// The raw query string (`access_token=…&room=…`).
    pub(crate) query: Option<String>,
    /// The client's `Authorization` header.
    pub(crate) authorization: Option<HeaderValue>,
}

fn to_upstream(m: Message) -> Option<tungstenite::Message> {
    Some(match m {
        Message::Text(t) => tungstenite::Message::text(t.as_str()),
        Message::Binary(b) => tungstenite::Message::Binary(b),
        Message::Close(f) => tungstenite::Message::Close(
            f.map(|f| tungstenite::protocol::CloseFrame { code: f.code.into(), reason: f.reason.as_str().into() }),
        ),
        Message::Ping(_) | Message::Pong(_) => return None,
    })
}

fn to_client(m: tungstenite::Message) -> Option<Message> {
    Some(match m {
        tungstenite::Message::Text(t) => Message::Text(Utf8Bytes::from(t.as_str())),
        tungstenite::Message::Binary(b) => Message::Binary(b),
        tungstenite::Message::Close(f) => {
            Message::Close(f.map(|f| CloseFrame { code: f.code.into(), reason: Utf8Bytes::from(f.reason.as_str()) }))
        }
        tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) | tungstenite::Message::Frame(_) => {
            return None;
        }
    })
}

/// The client-actionable error for a hosting node that refused or could not be reached.
fn upstream_error(e: &tungstenite::Error, node: &str) -> ErrorMessage {
    if let tungstenite::Error::Http(resp) = e
        && let Some(body) = resp.body()
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
        && let Ok(code) = serde_json::from_value::<ErrorCode>(v["code"].clone())
    {
        let mut err = ErrorMessage::new(code, v["message"].as_str().unwrap_or("refused by the room's node"));
        if code == ErrorCode::NodeDraining {
            err.retry_after_ms = Some(1000);
        }
        return err;
    }
    let mut err = ErrorMessage::new(ErrorCode::PlacementTimeout, format!("the room's node {node} is unreachable: {e}"));
    err.retry_after_ms = Some(1000);
    err
}

/// Relay `client` to the `/rtc` endpoint of `node` at `ip` until either side closes.
pub(crate) async fn run(mut client: WebSocket, shared: Arc<Shared>, node: String, ip: IpAddr, up: Upstream) {
    let port = shared.cfg.http_addr.port();
    let query = up.query.map(|q| format!("?{q}")).unwrap_or_default();
    let host = if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
    let url = format!("ws://{host}:{port}/rtc{query}");
    let mut request = match url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%node, error = %e, "bad upstream request");
            return refuse(&mut client, &shared, ErrorMessage::new(ErrorCode::Internal, "bad upstream request")).await;
        }
    };
    if let Some(auth) = up.authorization {
        request.headers_mut().insert(axum::http::header::AUTHORIZATION, auth);
    }
    if let Ok(me) = HeaderValue::from_str(&shared.cfg.node_name) {
        request.headers_mut().insert(FORWARDED_HEADER, me);
    }
    let max = shared.cfg.max_message_bytes * 4;
    let ws_config =
        tungstenite::protocol::WebSocketConfig::default().max_message_size(Some(max)).max_frame_size(Some(max));
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            tracing::warn!(%node, error = %e, "proxy: the hosting node refused");
            return refuse(&mut client, &shared, upstream_error(&e, &node)).await;
        }
        Err(_) => {
            let e = tungstenite::Error::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"));
            return refuse(&mut client, &shared, upstream_error(&e, &node)).await;
        }
    };
    shared.metrics.proxied.get_or_create(&Outcome { result: "ok" }).inc();
    shared.metrics.proxied_active.inc();
    tracing::debug!(%node, "proxying a session");
    let (mut up_tx, mut up_rx) = upstream.split();
    let (mut down_tx, mut down_rx) = client.split();
    loop {
        tokio::select! {
            m = down_rx.next() => match m {
                Some(Ok(m)) => {
                    let closing = matches!(m, Message::Close(_));
                    if let Some(m) = to_upstream(m)
                        && up_tx.send(m).await.is_err()
                    {
                        break;
                    }
                    if closing { break; }
                }
                _ => {
                    let _ = up_tx.close().await;
                    break;
                }
            },
            m = up_rx.next() => match m {
                Some(Ok(m)) => {
                    let closing = matches!(m, tungstenite::Message::Close(_));
                    if let Some(m) = to_client(m)
                        && down_tx.send(m).await.is_err()
                    {
                        break;
                    }
                    if closing { break; }
                }
                _ => {
                    // The hosting node went away mid-session: the client reconnects
                    // through the signaling Service and lands where the room is now.
                    let e = ErrorMessage::new(ErrorCode::NodeDraining, format!("lost the connection to {node}; join again"));
                    let _ = down_tx.send(encode(&ServerMessage::Error(e))).await;
                    let _ = down_tx.send(Message::Close(Some(CloseFrame { code: 1012, reason: "service restart".into() }))).await;
                    break;
                }
            },
        }
    }
    shared.metrics.proxied_active.dec();
}

fn encode(msg: &ServerMessage) -> Message {
    Message::Text(Utf8Bytes::from(serde_json::to_string(msg).expect("server messages serialize")))
}

async fn refuse(client: &mut WebSocket, shared: &Shared, e: ErrorMessage) {
    shared.metrics.proxied.get_or_create(&Outcome { result: e.code.as_str() }).inc();
    crate::session::refuse(client, shared, e).await;
}
