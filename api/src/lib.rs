//! placeholder
pub mod node;
