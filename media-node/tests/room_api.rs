//! The Room service (`/api/v1`) of a real node on loopback: grants, errors, rooms, and
//! operations on live sessions that the participants observe over signaling.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchyard_api::media_cluster::{WebhookEvent as Kind, WebhookSpec};
use switchyard_api::room_service::{OPERATIONS, REQUESTS_PER_SECOND_PER_KEY};
use switchyard_api::signal::{LeaveReason, ServerMessage, TrackKind};
use switchyard_api::token::{Claims, Grants, mint};
use switchyard_api::webhook::{self, WebhookEvent};
use switchyard_media_node::NodeHandle;
use tokio_tungstenite::tungstenite::Message;

/// A token with only the Room service grants `edit` sets.
fn admin_token(edit: impl FnOnce(&mut Grants)) -> String {
    let mut g = Grants::default();
    edit(&mut g);
    mint(&Claims::new(KEY, "backend", now(), 600).with_grants(g), SECRET).unwrap()
}

/// Every Room service grant, for every room.
fn full_token() -> String {
    admin_token(|g| {
        g.room_create = true;
        g.room_list = true;
        g.room_admin = true;
    })
}

/// One request with a bearer token; the body parsed as JSON (Null when empty).
async fn api(node: &NodeHandle, method: &str, path: &str, token: &str, body: Value) -> (u16, Value, String) {
    let auth = format!("Bearer {token}");
    let body = if body.is_null() { String::new() } else { body.to_string() };
    let mut headers = vec![("content-type", "application/json")];
    if !token.is_empty() {
        headers.push(("authorization", auth.as_str()));
    }
    let (status, head, text) = http_with(node.http_addr, method, &format!("/api/v1{path}"), &headers, &body).await;
    let v = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, v, head)
}

