//! The Room service over HTTP (`/api/v1`, [`switchyard_api::room_service`]): on the
//! signaling port, one handler per documented operation.
//!
//! ```text
//!  request ── bearer token verified ── rate limit (per API key) ── grant checked
//!     │
//!     ├─ dev mode, or forwarded here by another node ──► this node's shards (engine/admin.rs)
//!     └─ Kubernetes mode ──► room_kube: Room objects (create, list, get, delete, metadata);
//!                            participant operations go to the node hosting the room
//! ```
//!
//! Every answer is JSON: the operation's type, or an [`ApiError`] whose code decides the
//! status (`Retry-After` when it carries a retry hint). The routes are built from
//! [`OPERATIONS`], the same list the OpenAPI document is generated from, so what is
//! served and what is documented cannot drift apart.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawPathParams, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use serde::de::DeserializeOwned;
use switchyard_api::rate::TokenBucket;
use switchyard_api::room_service::{
    ApiError, ApiErrorCode, BASE_PATH, CreateRoomRequest, ListParticipantsResponse, ListRoomsResponse,
    MuteTrackRequest, MuteTrackResponse, Needs, OPERATIONS, Operation, SendDataRequest, SendDataResponse,
    UpdateParticipantRequest, UpdateRoomRequest,
};
use switchyard_api::token::Claims;

use crate::engine::RoomSettings;
use crate::engine::admin::{Admin, Answer};
use crate::node::{Shared, unix_now};

/// Requests per second each API key may make to one node; bursts up to twice that.
const REQUESTS_PER_SECOND: f64 = switchyard_api::room_service::REQUESTS_PER_SECOND_PER_KEY as f64;

/// The per-API-key request budgets of one node (bounded by the number of keys: only
/// verified tokens reach it).
#[derive(Debug, Default)]
pub(crate) struct Budgets(std::sync::Mutex<HashMap<String, TokenBucket>>);

impl Budgets {
    fn allow(&self, key: &str, now: Instant) -> bool {
        let mut all = self.0.lock().expect("budgets");
        let bucket = all.entry(key.to_owned()).or_insert_with(|| TokenBucket::full(now, REQUESTS_PER_SECOND * 2.0));
        bucket.take(now, REQUESTS_PER_SECOND, REQUESTS_PER_SECOND * 2.0, 1.0)
    }
}

/// One request, as the handlers (and the forwarding to another node) need it.
#[derive(Debug)]
pub(crate) struct Req {
    pub(crate) op: &'static Operation,
    pub(crate) params: BTreeMap<String, String>,
    pub(crate) query: Option<String>,
    pub(crate) authorization: Option<HeaderValue>,
    pub(crate) body: Bytes,
    /// Another node forwarded it here: serve it from this node's rooms.
    pub(crate) forwarded: bool,
}

impl Req {
    pub(crate) fn param(&self, name: &str) -> &str {
        self.params.get(name).map(String::as_str).unwrap_or_default()
    }

    pub(crate) fn room(&self) -> &str {
        self.param("room")
    }

    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body).map_err(|e| ApiError::bad_request(format!("request body: {e}")))
    }

    /// The path with its query, as received.
    pub(crate) fn path_and_query(&self) -> String {
        let mut path = format!("{BASE_PATH}{}", self.op.path);
        for (k, v) in &self.params {
            path = path.replace(&format!("{{{k}}}"), &switchyard_api::room_service::path_segment(v));
        }
        match &self.query {
            Some(q) => format!("{path}?{q}"),
            None => path,
        }
    }

    /// `?names=a,b` (or repeated `names=`).
    pub(crate) fn names(&self) -> Vec<String> {
        let Some(q) = &self.query else { return vec![] };
        q.split('&')
            .filter_map(|kv| kv.strip_prefix("names="))
            .flat_map(|v| v.replace("%2C", ",").replace("%2c", ",").split(',').map(str::to_owned).collect::<Vec<_>>())
            .filter(|n| !n.is_empty())
            .collect()
    }
}

/// A success: the status and the JSON body (none for 204).
pub(crate) type Done = (StatusCode, Option<serde_json::Value>);

