//! `reconcile`: converge the box on the plane's desired set. Ports named `farmhand-*` whose
//! allocation is not desired are removed (orphans); desired allocations without a port are
//! reported missing. A port of a desired allocation on another modem than the desired one
//! (the allocation was moved) is removed like an orphan. Ports not named `farmhand-*` are
//! never touched, and neither are ports on a modem the seller excluded from the
//! marketplace: they are neither removed nor counted as present (the marketplace cannot
//! use them, so a desired one is "missing"). Nor is a port provisioned by a command that
//! arrived after this reconcile (the plane read the desired set before the order; the
//! provision may run first, while the reconcile waits for it).

use super::{journal_error, CommandContext};
use crate::boxside::ports::PORT_NAME_PREFIX;
use farmhand_protocol::{CommandError, ManagedPort, Reconcile, Reconciled};
use std::collections::{BTreeMap, BTreeSet};

pub(super) async fn run(
    ctx: &CommandContext,
    r: Reconcile,
    command_id: &str,
) -> Result<Reconciled, CommandError> {
    let desired: BTreeMap<&str, &str> = r
        .ports
        .iter()
        .map(|d| (d.allocation_id.as_str(), d.imei.as_str()))
        .collect();
    // A port a provision is creating right now is not an orphan: wait for it to finish.
    let _no_provision_in_flight = ctx.lock_ports().await;
    // Ordered after this reconcile, so its desired set could not have them.
    let newer = ctx.provisioned_after(command_id);
    let ports = ctx.client.list_ports().await?;
    let mut removed = BTreeSet::new();
    let mut present = BTreeSet::new();
    let mut untouchable = BTreeSet::new();
    for port in &ports {
        let Some(allocation) = port.port_name.strip_prefix(PORT_NAME_PREFIX) else {
            continue;
        };
        if ctx.policy.excludes(&port.imei) {
            untouchable.insert(allocation.to_string());
            continue;
        }
        if let Some(&imei) = desired.get(allocation) {
            if port.imei == imei && adopt(ctx, allocation, port).await? {
                present.insert(allocation.to_string());
            } else {
                // A duplicate, an unusable leftover or one left on the modem the allocation
                // moved away from: the journaled port (if on the desired modem) stays;
                // without one the allocation is reported missing and provisioned again.
                ctx.ports.remove(&port.port_id).await?;
                tracing::info!(allocation, port = %port.port_id, "removed a leftover port");
            }
            continue;
        }
        if newer.contains(allocation) {
            untouchable.insert(allocation.to_string());
            continue;
        }
        ctx.ports.remove(&port.port_id).await?;
        tracing::info!(allocation, port = %port.port_id, "removed orphan port");
        ctx.journal
            .remove_port(allocation)
            .await
            .map_err(journal_error)?;
        removed.insert(allocation.to_string());
    }
    let keep: BTreeSet<String> = present.union(&untouchable).cloned().collect();
    forget_vanished(ctx, &keep).await?;
    let missing = desired
        .keys()
        .filter(|a| !present.contains(**a))
        .map(|a| a.to_string())
        .collect();
    Ok(Reconciled {
        removed: removed.into_iter().collect(),
        missing,
    })
}

/// Keeps a desired port of ours (true). One the journal lacks was created by a `provision` that
/// crashed before it finished — possibly stored but never applied (a dead port), so it is
/// applied again (`apply_port` is idempotent) before it is journaled; if that fails, or its
/// numbers are unreadable, it is not adopted (false: the caller removes it and reports the
/// allocation missing, and the plane provisions it again).
async fn adopt(
    ctx: &CommandContext,
    allocation: &str,
    port: &crate::boxside::proxysmart::PortEntry,
) -> Result<bool, CommandError> {
    if let Some(journaled) = ctx.journal.port(allocation).map_err(journal_error)? {
        // The journaled port is the allocation's; any other one of its name is a duplicate.
        // A journaled port on another modem is stale (the caller checked this one's modem).
        if journaled.imei == port.imei {
            return Ok(journaled.port_id == port.port_id);
        }
    }
    let (Some(http_port), Some(socks_port)) = (port.http_port, port.socks_port) else {
        return Ok(false);
    };
    if let Err(e) = ctx.client.apply_port(&port.port_id).await {
        tracing::warn!(allocation, port = %port.port_id, error = %e, "cannot apply a half-created port; removing it");
        return Ok(false);
    }
    tracing::info!(allocation, port = %port.port_id, "adopted a port created before a crash");
    let managed = ManagedPort {
        allocation_id: allocation.to_string(),
        imei: port.imei.clone(),
        port_id: port.port_id.clone(),
        http_port,
        socks_port,
    };
    ctx.journal
        .put_port(&managed)
        .await
        .map_err(journal_error)?;
    Ok(true)
}

/// Drops journal entries whose port is no longer on the box (or no longer ours to keep).
async fn forget_vanished(
    ctx: &CommandContext,
    keep: &BTreeSet<String>,
) -> Result<(), CommandError> {
    for port in ctx.journal.ports().map_err(journal_error)? {
        if !keep.contains(&port.allocation_id) {
            ctx.journal
                .remove_port(&port.allocation_id)
                .await
                .map_err(journal_error)?;
        }
    }
    Ok(())
}
