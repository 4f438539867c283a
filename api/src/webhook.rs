//! Webhooks: the events media-node POSTs to an app's backend, and how each request is
//! signed so the backend can trust it.
//!
//! ```text
//!  media-node ── POST <url>                               ──► app backend
//!                Content-Type: application/webhook+json        verify(body, authorization,
//!                Authorization: <JWT: HS256, kid = iss = API key,      secrets, now)
//!                                exp = now + 5 min, sha256 = base64(SHA-256(body))>
//!                body: WebhookEvent (JSON)
//! ```
//!
//! The signature covers the body through its hash, so a receiver must hash the exact bytes
//! it received, before any re-serialisation. The token is signed with the secret of the
//! receiver's `apiKey` (the same secret that mints access tokens), as LiveKit does, so an
//! app that already verifies LiveKit webhooks needs only the content of the body changed.
//! Events may be delivered more than once (retries): `id` is stable across retries.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::token::{UnverifiedHeader, decode_part};

/// The kinds of event, as the MediaCluster's `spec.webhooks[].events` names them; the
/// same snake_case names are the payload's `event`.
pub use crate::media_cluster::WebhookEvent as EventKind;

/// The `Content-Type` of every webhook request.
pub const CONTENT_TYPE: &str = "application/webhook+json";

/// How long a request's signature stays valid, seconds. Each attempt is signed anew.
pub const SIGNATURE_TTL_SECS: u64 = 300;

/// One event, the body of a webhook request.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    /// Unique per event and the same on every retry: use it to drop duplicates.
    pub id: String,
    /// What happened.
    pub event: EventKind,
    /// When it happened, Unix seconds.
    pub created_at: u64,
    /// The room it happened in.
    pub room: WebhookRoom,
    /// The participant, for `participant_*` and `track_*` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<WebhookParticipant>,
    /// The track, for `track_*` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<WebhookTrack>,
    /// The media-node that saw it (its pod name).
    pub node: String,
    /// The MediaCluster the node belongs to.
    pub cluster: String,
}

/// The room of an event.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRoom {
    /// The room's name.
    pub name: String,
    /// The room's sid: one per opening of the room (a room closed and opened again gets
    /// a new one).
    pub sid: String,
}

/// The participant of an event.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookParticipant {
    /// The identity from the participant's access token.
    pub identity: String,
    /// The participant's sid: one per session.
    pub sid: String,
    /// Why the participant left, on `participant_left`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leave_reason: Option<crate::signal::LeaveReason>,
}

/// The track of an event.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookTrack {
    /// The track's sid.
    pub sid: String,
}

/// Why a webhook request was not accepted. [`WebhookError::code`] is a stable string for
/// logs and metric labels.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum WebhookError {
    /// The signature does not match the key's secret.
    #[error("webhook signature is invalid")]
    BadSignature,
    /// The token's `exp` is in the past.
    #[error("webhook signature expired at {expired_at} (now {now})")]
    Expired {
        /// The token's `exp`, Unix seconds.
        expired_at: u64,
        /// The receiver's clock, Unix seconds.
        now: u64,
    },
    /// The signature is valid but covers a different body.
    #[error("webhook body does not match the signed sha256")]
    BodyHashMismatch,
    /// The token names an API key (`kid`/`iss`) the receiver does not know.
    #[error("webhook is signed with unknown API key {0:?}")]
    UnknownKey(String),
    /// The header or the body is not what a webhook sends.
    #[error("malformed webhook: {0}")]
    Malformed(String),
}

impl WebhookError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::BadSignature => "bad_signature",
            WebhookError::Expired { .. } => "expired",
            WebhookError::BodyHashMismatch => "body_hash_mismatch",
            WebhookError::UnknownKey(_) => "unknown_key",
            WebhookError::Malformed(_) => "malformed",
        }
    }
}

/// The claims of a webhook signature.
#[derive(Serialize, Deserialize)]
struct SignatureClaims {
    iss: String,
    iat: u64,
    exp: u64,
    sha256: String,
}

/// base64 (standard alphabet, padded) of the SHA-256 of `body`: the `sha256` claim.
pub fn body_hash(body: &[u8]) -> String {
    STANDARD.encode(Sha256::digest(body))
}

/// The `Authorization` header value for `body`: an HS256 JWT with `kid` = `iss` =
/// `api_key`, signed with `api_secret`, valid from `now` (Unix seconds) for
/// [`SIGNATURE_TTL_SECS`], whose `sha256` claim is [`body_hash`] of `body`.
pub fn sign(body: &[u8], api_key: &str, api_secret: &str, now: u64) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(api_key.to_owned());
    let claims = SignatureClaims {
        iss: api_key.to_owned(),
        iat: now,
        exp: now.saturating_add(SIGNATURE_TTL_SECS),
        sha256: body_hash(body),
    };
    // HMAC over a byte key with claims of plain strings and integers cannot fail.
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(api_secret.as_bytes()))
        .expect("HS256 signing with a byte key")
}

