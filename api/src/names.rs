//! What a room name and a participant identity may be. Checked where a name enters the
//! system: when a token is minted, when a token is verified (before the WebSocket upgrade),
//! on a `?room=` query, and by the apiserver for `Room` objects (their CRD repeats the room
//! name rule in CEL).
//!
//! - A **room name** is 1–63 characters of lower-case ASCII letters, digits, `-` and `.`,
//!   starting and ending with a letter or digit, with a letter or digit on both sides of
//!   every `.` (a DNS-1123 subdomain of at most 63 characters). In Kubernetes a room is a
//!   `Room` object of that name, so the same rule holds everywhere: a room that works in
//!   `switchyard dev` works in a cluster, and a name is also a valid label value.
//! - An **identity** is 1–128 bytes of UTF-8 without control characters (U+0000–U+001F,
//!   U+007F–U+009F) and without leading or trailing white space. Anything else is the
//!   app's choice: identities are compared byte for byte and never used as paths.

use std::fmt;

/// The longest room name, in characters (bytes: room names are ASCII).
pub const MAX_ROOM_NAME_LEN: usize = 63;

/// The longest identity, in bytes of UTF-8.
pub const MAX_IDENTITY_LEN: usize = 128;

/// Why a name was refused; the message quotes at most the first 64 characters of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    /// `room name` or `identity`.
    pub what: &'static str,
    /// The offending value, cut to 64 characters.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} {:?}: {}", self.what, self.value, self.reason)
    }
}

impl std::error::Error for NameError {}

fn refuse(what: &'static str, value: &str, reason: impl Into<String>) -> NameError {
    NameError { what, value: value.chars().take(64).collect(), reason: reason.into() }
}

/// Check a room name against the rule in the module docs.
pub fn check_room_name(name: &str) -> Result<(), NameError> {
    let what = "room name";
    if name.is_empty() {
        return Err(refuse(what, name, "must not be empty"));
    }
    if name.len() > MAX_ROOM_NAME_LEN {
        return Err(refuse(what, name, format!("is {} bytes; at most {MAX_ROOM_NAME_LEN}", name.len())));
    }
    if let Some((at, c)) = name.char_indices().find(|&(_, c)| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '.')) {
        return Err(refuse(
            what,
            name,
            format!("{c:?} at byte {at}: only lower-case letters, digits, '-' and '.' are allowed"),
        ));
    }
    for label in name.split('.') {
        let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if !alnum(label.chars().next()) || !alnum(label.chars().last()) {
            return Err(refuse(
                what,
                name,
                "must start and end with a letter or digit, with a letter or digit on both sides of every '.'",
            ));
        }
    }
    Ok(())
}

/// Check an identity against the rule in the module docs.
pub fn check_identity(identity: &str) -> Result<(), NameError> {
    let what = "identity";
    if identity.is_empty() {
        return Err(refuse(what, identity, "must not be empty"));
    }
    if identity.len() > MAX_IDENTITY_LEN {
        return Err(refuse(what, identity, format!("is {} bytes; at most {MAX_IDENTITY_LEN}", identity.len())));
    }
    if let Some((at, c)) = identity.char_indices().find(|&(_, c)| c.is_control()) {
        return Err(refuse(what, identity, format!("control character {c:?} at byte {at}")));
    }
    if identity.starts_with(char::is_whitespace) || identity.ends_with(char::is_whitespace) {
        return Err(refuse(what, identity, "must not start or end with white space"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_short_dns_subdomains() {
        for ok in ["demo", "r", "standup-2", "team.standup", "a1.b2.c3", "0", &"a".repeat(63)] {
            assert_eq!(check_room_name(ok), Ok(()), "{ok:?}");
        }
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            (&"a".repeat(64), "at most 63"),
            (&"a".repeat(8192), "at most 63"),
            ("../../etc", "'/'"),
            ("a\0b", "'\\0'"),
            ("a\nb", "'\\n'"),
            ("Standup", "'S'"),
            ("my room", "' '"),
            ("under_score", "'_'"),
            ("café", "'é'"),
            ("-lead", "start and end"),
            ("trail-", "start and end"),
            ("a..b", "both sides"),
            (".a", "both sides"),
            ("a.-b", "both sides"),
        ];
        for (bad, why) in cases {
            let e = check_room_name(bad).expect_err(bad);
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
            assert!(e.value.chars().count() <= 64, "the message quotes a bounded prefix");
        }
    }

    #[test]
    fn identities_are_printable_and_bounded() {
        for ok in ["alice", "Alice Smith", "user:42", "../../etc", "名前", "a@example.com", &"x".repeat(128)] {
            assert_eq!(check_identity(ok), Ok(()), "{ok:?}");
        }
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            (&"x".repeat(129), "at most 128"),
            (&"é".repeat(65), "130 bytes"),
            ("a\0b", "control"),
            ("a\nb", "control"),
            ("a\u{85}b", "control"),
            ("a\u{7f}", "control"),
            (" alice", "white space"),
            ("alice\u{3000}", "white space"),
        ];
        for (bad, why) in cases {
            let e = check_identity(bad).expect_err(bad);
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
        }
    }
}
