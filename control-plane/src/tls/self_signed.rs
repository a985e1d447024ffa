//! `farmhand-control tls self-signed`: a certificate and key for a first run, and the
//! SHA-256 fingerprint agents pin (`pin_sha256`) instead of trusting a CA.
//!
//! Files are created, never overwritten (a real key must not be clobbered by a rerun):
//! `cert.pem` 0644, `key.pem` 0600.

use super::TlsError;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Names put in the certificate when none are given.
pub const DEFAULT_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];
/// How long a generated certificate is valid, days (rotate before; see docs/security.md).
const VALIDITY_DAYS: i64 = 3650;

/// What `write_self_signed` created.
#[derive(Debug, Clone)]
pub struct SelfSignedFiles {
    /// The certificate, mode 0644.
    pub cert_file: PathBuf,
    /// The private key, mode 0600.
    pub key_file: PathBuf,
    /// `sha256:HEX` of the certificate's DER.
    pub fingerprint: String,
}

/// `sha256:` and the lower-case hex SHA-256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Generates a self-signed certificate for `names` (DNS names or IP addresses; empty = the
/// defaults) and writes `cert.pem` and `key.pem` into `dir`, creating it if needed.
pub fn write_self_signed(dir: &Path, names: &[String]) -> Result<SelfSignedFiles, TlsError> {
    let names: Vec<String> = if names.is_empty() {
        DEFAULT_NAMES.iter().map(|n| n.to_string()).collect()
    } else {
        names.to_vec()
    };
    let mut params = CertificateParams::new(names)?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, "farmhand-control (self-signed)");
    params.distinguished_name = subject;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(VALIDITY_DAYS);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let cert_file = dir.join("cert.pem");
    let key_file = dir.join("key.pem");
    // Key first: if it cannot be created nothing is left half-written.
    create_new(&key_file, 0o600, key.serialize_pem().as_bytes())?;
    create_new(&cert_file, 0o644, cert.pem().as_bytes())?;
    Ok(SelfSignedFiles {
        cert_file,
        key_file,
        fingerprint: fingerprint(cert.der()),
    })
}

fn create_new(path: &Path, mode: u32, contents: &[u8]) -> Result<(), TlsError> {
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        file.write_all(contents)?;
        file.sync_all()
    };
    write().map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_a_loadable_pair_with_modes_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tls");
        let files = write_self_signed(&out, &[]).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&files.cert_file), 0o644);
        assert_eq!(mode(&files.key_file), 0o600);
        assert!(files.fingerprint.starts_with("sha256:"));
        assert_eq!(files.fingerprint.len(), 7 + 64);
        let loaded = super::super::ServerTls::load(&crate::config::TlsConfig::new(
            &files.cert_file,
            &files.key_file,
        ))
        .unwrap();
        assert_eq!(loaded.fingerprint, files.fingerprint);
        let again = write_self_signed(&out, &["example.com".into()]).unwrap_err();
        assert!(again.to_string().contains("key.pem"), "{again}");
    }

    #[test]
    fn a_mismatched_key_or_missing_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_self_signed(&dir.path().join("a"), &[]).unwrap();
        let b = write_self_signed(&dir.path().join("b"), &[]).unwrap();
        let load = |cert: &Path, key: &Path| {
            super::super::ServerTls::load(&crate::config::TlsConfig::new(cert, key))
                .unwrap_err()
                .to_string()
        };
        let missing = load(&dir.path().join("nope.pem"), &a.key_file);
        assert!(missing.contains("nope.pem"), "{missing}");
        let swapped = load(&a.key_file, &a.cert_file);
        assert!(swapped.contains("no PEM certificate"), "{swapped}");
        let mismatched = load(&a.cert_file, &b.key_file);
        assert!(mismatched.contains("not usable together"), "{mismatched}");
    }
}
