//! The roots the plane trusts as a TLS client (webhook receivers, PostgreSQL): the
//! system's, plus the CAs of an operator's `ca_file`.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use std::path::Path;

/// The system's roots plus every certificate in `ca_file`; an error names the file and
/// why (unreadable, or no usable certificate in it).
pub fn client_roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(loaded.certs);
    let Some(path) = ca_file else {
        return Ok(roots);
    };
    let fail = |detail: String| format!("cannot use ca_file {}: {detail}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(fail("no usable PEM certificate in the file".into()));
    }
    Ok(roots)
}