/// Check a webhook request, receiver side: `authorization` is the `Authorization` header
/// (an optional `Bearer ` prefix is accepted), `secrets` looks up an API key's secret,
/// `now` is the receiver's clock in Unix seconds. Returns the parsed event.
pub fn verify(
    body: &[u8],
    authorization: &str,
    secrets: impl Fn(&str) -> Option<String>,
    now: u64,
) -> Result<WebhookEvent, WebhookError> {
    let malformed = |why: &str| WebhookError::Malformed(why.to_owned());
    let token = authorization.trim();
    let token = token.strip_prefix("Bearer ").unwrap_or(token).trim();
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("authorization is not a JWT (three dot-separated parts)"));
    };
    let header: UnverifiedHeader = decode_part(header).ok_or_else(|| malformed("JWT header is not base64url JSON"))?;
    if header.alg != "HS256" {
        return Err(WebhookError::Malformed(format!("JWT algorithm {:?} is not HS256", header.alg)));
    }
    let key = header.kid.ok_or_else(|| malformed("JWT header has no kid naming the API key"))?;
    let secret = secrets(&key).ok_or_else(|| WebhookError::UnknownKey(key.clone()))?;

    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.required_spec_claims.clear();
    let claims =
        jsonwebtoken::decode::<SignatureClaims>(token, &DecodingKey::from_secret(secret.as_bytes()), &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => WebhookError::BadSignature,
                _ => WebhookError::Malformed(e.to_string()),
            })?
            .claims;
    if claims.iss != key {
        return Err(malformed("iss does not match the signing key id"));
    }
    if now > claims.exp {
        return Err(WebhookError::Expired { expired_at: claims.exp, now });
    }
    if claims.sha256 != body_hash(body) {
        return Err(WebhookError::BodyHashMismatch);
    }
    serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(format!("body: {e}")))
}

impl fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let event = serde_json::to_value(self.event).ok();
        let event = event.as_ref().and_then(|v| v.as_str()).unwrap_or("?");
        write!(f, "{event} room={:?}", self.room.name)?;
        if let Some(p) = &self.participant {
            write!(f, " identity={:?}", p.identity)?;
        }
        if let Some(t) = &self.track {
            write!(f, " track={}", t.sid)?;
        }
        Ok(())
    }
}

/// The JSON Schema (2020-12) of [`WebhookEvent`], for app developers.
pub fn payload_schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(WebhookEvent)).expect("schema serializes");
    let root = schema.as_object_mut().expect("schema is an object");
    root.insert("title".into(), "Switchyard webhook event v1".into());
    root.insert(
        "description".into(),
        "The JSON body of a webhook request (Content-Type: application/webhook+json). The Authorization header \
         is an HS256 JWT whose sha256 claim is the base64 SHA-256 of this body."
            .into(),
    );
    root.insert("$id".into(), "https://switchyard.dev/schema/webhook-v1.schema.json".into());
    schema
}

