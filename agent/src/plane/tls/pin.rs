//! Certificate pinning: the verifier that accepts the control plane only when the SHA-256
//! of its leaf certificate's DER matches the pin (`config::pin::Pin`).
//!
//! Chosen semantics (docs/security.md): with a pin and no `ca_file`, the pin alone decides
//! — the chain, its expiry and the names in it are not checked, which is what makes a
//! self-signed certificate usable. With a pin and a `ca_file`, both must hold. The TLS
//! handshake signatures are always verified, so the peer must hold the pinned key.

use crate::config::pin::Pin;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use std::sync::Arc;

/// The leaf certificate did not match the pin; carried inside the rustls error so the
/// dialer can report both fingerprints.
#[derive(Debug, Clone, thiserror::Error)]
#[error("pin mismatch: expected {expected}, got {got}")]
pub struct PinMismatch {
    /// The configured pin.
    pub expected: Pin,
    /// The certificate the server presented.
    pub got: Pin,
}

/// Accepts the server iff its leaf matches `pin` (and `chain`, when given, accepts it too).
#[derive(Debug)]
pub(crate) struct PinVerifier {
    pub(crate) pin: Pin,
    pub(crate) chain: Option<Arc<dyn ServerCertVerifier>>,
    pub(crate) algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(chain) = &self.chain {
            chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        let got = Pin::of(end_entity.as_ref());
        if got != self.pin {
            let mismatch = PinMismatch {
                expected: self.pin,
                got,
            };
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(mismatch)),
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
