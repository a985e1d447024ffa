//! Buyer credentials: generation from the system CSPRNG and sealing at rest.
//!
//! Logins are `fh` + 10 lowercase alphanumerics; passwords 24 alphanumerics (≈143 bits).
//! Passwords are stored sealed with AES-256-GCM under a key kept in
//! `<data_dir>/credentials.key` (created on first start, mode 0600), bound to the
//! allocation id as associated data so a sealed value cannot be moved to another record.
//! Each seal draws a fresh random 96-bit nonce from the CSPRNG (stored in front of the
//! ciphertext); random nonces stay safe far beyond the 2^32 seals per key this could reach.

use crate::ids::random_bytes;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use farmhand_protocol::Secret;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use std::fmt;
use std::path::Path;

const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Length of generated passwords.
pub const PASSWORD_LEN: usize = 24;
/// The key file in the data directory.
pub const KEY_FILE: &str = "credentials.key";
/// The previous key, present only while a key rotation is unfinished (see `rekey`).
pub const PREVIOUS_KEY_FILE: &str = "credentials.key.old";

/// A new buyer login.
pub fn generate_login() -> String {
    format!("fh{}", random_string(LOWER_ALNUM, 10))
}

/// A new buyer password.
pub fn generate_password() -> Secret {
    Secret::new(random_string(ALNUM, PASSWORD_LEN))
}

/// `len` characters drawn uniformly from `alphabet` (rejection sampling avoids modulo bias).
fn random_string(alphabet: &[u8], len: usize) -> String {
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in random_bytes::<64>() {
            if usize::from(b) < limit && out.len() < len {
                out.push(char::from(alphabet[usize::from(b) % alphabet.len()]));
            }
        }
    }
    out
}

/// Why the credential key or a sealed value could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The key file could not be read or created.
    #[error("credential key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file does not hold 32 bytes.
    #[error("credential key file {0} must hold exactly 32 bytes")]
    BadKey(String),
    /// A sealed value does not open with this key.
    #[error("a sealed credential cannot be opened (wrong key file or corrupt record)")]
    Unseal,
}

/// Seals and opens buyer passwords.
pub struct CredentialCipher {
    key: LessSafeKey,
    /// Opens values sealed before an unfinished key rotation.
    previous: Option<LessSafeKey>,
}

impl fmt::Debug for CredentialCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialCipher(***)")
    }
}

impl CredentialCipher {
    /// Loads `<data_dir>/credentials.key`, creating it (0600) on first use, and the
    /// previous key if a rotation was interrupted.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, CredentialError> {
        let path = data_dir.join(KEY_FILE);
        if !path.exists() {
            write_private(&path, &random_bytes::<32>()).map_err(|source| {
                CredentialError::KeyFile {
                    path: path.display().to_string(),
                    source,
                }
            })?;
        }
        let previous = data_dir.join(PREVIOUS_KEY_FILE);
        Ok(CredentialCipher {
            key: read_key(&path)?,
            previous: previous.exists().then(|| read_key(&previous)).transpose()?,
        })
    }

    /// Seals `secret` for allocation `context`: base64(nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, secret: &Secret, context: &str) -> String {
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let mut data = secret.expose().as_bytes().to_vec();
        let nonce = Nonce::assume_unique_for_key(nonce_bytes);
        // AES-GCM sealing only fails for inputs over ~64 GiB; a password is never that.
        if self
            .key
            .seal_in_place_append_tag(nonce, Aad::from(context.as_bytes()), &mut data)
            .is_err()
        {
            data.clear();
        }
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&data);
        STANDARD.encode(out)
    }

    /// Opens a value sealed by [`CredentialCipher::seal`] for the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Secret, CredentialError> {
        let raw = STANDARD
            .decode(sealed)
            .map_err(|_| CredentialError::Unseal)?;
        if raw.len() < NONCE_LEN {
            return Err(CredentialError::Unseal);
        }
        let (nonce_bytes, rest) = raw.split_at(NONCE_LEN);
        // The current key first; the previous one only during an unfinished rotation.
        for key in std::iter::once(&self.key).chain(&self.previous) {
            let nonce = Nonce::try_assume_unique_for_key(nonce_bytes)
                .map_err(|_| CredentialError::Unseal)?;
            let mut data = rest.to_vec();
            if let Ok(plain) = key.open_in_place(nonce, Aad::from(context.as_bytes()), &mut data) {
                let text = std::str::from_utf8(plain).map_err(|_| CredentialError::Unseal)?;
                return Ok(Secret::new(text));
            }
        }
        Err(CredentialError::Unseal)
    }
}

fn read_key(path: &Path) -> Result<LessSafeKey, CredentialError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| CredentialError::KeyFile {
        path: shown.clone(),
        source,
    })?;
    let unbound =
        UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| CredentialError::BadKey(shown))?;
    Ok(LessSafeKey::new(unbound))
}

/// Writes a new file readable by its owner only (refuses to overwrite).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_credentials_have_the_promised_shape() {
        let login = generate_login();
        assert!(
            login.starts_with("fh")
                && login.len() == 12
                && login.chars().all(|c| c.is_ascii_alphanumeric())
        );
        let pw = generate_password();
        assert!(pw.expose().len() >= 20 && pw.expose().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(pw.expose(), generate_password().expose());
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let cipher = CredentialCipher::load_or_create(dir.path()).unwrap();
        let secret = Secret::new("same-password");
        let nonces: std::collections::HashSet<Vec<u8>> = (0..1000)
            .map(|_| STANDARD.decode(cipher.seal(&secret, "al_1")).unwrap()[..NONCE_LEN].to_vec())
            .collect();
        assert_eq!(nonces.len(), 1000, "a nonce was reused");
    }

    #[test]
    fn sealed_passwords_open_only_with_the_same_key_and_context() {
        let dir = tempfile::tempdir().unwrap();
        let cipher = CredentialCipher::load_or_create(dir.path()).unwrap();
        let sealed = cipher.seal(&Secret::new("canary-password-123"), "al_1");
        assert!(!sealed.contains("canary"));
        assert_eq!(
            cipher.open(&sealed, "al_1").unwrap().expose(),
            "canary-password-123"
        );
        assert!(cipher.open(&sealed, "al_2").is_err());
        let again = CredentialCipher::load_or_create(dir.path()).unwrap();
        assert_eq!(
            again.open(&sealed, "al_1").unwrap().expose(),
            "canary-password-123"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
