//! Access tokens: HS256 JWTs that an app's backend mints with an API key and secret, and
//! that media-node verifies before a WebSocket upgrade completes.
//!
//! The header's `kid` and the `iss` claim both name the API key, so a server holding
//! several keys (rotation) knows which secret to check. Verification takes the clock as an
//! argument, so expiry rules are tested without sleeping, and every way a token can be
//! wrong has its own [`Error`] variant.

use std::collections::HashMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::signal::TrackSource;
use crate::{Error, Result};

/// What a token says about its bearer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The API key that signed the token.
    pub iss: String,
    /// The participant's identity, unique within a room.
    pub sub: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Application data handed to other participants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Not valid before, Unix seconds.
    pub nbf: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
    /// A unique token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// What the bearer may do.
    #[serde(default)]
    pub grants: Grants,
}

/// Permissions carried by a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grants {
    /// The room this token is for (needed for `roomJoin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// May join `room`.
    #[serde(default)]
    pub room_join: bool,
    /// May create rooms.
    #[serde(default)]
    pub room_create: bool,
    /// May list rooms.
    #[serde(default)]
    pub room_list: bool,
    /// May administer `room` (or every room, when `room` is absent): remove participants,
    /// close the room.
    #[serde(default)]
    pub room_admin: bool,
    /// May publish tracks.
    #[serde(default = "yes")]
    pub can_publish: bool,
    /// May subscribe to others' tracks.
    #[serde(default = "yes")]
    pub can_subscribe: bool,
    /// May send data messages.
    #[serde(default = "yes")]
    pub can_publish_data: bool,
    /// Which sources may be published; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub can_publish_sources: Vec<TrackSource>,
    /// Invisible to other participants (recorders, moderators).
    #[serde(default)]
    pub hidden: bool,
}

fn yes() -> bool {
    true
}

impl Default for Grants {
    fn default() -> Self {
        Self {
            room: None,
            room_join: false,
            room_create: false,
            room_list: false,
            room_admin: false,
            can_publish: true,
            can_subscribe: true,
            can_publish_data: true,
            can_publish_sources: Vec::new(),
            hidden: false,
        }
    }
}

impl Grants {
    /// The grants of an ordinary participant of `room`.
    pub fn join(room: impl Into<String>) -> Self {
        Self { room: Some(room.into()), room_join: true, ..Self::default() }
    }
}

/// One permission, named as in the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// `roomJoin`.
    RoomJoin,
    /// `roomCreate`.
    RoomCreate,
    /// `roomList`.
    RoomList,
    /// `roomAdmin`.
    RoomAdmin,
    /// `canPublish`.
    CanPublish,
    /// `canSubscribe`.
    CanSubscribe,
    /// `canPublishData`.
    CanPublishData,
    /// `canPublishSources` lacks this source.
    CanPublishSource(TrackSource),
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grant::RoomJoin => f.write_str("roomJoin"),
            Grant::RoomCreate => f.write_str("roomCreate"),
            Grant::RoomList => f.write_str("roomList"),
            Grant::RoomAdmin => f.write_str("roomAdmin"),
            Grant::CanPublish => f.write_str("canPublish"),
            Grant::CanSubscribe => f.write_str("canSubscribe"),
            Grant::CanPublishData => f.write_str("canPublishData"),
            Grant::CanPublishSource(s) => write!(f, "canPublishSources[{}]", s.as_str()),
        }
    }
}

