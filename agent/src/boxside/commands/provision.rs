//! `provision`: create (or return the existing) port for an allocation.
//!
//! Steps: validate; return the journaled port if the allocation already has one on this
//! modem; check the modem is known, online and sellable; remove a half-created leftover of
//! ours; enforce the seller's cap on marketplace ports per modem; create the port through
//! `boxside::ports` (which picks a pair the box accepts, writes it, reads it back until it
//! shows, adopts what the box made, checks every field — the limits included — applies it
//! and checks the proxy takes the buyer's credentials, and removes it on any failure);
//! journal it (with the automatic rotation interval, waking `autorotate`, and the limits,
//! which a renewal re-sends); answer with the port as the box made it (its id and pair
//! may differ from what was asked). A failure after the write leaves nothing behind; if
//! even the removal fails, the next attempt or reconcile removes the port by name.
//!
//! A journaled port on ANOTHER modem means the plane is moving the allocation (it was
//! replaced): the new port is created as above while the old one keeps serving, and only
//! once the new one is journaled is the old one removed — best effort: if that fails, the
//! next `reconcile` removes it (it is not the journaled port). Provisions run one at a time
//! (they are quick), and not during a reconcile, so two cannot pass the cap together or
//! pick the same free ports, and reconcile never sees a half-created port.

use super::{current_modem, journal_error, CommandContext};
use crate::boxside::ports::{port_name, Want, PORT_NAME_PREFIX};
use crate::boxside::proxysmart::PortEntry;
use crate::local::journal::PortLimits;
use farmhand_protocol::{CommandError, CommandErrorCode, ManagedPort, Provision, Provisioned};

pub(super) async fn run(ctx: &CommandContext, p: Provision) -> Result<Provisioned, CommandError> {
    let _one_at_a_time = ctx.lock_ports().await;
    let previous = ctx.journal.port(&p.allocation_id).map_err(journal_error)?;
    if let Some(port) = previous.clone().filter(|port| port.imei == p.imei) {
        tracing::info!(allocation = %p.allocation_id, port = %port.port_id, "allocation already has a port");
        return Ok(provisioned(port));
    }
    let modem = current_modem(ctx, &p.imei).await?;
    if !modem.online {
        return Err(CommandError::new(
            CommandErrorCode::ModemOffline,
            format!("modem {} is offline", p.imei),
        ));
    }
    if let Some(why) = modem.unsellable_reason() {
        return Err(CommandError::new(
            CommandErrorCode::ModemOffline,
            format!("modem {} cannot carry traffic: {why}", p.imei),
        ));
    }
    let existing = ctx.client.list_ports().await?;
    let keep = previous.as_ref().map(|old| old.port_id.as_str());
    remove_leftover(ctx, &existing, &p.allocation_id, keep).await?;
    ctx.policy
        .check_port_count(&p.imei, marketplace_ports(&existing, &p))?;
    let limits = PortLimits {
        bandwidth_kbit: p.bandwidth_kbit,
        traffic_quota_mb: p.traffic_quota_mb,
    };
    let want = Want {
        imei: p.imei.clone(),
        name: port_name(&p.allocation_id),
        login: p.login.clone(),
        password: p.password.clone(),
        expires_at_ms: p.expires_at_ms,
        limits,
    };
    let port = ctx.ports.create(&want).await?;
    let managed = managed(&p.allocation_id, &port)?;
    if let Err(e) = ctx
        .journal
        .put_provisioned_port(&managed, p.rotate_every_s, limits)
        .await
    {
        ctx.ports.remove_quietly(&managed.port_id).await;
        return Err(journal_error(e));
    }
    if p.rotate_every_s.is_some() {
        ctx.notify_schedules_changed();
    }
    tracing::info!(allocation = %p.allocation_id, port = %managed.port_id, http_port = managed.http_port, socks_port = managed.socks_port, "port provisioned");
    if let Some(old) = previous {
        retire(ctx, &old).await;
    }
    Ok(provisioned(managed))
}

/// The journal's record of a port the box made.
fn managed(allocation_id: &str, port: &PortEntry) -> Result<ManagedPort, CommandError> {
    let (http_port, socks_port) = crate::boxside::ports::pair_of(port)?;
    Ok(ManagedPort {
        allocation_id: allocation_id.to_string(),
        imei: port.imei.clone(),
        port_id: port.port_id.clone(),
        http_port,
        socks_port,
    })
}

/// The allocation moved to another modem: its old port goes (never one on a modem the
/// seller excluded; reconcile leaves those alone too).
async fn retire(ctx: &CommandContext, old: &ManagedPort) {
    if ctx.policy.excludes(&old.imei) {
        tracing::warn!(allocation = %old.allocation_id, port = %old.port_id, "the old port is on an excluded modem: leaving it");
        return;
    }
    tracing::info!(allocation = %old.allocation_id, port = %old.port_id, from = %old.imei, "allocation moved: removing its old port");
    ctx.ports.remove_quietly(&old.port_id).await;
}

/// Ports of ours on the modem, other than this allocation's leftover (just removed).
fn marketplace_ports(existing: &[PortEntry], p: &Provision) -> usize {
    let own = port_name(&p.allocation_id);
    existing
        .iter()
        .filter(|e| e.imei == p.imei && e.port_name.starts_with(PORT_NAME_PREFIX))
        .filter(|e| e.port_name != own)
        .count()
}

fn provisioned(port: ManagedPort) -> Provisioned {
    Provisioned {
        allocation_id: port.allocation_id,
        imei: port.imei,
        port_id: port.port_id,
        http_port: port.http_port,
        socks_port: port.socks_port,
    }
}

/// A port of ours for this allocation that is not in the journal was half-created by an
/// earlier attempt that crashed: remove it and start clean. `keep` is the journaled port
/// of a move, which serves the buyer until the new one exists; ports on modems the seller
/// excluded are never touched.
async fn remove_leftover(
    ctx: &CommandContext,
    ports: &[PortEntry],
    allocation_id: &str,
    keep: Option<&str>,
) -> Result<(), CommandError> {
    let name = port_name(allocation_id);
    let leftovers = ports
        .iter()
        .filter(|p| p.port_name == name && Some(p.port_id.as_str()) != keep)
        .filter(|p| !ctx.policy.excludes(&p.imei));
    for leftover in leftovers {
        tracing::warn!(port = %leftover.port_id, allocation = allocation_id, "removing a leftover port from an earlier attempt");
        ctx.ports.remove(&leftover.port_id).await?;
    }
    Ok(())
}
