//! The Room service: JSON over HTTP on every media-node's signaling port (and
//! `switchyard dev`'s), for app backends. Each request carries an access token as
//! `Authorization: Bearer <jwt>` whose grants are checked per operation.
//!
//! ```text
//!  app backend ── POST /api/v1/rooms ─────────────────────► any media-node
//!                 (Bearer token: roomCreate / roomList /        dev: the rooms in memory
//!                  roomAdmin for that room)                     Kubernetes: Room objects,
//!                                                               participant operations
//!  ◄── 2xx: RoomInfo, ParticipantInfo, …  4xx/5xx: ApiError ──  forwarded to the hosting node
//! ```
//!
//! The shape follows LiveKit's RoomService (create, list, delete rooms; list, get,
//! remove, update participants; mute tracks; update room metadata; send data), as
//! resources rather than RPC paths. Rooms and participants are the signaling protocol's
//! own [`RoomInfo`] and [`ParticipantInfo`], so a backend and a client read one shape.
//! [`OPERATIONS`] is the one list of routes: media-node serves exactly these, and
//! [`openapi`] documents them (`schema/room-service-v1.openapi.json`).

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::{Deserialize, Serialize};

use crate::room::Codec;
use crate::signal::{DataKind, ParticipantInfo, RoomInfo, TrackInfo};

/// Where every route of the service lives.
pub const BASE_PATH: &str = "/api/v1";

/// Largest room or participant metadata accepted, in bytes: it travels in signaling
/// messages, which have their own limit.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// Requests per second one API key may make to one node; bursts up to twice that, and
/// beyond them `rate_limited` (429 with `Retry-After`).
pub const REQUESTS_PER_SECOND_PER_KEY: u32 = 50;

/// Largest empty timeout a room may ask for, seconds (as the Room CRD allows).
pub const MAX_EMPTY_TIMEOUT_SECONDS: u32 = 86_400;

/// `POST /rooms`: open a room before anyone joins it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRoomRequest {
    /// The room's name (lowercase letters, digits, `-`, `.`; at most 63).
    pub name: String,
    /// Seconds the room stays open while empty; the cluster's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_timeout_seconds: Option<u32>,
    /// Participant limit; 0 means none; the cluster's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_participants: Option<u32>,
    /// Only these codecs are negotiated; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_codecs: Vec<Codec>,
    /// Application data handed to participants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// `GET /rooms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListRoomsResponse {
    /// The open rooms, by name.
    pub rooms: Vec<RoomInfo>,
}

/// `PATCH /rooms/{room}`: the new metadata is sent to everyone in the room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateRoomRequest {
    /// The room's new metadata.
    pub metadata: String,
}

/// `GET /rooms/{room}/participants`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListParticipantsResponse {
    /// Everyone in the room now, hidden participants included.
    pub participants: Vec<ParticipantInfo>,
}

/// A change of permissions; an absent field keeps its value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PermissionUpdate {
    /// May publish media. Revoking it unpublishes the participant's tracks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    /// May subscribe. Revoking it ends the participant's subscriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
    /// May send data messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish_data: Option<bool>,
}

/// `PATCH /rooms/{room}/participants/{identity}`: applied to the live session; the
/// participant and the room hear `participant_updated`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateParticipantRequest {
    /// New display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// New permissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<PermissionUpdate>,
}

/// `POST /rooms/{room}/participants/{identity}/tracks/{track}/mute`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MuteTrackRequest {
    /// Mute (true) or unmute (false).
    pub muted: bool,
}

/// The answer to a mute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MuteTrackResponse {
    /// The track, as of now.
    pub track: TrackInfo,
}

/// `POST /rooms/{room}/data`: a data message from the server. Participants receive it as
/// `data` with empty `participantSid` and `identity`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendDataRequest {
    /// Reliable (default) or lossy.
    #[serde(default = "reliable")]
    pub kind: DataKind,
    /// An application-chosen topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The payload, base64 (standard alphabet); at most 15 KiB decoded.
    pub payload: String,
    /// Deliver only to these identities; empty means everyone in the room.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_identities: Vec<String>,
}

fn reliable() -> DataKind {
    DataKind::Reliable
}

/// The answer to a data message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendDataResponse {
    /// Participants it was delivered to.
    pub recipients: u32,
}

