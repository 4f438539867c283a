//! Switchyard's e2e tier: a real control plane on loopback (`e2e/cluster.sh`), our real
//! binaries as its pods, and scenario tests against both.
//!
//! - [`runner`]: `pod-runner`, which runs media-node, turn-node and the operator for the
//!   pods kwok pretends to run, as a kubelet would (own network namespace and pod IP,
//!   volumes mounted at their paths, env and args from the pod spec, service-account
//!   token, restarts, graceful termination).
//! - [`support`]: what the scenario tests in `tests/` share.
//! - [`prom`]: scrape targets from the ServiceMonitors the operator and the chart create,
//!   for the Prometheus `run.sh` starts (`prom-targets`).
//!
//! `e2e/run.sh` builds everything, starts the cluster and the runner, installs the
//! operator and runs `cargo test -p switchyard-e2e --tests -- --ignored`.

pub mod prom;
pub mod runner;
pub mod support;

pub use support::*;
