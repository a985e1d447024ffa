//! Replacing an allocation: moving it to another modem with the SAME allocation id, login
//! and password, so the marketplace only has to hand the buyer a new host and ports.
//! Used by the outage sweeper (`outages`: the modem or its agent has been down too long)
//! and by `POST /v1/allocations/{id}/replace`.
//!
//! Under the order lock: pick another available modem of the allocation's country (and of
//! the carrier the order asked for), never the current one, preferring the same agent;
//! send `provision` there; on success the record moves (imei, agent, host, ports, carrier,
//! country), gains a `replacements` entry and becomes `replaced`. The old port goes: on
//! the same agent the agent's own `provision` moves the port (creates the new one, then
//! purges the old one); on another agent that agent gets `release` now if it is
//! connected, else its `reconcile` removes the port when it returns (the allocation is no
//! longer in its desired set). A target that refuses is skipped for the next candidate
//! (at most [`MAX_TARGETS`]); a target that does not answer stops the attempt, because
//! its outcome is unknown — its late answer is handled by `events` (`reassert` below).
//! An allocation whose agent was revoked is not moved: it is being released (`revoked`).

use super::{AllocError, Allocator};
use crate::fleet::{ModemFilter, Reservation};
use crate::gateway::DispatchError;
use crate::ids::unix_ms;
use crate::store::{
    AllocationRecord, AllocationState, AuditAction, Expected, Replacement, ReplacementReason,
};
use farmhand_protocol::{
    CommandBody, CommandOutput, Outcome, Provision, Provisioned, Release, Secret,
};
use serde_json::json;
use tracing::{info, warn};

/// Candidate modems tried per attempt before giving up (each refusal costs a round trip).
pub(super) const MAX_TARGETS: usize = 3;

/// What asked for the move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Trigger {
    /// The sweeper: only if the outage still holds when the lock is taken.
    Outage(ReplacementReason),
    /// The REST API: always (when live).
    Requested,
    /// Its port failed its probes on this modem: only if it is still there.
    Degraded {
        /// The modem probed.
        imei: String,
    },
}

impl Trigger {
    fn reason(&self) -> ReplacementReason {
        match self {
            Trigger::Outage(reason) => *reason,
            Trigger::Requested => ReplacementReason::Requested,
            Trigger::Degraded { .. } => ReplacementReason::ProbeFailed,
        }
    }
}

impl Allocator {
    /// Moves `allocation_id` to another modem. `Ok(None)` when an outage-triggered move
    /// is no longer needed (the modem came back, the allocation ended or expired).
    pub(super) async fn replace_inner(
        &self,
        allocation_id: &str,
        trigger: Trigger,
        actor: &str,
    ) -> Result<Option<AllocationRecord>, AllocError> {
        let order_id = self.find(allocation_id).await?.order_id;
        let _order = self.locks.lock(&order_id).await;
        let record = self.find(allocation_id).await?;
        let revoked = self.is_revoked(&record.agent_id).await?;
        let why = not_movable(&record, self.clock.now()).or_else(|| {
            // Its allocations are being released (`revoked`), not moved.
            revoked.then(|| "the allocation's agent was revoked: it is being released".into())
        });
        if let Some(why) = why {
            return match trigger {
                Trigger::Requested => Err(AllocError::InvalidState(why)),
                Trigger::Outage(_) | Trigger::Degraded { .. } => Ok(None),
            };
        }
        match &trigger {
            Trigger::Outage(_) if self.outage_reason(&record).is_none() => return Ok(None),
            Trigger::Degraded { imei } if *imei != record.imei => return Ok(None),
            _ => {}
        }
        let password = self.password(&record)?.ok_or_else(|| {
            AllocError::Internal("the buyer password of a live allocation is missing".into())
        })?;
        let mut tried = vec![record.imei.clone()];
        let mut refusal = None;
        while tried.len() <= MAX_TARGETS {
            let Some(slot) = self.reserve_target(&record, &tried) else {
                break;
            };
            tried.push(slot.imei.clone());
            match self.provision_on(&record, &slot, &password).await {
                Ok(port) => {
                    let moved = self
                        .moved(record, &slot, &port, trigger.reason(), actor)
                        .await?;
                    // The target was revoked while its answer was on the way: the
                    // revocation's sweep may have missed the allocation, so end it here.
                    if self.is_revoked(&moved.agent_id).await? {
                        return Ok(Some(self.end_revoked(moved, actor).await?));
                    }
                    return Ok(Some(moved));
                }
                Err(e @ AllocError::AgentTimeout(_)) => return Err(e),
                Err(e) => {
                    warn!(allocation_id, imei = %slot.imei, "replacement target refused: {e}");
                    refusal = Some(e);
                }
            }
        }
        Err(refusal.unwrap_or(AllocError::NoCapacity))
    }

