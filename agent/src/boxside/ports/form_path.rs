//! Ports through the box's HTML forms, for boxes whose JSON write is missing, refused or
//! dropped (`[proxysmart] port_write`). The prefilled `/conf/add_port` form carries an id
//! and a pair the box accepts; the agent fills in the name, the buyer's credentials, the
//! expiry and the limits and saves it. Its traps (spec): a save answers 302 whether it took
//! or was silently rejected — so the port list is read back — and the edit form shows the
//! password blank — so a renewal fills it in from the listing, or the buyer's password
//! would be wiped.

use super::check::{self, QUOTA_DIRECTION, QUOTA_TYPE};
use super::{visible, Ports, Want};
use crate::boxside::box_profile::WritePath;
use crate::boxside::proxysmart::form;
use crate::boxside::proxysmart::PortEntry;
use crate::local::journal::PortLimits;
use farmhand_protocol::CommandError;

/// Creates the port through the add-port form and returns it as the box shows it (not yet
/// applied).
pub async fn create(ports: &Ports, want: &Want) -> Result<PortEntry, CommandError> {
    let mut fields = ports.client().add_port_form(&want.imei).await?;
    let offered_id = form::get(&fields, "portID").unwrap_or_default().to_string();
    let expiry = check::box_expiry(ports.clock(), want.expires_at_ms)?;
    fill(&mut fields, want, &expiry);
    let before_ms = crate::base::clock::now_ms();
    ports
        .client()
        .save_add_port_form(&want.imei, &fields)
        .await?;
    let Some((port, waited)) = visible::find(ports, want, &offered_id).await? else {
        return Err(CommandError::box_refused(
            "port",
            "the box did not save the port form (a save is silently rejected for a name, \
             limit or credentials it does not accept)",
        ));
    };
    ports.profile().update(|p| {
        p.write_path = Some(WritePath::Form);
        p.write_visibility_ms = Some(p.write_visibility_ms.unwrap_or(0).max(waited));
    });
    let after_ms = crate::base::clock::now_ms();
    if let Some(offset) = ports.clock().learn(&port.created_at, before_ms, after_ms) {
        ports.profile().update(|p| p.utc_offset_s = Some(offset));
        return update(ports, &port, want).await;
    }
    Ok(port)
}

/// Re-saves `port` through its edit form with `want`'s expiry and limits, the password
/// filled in from the listing.
pub async fn update(
    ports: &Ports,
    port: &PortEntry,
    want: &Want,
) -> Result<PortEntry, CommandError> {
    let mut fields = ports.client().edit_port_form(&port.port_id).await?;
    let expiry = check::box_expiry(ports.clock(), want.expires_at_ms)?;
    let mut keep = want.clone();
    keep.login = port.login.clone();
    keep.password = farmhand_protocol::Secret::new(port.password.expose());
    fill(&mut fields, &keep, &expiry);
    ports
        .client()
        .save_edit_port_form(&port.port_id, &fields)
        .await?;
    let limits = want.limits;
    visible::settled(ports, &port.port_id, |p| {
        shows(p, &expiry, &limits).and_then(|()| check::credentials(p, &keep))
    })
    .await
}

/// Sets what the agent decides on the form (the box's id and pair stay).
fn fill(fields: &mut Vec<(String, String)>, want: &Want, expiry: &str) {
    let number = |v: Option<u64>| v.map_or_else(|| "0".to_string(), |n| n.to_string());
    form::set(fields, "portName", &want.name);
    form::set(fields, "proxy_login", &want.login);
    form::set(fields, "proxy_password", want.password.expose());
    form::set(fields, "PROXY_VALID_BEFORE", expiry);
    form::set(fields, "bw_quota", &number(want.limits.traffic_quota_mb));
    form::set(fields, "bandlimin", &number(want.limits.bandwidth_kbit));
    form::set(fields, "bandlimout", &number(want.limits.bandwidth_kbit));
    if want.limits.traffic_quota_mb.is_some() {
        form::set(fields, "QUOTA_TYPE", QUOTA_TYPE);
        form::set(fields, "QUOTA_DIRECTION", QUOTA_DIRECTION);
    }
}

/// The expiry and limits of a re-saved port.
fn shows(port: &PortEntry, expiry: &str, limits: &PortLimits) -> Result<(), CommandError> {
    if !port.valid_before.is_empty() && !check::expiry_matches(&port.valid_before, expiry) {
        return Err(CommandError::box_refused(
            "PROXY_VALID_BEFORE",
            format!("the box did not take the expiry of {}", port.port_id),
        ));
    }
    check::quota(port, limits).unwrap_or(Ok(()))?;
    check::speed(port, limits).unwrap_or(Ok(()))
}
