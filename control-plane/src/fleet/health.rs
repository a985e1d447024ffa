//! The box's own health and what it was seen to honour: the plane's health limits, the
//! crossings a health report makes (a box past a limit gets no new allocation; its
//! existing ones stay), capabilities from the agent's box profile and what refusals
//! taught, and the box's own rotation time.

use super::{Fleet, HealthCrossing};
use farmhand_protocol::{BoxCapabilities, HealthLimits, HealthResource, HostHealth};

impl Fleet {
    /// The health limits the plane applies (sent to agents in `welcome`).
    pub fn health_limits(&self) -> HealthLimits {
        self.limits
    }

    /// The box of `agent_id` reported its health: past a limit it gets no new allocation.
    /// Returns the crossings (a resource newly past its limit, or back within it).
    pub fn set_health(&self, agent_id: &str, health: HostHealth) -> Vec<HealthCrossing> {
        let mut past = health.past(&self.limits);
        // Two watched volumes are often one: one reason per resource.
        past.dedup_by_key(|(resource, _)| *resource);
        let mut inner = self.write_agent(agent_id);
        let Some(agent) = inner.agents.get_mut(agent_id) else {
            return Vec::new();
        };
        let mut crossings = Vec::new();
        for (resource, reason) in &past {
            if !agent.held_back.iter().any(|(r, _)| r == resource) {
                crossings.push(HealthCrossing {
                    resource: *resource,
                    past: true,
                    reason: reason.clone(),
                });
            }
        }
        for (resource, _) in &agent.held_back {
            if !past.iter().any(|(r, _)| r == resource) {
                crossings.push(HealthCrossing {
                    resource: *resource,
                    past: false,
                    reason: format!("{} is back within the limit", resource.as_str()),
                });
            }
        }
        agent.held_back = past;
        agent.health = Some(health);
        crossings
    }

    /// How many connected boxes are held back, per resource.
    pub fn held_back_counts(&self) -> [(HealthResource, usize); 2] {
        let inner = self.read();
        let count = |resource: HealthResource| {
            inner
                .agents
                .values()
                .filter(|a| a.connected && a.held_back.iter().any(|(r, _)| *r == resource))
                .count()
        };
        [
            (HealthResource::Disk, count(HealthResource::Disk)),
            (HealthResource::Memory, count(HealthResource::Memory)),
        ]
    }

    /// What the box of `agent_id` honours changed (its `capabilities` message).
    pub fn set_capabilities(&self, agent_id: &str, capabilities: BoxCapabilities) {
        let mut inner = self.write_agent(agent_id);
        if let Some(agent) = inner.agents.get_mut(agent_id) {
            agent.capabilities = capabilities;
        }
    }

    /// The box of `agent_id` refused `field` of a write (`box_refused_field`): orders that
    /// need it go elsewhere from now on, before its agent's own report arrives.
    pub fn learn_refusal(&self, agent_id: &str, field: &str) {
        let mut inner = self.write_agent(agent_id);
        if let Some(agent) = inner.agents.get_mut(agent_id) {
            match field {
                "bw_quota" => agent.capabilities.quota = Some(false),
                "bandlimin" | "bandlimout" => agent.capabilities.speed_limit = Some(false),
                _ => {}
            }
        }
    }

    /// How often the box rotates modem `imei` of `agent_id` by itself, seconds (0: never).
    pub fn box_rotation_s(&self, agent_id: &str, imei: &str) -> Option<u64> {
        let inner = self.read();
        inner
            .agents
            .get(agent_id)?
            .modems
            .get(imei)?
            .auto_rotation_s
    }
}
