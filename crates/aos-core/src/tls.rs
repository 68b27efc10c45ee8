//! TLS for listeners (the broker's `tls` and `wss` listeners, the web role's HTTPS): rustls with
//! the ring provider, certificates from PEM files, optional client certificates verified against
//! a CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use serde::{Deserialize, Serialize};

/// Certificates of a TLS listener (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// CA certificates that client certificates are verified against; absent: clients are not
    /// asked for certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: refuse clients without a valid certificate (otherwise it is optional).
    #[serde(default)]
    pub require_client_cert: bool,
}

/// A TLS set-up that cannot be loaded, with the configuration key to fix.
#[derive(Debug, thiserror::Error)]
#[error("listener `{listener}`: {message}")]
pub struct TlsError {
    pub listener: String,
    pub message: String,
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// Builds the rustls server configuration of listener `name`.
pub fn server_config(name: &str, tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let fail = |message: String| TlsError {
        listener: name.to_string(),
        message,
    };
    let certs = certificates(&tls.cert).map_err(fail)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| {
        fail(format!(
            "cannot read the private key {}: {e}",
            tls.key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(ca).map_err(fail)? {
                roots
                    .add(cert)
                    .map_err(|e| fail(format!("bad CA certificate in {}: {e}", ca.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if tls.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| fail(e.to_string()))?)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| fail(format!("certificate and key do not fit together: {e}")))?;
    Ok(Arc::new(config))
}
