//! The Switchyard operator: reconciles `MediaCluster` and `Room` resources.
//!
//! ```text
//!                 watch MediaCluster (+ owned StatefulSet, Deployment, Service, ConfigMap)
//!   apiserver ───────────────────────────────────────────────┐
//!       ▲                                                    ▼
//!       │ SSA objects       ┌──────────── controller::media_cluster ───────────────┐
//!       │ (field manager    │ observe: Secrets, workloads, pods,                    │
//!       │  switchyard-      │          GET :9090/internal/status on every pod ──────┼──► nodes
//!       │  operator),       │ decide:  decide::autoscale + decide::drain (pure)     │
//!       │ status, Events    │ act:     render::render (pure) → apply; drain victim ─┼──► POST /drain
//!       ├───────────────────┤ report:  status (conditions, replicas, loads, URLs)   │
//!       │                   └──────────────┬────────────────────────────────────────┘
//!       │                                  │ node loads + health (Context::clusters)
//!       │ status.node,      ┌──────────────▼──────── controller::room ──────────────┐
//!       │ finalizer,        │ decide::lifecycle: place / reschedule / expire / keep  │
//!       └───────────────────┤ decide::placement: two random choices (seeded RNG)     │
//!         watch Room ──────►│ on delete: POST :9090/internal/rooms/<name>/close ─────┼──► node
//!                           └─────────────────────────────────────────────────────────┘
//! ```
//!
//! # Invariants
//!
//! - Decisions are pure functions in [`decide`] (no kube types, time and randomness
//!   passed in); rendering is a pure function in [`render`]. The controllers only
//!   observe, call them, and act.
//! - Everything the operator creates carries a controller owner reference to its
//!   MediaCluster and is written by server-side apply with one field manager,
//!   `switchyard-operator`. Optional objects that stop being rendered (Ingress,
//!   NetworkPolicy, ServiceMonitors) are deleted if, and only if, this cluster owns them.
//! - Generated secrets are read back and re-applied unchanged: never rotated by a
//!   reconcile.
//! - A pod is never removed with load on it unless its drain grace period ran out: the
//!   victim is drained first and replicas drop only afterwards ([`decide::drain`]).
//! - Room placement never exceeds a node's capacity and skips draining and unready
//!   nodes ([`decide::placement`]): a node's count joins the Room cache, every placement
//!   the cache does not show yet, and the node's own report, so a burst cannot overfill it.
//! - `Ready` means a call can be placed now ([`decide::health`]); a spec that cannot be
//!   rendered ([`render::validate`], or an object the apiserver refuses) sets `Ready=False`
//!   and `Degraded=True` with reason `InvalidSpec` and a Warning Event saying what to change.
//!
//! # Where to read on
//!
//! - The node contract (args, env, files, ports, config fields): [`render`] and
//!   [`render::config`].
//! - Metrics (a table of every series): [`metrics`].
//! - Leader election, admin endpoints and flags: [`run`].
//! - Errors and their metric labels: [`Error`].
//!
//! # Tests
//!
//! Unit tests sit next to the code: decision tables on a virtual clock, golden files for
//! rendering (`tests/golden/*.yaml`; `UPDATE_GOLDEN=1 cargo test -p switchyard-operator`
//! rewrites them, review the diff), and reconciles against a mocked apiserver
//! (`tower-test`) with a fake node fleet, asserting the exact requests.
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

/// The Helm chart's CRD directory. Helm installs CRDs only from there and cannot read
/// files outside the chart, so it holds a byte-identical copy of every `crds/*.yaml`.
pub const CHART_CRDS_DIR: &str = "charts/switchyard/crds";

/// Write every generated artefact (`crds/*.yaml` and its copy in [`CHART_CRDS_DIR`],
/// `schema/*.json`) below `root`.
pub fn write_generated(root: &Path) -> anyhow::Result<()> {
    for artifact in switchyard_api::crd::artifacts()? {
        let mut paths = vec![root.join(artifact.path)];
        if let Some(file) = artifact.path.strip_prefix("crds/") {
            paths.push(root.join(CHART_CRDS_DIR).join(file));
        }
        for path in paths {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, &artifact.contents)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
