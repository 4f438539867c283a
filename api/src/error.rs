use crate::token::Grant;

/// Everything that can go wrong in this crate. Token variants are distinct so that a
/// server can tell a client exactly why it was refused; [`Error::code`] is a stable,
/// bounded string fit for an HTTP reason or a metric label.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The token's `exp` is in the past (beyond the leeway).
    #[error("token expired at {expired_at} (now {now})")]
    TokenExpired {
        /// The token's `exp`, Unix seconds.
        expired_at: u64,
        /// The verifier's clock, Unix seconds.
        now: u64,
    },
    /// The token's `nbf` is in the future (beyond the leeway).
    #[error("token not valid before {not_before} (now {now})")]
    TokenNotYetValid {
        /// The token's `nbf`, Unix seconds.
        not_before: u64,
        /// The verifier's clock, Unix seconds.
        now: u64,
    },
    /// The signature does not match the key's secret.
    #[error("token signature is invalid")]
    BadSignature,
    /// The token names an API key (`kid`/`iss`) this server does not know.
    #[error("token is signed with unknown API key {0:?}")]
    UnknownKey(String),
    /// The token is unsigned (`alg: none`).
    #[error("unsigned tokens (alg: none) are refused")]
    AlgNone,
    /// The token is signed with an algorithm other than HS256.
    #[error("token algorithm {0:?} is not accepted (HS256 only)")]
    UnsupportedAlgorithm(String),
    /// The token does not grant what the request needs.
    #[error("token lacks the {0} grant")]
    MissingGrant(Grant),
    /// The token grants a different room.
    #[error("token is for room {granted:?}, not {requested:?}")]
    WrongRoom {
        /// The room the token names.
        granted: String,
        /// The room asked for.
        requested: String,
    },
    /// The token is not a well-formed JWT with our claims.
    #[error("malformed token: {0}")]
    MalformedToken(String),
    /// A room name or identity breaks the rules of [`crate::names`].
    #[error("{0}")]
    InvalidName(crate::names::NameError),
    /// A token could not be signed.
    #[error("cannot sign token: {0}")]
    Mint(String),
    /// A quantity string did not parse.
    #[error("invalid quantity {0:?}: expected a number with an optional SI suffix such as 200M or 1.5G")]
    InvalidQuantity(String),
    /// A generated artefact could not be rendered.
    #[error("cannot render: {0}")]
    Render(String),
    /// A node config document did not parse (bad YAML, a wrong type, an unknown field).
    #[error("config {file}: {message}")]
    ConfigParse {
        /// The file it was read from.
        file: String,
        /// The parser's message, naming the field and line.
        message: String,
    },
    /// A node config document parsed but is inconsistent.
    #[error("invalid configuration: `{field}`: {message}")]
    InvalidConfig {
        /// Dotted field path, e.g. `relay.portMin`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

impl Error {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::TokenExpired { .. } => "token_expired",
            Error::TokenNotYetValid { .. } => "token_not_yet_valid",
            Error::BadSignature => "bad_signature",
            Error::UnknownKey(_) => "unknown_key",
            Error::AlgNone => "alg_none",
            Error::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Error::MissingGrant(_) => "missing_grant",
            Error::WrongRoom { .. } => "wrong_room",
            Error::MalformedToken(_) => "malformed_token",
            Error::InvalidName(e) if e.what == "identity" => "invalid_identity",
            Error::InvalidName(_) => "invalid_room_name",
            Error::Mint(_) => "mint_failed",
            Error::InvalidQuantity(_) => "invalid_quantity",
            Error::Render(_) => "render_failed",
            Error::ConfigParse { .. } => "config_parse",
            Error::InvalidConfig { .. } => "invalid_config",
        }
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
