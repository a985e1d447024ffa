//! `release`: remove an allocation's port and confirm it is gone from the box's list
//! (`boxside::ports`). A port already gone is success with `existed: false`; the journal
//! entry goes either way. A port on a modem the seller
//! excluded from the marketplace is never touched: `policy_denied` when it is the
//! allocation's port (the journaled one, or without a journal entry one found by name);
//! a stale copy left there by a move is skipped while the journaled port goes.

use super::{journal_error, CommandContext};
use crate::boxside::ports::port_name;
use crate::config::policy;
use farmhand_protocol::{CommandError, Release, Released};

pub(super) async fn run(ctx: &CommandContext, r: Release) -> Result<Released, CommandError> {
    let journaled = ctx.journal.port(&r.allocation_id).map_err(journal_error)?;
    let ports = ctx.client.list_ports().await?;
    let name = port_name(&r.allocation_id);
    // The journaled port id first; a port of ours by name covers a crash before journaling.
    let targets: Vec<&crate::boxside::proxysmart::PortEntry> = ports
        .iter()
        .filter(|p| {
            journaled.as_ref().is_some_and(|j| j.port_id == p.port_id) || p.port_name == name
        })
        .collect();
    if let Some(j) = journaled.as_ref().filter(|j| ctx.policy.excludes(&j.imei)) {
        return Err(policy::excluded(&j.imei));
    }
    let targets: Vec<&crate::boxside::proxysmart::PortEntry> = match journaled {
        // The allocation's port is known: stale copies on excluded modems stay untouched.
        Some(_) => targets
            .into_iter()
            .filter(|p| !ctx.policy.excludes(&p.imei))
            .collect(),
        None => {
            if let Some(p) = targets.iter().find(|p| ctx.policy.excludes(&p.imei)) {
                return Err(policy::excluded(&p.imei));
            }
            targets
        }
    };
    let mut existed = false;
    for port in &targets {
        existed |= ctx.ports.remove(&port.port_id).await?;
    }
    ctx.journal
        .remove_port(&r.allocation_id)
        .await
        .map_err(journal_error)?;
    tracing::info!(allocation = %r.allocation_id, existed, "port released");
    Ok(Released {
        allocation_id: r.allocation_id,
        existed,
    })
}
