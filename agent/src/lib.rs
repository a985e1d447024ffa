//! farmhand-agent: the seller-side daemon. It reads the local ProxySmart API, keeps an
//! outbound WebSocket to the control plane, reports the box's inventory and executes the
//! plane's commands.
//!
//! The modules are grouped by where data flows, in one-way layers, top to bottom: a module
//! imports only its own layer and the layers below, and no modules import each other in a
//! circle, siblings in a directory included (ARCHITECTURE.md states the order).
//!
//! - `cli` — the operator's subcommands (`doctor`, `selftest`, `status`, enrollment help).
//! - `run` — the daemon: wires everything, dials the plane forever with backoff, and
//!   publishes locally (the status file, the `/metrics` page).
//! - `plane` — the control-plane side: identity, enrollment, TLS trust, the HTTP proxy
//!   tunnel, one WebSocket `connection`, and the `session` (handshake + one select loop).
//! - `boxside` — the seller's box: the ProxySmart client (the only code that talks to it),
//!   the box profile, port writes, rotations, the modem poller, the traffic meter, the
//!   box's health, the `commands` the plane sends and the automatic rotations.
//! - `local` — the agent's own records: the journal, the seller's audit, live status, the
//!   metrics counters.
//! - `config` — the validated configuration and the value types of every setting.
//! - `base` — small helpers: backoff, clock, atomic files, masked strings, version.
//!
//! A lower layer reports upward through channels, never by importing: the box side
//! publishes the inventory, usage, health and automatic rotations, and the session sends
//! them. Data path of a command: `plane::connection` → `plane::session` →
//! `boxside::commands` (executor, then one file per command) → `boxside::ports` /
//! `boxside::rotation` → `boxside::proxysmart`. ProxySmart credentials live in `config`
//! and `boxside::proxysmart` only and never reach a protocol message.

pub mod base;
pub mod boxside;
pub mod cli;
pub mod config;
pub mod local;
pub mod plane;
pub mod run;

pub use base::crypto::install_crypto_provider;
pub use base::masked::Masked;
pub use base::version::{AGENT_VERSION, GIT_COMMIT, LONG_VERSION};
pub use config::{AgentConfig, ConfigError, ControlPlaneConfig, ProxysmartConfig};
pub use local::status::AgentStatus;
pub use plane::enroll::{enroll, EnrollError};
pub use run::{run, run_with_status, AgentError};
