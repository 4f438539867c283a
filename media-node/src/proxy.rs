//! Kubernetes mode: relay a signaling WebSocket to the node hosting its room.
//!
//! Frames pass through one at a time in both directions: nothing is buffered beyond the
//! frame in hand, so a side that does not read stops the proxy reading the other side
//! (whose own send timeout then applies), and every send gives up after
//! `--send-timeout-seconds`, as a session's do. A client that does not read is dropped
//! (the hosting node gets a close); a hosting node that does not read, or goes away, gets
//! the client a `node_draining` error and close 1012, so it joins again. Each hop answers
//! its own WebSocket pings. The hosting node sees the client's own token and query, plus
//! [`FORWARDED_HEADER`] so it never proxies again.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::http::HeaderValue;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
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
    /// The client's address (sent as `X-Forwarded-For`: the hosting node trusts the
    /// fleet's pods and counts the session under it).
    pub(crate) client: Option<IpAddr>,
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
    if let Some(client) = up.client
        && let Ok(v) = HeaderValue::from_str(&client.to_string())
    {
        request.headers_mut().insert("x-forwarded-for", v);
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
    let timeout = Duration::from_secs(shared.cfg.send_timeout_seconds);
    let end = relay(&mut down_rx, &mut down_tx, &mut up_rx, &mut up_tx, timeout).await;
    finish(end, &mut down_tx, &mut up_tx, timeout, &node, &shared.metrics).await;
    shared.metrics.proxied_active.dec();
}

/// How a relay ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// A close frame passed, or the client went away.
    Closed,
    /// The client did not take a frame within the send timeout.
    ClientStuck,
    /// The hosting node went away, or did not take a frame within the send timeout.
    Node { stuck: bool },
}

/// A send that gives up after `timeout`: `Err(true)` when it timed out (the other side does
/// not read), `Err(false)` when the socket is gone.
async fn send_within<S: Sink<M> + Unpin, M>(sink: &mut S, m: M, timeout: Duration) -> Result<(), bool> {
    match tokio::time::timeout(timeout, sink.send(m)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(false),
        Err(_) => Err(true),
    }
}

/// Pass frames both ways, one in hand at a time, until a close, a side gone, or a send
/// that does not complete within `timeout`.
async fn relay<DR, DT, UR, UT, E1, E2>(
    down_rx: &mut DR,
    down_tx: &mut DT,
    up_rx: &mut UR,
    up_tx: &mut UT,
    timeout: Duration,
) -> End
where
    DR: Stream<Item = Result<Message, E1>> + Unpin,
    DT: Sink<Message> + Unpin,
    UR: Stream<Item = Result<tungstenite::Message, E2>> + Unpin,
    UT: Sink<tungstenite::Message> + Unpin,
{
    loop {
        tokio::select! {
            m = down_rx.next() => match m {
                Some(Ok(m)) => {
                    let closing = matches!(m, Message::Close(_));
                    if let Some(m) = to_upstream(m)
                        && let Err(stuck) = send_within(up_tx, m, timeout).await
                    {
                        return End::Node { stuck };
                    }
                    if closing {
                        return End::Closed;
                    }
                }
                _ => {
                    let _ = tokio::time::timeout(timeout, up_tx.close()).await;
                    return End::Closed;
                }
            },
            m = up_rx.next() => match m {
                Some(Ok(m)) => {
                    let closing = matches!(m, tungstenite::Message::Close(_));
                    if let Some(m) = to_client(m) {
                        match send_within(down_tx, m, timeout).await {
                            Ok(()) => {}
                            Err(true) => return End::ClientStuck,
                            Err(false) => return End::Closed,
                        }
                    }
                    if closing {
                        return End::Closed;
                    }
                }
                _ => return End::Node { stuck: false },
            },
        }
    }
}

/// After the relay: tell the node a stuck client left, or the client that its node is gone.
async fn finish<DT, UT>(
    end: End,
    down_tx: &mut DT,
    up_tx: &mut UT,
    timeout: Duration,
    node: &str,
    metrics: &crate::metrics::Metrics,
) where
    DT: Sink<Message> + Unpin,
    UT: Sink<tungstenite::Message> + Unpin,
{
    let side = |side: &'static str| metrics.proxy_stuck.get_or_create(&crate::metrics::Side { side }).inc();
    match end {
        End::Closed => {}
        End::ClientStuck => {
            side("client");
            // The hosting node ends the participant now, not at its keepalive timeout.
            let _ = tokio::time::timeout(timeout, up_tx.close()).await;
        }
        End::Node { stuck } => {
            if stuck {
                side("node");
            }
            // The client reconnects through the signaling Service and lands where the
            // room is now.
            let e = ErrorMessage::new(ErrorCode::NodeDraining, format!("lost the connection to {node}; join again"));
            if send_within(down_tx, encode(&ServerMessage::Error(e)), timeout).await.is_ok() {
                let close = CloseFrame { code: 1012, reason: "service restart".into() };
                let _ = send_within(down_tx, Message::Close(Some(close)), timeout).await;
            }
        }
    }
}

