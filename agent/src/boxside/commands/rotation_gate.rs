//! The per-modem rotation gate: when each modem's last rotation started and whether one
//! is running. The `rotate_ip` command and the automatic scheduler (`autorotate`) both pass
//! through it (via `CommandContext::start_rotation`), so the two never rotate one modem at
//! once (`rotation_in_progress`) and the seller's `min_rotation_interval_s` counts both.

use crate::config::policy::denied;
use farmhand_protocol::{CommandError, CommandErrorCode};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Per modem: when its last rotation started and whether one is running. Shared by the
/// `rotate_ip` command and the automatic scheduler (`autorotate`), so the two never rotate
/// one modem at once (`rotation_in_progress`) and the seller's spacing counts both. The
/// start times are also journaled and seeded back at startup ([`RotationGate::seed`]), so
/// restarting the agent does not forget the spacing.
#[derive(Debug, Default)]
pub struct RotationGate {
    modems: Mutex<HashMap<String, ModemRotation>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct ModemRotation {
    last_start: Option<Instant>,
    running: bool,
}

/// A running rotation of one modem; dropping it lets the next one start.
#[derive(Debug)]
pub struct RotationGuard<'a> {
    gate: &'a RotationGate,
    imei: String,
}

impl RotationGate {
    /// Records a rotation of `imei` starting at `now`, or refuses it: `rotation_in_progress`
    /// while another one runs, `policy_denied` if the previous one started less than
    /// `min_interval` ago. Check and record are one step, so two concurrent rotations of
    /// one modem cannot both pass.
    pub fn try_start(
        &self,
        imei: &str,
        min_interval: Duration,
        now: Instant,
    ) -> Result<RotationGuard<'_>, CommandError> {
        let Ok(mut modems) = self.modems.lock() else {
            return Err(poisoned());
        };
        let modem = modems.entry(imei.to_string()).or_default();
        if modem.running {
            return Err(CommandError::new(
                CommandErrorCode::RotationInProgress,
                format!("modem {imei} is being rotated right now"),
            ));
        }
        if let Some(previous) = modem.last_start.filter(|_| !min_interval.is_zero()) {
            let since = now.saturating_duration_since(previous);
            if since < min_interval {
                return Err(denied(format!(
                    "modem {imei} was rotated {}s ago; this box's policy allows one rotation every {}s",
                    since.as_secs(),
                    min_interval.as_secs()
                )));
            }
        }
        *modem = ModemRotation {
            last_start: Some(now),
            running: true,
        };
        Ok(RotationGuard {
            gate: self,
            imei: imei.to_string(),
        })
    }

    /// When the last rotation of `imei` started, if one did since the agent started (or
    /// was seeded from the journal).
    pub fn last_start(&self, imei: &str) -> Option<Instant> {
        let modems = self.modems.lock().ok()?;
        modems.get(imei).and_then(|m| m.last_start)
    }

    /// Remembers a rotation of `imei` that started at `at` (from the journal), unless a
    /// later one is known.
    pub fn seed(&self, imei: &str, at: Instant) {
        if let Ok(mut modems) = self.modems.lock() {
            let modem = modems.entry(imei.to_string()).or_default();
            if modem.last_start.is_none_or(|known| known < at) {
                modem.last_start = Some(at);
            }
        }
    }
}

impl Drop for RotationGuard<'_> {
    fn drop(&mut self) {
        // A poisoned lock cannot be repaired here; the process state is lost anyway.
        if let Ok(mut modems) = self.gate.modems.lock() {
            if let Some(modem) = modems.get_mut(&self.imei) {
                modem.running = false;
            }
        }
    }
}

fn poisoned() -> CommandError {
    CommandError::new(CommandErrorCode::Internal, "rotation state poisoned")
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMEI: &str = "356000000000001";
    const OWN: &str = "356000000000009";

    #[test]
    fn rotation_gate_spaces_rotations_per_modem() {
        let gate = RotationGate::default();
        let t0 = Instant::now();
        let min = Duration::from_secs(60);
        gate.try_start(IMEI, min, t0).unwrap();
        let e = gate
            .try_start(IMEI, min, t0 + Duration::from_secs(59))
            .unwrap_err();
        assert_eq!(e.code, CommandErrorCode::PolicyDenied);
        assert!(e.message.contains("59s ago"), "{e:?}");
        gate.try_start(OWN, min, t0 + Duration::from_secs(1))
            .unwrap();
        gate.try_start(IMEI, min, t0 + Duration::from_secs(60))
            .unwrap();
        assert!(gate
            .try_start(IMEI, min, t0 + Duration::from_secs(61))
            .is_err());
        // No interval: never refused for spacing.
        let free = RotationGate::default();
        for _ in 0..3 {
            free.try_start(IMEI, Duration::ZERO, t0).unwrap();
        }
    }

    #[test]
    fn rotation_gate_runs_one_rotation_per_modem_at_a_time() {
        let gate = RotationGate::default();
        let t0 = Instant::now();
        assert_eq!(gate.last_start(IMEI), None);
        let running = gate.try_start(IMEI, Duration::ZERO, t0).unwrap();
        let e = gate.try_start(IMEI, Duration::ZERO, t0).unwrap_err();
        assert_eq!(e.code, CommandErrorCode::RotationInProgress);
        gate.try_start(OWN, Duration::ZERO, t0).unwrap();
        drop(running);
        gate.try_start(IMEI, Duration::ZERO, t0 + Duration::from_secs(1))
            .unwrap();
        assert_eq!(gate.last_start(IMEI), Some(t0 + Duration::from_secs(1)));
        // A start seeded from the journal counts for the spacing, an older one is ignored.
        let restarted = RotationGate::default();
        restarted.seed(IMEI, t0);
        restarted.seed(IMEI, t0 - Duration::from_secs(30));
        assert_eq!(restarted.last_start(IMEI), Some(t0));
        let min = Duration::from_secs(60);
        let e = restarted
            .try_start(IMEI, min, t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(e.code, CommandErrorCode::PolicyDenied);
    }
}
