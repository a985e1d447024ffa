//! Asking a modem for a new external IP and reading it back — the box side of a rotation,
//! shared by `rotate_ip`, the automatic scheduler (through it) and `selftest`.
//!
//! Real boxes answer a reset "busy" at times and clients retry until it is taken, and a
//! rotation can take up to about a minute: the reset is asked again while the box says
//! busy, within the rotation's deadline, and how long the rotation took goes into the box
//! profile. Right after the reset the status may still show the old IP for a moment, so the
//! old IP only counts as the answer once a rotation was seen, or after a settle time; no
//! settled IP before the deadline is `None` (the reset was requested all the same).
//!
//! The modem is read with `show_single_status_json` where the box answers it by IMEI (field
//! boxes answer an array of one), else — and from then on — from the full status.

use crate::boxside::box_profile::BoxProfileHandle;
use crate::boxside::proxysmart::{normalize_modems, ProxysmartClient, ProxysmartError};
use farmhand_protocol::{CommandError, CommandErrorCode, Modem};
use std::time::Duration;
use tokio::time::Instant;

/// Pause between two status reads while waiting for the new IP.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Pause before asking a busy box again.
const BUSY_RETRY: Duration = Duration::from_secs(2);
/// Longest wait before an unchanged IP (with no rotation seen) is accepted as the answer.
const SETTLE: Duration = Duration::from_secs(5);

/// One box's rotations.
#[derive(Debug)]
pub struct Rotation<'a> {
    /// The box.
    pub client: &'a ProxysmartClient,
    /// Where reply forms, single-status support and rotation times are recorded.
    pub profile: &'a BoxProfileHandle,
    /// How long a rotation may take until the box shows an IP again.
    pub timeout: Duration,
}

impl Rotation<'_> {
    /// The modem `imei` as the box reports it now; `unknown_imei` if it is not there.
    pub async fn modem(&self, imei: &str) -> Result<Modem, CommandError> {
        if self.profile.snapshot().single_status != Some(false) {
            match self.client.show_single_status(imei).await {
                Ok(entry) => {
                    let found = normalize_modems(&[entry], &[])
                        .into_iter()
                        .find(|m| m.imei == imei);
                    let works = found.is_some();
                    self.profile.update(|p| p.single_status = Some(works));
                    if let Some(modem) = found {
                        return Ok(modem);
                    }
                }
                Err(ProxysmartError::Refused { .. })
                | Err(ProxysmartError::NotFound { .. })
                | Err(ProxysmartError::Malformed { .. }) => {
                    self.profile.update(|p| p.single_status = Some(false));
                }
                Err(e) => return Err(e.into()),
            }
        }
        current_modem(self.client, imei).await
    }

    /// Resets the modem (again while the box says busy) and waits for the IP it then shows;
    /// `None` when none settled before the deadline.
    pub async fn rotate(
        &self,
        imei: &str,
        old_ip: Option<&str>,
    ) -> Result<Option<String>, CommandError> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        self.reset(imei, deadline).await?;
        tracing::info!(imei, old_ip = ?old_ip, "rotation requested");
        let new_ip = self
            .wait_for_new_ip(imei, old_ip, started, deadline)
            .await?;
        if new_ip.is_some() {
            let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.profile.update(|p| p.rotation_ms = Some(took));
        }
        Ok(new_ip)
    }

    async fn reset(&self, imei: &str, deadline: Instant) -> Result<(), CommandError> {
        loop {
            match self.client.reset_modem(imei).await {
                Ok(form) => {
                    self.profile.saw_reply(form);
                    return Ok(());
                }
                Err(ProxysmartError::Refused { message })
                    if message.to_ascii_lowercase().contains("busy")
                        && Instant::now() + BUSY_RETRY < deadline =>
                {
                    tracing::info!(imei, %message, "the box is busy; asking for the rotation again");
                    tokio::time::sleep(BUSY_RETRY).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn wait_for_new_ip(
        &self,
        imei: &str,
        old_ip: Option<&str>,
        start: Instant,
        deadline: Instant,
    ) -> Result<Option<String>, CommandError> {
        let settle = SETTLE.min(self.timeout / 2);
        let mut saw_rotation = false;
        while Instant::now() < deadline {
            tokio::time::sleep(POLL_EVERY).await;
            // A failed read mid-rotation is not fatal: the box is busy; try again until the
            // deadline.
            let modem = match self.modem(imei).await {
                Ok(m) => m,
                Err(e) if e.code == CommandErrorCode::UnknownImei => return Err(e),
                Err(e) => {
                    tracing::debug!(imei, error = %e.message, "status read failed while rotating");
                    continue;
                }
            };
            saw_rotation |= modem.rotating || modem.ext_ip.is_none();
            let Some(ip) = modem.ext_ip.filter(|_| !modem.rotating) else {
                continue;
            };
            if saw_rotation || Some(ip.as_str()) != old_ip || start.elapsed() >= settle {
                return Ok(Some(ip));
            }
        }
        Ok(None)
    }
}

/// The modem `imei` from the box's full status; `unknown_imei` if it is not there.
pub async fn current_modem(client: &ProxysmartClient, imei: &str) -> Result<Modem, CommandError> {
    let entries = client.show_status().await?;
    normalize_modems(&entries, &[])
        .into_iter()
        .find(|m| m.imei == imei)
        .ok_or_else(|| {
            CommandError::new(
                CommandErrorCode::UnknownImei,
                format!("ProxySmart has no modem with IMEI {imei}"),
            )
        })
}