/// The routes of every operation in [`OPERATIONS`].
pub(crate) fn routes() -> axum::Router<Arc<Shared>> {
    let mut by_path: BTreeMap<String, MethodRouter<Arc<Shared>>> = BTreeMap::new();
    for op in OPERATIONS {
        let filter = match op.method {
            "GET" => MethodFilter::GET,
            "POST" => MethodFilter::POST,
            "PATCH" => MethodFilter::PATCH,
            "DELETE" => MethodFilter::DELETE,
            other => unreachable!("no operation uses {other}"),
        };
        let handler = move |State(shared): State<Arc<Shared>>,
                            params: RawPathParams,
                            RawQuery(query): RawQuery,
                            headers: HeaderMap,
                            body: Result<Bytes, BytesRejection>| async move {
            let params = params.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
            handle(shared, op, params, query, headers, body).await
        };
        let path = format!("{BASE_PATH}{}", op.path);
        let route = match by_path.remove(&path) {
            Some(r) => r.on(filter, handler),
            None => on(filter, handler),
        };
        by_path.insert(path, route);
    }
    by_path.into_iter().fold(axum::Router::new(), |app, (path, route)| app.route(&path, route))
}

/// An error as an HTTP answer.
pub(crate) fn error_response(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let retry = e.retry_after_seconds;
    let mut r = (status, [(header::CACHE_CONTROL, "no-store")], axum::Json(e)).into_response();
    if let Some(s) = retry
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn done_response((status, body): Done) -> Response {
    match body {
        Some(b) => (status, [(header::CACHE_CONTROL, "no-store")], axum::Json(b)).into_response(),
        None => status.into_response(),
    }
}

async fn handle(
    shared: Arc<Shared>,
    op: &'static Operation,
    params: BTreeMap<String, String>,
    query: Option<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = match body {
        Ok(body) => {
            let req = Req {
                op,
                params,
                query,
                authorization: headers.get(header::AUTHORIZATION).cloned(),
                body,
                forwarded: headers.contains_key(crate::cluster::FORWARDED_HEADER),
            };
            serve(&shared, req).await
        }
        Err(e) => Err(ApiError::bad_request(format!("request body: {e}")).into()),
    };
    let code = match &result {
        Ok(_) => "ok",
        Err(Failure::Api(e)) => e.code.as_str(),
        Err(Failure::Relayed(_)) => "relayed",
    };
    shared.metrics.room_api.get_or_create(&crate::metrics::ApiRequest { operation: op.id, code }).inc();
    shared.metrics.room_api_seconds.observe(started.elapsed().as_secs_f64());
    match result {
        Ok(done) => done_response(done),
        Err(Failure::Relayed(r)) => r,
        Err(Failure::Api(e)) => error_response(e),
    }
}

/// Not a plain answer: a failure, or the hosting node's answer passed on as it is.
pub(crate) enum Failure {
    Api(ApiError),
    Relayed(Response),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Api(e)
    }
}

/// Authenticate, check the grant, then serve from the right back end.
async fn serve(shared: &Arc<Shared>, req: Req) -> Result<Done, Failure> {
    let claims = authenticate(shared, &req)?;
    authorize(&claims, &req)?;
    if !shared.budgets.allow(&claims.iss, Instant::now()) {
        return Err(ApiError::new(
            ApiErrorCode::RateLimited,
            format!("more than {REQUESTS_PER_SECOND} requests per second with API key {:?}", claims.iss),
        )
        .retry_after(1)
        .into());
    }
    match shared.cluster.clone() {
        Some(cluster) if !req.forwarded => crate::room_kube::serve(shared, &cluster, &req).await,
        _ => local(shared, &req).await.map_err(Failure::Api),
    }
}

fn authenticate(shared: &Shared, req: &Req) -> Result<Claims, ApiError> {
    let token = req.authorization.as_ref().and_then(|v| v.to_str().ok()).and_then(crate::http::bearer);
    let Some(token) = token else {
        return Err(ApiError::new(ApiErrorCode::Unauthorized, "send an access token: Authorization: Bearer <jwt>")
            .with_reason("missing_token"));
    };
    shared.verifier.verify(&token, unix_now()).map_err(|e| ApiError::unauthorized(&e))
}

fn authorize(claims: &Claims, req: &Req) -> Result<(), ApiError> {
    let checked = match req.op.needs {
        Needs::RoomList => claims.authorize_list(),
        Needs::RoomAdmin => claims.authorize_admin(req.room()),
        Needs::RoomCreate => {
            let create: CreateRoomRequest = req.json()?;
            create.validate()?;
            claims.authorize_create(&create.name)
        }
    };
    checked.map_err(|e| ApiError::forbidden(&e))
}

