//! Writing ports on the box, and knowing they took: the only code that creates, changes or
//! removes a ProxySmart port (commands and `selftest` go through it).
//!
//! Success is what the box shows, not what it says. Real boxes answer a write with
//! `{"result":"success"}`, `{"result":true}`, `OK` or an empty body, show it in
//! `list_ports_json` late, store a port under an id of their own, want matched HTTP/SOCKS
//! pairs, keep their own credentials, or drop the quota (spec "Second look"). So every
//! write is followed by reading the port list back, retried for `write_visibility`
//! (`visible`), and compared field by field (`check`):
//! - `create` picks a matched pair where the box has pools (`pairs`), stores the port with
//!   an id of ours, then finds it by that id — or by IMEI and name when the box assigned
//!   its own — and adopts what the box made when the buyer's credentials work on it. Where
//!   the JSON write is missing, refused or dropped, it falls back to the box's prefilled
//!   form (`form_path`; `[proxysmart] port_write`). It then applies the port and checks the
//!   proxy accepts the buyer's credentials (`listen`).
//! - A field the box did not take is a `box_refused_field` error naming it, and the port is
//!   removed first: nothing half-made is left.
//! - `remove` purges and confirms the port is gone (and tries the form's delete if not).
//!
//! Every observation lands in the box profile (`boxside::box_profile`).

mod check;
pub mod expiry_watch;
mod form_path;
mod listen;
mod pairs;
mod visible;

pub use check::{expiry_matches, pair as pair_of, MIN_TCP_PORT, QUOTA_DIRECTION, QUOTA_TYPE};
pub use listen::{handshake, Handshake, Kind as ProxyKind};

use crate::base::backoff::random_u64;
use crate::boxside::box_profile::{BoxProfileHandle, WritePath};
use crate::boxside::proxysmart::{
    BoxClock, PortEntry, ProxysmartClient, ProxysmartError, StorePort,
};
use crate::config::proxysmart::{PortSettings, PortWrite};
use crate::local::journal::PortLimits;
use farmhand_protocol::{CommandError, CommandErrorCode, Secret};
use std::sync::Arc;
use std::time::Duration;

/// Prefix of the `portName` of every port this agent manages; ports without it are never
/// touched.
pub const PORT_NAME_PREFIX: &str = "farmhand-";

/// The `portName` of an allocation's port.
pub fn port_name(allocation_id: &str) -> String {
    format!("{PORT_NAME_PREFIX}{allocation_id}")
}

/// The name prefix of `selftest`'s scratch ports; any port so named is the selftest's and
/// is removed by the next selftest or agent start (and, being `farmhand-…` without a
/// desired allocation, by `reconcile`).
pub const SCRATCH_PREFIX: &str = "farmhand-selftest-";

/// What a box kept of a port's fields (`selftest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldVerdicts {
    /// The expiry.
    pub expiry: bool,
    /// The quota (`None`: none asked for).
    pub quota: Option<bool>,
    /// The speed limit (`None`: none asked for, or the box does not list limits).
    pub speed_limit: Option<bool>,
}

/// A port as it must be on the box.
#[derive(Debug, Clone)]
pub struct Want {
    /// The modem.
    pub imei: String,
    /// `portName`: `farmhand-<allocation_id>` (or a selftest scratch name).
    pub name: String,
    /// The buyer's login.
    pub login: String,
    /// The buyer's password.
    pub password: Secret,
    /// Expiry, Unix ms (the plane's clock).
    pub expires_at_ms: u64,
    /// Speed limit and quota.
    pub limits: PortLimits,
}

/// The box's ports, written and verified (see the module header). Cheap to clone: the
/// profile and clock are shared.
#[derive(Debug, Clone)]
pub struct Ports {
    client: ProxysmartClient,
    profile: Arc<BoxProfileHandle>,
    clock: Arc<BoxClock>,
    settings: PortSettings,
}

impl Ports {
    /// Ports on the box `client` talks to.
    pub fn new(
        client: ProxysmartClient,
        profile: Arc<BoxProfileHandle>,
        clock: Arc<BoxClock>,
        settings: PortSettings,
    ) -> Self {
        Ports {
            client,
            profile,
            clock,
            settings,
        }
    }

