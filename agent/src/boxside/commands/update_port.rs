//! `update_port`: change an allocation's port expiry (renewal). The port is re-stored with
//! the same id, pair and credentials as the box shows it (login and password re-read from
//! `list_ports_json`, so the agent never keeps buyer passwords) and the limits it was
//! provisioned with (from the journal: a box may clear the limits a re-store leaves out,
//! and the buyer would get unlimited traffic), applied, and read back until the box shows
//! the new expiry and the limits (`boxside::ports`). A port journaled before limits were
//! kept is re-stored without them, as it always was. A port on a modem the seller excluded
//! from the marketplace is never touched.

use super::{journal_error, CommandContext};
use crate::boxside::ports::port_name;
use crate::boxside::ports::Want;
use farmhand_protocol::{CommandError, CommandErrorCode, Secret, UpdatePort, Updated};

pub(super) async fn run(ctx: &CommandContext, u: UpdatePort) -> Result<Updated, CommandError> {
    let journaled = ctx.journal.port(&u.allocation_id).map_err(journal_error)?;
    let limits = ctx
        .journal
        .port_limits(&u.allocation_id)
        .map_err(journal_error)?
        .unwrap_or_default();
    let name = port_name(&u.allocation_id);
    let ports = ctx.client.list_ports().await?;
    let Some(port) = ports
        .iter()
        .find(|p| journaled.as_ref().is_some_and(|j| j.port_id == p.port_id))
        .or_else(|| ports.iter().find(|p| p.port_name == name))
    else {
        return Err(CommandError::new(
            CommandErrorCode::InvalidCommand,
            format!("no port for allocation {} on this box", u.allocation_id),
        ));
    };
    if ctx.policy.excludes(&port.imei) {
        return Err(crate::config::policy::excluded(&port.imei));
    }
    let want = Want {
        imei: port.imei.clone(),
        name,
        login: port.login.clone(),
        password: Secret::new(port.password.expose()),
        expires_at_ms: u.expires_at_ms,
        limits,
    };
    let updated = ctx.ports.update(port, &want).await?;
    tracing::info!(allocation = %u.allocation_id, port = %updated.port_id, "port expiry updated");
    Ok(Updated {
        allocation_id: u.allocation_id,
    })
}
