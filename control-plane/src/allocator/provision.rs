//! Creating an allocation: idempotency by order id, reserving a modem slot, persisting the
//! `pending` record, sending `provision` and settling on the agent's answer.

use super::{fail, request, AllocError, Allocator, Created};
use crate::credentials::{generate_login, generate_password};
use crate::events::EventType;
use crate::fleet::{ModemFilter, Reservation};
use crate::gateway::DispatchError;
use crate::ids::{now, random_id, unix_ms};
use crate::store::{
    AllocationRecord, AllocationRequest, AllocationState, AuditAction, InsertOutcome,
};
use farmhand_protocol::{CommandBody, CommandOutput, Outcome, Provision, Secret};
use time::Duration;
use tracing::{info, warn};

impl Allocator {
    pub(super) async fn allocate_inner(
        &self,
        request: AllocationRequest,
        actor: &str,
    ) -> Result<(Created, AllocationRecord), AllocError> {
        let request = request::normalize(request)?;
        request::check_rotate_every(request.rotate_every_s, self.config.min_rotate_every_s)?;
        let _order = self.locks.lock(&request.order_id).await;
        if let Some(existing) = self.store.allocation_by_order(&request.order_id)? {
            if existing.state != AllocationState::Failed {
                return same_request(existing, &request);
            }
        }
        let filter = ModemFilter {
            country: request.country.clone(),
            carrier: request.carrier.clone(),
            imei: request.imei.clone(),
            ..ModemFilter::default()
        };
        let slot = self.fleet.reserve(&filter).ok_or(AllocError::NoCapacity)?;
        let password = generate_password();
        let record = self.new_record(&request, &slot, &password);
        match self.store.insert_allocation(&record) {
            Ok(InsertOutcome::Inserted) => {}
            other => {
                self.fleet.release_load(&slot.imei);
                return match other? {
                    InsertOutcome::Existing(existing) => same_request(*existing, &request),
                    InsertOutcome::Inserted => {
                        Err(AllocError::Internal("unreachable insert outcome".into()))
                    }
                };
            }
        }
        info!(allocation_id = %record.allocation_id, order_id = %record.order_id, imei = %slot.imei, "provisioning");
        let body = CommandBody::Provision(Provision {
            allocation_id: record.allocation_id.clone(),
            imei: slot.imei.clone(),
            login: record.login.clone(),
            password,
            expires_at_ms: unix_ms(record.expires_at),
            bandwidth_kbit: request.bandwidth_kbit,
            traffic_quota_mb: request.traffic_quota_mb,
            rotate_every_s: request.rotate_every_s,
        });
        let outcome = self
            .gateway
            .dispatch(&slot.agent_id, body, self.config.provisioning_timeout())
            .await;
        self.settle(record, &slot, outcome, actor)
            .await
            .map(|r| (Created::New, r))
    }

    fn new_record(
        &self,
        request: &AllocationRequest,
        slot: &Reservation,
        password: &Secret,
    ) -> AllocationRecord {
        let allocation_id = random_id("al");
        let created_at = now();
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
                self.store.save_allocation(&record).await?;
                info!(allocation_id = %record.allocation_id, "allocation active");
                self.audit(actor, AuditAction::AllocationCreated, &record);
                self.emit(EventType::AllocationActive, &record);
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
        self.store.save_allocation(&record).await?;
        self.fleet.release_load(&record.imei);
        self.audit(actor, AuditAction::AllocationFailed, &record);
        self.emit(EventType::AllocationFailed, &record);
        self.ended.notify_one();
        Err(error)
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