fn encode(msg: &ServerMessage) -> Message {
    Message::Text(Utf8Bytes::from(serde_json::to_string(msg).expect("server messages serialize")))
}

async fn refuse(client: &mut WebSocket, shared: &Shared, e: ErrorMessage) {
    shared.metrics.proxied.get_or_create(&Outcome { result: e.code.as_str() }).inc();
    crate::session::refuse(client, shared, e).await;
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use futures_util::stream;
    use tokio::io::DuplexStream;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;

    /// A client that never reads: its socket never takes a frame.
    struct NotReading;

    impl Sink<Message> for NotReading {
        type Error = Infallible;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Pending
        }
        fn start_send(self: Pin<&mut Self>, _: Message) -> Result<(), Infallible> {
            unreachable!("never ready")
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Pending
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Pending
        }
    }

    const TIMEOUT: Duration = Duration::from_millis(300);
    /// The pipe between the proxy and the node holds a few frames, like a socket buffer.
    const PIPE: usize = 16 * 1024;
    const FRAME: usize = 1024;

    /// The proxy's and the node's ends of one upstream WebSocket over an in-memory pipe.
    async fn upstream() -> (WebSocketStream<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (proxy, node) = tokio::io::duplex(PIPE);
        (
            WebSocketStream::from_raw_socket(proxy, Role::Client, None).await,
            WebSocketStream::from_raw_socket(node, Role::Server, None).await,
        )
    }

    fn frame(i: usize) -> String {
        format!("{i:0>width$}", width = FRAME)
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_is_dropped_and_the_node_is_not_read_meanwhile() {
        let (proxy_end, node_end) = upstream().await;
        let (mut up_tx, mut up_rx) = proxy_end.split();
        let (mut node_tx, mut node_rx) = node_end.split();
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        // The hosting node has 1000 messages for the client (1 MiB).
        let node = tokio::spawn(async move {
            for i in 0..1000 {
                if node_tx.send(tungstenite::Message::text(frame(i))).await.is_err() {
                    break;
                }
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        let mut down_rx = stream::pending::<Result<Message, Infallible>>();
        let mut down_tx = NotReading;
        let end = relay(&mut down_rx, &mut down_tx, &mut up_rx, &mut up_tx, TIMEOUT).await;
        assert_eq!(end, End::ClientStuck);
        // The proxy stopped reading with one frame in hand: besides it, only what one read
        // of its buffer took from the pipe (at most PIPE bytes) and what the pipe holds
        // left the node; the rest waits in the node's own send, not in the proxy's memory.
        let taken = sent.load(Ordering::SeqCst);
        assert!(taken <= 2 * PIPE / FRAME + 2, "{taken} of 1000 frames left the node");
        let metrics = crate::metrics::Metrics::new();
        finish(end, &mut down_tx, &mut up_tx, TIMEOUT, "node-1", &metrics).await;
        assert_eq!(metrics.proxy_stuck.get_or_create(&crate::metrics::Side { side: "client" }).get(), 1);
        drop((up_tx, up_rx));
        node.abort();
        // The node hears the close (after the frames in flight) or the end of the socket.
        let mut saw_end = false;
        while let Some(m) = node_rx.next().await {
            if matches!(m, Ok(tungstenite::Message::Close(_)) | Err(_)) {
                saw_end = true;
                break;
            }
        }
        assert!(saw_end || node_rx.next().await.is_none());
    }

    #[tokio::test]
    async fn a_node_that_does_not_read_ends_the_session_and_the_client_is_told_to_rejoin() {
        let (proxy_end, _node_end) = upstream().await; // the node never reads
        let (mut up_tx, mut up_rx) = proxy_end.split();
        let taken = Arc::new(AtomicUsize::new(0));
        let counter = taken.clone();
        // The client sends 1000 messages (1 MiB), then waits.
        let mut down_rx = stream::iter((0..1000).map(|i| Ok::<_, Infallible>(Message::Text(frame(i).into()))))
            .inspect(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            })
            .chain(stream::pending());
        let mut down_tx: Vec<Message> = Vec::new(); // a client that reads everything
        let end = relay(&mut down_rx, &mut down_tx, &mut up_rx, &mut up_tx, TIMEOUT).await;
        assert_eq!(end, End::Node { stuck: true });
        let taken = taken.load(Ordering::SeqCst);
        // What the pipe to the node holds and one frame in hand; the rest is still the
        // client's (in its socket's buffer), not in the proxy's memory.
        assert!(taken <= PIPE / FRAME + 2, "the proxy took {taken} of 1000 frames from the client");
        let metrics = crate::metrics::Metrics::new();
        finish(end, &mut down_tx, &mut up_tx, TIMEOUT, "node-1", &metrics).await;
        assert_eq!(metrics.proxy_stuck.get_or_create(&crate::metrics::Side { side: "node" }).get(), 1);
        let [Message::Text(error), Message::Close(Some(close))] = &down_tx[..] else { panic!("{down_tx:?}") };
        assert!(error.as_str().contains("node_draining"), "{error}");
        assert_eq!(close.code, 1012);
    }
}
