//! Reading a write back with a bounded retry: boxes show writes in `list_ports_json` late
//! (operators re-read three times 250 ms apart, and again over ~1.5 s after apply), so one
//! read is not enough. Every wait here ends after `write_visibility`.

use super::{Ports, Want, POLL};
use crate::boxside::proxysmart::PortEntry;
use farmhand_protocol::{CommandError, CommandErrorCode};
use tokio::time::Instant;

/// Waits for a port just stored: by the id asked for, or — a box that assigned its own —
/// by IMEI and name. Returns it and how long it took to show (ms); `None` if it did not.
pub async fn find(
    ports: &Ports,
    want: &Want,
    asked_id: &str,
) -> Result<Option<(PortEntry, u64)>, CommandError> {
    let started = Instant::now();
    let deadline = started + ports.settings.write_visibility;
    loop {
        let listed = ports.client().list_ports().await?;
        let found = listed.iter().find(|p| p.port_id == asked_id).or_else(|| {
            listed
                .iter()
                .find(|p| p.imei == want.imei && p.port_name == want.name)
        });
        if let Some(port) = found {
            let waited = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            return Ok(Some((port.clone(), waited)));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until port `port_id` passes `check` (a re-store shows its new values); the last
/// refusal once the window is over.
pub async fn settled(
    ports: &Ports,
    port_id: &str,
    check: impl Fn(&PortEntry) -> Result<(), CommandError>,
) -> Result<PortEntry, CommandError> {
    let deadline = Instant::now() + ports.settings.write_visibility;
    loop {
        let listed = ports.client().list_ports().await?;
        let outcome = match listed.iter().find(|p| p.port_id == port_id) {
            Some(port) => check(port).map(|()| port.clone()),
            None => Err(CommandError::new(
                CommandErrorCode::ProxysmartRefused,
                format!("port {port_id} is not in the port list after the write"),
            )),
        };
        match outcome {
            Ok(port) => return Ok(port),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Waits until port `port_id` is no longer listed; false if it still is at the end.
pub async fn gone(ports: &Ports, port_id: &str) -> Result<bool, CommandError> {
    let deadline = Instant::now() + ports.settings.write_visibility;
    loop {
        let listed = ports.client().list_ports().await?;
        if !listed.iter().any(|p| p.port_id == port_id) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Port `port_id` as listed now.
pub async fn latest(ports: &Ports, port_id: &str) -> Result<PortEntry, CommandError> {
    ports
        .client()
        .list_ports()
        .await?
        .into_iter()
        .find(|p| p.port_id == port_id)
        .ok_or_else(|| {
            CommandError::new(
                CommandErrorCode::ProxysmartRefused,
                format!("port {port_id} is not in the port list"),
            )
        })
}
