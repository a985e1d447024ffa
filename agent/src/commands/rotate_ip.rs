//! `rotate_ip`: ask a modem for a new external IP and wait (bounded by the rotation timeout)
//! until ProxySmart shows a real address again. The automatic scheduler (`autorotate`)
//! rotates through the same [`rotate`].
//!
//! Right after the reset the status may still show the old IP for a moment, so the old IP
//! only counts as the answer once a rotation was seen, or after a settle time. The answer
//! is truthful about what was read back: `changed: false` with `new_ip` equal to `old_ip`
//! when the carrier handed back the same address, and `new_ip: None` (`changed: false`)
//! when no settled IP showed up before the timeout — the reset was still requested, so it
//! is a success and counts for the spacing.
//!
//! Only one rotation of a modem runs at a time (`rotation_in_progress`, shared with the
//! scheduler), and the seller's minimum interval between two rotations is checked (and the
//! start recorded, also in the journal) just before the reset, so a rotation refused for
//! another reason does not count.
//!
//! Real boxes answer a reset "busy" at times and clients retry until it is taken, and a
//! rotation can take up to about a minute (`rotation_timeout`, default 60 s): the reset is
//! retried while the box says busy, within the same deadline, and how long the rotation
//! took goes into the box profile. The modem is read with `show_single_status_json` where
//! the box answers it by IMEI, else from the full status.

use super::validate;
use super::{current_modem, CommandContext};
use crate::proxysmart::ProxysmartError;
use farmhand_protocol::{CommandError, CommandErrorCode, Modem, RotateIp, Rotated};
use std::time::Duration;
use tokio::time::Instant;

/// Pause between two status reads while waiting for the new IP.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Pause before asking a busy box again.
const BUSY_RETRY: Duration = Duration::from_secs(2);
/// Longest wait before an unchanged IP (with no rotation seen) is accepted as the answer.
const SETTLE: Duration = Duration::from_secs(5);

pub(super) async fn run(ctx: &CommandContext, r: RotateIp) -> Result<Rotated, CommandError> {
    rotate(ctx, &r.imei).await
}

/// Rotates `imei` now and reads the new IP back.
pub(crate) async fn rotate(ctx: &CommandContext, imei: &str) -> Result<Rotated, CommandError> {
    validate::imei(imei)?;
    let before = current_modem(ctx, imei).await?;
    if !before.online && !before.rotating {
        return Err(CommandError::new(
            CommandErrorCode::ModemOffline,
            format!("modem {imei} is offline"),
        ));
    }
    let old_ip = before.ext_ip.clone();
    let _running = ctx.start_rotation(imei)?;
    let started = Instant::now();
    let deadline = started + ctx.rotation_timeout;
    reset(ctx, imei, deadline).await?;
    tracing::info!(imei, old_ip = ?old_ip, "rotation requested");
    if let Err(e) = ctx
        .journal
        .put_last_rotation(imei, crate::journal::now_ms())
        .await
    {
        tracing::warn!(imei, error = %e, "cannot journal the rotation; the spacing will not survive a restart");
    }
    let new_ip = wait_for_new_ip(ctx, imei, old_ip.as_deref(), started, deadline).await?;
    if new_ip.is_some() {
        let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        ctx.ports.profile().update(|p| p.rotation_ms = Some(took));
    }
    if let Some(inventory) = &ctx.inventory {
        inventory.poll_now();
    }
    let changed = new_ip.is_some() && new_ip != old_ip;
    tracing::info!(imei, new_ip = ?new_ip, changed, "rotation finished");
    Ok(Rotated {
        imei: imei.to_string(),
        old_ip,
        new_ip,
        changed,
    })
}

/// Asks for the rotation, again while the box answers "busy", until `deadline`.
async fn reset(ctx: &CommandContext, imei: &str, deadline: Instant) -> Result<(), CommandError> {
    loop {
        match ctx.client.reset_modem(imei).await {
            Ok(form) => {
                ctx.ports.profile().saw_reply(form);
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

/// The modem now: by `show_single_status_json` where the box answers it by IMEI (once it
/// did not, the full status from then on), else from the full status.
async fn modem_now(ctx: &CommandContext, imei: &str) -> Result<Modem, CommandError> {
    if ctx.ports.profile().snapshot().single_status != Some(false) {
        match ctx.client.show_single_status(imei).await {
            Ok(entry) => {
                let found = crate::proxysmart::normalize_modems(&[entry], &[])
                    .into_iter()
                    .find(|m| m.imei == imei);
                if let Some(modem) = found {
                    ctx.ports.profile().update(|p| p.single_status = Some(true));
                    return Ok(modem);
                }
                ctx.ports
                    .profile()
                    .update(|p| p.single_status = Some(false));
            }
            Err(ProxysmartError::Refused { .. } | ProxysmartError::NotFound { .. })
            | Err(ProxysmartError::Malformed { .. }) => {
                ctx.ports
                    .profile()
                    .update(|p| p.single_status = Some(false));
            }
            Err(e) => return Err(e.into()),
        }
    }
    current_modem(ctx, imei).await
}

/// Polls until the modem shows a real IP after a rotation; `None` if it did not in time.
async fn wait_for_new_ip(
    ctx: &CommandContext,
    imei: &str,
    old_ip: Option<&str>,
    start: Instant,
    deadline: Instant,
) -> Result<Option<String>, CommandError> {
    let settle = SETTLE.min(ctx.rotation_timeout / 2);
    let mut saw_rotation = false;
    while Instant::now() < deadline {
        tokio::time::sleep(POLL_EVERY).await;
        // A failed read mid-rotation is not fatal: the box is busy; try again until the deadline.
        let modem = match modem_now(ctx, imei).await {
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
