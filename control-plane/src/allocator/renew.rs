//! Renewing an allocation: `update_port` on the agent with the later expiry, then the new
//! `expires_at` is stored.

use super::{request, AllocError, Allocator};
use crate::ids::unix_ms;
use crate::store::AllocationRecord;
use farmhand_protocol::{CommandBody, CommandOutput, Outcome, UpdatePort};
use time::Duration;

impl Allocator {
    pub(super) async fn renew_inner(
        &self,
        allocation_id: &str,
        duration_s: u64,
    ) -> Result<AllocationRecord, AllocError> {
        request::check_duration(duration_s)?;
        let order_id = self.find(allocation_id).await?.order_id;
        let _order = self.locks.lock(&order_id).await;
        let mut record = self.find(allocation_id).await?;
        if !record.state.is_live() {
            return Err(AllocError::InvalidState(format!(
                "only active or replaced allocations can be renewed; this one is {}",
                record.state.as_str()
            )));
        }
        let extra = Duration::seconds(i64::try_from(duration_s).unwrap_or(i64::MAX));
        let expires_at = record.expires_at.saturating_add(extra);
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
            }) => {
                let from = record.state;
                record.expires_at = expires_at;
                if !self.store.save_change(&record, Some(from), &[]).await? {
                    // Released or moved on another node meanwhile: that change stands.
                    let now = self.find(allocation_id).await?;
                    return Err(AllocError::InvalidState(format!(
                        "the allocation changed while it was being renewed; it is {}",
                        now.state.as_str()
                    )));
                }
                // The sweeper may be sleeping until the old deadline.
                self.expiry.notify_one();
                // A new expiry gets its own `allocation.expiring`.
                self.schedule_expiring(&record);
                Ok(record)
            }
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
