//! Session resume with real WebRTC peers (webrtc-rs) on loopback: a signaling socket
//! dropped mid-call is resumed on a new socket, and media never stops.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use switchyard_api::signal::{ClientMessage, ErrorCode, ResumeRequest, ServerMessage, TrackKind};
use tokio_tungstenite::tungstenite::Message;

/// Open a socket with `token` and send `resume`; the first answer that is `resumed` or an
/// error, and the socket.
async fn resume(node: &impl Target, token: &str, sid: &str, reconnect: &str) -> (ServerMessage, Ws) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url(node, token)).await.expect("upgrade");
    let msg = ClientMessage::Resume(ResumeRequest { participant_sid: sid.into(), reconnect_token: reconnect.into() });
    ws.send(Message::text(serde_json::to_string(&msg).unwrap())).await.unwrap();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("an answer in time");
        let Some(Ok(Message::Text(t))) = frame else { panic!("socket ended: {frame:?}") };
        let msg: ServerMessage = serde_json::from_str(&t).unwrap();
        if matches!(msg, ServerMessage::Resumed(_) | ServerMessage::Error(_)) {
            return (msg, ws);
        }
    }
}

fn resume_failed(msg: &ServerMessage) -> bool {
    matches!(msg, ServerMessage::Error(e) if e.code == ErrorCode::ResumeFailed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_resumes_mid_call_and_media_never_stops() {
    let _one_at_a_time = HEAVY.lock().await;
    let node = start_node().await;
    let alice_token = token("alice", "standup", |_| {});
    let mut a = Peer::join(&node, &alice_token, 1, &[TrackKind::Audio, TrackKind::Video]).await;
    let mut b = Peer::join(&node, &token("bob", "standup", |_| {}), 2, &[]).await;
    let (sid, reconnect) = a
        .wait_for(Duration::from_secs(5), |m| match m {
            ServerMessage::Joined(j) => Some((j.participant.sid.clone(), j.reconnect_token.clone())),
            _ => None,
        })
        .await
        .expect("joined");
    let sending = a.start_media(Duration::from_secs(40));
    assert!(
        eventually(Duration::from_secs(30), || b.valid_from(TrackKind::Audio, 1) > 50).await,
        "media flows before the drop: {}",
        b.valid_from(TrackKind::Audio, 1)
    );

    b.reset_gap(TrackKind::Audio, 1);
    let before = b.valid_from(TrackKind::Audio, 1);
    a.drop_socket().await;
    // The socket stays down for 2 s; the call goes on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = b.valid_from(TrackKind::Audio, 1) - before;

    // Checks on the resume itself: a wrong token, another identity, then the right one.
    let (wrong, _) = resume(&node, &alice_token, &sid, "not-the-token").await;
    assert!(resume_failed(&wrong), "{wrong:?}");
    let (other, _) = resume(&node, &token("mallory", "standup", |_| {}), &sid, &reconnect).await;
    assert!(resume_failed(&other), "{other:?}");
    let (resumed, mut ws) = resume(&node, &alice_token, &sid, &reconnect).await;
    let ServerMessage::Resumed(r) = &resumed else { panic!("expected resumed, got {resumed:?}") };
    assert_eq!(r.participant.sid, sid);
    assert_eq!(r.participant.tracks.len(), 2, "alice's tracks are still published");
    assert_eq!(r.other_participants.iter().map(|p| p.identity.as_str()).collect::<Vec<_>>(), ["bob"]);
    assert_ne!(r.reconnect_token, reconnect, "a fresh token");
    // The token is spent.
    let (reused, _) = resume(&node, &alice_token, &sid, &reconnect).await;
    assert!(resume_failed(&reused), "{reused:?}");

    // The resumed socket is live: a ping is answered.
    let ping = ClientMessage::Ping(switchyard_api::signal::Ping { timestamp_ms: 7, rtt_ms: None });
    ws.send(Message::text(serde_json::to_string(&ping).unwrap())).await.unwrap();
    let mut ponged = false;
    while let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        if matches!(serde_json::from_str(&t).unwrap(), ServerMessage::Pong(p) if p.timestamp_ms == 7) {
            ponged = true;
            break;
        }
    }
    assert!(ponged, "pong on the resumed socket");

    tokio::time::sleep(Duration::from_secs(1)).await;
    let gap = b.max_gap(TrackKind::Audio, 1);
    let total = b.valid_from(TrackKind::Audio, 1) - before;
    println!(
        "resume: longest gap in alice's audio at bob across drop + resume: {} ms \
         ({during} packets in the 2 s without a socket, {total} in all)",
        gap.as_millis()
    );
    assert!(during > 50, "media flowed while the socket was down: {during} packets");
    assert!(gap < Duration::from_secs(1), "longest gap {gap:?}");
    let left =
        b.wait_for(Duration::from_millis(200), |m| matches!(m, ServerMessage::ParticipantLeft(_)).then_some(())).await;
    assert!(left.is_none(), "bob never saw alice leave");

    // The metrics are folded in once a second.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = http(node.admin_addr, "GET", "/metrics").await.1;
        if metrics.contains("switchyard_media_resumes_total{result=\"ok\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics.contains("switchyard_media_resumes_total{result=\"ok\"} 1"), "{metrics}");
    assert!(metrics.contains("switchyard_media_resumes_total{result=\"bad_token\"} 2"), "{metrics}");
    assert!(metrics.contains("switchyard_media_resumes_total{result=\"wrong_identity\"} 1"), "{metrics}");
    sending.abort();
    a.close().await;
    b.close().await;
    node.shutdown().await;
}
