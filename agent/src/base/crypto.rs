//! rustls' process-wide crypto provider. reqwest is built without one, so every HTTPS
//! client (ProxySmart over TLS, enrollment, the CLI's checks) installs ring first.

/// Installs ring as rustls' process-wide crypto provider (reqwest is built without one).
/// Idempotent: a provider installed earlier (by us or the embedding process) is kept.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
