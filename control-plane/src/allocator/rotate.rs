//! Rotating a modem's external IP through its agent, and the per-modem cooldown.
//!
//! Checks, in order: the IMEI is known (404), its agent is connected (503), no other
//! rotation of the modem is under way here (409), and its last rotation — manual, or
//! automatic as reported by its agent — finished at least `rotation_cooldown_s` ago (409
//! with `Retry-After`). Only then is `rotate_ip` sent, so a refused request never reaches
//! the agent. A finished rotation is recorded in the store (also one whose new IP was not
//! read back in time: the modem was still reset), which restarts the cooldown clock and
//! survives a restart. An agent answering `rotation_in_progress` (its scheduler is
//! rotating the modem right now) is a 409 as well.

use super::{request, AllocError, Allocator};
use crate::fleet::Located;
use crate::ids::{rfc3339, unix_ms};
use crate::store::{RotationRecord, StoreError};
use farmhand_protocol::{CommandBody, CommandErrorCode, CommandOutput, Outcome, RotateIp, Rotated};
use serde::Serialize;
use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use tracing::error;

/// The answer of `POST /v1/modems/{imei}/rotate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"imei": "350000000000018", "old_ip": "198.51.100.23",
    "new_ip": "198.51.100.87", "changed": true, "rotated_at": "2026-12-07T10:05:12Z"}))]
pub struct Rotation {
    /// The modem.
    pub imei: String,
    /// The IP before the rotation, if known.
    pub old_ip: Option<String>,
    /// The IP after it; `None` when the modem showed no settled IP within the agent's
    /// rotation timeout (the modem was still reset).
    pub new_ip: Option<String>,
    /// Whether the IP is known to have changed (carriers sometimes hand back the same
    /// one; `false` as well when `new_ip` is unknown).
    pub changed: bool,
    /// When the agent reported the result (RFC 3339).
    pub rotated_at: String,
}

/// A modem's last rotation as `GET /v1/modems` shows it (`last_rotation`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LastRotation {
    /// The IP before, if known.
    pub old_ip: Option<String>,
    /// The IP after, if it was read back in time.
    pub new_ip: Option<String>,
    /// Whether the IP is known to have changed.
    pub changed: bool,
    /// When it finished (RFC 3339).
    pub rotated_at: String,
    /// True when the agent did it on its own (`rotate_every_s`).
    pub automatic: bool,
}

impl From<RotationRecord> for LastRotation {
    fn from(r: RotationRecord) -> Self {
        LastRotation {
            old_ip: r.old_ip,
            new_ip: r.new_ip,
            changed: r.changed,
            rotated_at: rfc3339(crate::store::from_ms(r.at_ms)),
            automatic: r.automatic,
        }
    }
}

/// The modems whose rotation is under way in this process.
#[derive(Debug, Default)]
pub(super) struct InFlight(Mutex<HashSet<String>>);

/// Holds a modem's place in [`InFlight`] until dropped.
struct Claim<'a> {
    set: &'a InFlight,
    imei: String,
}

impl InFlight {
    /// Claims `imei`; `None` while another rotation of it holds the claim.
    fn claim(&self, imei: &str) -> Option<Claim<'_>> {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        set.insert(imei.to_string()).then(|| Claim {
            set: self,
            imei: imei.to_string(),
        })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut set = self.set.0.lock().unwrap_or_else(PoisonError::into_inner);
        set.remove(&self.imei);
    }
}

impl Allocator {
    pub(super) async fn rotate_inner(&self, imei: &str) -> Result<Rotation, AllocError> {
        request::check_imei(imei)
            .map_err(|_| AllocError::NotFound(format!("no modem {imei:?}")))?;
        let (agent_id, connected) = match self.fleet.locate(imei) {
            None => return Err(AllocError::NotFound(format!("no modem {imei:?}"))),
            Some(Located::Contested(agents)) => {
                return Err(AllocError::DuplicateIdentity(format!(
                    "modem {imei} is reported by {} agents ({}); an admin must name its owner \
                     (POST /v1/modems/{imei}/resolve) before it is rotated",
                    agents.len(),
                    agents.join(", ")
                )))
            }
            Some(Located::Agent(agent_id, connected)) => (agent_id, connected),
        };
        if !connected {
            return Err(AllocError::AgentOffline);
        }
        let _claim = self
            .rotating
            .claim(imei)
            .ok_or_else(|| self.busy(imei, "a rotation of this modem is under way"))?;
        self.check_cooldown(&agent_id, imei).await?;
        let asked = std::time::Instant::now();
        let body = CommandBody::RotateIp(RotateIp {
            imei: imei.to_string(),
        });
        match self
            .gateway
            .dispatch(&agent_id, body, self.config.command_timeout())
            .await
        {
            Ok(Outcome::Ok {
                output: CommandOutput::RotateIp(r),
            }) if r.imei == imei => Ok(self.rotated(&agent_id, r, asked.elapsed()).await),
            Ok(Outcome::Ok { .. }) => Err(AllocError::AgentRefused {
                code: "rotation_failed",
                message: "the agent answered rotate_ip with an unexpected result".into(),
            }),
            Ok(Outcome::Error { error }) if error.code == CommandErrorCode::RotationInProgress => {
                Err(self.busy(
                    imei,
                    "the agent is rotating this modem on its own right now",
                ))
            }
            Ok(Outcome::Error { error }) => Err(AllocError::refused(
                "rotation_failed",
                "rotate the IP",
                &error,
            )),
            Err(e) => Err(AllocError::from_dispatch(e, "the rotation")),
        }
    }

