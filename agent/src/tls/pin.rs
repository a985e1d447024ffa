//! Certificate pinning: `pin_sha256` parsing and the verifier that accepts the control
//! plane only when the SHA-256 of its leaf certificate's DER matches the pin.
//!
//! Chosen semantics (docs/security.md): with a pin and no `ca_file`, the pin alone decides
//! — the chain, its expiry and the names in it are not checked, which is what makes a
//! self-signed certificate usable. With a pin and a `ca_file`, both must hold. The TLS
//! handshake signatures are always verified, so the peer must hold the pinned key.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use std::fmt;
use std::sync::Arc;

/// A SHA-256 certificate fingerprint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Pin([u8; 32]);

impl Pin {
    /// Parses 64 hex digits, optionally prefixed with `sha256:` and/or separated by colons
    /// (the forms `openssl x509 -fingerprint` and `farmhand-control tls self-signed` print).
    pub fn parse(text: &str) -> Result<Pin, String> {
        let trimmed = text.trim();
        let body = trimmed
            .strip_prefix("sha256:")
            .or_else(|| trimmed.strip_prefix("SHA256:"))
            .unwrap_or(trimmed);
        let hex: String = body.chars().filter(|c| *c != ':').collect();
        let wrong = || {
            format!("{text:?} is not a SHA-256 fingerprint (64 hex digits, optionally \"sha256:\"-prefixed, colons allowed)")
        };
        if hex.len() != 64 {
            return Err(wrong());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(wrong)?, 16)
                .map_err(|_| wrong())?;
        }
        Ok(Pin(bytes))
    }

    /// The fingerprint of a certificate's DER.
    pub fn of(der: &[u8]) -> Pin {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Pin(bytes)
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form_and_prints_the_canonical_one() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        for form in [
            hex.clone(),
            format!("sha256:{hex}"),
            colons.clone(),
            format!("SHA256:{colons}"),
            format!("  {hex}\n"),
        ] {
            let pin = Pin::parse(&form).unwrap_or_else(|e| panic!("{form}: {e}"));
            assert_eq!(pin.to_string(), format!("sha256:{hex}"));
        }
        for bad in [
            "",
            "sha256:",
            &hex[..62],
            &format!("{hex}00"),
            &"zz".repeat(32),
        ] {
            assert!(Pin::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(Pin::of(b"x"), Pin::of(b"x"));
        assert_ne!(Pin::of(b"x"), Pin::of(b"y"));
    }
}
