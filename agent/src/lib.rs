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
