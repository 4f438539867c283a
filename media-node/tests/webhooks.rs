//! Webhooks from a real node on loopback to small HTTP receivers that check every
//! request's signature with `switchyard_api::webhook::verify`, as an app would.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use common::*;
use futures_util::{SinkExt, StreamExt};
use switchyard_api::media_cluster::{WebhookEvent as Kind, WebhookSpec};
use switchyard_api::signal::ServerMessage;
use switchyard_api::webhook::{self, WebhookEvent};
use switchyard_media_node::NodeHandle;
use tokio_tungstenite::tungstenite::Message;

/// What one receiver saw.
#[derive(Default)]
struct Log {
    /// Every request, verified (retries included).
    requests: Vec<WebhookEvent>,
    /// Events answered with 2xx.
    accepted: Vec<WebhookEvent>,
    /// Requests that failed verification.
    rejected: Vec<String>,
}

#[derive(Clone)]
struct Receiver {
    url: String,
    log: Arc<Mutex<Log>>,
    /// Statuses to answer before answering 200.
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks?tenant=t1", listener.local_addr().unwrap());
        let r = Receiver { url, log: Arc::default(), script: Arc::new(Mutex::new(script.iter().copied().collect())) };
        let app = axum::Router::new().route("/hooks", axum::routing::post(hook)).with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    fn spec(&self, events: &[Kind]) -> WebhookSpec {
        WebhookSpec { url: self.url.clone(), events: events.to_vec(), api_key: None }
    }

    fn accepted(&self) -> Vec<(Kind, Option<String>)> {
        let log = self.log.lock().unwrap();
        log.accepted.iter().map(|e| (e.event, e.participant.as_ref().map(|p| p.identity.clone()))).collect()
    }

    fn requests(&self) -> usize {
        self.log.lock().unwrap().requests.len()
    }

    async fn wait_for(&self, kind: Kind) -> bool {
        eventually(Duration::from_secs(15), || self.log.lock().unwrap().accepted.iter().any(|e| e.event == kind)).await
    }
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let secrets = |key: &str| (key == KEY).then(|| SECRET.to_owned());
    let mut log = r.log.lock().unwrap();
    let event = match webhook::verify(&body, auth, secrets, now()) {
        Ok(e) if content_type == webhook::CONTENT_TYPE => e,
        Ok(_) => {
            log.rejected.push(format!("content type {content_type:?}"));
            return StatusCode::BAD_REQUEST;
        }
        Err(e) => {
            log.rejected.push(e.to_string());
            return StatusCode::UNAUTHORIZED;
        }
    };
    log.requests.push(event.clone());
    let status = r.script.lock().unwrap().pop_front().unwrap_or(200);
    let status = StatusCode::from_u16(status).unwrap();
    if status.is_success() {
        log.accepted.push(event);
    }
    status
}

async fn start(webhooks: Vec<WebhookSpec>) -> NodeHandle {
    start_node_with(|c| {
        c.webhooks = webhooks;
        c.node_name = "edge-sfu-0".into();
        c.cluster = "edge".into();
        c.empty_timeout_seconds = 1;
    })
    .await
}

/// Join `room` over signaling only (no media needed for room events).
async fn join(node: &NodeHandle, identity: &str, room: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(url(node, &token(identity, room, |_| {}))).await.unwrap();
    ws.send(Message::text(r#"{"type":"join","protocolVersion":1}"#)).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str(&t).unwrap() {
                ServerMessage::Joined(_) => return ws,
                other => panic!("expected joined, got {other:?}"),
            },
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected joined, got {other:?}"),
        }
    }
}

