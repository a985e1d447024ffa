//! API-key issuance: a random 32-byte key shown once (`fh_` + base64url), stored only as
//! its SHA-256, with a role, a name, a tenant (marketplace keys) and an optional expiry.
//! `create_key` works offline on the data directory for the CLI; sled locks the database,
//! so while the server runs the CLI goes through its local admin socket instead
//! (`local_admin`), which ends in [`Store::issue_key`] too.

use crate::ids::{now, random_bytes};
use crate::store::{
    fingerprint, valid_label, valid_tenant, ApiKeyRecord, AuditAction, KeyInfo, Role, Store,
    StoreError,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::path::Path;
use time::OffsetDateTime;

/// Prefix of every API key, so leaked keys are easy to recognise in scanners.
pub const KEY_PREFIX: &str = "fh_";

/// Generates a new API key string.
pub fn generate_key() -> String {
    format!(
        "{KEY_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(random_bytes::<32>())
    )
}

/// The store in `data_dir` for the CLI, or `None` when a running plane holds it (then the
/// CLI goes through `local_admin`).
pub fn open_offline(data_dir: &Path) -> Result<Option<Store>, StoreError> {
    match Store::open(data_dir) {
        Ok(store) => Ok(Some(store)),
        Err(StoreError::Locked { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Revokes the key with this id, audited as done by `actor`; false if there is none.
pub async fn revoke(store: &Store, key_id: &str, actor: &str) -> Result<bool, StoreError> {
    let Some(record) = store.revoke_api_key(key_id).await? else {
        return Ok(false);
    };
    store
        .audit(
            actor,
            AuditAction::KeyRevoked,
            format!("key:{}", record.name),
            serde_json::json!({"key_id": key_id, "role": record.role.as_str()}),
        )
        .await;
    store.durable().await?;
    Ok(true)
}

/// An API key as the API and the CLI show it (never the key, except `key` right after
/// creation).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct KeyView {
    /// `key_` + 12 hex digits.
    #[schema(example = "key_3f2a9c1b7d4e")]
    pub key_id: String,
    /// What it may do.
    pub role: Role,
    /// Who it is for.
    pub name: String,
    /// Marketplace keys: their tenant.
    pub tenant: Option<String>,
    /// Seller keys: the label whose boxes they see.
    pub seller: Option<String>,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// RFC 3339, to the minute; `null`: never used.
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
    /// RFC 3339; `null`: never expires.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// The key itself: in the answer to its creation only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl From<&KeyInfo> for KeyView {
    fn from(info: &KeyInfo) -> Self {
        KeyView {
            key_id: info.key_id.clone(),
            role: info.record.role,
            name: info.record.name.clone(),
            tenant: info.record.tenant().map(str::to_string),
            seller: info.record.seller().map(str::to_string),
            created_at: crate::ids::rfc3339(info.record.created_at),
            last_used_at: info.last_used_at.map(crate::ids::rfc3339),
            expires_at: info.record.expires_at.map(crate::ids::rfc3339),
            key: None,
        }
    }
}

/// Opens the store in `data_dir`, creates a key for `role`, flushes, returns the key.
/// Fails with [`StoreError::Locked`] while the control plane is running.
pub async fn create_key(data_dir: &Path, role: Role, name: &str) -> Result<String, StoreError> {
    Store::open(data_dir)?.create_key(role, name).await
}

/// What a new key is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// What it may do.
    pub role: Role,
    /// Who it is for: 1–64 printable characters.
    pub name: String,
    /// Marketplace keys: the tenant it acts for (`None`: the default tenant). Other keys
    /// have none.
    pub tenant: Option<String>,
    /// Seller keys: the label of the enrollment tokens its boxes were enrolled with
    /// (required). Other keys have none.
    pub seller: Option<String>,
    /// When it stops working (`None`: never).
    pub expires_at: Option<OffsetDateTime>,
}

impl KeySpec {
    /// What is wrong with this spec at `now`, in a sentence, if anything.
    pub fn problem(&self, now: OffsetDateTime) -> Option<String> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Some("name must be 1–64 printable characters".into());
        }
        match (&self.tenant, self.role) {
            (Some(_), Role::Admin) => {
                return Some("admin keys have no tenant: they see every tenant".into())
            }
            (Some(_), Role::Seller) => {
                return Some("seller keys have no tenant: they see their own boxes".into())
            }
            (Some(t), Role::Marketplace) if !valid_tenant(t) => {
                return Some("tenant must be 1–64 characters of [a-z0-9._-]".into())
            }
            _ => {}
        }
        match (&self.seller, self.role) {
            (None, Role::Seller) => {
                return Some(
                    "a seller key needs `seller`: the label of its enrollment tokens".into(),
                )
            }
            (Some(label), Role::Seller) if !valid_label(label) => {
                return Some("seller must be 1–128 printable characters".into())
            }
            (Some(_), Role::Admin | Role::Marketplace) => {
                return Some("only seller keys have a seller label".into())
            }
            _ => {}
        }
        if self.expires_at.is_some_and(|at| at <= now) {
            return Some("expires_at must be in the future".into());
        }
        None
    }
}

impl Store {
    /// Creates a key for `role` named `name` (default tenant, no expiry); returns the key.
    pub async fn create_key(&self, role: Role, name: &str) -> Result<String, StoreError> {
        let spec = KeySpec {
            role,
            name: name.to_string(),
            tenant: None,
            seller: None,
            expires_at: None,
        };
        Ok(self.issue_key(&spec, "operator").await?.0)
    }

    /// Creates a key for a checked `spec`, audited as done by `actor`; returns the key
    /// (it is not stored) and what is stored of it.
    pub async fn issue_key(
        &self,
        spec: &KeySpec,
        actor: &str,
    ) -> Result<(String, KeyInfo), StoreError> {
        let key = generate_key();
        let record = ApiKeyRecord {
            role: spec.role,
            name: spec.name.trim().to_string(),
            created_at: now(),
            tenant: spec.tenant.clone(),
            seller: spec.seller.as_deref().map(|s| s.trim().to_string()),
            expires_at: spec.expires_at,
        };
        let key_id = self.insert_api_key(&key, &record).await?;
        self.audit(
            actor,
            AuditAction::KeyCreated,
            format!("key:{}", record.name),
            serde_json::json!({"role": spec.role.as_str(), "fingerprint": fingerprint(&key),
                               "key_id": key_id, "tenant": record.tenant(),
                               "seller": record.seller()}),
        )
        .await;
        self.durable().await?;
        let info = KeyInfo {
            key_id,
            record,
            last_used_at: None,
        };
        Ok((key, info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn created_keys_resolve_to_their_role_and_only_the_hash_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let key = create_key(dir.path(), Role::Marketplace, "shop")
            .await
            .unwrap();
        assert!(key.starts_with(KEY_PREFIX) && key.len() > 40);
        let store = Store::open(dir.path()).unwrap();
        let found = store.find_api_key(&key, now()).await.unwrap().unwrap();
        let rec = &found.record;
        assert_eq!((rec.role, rec.name.as_str()), (Role::Marketplace, "shop"));
        assert_eq!(rec.tenant(), Some(crate::store::DEFAULT_TENANT));
        assert_eq!(found.key_id, format!("key_{}", fingerprint(&key)));
        assert!(store
            .find_api_key("fh_wrong", now())
            .await
            .unwrap()
            .is_none());
        drop(store);
        let body = key.trim_start_matches(KEY_PREFIX).to_string();
        for entry in std::fs::read_dir(dir.path().join("db")).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&body),
                "raw key found on disk"
            );
        }
    }

    #[tokio::test]
    async fn expired_and_revoked_keys_are_not_found_and_use_is_noted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t0 = now();
        let spec = KeySpec {
            role: Role::Marketplace,
            name: "shop".into(),
            tenant: Some("acme".into()),
            seller: None,
            expires_at: Some(t0 + time::Duration::hours(1)),
        };
        let (key, info) = store.issue_key(&spec, "test").await.unwrap();
        assert_eq!(info.record.tenant(), Some("acme"));
        assert!(store.find_api_key(&key, t0).await.unwrap().is_some());
        let later = t0 + time::Duration::hours(2);
        assert!(
            store.find_api_key(&key, later).await.unwrap().is_none(),
            "expired"
        );

        store.touch_api_key(&info.key_id, t0).await.unwrap();
        let listed = store.api_keys().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            listed[0].last_used_at.map(|t| t.unix_timestamp()),
            Some(t0.unix_timestamp())
        );
        assert!(store.revoke_api_key(&info.key_id).await.unwrap().is_some());
        assert!(
            store.find_api_key(&key, t0).await.unwrap().is_none(),
            "revoked"
        );
        assert!(store.revoke_api_key(&info.key_id).await.unwrap().is_none());
    }

    #[test]
    fn specs_are_checked() {
        let t0 = now();
        let ok = KeySpec {
            role: Role::Marketplace,
            name: "shop".into(),
            tenant: Some("acme-2".into()),
            seller: None,
            expires_at: None,
        };
        assert_eq!(ok.problem(t0), None);
        let seller = KeySpec {
            role: Role::Seller,
            tenant: None,
            seller: Some("seller-berlin".into()),
            ..ok.clone()
        };
        assert_eq!(seller.problem(t0), None);
        for wrong in [
            KeySpec {
                seller: None,
                ..seller.clone()
            },
            KeySpec {
                seller: Some(" ".into()),
                ..seller.clone()
            },
            KeySpec {
                tenant: Some("acme".into()),
                ..seller.clone()
            },
            KeySpec {
                seller: Some("x".into()),
                ..ok.clone()
            },
        ] {
            assert!(wrong.problem(t0).is_some(), "{wrong:?}");
        }
        let admin_tenant = KeySpec {
            role: Role::Admin,
            ..ok.clone()
        };
        assert!(admin_tenant.problem(t0).is_some());
        let bad_tenant = KeySpec {
            tenant: Some("Acme Inc".into()),
            ..ok.clone()
        };
        assert!(bad_tenant.problem(t0).is_some());
        let past = KeySpec {
            expires_at: Some(t0),
            ..ok.clone()
        };
        assert!(past.problem(t0).is_some());
        let nameless = KeySpec {
            name: " ".into(),
            ..ok
        };
        assert!(nameless.problem(t0).is_some());
    }

    #[tokio::test]
    async fn offline_creation_refuses_while_the_store_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let _running = Store::open(dir.path()).unwrap();
        let err = create_key(dir.path(), Role::Admin, "ops")
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("the control plane is running: stop it first"),
            "{err}"
        );
    }
}
