//! Test kit for Farmhand: a faithful ProxySmart simulator (`sim`) that the agent's tests, the
//! end-to-end tests and the demo run against instead of a real seller box.

pub mod harness;
pub use farmhand_sim as sim;
pub mod swarm;
