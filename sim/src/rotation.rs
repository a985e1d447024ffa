//! IP rotation: the request is accepted at once, `EXT_IP` reads "IP_RESET" and `IS_ROTATED`
//! "true" for the configured delay, then a fresh IP (or, when armed, the same one) appears.

use super::error::SimError;
use super::shared::Sim;
use std::sync::Arc;

pub(crate) fn rotate(sim: &Arc<Sim>, imei: &str) -> Result<(), SimError> {
    let delay = {
        let mut state = sim.state();
        let delay = state.rotation_delay;
        let modem = state.modem_mut(imei)?;
        if !modem.online {
            return Err(SimError::ModemOffline);
        }
        if modem.rotating {
            return Err(SimError::ModemBusy);
        }
        modem.rotating = true;
        delay
    };
    tracing::info!(imei, ?delay, "simulator: rotation started");
    let (task_sim, imei) = (sim.clone(), imei.to_string());
    sim.tracker.spawn(async move {
        tokio::select! {
            _ = task_sim.shutdown.cancelled() => {}
            _ = tokio::time::sleep(delay) => finish(&task_sim, &imei),
        }
    });
    Ok(())
}

fn finish(sim: &Sim, imei: &str) {
    let mut state = sim.state();
    let fresh = state.fresh_ip();
    let Ok(modem) = state.modem_mut(imei) else {
        return;
    };
    let old = modem.ip.clone();
    if !modem.same_ip_next {
        if let Some(ip) = fresh {
            modem.ip = ip;
        }
    }
    modem.same_ip_next = false;
    modem.rotating = false;
    modem.rotations += 1;
    tracing::info!(imei, %old, new = %modem.ip, "simulator: rotation finished");
}
