//! Rotating a modem's external IP through its agent.

use super::{request, AllocError, Allocator};
use crate::ids::{now, rfc3339};
use farmhand_protocol::{CommandBody, CommandOutput, Outcome, RotateIp};
use serde::Serialize;

/// The answer of `POST /v1/modems/{imei}/rotate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rotation {
    /// The modem.
    pub imei: String,
    /// The IP before the rotation, if known.
    pub old_ip: Option<String>,
    /// The IP after it, if the modem reported one in time.
    pub new_ip: Option<String>,
    /// Whether the IP changed (carriers sometimes hand back the same one).
    pub changed: bool,
    /// When the agent reported the result (RFC 3339).
    pub rotated_at: String,
}

impl Allocator {
    pub(super) async fn rotate_inner(&self, imei: &str) -> Result<Rotation, AllocError> {
        request::check_imei(imei)
            .map_err(|_| AllocError::NotFound(format!("no modem {imei:?}")))?;
        let (agent_id, connected) = self
            .fleet
            .locate(imei)
            .ok_or_else(|| AllocError::NotFound(format!("no modem {imei:?}")))?;
        if !connected {
            return Err(AllocError::AgentOffline);
        }
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
            }) => Ok(Rotation {
                imei: r.imei,
                old_ip: r.old_ip,
                new_ip: r.new_ip,
                changed: r.changed,
                rotated_at: rfc3339(now()),
            }),
            Ok(Outcome::Ok { .. }) => Err(AllocError::AgentRefused {
                code: "rotation_failed",
                message: "the agent answered rotate_ip with an unexpected result".into(),
            }),
            Ok(Outcome::Error { error }) => Err(AllocError::refused(
                "rotation_failed",
                "rotate the IP",
                &error,
            )),
            Err(e) => Err(AllocError::from_dispatch(e, "the rotation")),
        }
    }
}