async fn joined(node: &NodeHandle, identity: &str, room: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(url(node, &token(identity, room, |_| {}))).await.unwrap();
    ws.send(Message::text(r#"{"type":"join","protocolVersion":1}"#)).await.unwrap();
    assert!(next_matching(&mut ws, |m| matches!(m, ServerMessage::Joined(_))).await.is_some());
    ws
}

/// The next message `f` accepts, skipping others; `None` on close or after 5 s.
async fn next_matching(ws: &mut Ws, f: impl Fn(&ServerMessage) -> bool) -> Option<ServerMessage> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => {
                let m: ServerMessage = serde_json::from_str(&t).unwrap();
                if f(&m) {
                    return Some(m);
                }
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn tokens_without_the_grant_are_refused_with_a_reason() {
    let node = start_node().await;
    let (status, body, _) = api(&node, "GET", "/rooms", "", Value::Null).await;
    assert_eq!(
        (status, body["code"].as_str(), body["reason"].as_str()),
        (401, Some("unauthorized"), Some("missing_token"))
    );

    let join_only = token("alice", "standup", |_| {});
    let (status, body, _) = api(&node, "POST", "/rooms", &join_only, json!({"name": "standup"})).await;
    assert_eq!(status, 403);
    assert_eq!(body["code"], "permission_denied");
    assert_eq!(body["reason"], "missing_grant");
    assert!(body["message"].as_str().unwrap().contains("roomCreate"), "{body}");
    let (status, body, _) = api(&node, "GET", "/rooms", &join_only, Value::Null).await;
    assert_eq!((status, body["reason"].as_str()), (403, Some("missing_grant")));
    assert!(body["message"].as_str().unwrap().contains("roomList"), "{body}");
    let (status, body, _) = api(&node, "GET", "/rooms/standup/participants", &join_only, Value::Null).await;
    assert_eq!(status, 403);
    assert!(body["message"].as_str().unwrap().contains("roomAdmin"), "{body}");

    // roomAdmin for one room is not roomAdmin for another.
    let one_room = admin_token(|g| {
        g.room_admin = true;
        g.room = Some("standup".into());
    });
    let (status, body, _) = api(&node, "DELETE", "/rooms/retro", &one_room, Value::Null).await;
    assert_eq!((status, body["reason"].as_str()), (403, Some("wrong_room")));
    let (status, body, _) = api(&node, "GET", "/rooms/standup", &one_room, Value::Null).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("room_not_found")), "allowed, and not there");

    let expired = mint(&Claims::new(KEY, "backend", now() - 7200, 60).with_grants(Grants::default()), SECRET).unwrap();
    let (status, body, _) = api(&node, "GET", "/rooms", &expired, Value::Null).await;
    assert_eq!((status, body["reason"].as_str()), (401, Some("token_expired")));
    node.shutdown().await;
}

#[tokio::test]
async fn rooms_are_created_listed_got_and_deleted() {
    let node = start_node().await;
    let t = full_token();
    let create = json!({"name": "standup", "maxParticipants": 2, "emptyTimeoutSeconds": 60, "metadata": "m1",
        "allowedCodecs": ["Opus", "VP9"]});
    let (status, room, _) = api(&node, "POST", "/rooms", &t, create.clone()).await;
    assert_eq!(status, 201, "{room}");
    assert_eq!((room["name"].as_str(), room["maxParticipants"].as_u64()), (Some("standup"), Some(2)));
    assert_eq!((room["emptyTimeoutSeconds"].as_u64(), room["metadata"].as_str()), (Some(60), Some("m1")));
    assert_eq!(room["enabledCodecs"], json!(["Opus", "VP9"]));
    assert_eq!(room["numParticipants"], 0);
    let (status, body, _) = api(&node, "POST", "/rooms", &t, create).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("room_exists")));

    let (status, body, _) = api(&node, "POST", "/rooms", &t, json!({"name": "Bad Name"})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));
    let (status, body, _) = api(&node, "POST", "/rooms", &t, json!({"name": "x", "emptyTimeout": 5})).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("unknown field"), "{body}");

    api(&node, "POST", "/rooms", &t, json!({"name": "retro"})).await;
    let (status, list, _) = api(&node, "GET", "/rooms", &t, Value::Null).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["rooms"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["retro", "standup"]);
    let (_, list, _) = api(&node, "GET", "/rooms?names=standup,nope", &t, Value::Null).await;
    assert_eq!(list["rooms"].as_array().unwrap().len(), 1);

    let (status, got, _) = api(&node, "GET", "/rooms/standup", &t, Value::Null).await;
    assert_eq!((status, &got["sid"]), (200, &room["sid"]));
    let (status, body, _) = api(&node, "GET", "/rooms/nope", &t, Value::Null).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("room_not_found")));

    // A room opened here is the one a join lands in.
    let _alice = joined(&node, "alice", "standup").await;
    let (_, got, _) = api(&node, "GET", "/rooms/standup", &t, Value::Null).await;
    assert_eq!((&got["sid"], got["numParticipants"].as_u64()), (&room["sid"], Some(1)));

    assert_eq!(api(&node, "DELETE", "/rooms/standup", &t, Value::Null).await.0, 204);
    assert_eq!(api(&node, "GET", "/rooms/standup", &t, Value::Null).await.0, 404);
    assert_eq!(api(&node, "DELETE", "/rooms/standup", &t, Value::Null).await.0, 404);
    node.shutdown().await;
}