/// Every error answer's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiError {
    /// Stable and machine-readable; decides the HTTP status.
    pub code: ApiErrorCode,
    /// For people.
    pub message: String,
    /// The finer cause, when there is one: the token's failure (`expired_token`,
    /// `missing_grant`, `wrong_room`, …) or the refusal's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Retry after this many seconds (also the `Retry-After` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ApiErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), reason: None, retry_after_seconds: None }
    }

    /// With a finer cause.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// With a retry hint.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_seconds = Some(seconds);
        self
    }

    /// A token that does not verify: 401, the token's own code as the reason.
    pub fn unauthorized(e: &crate::Error) -> Self {
        Self::new(ApiErrorCode::Unauthorized, e.to_string()).with_reason(e.code())
    }

    /// A token that lacks what the operation needs: 403, with the grant's reason.
    pub fn forbidden(e: &crate::Error) -> Self {
        Self::new(ApiErrorCode::PermissionDenied, e.to_string()).with_reason(e.code())
    }

    /// No such room.
    pub fn room_not_found(room: &str) -> Self {
        Self::new(ApiErrorCode::RoomNotFound, format!("room {room:?} does not exist"))
    }

    /// No such participant.
    pub fn participant_not_found(room: &str, identity: &str) -> Self {
        Self::new(ApiErrorCode::ParticipantNotFound, format!("no participant {identity:?} in room {room:?}"))
    }

    /// A request body or parameter that is wrong; the message names it.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ApiErrorCode::BadRequest, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)?;
        if let Some(r) = &self.reason {
            write!(f, " ({r})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// Stable error codes of the Room service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiErrorCode {
    /// The body or a parameter is invalid (400).
    BadRequest,
    /// No token, or one that does not verify (401).
    Unauthorized,
    /// The token lacks the grant the operation needs (403).
    PermissionDenied,
    /// The room does not exist (404).
    RoomNotFound,
    /// The participant is not in the room (404).
    ParticipantNotFound,
    /// The participant has no such track (404).
    TrackNotFound,
    /// A room of that name exists already (409).
    RoomExists,
    /// Too many requests (429).
    RateLimited,
    /// Not now: placement did not finish in time, the node is full or draining (503).
    Unavailable,
    /// A bug or an unexpected failure (500).
    Internal,
}

impl ApiErrorCode {
    /// The HTTP status this code is sent with.
    pub fn status(self) -> u16 {
        match self {
            ApiErrorCode::BadRequest => 400,
            ApiErrorCode::Unauthorized => 401,
            ApiErrorCode::PermissionDenied => 403,
            ApiErrorCode::RoomNotFound | ApiErrorCode::ParticipantNotFound | ApiErrorCode::TrackNotFound => 404,
            ApiErrorCode::RoomExists => 409,
            ApiErrorCode::RateLimited => 429,
            ApiErrorCode::Unavailable => 503,
            ApiErrorCode::Internal => 500,
        }
    }

    /// The code as sent (`snake_case`), for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiErrorCode::BadRequest => "bad_request",
            ApiErrorCode::Unauthorized => "unauthorized",
            ApiErrorCode::PermissionDenied => "permission_denied",
            ApiErrorCode::RoomNotFound => "room_not_found",
            ApiErrorCode::ParticipantNotFound => "participant_not_found",
            ApiErrorCode::TrackNotFound => "track_not_found",
            ApiErrorCode::RoomExists => "room_exists",
            ApiErrorCode::RateLimited => "rate_limited",
            ApiErrorCode::Unavailable => "unavailable",
            ApiErrorCode::Internal => "internal",
        }
    }

    /// Every code, for documentation and tests.
    pub const ALL: [ApiErrorCode; 10] = [
        ApiErrorCode::BadRequest,
        ApiErrorCode::Unauthorized,
        ApiErrorCode::PermissionDenied,
        ApiErrorCode::RoomNotFound,
        ApiErrorCode::ParticipantNotFound,
        ApiErrorCode::TrackNotFound,
        ApiErrorCode::RoomExists,
        ApiErrorCode::RateLimited,
        ApiErrorCode::Unavailable,
        ApiErrorCode::Internal,
    ];
}

fn check_metadata(what: &str, m: Option<&str>) -> Result<(), ApiError> {
    match m {
        Some(m) if m.len() > MAX_METADATA_BYTES => {
            Err(ApiError::bad_request(format!("{what} is {} bytes; the limit is {MAX_METADATA_BYTES}", m.len())))
        }
        _ => Ok(()),
    }
}

