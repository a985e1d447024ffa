//! How the agent trusts the control plane over TLS, for both the WebSocket (`wss://`) and
//! enrollment (HTTPS): system roots by default, a CA bundle (`ca_file`) instead of them, or
//! a pinned leaf fingerprint (`pin_sha256`, see `pin` for how it combines with a CA).
//!
//! One [`Trust`] is built at start and used for every connection. A refused certificate
//! becomes one clear sentence ("TLS: certificate for X is not trusted by the configured CA
//! (…)", "TLS: pin mismatch for X: expected …, got …") that the reconnect loop logs.

pub mod pin;

pub use pin::PinMismatch;

use crate::config::pin::Pin;
use crate::config::ControlPlaneConfig;
use pin::PinVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use std::error::Error as StdError;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Why the trust settings cannot be used (a configuration problem: the agent stops).
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// `ca_file` is unreadable or holds no certificate.
    #[error("cannot use control_plane.ca_file {path}: {detail}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// No `ca_file`, no pin, and the system has no root certificates.
    #[error("no system root certificates found ({detail}); install the CA certificates package or set control_plane.ca_file or control_plane.pin_sha256")]
    NoSystemRoots {
        /// What the loader reported.
        detail: String,
    },
    /// rustls refused the configuration.
    #[error("TLS setup failed: {0}")]
    Rustls(String),
}

/// The client-side TLS settings for the control plane.
#[derive(Clone)]
pub struct Trust {
    config: Arc<ClientConfig>,
    anchor: String,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust")
            .field("anchor", &self.anchor)
            .finish()
    }
}

impl Trust {
    /// The trust for `plane`'s settings (`ca_file`, `pin_sha256`; system roots otherwise).
    pub fn for_plane(plane: &ControlPlaneConfig) -> Result<Trust, TrustError> {
        Trust::new(plane.ca_file.as_deref(), plane.pin_sha256)
    }

    /// Trust anchored in `ca_file` (or the system roots) and/or a pinned leaf.
    pub fn new(ca_file: Option<&Path>, pin: Option<Pin>) -> Result<Trust, TrustError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = match (ca_file, pin) {
            // A pin alone decides: a self-signed certificate has no chain to check.
            (None, Some(_)) => None,
            (Some(path), _) => Some(chain_verifier(ca_roots(path)?, &provider)?),
            (None, None) => Some(chain_verifier(system_roots()?, &provider)?),
        };
        let verifier: Arc<dyn ServerCertVerifier> = match (pin, chain) {
            (Some(pin), chain) => Arc::new(PinVerifier {
                pin,
                chain,
                algorithms: provider.signature_verification_algorithms,
            }),
            (None, Some(chain)) => chain,
            (None, None) => return Err(TrustError::Rustls("no verifier".into())),
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TrustError::Rustls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let anchor = match (ca_file, pin) {
            (Some(path), Some(pin)) => format!("CA file {} and pin {pin}", path.display()),
            (Some(path), None) => format!("CA file {}", path.display()),
            (None, Some(pin)) => format!("pin {pin}"),
            (None, None) => "system roots".into(),
        };
        Ok(Trust {
            config: Arc::new(config),
            anchor,
        })
    }

    /// The rustls client config (also handed to reqwest for enrollment).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// What the server is checked against, for messages: "system roots", "CA file …", "pin …".
    pub fn anchor(&self) -> &str {
        &self.anchor
    }

    /// Runs the TLS handshake with `host` over `tcp`; a failure is described in one sentence.
    pub async fn handshake(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, String> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| format!("TLS: {host:?} is not a valid server name"))?;
        TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| {
                self.describe(host, &e)
                    .unwrap_or_else(|| format!("TLS handshake with {host} failed: {e}"))
            })
    }

    /// The sentence for a certificate problem anywhere in `error`'s chain, if there is one.
    pub fn describe(&self, host: &str, error: &(dyn StdError + 'static)) -> Option<String> {
        let rustls_error = find_rustls_error(error)?;
        Some(match rustls_error {
            rustls::Error::InvalidCertificate(problem) => self.describe_certificate(host, problem),
            other => format!("TLS handshake with {host} failed: {other}"),
        })
    }

    fn describe_certificate(&self, host: &str, problem: &CertificateError) -> String {
        let anchor = &self.anchor;
        match problem {
            CertificateError::UnknownIssuer => {
                format!(
                    "TLS: certificate for {host} is not trusted by the configured CA ({anchor})"
                )
            }
            CertificateError::Other(other) => match other.0.downcast_ref::<PinMismatch>() {
                Some(m) => format!(
                    "TLS: pin mismatch for {host}: expected {}, got {}",
                    m.expected, m.got
                ),
                None => format!("TLS: certificate for {host} refused: {other}"),
            },
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("TLS: the certificate presented by {host} is not valid for that name")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("TLS: certificate for {host} has expired")
            }
            other => format!("TLS: certificate for {host} refused: {other}"),
        }
    }
}

/// Finds a rustls error in a chain; `io::Error` hides its inner error from `source()`
/// (and clients nest them), so each link is also unwrapped through `get_ref`.
fn find_rustls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = unwrap_io(e) {
            return Some(found);
        }
        current = e.source();
    }
    None
}

fn unwrap_io<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    if let Some(found) = error.downcast_ref::<rustls::Error>() {
        return Some(found);
    }
    let inner = error.downcast_ref::<std::io::Error>()?.get_ref()?;
    unwrap_io(inner)
}

fn chain_verifier(
    roots: RootCertStore,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, TrustError> {
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TrustError::Rustls(e.to_string()))?;
    Ok(verifier)
}

fn ca_roots(path: &Path) -> Result<RootCertStore, TrustError> {
    let fail = |detail: String| TrustError::CaFile {
        path: path.display().to_string(),
        detail,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(fail("no usable PEM certificate in the file".into()));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TrustError> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(loaded.certs);
    if roots.is_empty() {
        let detail = match loaded.errors.first() {
            Some(e) => e.to_string(),
            None => "the system store is empty".into(),
        };
        return Err(TrustError::NoSystemRoots { detail });
    }
    Ok(roots)
}