#[tokio::test]
async fn participant_changes_apply_to_the_live_session() {
    let node = start_node().await;
    let t = full_token();
    let mut alice = joined(&node, "alice", "standup").await;
    let mut bob = joined(&node, "bob", "standup").await;

    let (status, list, _) = api(&node, "GET", "/rooms/standup/participants", &t, Value::Null).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> =
        list["participants"].as_array().unwrap().iter().map(|p| p["identity"].as_str().unwrap()).collect();
    assert_eq!(ids, ["alice", "bob"]);
    let (status, p, _) = api(&node, "GET", "/rooms/standup/participants/alice", &t, Value::Null).await;
    assert_eq!((status, p["permission"]["canPublishData"].as_bool()), (200, Some(true)));
    let (status, body, _) = api(&node, "GET", "/rooms/standup/participants/carol%20x", &t, Value::Null).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("participant_not_found")));
    assert!(body["message"].as_str().unwrap().contains("\"carol x\""), "the identity is decoded: {body}");

    // Revoke alice's data permission: she is told, and her next data message is refused.
    let update = json!({"metadata": "muted-chat", "name": "Alice", "permission": {"canPublishData": false}});
    let (status, p, _) = api(&node, "PATCH", "/rooms/standup/participants/alice", &t, update).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!((p["permission"]["canPublishData"].as_bool(), p["name"].as_str()), (Some(false), Some("Alice")));
    let told = next_matching(&mut alice, |m| matches!(m, ServerMessage::ParticipantUpdated(_))).await;
    let Some(ServerMessage::ParticipantUpdated(e)) = told else { panic!("{told:?}") };
    assert_eq!((e.participant.identity.as_str(), e.participant.permission.can_publish_data), ("alice", false));
    assert_eq!(e.participant.metadata.as_deref(), Some("muted-chat"));
    assert!(next_matching(&mut bob, |m| matches!(m, ServerMessage::ParticipantUpdated(_))).await.is_some());
    alice.send(Message::text(r#"{"type":"data","kind":"reliable","payload":"aGk="}"#)).await.unwrap();
    let refused = next_matching(&mut alice, |m| matches!(m, ServerMessage::Error(_))).await;
    assert!(
        matches!(&refused, Some(ServerMessage::Error(e)) if e.code == switchyard_api::signal::ErrorCode::PermissionDenied),
        "{refused:?}"
    );
    let (status, body, _) = api(&node, "PATCH", "/rooms/standup/participants/alice", &t, json!({})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));

    // Room metadata reaches everyone; server data reaches whom it names.
    let (status, room, _) = api(&node, "PATCH", "/rooms/standup", &t, json!({"metadata": "agenda"})).await;
    assert_eq!((status, room["metadata"].as_str()), (200, Some("agenda")));
    for ws in [&mut alice, &mut bob] {
        let m = next_matching(ws, |m| matches!(m, ServerMessage::RoomUpdated(_))).await;
        assert!(matches!(m, Some(ServerMessage::RoomUpdated(u)) if u.room.metadata.as_deref() == Some("agenda")));
    }
    let data = json!({"payload": "aGVsbG8=", "topic": "ops", "destinationIdentities": ["bob"]});
    let (status, sent, _) = api(&node, "POST", "/rooms/standup/data", &t, data).await;
    assert_eq!((status, sent["recipients"].as_u64()), (200, Some(1)));
    let m = next_matching(&mut bob, |m| matches!(m, ServerMessage::Data(_))).await;
    assert!(matches!(&m, Some(ServerMessage::Data(d)) if d.payload == "aGVsbG8=" && d.identity.is_empty()), "{m:?}");
    let (status, body, _) = api(&node, "POST", "/rooms/standup/data", &t, json!({"payload": "%%"})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));

    let (status, body, _) =
        api(&node, "POST", "/rooms/standup/participants/alice/tracks/TR_nope/mute", &t, json!({"muted": true})).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("track_not_found")));

    // Removal: she is told why, the room hears she left.
    assert_eq!(api(&node, "DELETE", "/rooms/standup/participants/alice", &t, Value::Null).await.0, 204);
    let m = next_matching(&mut alice, |m| matches!(m, ServerMessage::Leave(_))).await;
    assert!(matches!(m, Some(ServerMessage::Leave(l)) if l.reason == LeaveReason::Removed && !l.can_reconnect));
    let m = next_matching(&mut bob, |m| matches!(m, ServerMessage::ParticipantLeft(_))).await;
    assert!(matches!(m, Some(ServerMessage::ParticipantLeft(l)) if l.reason == LeaveReason::Removed));
    assert_eq!(api(&node, "GET", "/rooms/standup/participants/alice", &t, Value::Null).await.0, 404);
    node.shutdown().await;
}

/// What a webhook receiver verified.
#[derive(Clone, Default)]
struct Hooks(Arc<Mutex<Vec<WebhookEvent>>>);

