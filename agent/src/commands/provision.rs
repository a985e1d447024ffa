//! `provision`: create (or return the existing) port for an allocation.
//!
//! Steps: validate; return the journaled port if the allocation already has one on this
//! modem; check the modem is known and online; remove a half-created leftover of ours;
//! enforce the seller's cap on marketplace ports per modem; pick two free ports; `store_port` + `apply_port`
//! (with the speed limit and traffic quota, `limits`); verify by re-reading the port list
//! (every field, the limits included); learn the box's UTC offset from the new port's
//! `CREATED_AT` and re-store the expiry if the offset used was wrong; journal (with the
//! automatic rotation interval, waking `autorotate`, and the limits, which a renewal
//! re-sends); answer. Any
//! failure after `store_port` (including a timeout, whose outcome is unknown) purges the
//! port by its id — `store_port` itself is never retried — so no half-created port is left
//! behind; if the purge fails too, the next attempt or reconcile removes it by name.
//!
//! A journaled port on ANOTHER modem means the plane is moving the allocation (it was
//! replaced): the new port is created as above while the old one keeps serving, and only
//! once the new one is journaled is the old one purged — best effort: if that fails, the
//! next `reconcile` removes it (it is not the journaled port). Provisions run one at a time
//! (they are quick), and not during a reconcile, so two cannot pass the cap together or
//! pick the same free ports, and reconcile never sees a half-created port.

use super::{current_modem, journal_error, port_name, CommandContext, PORT_NAME_PREFIX};
use super::{limits, validate};
use crate::backoff::random_u64;
use crate::journal::PortLimits;
use crate::proxysmart::{PortEntry, StorePort};
use farmhand_protocol::{CommandError, CommandErrorCode, ManagedPort, Provision, Provisioned};

pub(super) async fn run(ctx: &CommandContext, p: Provision) -> Result<Provisioned, CommandError> {
    validate::provision(&p, ctx.now_ms())?;
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
    let existing = ctx.client.list_ports().await?;
    let keep = previous.as_ref().map(|old| old.port_id.as_str());
    remove_leftover(ctx, &existing, &p.allocation_id, keep).await?;
    ctx.policy
        .check_port_count(&p.imei, marketplace_ports(&existing, &p))?;
    let (http_port, socks_port) = pick_ports(&ctx.client.free_tcp_ports().await?, &existing)?;
    let mut store = StorePort {
        IMEI: p.imei.clone(),
        portID: new_port_id(),
        portName: port_name(&p.allocation_id),
        proxy_login: p.login.clone(),
        proxy_password: p.password.clone(),
        http_port,
        socks_port,
        PROXY_VALID_BEFORE: validate::box_time(&ctx.box_clock, p.expires_at_ms)?,
        bandlimin: None,
        bandlimout: None,
        bw_quota: None,
        QUOTA_TYPE: None,
        QUOTA_DIRECTION: None,
    };
    let port_limits = PortLimits {
        bandwidth_kbit: p.bandwidth_kbit,
        traffic_quota_mb: p.traffic_quota_mb,
    };
    limits::apply(&mut store, &port_limits);
    create(ctx, &mut store, p.expires_at_ms).await?;
    let managed = ManagedPort {
        allocation_id: p.allocation_id.clone(),
        imei: p.imei.clone(),
        port_id: store.portID.clone(),
        http_port,
        socks_port,
    };
    if let Err(e) = ctx
        .journal
        .put_provisioned_port(&managed, p.rotate_every_s, port_limits)
        .await
    {
        purge_quietly(ctx, &store.portID).await;
        return Err(journal_error(e));
    }
    if p.rotate_every_s.is_some() {
        ctx.autorotation.schedules_changed();
    }
    tracing::info!(allocation = %p.allocation_id, port = %managed.port_id, http_port, socks_port, "port provisioned");
    if let Some(old) = previous {
        retire(ctx, &old).await;
    }
    Ok(provisioned(managed))
}

/// The allocation moved to another modem: its old port goes (never one on a modem the
/// seller excluded; reconcile leaves those alone too).
async fn retire(ctx: &CommandContext, old: &ManagedPort) {
    if ctx.policy.excludes(&old.imei) {
        tracing::warn!(allocation = %old.allocation_id, port = %old.port_id, "the old port is on an excluded modem: leaving it");
        return;
    }
    tracing::info!(allocation = %old.allocation_id, port = %old.port_id, from = %old.imei, "allocation moved: removing its old port");
    purge_quietly(ctx, &old.port_id).await;
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
        ctx.client.purge_port(&leftover.port_id).await?;
    }
    Ok(())
}

/// Two distinct free unprivileged ports that no existing port uses.
fn pick_ports(free: &[u16], existing: &[PortEntry]) -> Result<(u16, u16), CommandError> {
    let used = |p: &u16| {
        *p < validate::MIN_TCP_PORT
            || existing
                .iter()
                .any(|e| e.http_port == Some(*p) || e.socks_port == Some(*p))
    };
    let mut candidates = free.iter().filter(|p| !used(p));
    let first = candidates.next().copied();
    let second = candidates.find(|p| Some(**p) != first).copied();
    match (first, second) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(CommandError::new(
            CommandErrorCode::NoFreePorts,
            format!(
                "ProxySmart has fewer than two free TCP ports in {}..=65535",
                validate::MIN_TCP_PORT
            ),
        )),
    }
}

/// `port` + 10 random hex characters, like other ProxySmart clients.
fn new_port_id() -> String {
    format!("port{:010x}", random_u64() & 0xff_ffff_ffff)
}

