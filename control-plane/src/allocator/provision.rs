//! Creating an allocation: idempotency by order id, reserving a modem slot, persisting the
//! `pending` record, sending `provision` and settling on the agent's answer.
//!
//! A box that turns out not to take a limit the order needs (`box_refused_field` for the
//! quota or a speed limit: its agent removed the port, nothing is left) is remembered as
//! unable (`Fleet::learn_refusal`, before its agent's own `capabilities` report arrives),
//! and the order is placed once more, on a box that can honour it — so a quota order gets
//! a modem on a box that keeps quotas, not a 502.

use super::{fail, request, AllocError, Allocator, Created};
use crate::config::Prefer;
use crate::credentials::{generate_login, generate_password};
use crate::events::EventType;
use crate::fleet::{ModemFilter, Reservation};
use crate::gateway::DispatchError;
use crate::ids::{random_id, unix_ms};
use crate::store::{
    AllocationRecord, AllocationRequest, AllocationState, AuditAction, InsertOutcome,
};
use farmhand_protocol::{CommandBody, CommandErrorCode, CommandOutput, Outcome, Provision, Secret};
use std::collections::HashMap;
use time::Duration;
use tracing::{info, warn};

impl Allocator {
    pub(super) async fn allocate_inner(
        &self,
        request: AllocationRequest,
        tenant: &str,
        actor: &str,
    ) -> Result<(Created, AllocationRecord), AllocError> {
        let request = request::normalize(request)?;
        request::check_rotate_every(request.rotate_every_s, self.config.min_rotate_every_s)?;
        let _order = self
            .locks
            .lock(&format!("{tenant}\0{}", request.order_id))
            .await;
        if let Some(existing) = self
            .store
            .allocation_by_order(tenant, &request.order_id)
            .await?
        {
            if existing.state != AllocationState::Failed {
                return same_request(existing, &request);
            }
        }
        let filter = ModemFilter {
            country: request.country.clone(),
            carrier: request.carrier.clone(),
            imei: request.imei.clone(),
            needs_quota: request.traffic_quota_mb.is_some(),
            needs_speed_limit: request.bandwidth_kbit.is_some(),
            ..ModemFilter::default()
        };
        let password = generate_password();
        let scores = self.scores(&filter).await;
        let (mut slot, mut record) = loop {
            let slot = self
                .reserve(&filter, &scores)
                .ok_or(AllocError::NoCapacity)?;
            let record = self.new_record(&request, &slot, &password, tenant);
            let mut inserted = self.store.insert_allocation(&record).await;
            if matches!(inserted, Ok(InsertOutcome::ModemUnknown)) {
                // The agent's inventory is not in the database yet: record it, then again.
                self.record_modems(&slot.agent_id).await;
                inserted = self.store.insert_allocation(&record).await;
            }
            match inserted {
                Ok(InsertOutcome::Inserted) => break (slot, record),
                Ok(InsertOutcome::ModemFull) => {
                    // Another node sold its last slot since this one last read the loads:
                    // full here too, and the next candidate is tried (each try fills one
                    // modem, so this ends).
                    self.fleet.note_full(&slot.agent_id, &slot.imei);
                }
                other => {
                    self.fleet.release_load(&slot.agent_id, &slot.imei);
                    return match other? {
                        InsertOutcome::Existing(existing) => same_request(*existing, &request),
                        InsertOutcome::ModemUnknown => Err(AllocError::NoCapacity),
                        InsertOutcome::Inserted | InsertOutcome::ModemFull => {
                            Err(AllocError::Internal("unreachable insert outcome".into()))
                        }
                    };
                }
            }
        };
        let mut outcome = self.send_provision(&record, &slot, &password).await;
        if let Some(field) = capability_refused(&outcome) {
            self.fleet.learn_refusal(&slot.agent_id, field);
            if let Some(next) = self.reserve(&filter, &scores) {
                warn!(allocation_id = %record.allocation_id, agent_id = %slot.agent_id, field, "the box does not keep this limit; placing the order on another box");
                self.fleet.release_load(&slot.agent_id, &slot.imei);
                record.imei = next.imei.clone();
                record.agent_id = next.agent_id.clone();
                record.carrier = next.carrier.clone();
                record.country = next.country.clone();
                self.store.save_allocation(&record).await?;
                slot = next;
                outcome = self.send_provision(&record, &slot, &password).await;
            }
        }
        self.settle(record, &slot, outcome, actor)
            .await
            .map(|r| (Created::New, r))
    }

    /// With `prefer = "quality"`, each agent's score over the last day (empty otherwise,
    /// for an order naming its modem, or when the scores cannot be read: least loaded).
    async fn scores(&self, filter: &ModemFilter) -> HashMap<String, u32> {
        if self.config.prefer != Prefer::Quality || filter.imei.is_some() {
            return HashMap::new();
        }
        match self.quality.day_scores(self.clock.now()).await {
            Ok(scores) => scores,
            Err(e) => {
                warn!("prefer = \"quality\": cannot read the scores, choosing the least loaded modem: {e}");
                HashMap::new()
            }
        }
    }