impl Hooks {
    async fn start() -> (Hooks, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let hooks = Hooks::default();
        let seen = hooks.clone();
        let app = axum::Router::new().route(
            "/events",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| async move {
                let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
                let e = webhook::verify(&body, auth, |k| (k == KEY).then(|| SECRET.to_owned()), now()).unwrap();
                seen.0.lock().unwrap().push(e);
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        (hooks, url)
    }

    fn find(&self, kind: Kind) -> Option<WebhookEvent> {
        self.0.lock().unwrap().iter().find(|e| e.event == kind).cloned()
    }

    async fn wait(&self, kind: Kind) -> WebhookEvent {
        assert!(eventually(Duration::from_secs(10), || self.find(kind).is_some()).await, "no {kind:?} webhook");
        self.find(kind).unwrap()
    }
}

#[tokio::test]
async fn a_muted_track_and_a_deleted_room_are_seen_by_participants_and_webhooks() {
    let _heavy = HEAVY.lock().await;
    let (hooks, hook_url) = Hooks::start().await;
    let node =
        start_node_with(|c| c.webhooks = vec![WebhookSpec { url: hook_url, events: vec![], api_key: None }]).await;
    let t = full_token();
    let mut alice = Peer::join(&node, &token("alice", "standup", |_| {}), 1, &[TrackKind::Audio]).await;
    let track = alice
        .wait_for(Duration::from_secs(10), |m| match m {
            ServerMessage::TrackPublished(p) => Some(p.track.sid.clone()),
            _ => None,
        })
        .await
        .expect("alice's track is published");

    let path = format!("/rooms/standup/participants/alice/tracks/{track}/mute");
    let (status, body, _) = api(&node, "POST", &path, &t, json!({"muted": true})).await;
    assert_eq!((status, body["track"]["muted"].as_bool()), (200, Some(true)), "{body}");
    let muted = alice
        .wait_for(Duration::from_secs(5), |m| match m {
            ServerMessage::TrackMuted(tm) if tm.track_sid == track => Some(tm.muted),
            _ => None,
        })
        .await;
    assert_eq!(muted, Some(true), "the publisher hears its track was muted");
    let (_, p, _) = api(&node, "GET", "/rooms/standup/participants/alice", &t, Value::Null).await;
    assert_eq!(p["tracks"][0]["muted"], true);

    // Revoking canPublish unpublishes the track: track_unpublished fires.
    let revoke = json!({"permission": {"canPublish": false}});
    assert_eq!(api(&node, "PATCH", "/rooms/standup/participants/alice", &t, revoke).await.0, 200);
    let unpublished = hooks.wait(Kind::TrackUnpublished).await;
    assert_eq!(unpublished.track.as_ref().map(|t| t.sid.as_str()), Some(track.as_str()));

    assert_eq!(api(&node, "DELETE", "/rooms/standup", &t, Value::Null).await.0, 204);
    let left = alice
        .wait_for(Duration::from_secs(5), |m| match m {
            ServerMessage::Leave(l) => Some(l.reason),
            _ => None,
        })
        .await;
    assert_eq!(left, Some(LeaveReason::RoomClosed));
    let finished = hooks.wait(Kind::RoomFinished).await;
    let started = hooks.wait(Kind::RoomStarted).await;
    assert!(finished.room.sid.starts_with("RM_"), "{finished:?}");
    assert_eq!(finished.room.sid, started.room.sid, "one room, one sid");
    let left = hooks.wait(Kind::ParticipantLeft).await;
    let who = left.participant.unwrap();
    assert_eq!((who.identity.as_str(), who.leave_reason), ("alice", Some(LeaveReason::RoomClosed)));
    let joined = hooks.wait(Kind::ParticipantJoined).await;
    assert_eq!(joined.participant.unwrap().sid, who.sid, "the same session's sid in every event");
    alice.close().await;
    node.shutdown().await;
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let node = start_node().await;
    let t = full_token();
    for op in OPERATIONS {
        let path = op.path.replace("{room}", "nope").replace("{identity}", "who").replace("{track}", "TR_x");
        let body = if op.request.is_some() { json!({}) } else { Value::Null };
        let (status, body, _) = api(&node, op.method, &path, &t, body).await;
        // Served (a JSON answer from the handler), never the router's bare 404/405.
        assert!(body.is_object(), "{op:?} answered {status} {body}");
    }
    let (status, _, _) = api(&node, "PUT", "/rooms", &t, Value::Null).await;
    assert_eq!(status, 405);
    node.shutdown().await;
}

#[tokio::test]
async fn a_key_over_its_request_budget_gets_429_with_retry_after() {
    let node = start_node().await;
    let t = admin_token(|g| g.room_list = true);
    let mut limited = None;
    for _ in 0..(REQUESTS_PER_SECOND_PER_KEY * 4) {
        let (status, body, head) = api(&node, "GET", "/rooms", &t, Value::Null).await;
        if status == 429 {
            limited = Some((body, head));
            break;
        }
    }
    let (body, head) = limited.expect("the budget runs out");
    assert_eq!(body["code"], "rate_limited");
    assert!(head.contains("retry-after: 1"), "{head}");
    node.shutdown().await;
}
