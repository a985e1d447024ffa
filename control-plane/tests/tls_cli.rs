//! `farmhand-control tls self-signed` as an operator runs it: the files and their modes,
//! the fingerprint on stdout (matching the written certificate), a server that loads the
//! pair, and a rerun that refuses to overwrite the key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_control::config::TlsConfig;
use farmhand_control::tls::{fingerprint, ServerTls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn self_signed(out: &Path, names: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_farmhand-control"));
    cmd.args(["tls", "self-signed", "--out"]).arg(out);
    for name in names {
        cmd.args(["--name", name]);
    }
    cmd.output().unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn self_signed_writes_the_pair_with_modes_and_prints_its_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tls");
    let run = self_signed(&out, &["plane.example.com", "127.0.0.1"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (cert, key) = (out.join("cert.pem"), out.join("key.pem"));
    assert_eq!(mode(&cert), 0o644);
    assert_eq!(mode(&key), 0o600);

    let stdout = String::from_utf8(run.stdout).unwrap();
    let printed = stdout.trim();
    let der = CertificateDer::from_pem_file(&cert).unwrap();
    assert_eq!(
        printed,
        fingerprint(&der),
        "stdout is the fingerprint alone"
    );
    assert!(
        printed.starts_with("sha256:") && printed.len() == 71,
        "{printed}"
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("pin_sha256"), "{stderr}");
    assert!(!stderr.contains("PRIVATE KEY") && !stdout.contains("PRIVATE KEY"));

    let loaded = ServerTls::load(&TlsConfig::new(&cert, &key)).unwrap();
    assert_eq!(loaded.fingerprint, printed);

    let before = std::fs::read(&key).unwrap();
    let again = self_signed(&out, &[]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("key.pem"), "{stderr}");
    assert_eq!(
        std::fs::read(&key).unwrap(),
        before,
        "the key was not overwritten"
    );
}
