//! HTTPS/WSS for the control plane: loading the certificate and key named in `[tls]` into a
//! rustls server config (ring provider, HTTP/1.1 only — agent WebSockets are HTTP/1.1
//! upgrades; `http_server` accepts and serves over it), replacing the served certificate
//! while running (`reload`, on SIGHUP), and self-signed certificates for a first run
//! (`self_signed`); and the roots the plane trusts as a client (`roots`).

mod reload;
mod roots;
pub mod self_signed;
mod validity;

pub use reload::{CertSummary, TlsReloader};
pub use roots::client_roots;
pub use self_signed::{fingerprint, write_self_signed, SelfSignedFiles};

use crate::config::TlsConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::InconsistentKeys;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("TLS: cannot use {}: {detail}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The private key is not the certificate's.
    #[error(
        "TLS: the certificate and key are not usable together: the private key in {} does not match the certificate in {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the configuration.
    #[error("TLS: the certificate and key are not usable together: {0}")]
    Rejected(#[from] rustls::Error),
    /// Generating a certificate failed.
    #[error("TLS: cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing a generated file failed.
    #[error("TLS: cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A loaded server certificate: the rustls config, the leaf's fingerprint (for logs) and
/// the reloader that can replace the certificate while serving.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// What the acceptor uses; its certificate comes from `reloader`.
    pub config: Arc<rustls::ServerConfig>,
    /// `sha256:HEX` of the leaf certificate loaded at start, what agents pin (after a
    /// reload, `reloader.current()` has the one served).
    pub fingerprint: String,
    /// How long a client may take for the handshake.
    pub handshake_timeout: std::time::Duration,
    /// Re-reads the files on demand (SIGHUP).
    pub reloader: TlsReloader,
}

impl ServerTls {
    /// Reads `cert_file` and `key_file` and builds the server config.
    pub fn load(tls: &TlsConfig) -> Result<ServerTls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let first = load_certified(&tls.cert_file, &tls.key_file, &provider)?;
        let reloader = TlsReloader::new(
            tls.cert_file.clone(),
            tls.key_file.clone(),
            provider.clone(),
            first,
        );
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(reloader.resolver());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            fingerprint: reloader.current().fingerprint,
            handshake_timeout: tls.handshake_timeout(),
            reloader,
        })
    }
}

/// Reads and checks a certificate chain and its key: both files PEM, the key a type the
/// provider can sign with, the key the leaf certificate's. Errors name the file at fault.
fn load_certified(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let certs = read_certs(cert_file)?;
    let key = read_key(key_file)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::File {
            path: key_file.to_path_buf(),
            detail: format!("unusable private key: {e}"),
        })?;
    let certified = CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        // Unknown: the key cannot tell its public half; the handshake will show.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: cert_file.to_path_buf(),
            key: key_file.to_path_buf(),
        }),
        Err(e) => Err(TlsError::File {
            path: cert_file.to_path_buf(),
            detail: format!("not a usable X.509 certificate: {e}"),
        }),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |detail: String| TlsError::File {
        path: path.to_path_buf(),
        detail,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    // The error names the file only: a PEM parser message could quote key material.
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        detail: match e {
            rustls::pki_types::pem::Error::Io(io) => io.to_string(),
            rustls::pki_types::pem::Error::NoItemsFound => "no PEM private key in the file".into(),
            _ => "not a PEM private key".into(),
        },
    })
}
