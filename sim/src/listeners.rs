//! Per-port proxy lifecycles: `apply_port` binds REAL HTTP and SOCKS5 listeners with the
//! port's credentials as stored at that moment; re-applying restarts them (open tunnels
//! close, the new credentials and limits apply) on the same listening sockets when the
//! ports did not change; `purge_port` stops accepting, closes open tunnels and the sockets,
//! and forgets the port.

use super::error::SimError;
use super::limits::PortLimits;
use super::shared::Sim;
use super::state::{Counters, PathFault};
use super::{http_proxy, socks5};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What a live proxy checks, counts and limits: a copy taken at apply time.
pub(crate) struct LivePort {
    pub port_id: String,
    pub imei: String,
    pub login: String,
    pub password: String,
    pub counters: Arc<Counters>,
    /// Quota and speed limits as stored when the port was applied.
    pub limits: PortLimits,
    /// `PROXY_VALID_BEFORE` as stored ("" = none), box-local time.
    pub valid_before: String,
    /// The box's zone, to read `valid_before` against now.
    pub utc_offset_s: i32,
    /// The box stops serving the port at its expiry (not `Quirks::ignores_expiry`).
    pub enforce_expiry: bool,
}

impl fmt::Debug for LivePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LivePort")
            .field("port_id", &self.port_id)
            .finish_non_exhaustive()
    }
}

impl LivePort {
    pub fn credentials_match(&self, login: &[u8], password: &[u8]) -> bool {
        let login_ok = super::gate::constant_time_eq(login, self.login.as_bytes());
        let password_ok = super::gate::constant_time_eq(password, self.password.as_bytes());
        login_ok & password_ok
    }

    /// The quota is used up: new traffic is refused.
    pub fn over_quota(&self) -> bool {
        self.limits.over_quota(&self.counters)
    }

    /// The port is past its expiry and the box enforces it: new connections are closed.
    pub fn expired(&self) -> bool {
        // Same zero-padded format (maybe only to the minute, a prefix): string order is
        // time order.
        self.enforce_expiry
            && !self.valid_before.is_empty()
            && self.valid_before.as_str() <= super::util::now_stamp(self.utc_offset_s).as_str()
    }
}

/// The running listeners of one applied port.
#[derive(Debug)]
pub(crate) struct PortRuntime {
    cancel: CancellationToken,
    accept_tasks: Vec<JoinHandle<Option<TcpListener>>>,
}