    /// Takes a slot on the best other modem for `record`: available, same country, the
    /// requested carrier if any, not in `tried`; the same agent first, then the least
    /// loaded. A pinned `imei` in the request is ignored: the pinned modem is the problem.
    fn reserve_target(&self, record: &AllocationRecord, tried: &[String]) -> Option<Reservation> {
        let filter = ModemFilter {
            country: record
                .country
                .clone()
                .or_else(|| record.request.country.clone()),
            carrier: record.request.carrier.clone(),
            ..ModemFilter::default()
        };
        let mut candidates = self.fleet.modems(&ModemFilter {
            available: Some(true),
            ..filter.clone()
        });
        candidates.retain(|m| !tried.contains(&m.imei));
        candidates.sort_by(|a, b| {
            let key =
                |m: &crate::fleet::ModemView| (m.agent_id != record.agent_id, m.active_allocations);
            key(a).cmp(&key(b))
        });
        // `reserve` re-checks availability atomically: a modem taken meanwhile is skipped.
        candidates.into_iter().find_map(|m| {
            self.fleet.reserve(&ModemFilter {
                imei: Some(m.imei),
                ..filter.clone()
            })
        })
    }

    /// Sends `provision` for `record` to the reserved modem; the slot is given back unless
    /// the port was confirmed.
    async fn provision_on(
        &self,
        record: &AllocationRecord,
        slot: &Reservation,
        password: &Secret,
    ) -> Result<Provisioned, AllocError> {
        info!(allocation_id = %record.allocation_id, from = %record.imei, to = %slot.imei, "replacing: provisioning on another modem");
        let body = CommandBody::Provision(
            self.provision_body(record, &slot.imei, password.clone())
                .await,
        );
        self.replacing
            .moving(&record.allocation_id, &slot.agent_id, &slot.imei);
        let outcome = self
            .gateway
            .dispatch(&slot.agent_id, body, self.config.provisioning_timeout())
            .await;
        self.replacing.moved(&record.allocation_id);
        let result = match outcome {
            Ok(Outcome::Ok {
                output: CommandOutput::Provision(p),
            }) if p.allocation_id == record.allocation_id && p.imei == slot.imei => Ok(p),
            Ok(Outcome::Ok { .. }) => Err(AllocError::AgentRefused {
                code: "provision_failed",
                message: "the agent answered provision with an unexpected result".into(),
            }),
            Ok(Outcome::Error { error }) => Err(AllocError::refused(
                "provision_failed",
                "provision the replacement port",
                &error,
            )),
            Err(e) => Err(AllocError::from_dispatch(e, "the replacement port")),
        };
        if result.is_err() {
            self.fleet.release_load(&slot.agent_id, &slot.imei);
        }
        result
    }