    /// The last rotation of each (agent, IMEI), in their order, for the modem view (sled
    /// answers from memory: see `store::rotations`).
    pub async fn last_rotations<'a>(
        &self,
        modems: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Vec<Option<LastRotation>>, StoreError> {
        Ok(self
            .store
            .last_rotations(modems)
            .await?
            .into_iter()
            .map(|last| last.map(LastRotation::from))
            .collect())
    }

    /// Refuses while the modem's last rotation is younger than the cooldown.
    async fn check_cooldown(&self, agent_id: &str, imei: &str) -> Result<(), AllocError> {
        let cooldown_ms = self.config.rotation_cooldown_s.saturating_mul(1000);
        let Some(last) = self.store.last_rotation(agent_id, imei).await? else {
            return Ok(());
        };
        let since_ms = unix_ms(self.clock.now()).saturating_sub(last.at_ms);
        if since_ms >= cooldown_ms {
            return Ok(());
        }
        let retry_after_s = (cooldown_ms - since_ms).div_ceil(1000).max(1);
        Err(AllocError::RotationCooldown {
            retry_after_s,
            message: format!(
                "modem {imei} was rotated {}s ago; rotations are at least {}s apart: retry in {retry_after_s}s",
                since_ms / 1000,
                self.config.rotation_cooldown_s
            ),
        })
    }

    /// The 409 for a rotation that overlaps another one of the same modem.
    fn busy(&self, imei: &str, why: &str) -> AllocError {
        AllocError::RotationCooldown {
            retry_after_s: self.config.rotation_cooldown_s.max(1),
            message: format!("modem {imei}: {why}"),
        }
    }

    /// Records a finished rotation (the cooldown clock) and builds the answer. A storage
    /// failure is logged, not returned: the modem was rotated all the same.
    async fn rotated(&self, agent_id: &str, r: Rotated, took: std::time::Duration) -> Rotation {
        let at = self.clock.now();
        self.quality.rotated(agent_id, at, r.changed, Some(took));
        let receipt = crate::fleet::RotationReceipt {
            at,
            old_ip: r.old_ip.clone(),
            new_ip: r.new_ip.clone(),
            changed: r.changed,
            automatic: false,
            took_ms: Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX)),
        };
        self.fleet.note_rotation(agent_id, &r.imei, receipt);
        let record = RotationRecord {
            at_ms: unix_ms(at),
            old_ip: r.old_ip.clone(),
            new_ip: r.new_ip.clone(),
            changed: r.changed,
            automatic: false,
        };
        if let Err(e) = self.store.record_rotation(agent_id, &r.imei, &record).await {
            error!(imei = %r.imei, "cannot record the rotation for the cooldown: {e}");
        }
        Rotation {
            imei: r.imei,
            old_ip: r.old_ip,
            new_ip: r.new_ip,
            changed: r.changed,
            rotated_at: rfc3339(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_per_modem_until_dropped() {
        let set = InFlight::default();
        let first = set.claim("350000000000018").unwrap();
        assert!(set.claim("350000000000018").is_none());
        assert!(set.claim("350000000000026").is_some());
        drop(first);
        assert!(set.claim("350000000000018").is_some());
    }

    #[test]
    fn last_rotation_shows_rfc3339_times() {
        let view = LastRotation::from(RotationRecord {
            at_ms: 1_795_435_200_000,
            old_ip: None,
            new_ip: Some("198.51.100.2".into()),
            changed: true,
            automatic: true,
        });
        assert_eq!(view.rotated_at, "2026-11-23T12:00:00Z");
        assert!(view.automatic);
    }
}
