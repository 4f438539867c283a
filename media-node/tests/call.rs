//! Calls through a real media-node with real WebRTC peers (webrtc-rs) on loopback.

mod common;

use std::time::Duration;

use common::*;
use switchyard_api::signal::{ErrorCode, ServerMessage, TrackKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_party_call_carries_audio_and_video_both_ways() {
    let node = start_node().await;
    let a = Peer::join(&node, &token("alice", "standup", |_| {}), 1, &[TrackKind::Audio, TrackKind::Video]).await;
    let b = Peer::join(&node, &token("bob", "standup", |_| {}), 2, &[TrackKind::Audio, TrackKind::Video]).await;
    let sa = a.start_media(Duration::from_secs(4));
    let sb = b.start_media(Duration::from_secs(4));
    let flowing = eventually(Duration::from_secs(10), || {
        a.valid_from(TrackKind::Audio, 2) > 50
            && a.valid_from(TrackKind::Video, 2) > 25
            && b.valid_from(TrackKind::Audio, 1) > 50
            && b.valid_from(TrackKind::Video, 1) > 25
    })
    .await;
    let (sent_a, sent_b) = (sa.await.unwrap(), sb.await.unwrap());
    let report = format!(
        "alice got audio {} video {} from bob; bob got audio {} video {} from alice; sent {sent_a}/{sent_b}; invalid {}/{} {:?}",
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