impl CreateRoomRequest {
    /// The name follows [`crate::names`], the timeout and metadata their limits.
    pub fn validate(&self) -> Result<(), ApiError> {
        crate::names::check_room_name(&self.name).map_err(|e| ApiError::bad_request(format!("name: {e}")))?;
        if let Some(t) = self.empty_timeout_seconds
            && t > MAX_EMPTY_TIMEOUT_SECONDS
        {
            return Err(ApiError::bad_request(format!(
                "emptyTimeoutSeconds is {t}; the limit is {MAX_EMPTY_TIMEOUT_SECONDS}"
            )));
        }
        if let Some(m) = self.max_participants
            && m > i32::MAX as u32
        {
            return Err(ApiError::bad_request(format!("maxParticipants {m} is too large")));
        }
        check_metadata("metadata", self.metadata.as_deref())
    }
}

impl UpdateRoomRequest {
    /// The metadata fits its limit.
    pub fn validate(&self) -> Result<(), ApiError> {
        check_metadata("metadata", Some(&self.metadata))
    }
}

impl UpdateParticipantRequest {
    /// Something is to change, and the metadata and name fit their limits.
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.name.is_none() && self.metadata.is_none() && self.permission.is_none() {
            return Err(ApiError::bad_request("nothing to update: give name, metadata or permission"));
        }
        check_metadata("metadata", self.metadata.as_deref())?;
        check_metadata("name", self.name.as_deref())
    }
}

impl SendDataRequest {
    /// The payload is base64 within the data limit, the identities are valid.
    pub fn validate(&self) -> Result<(), ApiError> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.payload)
            .map_err(|e| ApiError::bad_request(format!("payload is not base64: {e}")))?;
        if bytes.len() > crate::signal::MAX_DATA_PAYLOAD_BYTES {
            return Err(ApiError::bad_request(format!(
                "payload is {} bytes; the limit is {}",
                bytes.len(),
                crate::signal::MAX_DATA_PAYLOAD_BYTES
            )));
        }
        for id in &self.destination_identities {
            crate::names::check_identity(id)
                .map_err(|e| ApiError::bad_request(format!("destinationIdentities: {e}")))?;
        }
        Ok(())
    }
}

/// `s` as one path segment: every byte but RFC 3986's unreserved characters
/// percent-encoded (identities may hold spaces, `/`, `?` or any Unicode).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Which grant an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// `roomCreate` (for that room, if the token names one).
    RoomCreate,
    /// `roomList`.
    RoomList,
    /// `roomAdmin` for the room in the path.
    RoomAdmin,
}

impl Needs {
    /// The grant's name in the token.
    pub fn grant(self) -> &'static str {
        match self {
            Needs::RoomCreate => "roomCreate",
            Needs::RoomList => "roomList",
            Needs::RoomAdmin => "roomAdmin",
        }
    }
}

type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

/// One route of the service.
#[derive(Clone, Copy)]
pub struct Operation {
    /// `GET`, `POST`, `PATCH` or `DELETE`.
    pub method: &'static str,
    /// Below [`BASE_PATH`], with `{room}`, `{identity}`, `{track}` parameters.
    pub path: &'static str,
    /// The OpenAPI `operationId` (LiveKit's RoomService names where one exists).
    pub id: &'static str,
    /// One line for people.
    pub summary: &'static str,
    /// The grant checked.
    pub needs: Needs,
    /// The body's schema, if it takes one.
    pub request: Option<SchemaFn>,
    /// The success status.
    pub status: u16,
    /// The success body's schema (none for 204).
    pub response: Option<SchemaFn>,
}

impl std::fmt::Debug for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

fn schema<T: JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

