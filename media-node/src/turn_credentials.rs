//! TURN REST-API credentials (the scheme coturn, STUNner and turn-node accept):
//! `username = <expiry unix seconds>:<identity>`, `password = base64(HMAC-SHA1(secret, username))`.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Credentials for `identity`, valid until `expires_at` (Unix seconds).
pub(crate) fn rest_credentials(secret: &str, identity: &str, expires_at: u64) -> (String, String) {
    // A ':' in the identity would confuse servers that split on the first one.
    let user = identity.replace(':', "_");
    let username = format!("{expires_at}:{user}");
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_rest_api_scheme() {
        // Reference value computed with: printf '1700000000:alice' | openssl dgst -sha1 -hmac s3cret -binary | base64
        let (u, p) = rest_credentials("s3cret", "alice", 1_700_000_000);
        assert_eq!(u, "1700000000:alice");
        assert_eq!(p, "TtElzSjT0GdnTQ9xdcRNxx96yQs=");
        assert_eq!(rest_credentials("s3cret", "a:b", 1).0, "1:a_b");
    }
}
