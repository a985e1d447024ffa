//! `update_port`: change an allocation's port expiry (renewal). The port is re-stored with
//! the same id and every other field as the box shows it (login and password re-read from
//! `list_ports_json`, so the agent never keeps buyer passwords) and the limits it was
//! provisioned with (from the journal: a box may clear the limits a re-store leaves out,
//! and the buyer would get unlimited traffic), applied, and verified — the limits too.
//! A port journaled before limits were kept is re-stored without them, as it always was.
//! A port on a modem the seller excluded from the marketplace is never touched.

use super::provision::verify;
use super::{journal_error, port_name, CommandContext};
use super::{limits, validate};
use crate::proxysmart::StorePort;
use farmhand_protocol::{CommandError, CommandErrorCode, Secret, UpdatePort, Updated};

pub(super) async fn run(ctx: &CommandContext, u: UpdatePort) -> Result<Updated, CommandError> {
    validate::token("allocation_id", &u.allocation_id)?;
    validate::expiry(u.expires_at_ms, ctx.now_ms())?;
    let journaled = ctx.journal.port(&u.allocation_id).map_err(journal_error)?;
    let port_limits = ctx
        .journal
        .port_limits(&u.allocation_id)
        .map_err(journal_error)?;
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
        return Err(crate::policy::excluded(&port.imei));
    }
    let valid = |p: Option<u16>| p.filter(|n| validate::tcp_port("port", *n).is_ok());
    let (Some(http_port), Some(socks_port)) = (valid(port.http_port), valid(port.socks_port))
    else {
        return Err(CommandError::new(
            CommandErrorCode::ProxysmartMalformed,
            "the port's numbers are unreadable",
        ));
    };
    let mut store = StorePort {
        IMEI: port.imei.clone(),
        portID: port.port_id.clone(),
        portName: name,
        proxy_login: port.login.clone(),
        proxy_password: Secret::new(port.password.expose()),
        http_port,
        socks_port,
        PROXY_VALID_BEFORE: validate::box_time(&ctx.box_clock, u.expires_at_ms)?,
        bandlimin: None,
        bandlimout: None,
        bw_quota: None,
        QUOTA_TYPE: None,
        QUOTA_DIRECTION: None,
    };
    if let Some(port_limits) = &port_limits {
        limits::apply(&mut store, port_limits);
    }
    ctx.client.store_port(&store).await?;
    ctx.client.apply_port(&store.portID).await?;
    verify(ctx, &store).await?;
    tracing::info!(allocation = %u.allocation_id, port = %store.portID, "port expiry updated");
    Ok(Updated {
        allocation_id: u.allocation_id,
    })
}
