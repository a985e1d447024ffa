//! farmhand-agent: the seller-side daemon. It reads the local ProxySmart API, keeps an
//! outbound WebSocket to the control plane, reports the box's inventory and executes the
//! plane's commands.
//!
//! Data path: `config` → `identity` → `connection` (frames over a socket) → `session`
//! (handshake + one select loop) → `commands/` (one file per command) → `proxysmart/` (the
//! only code that talks to ProxySmart). `inventory` polls ProxySmart; `journal` makes
//! command results and managed ports durable; `backoff` paces reconnects; `run` ties it
//! together. `policy` is the seller's local say over what the plane may do, and `audit` the
//! local record of what it did; `autorotate` carries out the automatic IP rotations
//! allocations ask for; `usage` meters each allocation's traffic. ProxySmart credentials
//! live in `config` and `proxysmart` only and never reach a protocol message.

pub mod audit;
pub mod autorotate;
pub mod base;
pub mod box_profile;
pub mod cli;
pub mod commands;
pub mod config;
pub mod connection;
pub mod enroll;
pub mod health;
pub mod identity;
pub mod inventory;
pub mod journal;
pub mod metrics;
pub mod ports;
pub mod proxy_tunnel;
pub mod proxysmart;
pub mod rotation;
pub mod run;
pub mod session;
pub mod status;
pub mod tls;
pub mod usage;

pub use base::crypto::install_crypto_provider;
pub use base::masked::Masked;
pub use base::version::{AGENT_VERSION, GIT_COMMIT, LONG_VERSION};
pub use config::{AgentConfig, ConfigError, ControlPlaneConfig, ProxysmartConfig};
pub use enroll::{enroll, EnrollError};
pub use run::{run, run_with_status, AgentError};
pub use status::AgentStatus;
