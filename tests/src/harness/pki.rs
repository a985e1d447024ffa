//! Certificates for TLS tests, written to files as an operator would have them: a
//! throwaway CA and a server certificate it signs ([`TestCa`]), and the control plane's own
//! `tls self-signed` pair ([`PlaneTls::self_signed`]).

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};

/// Names a test server certificate is valid for.
pub const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A CA that exists only for one test.
#[derive(Debug)]
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA with `name` as its common name.
    pub fn new(name: &str) -> anyhow::Result<TestCa> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(TestCa { issuer })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `path` (what the agent's `ca_file` names).
    pub fn write_cert(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.cert_pem()).with_context(|| format!("writing {}", path.display()))
    }

    /// A server certificate for [`SERVER_NAMES`] signed by this CA: (cert PEM, key PEM).
    pub fn server_cert(&self) -> anyhow::Result<(String, String)> {
        let names: Vec<String> = SERVER_NAMES.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// The files a TLS control plane serves with, and how an agent can trust it.
#[derive(Debug, Clone)]
pub struct PlaneTls {
    /// The server certificate (chain), PEM.
    pub cert_file: PathBuf,
    /// The server key, PEM.
    pub key_file: PathBuf,
    /// The CA that signed it (absent for a self-signed certificate).
    pub ca_file: Option<PathBuf>,
    /// `sha256:HEX` of the server certificate.
    pub fingerprint: String,
}

impl PlaneTls {
    /// A certificate from a fresh test CA, files in `dir`.
    pub fn ca_signed(dir: &Path) -> anyhow::Result<PlaneTls> {
        std::fs::create_dir_all(dir)?;
        let ca = TestCa::new("farmhand test CA")?;
        let (cert, key) = ca.server_cert()?;
        let tls = PlaneTls {
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
            ca_file: Some(dir.join("ca.pem")),
            fingerprint: fingerprint_of_pem(&cert)?,
        };
        std::fs::write(&tls.cert_file, cert)?;
        std::fs::write(&tls.key_file, key)?;
        ca.write_cert(&dir.join("ca.pem"))?;
        Ok(tls)
    }

    /// What `farmhand-control tls self-signed --out DIR` writes (the same code).
    pub fn self_signed(dir: &Path) -> anyhow::Result<PlaneTls> {
        let names: Vec<String> = SERVER_NAMES.iter().map(|n| n.to_string()).collect();
        let files = farmhand_control::tls::write_self_signed(dir, &names)?;
        Ok(PlaneTls {
            cert_file: files.cert_file,
            key_file: files.key_file,
            ca_file: None,
            fingerprint: files.fingerprint,
        })
    }
}

/// `sha256:HEX` of the first certificate in a PEM text.
pub fn fingerprint_of_pem(pem: &str) -> anyhow::Result<String> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))?;
    Ok(farmhand_control::tls::fingerprint(&der))
}