    /// Applies a confirmed move: the record follows the port, the old slot is freed, the
    /// move is audited and announced, and the old agent (if another) releases its port.
    /// Written only over the record as it was read (`Expected`): another node may have
    /// released, renewed or moved it while the new port was made (its order lock is this
    /// node's only). A renewal is kept and the move written on top of it; a release,
    /// expiry or other move stands, and the new port is given back.
    async fn moved(
        &self,
        mut record: AllocationRecord,
        slot: &Reservation,
        port: &Provisioned,
        reason: ReplacementReason,
        actor: &str,
    ) -> Result<AllocationRecord, AllocError> {
        let from = Replacement {
            at: self.clock.now(),
            reason,
            from_imei: record.imei.clone(),
            from_agent_id: record.agent_id.clone(),
            to_imei: slot.imei.clone(),
            to_agent_id: slot.agent_id.clone(),
        };
        // The new port was made with the expiry read then.
        let provisioned_until = record.expires_at;
        let mut saved = Ok(false);
        // What another node made of it, when the move lost.
        let mut stands = None;
        for _ in 0..MAX_TRIES {
            let read = Expected::of(&record);
            follow(&mut record, slot, port, &from);
            saved = self
                .save_reporting(
                    &record,
                    Some(read),
                    crate::events::EventType::AllocationReplaced,
                )
                .await;
            if !matches!(saved, Ok(false)) {
                break;
            }
            match self.store.allocation(&record.allocation_id).await {
                // Renewed meanwhile, still where the move started: move that one.
                Ok(Some(now))
                    if now.state.is_live()
                        && now.agent_id == from.from_agent_id
                        && now.imei == from.from_imei
                        && now.replacements.len() == read.moves =>
                {
                    record = now;
                }
                Ok(now) => {
                    stands = now;
                    break;
                }
                Err(e) => {
                    saved = Err(e);
                    break;
                }
            }
        }
        match saved {
            Ok(true) if record.expires_at != provisioned_until => {
                // Renewed meanwhile: the new port gets the renewed expiry too.
                if let Err(e) = self.extend_on_box(&record, record.expires_at).await {
                    warn!(allocation_id = %record.allocation_id, "the moved port keeps the expiry from before a renewal: {e}");
                }
            }
            Ok(true) => {}
            Ok(false) => {
                // Released, expired or moved by another node first: that stands.
                self.fleet.release_load(&slot.agent_id, &slot.imei);
                // The agent keeps one port per allocation: not when the allocation lives
                // on that agent now (moved there by the other node).
                let lives_there = stands
                    .as_ref()
                    .is_some_and(|r| r.state.is_live() && r.agent_id == slot.agent_id);
                if !lives_there {
                    self.release_port(&slot.agent_id, &record.allocation_id);
                }
                warn!(allocation_id = %record.allocation_id, "the allocation changed elsewhere while it was being moved; the move is undone");
                return Err(AllocError::InvalidState(
                    "the allocation was released, expired or moved while it was being moved; \
                     nothing was moved"
                        .into(),
                ));
            }
            Err(e) => {
                self.fleet.release_load(&slot.agent_id, &slot.imei);
                return Err(e.into());
            }
        }
        self.fleet
            .release_load(&from.from_agent_id, &from.from_imei);
        self.quality.replaced_from(&from.from_agent_id, from.at);
        self.replacing.recovered(&record.allocation_id);
        info!(allocation_id = %record.allocation_id, reason = ?reason, to = %record.imei, "allocation replaced");
        self.store
            .audit(
                actor,
                AuditAction::AllocationReplaced,
                format!("allocation:{}", record.allocation_id),
                json!({
                    "order_id": record.order_id,
                    "reason": reason,
                    "from_imei": from.from_imei,
                    "from_agent_id": from.from_agent_id,
                    "to_imei": from.to_imei,
                    "to_agent_id": from.to_agent_id,
                }),
            )
            .await;
        if from.from_agent_id != from.to_agent_id {
            self.release_port(&from.from_agent_id, &record.allocation_id);
        }
        Ok(record)
    }