async fn leave(mut ws: Ws) {
    ws.send(Message::text(r#"{"type":"leave"}"#)).await.unwrap();
    let _ = ws.close(None).await;
}

async fn metric(node: &NodeHandle, line_start: &str) -> Option<u64> {
    let (_, body) = http(node.admin_addr, "GET", "/metrics").await;
    body.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn a_join_and_leave_is_reported_in_order_and_signed() {
    let hooks = Receiver::start(&[]).await;
    let node = start(vec![hooks.spec(&[])]).await;
    leave(join(&node, "alice", "standup").await).await;
    assert!(hooks.wait_for(Kind::RoomFinished).await, "room_finished within the empty timeout");

    let alice = Some("alice".to_owned());
    assert_eq!(
        hooks.accepted(),
        [
            (Kind::RoomStarted, None),
            (Kind::ParticipantJoined, alice.clone()),
            (Kind::ParticipantLeft, alice),
            (Kind::RoomFinished, None),
        ]
    );
    {
        let log = hooks.log.lock().unwrap();
        assert!(log.rejected.is_empty(), "every request verifies: {:?}", log.rejected);
        assert_eq!(log.requests.len(), 4, "no retries");
        for e in &log.accepted {
            assert_eq!((e.room.name.as_str(), e.node.as_str(), e.cluster.as_str()), ("standup", "edge-sfu-0", "edge"));
            assert!(e.id.starts_with("EV_") && e.created_at.abs_diff(now()) < 60, "{e:?}");
        }
        let ids: std::collections::HashSet<_> = log.accepted.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), 4, "ids are unique");
    }
    let delivered = r#"switchyard_media_webhooks_total{event="participant_joined",result="delivered"}"#;
    assert_eq!(metric(&node, delivered).await, Some(1));
    assert!(metric(&node, "switchyard_media_webhook_delivery_duration_seconds_count").await >= Some(4));
    node.shutdown().await;
}

#[tokio::test]
async fn server_errors_are_retried_and_client_errors_are_not() {
    let flaky = Receiver::start(&[500, 500]).await;
    let refusing = Receiver::start(&[404]).await;
    let node = start(vec![flaky.spec(&[Kind::RoomStarted]), refusing.spec(&[Kind::RoomStarted])]).await;
    let ws = join(&node, "alice", "r").await;
    assert!(flaky.wait_for(Kind::RoomStarted).await);
    assert_eq!(flaky.requests(), 3, "500, 500, then 200");
    assert_eq!(flaky.accepted(), [(Kind::RoomStarted, None)], "accepted once");
    {
        let log = flaky.log.lock().unwrap();
        assert!(log.requests.iter().all(|e| e.id == log.requests[0].id), "a retry carries the same id");
    }
    // Both receivers got the event at the same moment; the flaky one's third attempt came
    // 1.5 s later, well after a retry of the 404 would have (0.5 s).
    assert_eq!(refusing.requests(), 1, "a 404 is final");
    let failed = r#"switchyard_media_webhooks_total{event="room_started",result="failed"}"#;
    assert_eq!(metric(&node, failed).await, Some(1));
    let delivered = r#"switchyard_media_webhooks_total{event="room_started",result="delivered"}"#;
    assert_eq!(metric(&node, delivered).await, Some(1));
    leave(ws).await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_filter_delivers_only_the_events_named() {
    let hooks = Receiver::start(&[]).await;
    let node = start(vec![hooks.spec(&[Kind::RoomFinished])]).await;
    leave(join(&node, "alice", "r").await).await;
    assert!(hooks.wait_for(Kind::RoomFinished).await);
    // Delivery is serial, so anything else would have arrived first.
    assert_eq!(hooks.accepted(), [(Kind::RoomFinished, None)]);
    assert_eq!(hooks.requests(), 1);
    node.shutdown().await;
}

#[tokio::test]
async fn a_receiver_that_is_down_holds_up_neither_signaling_nor_other_receivers() {
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hooks", l.local_addr().unwrap())
    };
    let hooks = Receiver::start(&[]).await;
    let node = start(vec![WebhookSpec { url: down, events: vec![], api_key: None }, hooks.spec(&[])]).await;
    let a = join(&node, "alice", "r").await;
    let b = join(&node, "bob", "r").await;
    assert!(hooks.wait_for(Kind::ParticipantJoined).await);
    assert!(eventually(Duration::from_secs(5), || hooks.accepted().len() == 3).await);
    let bob = Some("bob".to_owned());
    assert_eq!(hooks.accepted()[2], (Kind::ParticipantJoined, bob));
    // Both joins completed and the healthy receiver has everything, while the first event
    // for the receiver that is down is still being retried (0.5 + 1 + 2 + 4 s of backoff).
    let started =
        |result: &str| format!(r#"switchyard_media_webhooks_total{{event="room_started",result="{result}"}}"#);
    assert_eq!(metric(&node, &started("delivered")).await, Some(1));
    assert_eq!(metric(&node, &started("failed")).await, None, "still retrying");
    // Five refused connections later it gives up and counts the failure.
    let mut failed = None;
    for _ in 0..150 {
        failed = metric(&node, &started("failed")).await;
        if failed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failed, Some(1));
    leave(a).await;
    leave(b).await;
    node.shutdown().await;
}
