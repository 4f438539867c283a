//! The Room service in Kubernetes mode: rooms are `Room` objects, and what happens in a
//! room is asked of the node hosting it.
//!
//! ```text
//!  create ── Room object ── wait (placement timeout) for status.node ── open it there
//!  list / get ── the Room reflector (every node answers the same)
//!  delete ── close it on its node, delete the Room (the operator's finalizer ends it)
//!  metadata ── patch spec.metadata, then apply it live on its node
//!  participants, mute, data ── the hosting node (this one: served here; another:
//!                              the request is forwarded with FORWARDED_HEADER, once)
//! ```
//!
//! A room that is placed but not yet open on its node (nobody joined, nobody created it
//! through this API) has no participants: listing them answers an empty list.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use switchyard_api::Room;
use switchyard_api::room::{Codec, RoomSpec};
use switchyard_api::room_service::{ApiError, ApiErrorCode, CreateRoomRequest, ListRoomsResponse, UpdateRoomRequest};
use switchyard_api::signal::RoomInfo;

use crate::cluster::{Cluster, FORWARDED_HEADER, room_sid};
use crate::node::Shared;
use crate::room_api::{Done, Failure, Req, local};

/// How long a forwarded request may take on the hosting node.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read back from the hosting node.
const MAX_FORWARDED_BYTES: usize = 4 * 1024 * 1024;

/// Serve one (authorized) request in Kubernetes mode.
pub(crate) async fn serve(shared: &Arc<Shared>, cluster: &Cluster, req: &Req) -> Result<Done, Failure> {
    match req.op.id {
        "CreateRoom" => create(shared, cluster, req).await,
        "ListRooms" => {
            let names = req.names();
            let rooms = cluster
                .room_objects()
                .iter()
                .filter(|r| names.is_empty() || names.contains(&r.name_any()))
                .map(|r| info(shared, r))
                .collect();
            Ok((StatusCode::OK, Some(serde_json::to_value(ListRoomsResponse { rooms }).expect("serializes"))))
        }
        "GetRoom" => {
            let room = object(cluster, req.room())?;
            Ok((StatusCode::OK, Some(serde_json::to_value(info(shared, &room)).expect("serializes"))))
        }
        "DeleteRoom" => {
            let room = object(cluster, req.room())?;
            // Close it on its node first, so participants leave now rather than when the
            // operator's finalizer runs; a room not open there is no error.
            match on_host(shared, cluster, &room, req).await {
                Ok(_) => {}
                Err(Failure::Api(e)) if e.code == ApiErrorCode::RoomNotFound => {}
                Err(Failure::Api(e)) => tracing::warn!(room = %req.room(), error = %e, "closing on its node"),
                Err(Failure::Relayed(r)) if r.status() == StatusCode::NOT_FOUND => {}
                Err(Failure::Relayed(r)) => {
                    tracing::warn!(room = %req.room(), status = %r.status(), "closing on its node")
                }
            }
            match cluster.api().delete(req.room(), &DeleteParams::default()).await {
                Ok(_) => Ok((StatusCode::NO_CONTENT, None)),
                Err(kube::Error::Api(e)) if e.code == 404 => Err(ApiError::room_not_found(req.room()).into()),
                Err(e) => Err(unavailable(format!("deleting Room {}: {e}", req.room()), "kubernetes_api").into()),
            }
        }
        "UpdateRoomMetadata" => {
            let room = object(cluster, req.room())?;
            let update: UpdateRoomRequest = req.json()?;
            update.validate()?;
            let patch = serde_json::json!({ "spec": { "metadata": update.metadata } });
            if let Err(e) = cluster.api().patch(req.room(), &PatchParams::default(), &Patch::Merge(&patch)).await {
                return Err(unavailable(format!("updating Room {}: {e}", req.room()), "kubernetes_api").into());
            }
            match on_host(shared, cluster, &room, req).await {
                // Open on its node: that node's answer is the live room.
                Err(Failure::Relayed(r)) if r.status().is_success() => Err(Failure::Relayed(r)),
                Ok(done) => Ok(done),
                // Not open anywhere yet: the object is the room.
                _ => {
                    let mut info = info(shared, &room);
                    info.metadata = Some(update.metadata);
                    Ok((StatusCode::OK, Some(serde_json::to_value(info).expect("serializes"))))
                }
            }
        }
        // Participants, tracks, data: where the room is.
        _ => {
            let room = object(cluster, req.room())?;
            on_host(shared, cluster, &room, req).await
        }
    }
}

