//! farmhand-ops: the operations plumbing both binaries share, so the agent and the control
//! plane behave the same for an operator:
//!
//! - `backoff` — the doubling delay and the jitters both binaries' retries use;
//! - `error_chain` — an error and its sources in one line;
//! - `config_keys` — a config type's keys, read from its own `Deserialize` impl;
//! - `env` — `FARMHAND_<SECTION>_<KEY>` environment variables override the config file
//!   (applied to the parsed TOML before the strict structs see it; unknown variables are
//!   errors), and `*_FILE` variables read a value from a file;
//! - `logging` — tracing to stderr, human-readable or JSON lines, with the protocol's
//!   frame-log guard always applied;
//! - `metrics` — atomic counters, fixed-bucket histograms and the Prometheus text format.
//!
//! Invariant: no I/O beyond reading the files a `*_FILE` variable names (and the CSPRNG);
//! no tokio.

pub mod backoff;
pub mod config_keys;
pub mod env;
mod error_chain;
pub use error_chain::error_chain;
pub mod logging;
pub mod metrics;
