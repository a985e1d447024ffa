//! Renewing an allocation: `update_port` on the agent with the later expiry, then the new
//! `expires_at` is stored — if the stored record is still as read. Another node's renewal
//! of the same allocation made meanwhile is kept: this one is made again on top of it (so
//! two renewals at once extend twice); a release or a move made meanwhile stands.

use super::{request, AllocError, Allocator};
use crate::ids::unix_ms;
use crate::store::{AllocationRecord, Expected};
use farmhand_protocol::{CommandBody, CommandOutput, Outcome, UpdatePort};
use time::Duration;

/// How many times a renewal is made again on top of renewals made elsewhere meanwhile.
const MAX_TRIES: usize = 3;

impl Allocator {
    pub(super) async fn renew_inner(
        &self,
        allocation_id: &str,
        duration_s: u64,
    ) -> Result<AllocationRecord, AllocError> {
        request::check_duration(duration_s)?;
        let order_id = self.find(allocation_id).await?.order_id;
        let _order = self.locks.lock(&order_id).await;
        let extra = Duration::seconds(i64::try_from(duration_s).unwrap_or(i64::MAX));
        let mut record = self.find(allocation_id).await?;
        for _ in 0..MAX_TRIES {
            if !record.state.is_live() {
                return Err(AllocError::InvalidState(format!(
                    "only active or replaced allocations can be renewed; this one is {}",
                    record.state.as_str()
                )));
            }
            let expected = Expected::of(&record);
            let expires_at = record.expires_at.saturating_add(extra);
            self.extend_on_box(&record, expires_at).await?;
            record.expires_at = expires_at;
            if self.store.save_change(&record, Some(expected), &[]).await? {
                // The sweeper may be sleeping until the old deadline.
                self.expiry.notify_one();
                // A new expiry gets its own `allocation.expiring`.
                self.schedule_expiring(&record);
                return Ok(record);
            }
            // Changed elsewhere meanwhile: renewed (then again, on top), or released or
            // moved (then that stands, and the next round says so).
            record = self.find(allocation_id).await?;
        }
        Err(AllocError::InvalidState(
            "the allocation kept changing while it was being renewed; try again".into(),
        ))
    }

    /// Tells the box the port of `record` now expires at `expires_at`.
    pub(super) async fn extend_on_box(
        &self,
        record: &AllocationRecord,
        expires_at: time::OffsetDateTime,
    ) -> Result<(), AllocError> {
        let body = CommandBody::UpdatePort(UpdatePort {
            allocation_id: record.allocation_id.clone(),
            expires_at_ms: unix_ms(expires_at),
        });
        match self
            .gateway
            .dispatch(&record.agent_id, body, self.config.command_timeout())
            .await
        {
            Ok(Outcome::Ok {
                output: CommandOutput::UpdatePort(_),
            }) => Ok(()),
            Ok(Outcome::Ok { .. }) => Err(AllocError::AgentRefused {
                code: "renew_failed",
                message: "the agent answered update_port with an unexpected result".into(),
            }),
            Ok(Outcome::Error { error }) => Err(AllocError::refused(
                "renew_failed",
                "update the port",
                &error,
            )),
            Err(e) => Err(AllocError::from_dispatch(e, "the renewal")),
        }
    }
}
