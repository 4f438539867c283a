//! The admin port: status, drain and room close, as the operator uses them; and the
//! binary's SIGTERM drain.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use switchyard_api::signal::{LeaveReason, ServerMessage};
use tokio_tungstenite::tungstenite::Message;

async fn joined(node: &switchyard_media_node::NodeHandle, identity: &str, room: &str) -> common::Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(url(node, &token(identity, room, |_| {}))).await.unwrap();
    ws.send(Message::text(r#"{"type":"join","protocolVersion":1}"#)).await.unwrap();
    match next(&mut ws).await {
        Some(ServerMessage::Joined(_)) => ws,
        other => panic!("expected joined, got {other:?}"),
    }
}

async fn next(ws: &mut common::Ws) -> Option<ServerMessage> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn internal_endpoints_live_on_the_admin_port_only() {
    let node = start_node().await;
    let (status, body) = http(node.admin_addr, "GET", "/internal/status").await;
    assert_eq!(status, 200);
    let s: switchyard_api::node::MediaNodeStatus = serde_json::from_str(&body).unwrap();
    assert_eq!((s.rooms, s.participants, s.draining), (0, 0, false));
    assert_eq!(http(node.http_addr, "GET", "/internal/status").await.0, 404, "not on the public port");
    assert_eq!(http(node.http_addr, "POST", "/drain").await.0, 404, "nobody drains a node from outside");
    assert!(http(node.admin_addr, "GET", "/metrics").await.1.contains("switchyard_media_participants"));
    node.shutdown().await;
}

#[tokio::test]
async fn drain_refuses_new_sessions_and_keeps_existing_ones() {
    let node = start_node().await;
    let mut ws = joined(&node, "alice", "standup").await;
    assert_eq!(http(node.admin_addr, "POST", "/drain").await.0, 202);
    assert_eq!(http(node.admin_addr, "GET", "/readyz").await.0, 503);
    let (_, body) = http(node.admin_addr, "GET", "/internal/status").await;
    let s: switchyard_api::node::MediaNodeStatus = serde_json::from_str(&body).unwrap();
    assert!(s.draining);
    assert_eq!((s.participants, s.room_names.clone()), (1, vec!["standup".to_owned()]));

    match tokio_tungstenite::connect_async(url(&node, &token("bob", "standup", |_| {}))).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 503);
            assert!(r.headers().contains_key("retry-after"));
        }
        other => panic!("expected 503, got {other:?}"),
    }
    // The existing session still works.
    ws.send(Message::text(r#"{"type":"ping","timestampMs":7}"#)).await.unwrap();
    assert!(matches!(next(&mut ws).await, Some(ServerMessage::Pong(p)) if p.timestamp_ms == 7));
    // The end of the grace period: everyone is told to reconnect elsewhere.
    node.evacuate();
    assert!(
        matches!(next(&mut ws).await, Some(ServerMessage::Leave(l)) if l.reason == LeaveReason::NodeDraining && l.can_reconnect)
    );
    node.shutdown().await;
}

#[tokio::test]
async fn closing_a_room_from_the_admin_port_ends_its_sessions() {
    let node = start_node().await;
    let mut ws = joined(&node, "alice", "doomed").await;
    assert_eq!(http(node.admin_addr, "POST", "/internal/rooms/doomed/close").await.0, 202);
    assert!(matches!(next(&mut ws).await, Some(ServerMessage::Leave(l)) if l.reason == LeaveReason::RoomClosed));
    assert_eq!(http(node.admin_addr, "POST", "/internal/rooms/doomed/close").await.0, 404, "gone");
    node.shutdown().await;
}

#[test]
fn sigterm_with_no_participants_exits_zero() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_media-node"))
        .args(["--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--udp-addr", "127.0.0.1:0"])
        .args(["--tcp-addr", "127.0.0.1:0", "--api-key", "k:s"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "media-node did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
