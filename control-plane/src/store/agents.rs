//! The agent table: agent id → public key, label, hostname, enrollment time, revoked flag.

use super::{decode, encode, SledStore, StoreError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

/// One enrolled agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// The id issued at enrollment.
    pub agent_id: String,
    /// Raw 32-byte Ed25519 public key (base64 in storage).
    #[serde(serialize_with = "ser_b64", deserialize_with = "de_b64")]
    pub public_key: Vec<u8>,
    /// Label of the enrollment token used.
    pub label: String,
    /// Hostname the agent reported at enrollment.
    pub hostname: String,
    /// When it enrolled.
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
    /// Revoked agents can never connect again.
    pub revoked: bool,
    /// Whether it may get orders: false while held for an admin's approval
    /// (`[enroll] require_approval`); agents enrolled before approvals existed are.
    #[serde(default = "approved_by_default")]
    pub approved: bool,
}

fn approved_by_default() -> bool {
    true
}

fn ser_b64<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&STANDARD.encode(bytes))
}

fn de_b64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(d)?;
    STANDARD.decode(text).map_err(serde::de::Error::custom)
}

impl SledStore {
    /// One agent.
    pub fn agent(&self, agent_id: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.agents
            .get(agent_id.as_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Writes `record` as is (tests that need an enrolled agent without a token).
    #[cfg(test)]
    pub(crate) fn put_agent(&self, record: &AgentRecord) -> Result<(), StoreError> {
        self.agents
            .insert(record.agent_id.as_bytes(), encode(record)?)?;
        Ok(())
    }

    /// Every enrolled agent, revoked ones included, ordered by id.
    pub fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.agents.iter().values().map(|v| decode(&v?)).collect()
    }

    /// Records `agent_id` as the owner of `imei` (an admin resolved a duplicate); flushed.
    pub fn set_modem_owner(&self, imei: &str, agent_id: &str) -> Result<(), StoreError> {
        self.modem_owners
            .insert(imei.as_bytes(), agent_id.as_bytes())?;
        self.flush()
    }

    /// Every recorded IMEI owner, for the fleet view at start.
    pub fn modem_owners(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.modem_owners
            .iter()
            .map(|entry| {
                let (imei, agent) = entry?;
                Ok((
                    String::from_utf8_lossy(&imei).into_owned(),
                    String::from_utf8_lossy(&agent).into_owned(),
                ))
            })
            .collect()
    }

    /// Marks an agent approved for orders and flushes; `None` when unknown, else whether
    /// it was held until now.
    pub fn approve_agent(&self, agent_id: &str) -> Result<Option<bool>, StoreError> {
        let Some(mut record) = self.agent(agent_id)? else {
            return Ok(None);
        };
        let was_held = !record.approved;
        record.approved = true;
        self.agents.insert(agent_id.as_bytes(), encode(&record)?)?;
        self.flush()?;
        Ok(Some(was_held))
    }

    /// Marks an agent revoked and flushes; `false` when the agent is unknown.
    pub fn revoke_agent(&self, agent_id: &str) -> Result<bool, StoreError> {
        let Some(mut record) = self.agent(agent_id)? else {
            return Ok(false);
        };
        record.revoked = true;
        self.agents.insert(agent_id.as_bytes(), encode(&record)?)?;
        self.flush()?;
        Ok(true)
    }
}
