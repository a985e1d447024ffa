//! The API-key table: SHA-256 of the key → role, name, tenant or seller label, creation and
//! expiry times;
//! and beside it when each key was last used (written at most once a minute per key, so
//! a busy key does not turn reads into writes). A key's public id is derived from its hash
//! (`key_` + its first 48 bits in hex), so keys made before ids existed have one too.
//! Revoking a key deletes its record: every request looks its key up, so the next one is
//! refused.

use super::{decode, encode, secret_hash, SledStore, StoreError};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The tenant of marketplace keys created without one (every key made before tenants).
pub const DEFAULT_TENANT: &str = "default";
/// How stale a key's `last_used_at` may get before a request writes it again.
pub(crate) const LAST_USED_RESOLUTION_S: i64 = 60;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Operators: keys, enrollment tokens, agents, revocation, the audit log, webhooks;
    /// allocations without their buyer credentials.
    Admin,
    /// A shop backend (one tenant): modems, its own allocations with their credentials.
    Marketplace,
    /// A seller (one label): its own boxes — the agents enrolled with tokens of its label —
    /// their modems, health and quality, and what is sold on them without buyer data.
    Seller,
}

impl Role {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Marketplace => "marketplace",
            Role::Seller => "seller",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "marketplace" => Ok(Role::Marketplace),
            "seller" => Ok(Role::Seller),
            other => Err(format!(
                "unknown role {other:?} (expected admin, marketplace or seller)"
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
    /// The marketplace tenant it acts for (`None`: admin keys, and marketplace keys of
    /// the default tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The seller label a seller key sees the boxes of (`None` for other roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seller: Option<String>,
    /// After this the key is refused (`None`: never expires).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<OffsetDateTime>,
}

impl ApiKeyRecord {
    /// The tenant a marketplace key acts for; `None` for other keys.
    pub fn tenant(&self) -> Option<&str> {
        match self.role {
            Role::Admin | Role::Seller => None,
            Role::Marketplace => Some(self.tenant.as_deref().unwrap_or(DEFAULT_TENANT)),
        }
    }

    /// The seller label a seller key sees; `None` for other keys.
    pub fn seller(&self) -> Option<&str> {
        match self.role {
            Role::Seller => self.seller.as_deref(),
            Role::Admin | Role::Marketplace => None,
        }
    }
}

/// A stored key with its public id and last use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// `key_` + the first 48 bits of the key's SHA-256, hex.
    pub key_id: String,
    /// The record.
    pub record: ApiKeyRecord,
    /// When a request last authenticated with it (to the minute).
    pub last_used_at: Option<OffsetDateTime>,
}

impl KeyInfo {
    /// Whether its last use, as read, is recent enough that another need not be written.
    pub fn used_recently(&self, now: OffsetDateTime) -> bool {
        self.last_used_at
            .is_some_and(|at| (now - at).whole_seconds() < LAST_USED_RESOLUTION_S)
    }
}

/// Whether `tenant` is a valid tenant name: 1–64 of `[a-z0-9._-]`.
pub fn valid_tenant(tenant: &str) -> bool {
    (1..=64).contains(&tenant.len())
        && tenant.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

pub(crate) fn key_id(hash: &[u8]) -> String {
    format!("key_{}", crate::ids::hex(&hash[..hash.len().min(6)]))
}

impl SledStore {
    /// Stores the hash of `key` and flushes; returns the key's id.
    pub fn insert_api_key(&self, key: &str, record: &ApiKeyRecord) -> Result<String, StoreError> {
        let hash = secret_hash(key);
        self.keys.insert(&hash, encode(record)?)?;
        self.flush()?;
        Ok(key_id(&hash))
    }

    /// The stored key a request presented, if it is known and not expired at `now`.
    pub fn find_api_key(
        &self,
        key: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyInfo>, StoreError> {
        let hash = secret_hash(key);
        let Some(raw) = self.keys.get(&hash)? else {
            return Ok(None);
        };
        let record: ApiKeyRecord = decode(&raw)?;
        if record.expires_at.is_some_and(|at| at <= now) {
            return Ok(None);
        }
        Ok(Some(KeyInfo {
            key_id: key_id(&hash),
            last_used_at: self.last_used(&hash)?,
            record,
        }))
    }

    /// Every stored key, expired ones included, by id.
    pub fn api_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        let mut keys = Vec::new();
        for entry in self.keys.iter() {
            let (hash, raw) = entry?;
            keys.push(KeyInfo {
                key_id: key_id(&hash),
                record: decode(&raw)?,
                last_used_at: self.last_used(&hash)?,
            });
        }
        keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        Ok(keys)
    }

    /// Whether a key with this id is stored (and so still valid, unless expired).
    pub fn api_key_exists(&self, key_id: &str) -> Result<bool, StoreError> {
        Ok(self.key_hash(key_id)?.is_some())
    }

    /// Deletes the key with this id and flushes; its record, if there was one.
    pub fn revoke_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let Some(hash) = self.key_hash(id)? else {
            return Ok(None);
        };
        let removed = self
            .keys
            .remove(&hash)?
            .map(|raw| decode(&raw))
            .transpose()?;
        self.key_usage.remove(&hash)?;
        self.flush()?;
        Ok(removed)
    }

    /// Notes that the key with this id authenticated a request at `now` (at most one
    /// write a minute per key; not flushed — a lost minute of `last_used_at` is harmless).
    pub fn touch_api_key(&self, id: &str, now: OffsetDateTime) -> Result<(), StoreError> {
        let Some(hash) = self.key_hash(id)? else {
            return Ok(());
        };
        let fresh = self
            .last_used(&hash)?
            .is_some_and(|at| (now - at).whole_seconds() < LAST_USED_RESOLUTION_S);
        if !fresh {
            self.key_usage
                .insert(&hash, &now.unix_timestamp().to_be_bytes())?;
        }
        Ok(())
    }

    fn last_used(&self, hash: &[u8]) -> Result<Option<OffsetDateTime>, StoreError> {
        Ok(self
            .key_usage
            .get(hash)?
            .and_then(|raw| <[u8; 8]>::try_from(raw.as_ref()).ok())
            .and_then(|b| OffsetDateTime::from_unix_timestamp(i64::from_be_bytes(b)).ok()))
    }

    /// The hash of the key with this id (the table is small: a scan).
    fn key_hash(&self, id: &str) -> Result<Option<sled::IVec>, StoreError> {
        for entry in self.keys.iter().keys() {
            let hash = entry?;
            if key_id(&hash) == id {
                return Ok(Some(hash));
            }
        }
        Ok(None)
    }
}
