//! The challenge–response transcript and its verification.
//!
//! The agent signs `farmhand-auth-v1 \0 version(u32 BE) agent_id \0 nonce` with its Ed25519
//! key. Binding the version and agent id means a signature cannot be replayed for another
//! agent or downgraded to another version; the nonce is fresh per connection.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::signature::{UnparsedPublicKey, ED25519};

/// Length of the plane's nonce, in bytes.
pub const NONCE_LEN: usize = 32;
/// Length of an Ed25519 public key, in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;

const DOMAIN: &[u8] = b"farmhand-auth-v1";

/// The bytes the agent signs.
pub fn auth_transcript(version: u32, agent_id: &str, nonce: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOMAIN.len() + 6 + agent_id.len() + nonce.len());
    out.extend_from_slice(DOMAIN);
    out.push(0);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(agent_id.as_bytes());
    out.push(0);
    out.extend_from_slice(nonce);
    out
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The signature was not valid base64.
    #[error("signature is not valid base64")]
    Encoding,
    /// The stored public key has the wrong length.
    #[error("public key must be {PUBLIC_KEY_LEN} bytes")]
    BadKey,
    /// The signature does not verify.
    #[error("signature does not verify")]
    Invalid,
}

/// Verifies `signature_b64` over the transcript with a raw 32-byte Ed25519 public key.
pub fn verify_auth(
    public_key: &[u8],
    version: u32,
    agent_id: &str,
    nonce: &[u8],
    signature_b64: &str,
) -> Result<(), AuthError> {
    if public_key.len() != PUBLIC_KEY_LEN {
        return Err(AuthError::BadKey);
    }
    let sig = STANDARD
        .decode(signature_b64)
        .map_err(|_| AuthError::Encoding)?;
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&auth_transcript(version, agent_id, nonce), &sig)
        .map_err(|_| AuthError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn keypair() -> Option<Ed25519KeyPair> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).ok()?;
        Ed25519KeyPair::from_pkcs8(doc.as_ref()).ok()
    }

    #[test]
    fn signature_is_bound_to_agent_version_and_nonce() {
        let Some(kp) = keypair() else {
            panic!("keygen")
        };
        let pk = kp.public_key().as_ref().to_vec();
        let nonce = [7u8; NONCE_LEN];
        let sig = STANDARD.encode(kp.sign(&auth_transcript(1, "agent-a", &nonce)).as_ref());
        assert_eq!(verify_auth(&pk, 1, "agent-a", &nonce, &sig), Ok(()));
        assert_eq!(
            verify_auth(&pk, 2, "agent-a", &nonce, &sig),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            verify_auth(&pk, 1, "agent-b", &nonce, &sig),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            verify_auth(&pk, 1, "agent-a", &[8u8; NONCE_LEN], &sig),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            verify_auth(&pk, 1, "agent-a", &nonce, "%%"),
            Err(AuthError::Encoding)
        );
        assert_eq!(
            verify_auth(&pk[..5], 1, "agent-a", &nonce, &sig),
            Err(AuthError::BadKey)
        );
    }
}
