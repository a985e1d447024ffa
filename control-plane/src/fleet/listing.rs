//! What the API lists: modems as [`ModemView`]s (load, capacity, whether a new
//! allocation could go there, why not), filtered by country, carrier, IMEI and state.

use super::{available, Fleet, Inner, LiveAgent, ModemFilter, ModemView};
use farmhand_protocol::Modem;

impl Fleet {
    /// Modems matching `filter`, ordered by agent then IMEI.
    pub fn modems(&self, filter: &ModemFilter) -> Vec<ModemView> {
        let inner = self.read();
        let mut out: Vec<ModemView> = inner
            .agents
            .iter()
            .flat_map(|(id, agent)| agent.modems.values().map(move |m| (id, agent, m)))
            .map(|(id, agent, modem)| self.view(&inner, id, agent, modem))
            .filter(|view| matches(filter, view))
            .collect();
        out.sort_by(|a, b| (&a.agent_id, &a.imei).cmp(&(&b.agent_id, &b.imei)));
        out
    }

    /// The modems of one agent, ordered by IMEI (without looking at the other agents').
    pub fn agent_modems(&self, agent_id: &str) -> Vec<ModemView> {
        let inner = self.read();
        let Some(agent) = inner.agents.get(agent_id) else {
            return Vec::new();
        };
        agent
            .modems
            .values()
            .map(|modem| self.view(&inner, agent_id, agent, modem))
            .collect()
    }

    fn view(&self, inner: &Inner, agent_id: &str, agent: &LiveAgent, modem: &Modem) -> ModemView {
        let load = inner.load_of(agent_id, &modem.imei);
        let site = agent.site.as_ref();
        let duplicate_identity = inner.contested(agent_id, &modem.imei);
        let available = available(agent, modem, load, self.capacity) && !duplicate_identity;
        ModemView {
            imei: modem.imei.clone(),
            agent_id: agent_id.to_string(),
            carrier: modem.carrier.clone(),
            country: site.map(|s| s.country.clone()),
            city: site.and_then(|s| s.city.clone()),
            ext_ip: modem.ext_ip.clone(),
            online: modem.online,
            signal: modem.signal,
            model: modem.model.clone(),
            active_allocations: load,
            capacity: agent.capacity(self.capacity),
            available,
            not_sellable: modem.unsellable_reason(),
            sim_status: modem.sim_status.clone(),
            network_type: modem.network_type.clone(),
            auto_rotation_s: modem.auto_rotation_s,
            duplicate_identity,
            identity_changes: inner.identities.history(&modem.imei),
        }
    }
}

fn eq_ci(wanted: &Option<String>, actual: &Option<String>) -> bool {
    match wanted {
        None => true,
        Some(w) => actual.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(w)),
    }
}

fn matches(filter: &ModemFilter, view: &ModemView) -> bool {
    eq_ci(&filter.country, &view.country)
        && eq_ci(&filter.carrier, &view.carrier)
        && filter.imei.as_ref().is_none_or(|i| *i == view.imei)
        && filter.online.is_none_or(|o| o == view.online)
        && filter.available.is_none_or(|a| a == view.available)
}
