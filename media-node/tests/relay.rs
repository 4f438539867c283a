//! Rooms across nodes: two real media-nodes on loopback joined by a relay (the edge
//! dials the origin's relay endpoint, both ends str0m), with webrtc-rs peers on each.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use switchyard_api::relay::{RELAY_PROTOCOL_VERSION, RelayAttach, RelayHello, RelayMessage, room_key};
use switchyard_api::signal::TrackKind;
use switchyard_media_node::NodeHandle;
use tokio_tungstenite::tungstenite::Message;

const RELAY_SECRET: &str = "relay-secret-of-the-test-cluster";

async fn start(name: &str, secret: Option<&str>) -> NodeHandle {
    start_node_with(|c| {
        c.node_name = name.into();
        c.relay_secret = secret.map(str::to_owned);
    })
    .await
}

/// Tell `edge` to dial `origin` for `room`, as the operator does.
async fn attach(edge: &NodeHandle, origin: &NodeHandle, origin_name: &str, room: &str) -> u16 {
    let body = serde_json::to_string(&RelayAttach {
        origin_node: origin_name.into(),
        origin_admin: origin.admin_addr,
        origin_media: origin.udp_addr,
    })
    .unwrap();
    let path = format!("/internal/rooms/{room}/relay");
    let (status, _, text) =
        http_with(edge.admin_addr, "POST", &path, &[("content-type", "application/json")], &body).await;
    assert!(status == 202 || status >= 400, "{status} {text}");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_on_the_origin_reaches_a_subscriber_on_an_edge_through_the_relay() {
    let _one_at_a_time = HEAVY.lock().await;
    let origin = start("origin-0", Some(RELAY_SECRET)).await;
    let edge = start("edge-1", Some(RELAY_SECRET)).await;
    let alice = Peer::join(&origin, &token("alice", "standup", |_| {}), 1, &[TrackKind::Audio, TrackKind::Video]).await;
    assert_eq!(attach(&edge, &origin, "origin-0", "standup").await, 202);
    let bob = Peer::join(&edge, &token("bob", "standup", |_| {}), 2, &[]).await;
    let media = alice.start_media(Duration::from_secs(60));
    let flowing = eventually(Duration::from_secs(45), || {
        bob.valid_from(TrackKind::Audio, 1) > 50 && bob.valid_from(TrackKind::Video, 1) > 25
    })
    .await;
    media.abort();
    let report = format!(
        "bob (edge) got audio {} video {} from alice (origin); invalid {} {:?}",
        bob.valid_from(TrackKind::Audio, 1),
        bob.valid_from(TrackKind::Video, 1),
        bob.invalid(),
        bob.first_invalid()
    );
    assert!(flowing, "{report}");
    assert_eq!(bob.invalid(), 0, "{report}");
    let (o, e) = (origin.status().await, edge.status().await);
    assert_eq!((o.participants, e.participants), (1, 1), "a relay is no participant in either node's counts");
    alice.close().await;
    bob.close().await;
    edge.shutdown().await;
    origin.shutdown().await;
}

/// Open a relay socket to `origin` and send `hello`; the close code and reason it ends with.
async fn hello(origin: SocketAddr, hello: RelayHello) -> (u16, String) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{origin}/internal/relay")).await.unwrap();
    ws.send(Message::text(serde_json::to_string(&RelayMessage::Hello(hello)).unwrap())).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(Some(f))) => return (u16::from(f.code), f.reason.to_string()),
                Ok(_) => continue,
                Err(e) => return (0, e.to_string()),
            }
        }
        (0, "ended without a close frame".into())
    })
    .await;
    closed.expect("the origin answers a hello it refuses with a close frame")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_refuses_a_relay_without_its_rooms_key_and_opens_nothing() {
    let origin = start("origin-0", Some(RELAY_SECRET)).await;
    let key = |secret: &str, room: &str| room_key(secret.as_bytes(), "default", room);
    let h = |room: &str, key: String, protocol_version| RelayHello {
        room: room.into(),
        node: "edge-1".into(),
        key,
        protocol_version,
    };
    let (code, reason) = hello(origin.admin_addr, h("standup", key("another secret", "standup"), 1)).await;
    assert_eq!((code, reason.as_str()), (4401, "the relay key does not open room \"standup\""));
    let (code, _) = hello(origin.admin_addr, h("standup", key(RELAY_SECRET, "retro"), 1)).await;
    assert_eq!(code, 4401, "another room's key");
    let (code, reason) =
        hello(origin.admin_addr, h("standup", key(RELAY_SECRET, "standup"), RELAY_PROTOCOL_VERSION + 1)).await;
    assert_eq!(code, 4400, "{reason}");
    let status = origin.status().await;
    assert_eq!((status.rooms, status.participants), (0, 0), "a refused relay opens no room: {status:?}");
    // Not a hello first.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/internal/relay", origin.admin_addr)).await.unwrap();
    ws.send(Message::text(r#"{"type":"trickle","candidate":"x"}"#)).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(20), ws.next()).await.unwrap();
    assert!(matches!(&m, Some(Ok(Message::Close(Some(f)))) if u16::from(f.code) == 4400), "{m:?}");
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_relay_secret_a_node_neither_accepts_nor_dials_relays() {
    let origin = start("origin-0", None).await;
    let edge = start("edge-1", None).await;
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/internal/relay", origin.admin_addr)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 503),
        other => panic!("refused before the upgrade, got {other:?}"),
    }
    assert_eq!(attach(&edge, &origin, "origin-0", "standup").await, 503);
    let (status, _, body) = http_with(
        edge.admin_addr,
        "POST",
        "/internal/rooms/standup/relay",
        &[("content-type", "application/json")],
        r#"{"originNode":"o"}"#,
    )
    .await;
    assert_eq!(status, 400, "a body without the origin's addresses: {body}");
    edge.shutdown().await;
    origin.shutdown().await;
}