/// The settings a created room gets: the request's over the node's defaults.
pub(crate) fn settings(shared: &Shared, c: &CreateRoomRequest) -> RoomSettings {
    RoomSettings {
        max_participants: c.max_participants.unwrap_or(shared.cfg.max_participants),
        empty_timeout: c.empty_timeout_seconds.map_or(shared.cfg.empty_timeout(), |s| Duration::from_secs(s.into())),
        allowed_codecs: c.allowed_codecs.clone(),
        metadata: c.metadata.clone(),
        sid: None,
    }
}

fn json(v: impl serde::Serialize) -> Option<serde_json::Value> {
    Some(serde_json::to_value(v).expect("API types serialize"))
}

/// The answer of an operation as HTTP.
pub(crate) fn answer(op: &Operation, a: Answer) -> Done {
    let status = StatusCode::from_u16(op.status).unwrap_or(StatusCode::OK);
    let body = match a {
        Answer::Room(r) => json(r),
        Answer::Rooms(rooms) => json(ListRoomsResponse { rooms }),
        Answer::Participant(p) => json(p),
        Answer::Participants(participants) => json(ListParticipantsResponse { participants }),
        Answer::Track(track) => json(MuteTrackResponse { track }),
        Answer::Sent(recipients) => json(SendDataResponse { recipients }),
        Answer::Done => None,
    };
    (status, body)
}

/// The operation as an engine command (the body parsed and validated).
pub(crate) fn command(shared: &Shared, req: &Req) -> Result<Admin, ApiError> {
    let room = req.room().to_owned();
    let identity = || req.param("identity").to_owned();
    Ok(match req.op.id {
        "CreateRoom" => {
            let c: CreateRoomRequest = req.json()?;
            c.validate()?;
            // In Kubernetes mode creating the Room object was the exclusive step; opening
            // it on its node is idempotent (a join may have opened it first).
            Admin::OpenRoom { settings: settings(shared, &c), room: c.name, exclusive: shared.cluster.is_none() }
        }
        "ListRooms" => Admin::ListRooms,
        "GetRoom" => Admin::GetRoom { room },
        "UpdateRoomMetadata" => {
            let u: UpdateRoomRequest = req.json()?;
            u.validate()?;
            Admin::UpdateRoom { room, metadata: u.metadata }
        }
        "DeleteRoom" => Admin::CloseRoom { room },
        "ListParticipants" => Admin::ListParticipants { room },
        "GetParticipant" => Admin::GetParticipant { room, identity: identity() },
        "UpdateParticipant" => {
            let update: UpdateParticipantRequest = req.json()?;
            update.validate()?;
            Admin::UpdateParticipant { room, identity: identity(), update }
        }
        "RemoveParticipant" => Admin::RemoveParticipant { room, identity: identity() },
        "MutePublishedTrack" => {
            let m: MuteTrackRequest = req.json()?;
            Admin::MuteTrack { room, identity: identity(), track_sid: req.param("track").to_owned(), muted: m.muted }
        }
        "SendData" => {
            let data: SendDataRequest = req.json()?;
            data.validate()?;
            Admin::SendData { room, data }
        }
        other => unreachable!("operation {other} has no command"),
    })
}

/// Serve from this node's rooms (dev mode, or forwarded here as the hosting node).
pub(crate) async fn local(shared: &Shared, req: &Req) -> Result<Done, ApiError> {
    let mut cmd = command(shared, req)?;
    if let (Admin::OpenRoom { room, settings, .. }, Some(cluster)) = (&mut cmd, &shared.cluster) {
        // Only a room whose Room object is placed here opens here; the object names the
        // room's sid, so every node reports the same one.
        let Some(placed) = cluster.placed_here_eventually(room).await else {
            return Err(ApiError::new(ApiErrorCode::Unavailable, format!("room {room:?} is not placed on this node"))
                .with_reason("not_placed_here")
                .retry_after(1));
        };
        settings.sid = crate::cluster::room_sid(&placed);
    }
    let mut reply = shared.admin(cmd).await;
    // A placed room nobody has joined yet is not open on its node: it has no one in it.
    if let Err(e) = &reply
        && e.code == ApiErrorCode::RoomNotFound
        && shared.cluster.as_ref().is_some_and(|c| c.room_object(req.room()).is_some())
    {
        match req.op.id {
            "ListParticipants" => reply = Ok(Answer::Participants(vec![])),
            "SendData" => reply = Ok(Answer::Sent(0)),
            _ => {}
        }
    }
    if let Ok(Answer::Rooms(rooms)) = &mut reply {
        let names = req.names();
        if !names.is_empty() {
            rooms.retain(|r| names.contains(&r.name));
        }
    }
    Ok(answer(req.op, reply?))
}
