//! TURN REST-API credentials (the scheme coturn, STUNner and turn-node accept), minted by
//! media-node for each participant and verified by turn-node: one definition for both.
//!
//! ```text
//! username = "<expiry, Unix seconds>:<identity>"
//! password = base64(HMAC-SHA1(secret, username))
//! ```
//!
//! The server never sees the password: it derives it from the username under each live
//! secret ([`password`]) and checks the request's MESSAGE-INTEGRITY with the long-term key
//! made from it. [`VECTORS`] are fixed test vectors both sides test against.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The username for `identity`, valid until `expires_at` (Unix seconds). A `:` in the
/// identity becomes `_`: servers split the username at its first `:`.
pub fn username(identity: &str, expires_at: u64) -> String {
    format!("{expires_at}:{}", identity.replace(':', "_"))
}

/// The password for `username` under `secret`.
pub fn password(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Mint `(username, password)` for `identity`, valid until `expires_at` (Unix seconds).
pub fn mint(secret: &[u8], identity: &str, expires_at: u64) -> (String, String) {
    let username = username(identity, expires_at);
    let password = password(secret, &username);
    (username, password)
}

/// Why a username is not a usable REST username.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Its expiry has passed.
    Expired,
    /// It does not start with `<expiry>:` (or there is no secret to check it with).
    Unknown,
}

/// Check a username's expiry at wall-clock `now_unix`; returns the expiry. A credential
/// expiring at `t` is refused from `t` on. The identity part is optional (a bare
/// `<expiry>` is a REST username too, as coturn has it).
pub fn check_expiry(username: &str, now_unix: u64) -> Result<u64, Rejection> {
    let expiry = username.split(':').next().unwrap_or("");
    let expiry: u64 = expiry.parse().map_err(|_| Rejection::Unknown)?;
    if expiry <= now_unix { Err(Rejection::Expired) } else { Ok(expiry) }
}

/// Verify a presented `(username, password)` against any of `secrets` at `now_unix`.
pub fn verify<S: AsRef<[u8]>>(
    secrets: &[S],
    username: &str,
    password_given: &str,
    now_unix: u64,
) -> Result<(), Rejection> {
    check_expiry(username, now_unix)?;
    // Both sides are base64 of a 20-byte tag: equal lengths, so the comparison below
    // takes the same time whatever the first differing byte.
    let eq = |a: &[u8], b: &[u8]| a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
    if secrets.iter().any(|s| eq(password(s.as_ref(), username).as_bytes(), password_given.as_bytes())) {
        Ok(())
    } else {
        Err(Rejection::Unknown)
    }
}

/// A fixed credential: what [`mint`] yields for `secret`, `identity` and `expires_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vector {
    /// The shared secret.
    pub secret: &'static str,
    /// The identity minted for.
    pub identity: &'static str,
    /// Expiry, Unix seconds.
    pub expires_at: u64,
    /// The username.
    pub username: &'static str,
    /// The password.
    pub password: &'static str,
}

/// Test vectors, computed independently of this code with
/// `printf '<username>' | openssl dgst -sha1 -hmac '<secret>' -binary | base64`.
pub const VECTORS: &[Vector] = &[
    Vector {
        secret: "s3cret",
        identity: "alice",
        expires_at: 1_700_000_000,
        username: "1700000000:alice",
        password: "TtElzSjT0GdnTQ9xdcRNxx96yQs=",
    },
    Vector {
        secret: "turnsecret",
        identity: "bob:laptop",
        expires_at: 4_102_444_800,
        username: "4102444800:bob_laptop",
        password: "WZx+pwqmJAbXs45Zs36qVII8OSY=",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_matches_the_vectors() {
        for v in VECTORS {
            assert_eq!(mint(v.secret.as_bytes(), v.identity, v.expires_at), (v.username.into(), v.password.into()));
        }
    }

    #[test]
    fn verify_accepts_any_live_secret_until_expiry() {
        let v = VECTORS[0];
        let secrets = ["old", v.secret];
        assert_eq!(verify(&secrets, v.username, v.password, v.expires_at - 1), Ok(()));
        assert_eq!(verify(&secrets, v.username, v.password, v.expires_at), Err(Rejection::Expired));
        assert_eq!(verify(&["old"], v.username, v.password, 0), Err(Rejection::Unknown));
        assert_eq!(verify(&secrets, v.username, "TtElzSjT0GdnTQ9xdcRNxx96yQ=", 0), Err(Rejection::Unknown));
        assert_eq!(verify(&secrets, "alice", v.password, 0), Err(Rejection::Unknown), "no expiry");
        assert_eq!(verify(&secrets, "soon:alice", v.password, 0), Err(Rejection::Unknown));
        assert_eq!(verify::<&str>(&[], v.username, v.password, 0), Err(Rejection::Unknown));
    }
}
