//! API-key issuance: a random 32-byte key shown once (`fh_` + base64url), stored only as
//! its SHA-256. `create_key` works offline on the data directory for the CLI; sled locks
//! the database, so it refuses with a clear message while the server runs.

use crate::ids::{now, random_bytes};
use crate::store::{fingerprint, ApiKeyRecord, AuditAction, Role, Store, StoreError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::path::Path;

/// Prefix of every API key, so leaked keys are easy to recognise in scanners.
pub const KEY_PREFIX: &str = "fh_";

/// Generates a new API key string.
pub fn generate_key() -> String {
    format!(
        "{KEY_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(random_bytes::<32>())
    )
}

/// Opens the store in `data_dir`, creates a key for `role`, flushes, returns the key.
/// Fails with [`StoreError::Locked`] while the control plane is running.
pub fn create_key(data_dir: &Path, role: Role, name: &str) -> Result<String, StoreError> {
    Store::open(data_dir)?.create_key(role, name)
}

impl Store {
    /// Creates a key for `role` named `name`; returns the key (it is not stored).
    pub fn create_key(&self, role: Role, name: &str) -> Result<String, StoreError> {
        let key = generate_key();
        let record = ApiKeyRecord {
            role,
            name: name.to_string(),
            created_at: now(),
        };
        self.insert_api_key(&key, &record)?;
        self.audit(
            "operator",
            AuditAction::KeyCreated,
            format!("key:{name}"),
            serde_json::json!({"role": role.as_str(), "fingerprint": fingerprint(&key)}),
        );
        self.flush()?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_keys_resolve_to_their_role_and_only_the_hash_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let key = create_key(dir.path(), Role::Marketplace, "shop").unwrap();
        assert!(key.starts_with(KEY_PREFIX) && key.len() > 40);
        let store = Store::open(dir.path()).unwrap();
        let rec = store.find_api_key(&key).unwrap().unwrap();
        assert_eq!((rec.role, rec.name.as_str()), (Role::Marketplace, "shop"));
        assert!(store.find_api_key("fh_wrong").unwrap().is_none());
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

    #[test]
    fn offline_creation_refuses_while_the_store_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let _running = Store::open(dir.path()).unwrap();
        let err = create_key(dir.path(), Role::Admin, "ops").unwrap_err();
        assert!(
            err.to_string()
                .contains("the control plane is running: stop it first"),
            "{err}"
        );
    }
}