    /// Takes a slot on a modem matching `filter`: the least loaded, or with `scores`
    /// (`prefer = "quality"`) the one whose agent scores best, then the least loaded.
    fn reserve(&self, filter: &ModemFilter, scores: &HashMap<String, u32>) -> Option<Reservation> {
        if !scores.is_empty() {
            let mut candidates = self.fleet.modems(&ModemFilter {
                available: Some(true),
                ..filter.clone()
            });
            // Best score first (none last), then the least loaded.
            candidates.sort_by_key(|m| {
                let s = scores.get(&m.agent_id).copied();
                (
                    std::cmp::Reverse(s.map(|s| s + 1).unwrap_or(0)),
                    m.active_allocations,
                )
            });
            // `reserve` re-checks availability atomically: a modem taken meanwhile is skipped.
            let best = candidates.into_iter().find_map(|m| {
                self.fleet.reserve(&ModemFilter {
                    imei: Some(m.imei),
                    ..filter.clone()
                })
            });
            if best.is_some() {
                return best;
            }
        }
        self.fleet.reserve(filter)
    }

    /// Sends `provision` for the pending `record` to the agent of `slot` and waits.
    async fn send_provision(
        &self,
        record: &AllocationRecord,
        slot: &Reservation,
        password: &Secret,
    ) -> Result<Outcome, DispatchError> {
        info!(allocation_id = %record.allocation_id, order_id = %record.order_id, imei = %slot.imei, "provisioning");
        let request = &record.request;
        let body = CommandBody::Provision(Provision {
            allocation_id: record.allocation_id.clone(),
            imei: slot.imei.clone(),
            login: record.login.clone(),
            password: password.clone(),
            expires_at_ms: unix_ms(record.expires_at),
            bandwidth_kbit: request.bandwidth_kbit,
            traffic_quota_mb: request.traffic_quota_mb,
            rotate_every_s: request.rotate_every_s,
        });
        self.gateway
            .dispatch(&slot.agent_id, body, self.config.provisioning_timeout())
            .await
    }

    fn new_record(
        &self,
        request: &AllocationRequest,
        slot: &Reservation,
        password: &Secret,
        tenant: &str,
    ) -> AllocationRecord {
        let allocation_id = random_id("al");
        let created_at = self.clock.now();
        let lifetime = Duration::seconds(i64::try_from(request.duration_s).unwrap_or(i64::MAX));
        AllocationRecord {
            password_sealed: Some(self.cipher.seal(password, &allocation_id)),
            allocation_id,
            order_id: request.order_id.clone(),
            state: AllocationState::Pending,
            imei: slot.imei.clone(),
            agent_id: slot.agent_id.clone(),
            carrier: slot.carrier.clone(),
            country: slot.country.clone(),
            host: None,
            http_port: None,
            socks_port: None,
            port_id: None,
            login: generate_login(),
            created_at,
            expires_at: created_at.saturating_add(lifetime),
            released_at: None,
            release_reason: None,
            failure: None,
            request: request.clone(),
            replacements: Vec::new(),
            tenant: tenant.to_string(),
            detail_purged: false,
        }
    }

    /// Applies the agent's answer to a `pending` record. The `active` record is flushed
    /// (with the `pending` one and the outbox entries before it: one group-committed flush
    /// per allocation, awaited without holding a thread) before the caller hears 201.
    async fn settle(
        &self,
        mut record: AllocationRecord,
        slot: &Reservation,
        outcome: Result<Outcome, DispatchError>,
        actor: &str,
    ) -> Result<AllocationRecord, AllocError> {
        let error = match outcome {
            Ok(Outcome::Ok {
                output: CommandOutput::Provision(p),
            }) if p.allocation_id == record.allocation_id => {
                record.state = AllocationState::Active;
                record.host = Some(slot.public_host.clone());
                record.http_port = Some(p.http_port);
                record.socks_port = Some(p.socks_port);
                record.port_id = Some(p.port_id);
                self.save_reporting(&record, None, EventType::AllocationActive)
                    .await?;
                info!(allocation_id = %record.allocation_id, "allocation active");
                self.audit(actor, AuditAction::AllocationCreated, &record)
                    .await;
                self.expiry.notify_one();
                return Ok(record);
            }
            Ok(Outcome::Ok { .. }) => AllocError::AgentRefused {
                code: "provision_failed",
                message: "the agent answered provision with an unexpected result".into(),
            },
            Ok(Outcome::Error { error }) => {
                AllocError::refused("provision_failed", "provision the port", &error)
            }
            Err(e) => AllocError::from_dispatch(e, "the port"),
        };
        warn!(allocation_id = %record.allocation_id, "provisioning failed: {error}");
        fail(&mut record, &error.to_string());
        self.save_reporting(&record, None, EventType::AllocationFailed)
            .await?;
        self.fleet.release_load(&record.agent_id, &record.imei);
        self.audit(actor, AuditAction::AllocationFailed, &record)
            .await;
        self.ended.notify_one();
        Err(error)
    }
}

/// The limit a box refused to keep, when that is why the provision failed.
fn capability_refused(outcome: &Result<Outcome, DispatchError>) -> Option<&'static str> {
    let Ok(Outcome::Error { error }) = outcome else {
        return None;
    };
    if error.code != CommandErrorCode::BoxRefusedField {
        return None;
    }
    match error.field.as_deref()? {
        "bw_quota" => Some("bw_quota"),
        "bandlimin" => Some("bandlimin"),
        "bandlimout" => Some("bandlimout"),
        _ => None,
    }
}

/// The idempotency rule: the same request gets the same allocation; another one conflicts.
fn same_request(
    existing: AllocationRecord,
    request: &AllocationRequest,
) -> Result<(Created, AllocationRecord), AllocError> {
    if existing.request == *request {
        Ok((Created::Existing, existing))
    } else {
        Err(AllocError::OrderConflict)
    }
}
