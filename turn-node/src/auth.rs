//! Long-term credentials (RFC 8489 §9.2) with TURN REST API ephemeral
//! usernames, and stateless nonces.
//!
//! REST credentials: `username = "<expiry-unix>:<user-id>"`,
//! `password = base64(HMAC-SHA1(secret, username))`, defined once in
//! `switchyard_api::turn_rest` (media-node mints with it). Several secrets are live
//! at once so a secret can be rotated without cutting anyone off; the set is
//! swapped atomically when the secrets file changes.
//!
//! Nonces carry their own expiry and an HMAC over it under a per-process key,
//! so no nonce table is kept and every shard accepts every other shard's nonce.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
/// Why a username has no usable key.
pub use switchyard_api::turn_rest::Rejection;
use switchyard_api::turn_rest::check_expiry;
/// The REST API password for a username under a secret.
pub use switchyard_api::turn_rest::password as rest_password;

type HmacSha1 = Hmac<Sha1>;

/// The 16-byte long-term key `MD5(username:realm:password)`.
pub type Key = [u8; 16];

/// Compute the long-term key.
pub fn long_term_key(username: &str, realm: &str, password: &str) -> Key {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// The credential store shared by all shards.
#[derive(Debug)]
pub struct Credentials {
    realm: String,
    secrets: RwLock<Arc<Vec<Vec<u8>>>>,
    static_users: HashMap<String, Key>,
}

impl Credentials {
    /// Build from the realm, REST secrets and static `(user, password)` pairs.
    pub fn new(realm: &str, secrets: Vec<Vec<u8>>, static_users: &[(String, String)]) -> Self {
        let static_users = static_users.iter().map(|(u, p)| (u.clone(), long_term_key(u, realm, p))).collect();
        Credentials { realm: realm.to_owned(), secrets: RwLock::new(Arc::new(secrets)), static_users }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Replace the REST secrets (rotation).
    pub fn set_secrets(&self, secrets: Vec<Vec<u8>>) {
        *self.secrets.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(secrets);
    }

    /// Number of REST secrets live.
    pub fn secret_count(&self) -> usize {
        self.secrets.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Candidate keys for `username` at wall-clock `now_unix`: one per live
    /// secret (the caller tries each against MESSAGE-INTEGRITY), or the static
    /// user's key.
    pub fn keys(&self, username: &str, now_unix: u64, out: &mut Vec<Key>) -> Result<(), Rejection> {
        out.clear();
        if let Some(key) = self.static_users.get(username) {
            out.push(*key);
            return Ok(());
        }
        check_expiry(username, now_unix)?;
        let secrets = self.secrets.read().unwrap_or_else(|e| e.into_inner()).clone();
        for s in secrets.iter() {
            out.push(long_term_key(username, &self.realm, &rest_password(s, username)));
        }
        if out.is_empty() { Err(Rejection::Unknown) } else { Ok(()) }
    }
}

/// Stateless nonces: `<16 hex expiry><16 hex mac>`.
#[derive(Clone, Debug)]
pub struct NonceMinter {
    key: [u8; 32],
    lifetime_secs: u64,
}

/// What a presented nonce turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    /// Minted by us and not expired.
    Valid,
    /// Minted by us and expired: answer 438 with a fresh one.
    Stale,
    /// Not ours (forged or from another process): also 438, so the client retries.
    Invalid,
}

impl NonceMinter {
    /// A minter with a key and nonce lifetime.
    pub fn new(key: [u8; 32], lifetime_secs: u64) -> Self {
        NonceMinter { key, lifetime_secs }
    }

    fn mac(&self, expiry: u64) -> u64 {
        let mut mac = HmacSha1::new_from_slice(&self.key).expect("any key length");
        mac.update(&expiry.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        u64::from_be_bytes(tag[..8].try_into().expect("20-byte tag"))
    }

    /// A fresh nonce valid until `now_unix + lifetime`.
    pub fn mint(&self, now_unix: u64) -> String {
        let expiry = now_unix + self.lifetime_secs;
        format!("{expiry:016x}{:016x}", self.mac(expiry))
    }

    /// Check a nonce at `now_unix`.
    pub fn check(&self, nonce: &[u8], now_unix: u64) -> NonceCheck {
        let parse = |b: &[u8]| std::str::from_utf8(b).ok().and_then(|s| u64::from_str_radix(s, 16).ok());
        if nonce.len() != 32 {
            return NonceCheck::Invalid;
        }
        let (Some(expiry), Some(mac)) = (parse(&nonce[..16]), parse(&nonce[16..])) else {
            return NonceCheck::Invalid;
        };
        if self.mac(expiry) != mac {
            NonceCheck::Invalid
        } else if expiry <= now_unix {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_credentials_try_every_secret_and_expire() {
        let creds = Credentials::new("r", vec![b"old".to_vec(), b"new".to_vec()], &[]);
        let user = "1000:alice";
        let mut keys = Vec::new();
        creds.keys(user, 999, &mut keys).unwrap();
        let want = long_term_key(user, "r", &rest_password(b"new", user));
        assert!(keys.contains(&want));
        assert_eq!(creds.keys(user, 1000, &mut keys), Err(Rejection::Expired));
        assert_eq!(creds.keys("alice", 0, &mut keys), Err(Rejection::Unknown));
        creds.set_secrets(vec![]);
        assert_eq!(creds.keys(user, 0, &mut keys), Err(Rejection::Unknown));
    }

    /// The shared vectors (media-node mints with the same module): each verifies under
    /// its secret until its expiry, and not under another secret.
    #[test]
    fn the_shared_rest_vectors_verify() {
        let mut keys = Vec::new();
        for v in switchyard_api::turn_rest::VECTORS {
            let creds = Credentials::new("r", vec![b"other".to_vec(), v.secret.as_bytes().to_vec()], &[]);
            creds.keys(v.username, v.expires_at - 1, &mut keys).unwrap();
            assert!(keys.contains(&long_term_key(v.username, "r", v.password)), "{}", v.username);
            assert_eq!(creds.keys(v.username, v.expires_at, &mut keys), Err(Rejection::Expired));
            let wrong = Credentials::new("r", vec![b"other".to_vec()], &[]);
            wrong.keys(v.username, 0, &mut keys).unwrap();
            assert!(!keys.contains(&long_term_key(v.username, "r", v.password)));
        }
    }

    #[test]
    fn nonce_lifecycle() {
        let m = NonceMinter::new([1; 32], 60);
        let n = m.mint(100);
        assert_eq!(m.check(n.as_bytes(), 159), NonceCheck::Valid);
        assert_eq!(m.check(n.as_bytes(), 160), NonceCheck::Stale);
        let other = NonceMinter::new([2; 32], 60);
        assert_eq!(other.check(n.as_bytes(), 100), NonceCheck::Invalid);
        assert_eq!(m.check(b"short", 0), NonceCheck::Invalid);
    }
}