    /// Asks `agent_id` to remove the allocation's port there (one it left, or one made for
    /// an allocation that failed), in the background, wherever its session is held; an
    /// agent that is away does it through `reconcile` when it returns.
    pub(super) fn release_port(&self, agent_id: &str, allocation_id: &str) {
        let (gateway, timeout) = (self.gateway.clone(), self.config.command_timeout());
        let (agent_id, allocation_id) = (agent_id.to_string(), allocation_id.to_string());
        self.spawn(async move {
            let body = CommandBody::Release(Release {
                allocation_id: allocation_id.clone(),
            });
            match gateway.dispatch_or_defer(&agent_id, body, timeout).await {
                Ok(Outcome::Ok { .. }) => info!(agent_id, allocation_id, "port released"),
                Ok(Outcome::Error { error }) => {
                    warn!(
                        agent_id,
                        allocation_id,
                        code = error.code.as_str(),
                        "the agent could not release the port; its next reconcile removes it"
                    )
                }
                Err(
                    DispatchError::SessionClosed
                    | DispatchError::AgentOffline
                    | DispatchError::AgentRevoked,
                ) => {
                    info!(
                        agent_id,
                        allocation_id, "agent away: its reconcile removes the port"
                    )
                }
                Err(e) => warn!(agent_id, allocation_id, "releasing the port failed: {e}"),
            }
        });
    }

    /// A `provision` of this allocation on its own agent but another modem was confirmed
    /// late (a move whose answer came after we gave up on it): the agent moved the port
    /// there, the record did not follow. Ask the agent to put it back on the recorded
    /// modem and store where it is; if that modem is offline the agent keeps the port
    /// where it is and the outage sweeper moves the record properly.
    pub(super) async fn reassert(&self, allocation_id: &str) -> Result<(), AllocError> {
        let order_id = self.find(allocation_id).await?.order_id;
        let _order = self.locks.lock(&order_id).await;
        let record = self.find(allocation_id).await?;
        if !record.state.is_live() {
            return Ok(());
        }
        let Some(password) = self.password(&record)? else {
            return Ok(());
        };
        warn!(allocation_id, imei = %record.imei, "a late move answer: putting the port back on the recorded modem");
        let body =
            CommandBody::Provision(self.provision_body(&record, &record.imei, password).await);
        let timeout = self.config.provisioning_timeout();
        match self.gateway.dispatch(&record.agent_id, body, timeout).await {
            Ok(Outcome::Ok {
                output: CommandOutput::Provision(p),
            }) if p.allocation_id == record.allocation_id && p.imei == record.imei => {
                self.repaired(record, &p).await
            }
            other => {
                info!(
                    allocation_id,
                    ?other,
                    "the port could not be put back; the sweeper will move the allocation"
                );
                Ok(())
            }
        }
    }
}

/// Why `record` cannot be moved now; `None` when it can.
fn not_movable(record: &AllocationRecord, now: time::OffsetDateTime) -> Option<String> {
    if !record.state.is_live() {
        return Some(format!(
            "only active or replaced allocations can be replaced; this one is {}",
            record.state.as_str()
        ));
    }
    (record.expires_at <= now).then(|| "the allocation has expired".to_string())
}

impl Allocator {
    /// The `provision` that puts `record`'s port on `imei`: same id, login, password, expiry
    /// and options as the order; the traffic quota is what is left of it (`quota_left`),
    /// because the new port's counter starts at zero on the box.
    async fn provision_body(
        &self,
        record: &AllocationRecord,
        imei: &str,
        password: Secret,
    ) -> Provision {
        Provision {
            allocation_id: record.allocation_id.clone(),
            imei: imei.to_string(),
            login: record.login.clone(),
            password,
            expires_at_ms: unix_ms(record.expires_at),
            bandwidth_kbit: record.request.bandwidth_kbit,
            traffic_quota_mb: self.quota_left(record).await,
            rotate_every_s: record.request.rotate_every_s,
        }
    }
}

/// Tries to write a move again this many times when a renewal got in between.
const MAX_TRIES: usize = 3;

/// `record` as it is once moved to `slot`'s new `port` (`from` says from where).
fn follow(
    record: &mut AllocationRecord,
    slot: &Reservation,
    port: &Provisioned,
    from: &Replacement,
) {
    record.state = AllocationState::Replaced;
    record.imei = slot.imei.clone();
    record.agent_id = slot.agent_id.clone();
    record.carrier = slot.carrier.clone();
    record.country = slot.country.clone();
    record.host = Some(slot.public_host.clone());
    record.http_port = Some(port.http_port);
    record.socks_port = Some(port.socks_port);
    record.port_id = Some(port.port_id.clone());
    record.replacements.push(from.clone());
}
