//! The signaling protocol's limits and error handling, over a real WebSocket.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use switchyard_api::signal::{ErrorCode, ServerMessage};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn connect(node: &switchyard_media_node::NodeHandle, identity: &str, room: &str) -> Ws {
    tokio_tungstenite::connect_async(url(node, &token(identity, room, |_| {}))).await.unwrap().0
}

/// The next server message, or the close code if the socket closes.
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

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_owned())).await.unwrap();
}

fn error_code(m: &ServerMessage) -> Option<ErrorCode> {
    if let ServerMessage::Error(e) = m { Some(e.code) } else { None }
}

#[tokio::test]
async fn malformed_and_unknown_messages_get_errors_and_the_session_survives() {
    let node = start_node().await;
    let mut ws = connect(&node, "alice", "r").await;
    send(&mut ws, r#"{"type":"join","protocolVersion":1}"#).await;
    assert!(matches!(next(&mut ws).await, Ok(ServerMessage::Joined(_))));
    send(&mut ws, "{not json").await;
    assert_eq!(next(&mut ws).await.ok().as_ref().and_then(error_code), Some(ErrorCode::BadRequest));
    send(&mut ws, r#"{"type":"teleport"}"#).await;
    assert_eq!(next(&mut ws).await.ok().as_ref().and_then(error_code), Some(ErrorCode::UnknownMessage));
    send(&mut ws, r#"{"type":"mute_track","trackSid":"TR_x"}"#).await;
    assert_eq!(next(&mut ws).await.ok().as_ref().and_then(error_code), Some(ErrorCode::BadRequest));
    send(&mut ws, r#"{"type":"mute_track","trackSid":"TR_x","muted":true}"#).await;
    assert_eq!(next(&mut ws).await.ok().as_ref().and_then(error_code), Some(ErrorCode::TrackNotFound));
    send(&mut ws, r#"{"type":"join","protocolVersion":1}"#).await;
    assert_eq!(next(&mut ws).await.ok().as_ref().and_then(error_code), Some(ErrorCode::AlreadyJoined));
    // Still alive: ping gets pong.
    send(&mut ws, r#"{"type":"ping","timestampMs":42}"#).await;
    assert!(matches!(next(&mut ws).await, Ok(ServerMessage::Pong(p)) if p.timestamp_ms == 42));
    node.shutdown().await;
}

#[tokio::test]
async fn messages_before_join_are_refused() {
    let node = start_node().await;
    let mut ws = connect(&node, "alice", "r").await;
    send(&mut ws, r#"{"type":"leave"}"#).await;
    assert_eq!(next(&mut ws).await.ok().as_ref().and_then(error_code), Some(ErrorCode::NotJoined));
    node.shutdown().await;
}

#[tokio::test]
async fn oversized_frames_close_with_1009() {
    let node = start_node_with(|c| c.max_message_bytes = 4096).await;
    let mut ws = connect(&node, "alice", "r").await;
    send(&mut ws, r#"{"type":"join","protocolVersion":1}"#).await;
    assert!(matches!(next(&mut ws).await, Ok(ServerMessage::Joined(_))));
    let big = format!(r#"{{"type":"leave","reason":"{}"}}"#, "x".repeat(5000));
    send(&mut ws, &big).await;
    assert_eq!(next(&mut ws).await.ok().as_ref().and_then(error_code), Some(ErrorCode::MessageTooLarge));
    assert_eq!(next(&mut ws).await.err(), Some(Some(u16::from(CloseCode::Size))));
    node.shutdown().await;
}

#[tokio::test]
async fn flooding_is_rate_limited_with_4429() {
    let node = start_node_with(|c| c.messages_per_second = 5).await;
    let mut ws = connect(&node, "alice", "r").await;
    send(&mut ws, r#"{"type":"join","protocolVersion":1}"#).await;
    assert!(matches!(next(&mut ws).await, Ok(ServerMessage::Joined(_))));
    for i in 0..30 {
        let _ = ws.send(Message::text(format!(r#"{{"type":"ping","timestampMs":{i}}}"#))).await;
    }
    let mut limited = false;
    loop {
        match next(&mut ws).await {
            Ok(m) if error_code(&m) == Some(ErrorCode::RateLimited) => limited = true,
            Ok(_) => {}
            Err(code) => {
                assert_eq!(code, Some(4429));
                break;
            }
        }
    }
    assert!(limited);
    node.shutdown().await;
}

#[tokio::test]
async fn a_full_room_refuses_the_next_participant() {
    let node = start_node_with(|c| c.max_participants = 1).await;
    let mut first = connect(&node, "alice", "tiny").await;
    send(&mut first, r#"{"type":"join","protocolVersion":1}"#).await;
    assert!(matches!(next(&mut first).await, Ok(ServerMessage::Joined(_))));
    let mut second = connect(&node, "bob", "tiny").await;
    send(&mut second, r#"{"type":"join","protocolVersion":1}"#).await;
    let refused = next(&mut second).await.unwrap();
    assert!(matches!(&refused, ServerMessage::Error(e) if e.code == ErrorCode::RoomFull && e.message.contains("full")));
    assert_eq!(next(&mut second).await.err(), Some(Some(4429)));
    node.shutdown().await;
}

#[tokio::test]
async fn participants_see_each_other_join_and_leave() {
    let node = start_node().await;
    let mut a = connect(&node, "alice", "r").await;
    send(&mut a, r#"{"type":"join","protocolVersion":1}"#).await;
    assert!(matches!(next(&mut a).await, Ok(ServerMessage::Joined(j)) if j.other_participants.is_empty()));
    let mut b = connect(&node, "bob", "r").await;
    send(&mut b, r#"{"type":"join","protocolVersion":1}"#).await;
    match next(&mut b).await {
        Ok(ServerMessage::Joined(j)) => {
            assert_eq!(j.other_participants.len(), 1);
            assert_eq!(j.other_participants[0].identity, "alice");
            assert_eq!(j.room.name, "r");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(next(&mut a).await, Ok(ServerMessage::ParticipantJoined(p)) if p.participant.identity == "bob"));
    send(&mut b, r#"{"type":"leave"}"#).await;
    assert!(matches!(next(&mut a).await, Ok(ServerMessage::ParticipantLeft(p)) if p.identity == "bob"));
    node.shutdown().await;
}