impl Claims {
    /// Claims for `identity`, signed by `api_key`, valid from `now` for `ttl_secs`.
    pub fn new(api_key: impl Into<String>, identity: impl Into<String>, now: u64, ttl_secs: u64) -> Self {
        Self {
            iss: api_key.into(),
            sub: identity.into(),
            name: None,
            metadata: None,
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl_secs),
            jti: None,
            grants: Grants::default(),
        }
    }

    /// Set the grants.
    pub fn with_grants(mut self, grants: Grants) -> Self {
        self.grants = grants;
        self
    }

    /// Set the display name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The bearer may join `room`.
    pub fn authorize_join(&self, room: &str) -> Result<()> {
        if !self.grants.room_join {
            return Err(Error::MissingGrant(Grant::RoomJoin));
        }
        self.authorize_room(room)
    }

    /// The bearer may create `room` (explicitly, or by joining a room that does not exist yet).
    pub fn authorize_create(&self, room: &str) -> Result<()> {
        if !self.grants.room_create {
            return Err(Error::MissingGrant(Grant::RoomCreate));
        }
        match &self.grants.room {
            Some(granted) if granted != room => {
                Err(Error::WrongRoom { granted: granted.clone(), requested: room.into() })
            }
            _ => Ok(()),
        }
    }

    /// The bearer may administer `room`.
    pub fn authorize_admin(&self, room: &str) -> Result<()> {
        if !self.grants.room_admin {
            return Err(Error::MissingGrant(Grant::RoomAdmin));
        }
        match &self.grants.room {
            Some(granted) if granted != room => {
                Err(Error::WrongRoom { granted: granted.clone(), requested: room.into() })
            }
            _ => Ok(()),
        }
    }

    /// The bearer may list rooms.
    pub fn authorize_list(&self) -> Result<()> {
        if self.grants.room_list { Ok(()) } else { Err(Error::MissingGrant(Grant::RoomList)) }
    }

    /// The bearer may publish a track from `source`.
    pub fn authorize_publish(&self, source: TrackSource) -> Result<()> {
        if !self.grants.can_publish {
            return Err(Error::MissingGrant(Grant::CanPublish));
        }
        let sources = &self.grants.can_publish_sources;
        if !sources.is_empty() && !sources.contains(&source) {
            return Err(Error::MissingGrant(Grant::CanPublishSource(source)));
        }
        Ok(())
    }

    /// The bearer may subscribe.
    pub fn authorize_subscribe(&self) -> Result<()> {
        if self.grants.can_subscribe { Ok(()) } else { Err(Error::MissingGrant(Grant::CanSubscribe)) }
    }

    /// The bearer may send data messages.
    pub fn authorize_publish_data(&self) -> Result<()> {
        if self.grants.can_publish_data { Ok(()) } else { Err(Error::MissingGrant(Grant::CanPublishData)) }
    }

    /// The identity (`sub`) and the granted room, if any, follow [`crate::names`].
    pub fn check_names(&self) -> Result<()> {
        crate::names::check_identity(&self.sub).map_err(Error::InvalidName)?;
        if let Some(room) = &self.grants.room {
            crate::names::check_room_name(room).map_err(Error::InvalidName)?;
        }
        Ok(())
    }

    fn authorize_room(&self, room: &str) -> Result<()> {
        match &self.grants.room {
            Some(granted) if granted == room => Ok(()),
            granted => Err(Error::WrongRoom { granted: granted.clone().unwrap_or_default(), requested: room.into() }),
        }
    }
}

/// Sign `claims` with `api_secret` (HS256, `kid` = `claims.iss`). Refuses an identity or
/// room name that breaks the rules of [`crate::names`]: a verifier would refuse the token.
pub fn mint(claims: &Claims, api_secret: &str) -> Result<String> {
    claims.check_names()?;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(claims.iss.clone());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(api_secret.as_bytes()))
        .map_err(|e| Error::Mint(e.to_string()))
}

/// Checks tokens against a set of API keys.
#[derive(Clone, Default)]
pub struct Verifier {
    keys: HashMap<String, String>,
    leeway_secs: u64,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets.
        let mut keys: Vec<_> = self.keys.keys().collect();
        keys.sort();
        f.debug_struct("Verifier").field("keys", &keys).field("leeway_secs", &self.leeway_secs).finish()
    }
}

/// A JWT header read before its signature is checked (to pick the key).
#[derive(Deserialize)]
pub(crate) struct UnverifiedHeader {
    pub(crate) alg: String,
    #[serde(default)]
    pub(crate) kid: Option<String>,
}

#[derive(Deserialize)]
struct UnverifiedIssuer {
    #[serde(default)]
    iss: Option<String>,
}

impl Verifier {
    /// A verifier for `keys` (API key → secret) with a clock leeway.
    pub fn new(keys: impl IntoIterator<Item = (String, String)>, leeway_secs: u64) -> Self {
        Self { keys: keys.into_iter().collect(), leeway_secs }
    }

    /// The secret of `api_key`, if known (to mint tokens for the dev server and tests).
    pub fn secret(&self, api_key: &str) -> Option<&str> {
        self.keys.get(api_key).map(String::as_str)
    }

    /// Verify `token` at Unix time `now`.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims> {
        let malformed = |why: &str| Error::MalformedToken(why.to_owned());
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("expected three dot-separated parts"));
        };
        let header: UnverifiedHeader = decode_part(header).ok_or_else(|| malformed("header is not base64url JSON"))?;
        if header.alg.eq_ignore_ascii_case("none") {
            return Err(Error::AlgNone);
        }
        if header.alg != "HS256" {
            return Err(Error::UnsupportedAlgorithm(header.alg));
        }
        let key_id = match header.kid {
            Some(kid) => kid,
            None => decode_part::<UnverifiedIssuer>(payload)
                .and_then(|p| p.iss)
                .ok_or_else(|| malformed("neither kid nor iss names the API key"))?,
        };
        let secret = self.keys.get(&key_id).ok_or_else(|| Error::UnknownKey(key_id.clone()))?;

        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret.as_bytes()), &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => Error::BadSignature,
                _ => Error::MalformedToken(e.to_string()),
            })?
            .claims;
        if claims.iss != key_id {
            return Err(malformed("iss does not match the signing key id"));
        }
        if now > claims.exp.saturating_add(self.leeway_secs) {
            return Err(Error::TokenExpired { expired_at: claims.exp, now });
        }
        if now.saturating_add(self.leeway_secs) < claims.nbf {
            return Err(Error::TokenNotYetValid { not_before: claims.nbf, now });
        }
        claims.check_names()?;
        Ok(claims)
    }
}

