//! Releasing an allocation: `active → releasing → released` once the agent confirms the
//! port is gone. When the agent is offline (or slow, or drops mid-release) the allocation
//! stays `releasing` (202) and is finished when the agent reconnects — by the redelivered
//! `release` if it is still queued, else by a new one (see `events`) — or when its late
//! answer arrives. A release the agent refuses is sent again while it stays connected
//! (`release_retry`). The `releasing` state is durable, so this survives a plane restart.

use super::{AllocError, Allocator};
use crate::gateway::DispatchError;
use crate::store::{AllocationRecord, AllocationState, AuditAction, Expected, ReleaseReason};
use farmhand_protocol::{CommandBody, CommandOutput, Outcome, Release};
use tracing::info;

/// Whether the release is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseStatus {
    /// The port is gone (or never existed): 200.
    Done,
    /// The agent has not confirmed yet; it will be finished later: 202.
    InProgress,
}

impl Allocator {
    pub(super) async fn release_inner(
        &self,
        allocation_id: &str,
        actor: &str,
    ) -> Result<(ReleaseStatus, AllocationRecord), AllocError> {
        let order_id = self.find(allocation_id).await?.order_id;
        let _order = self.locks.lock(&order_id).await;
        // Re-read under the lock: the state may have changed while we waited.
        let mut record = self.find(allocation_id).await?;
        loop {
            match record.state {
                AllocationState::Released | AllocationState::Failed => {
                    return Ok((ReleaseStatus::Done, record))
                }
                AllocationState::Pending => {
                    return Err(AllocError::InvalidState(
                        "the allocation is still being provisioned".into(),
                    ))
                }
                AllocationState::Active | AllocationState::Replaced => {
                    let from = Expected::of(&record);
                    let mut releasing = record.clone();
                    releasing.state = AllocationState::Releasing;
                    releasing.release_reason = Some(ReleaseReason::Cancelled);
                    // Another node may change it meanwhile (a release, the expiry sweep):
                    // the transition is made once, and the loser looks again.
                    if !self.store.save_change(&releasing, Some(from), &[]).await? {
                        record = self.find(allocation_id).await?;
                        continue;
                    }
                    record = releasing;
                    self.audit(actor, AuditAction::AllocationReleasing, &record)
                        .await;
                }
                AllocationState::Releasing => {}
            }
            return self.finish_release(record, actor).await;
        }
    }

    /// Sends `release` for a `releasing` record and applies the answer. The caller holds
    /// the order lock. `actor` is who asked (`system` for automatic retries).
    pub(super) async fn finish_release(
        &self,
        mut record: AllocationRecord,
        actor: &str,
    ) -> Result<(ReleaseStatus, AllocationRecord), AllocError> {
        let body = CommandBody::Release(Release {
            allocation_id: record.allocation_id.clone(),
        });
        match self
            .gateway
            .dispatch_or_defer(&record.agent_id, body, self.config.command_timeout())
            .await
        {
            Ok(Outcome::Ok {
                output: CommandOutput::Release(_),
            }) => {
                self.mark_released(&mut record, actor).await?;
                self.release_retries.forget(&record.allocation_id);
                info!(allocation_id = %record.allocation_id, "allocation released");
                Ok((ReleaseStatus::Done, record))
            }
            Ok(Outcome::Ok { .. }) => Err(AllocError::AgentRefused {
                code: "release_failed",
                message: "the agent answered release with an unexpected result".into(),
            }),
            Ok(Outcome::Error { error }) => {
                // Sent again while the agent stays connected (`release_retry`).
                let now = self.clock.instant();
                self.release_retries.refused(&record.allocation_id, now);
                Err(AllocError::refused(
                    "release_failed",
                    "release the port",
                    &error,
                ))
            }
            Err(DispatchError::Storage) => Err(AllocError::from_dispatch(
                DispatchError::Storage,
                "the release",
            )),
            Err(
                DispatchError::AgentOffline
                | DispatchError::Timeout
                | DispatchError::SessionClosed
                | DispatchError::AgentRevoked,
            ) => {
                info!(allocation_id = %record.allocation_id, "release will finish when the agent answers");
                Ok((ReleaseStatus::InProgress, record))
            }
        }
    }

    pub(super) async fn find(&self, allocation_id: &str) -> Result<AllocationRecord, AllocError> {
        self.store
            .allocation(allocation_id)
            .await?
            .ok_or_else(|| AllocError::NotFound(format!("no allocation {allocation_id:?}")))
    }
}
