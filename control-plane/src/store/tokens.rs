//! The enrollment-token table: SHA-256 of the token → label, expiry, used flag. Consuming a
//! token and creating the agent happen in one sled transaction, so a token enrolls at most
//! one agent even when two requests race.

use super::{decode, encode, secret_hash, AgentRecord, SledStore, StoreError};
use serde::{Deserialize, Serialize};
use sled::transaction::{abort, ConflictableTransactionError, TransactionError};
use sled::Transactional;
use time::OffsetDateTime;

/// Whether `label` (trimmed) is a valid enrollment-token label — the seller's name its
/// agents carry, and a seller key's scope: 1–128 printable characters.
pub fn valid_label(label: &str) -> bool {
    let label = label.trim();
    !label.is_empty() && label.chars().count() <= 128 && !label.chars().any(char::is_control)
}

/// One stored enrollment token (the token itself is not stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Operator's label, copied to the agent it enrolls.
    pub label: String,
    /// When it was issued.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// After this it cannot be used.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Set when an agent enrolled with it.
    pub used: bool,
    /// The agent it enrolled (seller erasure deletes the token with its agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

/// Why an enrollment did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The token is unknown, already used or expired (deliberately not told apart).
    #[error("the enrollment token is unknown, used or expired")]
    InvalidToken,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A token's public id: `tok_` + the first 48 bits of its SHA-256, hex (the fingerprint
/// the audit log names it by).
pub(crate) fn token_id(hash: &[u8]) -> String {
    format!("tok_{}", crate::ids::hex(&hash[..hash.len().min(6)]))
}

impl SledStore {
    /// Every stored enrollment token (used and expired ones included), with its id,
    /// oldest first.
    pub fn enrollment_tokens(&self) -> Result<Vec<(String, TokenRecord)>, StoreError> {
        let mut tokens = Vec::new();
        for entry in self.tokens.iter() {
            let (hash, raw) = entry?;
            tokens.push((token_id(&hash), decode::<TokenRecord>(&raw)?));
        }
        tokens.sort_by_key(|(_, t)| t.created_at);
        Ok(tokens)
    }

    /// Deletes the token with this id unless it was used (flushed). `Ok(None)`: unknown;
    /// `Ok(Some(record))` with `used` set: it was used and stays.
    pub fn revoke_enrollment_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        for entry in self.tokens.iter() {
            let (hash, raw) = entry?;
            if token_id(&hash) != id {
                continue;
            }
            let record: TokenRecord = decode(&raw)?;
            if !record.used {
                // Compare-and-swap: an enrollment consuming it right now wins.
                if self
                    .tokens
                    .compare_and_swap(&hash, Some(raw), None::<&[u8]>)?
                    .is_err()
                {
                    return self.revoke_enrollment_token(id);
                }
                self.flush()?;
            }
            return Ok(Some(record));
        }
        Ok(None)
    }

    /// Stores the hash of `token` and flushes.
    pub fn insert_enrollment_token(
        &self,
        token: &str,
        record: &TokenRecord,
    ) -> Result<(), StoreError> {
        self.tokens.insert(secret_hash(token), encode(record)?)?;
        self.queue_token(token, record)?;
        self.flush()
    }

    /// Atomically marks `token` used and stores `agent` labelled with the token's label;
    /// flushes before returning the stored record.
    pub fn enroll(
        &self,
        token: &str,
        agent: AgentRecord,
        now: OffsetDateTime,
    ) -> Result<AgentRecord, EnrollError> {
        let hash = secret_hash(token);
        let result = (&self.tokens, &self.agents).transaction(|(tokens, agents)| {
            let Some(raw) = tokens.get(&hash)? else {
                return abort(EnrollError::InvalidToken);
            };
            let mut record: TokenRecord = decode(&raw).or_else(|e| abort(EnrollError::Store(e)))?;
            if record.used || record.expires_at <= now {
                return abort(EnrollError::InvalidToken);
            }
            record.used = true;
            record.agent_id = Some(agent.agent_id.clone());
            let updated = encode(&record).or_else(|e| abort(EnrollError::Store(e)))?;
            let agent = AgentRecord {
                label: record.label,
                ..agent.clone()
            };
            let agent_value = encode(&agent).or_else(|e| abort(EnrollError::Store(e)))?;
            tokens.insert(hash.as_slice(), updated)?;
            agents.insert(agent.agent_id.as_bytes(), agent_value)?;
            Ok::<_, ConflictableTransactionError<EnrollError>>(agent)
        });
        match result {
            Ok(agent) => {
                self.flush()?;
                Ok(agent)
            }
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(EnrollError::Store(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn agent(id: &str) -> AgentRecord {
        AgentRecord {
            agent_id: id.into(),
            public_key: vec![1; 32],
            label: "l".into(),
            hostname: "h".into(),
            enrolled_at: crate::ids::now(),
            revoked: false,
            approved: true,
        }
    }

    #[test]
    fn a_token_enrolls_once_and_not_after_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let now = crate::ids::now();
        let rec = TokenRecord {
            label: "s".into(),
            created_at: now,
            expires_at: now + Duration::hours(1),
            used: false,
            agent_id: None,
        };
        store.insert_enrollment_token("tok-1", &rec).unwrap();
        assert_eq!(store.enroll("tok-1", agent("a1"), now).unwrap().label, "s");
        assert!(matches!(
            store.enroll("tok-1", agent("a2"), now),
            Err(EnrollError::InvalidToken)
        ));
        assert!(store.agent("a2").unwrap().is_none());
        assert!(matches!(
            store.enroll("nope", agent("a3"), now),
            Err(EnrollError::InvalidToken)
        ));

        let old = TokenRecord {
            expires_at: now - Duration::seconds(1),
            ..rec
        };
        store.insert_enrollment_token("tok-2", &old).unwrap();
        assert!(matches!(
            store.enroll("tok-2", agent("a4"), now),
            Err(EnrollError::InvalidToken)
        ));
    }
}