impl PortRuntime {
    /// Stops accepting and closes open connections; returns the listening sockets, which a
    /// re-apply on the same ports keeps (binding them again after a close would race every
    /// other socket of the host for those ports) and a purge drops.
    async fn stop(self) -> Vec<TcpListener> {
        self.cancel.cancel();
        let mut listeners = Vec::new();
        for task in self.accept_tasks {
            if let Ok(Some(listener)) = task.await {
                listeners.push(listener);
            }
        }
        listeners
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Http,
    Socks,
}

pub(crate) async fn apply_port(sim: &Arc<Sim>, port_id: &str) -> Result<(), SimError> {
    let mut runtimes = sim.runtimes.lock().await;
    let (live, http, socks) = {
        let state = sim.state();
        let p = state.ports.get(port_id).ok_or(SimError::NoSuchPort)?;
        let live = LivePort {
            port_id: p.id.clone(),
            imei: p.imei.clone(),
            login: p.login.clone(),
            password: p.password.clone(),
            counters: p.counters.clone(),
            limits: p.limits(),
            valid_before: p.valid_before.clone(),
            utc_offset_s: state.utc_offset_s,
            enforce_expiry: !state.quirks.ignores_expiry,
        };
        (live, p.http_port, p.socks_port)
    };
    let kept = match runtimes.remove(port_id) {
        Some(old) => old.stop().await,
        None => Vec::new(),
    };
    set_applied(sim, port_id, false);
    let runtime = start(sim, Arc::new(live), http, socks, kept).await?;
    runtimes.insert(port_id.to_string(), runtime);
    set_applied(sim, port_id, true);
    tracing::info!(port_id, http, socks, "simulator: port applied");
    Ok(())
}

pub(crate) async fn purge_port(sim: &Arc<Sim>, port_id: &str) -> Result<(), SimError> {
    let mut runtimes = sim.runtimes.lock().await;
    if sim.state().ports.remove(port_id).is_none() {
        return Err(SimError::NoSuchPort);
    }
    if let Some(old) = runtimes.remove(port_id) {
        old.stop().await;
    }
    tracing::info!(port_id, "simulator: port purged");
    Ok(())
}

fn set_applied(sim: &Sim, port_id: &str, applied: bool) {
    if let Some(p) = sim.state().ports.get_mut(port_id) {
        p.applied = applied;
    }
}

async fn start(
    sim: &Arc<Sim>,
    live: Arc<LivePort>,
    http: u16,
    socks: u16,
    mut kept: Vec<TcpListener>,
) -> Result<PortRuntime, SimError> {
    let mut bind = |port| {
        let at = kept
            .iter()
            .position(|l| l.local_addr().is_ok_and(|a| a.port() == port));
        let reused = at.map(|i| kept.swap_remove(i));
        async move {
            match reused {
                Some(listener) => Ok(listener),
                None => TcpListener::bind(SocketAddr::new(sim.config.proxy_ip, port))
                    .await
                    .map_err(|source| SimError::Bind { port, source }),
            }
        }
    };
    let http_listener = bind(http).await?;
    let socks_listener = bind(socks).await?;
    let cancel = sim.shutdown.child_token();
    let accept_tasks = vec![
        sim.tracker.spawn(accept_loop(
            sim.clone(),
            http_listener,
            Kind::Http,
            live.clone(),
            cancel.clone(),
        )),
        sim.tracker.spawn(accept_loop(
            sim.clone(),
            socks_listener,
            Kind::Socks,
            live,
            cancel.clone(),
        )),
    ];
    Ok(PortRuntime {
        cancel,
        accept_tasks,
    })
}

/// Owns the listening socket until cancelled, then hands it back (dropping it closes it).
async fn accept_loop(
    sim: Arc<Sim>,
    listener: TcpListener,
    kind: Kind,
    live: Arc<LivePort>,
    cancel: CancellationToken,
) -> Option<TcpListener> {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return Some(listener),
            a = listener.accept() => a,
        };
        let Ok((stream, _peer)) = accepted else {
            continue;
        };
        // An offline modem carries no traffic, an expired port none either, a dead proxy
        // none: close new connections at once.
        let Some(path) = sim
            .state()
            .modem(&live.imei)
            .filter(|m| m.online)
            .map(|m| Path {
                source: m.path.source(&m.ip),
                fault: m.path.fault,
                first_byte_delay: Duration::from_millis(m.path.first_byte_delay_ms),
            })
        else {
            drop(stream);
            continue;
        };
        if live.expired() || path.fault == PathFault::Dead {
            drop(stream);
            continue;
        }
        let (live, cancel) = (live.clone(), cancel.clone());
        sim.tracker.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = serve(kind, stream, &live, path) => {}
            }
        });
    }
}

/// How one connection is carried, read from its modem when it was accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Path {
    /// The source address of the connection to the origin (see `ProxyPath::source`).
    pub source: Option<std::net::IpAddr>,
    fault: PathFault,
    first_byte_delay: Duration,
}

async fn serve(kind: Kind, mut stream: TcpStream, live: &LivePort, path: Path) {
    if path.fault == PathFault::Blackhole {
        // Swallow whatever comes until the client gives up.
        let mut sink = [0u8; 1024];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        return;
    }
    tokio::time::sleep(path.first_byte_delay).await;
    let result = match kind {
        Kind::Http => http_proxy::serve(stream, live, path.source).await,
        Kind::Socks => socks5::serve(stream, live, path.source).await,
    };
    if let Err(e) = result {
        tracing::debug!(port_id = %live.port_id, ?kind, error = %e, "simulator proxy connection ended");
    }
}

/// `count` TCP ports that are free on `ip` right now and not in `used`: bind port 0, note
/// the port, release it (all held at once so they are distinct).
pub(crate) fn free_ports(
    ip: std::net::IpAddr,
    count: usize,
    used: &[u16],
) -> std::io::Result<Vec<u16>> {
    let mut held = Vec::with_capacity(count);
    let mut ports = Vec::with_capacity(count);
    // Bounded: the OS could keep handing out ports we consider used.
    for _ in 0..count * 4 {
        if ports.len() == count {
            break;
        }
        let listener = std::net::TcpListener::bind(SocketAddr::new(ip, 0))?;
        let port = listener.local_addr()?.port();
        if !used.contains(&port) {
            ports.push(port);
        }
        held.push(listener);
    }
    Ok(ports)
}
