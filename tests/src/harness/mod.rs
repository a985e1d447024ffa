//! Building blocks for end-to-end tests and the demo: the whole stack on 127.0.0.1:0
//! ([`Stack`]), a REST client ([`Api`]), a local origin server, a real `curl` through the
//! buyer's proxy, a recording WebSocket relay, and [`within`] (the shared `eventually` with an explicit limit) for waiting without sleeps;
//! for fault injection, the real binaries as processes ([`PlaneProcess`], [`AgentProcess`])
//! and a TCP proxy that can partition the network ([`PartitionProxy`]).

mod api;
mod curl;
mod enrolled;
mod origin;
mod partition;
mod pki;
mod process;
mod raw_agent;
mod receiver;
mod relay;
mod scan;
mod stack;

pub use api::{metric, Api, Reply};
pub use curl::{curl_via, CurlOutcome};
pub use enrolled::enroll_agent;
pub use farmhand_test_support::within;
pub use origin::Origin;
pub use partition::PartitionProxy;
pub use pki::{fingerprint_of_pem, PlaneTls, TestCa};
pub use process::{binary, write_agent_config, AgentProcess, PlaneProcess, Proc};
pub use raw_agent::{new_key, Heard, RawAgent};
pub use receiver::{start_receiver, verifies, Inbox, Received};
pub use relay::Relay;
pub use scan::files_containing;
pub use stack::{
    api_client, proxy_urls, quirks_from_env, Stack, StackOptions, StackTls, LOOPBACK_TARGETS,
};
