//! TLS termination with rustls, from PEM files; ALPN offers HTTP/2 and HTTP/1.1.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use crate::error::NodeError;

/// Builds the acceptor for `--tls-cert`/`--tls-key`.
pub fn acceptor(cert_path: &Path, key_path: &Path) -> Result<TlsAcceptor, NodeError> {
  let read = |path: &Path| {
    std::fs::read(path).map_err(|source| NodeError::Io {
      path: path.display().to_string(),
      source,
    })
  };
  let certs = rustls_pemfile::certs(&mut read(cert_path)?.as_slice())
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| NodeError::Tls(format!("{}: {e}", cert_path.display())))?;
  if certs.is_empty() {
    return Err(NodeError::Tls(format!(
      "{}: no certificate found",
      cert_path.display()
    )));
  }
  let key = rustls_pemfile::private_key(&mut read(key_path)?.as_slice())
    .map_err(|e| NodeError::Tls(format!("{}: {e}", key_path.display())))?
    .ok_or_else(|| NodeError::Tls(format!("{}: no private key found", key_path.display())))?;
  let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
  let mut config = rustls::ServerConfig::builder_with_provider(provider)
    .with_safe_default_protocol_versions()
    .map_err(|e| NodeError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| NodeError::Tls(e.to_string()))?;
  config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
  Ok(TlsAcceptor::from(Arc::new(config)))
}