fn object(cluster: &Cluster, name: &str) -> Result<Arc<Room>, ApiError> {
    cluster.room_object(name).ok_or_else(|| ApiError::room_not_found(name))
}

fn unavailable(message: String, reason: &str) -> ApiError {
    ApiError::new(ApiErrorCode::Unavailable, message).with_reason(reason).retry_after(1)
}

/// A Room object as the service shows a room, with the node's defaults.
fn info(shared: &Shared, room: &Room) -> RoomInfo {
    room_info(room, shared.cfg.max_participants, shared.cfg.empty_timeout())
}

/// A Room object as a [`RoomInfo`]: what its spec sets over the defaults, the
/// participants its hosting node last reported, its sid from its uid.
fn room_info(room: &Room, default_max: u32, default_timeout: Duration) -> RoomInfo {
    let spec = &room.spec;
    let status = room.status.clone().unwrap_or_default();
    let codecs = if spec.allowed_codecs.is_empty() { Codec::ALL.to_vec() } else { spec.allowed_codecs.clone() };
    let created_at_ms = room
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| u64::try_from(t.0.as_millisecond()).unwrap_or(0))
        .unwrap_or(0);
    RoomInfo {
        sid: room_sid(room).unwrap_or_default(),
        name: room.name_any(),
        metadata: spec.metadata.clone(),
        max_participants: spec.max_participants.map_or(default_max, |m| u32::try_from(m).unwrap_or(0)),
        empty_timeout_seconds: spec
            .empty_timeout_seconds
            .map_or(default_timeout.as_secs() as u32, |s| u32::try_from(s).unwrap_or(0)),
        num_participants: u32::try_from(status.participants).unwrap_or(0),
        enabled_codecs: codecs,
        created_at_ms,
    }
}