/// [`payload_schema`] as pretty JSON with a trailing newline.
pub fn payload_schema_json() -> String {
    let mut s = serde_json::to_string_pretty(&payload_schema()).expect("schema serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn secrets(key: &str) -> Option<String> {
        match key {
            "APIkey1" => Some("secret-one".into()),
            "APIkey2" => Some("secret-two".into()),
            _ => None,
        }
    }

    fn event() -> WebhookEvent {
        WebhookEvent {
            id: "EV_7f3k2m9q".into(),
            event: EventKind::ParticipantJoined,
            created_at: NOW,
            room: WebhookRoom { name: "standup".into(), sid: "RM_1abc".into() },
            participant: Some(WebhookParticipant {
                identity: "alice".into(),
                sid: "PA_2def".into(),
                leave_reason: None,
            }),
            track: None,
            node: "edge-sfu-0".into(),
            cluster: "edge".into(),
        }
    }

    fn body() -> Vec<u8> {
        serde_json::to_vec(&event()).unwrap()
    }

    #[test]
    fn the_payload_is_camel_case_with_snake_case_event_names() {
        let v: serde_json::Value = serde_json::from_slice(&body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": "EV_7f3k2m9q",
                "event": "participant_joined",
                "createdAt": NOW,
                "room": {"name": "standup", "sid": "RM_1abc"},
                "participant": {"identity": "alice", "sid": "PA_2def"},
                "node": "edge-sfu-0",
                "cluster": "edge",
            })
        );
        for (kind, name) in [
            (EventKind::RoomStarted, "room_started"),
            (EventKind::RoomFinished, "room_finished"),
            (EventKind::ParticipantJoined, "participant_joined"),
            (EventKind::ParticipantLeft, "participant_left"),
            (EventKind::TrackPublished, "track_published"),
            (EventKind::TrackUnpublished, "track_unpublished"),
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), name);
        }
    }

    #[test]
    fn sign_then_verify_returns_the_event() {
        let body = body();
        let auth = sign(&body, "APIkey1", "secret-one", NOW);
        assert_eq!(verify(&body, &auth, secrets, NOW + 10).unwrap(), event());
        assert_eq!(verify(&body, &format!("Bearer {auth}"), secrets, NOW).unwrap(), event(), "Bearer prefix");
        let other = sign(&body, "APIkey2", "secret-two", NOW);
        assert!(verify(&body, &other, secrets, NOW).is_ok(), "any known key");
    }

    #[test]
    fn the_claims_are_what_other_verifiers_expect() {
        let body = body();
        let auth = sign(&body, "APIkey1", "secret-one", NOW);
        let header: serde_json::Value = decode_part(auth.split('.').next().unwrap()).unwrap();
        assert_eq!(header["alg"], "HS256");
        assert_eq!(header["kid"], "APIkey1");
        let claims: serde_json::Value = decode_part(auth.split('.').nth(1).unwrap()).unwrap();
        assert_eq!(claims["iss"], "APIkey1");
        assert_eq!(claims["exp"], NOW + SIGNATURE_TTL_SECS);
        // base64 of SHA-256, as `echo -n "$body" | openssl dgst -sha256 -binary | base64`.
        assert_eq!(body_hash(b"abc"), "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
        assert_eq!(claims["sha256"], body_hash(&body));
    }

    #[test]
    fn a_tampered_body_is_a_hash_mismatch() {
        let body = body();
        let auth = sign(&body, "APIkey1", "secret-one", NOW);
        let mut forged = event();
        forged.participant =
            Some(WebhookParticipant { identity: "mallory".into(), sid: "PA_2def".into(), leave_reason: None });
        let forged = serde_json::to_vec(&forged).unwrap();
        let err = verify(&forged, &auth, secrets, NOW).unwrap_err();
        assert_eq!(err, WebhookError::BodyHashMismatch);
        assert_eq!(err.code(), "body_hash_mismatch");
    }

    #[test]
    fn the_wrong_secret_is_a_bad_signature() {
        let body = body();
        let auth = sign(&body, "APIkey1", "not-the-secret", NOW);
        assert_eq!(verify(&body, &auth, secrets, NOW).unwrap_err(), WebhookError::BadSignature);
        // Signed with key 2's secret while naming key 1.
        let auth = sign(&body, "APIkey1", "secret-two", NOW);
        assert_eq!(verify(&body, &auth, secrets, NOW).unwrap_err(), WebhookError::BadSignature);
    }

    #[test]
    fn an_unknown_key_is_named() {
        let body = body();
        let auth = sign(&body, "APIkey9", "whatever", NOW);
        assert_eq!(verify(&body, &auth, secrets, NOW).unwrap_err(), WebhookError::UnknownKey("APIkey9".into()));
    }

    #[test]
    fn an_old_signature_expires() {
        let body = body();
        let auth = sign(&body, "APIkey1", "secret-one", NOW);
        assert!(verify(&body, &auth, secrets, NOW + SIGNATURE_TTL_SECS).is_ok());
        let err = verify(&body, &auth, secrets, NOW + SIGNATURE_TTL_SECS + 1).unwrap_err();
        assert_eq!(err, WebhookError::Expired { expired_at: NOW + SIGNATURE_TTL_SECS, now: NOW + 301 });
        assert_eq!(err.code(), "expired");
    }

    #[test]
    fn garbage_is_malformed() {
        let body = body();
        for auth in ["", "abc", "a.b", "a.b.c.d", "!!!.e30.sig"] {
            let err = verify(&body, auth, secrets, NOW).unwrap_err();
            assert!(matches!(err, WebhookError::Malformed(_)), "{auth:?} gave {err:?}");
        }
        // A signed body that is not an event.
        let auth = sign(b"{}", "APIkey1", "secret-one", NOW);
        assert!(
            matches!(verify(b"{}", &auth, secrets, NOW).unwrap_err(), WebhookError::Malformed(m) if m.contains("body"))
        );
        // alg none
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"APIkey1"}"#);
        let claims = auth.split('.').nth(1).unwrap();
        assert!(matches!(
            verify(b"{}", &format!("{header}.{claims}."), secrets, NOW).unwrap_err(),
            WebhookError::Malformed(m) if m.contains("HS256")
        ));
    }

    #[test]
    fn the_schema_describes_the_payload() {
        let schema = payload_schema();
        assert_eq!(schema["title"], "Switchyard webhook event v1");
        let required = schema["required"].as_array().unwrap();
        for field in ["id", "event", "createdAt", "room", "node", "cluster"] {
            assert!(required.iter().any(|r| r == field), "{field} is required");
        }
        assert!(!required.iter().any(|r| r == "participant"));
    }
}