/// One base64url JSON part of a JWT, unverified.
pub(crate) fn decode_part<T: for<'de> Deserialize<'de>>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn verifier() -> Verifier {
        Verifier::new(
            [("APIkey1".to_owned(), "secret-one".to_owned()), ("APIkey2".to_owned(), "secret-two".to_owned())],
            5,
        )
    }

    fn claims() -> Claims {
        Claims::new("APIkey1", "alice", NOW, 600).with_grants(Grants::join("standup")).with_name("Alice")
    }

    #[test]
    fn mint_then_verify_round_trips_every_claim() {
        let mut c = claims();
        c.metadata = Some(r#"{"team":"a"}"#.into());
        c.jti = Some("t-1".into());
        c.grants.can_publish_sources = vec![TrackSource::Camera, TrackSource::Microphone];
        c.grants.hidden = true;
        let token = mint(&c, "secret-one").unwrap();
        assert_eq!(verifier().verify(&token, NOW + 10).unwrap(), c);
    }

    #[test]
    fn either_rotated_key_verifies() {
        let c = Claims::new("APIkey2", "bob", NOW, 60);
        let token = mint(&c, "secret-two").unwrap();
        assert_eq!(verifier().verify(&token, NOW).unwrap().sub, "bob");
    }

    #[test]
    fn expired_token_is_refused_after_the_leeway() {
        let token = mint(&claims(), "secret-one").unwrap();
        assert!(verifier().verify(&token, NOW + 600 + 5).is_ok(), "inside leeway");
        assert_eq!(
            verifier().verify(&token, NOW + 600 + 6).unwrap_err(),
            Error::TokenExpired { expired_at: NOW + 600, now: NOW + 606 }
        );
    }

    #[test]
    fn token_from_the_future_is_not_yet_valid() {
        let token = mint(&claims(), "secret-one").unwrap();
        assert!(verifier().verify(&token, NOW - 5).is_ok(), "inside leeway");
        let err = verifier().verify(&token, NOW - 6).unwrap_err();
        assert_eq!(err, Error::TokenNotYetValid { not_before: NOW, now: NOW - 6 });
        assert_eq!(err.code(), "token_not_yet_valid");
    }

    #[test]
    fn forged_signature_is_bad_signature() {
        let token = mint(&claims(), "not-the-secret").unwrap();
        assert_eq!(verifier().verify(&token, NOW).unwrap_err(), Error::BadSignature);
    }

    #[test]
    fn tampered_payload_is_bad_signature() {
        let token = mint(&claims(), "secret-one").unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims();
        forged.grants.room_admin = true;
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
        assert_eq!(verifier().verify(&tampered, NOW).unwrap_err(), Error::BadSignature);
    }

    #[test]
    fn unknown_api_key_is_wrong_key() {
        let c = Claims::new("APIkey9", "mallory", NOW, 60);
        let token = mint(&c, "whatever").unwrap();
        assert_eq!(verifier().verify(&token, NOW).unwrap_err(), Error::UnknownKey("APIkey9".into()));
    }

    #[test]
    fn alg_none_is_refused_before_any_key_lookup() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap());
        for token in [format!("{header}.{payload}."), format!("{header}.{payload}.c2ln")] {
            assert_eq!(verifier().verify(&token, NOW).unwrap_err(), Error::AlgNone);
        }
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"NoNe"}"#);
        assert_eq!(verifier().verify(&format!("{header}.{payload}."), NOW).unwrap_err(), Error::AlgNone);
    }

    #[test]
    fn other_algorithms_are_refused() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"APIkey1"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap());
        assert_eq!(
            verifier().verify(&format!("{header}.{payload}.sig"), NOW).unwrap_err(),
            Error::UnsupportedAlgorithm("RS256".into())
        );
    }

    #[test]
    fn garbage_is_malformed_with_a_reason() {
        for token in ["", "abc", "a.b", "a.b.c.d", "!!!.e30.sig"] {
            let err = verifier().verify(token, NOW).unwrap_err();
            assert!(matches!(err, Error::MalformedToken(_)), "{token:?} gave {err:?}");
            assert_eq!(err.code(), "malformed_token");
        }
    }

    #[test]
    fn kid_and_iss_must_agree() {
        // Signed with key 2's secret but claiming to be issued by key 1.
        let mut c = Claims::new("APIkey1", "eve", NOW, 60);
        c.iss = "APIkey1".into();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("APIkey2".into());
        let token = jsonwebtoken::encode(&header, &c, &EncodingKey::from_secret(b"secret-two")).unwrap();
        assert!(matches!(verifier().verify(&token, NOW).unwrap_err(), Error::MalformedToken(m) if m.contains("iss")));
    }

    #[test]
    fn grants_are_enforced() {
        let c = claims();
        assert!(c.authorize_join("standup").is_ok());
        assert_eq!(
            c.authorize_join("boardroom").unwrap_err(),
            Error::WrongRoom { granted: "standup".into(), requested: "boardroom".into() }
        );
        assert_eq!(c.authorize_create("standup").unwrap_err(), Error::MissingGrant(Grant::RoomCreate));
        assert_eq!(c.authorize_admin("standup").unwrap_err(), Error::MissingGrant(Grant::RoomAdmin));
        assert_eq!(c.authorize_list().unwrap_err(), Error::MissingGrant(Grant::RoomList));
        assert!(c.authorize_publish(TrackSource::Camera).is_ok());
        assert!(c.authorize_subscribe().is_ok());
        assert!(c.authorize_publish_data().is_ok());

        let mut viewer = claims();
        viewer.grants.can_publish = false;
        viewer.grants.can_publish_data = false;
        viewer.grants.can_subscribe = false;
        assert_eq!(viewer.authorize_publish(TrackSource::Camera).unwrap_err(), Error::MissingGrant(Grant::CanPublish));
        assert_eq!(viewer.authorize_publish_data().unwrap_err(), Error::MissingGrant(Grant::CanPublishData));
        assert_eq!(viewer.authorize_subscribe().unwrap_err(), Error::MissingGrant(Grant::CanSubscribe));

        let mut mic_only = claims();
        mic_only.grants.can_publish_sources = vec![TrackSource::Microphone];
        assert!(mic_only.authorize_publish(TrackSource::Microphone).is_ok());
        let err = mic_only.authorize_publish(TrackSource::ScreenShare).unwrap_err();
        assert_eq!(err, Error::MissingGrant(Grant::CanPublishSource(TrackSource::ScreenShare)));
        assert_eq!(err.to_string(), "token lacks the canPublishSources[screen_share] grant");

        let no_join = Claims::new("APIkey1", "x", NOW, 60);
        assert_eq!(no_join.authorize_join("standup").unwrap_err(), Error::MissingGrant(Grant::RoomJoin));

        let mut admin = Claims::new("APIkey1", "ops", NOW, 60);
        admin.grants.room_admin = true;
        admin.grants.room_create = true;
        admin.grants.room_list = true;
        assert!(admin.authorize_admin("any-room").is_ok());
        assert!(admin.authorize_create("any-room").is_ok());
        assert!(admin.authorize_list().is_ok());
    }

    #[test]
    fn omitted_publish_grants_default_to_allowed() {
        let c: Claims = serde_json::from_str(
            r#"{"iss":"k","sub":"s","iat":0,"nbf":0,"exp":1,"grants":{"room":"r","roomJoin":true}}"#,
        )
        .unwrap();
        assert!(c.grants.can_publish && c.grants.can_subscribe && c.grants.can_publish_data);
        assert!(!c.grants.room_admin && !c.grants.hidden);
    }

    #[test]
    fn debug_never_prints_secrets() {
        assert!(!format!("{:?}", verifier()).contains("secret-one"));
    }

    #[test]
    fn names_breaking_the_rules_are_refused_at_mint_and_at_verify() {
        let bad_room = Claims::new("APIkey1", "alice", NOW, 600).with_grants(Grants::join("../../etc"));
        let bad_identity = Claims::new("APIkey1", "", NOW, 600).with_grants(Grants::join("standup"));
        let long_identity = Claims::new("APIkey1", "x".repeat(8192), NOW, 600).with_grants(Grants::join("standup"));
        for (c, code) in [
            (&bad_room, "invalid_room_name"),
            (&bad_identity, "invalid_identity"),
            (&long_identity, "invalid_identity"),
        ] {
            assert_eq!(mint(c, "secret-one").unwrap_err().code(), code);
            // Another JWT library signs anything: the verifier refuses it too.
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("APIkey1".into());
            let token = jsonwebtoken::encode(&header, c, &EncodingKey::from_secret(b"secret-one")).unwrap();
            let err = verifier().verify(&token, NOW).unwrap_err();
            assert_eq!(err.code(), code, "{err}");
        }
        let nul = Claims::new("APIkey1", "al\0ice", NOW, 600).with_grants(Grants::join("standup"));
        assert!(mint(&nul, "secret-one").unwrap_err().to_string().contains("control character"));
        let no_room = Claims::new("APIkey1", "ops", NOW, 60);
        assert!(mint(&no_room, "secret-one").is_ok(), "a token without a room grant names no room");
    }
}
