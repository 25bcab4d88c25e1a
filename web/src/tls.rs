//! Optional HTTPS through rustls (with the `ring` provider: no system libraries).
//!
//! `[server] tls_cert` and `tls_key` name PEM files: a certificate chain and its
//! private key. They are loaded before anything else starts, so a bad file stops
//! start-up with a message that names it. Connections are served by
//! [`crate::accept::serve`], like plain HTTP.

use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use weir_storage::config::TlsConfig;

/// Loads the certificate chain and key into an acceptor.
pub fn acceptor(cfg: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .with_context(|| format!("reading the TLS certificate {}", cfg.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing the TLS certificate {}", cfg.cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no PEM certificate", cfg.cert.display());
    let key = PrivateKeyDer::from_pem_file(&cfg.key)
        .with_context(|| format!("reading the TLS private key {}", cfg.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!("the key {} does not fit the certificate {}", cfg.key.display(), cfg.cert.display())
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
