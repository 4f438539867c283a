//! Admission against the node's own capacity, and what a refused join leaves behind, over
//! a real WebSocket and the admin API.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use switchyard_api::node::{MediaNodeCapacity, MediaNodeStatus};
use switchyard_api::signal::{ErrorCode, ErrorMessage, ServerMessage};
use switchyard_media_node::config::Capacity;
use tokio_tungstenite::tungstenite::Message;

/// Connect and join; the first server message, or the close code.
async fn join(
    node: &switchyard_media_node::NodeHandle,
    identity: &str,
    room: &str,
) -> (Ws, Result<ServerMessage, Option<u16>>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url(node, &token(identity, room, |_| {}))).await.unwrap();
    ws.send(Message::text(r#"{"type":"join","protocolVersion":1}"#)).await.unwrap();
    let first = next(&mut ws).await;
    (ws, first)
}

async fn next(ws: &mut Ws) -> Result<ServerMessage, Option<u16>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Ok(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(frame)))) => return Err(frame.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => continue,
            _ => return Err(None),
        }
    }
}

fn node_full(m: &Result<ServerMessage, Option<u16>>) -> Option<&ErrorMessage> {
    match m {
        Ok(ServerMessage::Error(e)) if e.code == ErrorCode::NodeFull => Some(e),
        _ => None,
    }
}

async fn status(node: &switchyard_media_node::NodeHandle) -> MediaNodeStatus {
    let (code, body) = http(node.admin_addr, "GET", "/internal/status").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn joins_past_the_node_capacity_get_node_full_and_the_status_says_full() {
    let cap = Capacity { rooms: 1, participants: 2, bandwidth_bps: 0 };
    let node = start_node_with(|c| c.capacity = cap).await;
    let (_alice, joined) = join(&node, "alice", "a").await;
    assert!(matches!(joined, Ok(ServerMessage::Joined(_))), "{joined:?}");
    let s = status(&node).await;
    assert_eq!(s.capacity, MediaNodeCapacity { rooms: 1, participants: 2, bandwidth_bps: 0 });
    assert!(s.full, "one room of one: no new room fits");

    let (mut carol, refused) = join(&node, "carol", "b").await;
    let e = node_full(&refused).unwrap_or_else(|| panic!("a second room is refused: {refused:?}"));
    assert!(e.retry_after_ms.is_some() && e.message.contains("1 rooms"), "{e:?}");
    assert_eq!(next(&mut carol).await.err(), Some(Some(4503)), "closed with 4503");

    let (mut bob, joined) = join(&node, "bob", "a").await;
    assert!(matches!(joined, Ok(ServerMessage::Joined(_))), "the open room still takes joins: {joined:?}");
    let (_dave, refused) = join(&node, "dave", "a").await;
    let e = node_full(&refused).unwrap_or_else(|| panic!("a third participant is refused: {refused:?}"));
    assert!(e.message.contains("2 participants"), "{e:?}");

    // Capacity comes back when a participant leaves.
    bob.send(Message::text(r#"{"type":"leave"}"#)).await.unwrap();
    let mut admitted = false;
    for _ in 0..50 {
        let (_erin, r) = join(&node, "erin", "a").await;
        if matches!(r, Ok(ServerMessage::Joined(_))) {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "a freed place is taken again");
    node.shutdown().await;
}

/// A join refused with `room_not_found` used to leave its room → shard entry behind for
/// good: closing that room answered 202 and the entry skewed shard balancing.
#[tokio::test]
async fn a_refused_join_leaves_no_room_behind() {
    let node = start_node_with(|c| c.auto_create = false).await;
    let (_ws, refused) = join(&node, "alice", "ghost").await;
    assert!(matches!(&refused, Ok(ServerMessage::Error(e)) if e.code == ErrorCode::RoomNotFound), "{refused:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (code, _) = http(node.admin_addr, "POST", "/internal/rooms/ghost/close").await;
    assert_eq!(code, 404, "no such room");
    let s = status(&node).await;
    assert_eq!((s.rooms, s.participants, s.full), (0, 0, false));
    node.shutdown().await;
}