    /// The box profile this writes to.
    pub fn profile(&self) -> &Arc<BoxProfileHandle> {
        &self.profile
    }

    /// The box's clock (its UTC offset, learned from ports created).
    pub fn clock(&self) -> &Arc<BoxClock> {
        &self.clock
    }

    /// Creates the port `want` on the box and returns it as the box shows it: stored,
    /// applied, and accepting the buyer's credentials. On any failure nothing of it is left.
    pub async fn create(&self, want: &Want) -> Result<PortEntry, CommandError> {
        let json_known_bad = self.profile.snapshot().json_write_refused == Some(true);
        let first = match (self.settings.port_write, json_known_bad) {
            (PortWrite::Form, _) | (PortWrite::Auto, true) => WritePath::Form,
            _ => WritePath::Json,
        };
        let result = match first {
            WritePath::Json => self.create_json(want).await,
            WritePath::Form => form_path::create(self, want).await,
        };
        let created = match result {
            Err(e) if first == WritePath::Json && self.may_fall_back(&e) => {
                tracing::warn!(error = %e.message, "the JSON port write did not take; trying the box's port form");
                self.profile.update(|p| p.json_write_refused = Some(true));
                form_path::create(self, want).await.map_err(|form_error| {
                    tracing::warn!(error = %form_error.message, "the port form did not take either");
                    e
                })?
            }
            other => other?,
        };
        let port = self.go_live(want, created).await?;
        Ok(port)
    }

    /// Whether a failed JSON create may be retried through the form.
    fn may_fall_back(&self, e: &CommandError) -> bool {
        self.settings.port_write == PortWrite::Auto
            && matches!(
                e.code,
                CommandErrorCode::BoxRefusedField | CommandErrorCode::ProxysmartRefused
            )
            && e.field.as_deref() != Some("proxy_login")
            && e.field.as_deref() != Some("bw_quota")
    }

    /// `store_port` with an id of ours, then the port as the box shows it.
    async fn create_json(&self, want: &Want) -> Result<PortEntry, CommandError> {
        let existing = self.client.list_ports().await?;
        let free = self.client.free_tcp_ports().await?;
        let pair = pairs::pick(&free, &existing)?;
        self.profile
            .update(|p| p.port_pools = Some(pairs::pooled(&free)));
        let mut store = self.store_request(want, new_port_id(), pair)?;
        let before_ms = crate::base::clock::now_ms();
        match self.client.store_port(&store).await {
            Ok(form) => self.profile.saw_reply(form),
            Err(ProxysmartError::NotFound { .. }) => {
                return Err(CommandError::box_refused(
                    "port",
                    "this box has no JSON port write (/crud/store_port answered 404)",
                ))
            }
            Err(e) => {
                // A timeout leaves the outcome unknown: whatever was made goes.
                self.remove_by_name(want).await;
                return Err(e.into());
            }
        }
        let found = visible::find(self, want, &store.portID).await?;
        let Some((port, waited)) = found else {
            return Err(CommandError::box_refused(
                "port",
                format!(
                    "the box answered store_port but did not list the port within {} s (a \
                     pair it does not accept, {}/{}?)",
                    self.settings.write_visibility.as_secs(),
                    store.http_port,
                    store.socks_port
                ),
            ));
        };
        self.profile.update(|p| {
            p.assigns_port_id = Some(port.port_id != store.portID);
            p.write_visibility_ms = Some(p.write_visibility_ms.unwrap_or(0).max(waited));
        });
        store.portID = port.port_id.clone();
        let port = self.learn_clock(want, &mut store, port, before_ms).await?;
        self.profile
            .update(|p| p.write_path = Some(WritePath::Json));
        Ok(port)
    }

    /// The `store_port` request for `want` on `pair` under `port_id`.
    fn store_request(
        &self,
        want: &Want,
        port_id: String,
        (http_port, socks_port): (u16, u16),
    ) -> Result<StorePort, CommandError> {
        let mut store = StorePort {
            IMEI: want.imei.clone(),
            portID: port_id,
            portName: want.name.clone(),
            proxy_login: want.login.clone(),
            proxy_password: want.password.clone(),
            http_port,
            socks_port,
            PROXY_VALID_BEFORE: check::box_expiry(&self.clock, want.expires_at_ms)?,
            bandlimin: None,
            bandlimout: None,
            bw_quota: None,
            QUOTA_TYPE: None,
            QUOTA_DIRECTION: None,
        };
        check::apply_limits(&mut store, &want.limits);
        Ok(store)
    }

