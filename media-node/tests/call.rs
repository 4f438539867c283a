//! Calls through a real media-node with real WebRTC peers (webrtc-rs) on loopback.

mod common;

use std::time::Duration;

use common::*;
use switchyard_api::signal::{ErrorCode, ServerMessage, TrackKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_party_call_carries_audio_and_video_both_ways() {
    let _one_at_a_time = HEAVY.lock().await;
    let node = start_node().await;
    let a = Peer::join(&node, &token("alice", "standup", |_| {}), 1, &[TrackKind::Audio, TrackKind::Video]).await;
    let b = Peer::join(&node, &token("bob", "standup", |_| {}), 2, &[TrackKind::Audio, TrackKind::Video]).await;
    // Media runs until the receivers have enough (or the deadline passes): a loaded
    // machine slows the handshake, not the assertion.
    let sa = a.start_media(Duration::from_secs(30));
    let sb = b.start_media(Duration::from_secs(30));
    let flowing = eventually(Duration::from_secs(30), || {
        a.valid_from(TrackKind::Audio, 2) > 50
            && a.valid_from(TrackKind::Video, 2) > 25
            && b.valid_from(TrackKind::Audio, 1) > 50
            && b.valid_from(TrackKind::Video, 1) > 25
    })
    .await;
    sa.abort();
    sb.abort();
    let report = format!(
        "alice got audio {} video {} from bob; bob got audio {} video {} from alice; invalid {}/{} {:?}",
        a.valid_from(TrackKind::Audio, 2),
        a.valid_from(TrackKind::Video, 2),
        b.valid_from(TrackKind::Audio, 1),
        b.valid_from(TrackKind::Video, 1),
        a.invalid(),
        b.invalid(),
        a.first_invalid()
    );
    assert!(flowing, "{report}");
    assert_eq!((a.invalid(), b.invalid()), (0, 0), "{report}");
    assert_eq!(a.valid_from(TrackKind::Audio, 1), 0, "nobody receives their own media");
    a.close().await;
    b.close().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_reaches_ten_subscribers() {
    let _one_at_a_time = HEAVY.lock().await;
    let node = start_node().await;
    let publisher =
        Peer::join(&node, &token("stage", "town-hall", |_| {}), 1, &[TrackKind::Audio, TrackKind::Video]).await;
    let mut viewers = vec![];
    for i in 0..10u8 {
        let t = token(&format!("viewer{i}"), "town-hall", |g| g.can_publish = false);
        viewers.push(Peer::join(&node, &t, 10 + i, &[]).await);
    }
    let sending = publisher.start_media(Duration::from_secs(30));
    let all = eventually(Duration::from_secs(30), || {
        viewers.iter().all(|v| v.valid_from(TrackKind::Audio, 1) > 30 && v.valid_from(TrackKind::Video, 1) > 15)
    })
    .await;
    let counts: Vec<(u64, u64, u64)> = viewers
        .iter()
        .map(|v| (v.valid_from(TrackKind::Audio, 1), v.valid_from(TrackKind::Video, 1), v.invalid()))
        .collect();
    let report = http(node.admin_addr, "GET", "/internal/rooms").await.1;
    let mut states = vec![];
    for v in &viewers {
        states.push(format!("{:?}", v.pc.connection_state()));
    }
    assert!(all, "per viewer (audio, video, invalid): {counts:?}\nconnection states: {states:?}\nrooms: {report}");
    assert!(counts.iter().all(|c| c.2 == 0), "{counts:?}");
    let mut status = node.status().await;
    for _ in 0..50 {
        if status.bandwidth_bps > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = node.status().await;
    }
    let measured = status.bandwidth_bps > 0;
    sending.abort();
    assert_eq!((status.rooms, status.participants), (1, 11));
    assert!(measured, "bandwidth is measured: {status:?}");
    // Per-track counters on the admin API: the publisher's two tracks, each forwarded to ten.
    let (code, body) = http(node.admin_addr, "GET", "/internal/rooms").await;
    assert_eq!(code, 200);
    let rooms: serde_json::Value = serde_json::from_str(&body).unwrap();
    let stage = rooms[0]["participants"].as_array().unwrap().iter().find(|p| p["identity"] == "stage").unwrap().clone();
    let tracks = stage["tracks"].as_array().unwrap();
    assert_eq!(tracks.len(), 2);
    assert!(
        tracks.iter().all(|t| t["packets"].as_u64().unwrap() > 15 && t["bytes"].as_u64().unwrap() > 1000),
        "{tracks:?}"
    );
    let viewer =
        rooms[0]["participants"].as_array().unwrap().iter().find(|p| p["identity"] == "viewer3").unwrap().clone();
    let subs = viewer["subscriptions"].as_array().unwrap();
    assert!(
        subs.len() == 2 && subs.iter().all(|s| s["open"] == true && s["packets"].as_u64().unwrap() > 10),
        "{subs:?}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_messages_round_trip_over_signaling_and_data_channels() {
    let _one_at_a_time = HEAVY.lock().await;
    let node = start_node().await;
    let mut a = Peer::join(&node, &token("alice", "chat", |_| {}), 1, &[]).await;
    let mut b = Peer::join(&node, &token("bob", "chat", |_| {}), 2, &[]).await;
    let mut c = Peer::join(&node, &token("carol", "chat", |_| {}), 3, &[]).await;

    // Signaling data, to everyone and to one identity.
    a.send_data("hello room", vec![]);
    let got = |m: &ServerMessage| match m {
        ServerMessage::Data(d) => Some((d.identity.clone(), d.payload.clone())),
        _ => None,
    };
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert_eq!(b.wait_for(Duration::from_secs(5), got).await, Some(("alice".into(), b64("hello room"))));
    assert_eq!(c.wait_for(Duration::from_secs(5), got).await, Some(("alice".into(), b64("hello room"))));
    b.send_data("just for alice", vec!["alice".into()]);
    assert_eq!(a.wait_for(Duration::from_secs(5), got).await, Some(("bob".into(), b64("just for alice"))));
    assert_eq!(c.wait_for(Duration::from_millis(500), got).await, None, "carol was not addressed");

    // The WebRTC data channel ("reliable" on both sides) is relayed by the SFU.
    let open = eventually(Duration::from_secs(10), || {
        futures_util::FutureExt::now_or_never(a.channel.send_text("ping over sctp")).is_some_and(|r| r.is_ok())
            && b.received.lock().unwrap().data_channel.iter().any(|m| m == "ping over sctp")
    })
    .await;
    assert!(open, "bob received {:?}", b.received.lock().unwrap().data_channel);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_without_can_publish_cannot_publish() {
    let _one_at_a_time = HEAVY.lock().await;
    let node = start_node().await;
    let mut viewer = Peer::join(
        &node,
        &token("viewer", "stage", |g| g.can_publish = false),
        7,
        &[TrackKind::Audio, TrackKind::Video],
    )
    .await;
    let listener = Peer::join(&node, &token("listener", "stage", |_| {}), 8, &[]).await;
    let denied = viewer
        .wait_for(Duration::from_secs(5), |m| match m {
            ServerMessage::Error(e) if e.code == ErrorCode::PermissionDenied => Some(e.message.clone()),
            _ => None,
        })
        .await;
    assert_eq!(denied.as_deref(), Some("token lacks the canPublish grant"));
    let sending = viewer.start_media(Duration::from_secs(2));
    let sent = sending.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sent > 100, "the viewer did try to send ({sent} samples)");
    assert_eq!(listener.valid_from(TrackKind::Audio, 7) + listener.valid_from(TrackKind::Video, 7), 0);
    let status = node.status().await;
    assert_eq!(status.participants, 2);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_before_the_upgrade_with_a_reason() {
    use switchyard_api::token::{Claims, Grants, mint};
    let node = start_node().await;
    let refused = |t: String| {
        let node = &node;
        async move {
            match Peer::try_join(node, &t, 1, &[]).await {
                Err(ConnectError::Http(status, body)) => (status, body["code"].as_str().unwrap_or_default().to_owned()),
                Err(e @ (ConnectError::Other(_) | ConnectError::Refused(_))) => {
                    panic!("expected an HTTP refusal, got {e:?}")
                }
                Ok(_) => panic!("token was accepted"),
            }
        }
    };
    let expired = mint(&Claims::new(KEY, "late", now() - 7200, 600).with_grants(Grants::join("r")), SECRET).unwrap();
    assert_eq!(refused(expired).await, (401, "token_expired".into()));
    let forged = mint(&Claims::new(KEY, "eve", now(), 600).with_grants(Grants::join("r")), "not-the-secret").unwrap();
    assert_eq!(refused(forged).await, (401, "bad_signature".into()));
    let unknown = mint(&Claims::new("otherkey", "eve", now(), 600).with_grants(Grants::join("r")), SECRET).unwrap();
    assert_eq!(refused(unknown).await, (401, "unknown_key".into()));
    assert_eq!(refused("garbage".into()).await, (401, "malformed_token".into()));
    let no_join = token("x", "r", |g| g.room_join = false);
    assert_eq!(refused(no_join).await, (403, "missing_grant".into()));
    // A token for room "r" used for room "other".
    let t = token("x", "r", |_| {});
    let resp =
        tokio_tungstenite::connect_async(format!("ws://{}/rtc?access_token={t}&room=other", node.http_addr)).await;
    match resp {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 403);
            let body: serde_json::Value = serde_json::from_slice(r.body().as_ref().unwrap()).unwrap();
            assert_eq!(body["code"], "wrong_room");
        }
        other => panic!("expected 403, got {other:?}"),
    }
    node.shutdown().await;
}

/// The RTCP-derived metrics fill from real peers: loss, RTT and jitter histograms get
/// observations, and both participants get a connection-quality verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_fills_the_quality_histograms_and_rates_both_connections() {
    let _one_at_a_time = HEAVY.lock().await;
    let node = start_node().await;
    let mut a = Peer::join(&node, &token("alice", "quality", |_| {}), 1, &[TrackKind::Audio, TrackKind::Video]).await;
    let b = Peer::join(&node, &token("bob", "quality", |_| {}), 2, &[TrackKind::Audio, TrackKind::Video]).await;
    let sa = a.start_media(Duration::from_secs(30));
    let sb = b.start_media(Duration::from_secs(30));
    let count = |metrics: &str, name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let names = [
        "switchyard_media_packet_loss_ratio_count",
        "switchyard_media_rtt_seconds_count",
        "switchyard_media_jitter_seconds_count",
    ];
    let mut metrics = String::new();
    let mut filled = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !filled && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        metrics = http(node.admin_addr, "GET", "/metrics").await.1;
        filled = names.iter().all(|n| count(&metrics, n) > 0.0);
    }
    let quality = a
        .wait_for(Duration::from_secs(20), |m| match m {
            ServerMessage::ConnectionQuality(q) if !q.updates.is_empty() => {
                Some(q.updates.iter().map(|u| u.quality).collect::<Vec<_>>())
            }
            _ => None,
        })
        .await;
    sa.abort();
    sb.abort();
    let lines: Vec<&str> = metrics.lines().filter(|l| l.contains("_count") || l.contains("by_quality")).collect();
    assert!(filled, "{lines:#?}");
    println!("quality metrics after a call: {lines:#?}; first verdicts alice heard: {quality:?}");
    assert!(quality.is_some_and(|q| !q.is_empty()), "alice heard no connection_quality");
    a.close().await;
    b.close().await;
    node.shutdown().await;
}
