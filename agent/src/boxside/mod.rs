//! The box side: everything that reads or changes the seller's ProxySmart box and its
//! modems. From the bottom: `proxysmart` (the HTTP client, the only code that talks to
//! ProxySmart, and the parsers of what it prints), `box_profile` (what this box was seen to
//! do), `ports` (writing a port and checking it took), `rotation` (a new IP for a modem),
//! `inventory` (the modem poller), `usage` (the traffic meter) and `health` (load, memory,
//! disks); then `commands` (what the plane asks, carried out with the above) and
//! `autorotate` (the automatic rotations allocations ask for, through the same commands).
//!
//! Upward it only publishes — watch channels, a report queue, a `Notify` — and never
//! imports the plane side. Downward it records in `local` (journal, audit, metrics).

pub mod autorotate;
pub mod box_profile;
pub mod commands;
pub mod health;
pub mod inventory;
pub mod ports;
pub mod proxysmart;
pub mod rotation;
pub mod usage;
