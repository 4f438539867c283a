//! The configuration documents the operator renders into each node's ConfigMap
//! (`config.yaml`) and the node reads at start-up: one definition per node, used by both
//! sides, so a field the operator writes is a field the node knows.
//!
//! ```text
//!  MediaCluster ── operator::render::config ──► MediaNodeConfig ─ YAML ─► media-node --config
//!                                           └─► TurnNodeConfig  ─ YAML ─► turn-node  --config
//! ```
//!
//! Invariants:
//! - Every struct refuses unknown fields (`deny_unknown_fields`): a misspelt or
//!   newer-than-the-node field fails the node's start-up with an error naming the field
//!   and the file ([`from_yaml`]), never a silently ignored setting.
//! - Field names are camelCase, as in the CRD the documents are rendered from.
//! - Values are typed as the node uses them (ports `u16`, addresses `IpAddr`, CIDRs
//!   `IpNet`), so the operator meets a bad value when it renders, not the node when it
//!   starts.
//! - Pure: parsing and validation only; reading files is the node's business.

pub mod media_node;
pub mod turn_node;

use std::path::Path;

pub use media_node::MediaNodeConfig;
pub use turn_node::TurnNodeConfig;

use crate::{Error, Result};

/// Parse a config document; the error names `file` and, for a bad or unknown field,
/// the field.
pub fn from_yaml<T: serde::de::DeserializeOwned>(text: &str, file: &Path) -> Result<T> {
    serde_saphyr::from_str(text)
        .map_err(|e| Error::ConfigParse { file: file.display().to_string(), message: e.to_string() })
}

/// Render a config document as YAML.
pub fn to_yaml<T: serde::Serialize>(doc: &T) -> Result<String> {
    serde_saphyr::to_string(doc).map_err(|e| Error::Render(e.to_string()))
}

/// A configuration error naming its field (the dotted path in the YAML document).
pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
    Error::InvalidConfig { field: field.into(), message: message.into() }
}