/// Every route, in the order the document lists them.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        method: "POST",
        path: "/rooms",
        id: "CreateRoom",
        summary: "Open a room before anyone joins it; 409 if it exists. In Kubernetes mode this creates a Room \
                  object and waits for its placement.",
        needs: Needs::RoomCreate,
        request: Some(schema::<CreateRoomRequest>),
        status: 201,
        response: Some(schema::<RoomInfo>),
    },
    Operation {
        method: "GET",
        path: "/rooms",
        id: "ListRooms",
        summary: "The open rooms; `?names=a,b` keeps only those.",
        needs: Needs::RoomList,
        request: None,
        status: 200,
        response: Some(schema::<ListRoomsResponse>),
    },
    Operation {
        method: "GET",
        path: "/rooms/{room}",
        id: "GetRoom",
        summary: "One room.",
        needs: Needs::RoomAdmin,
        request: None,
        status: 200,
        response: Some(schema::<RoomInfo>),
    },
    Operation {
        method: "PATCH",
        path: "/rooms/{room}",
        id: "UpdateRoomMetadata",
        summary: "Set the room's metadata; everyone in the room receives `room_updated`.",
        needs: Needs::RoomAdmin,
        request: Some(schema::<UpdateRoomRequest>),
        status: 200,
        response: Some(schema::<RoomInfo>),
    },
    Operation {
        method: "DELETE",
        path: "/rooms/{room}",
        id: "DeleteRoom",
        summary: "Close the room: participants receive `leave` (room_closed) and `room_finished` fires.",
        needs: Needs::RoomAdmin,
        request: None,
        status: 204,
        response: None,
    },
    Operation {
        method: "GET",
        path: "/rooms/{room}/participants",
        id: "ListParticipants",
        summary: "Everyone in the room.",
        needs: Needs::RoomAdmin,
        request: None,
        status: 200,
        response: Some(schema::<ListParticipantsResponse>),
    },
    Operation {
        method: "GET",
        path: "/rooms/{room}/participants/{identity}",
        id: "GetParticipant",
        summary: "One participant.",
        needs: Needs::RoomAdmin,
        request: None,
        status: 200,
        response: Some(schema::<ParticipantInfo>),
    },
    Operation {
        method: "PATCH",
        path: "/rooms/{room}/participants/{identity}",
        id: "UpdateParticipant",
        summary: "Change a participant's name, metadata or permissions, applied to its live session.",
        needs: Needs::RoomAdmin,
        request: Some(schema::<UpdateParticipantRequest>),
        status: 200,
        response: Some(schema::<ParticipantInfo>),
    },
    Operation {
        method: "DELETE",
        path: "/rooms/{room}/participants/{identity}",
        id: "RemoveParticipant",
        summary: "Remove a participant: it receives `leave` (removed); the room hears `participant_left`.",
        needs: Needs::RoomAdmin,
        request: None,
        status: 204,
        response: None,
    },
    Operation {
        method: "POST",
        path: "/rooms/{room}/participants/{identity}/tracks/{track}/mute",
        id: "MutePublishedTrack",
        summary: "Mute or unmute a published track; the room (publisher included) receives `track_muted`.",
        needs: Needs::RoomAdmin,
        request: Some(schema::<MuteTrackRequest>),
        status: 200,
        response: Some(schema::<MuteTrackResponse>),
    },
    Operation {
        method: "POST",
        path: "/rooms/{room}/data",
        id: "SendData",
        summary: "Send a data message to everyone in the room or to some identities.",
        needs: Needs::RoomAdmin,
        request: Some(schema::<SendDataRequest>),
        status: 200,
        response: Some(schema::<SendDataResponse>),
    },
];

fn parameter(name: &str) -> serde_json::Value {
    let description = match name {
        "room" => "The room's name.",
        "identity" => "The participant's identity.",
        _ => "The track's sid.",
    };
    serde_json::json!({
        "name": name, "in": "path", "required": true, "description": description,
        "schema": { "type": "string" },
    })
}

/// The OpenAPI 3.1 document of [`OPERATIONS`], schemas generated from the types.
pub fn openapi() -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let error = generator.subschema_for::<ApiError>();
    let mut paths = Map::new();
    for op in OPERATIONS {
        let mut operation = Map::new();
        operation.insert("operationId".into(), op.id.into());
        operation.insert("summary".into(), op.summary.into());
        let grant = op.needs.grant();
        operation.insert(
            "description".into(),
            format!("Needs the `{grant}` grant{}.", if op.needs == Needs::RoomAdmin { " for the room" } else { "" })
                .into(),
        );
        let params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(parameter)
            .chain((op.id == "ListRooms").then(|| {
                json!({
                    "name": "names", "in": "query", "required": false,
                    "description": "Comma-separated room names: list only these.",
                    "schema": { "type": "string" },
                })
            }))
            .collect();
        if !params.is_empty() {
            operation.insert("parameters".into(), Value::Array(params));
        }
        if let Some(request) = op.request {
            let s = request(&mut generator);
            operation.insert(
                "requestBody".into(),
                json!({ "required": true, "content": { "application/json": { "schema": s } } }),
            );
        }
        let mut responses = Map::new();
        let success = match op.response {
            Some(response) => json!({
                "description": "Done.",
                "content": { "application/json": { "schema": response(&mut generator) } },
            }),
            None => json!({ "description": "Done." }),
        };
        responses.insert(op.status.to_string(), success);
        let mut codes: Vec<u16> = vec![400, 401, 403];
        if op.path.contains("{room}") {
            codes.push(404);
        }
        if op.id == "CreateRoom" {
            codes.push(409);
        }
        codes.extend([429, 503]);
        for code in codes {
            let mut r = json!({
                "description": error_description(code),
                "content": { "application/json": { "schema": error.clone() } },
            });
            if code == 503 || code == 429 {
                r["headers"] = json!({ "Retry-After": {
                    "description": "Seconds to wait before retrying.", "schema": { "type": "integer" } } });
            }
            responses.insert(code.to_string(), r);
        }
        operation.insert("responses".into(), Value::Object(responses));
        operation.insert("security".into(), json!([{ "accessToken": [] }]));
        let path = paths.entry(format!("{BASE_PATH}{}", op.path)).or_insert_with(|| json!({}));
        path[op.method.to_ascii_lowercase()] = Value::Object(operation);
    }
    let schemas = generator.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Switchyard Room service",
            "version": "v1",
            "description": "JSON over HTTP on every media-node's signaling port and on `switchyard dev`'s. \
                Authenticate with an access token (`Authorization: Bearer <jwt>`, minted with an API key and \
                secret) whose grants allow the operation. Errors are an ApiError with a stable `code` that \
                decides the HTTP status. Each API key may make 50 requests per second to one node (bursts \
                of 100).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "accessToken": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
            },
        },
    })
}

