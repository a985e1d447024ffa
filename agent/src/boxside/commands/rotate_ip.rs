//! `rotate_ip`: ask a modem for a new external IP and wait (bounded by the rotation
//! timeout) until ProxySmart shows a real address again (`boxside::rotation`). The
//! automatic scheduler (`autorotate`) rotates through the same [`rotate`].
//!
//! The answer is truthful about what was read back: `changed: false` with `new_ip` equal to
//! `old_ip` when the carrier handed back the same address, and `new_ip: None`
//! (`changed: false`) when no settled IP showed up before the timeout — the reset was still
//! requested, so it is a success and counts for the spacing.
//!
//! Only one rotation of a modem runs at a time (`rotation_in_progress`, shared with the
//! scheduler), and the seller's minimum interval between two rotations is checked (and the
//! start recorded, also in the journal) just before the reset, so a rotation refused for
//! another reason does not count.

use super::validate;
use super::CommandContext;
use farmhand_protocol::{CommandError, CommandErrorCode, RotateIp, Rotated};

pub(super) async fn run(ctx: &CommandContext, r: RotateIp) -> Result<Rotated, CommandError> {
    rotate(ctx, &r.imei).await
}

/// Rotates `imei` now and reads the new IP back.
pub(crate) async fn rotate(ctx: &CommandContext, imei: &str) -> Result<Rotated, CommandError> {
    validate::imei(imei)?;
    let box_ = ctx.rotation();
    let before = crate::boxside::rotation::current_modem(&ctx.client, imei).await?;
    if !before.online && !before.rotating {
        return Err(CommandError::new(
            CommandErrorCode::ModemOffline,
            format!("modem {imei} is offline"),
        ));
    }
    let old_ip = before.ext_ip.clone();
    let _running = ctx.start_rotation(imei)?;
    if let Err(e) = ctx
        .journal
        .put_last_rotation(imei, crate::base::clock::now_ms())
        .await
    {
        tracing::warn!(imei, error = %e, "cannot journal the rotation; the spacing will not survive a restart");
    }
    let new_ip = box_.rotate(imei, old_ip.as_deref()).await?;
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
