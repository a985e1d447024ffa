//! The API-key table: SHA-256 of the key → role, name, creation time.

use super::{decode, encode, secret_hash, Store, StoreError};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Operators: enrollment tokens, agents, revocation (and everything else).
    Admin,
    /// The shop backend: modems, allocations, rotation; sees buyer credentials.
    Marketplace,
}

impl Role {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Marketplace => "marketplace",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "marketplace" => Ok(Role::Marketplace),
            other => Err(format!(
                "unknown role {other:?} (expected admin or marketplace)"
            )),
        }
    }
}

/// One stored key (the key itself is not stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// What the key may do.
    pub role: Role,
    /// Who it was issued to.
    pub name: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Store {
    /// Stores the hash of `key` and flushes.
    pub fn insert_api_key(&self, key: &str, record: &ApiKeyRecord) -> Result<(), StoreError> {
        self.keys.insert(secret_hash(key), encode(record)?)?;
        self.flush()
    }

    /// The record of a presented key, if it is known.
    pub fn find_api_key(&self, key: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.keys
            .get(secret_hash(key))?
            .map(|v| decode(&v))
            .transpose()
    }
}
