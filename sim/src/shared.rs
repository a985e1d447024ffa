//! `Sim`: everything the routes, the proxies and the handle share — config, the state mutex,
//! live port listeners, the refuse flag, shutdown and the task tracker.

use super::config::SimConfig;
use super::faults::Fault;
use super::listeners::PortRuntime;
use super::seed;
use super::state::State;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug)]
pub(crate) struct Sim {
    pub config: SimConfig,
    pub base_url: String,
    pub local_addr: SocketAddr,
    state: Mutex<State>,
    /// Live listeners per portID. A tokio mutex: apply/purge hold it while binding and
    /// stopping, which serialises listener lifecycles.
    pub runtimes: tokio::sync::Mutex<HashMap<String, PortRuntime>>,
    /// Mirrors `State::fault == Refuse`, read on every API-connection read.
    refuse: AtomicBool,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

impl Sim {
    pub fn new(config: SimConfig, local_addr: SocketAddr, shutdown: CancellationToken) -> Self {
        let modems = seed::numbered(
            config.first_modem + 1,
            config.modems,
            config.quirks.odd_imeis,
        );
        let mut state = State::new(modems, config.rotation_delay);
        state.utc_offset_s = config.utc_offset_s;
        state.store_port_replaces = config.store_port_replaces;
        state.quirks = config.quirks.clone();
        let host = if local_addr.ip().is_unspecified() {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), local_addr.port())
        } else {
            local_addr
        };
        let tracker = TaskTracker::new();
        // Closed at once: `wait()` then resolves as soon as every spawned task is done.
        tracker.close();
        Sim {
            config,
            base_url: format!("http://{host}"),
            local_addr,
            state: Mutex::new(state),
            runtimes: tokio::sync::Mutex::new(HashMap::new()),
            refuse: AtomicBool::new(false),
            shutdown,
            tracker,
        }
    }

    /// The state; a poisoned lock is still usable (a panicking test thread must not wedge
    /// every other request).
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_fault(&self, fault: Fault) {
        self.state().fault = fault;
        self.refuse.store(fault == Fault::Refuse, Ordering::SeqCst);
        tracing::info!(?fault, "simulator fault set");
    }

    pub fn refusing(&self) -> bool {
        self.refuse.load(Ordering::SeqCst)
    }
}
