//! The bottom layer: small helpers every other layer may use, and that use nothing of the
//! agent's own. `backoff` (named retry and reconnect policies, jitter, randomness),
//! `clock` (Unix milliseconds now), `files` (atomic writes of small state files),
//! `masked` (a string whose `Debug` hides it), `version` (what `hello` and `--version`
//! report) and `crypto` (rustls' process-wide provider). What both binaries share
//! (the backoff arithmetic, an error's chain of sources) is in `farmhand_ops`.

pub mod backoff;
pub mod clock;
pub mod crypto;
pub(crate) mod files;
pub mod masked;
pub mod version;
