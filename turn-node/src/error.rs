//! The crate's one error type.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong starting or running the TURN server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is invalid; `field` is its path in the YAML file.
    #[error("invalid configuration: `{field}`: {message}")]
    Config {
        /// Dotted field path, e.g. `relay.portRange`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The YAML config did not parse.
    #[error("parsing {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Parser message (names the field and line).
        message: String,
    },
    /// A socket could not be bound.
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        /// Listener or relay.
        what: &'static str,
        /// Address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// TLS setup failed.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The config document is invalid or did not parse (`switchyard_api::node_config`).
    #[error(transparent)]
    Document(#[from] switchyard_api::Error),
    /// A runtime/thread failure.
    #[error("runtime: {0}")]
    Runtime(String),
}

impl Error {
    /// Shorthand for a config error.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config { field: field.into(), message: message.into() }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