/// Stores, applies and verifies; on any failure purges the port and reports the error.
async fn create(
    ctx: &CommandContext,
    store: &mut StorePort,
    expires_at_ms: u64,
) -> Result<(), CommandError> {
    let result = async {
        let before_ms = crate::journal::now_ms();
        ctx.client.store_port(store).await?;
        ctx.client.apply_port(&store.portID).await?;
        let port = verify(ctx, store).await?;
        correct_expiry(ctx, store, &port, before_ms, expires_at_ms).await
    }
    .await;
    if result.is_err() {
        purge_quietly(ctx, &store.portID).await;
    }
    result
}

/// Learns the box's UTC offset from the port just created; when it differs from the one
/// the expiry was written with, re-stores the (existing, verified) port with the right
/// expiry. An update of a known port id, not a blind retry.
async fn correct_expiry(
    ctx: &CommandContext,
    store: &mut StorePort,
    port: &PortEntry,
    before_ms: u64,
    expires_at_ms: u64,
) -> Result<(), CommandError> {
    let after_ms = crate::journal::now_ms();
    let Some(offset) = ctx.box_clock.learn(&port.created_at, before_ms, after_ms) else {
        return Ok(());
    };
    if let Err(e) = ctx.journal.put_box_utc_offset(offset).await {
        tracing::warn!(error = %e, "cannot remember the box UTC offset; will learn it again");
    }
    store.PROXY_VALID_BEFORE = validate::box_time(&ctx.box_clock, expires_at_ms)?;
    ctx.client.store_port(store).await?;
    ctx.client.apply_port(&store.portID).await?;
    verify(ctx, store).await.map(drop)
}

/// Re-reads the port list and checks the box took every field we rely on; returns the
/// port as the box shows it.
pub(super) async fn verify(
    ctx: &CommandContext,
    store: &StorePort,
) -> Result<PortEntry, CommandError> {
    let ports = ctx.client.list_ports().await?;
    let Some(port) = ports.iter().find(|p| p.port_id == store.portID) else {
        return Err(refused(format!(
            "port {} is not in the port list after store_port",
            store.portID
        )));
    };
    let mismatches = [
        ("IMEI", port.imei != store.IMEI),
        ("portName", port.port_name != store.portName),
        ("HTTP_PORT", port.http_port != Some(store.http_port)),
        ("SOCKS_PORT", port.socks_port != Some(store.socks_port)),
        ("LOGIN", port.login != store.proxy_login),
        (
            "PASSWORD",
            port.password.expose() != store.proxy_password.expose(),
        ),
    ];
    if let Some((field, _)) = mismatches.iter().find(|(_, differs)| *differs) {
        return Err(refused(format!(
            "the box did not take {field} for port {}",
            store.portID
        )));
    }
    check_expiry(port, store)?;
    limits::verify(port, store)?;
    Ok(port.clone())
}

fn check_expiry(port: &PortEntry, store: &StorePort) -> Result<(), CommandError> {
    if port.valid_before.is_empty() {
        // Some ProxySmart versions ignore PROXY_VALID_BEFORE from the API; the plane releases
        // the port at expiry anyway, so this is worth a warning, not a failure.
        tracing::warn!(port = %store.portID, "ProxySmart did not record the port expiry");
        return Ok(());
    }
    if port.valid_before != store.PROXY_VALID_BEFORE {
        return Err(refused(format!(
            "the box did not take PROXY_VALID_BEFORE for port {} (shows {:?})",
            store.portID, port.valid_before
        )));
    }
    Ok(())
}

pub(super) fn refused(message: String) -> CommandError {
    CommandError::new(CommandErrorCode::ProxysmartRefused, message)
}

/// Best-effort removal after a failure; the original error is what gets reported.
pub(super) async fn purge_quietly(ctx: &CommandContext, port_id: &str) {
    if let Err(e) = ctx.client.purge_port(port_id).await {
        tracing::warn!(port = port_id, error = %e, "could not remove the port after a failure; reconcile will retry");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::masked::Masked;

    fn entry(http: u16, socks: u16) -> PortEntry {
        PortEntry {
            imei: "356000000000001".into(),
            port_id: "p".into(),
            port_name: "x".into(),
            http_port: Some(http),
            socks_port: Some(socks),
            login: String::new(),
            password: Masked::new(""),
            valid_before: String::new(),
            created_at: String::new(),
            quota: String::new(),
            over_quota: false,
            bandlimin: None,
            bandlimout: None,
        }
    }

    #[test]
    fn picks_two_distinct_unused_ports() {
        assert_eq!(pick_ports(&[8001, 8002, 8003], &[]).unwrap(), (8001, 8002));
        assert_eq!(pick_ports(&[8001, 8001, 8002], &[]).unwrap(), (8001, 8002));
        assert_eq!(
            pick_ports(&[8001, 8002, 8003, 8004], &[entry(8001, 8003)]).unwrap(),
            (8002, 8004)
        );
        let err = pick_ports(&[8001], &[]).unwrap_err();
        assert_eq!(err.code, CommandErrorCode::NoFreePorts);
        assert!(pick_ports(&[8001, 8002], &[entry(8002, 1)]).is_err());
        assert_eq!(
            pick_ports(&[0, 80, 1023, 1024, 1025], &[]).unwrap(),
            (1024, 1025)
        );
        assert!(pick_ports(&[0, 0, 22], &[]).is_err());
    }

    #[test]
    fn port_ids_look_like_proxysmart_ones() {
        let id = new_port_id();
        assert_eq!(id.len(), 14);
        assert!(id.starts_with("port") && id[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(new_port_id(), new_port_id());
    }
}