    /// Learns the box's UTC offset from the new port's `CREATED_AT`; when the expiry was
    /// written with another one, re-stores it (an update of a known id, not a retry).
    async fn learn_clock(
        &self,
        want: &Want,
        store: &mut StorePort,
        port: PortEntry,
        before_ms: u64,
    ) -> Result<PortEntry, CommandError> {
        let after_ms = crate::base::clock::now_ms();
        let Some(offset) = self.clock.learn(&port.created_at, before_ms, after_ms) else {
            return Ok(port);
        };
        self.profile.update(|p| p.utc_offset_s = Some(offset));
        store.PROXY_VALID_BEFORE = check::box_expiry(&self.clock, want.expires_at_ms)?;
        if let Err(e) = self.client.store_port(store).await {
            self.remove_quietly(&port.port_id).await;
            return Err(e.into());
        }
        match visible::settled(self, &store.portID, |p| check::expiry_only(p, store)).await {
            Ok(port) => Ok(port),
            Err(e) => {
                self.remove_quietly(&store.portID).await;
                Err(e)
            }
        }
    }

    /// Checks what the box stored, applies the port and checks the proxy takes the buyer's
    /// credentials; removes the port on any failure.
    async fn go_live(&self, want: &Want, port: PortEntry) -> Result<PortEntry, CommandError> {
        let result = async {
            check::credentials(&port, want).inspect_err(|_| {
                self.profile.update(|p| p.custom_credentials = Some(false));
            })?;
            self.profile.update(|p| p.custom_credentials = Some(true));
            let pair = check::pair(&port)?;
            self.check_stored(&port, want)?;
            let form = self.client.apply_port(&port.port_id).await?;
            self.profile.saw_reply(form);
            if let Some(host) = &self.settings.proxy_host {
                listen::until_accepted(host, pair, want, self.settings.write_visibility).await?;
            }
            Ok(port.clone())
        }
        .await;
        if result.is_err() {
            self.remove_quietly(&port.port_id).await;
        }
        result
    }

    /// The expiry and limits as stored, recorded in the profile; an error names a field the
    /// box dropped that the buyer relies on (the quota, a speed limit the box lists wrong).
    fn check_stored(&self, port: &PortEntry, want: &Want) -> Result<(), CommandError> {
        let expected = check::box_expiry(&self.clock, want.expires_at_ms)?;
        let expiry = check::expiry_matches(&port.valid_before, &expected);
        self.profile.update(|p| p.expiry = Some(expiry));
        if !expiry {
            // The plane ends the port on time anyway; a box that drops its own expiry is
            // noted, not refused.
            tracing::warn!(port = %port.port_id, shown = %port.valid_before, "the box did not keep the port expiry; the control plane ends the port on time");
        }
        if let Some(quota) = check::quota(port, &want.limits) {
            self.profile.update(|p| p.quota = Some(quota.is_ok()));
            quota?;
        }
        if let Some(limit) = check::speed(port, &want.limits) {
            self.profile.update(|p| p.speed_limit = Some(limit.is_ok()));
            limit?;
        }
        Ok(())
    }

    /// Re-stores `port` (its id, pair and the box's own credentials) with `want`'s expiry
    /// and limits, and checks the box took them.
    pub async fn update(&self, port: &PortEntry, want: &Want) -> Result<PortEntry, CommandError> {
        let pair = check::pair(port)?;
        if self.profile.snapshot().write_path == Some(WritePath::Form)
            && self.settings.port_write != PortWrite::Json
        {
            return form_path::update(self, port, want).await;
        }
        let store = self.store_request(want, port.port_id.clone(), pair)?;
        let form = self.client.store_port(&store).await?;
        self.profile.saw_reply(form);
        let form = self.client.apply_port(&store.portID).await?;
        self.profile.saw_reply(form);
        visible::settled(self, &store.portID, |p| check::stored_as(p, &store)).await
    }

