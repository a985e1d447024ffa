//! The agent's identity on disk: an Ed25519 key pair (PKCS#8, `agent.key`, mode 0600) and
//! `agent.json` (`agent_id`, `server`) in a state directory created with mode 0700.
//!
//! Like ssh, loading refuses a key file that group or others can read.

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// File name of the private key inside the state directory.
pub const KEY_FILE: &str = "agent.key";
/// File name of the identity document inside the state directory.
pub const IDENTITY_FILE: &str = "agent.json";

/// Why the identity could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The agent was never enrolled (no key or no agent.json).
    #[error("not enrolled: {} is missing; run `farmhand-agent enroll --server URL --token TOKEN` first", path.display())]
    NotEnrolled {
        /// The missing file.
        path: PathBuf,
    },
    /// The key file is readable by group or others.
    #[error("permissions {mode:04o} for {} are too open: the private key must be readable only by its owner (chmod 600 {})", path.display(), path.display())]
    KeyTooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file has invalid contents.
    #[error("{}: {problem}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Key generation failed (no system randomness).
    #[error("cannot generate a key pair: {0}")]
    KeyGen(String),
}

/// What `agent.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityFile {
    /// The id the plane assigned at enrollment.
    pub agent_id: String,
    /// The plane the agent enrolled with (informational).
    pub server: String,
}

/// A loaded identity: who the agent is and the key that proves it.
pub struct Identity {
    /// The id the plane assigned.
    pub agent_id: String,
    /// The plane the agent enrolled with.
    pub server: String,
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("agent_id", &self.agent_id)
            .field("server", &self.server)
            .finish()
    }
}

impl Identity {
    /// Loads the key and `agent.json` from `state_dir`, refusing a key others can read.
    pub fn load(state_dir: &Path) -> Result<Identity, IdentityError> {
        let key_path = state_dir.join(KEY_FILE);
        let json_path = state_dir.join(IDENTITY_FILE);
        let key = load_key(&key_path)?;
        let text = read_existing(&json_path)?;
        let file: IdentityFile =
            serde_json::from_slice(&text).map_err(|e| IdentityError::Corrupt {
                path: json_path.clone(),
                problem: e.to_string(),
            })?;
        Ok(Identity {
            agent_id: file.agent_id,
            server: file.server,
            key,
        })
    }

    /// Signs `message` (the auth transcript) with the agent key.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message).as_ref().to_vec()
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }
}

/// Creates `state_dir` (mode 0700) if it does not exist.
pub fn ensure_state_dir(state_dir: &Path) -> Result<(), IdentityError> {
    if state_dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|source| IdentityError::Io {
            path: state_dir.to_path_buf(),
            source,
        })
}

/// Generates a fresh key pair, writes it to `<state_dir>/agent.key` (0600, atomically) and
/// returns its raw public key.
pub fn generate_key(state_dir: &Path) -> Result<Vec<u8>, IdentityError> {
    ensure_state_dir(state_dir)?;
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|e| IdentityError::KeyGen(e.to_string()))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|e| IdentityError::KeyGen(e.to_string()))?;
    write_private(&state_dir.join(KEY_FILE), pkcs8.as_ref())?;
    Ok(pair.public_key().as_ref().to_vec())
}

/// Writes `agent.json` (0600, atomically).
pub fn write_identity(state_dir: &Path, file: &IdentityFile) -> Result<(), IdentityError> {
    let bytes = serde_json::to_vec_pretty(file).map_err(|e| IdentityError::Corrupt {
        path: state_dir.join(IDENTITY_FILE),
        problem: e.to_string(),
    })?;
    write_private(&state_dir.join(IDENTITY_FILE), &bytes)
}

fn load_key(path: &Path) -> Result<Ed25519KeyPair, IdentityError> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(IdentityError::NotEnrolled {
                path: path.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(IdentityError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::KeyTooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let der = read_existing(path)?;
    Ed25519KeyPair::from_pkcs8(&der).map_err(|e| IdentityError::Corrupt {
        path: path.to_path_buf(),
        problem: format!("not an Ed25519 PKCS#8 key: {e}"),
    })
}

fn read_existing(path: &Path) -> Result<Vec<u8>, IdentityError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => IdentityError::NotEnrolled {
            path: path.to_path_buf(),
        },
        _ => IdentityError::Io {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Writes `path` atomically, created 0600.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    crate::base::files::write_atomic(path, bytes, 0o600).map_err(|source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o777
    }

    fn enrolled(dir: &Path) -> Vec<u8> {
        let pk = generate_key(dir).unwrap();
        let file = IdentityFile {
            agent_id: "ag-1".into(),
            server: "http://x".into(),
        };
        write_identity(dir, &file).unwrap();
        pk
    }

    #[test]
    fn creates_private_files_in_private_dir_and_signs_verifiably() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state/nested");
        let pk = enrolled(&dir);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.join(IDENTITY_FILE)), 0o600);
        let id = Identity::load(&dir).unwrap();
        assert_eq!(id.agent_id, "ag-1");
        assert_eq!(id.public_key(), pk.as_slice());
        let transcript = farmhand_protocol::auth_transcript(1, "ag-1", &[3u8; 32]);
        let sig = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            id.sign(&transcript),
        );
        farmhand_protocol::verify_auth(&pk, 1, "ag-1", &[3u8; 32], &sig).unwrap();
        assert!(!format!("{id:?}").contains("key"));
    }

    #[test]
    fn refuses_a_key_readable_by_others() {
        let root = tempfile::tempdir().unwrap();
        enrolled(root.path());
        let key = root.path().join(KEY_FILE);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load(root.path()).unwrap_err();
        assert!(
            matches!(err, IdentityError::KeyTooOpen { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn missing_or_corrupt_files_are_clear_errors() {
        let root = tempfile::tempdir().unwrap();
        let err = Identity::load(root.path()).unwrap_err();
        assert!(
            matches!(err, IdentityError::NotEnrolled { .. }) && err.to_string().contains("enroll"),
            "{err}"
        );
        enrolled(root.path());
        std::fs::write(root.path().join(IDENTITY_FILE), "{nope").unwrap();
        assert!(matches!(
            Identity::load(root.path()),
            Err(IdentityError::Corrupt { .. })
        ));
        write_private(&root.path().join(KEY_FILE), b"garbage").unwrap();
        assert!(matches!(
            Identity::load(root.path()),
            Err(IdentityError::Corrupt { .. })
        ));
    }
}