/// Create the Room, wait for its placement, open it on its node.
async fn create(shared: &Arc<Shared>, cluster: &Cluster, req: &Req) -> Result<Done, Failure> {
    let c: CreateRoomRequest = req.json()?;
    let spec = RoomSpec {
        cluster_ref: cluster.mode().cluster.clone(),
        max_participants: c.max_participants.map(|m| i32::try_from(m).unwrap_or(i32::MAX)),
        empty_timeout_seconds: c.empty_timeout_seconds.map(|s| i32::try_from(s).unwrap_or(i32::MAX)),
        allowed_codecs: c.allowed_codecs.clone(),
        metadata: c.metadata.clone(),
    };
    match cluster.create_room(&c.name, spec).await {
        Ok(_) => tracing::info!(room = %c.name, "created Room for the room service"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            return Err(ApiError::new(ApiErrorCode::RoomExists, format!("room {:?} exists", c.name)).into());
        }
        Err(kube::Error::Api(e)) if e.code == 422 => {
            return Err(ApiError::bad_request(format!("the Room was refused: {}", e.message)).into());
        }
        Err(e) => return Err(unavailable(format!("creating Room {}: {e}", c.name), "kubernetes_api").into()),
    }
    let timeout = cluster.mode().placement_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(room) = cluster.room_object(&c.name)
            && room.status.as_ref().and_then(|s| s.node.as_deref()).is_some()
        {
            match on_host(shared, cluster, &room, req).await {
                Err(Failure::Api(e))
                    if e.code == ApiErrorCode::Unavailable && e.reason.as_deref() == Some("no_address") => {}
                other => return other,
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(unavailable(
                format!(
                    "room {:?} was created but not placed within {} s; it opens once placed",
                    c.name,
                    timeout.as_secs()
                ),
                "placement_timeout",
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Serve `req` where `room` is placed: here, or forwarded to that node.
async fn on_host(shared: &Arc<Shared>, cluster: &Cluster, room: &Room, req: &Req) -> Result<Done, Failure> {
    let Some(node) = room.status.as_ref().and_then(|s| s.node.clone()) else {
        // Not placed: nobody can be in it.
        return match req.op.id {
            "ListParticipants" => {
                Ok(crate::room_api::answer(req.op, crate::engine::admin::Answer::Participants(vec![])))
            }
            "SendData" => Ok(crate::room_api::answer(req.op, crate::engine::admin::Answer::Sent(0))),
            "GetParticipant" | "UpdateParticipant" | "RemoveParticipant" | "MutePublishedTrack" => {
                Err(ApiError::participant_not_found(req.room(), req.param("identity")).into())
            }
            _ => Err(ApiError::room_not_found(req.room()).into()),
        };
    };
    if node == cluster.me() {
        return local(shared, req).await.map_err(Failure::Api);
    }
    let Some(ip) = cluster.pod_ip(&node) else {
        return Err(unavailable(format!("the room's node {node} has no address yet"), "no_address").into());
    };
    forward(shared, &node, ip, req).await
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> &'static HttpClient {
    static CLIENT: OnceLock<HttpClient> = OnceLock::new();
    CLIENT.get_or_init(|| Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build_http())
}

/// Send `req` to the signaling port of `node` at `ip` and pass its answer on.
async fn forward(shared: &Shared, node: &str, ip: IpAddr, req: &Req) -> Result<Done, Failure> {
    let host = if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
    let uri = format!("http://{host}:{}{}", shared.cfg.http_addr.port(), req.path_and_query());
    let mut builder = hyper::Request::builder()
        .method(req.op.method)
        .uri(&uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            FORWARDED_HEADER,
            HeaderValue::from_str(&shared.cfg.node_name).unwrap_or(HeaderValue::from_static("node")),
        );
    if let Some(auth) = &req.authorization {
        builder = builder.header(header::AUTHORIZATION, auth.clone());
    }
    let request = builder
        .body(Full::new(req.body.clone()))
        .map_err(|e| ApiError::new(ApiErrorCode::Internal, format!("forward request: {e}")))?;
    let unreachable =
        |why: String| unavailable(format!("the room's node {node} is unreachable: {why}"), "node_unreachable");
    let response = match tokio::time::timeout(FORWARD_TIMEOUT, client().request(request)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(unreachable(e.to_string()).into()),
        Err(_) => return Err(unreachable(format!("no answer within {} s", FORWARD_TIMEOUT.as_secs())).into()),
    };
    let status = response.status();
    let retry = response.headers().get(header::RETRY_AFTER).cloned();
    let body = match Limited::new(response.into_body(), MAX_FORWARDED_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err(unreachable(format!("reading its answer: {e}")).into()),
    };
    let has_body = !body.is_empty();
    let mut out = (status, body).into_response();
    if has_body {
        out.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if let Some(r) = retry {
        out.headers_mut().insert(header::RETRY_AFTER, r);
    }
    Err(Failure::Relayed(out))
}

#[cfg(test)]
mod tests {
    use switchyard_api::room::{RoomPhase, RoomStatus};

    use super::*;

    #[test]
    fn a_room_object_reads_as_the_room_the_nodes_report() {
        let mut room = Room::new(
            "standup",
            RoomSpec {
                cluster_ref: "edge".into(),
                max_participants: Some(8),
                empty_timeout_seconds: None,
                allowed_codecs: vec![Codec::VP9],
                metadata: Some("m".into()),
            },
        );
        room.metadata.uid = Some("0f1e".into());
        room.status = Some(RoomStatus { phase: RoomPhase::Active, participants: 3, ..RoomStatus::default() });
        let info = room_info(&room, 0, Duration::from_secs(300));
        assert_eq!(info.sid, "RM_0f1e", "the sid every node gives this room");
        assert_eq!((info.max_participants, info.empty_timeout_seconds, info.num_participants), (8, 300, 3));
        assert_eq!((info.enabled_codecs, info.metadata.as_deref()), (vec![Codec::VP9], Some("m")));
        room.spec.allowed_codecs.clear();
        assert_eq!(room_info(&room, 0, Duration::from_secs(300)).enabled_codecs, Codec::ALL.to_vec());
    }
}
