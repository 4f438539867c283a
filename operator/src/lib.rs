//! The Switchyard operator: reconciles `MediaCluster` and `Room` resources.
#![forbid(unsafe_code)]

pub mod controller;
pub mod decide;
mod error;
pub mod metrics;
pub mod nodes;
pub mod render;
pub mod run;

pub use error::{Error, Result};

use std::path::Path;

/// Write every generated artefact (`crds/*.yaml`, `schema/*.json`) below `root`.
pub fn write_generated(root: &Path) -> anyhow::Result<()> {
    for artifact in switchyard_api::crd::artifacts()? {
        let path = root.join(artifact.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, artifact.contents)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