    /// Removes a port and confirms it is gone. `Ok(false)`: it was not there.
    pub async fn remove(&self, port_id: &str) -> Result<bool, CommandError> {
        let existed = match self.client.purge_port(port_id).await {
            Ok(existed) => existed,
            Err(ProxysmartError::Refused { .. } | ProxysmartError::NotFound { .. })
                if self.settings.port_write != PortWrite::Json =>
            {
                true
            }
            Err(e) => return Err(e.into()),
        };
        if visible::gone(self, port_id).await? {
            return Ok(existed);
        }
        if self.settings.port_write != PortWrite::Json {
            tracing::warn!(
                port = port_id,
                "still listed after purge_port; deleting it through the web panel"
            );
            self.client.delete_port_form(port_id).await?;
            if visible::gone(self, port_id).await? {
                return Ok(true);
            }
        }
        Err(CommandError::new(
            CommandErrorCode::ProxysmartRefused,
            format!(
                "port {port_id} is still listed {} s after it was removed",
                self.settings.write_visibility.as_secs()
            ),
        ))
    }

    /// Re-stores `port` with `want`'s expiry and limits and reports, field by field, what
    /// the box kept (`None`: it cannot be told, e.g. limits it does not list). Records the
    /// findings in the box profile. For `selftest`, which wants every verdict, not the
    /// first refusal.
    pub async fn probe_fields(
        &self,
        port: &PortEntry,
        want: &Want,
    ) -> Result<FieldVerdicts, CommandError> {
        let pair = check::pair(port)?;
        let store = self.store_request(want, port.port_id.clone(), pair)?;
        let form = self.client.store_port(&store).await?;
        self.profile.saw_reply(form);
        // Whatever the box shows at the end of the window is its answer.
        let shown =
            match visible::settled(self, &store.portID, |p| check::stored_as(p, &store)).await {
                Ok(port) => port,
                Err(_) => visible::latest(self, &store.portID).await?,
            };
        let expected = check::box_expiry(&self.clock, want.expires_at_ms)?;
        let verdicts = FieldVerdicts {
            expiry: check::expiry_matches(&shown.valid_before, &expected),
            quota: check::quota(&shown, &want.limits).map(|r| r.is_ok()),
            speed_limit: check::speed(&shown, &want.limits).map(|r| r.is_ok()),
        };
        self.profile.update(|p| {
            p.expiry = Some(verdicts.expiry);
            p.quota = verdicts.quota.or(p.quota);
            p.speed_limit = verdicts.speed_limit.or(p.speed_limit);
        });
        Ok(verdicts)
    }

    /// Removes every selftest scratch port (named [`SCRATCH_PREFIX`]…) a run that was
    /// interrupted left behind; returns how many.
    pub async fn remove_scratch(&self) -> Result<usize, CommandError> {
        let listed = self.client.list_ports().await?;
        let mut removed = 0;
        for port in listed
            .iter()
            .filter(|p| p.port_name.starts_with(SCRATCH_PREFIX))
        {
            tracing::info!(port = %port.port_id, name = %port.port_name, "removing a selftest scratch port");
            self.remove(&port.port_id).await?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Best-effort removal after a failure; the original error is what gets reported.
    pub async fn remove_quietly(&self, port_id: &str) {
        if let Err(e) = self.remove(port_id).await {
            tracing::warn!(port = port_id, error = %e.message, "could not remove the port after a failure; it is removed by name later");
        }
    }

    /// Removes every port named like `want` (after a write whose outcome is unknown).
    async fn remove_by_name(&self, want: &Want) {
        let Ok(ports) = self.client.list_ports().await else {
            return;
        };
        for port in ports
            .iter()
            .filter(|p| p.imei == want.imei && p.port_name == want.name)
        {
            self.remove_quietly(&port.port_id).await;
        }
    }

    /// The box's API client.
    pub fn client(&self) -> &ProxysmartClient {
        &self.client
    }
}

/// `port` + 10 random hex characters, like other ProxySmart clients.
fn new_port_id() -> String {
    format!("port{:010x}", random_u64() & 0xff_ffff_ffff)
}

/// A poll step while waiting for the box (operators re-read 250 ms apart).
pub(crate) const POLL: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ids_look_like_proxysmart_ones() {
        let id = new_port_id();
        assert_eq!(id.len(), 14);
        assert!(id.starts_with("port") && id[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(new_port_id(), new_port_id());
    }
}
