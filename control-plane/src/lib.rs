//! farmhand-control: the marketplace's control plane. It enrolls agents, holds their
//! WebSockets (`gateway`), keeps the live fleet view (`fleet`), allocates ports on modems
//! (`allocator`) and serves the REST API (`api`), with sled storage (`store`).
//!
//! The library is the whole program; `main.rs` only parses flags. Start it in-process with
//! [`ControlPlane::open`] and [`ControlPlane::serve`] on an already-bound listener.

pub mod allocator;
pub mod api;
pub mod cidr;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod events;
pub mod fd_limit;
pub mod fleet;
pub mod gateway;
pub mod http_error;
pub mod http_server;
pub mod ids;
pub mod keys;
pub mod local_admin;
pub mod metrics;
pub mod probe;
pub mod quality;
pub mod ratelimit;
pub mod rekey;
pub mod retention;
pub mod server;
pub mod store;
pub mod tls;
pub mod webhooks;

pub use config::ServerConfig;
pub use keys::create_key;
pub use server::{serve, ControlPlane, ServeError};
pub use store::{Role, SledStore, Store, StoreError};
