//! HTTPS/WSS for the control plane: loading the certificate and key named in `[tls]` into a
//! rustls server config (ring provider, HTTP/1.1 only — agent WebSockets are HTTP/1.1
//! upgrades), the accept loop that serves the app over it (`serve`), and self-signed
//! certificates for a first run (`self_signed`).

pub mod self_signed;
mod serve;

pub use self_signed::{fingerprint, write_self_signed, SelfSignedFiles};
pub use serve::serve;

use crate::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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
    /// rustls refused the certificate/key pair (e.g. the key does not match).
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

/// A loaded server certificate: the rustls config and the leaf's fingerprint (for logs).
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// What the acceptor uses.
    pub config: Arc<rustls::ServerConfig>,
    /// `sha256:HEX` of the leaf certificate's DER, what agents pin.
    pub fingerprint: String,
    /// How long a client may take for the handshake.
    pub handshake_timeout: std::time::Duration,
}

impl ServerTls {
    /// Reads `cert_file` and `key_file` and builds the server config.
    pub fn load(tls: &TlsConfig) -> Result<ServerTls, TlsError> {
        let certs = read_certs(&tls.cert_file)?;
        let key = read_key(&tls.key_file)?;
        let fingerprint = fingerprint(&certs[0]);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            fingerprint,
            handshake_timeout: tls.handshake_timeout(),
        })
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
