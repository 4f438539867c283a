//! Pure decisions: placement, autoscaling, room lifecycle and cluster health.
//!
//! Nothing in here knows about Kubernetes, HTTP or the wall clock. The controllers
//! translate what they observe into these plain structs, call a function, and act on
//! the answer; time and randomness come in as arguments so every rule is tested on a
//! virtual clock with a seeded RNG.

pub mod autoscale;
pub mod drain;
pub mod health;
pub mod lifecycle;
pub mod placement;
