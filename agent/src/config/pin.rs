//! `pin_sha256`: the SHA-256 fingerprint of the control plane's leaf certificate, as the
//! config writes it. How a pin is checked during the TLS handshake is `tls::pin`'s.

use std::fmt;

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