fn error_description(status: u16) -> String {
    let codes: Vec<&str> =
        ApiErrorCode::ALL.iter().filter(|c| c.status() == status).map(|c| c.as_str()).collect::<Vec<_>>();
    format!("ApiError with code {}.", codes.join(" or "))
}

/// [`openapi`] as pretty JSON with a trailing newline.
pub fn openapi_json() -> String {
    let mut s = serde_json::to_string_pretty(&openapi()).expect("document serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_fitting_status_and_its_serde_name() {
        for code in ApiErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            assert!((400..600).contains(&code.status()), "{code:?}");
        }
        assert_eq!(ApiErrorCode::RoomExists.status(), 409);
        assert_eq!(ApiErrorCode::Unavailable.status(), 503);
    }

    #[test]
    fn requests_refuse_unknown_fields_and_bad_values() {
        let e = serde_json::from_str::<CreateRoomRequest>(r#"{"name":"a","emptyTimeout":5}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `emptyTimeout`"), "{e}");
        let bad = |json: &str| serde_json::from_str::<CreateRoomRequest>(json).unwrap().validate().unwrap_err();
        assert!(bad(r#"{"name":"Not Valid"}"#).message.starts_with("name:"));
        assert!(bad(r#"{"name":"a","emptyTimeoutSeconds":100000}"#).message.contains("emptyTimeoutSeconds"));
        let big = format!(r#"{{"name":"a","metadata":"{}"}}"#, "x".repeat(MAX_METADATA_BYTES + 1));
        assert!(bad(&big).message.contains("limit"));
        assert!(UpdateParticipantRequest::default().validate().unwrap_err().message.contains("nothing to update"));
        let data = |p: &str| SendDataRequest {
            kind: DataKind::Reliable,
            topic: None,
            payload: p.into(),
            destination_identities: vec![],
        };
        assert!(data("!!").validate().unwrap_err().message.contains("base64"));
        assert!(data("aGk=").validate().is_ok());
        let d: SendDataRequest = serde_json::from_str(r#"{"payload":"aGk="}"#).unwrap();
        assert_eq!(d.kind, DataKind::Reliable, "reliable by default");
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("standup-2.a"), "standup-2.a");
        assert_eq!(path_segment("alice smith/x?y"), "alice%20smith%2Fx%3Fy");
        assert_eq!(path_segment("zoë"), "zo%C3%AB");
    }

    #[test]
    fn the_document_lists_every_operation_with_its_schemas() {
        let doc = openapi();
        assert_eq!(doc["openapi"], "3.1.0");
        for op in OPERATIONS {
            let o = &doc["paths"][format!("{BASE_PATH}{}", op.path)][op.method.to_ascii_lowercase()];
            assert_eq!(o["operationId"], op.id, "{op:?}");
            assert!(o["responses"][op.status.to_string()].is_object(), "{op:?}");
            assert!(o["responses"]["403"]["content"]["application/json"]["schema"]["$ref"].is_string());
        }
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in ["CreateRoomRequest", "RoomInfo", "ParticipantInfo", "ApiError", "ApiErrorCode", "TrackInfo"] {
            assert!(schemas.contains_key(name), "{name} in components");
        }
        // Every $ref resolves inside the document.
        let text = openapi_json();
        for r in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
            let name = &r[..r.find('"').unwrap()];
            assert!(schemas.contains_key(name), "dangling $ref {name}");
        }
    }
}
