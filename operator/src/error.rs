//! The crate's one error type. Each variant doubles as the `error` label of
//! `switchyard_operator_reconcile_errors_total`, so the set is small and bounded.

use std::time::Duration;

/// Everything a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a request.
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    /// The resource cannot be acted on as written (bad quantity, missing cluster…).
    #[error("invalid {what}: {message}")]
    Invalid {
        /// Which field or object.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// A node's internal endpoint failed (connection, status code, body).
    #[error("node {node}: {message}")]
    Node {
        /// The pod name.
        node: String,
        /// What went wrong.
        message: String,
    },
    /// A rendered object could not be turned into JSON for apply.
    #[error("serialize {kind}: {source}")]
    Serialize {
        /// The object kind.
        kind: &'static str,
        /// The serde error.
        source: serde_json::Error,
    },
    /// The Room's cluster does not exist (yet); retried later.
    #[error("MediaCluster {0} not found")]
    ClusterNotFound(String),
    /// A finalizer step failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// The process could not start or keep running (admin socket, lease, signals).
    #[error("runtime: {0}")]
    Runtime(String),
}

impl Error {
    /// The stable metric label of this error.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Invalid { .. } => "invalid",
            Error::Node { .. } => "node",
            Error::Serialize { .. } => "serialize",
            Error::ClusterNotFound(_) => "cluster_not_found",
            Error::Finalizer(_) => "finalizer",
            Error::Runtime(_) => "runtime",
        }
    }

    /// How long to wait before retrying after this error.
    pub fn retry_after(&self) -> Duration {
        match self {
            // A typo in the spec will not fix itself quickly; do not hammer the API.
            Error::Invalid { .. } => Duration::from_secs(300),
            Error::ClusterNotFound(_) => Duration::from_secs(30),
            _ => Duration::from_secs(5),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
