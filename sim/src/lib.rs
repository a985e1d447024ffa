//! ProxySmart simulator: a stand-in for a seller's ProxySmart box, faithful to
//! `spec/proxysmart-api.md` ("What a faithful simulator reproduces").
//!
//! One TCP listener serves two things:
//! - the ProxySmart API (`/apix/*`, `/crud/*`, `/modem/*` behind HTTP Basic auth, JSON served
//!   as `text/html`, string-typed fields, skipped entries, HTTP-200 error bodies), subject to
//!   injectable [`Fault`]s;
//! - an admin interface under `/_sim/` (JSON, no auth, never faulted) for scripts driving the
//!   `proxysmart-sim` binary:
//!   - `GET  /_sim/state` — modems, ports (with credentials), fault, API call counts;
//!   - `POST /_sim/modems/{imei}` `{"online":false}` / `{"ext_ip":"1.2.3.4"}` /
//!     `{"carrier":"Unknown"}` / `{"signal":"12"}` / `{"same_ip_next_rotation":true}`;
//!   - `POST /_sim/fault` `{"kind":"none|latency|status500|html|garbage|hang|refuse","ms":N}`;
//!   - `POST /_sim/rotation_delay` `{"ms":N}`; `POST /_sim/reset_counters` (API call counts);
//!     `POST /_sim/reset_traffic` (the nightly bandwidth reset);
//!   - `POST /_sim/ports` `{"imei":"…","port_name":"…","apply":true}` — a foreign port.
//!
//! Every applied port gets REAL HTTP-proxy and SOCKS5 listeners on `SimConfig::proxy_ip` that
//! check the port's login/password, count forwarded bytes and enforce its traffic quota and
//! speed limits (`limits`). Tests drive the simulator
//! in-process through [`SimHandle`]; see `docs/simulator.md` for the whole picture.

mod admin;
mod api;
mod config;
mod error;
mod faults;
mod form;
mod gate;
mod handle;
mod http_proxy;
mod inspect;
mod json;
mod limits;
mod listeners;
mod model;
mod pipe;
pub mod pools;
pub mod quirks;
mod rotation;
mod seed;
mod server;
mod shared;
mod socks5;
mod state;
mod store;
mod util;

pub use config::{SimConfig, FIELD_ROTATION_DELAY};
pub use error::SimError;
pub use faults::{Fault, WriteFault};
pub use handle::SimHandle;
pub use model::{SimModem, SimPort};
pub use quirks::Quirks;
pub use seed::imei;
pub use state::{ApiCall, PathFault};

use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Starts the simulator on an already-bound listener and returns at once; the server runs
/// until `shutdown` is cancelled (then [`SimHandle::stopped`] resolves).
pub async fn start(
    listener: TcpListener,
    config: SimConfig,
    shutdown: CancellationToken,
) -> std::io::Result<SimHandle> {
    config.validate()?;
    let local = listener.local_addr()?;
    let sim = Arc::new(shared::Sim::new(config, local, shutdown));
    server::spawn(sim.clone(), listener);
    tracing::info!(url = %sim.base_url, modems = sim.config.modems, "ProxySmart simulator started");
    Ok(SimHandle::new(sim))
}
