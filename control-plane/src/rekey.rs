//! Rotating the credential key (`farmhand-control credentials rotate-key`), offline like
//! `keys create` (sled's lock refuses while the plane runs):
//!
//! 1. the current key is copied to `credentials.key.old` (0600);
//! 2. a new random key replaces `credentials.key` (written beside it, then renamed);
//! 3. every stored buyer password and webhook signing secret is opened (either key works)
//!    and sealed with the new key;
//! 4. the store is flushed and `credentials.key.old` deleted.
//!
//! A crash anywhere leaves every record readable — the cipher tries the old key while its
//! file exists — and running the command again resumes at step 3 (step 1 is skipped while
//! `credentials.key.old` exists, so the old key is never overwritten).

use crate::credentials::{
    write_private, CredentialCipher, CredentialError, KEY_FILE, PREVIOUS_KEY_FILE,
};
use crate::ids::random_bytes;
use crate::store::{AuditAction, SledStore, StoreError};
use std::path::Path;

/// Why the key could not be rotated.
#[derive(Debug, thiserror::Error)]
pub enum RekeyError {
    /// The store could not be opened (e.g. the plane is running) or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key file or a sealed record could not be used.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// No sled database in the data directory: nothing sealed here to re-seal (with the
    /// PostgreSQL backend the sealed values live in the database).
    #[error("no sled database in {0}: rotate-key re-seals a sled store; with [store] backend = \"postgres\" it is not supported yet (the key stays as it is)")]
    NoDatabase(String),
    /// A key file could not be written, renamed or removed.
    #[error("{what}: {source}")]
    Io {
        /// The step that failed.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> RekeyError + '_ {
    move |source| RekeyError::Io {
        what: what.to_string(),
        source,
    }
}

/// Rotates the key of `data_dir`; returns how many passwords were sealed again.
pub fn rotate_credential_key(data_dir: &Path) -> Result<usize, RekeyError> {
    // A new key over a database this does not see would make its sealed values unreadable.
    if !data_dir.join("db").is_dir() {
        return Err(RekeyError::NoDatabase(data_dir.display().to_string()));
    }
    let store = SledStore::open(data_dir)?;
    let current = data_dir.join(KEY_FILE);
    let previous = data_dir.join(PREVIOUS_KEY_FILE);
    if !previous.exists() {
        let old = std::fs::read(&current).map_err(io("reading credentials.key"))?;
        write_private(&previous, &old).map_err(io("saving credentials.key.old"))?;
        let staged = data_dir.join("credentials.key.new");
        let _ = std::fs::remove_file(&staged);
        write_private(&staged, &random_bytes::<32>()).map_err(io("writing the new key"))?;
        std::fs::rename(&staged, &current).map_err(io("installing the new key"))?;
    }
    let cipher = CredentialCipher::load_or_create(data_dir)?;
    let mut resealed = 0;
    for mut record in store.allocations_where(|a| a.password_sealed.is_some())? {
        let Some(sealed) = &record.password_sealed else {
            continue;
        };
        let secret = cipher.open(sealed, &record.allocation_id)?;
        record.password_sealed = Some(cipher.seal(&secret, &record.allocation_id));
        store.put_allocation(&record)?;
        resealed += 1;
    }
    // Webhook signing secrets are sealed with the same key (bound to the webhook id).
    for mut endpoint in store.webhook_endpoints()? {
        let context = crate::webhooks::secret_context(&endpoint.webhook_id);
        let secret = cipher.open(&endpoint.secret_sealed, &context)?;
        endpoint.secret_sealed = cipher.seal(&secret, &context);
        store.put_webhook_endpoint(&endpoint)?;
        resealed += 1;
    }
    store.flush()?;
    std::fs::remove_file(&previous).map_err(io("removing credentials.key.old"))?;
    store.audit(
        "operator",
        AuditAction::CredentialKeyRotated,
        "key:credentials",
        serde_json::json!({"records_resealed": resealed}),
    );
    store.flush()?;
    Ok(resealed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use farmhand_protocol::Secret;

    #[test]
    fn an_interrupted_rotation_keeps_old_values_readable() {
        let dir = tempfile::tempdir().unwrap();
        let cipher = CredentialCipher::load_or_create(dir.path()).unwrap();
        let old_sealed = cipher.seal(&Secret::new("buyer-pw"), "al_1");
        let old_key = std::fs::read(dir.path().join(KEY_FILE)).unwrap();

        // An interrupted rotation: the old key saved, a new one installed, nothing resealed.
        write_private(&dir.path().join(PREVIOUS_KEY_FILE), &old_key).unwrap();
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        let during = CredentialCipher::load_or_create(dir.path()).unwrap();
        assert_eq!(
            during.open(&old_sealed, "al_1").unwrap().expose(),
            "buyer-pw"
        );
        std::fs::remove_file(dir.path().join(PREVIOUS_KEY_FILE)).unwrap();
        let after = CredentialCipher::load_or_create(dir.path()).unwrap();
        assert!(
            after.open(&old_sealed, "al_1").is_err(),
            "the new key alone cannot open old values"
        );
        // Without a sled database here (the PostgreSQL backend) nothing is touched.
        let key = std::fs::read(dir.path().join(KEY_FILE)).unwrap();
        let refused = rotate_credential_key(dir.path()).unwrap_err();
        assert!(matches!(refused, RekeyError::NoDatabase(_)), "{refused}");
        assert_eq!(std::fs::read(dir.path().join(KEY_FILE)).unwrap(), key);
        drop(SledStore::open(dir.path()).unwrap());
        assert!(
            rotate_credential_key(dir.path()).is_ok(),
            "an empty store rotates"
        );
        assert!(!dir.path().join(PREVIOUS_KEY_FILE).exists());
    }
}
