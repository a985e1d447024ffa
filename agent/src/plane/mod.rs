//! The plane side: everything that talks to the control plane. `identity` (the key pair
//! and agent id on disk) and `enroll` (registering them with a one-time token), `tls` (how
//! the plane's certificate is trusted) and `proxy_tunnel` (the HTTP proxy the environment
//! names), `connection` (one WebSocket: frames in and out) and `session` (the handshake,
//! then ONE select loop that sends the inventory, usage, health and rotation reports and
//! hands each command to the executor).
//!
//! It sits above the box side: the session drives `boxside::commands` and subscribes to
//! what the box side publishes (inventory, usage, health, automatic rotations); nothing
//! below imports the plane side, so the box side works the same without a plane
//! (`selftest`).

pub mod connection;
pub mod enroll;
pub mod identity;
pub mod proxy_tunnel;
pub mod session;
pub mod tls;
