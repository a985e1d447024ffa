//! The local ProxySmart API: the HTTP client (the only code that talks to ProxySmart), the
//! tolerant parsers for its string-typed JSON (`wire`, and `counters` for the traffic
//! counters it prints for people), its typed errors, and its zone-less clock.

pub mod box_clock;
mod client;
pub mod counters;
mod error;
pub mod form;
mod wire;

pub use box_clock::BoxClock;
pub use client::{ProxysmartClient, StorePort};
pub use error::ProxysmartError;
pub use wire::{
    is_imei, is_refusal, normalize_modems, parse_action, parse_bandwidth_report, parse_free_ports,
    parse_ports, parse_single_status, parse_status, PortEntry, ReplyForm,
};
