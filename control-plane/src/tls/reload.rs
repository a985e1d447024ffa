//! Replacing the served certificate without a restart (`systemctl reload`, SIGHUP).
//!
//! The rustls config never changes: its certificate comes from [`SwappableCert`], a
//! `ResolvesServerCert` holding the current `Arc<CertifiedKey>` behind a lock that each
//! handshake holds only to clone the `Arc`. [`TlsReloader::reload`] reads `cert_file` and
//! `key_file` again, checks them completely (PEM, key type, key matches the certificate)
//! and only then swaps, so the listener keeps accepting, a bad pair leaves the previous
//! certificate in service, and open connections (agent sessions) are never touched: their
//! handshake is over. Only `main` listens for the signal; tests call `reload` directly.

use super::{fingerprint, load_certified, validity, TlsError};
use farmhand_ops::metrics::CounterVec;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use time::OffsetDateTime;

/// The certificate every new handshake gets, replaceable while serving.
pub(super) struct SwappableCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl SwappableCert {
    fn get(&self) -> Arc<CertifiedKey> {
        // Nothing panics while the lock is held, so a poisoned lock still holds a whole value.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, next: Arc<CertifiedKey>) -> Arc<CertifiedKey> {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *current, next)
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl std::fmt::Debug for SwappableCert {
    // The fingerprint only: whatever a signing key's own Debug prints stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwappableCert")
            .field("certificate", &summary(&self.get()).fingerprint)
            .finish()
    }
}

/// The served certificate as logs and callers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// `sha256:HEX` of the leaf certificate's DER (what agents pin).
    pub fingerprint: String,
    /// The leaf's `notAfter`, when its DER could be read that far.
    pub not_after: Option<OffsetDateTime>,
}

impl CertSummary {
    /// `notAfter` in RFC 3339, or `unknown`.
    pub fn expires(&self) -> String {
        self.not_after
            .map_or_else(|| "unknown".into(), crate::ids::rfc3339)
    }

    /// Whether `notAfter` is known and past.
    pub fn expired(&self) -> bool {
        self.not_after
            .is_some_and(|at| at <= OffsetDateTime::now_utc())
    }
}

/// Re-reads `[tls] cert_file` and `key_file` on demand and puts the pair in service for new
/// connections. Cheap to clone; every clone swaps the same certificate.
#[derive(Clone)]
pub struct TlsReloader {
    inner: Arc<Inner>,
}

struct Inner {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    served: Arc<SwappableCert>,
    /// `farmhand_tls_reloads_total` by `result` = ok, error.
    reloads: CounterVec<1>,
}

impl TlsReloader {
    pub(super) fn new(
        cert_file: PathBuf,
        key_file: PathBuf,
        provider: Arc<CryptoProvider>,
        first: CertifiedKey,
    ) -> Self {
        let reloads = CounterVec::new(["result"]);
        reloads.touch(["ok"]);
        reloads.touch(["error"]);
        let served = Arc::new(SwappableCert {
            current: RwLock::new(Arc::new(first)),
        });
        TlsReloader {
            inner: Arc::new(Inner {
                cert_file,
                key_file,
                provider,
                served,
                reloads,
            }),
        }
    }

    /// What the rustls config resolves every handshake's certificate with.
    pub(super) fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
        self.inner.served.clone()
    }

    /// The certificate new connections get now.
    pub fn current(&self) -> CertSummary {
        summary(&self.inner.served.get())
    }

    /// Reload outcomes by `result` (`ok`, `error`), for `/metrics`.
    pub fn reloads(&self) -> &CounterVec<1> {
        &self.inner.reloads
    }

    /// Reads the certificate and key files again. A usable pair serves every new connection
    /// from now on (logged at INFO with its fingerprint and expiry; an expired one is served
    /// but warned about); anything else is logged at ERROR, naming the file and the reason,
    /// and the previous certificate stays in service. Blocking file I/O: two small files.
    pub fn reload(&self) -> Result<CertSummary, TlsError> {
        let inner = &self.inner;
        let loaded = load_certified(&inner.cert_file, &inner.key_file, &inner.provider);
        let next = match loaded {
            Ok(next) => Arc::new(next),
            Err(error) => {
                inner.reloads.inc(["error"]);
                tracing::error!(
                    %error,
                    cert_file = %inner.cert_file.display(),
                    key_file = %inner.key_file.display(),
                    still_serving = %self.current().fingerprint,
                    "TLS certificate reload refused; the previous certificate stays in service"
                );
                return Err(error);
            }
        };
        let new = summary(&next);
        let previous = summary(&inner.served.replace(next));
        inner.reloads.inc(["ok"]);
        tracing::info!(
            certificate = %new.fingerprint,
            not_after = %new.expires(),
            previous = %previous.fingerprint,
            cert_file = %inner.cert_file.display(),
            "TLS certificate reloaded: new connections get it, open ones keep theirs"
        );
        if new.expired() {
            tracing::warn!(
                certificate = %new.fingerprint,
                not_after = %new.expires(),
                "the reloaded TLS certificate has expired: agents that check expiry refuse it"
            );
        }
        Ok(new)
    }
}

impl std::fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloader")
            .field("cert_file", &self.inner.cert_file)
            .field("key_file", &self.inner.key_file)
            .field("served", &self.inner.served)
            .finish()
    }
}

/// The leaf's fingerprint and expiry (`CertifiedKey` always holds a leaf once loaded).
pub(super) fn summary(key: &CertifiedKey) -> CertSummary {
    let leaf = key.cert.first().map(|der| der.as_ref()).unwrap_or_default();
    CertSummary {
        fingerprint: fingerprint(leaf),
        not_after: validity::not_after(leaf),
    }
}
