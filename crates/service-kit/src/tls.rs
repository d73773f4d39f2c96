//! TLS for the services' listeners: which certificate and key to serve
//! (`TLS_CERT_FILE`, `TLS_KEY_FILE`) and the rustls configuration built
//! from them.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use settings::ConfigError;
use std::path::PathBuf;
use std::sync::Arc;

/// The PEM files of the certificate chain (leaf first) and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("Failed to read the TLS certificate chain {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("Failed to read the TLS private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("The TLS certificate and key do not make a server configuration: {0}")]
    Config(#[from] rustls::Error),
}

impl TlsFiles {
    /// `TLS_CERT_FILE` and `TLS_KEY_FILE`: both set listens with TLS, neither
    /// listens in plain HTTP, one alone is a mistake.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        let set = |value: Result<String, _>| value.ok().filter(|v: &String| !v.trim().is_empty());
        let cert = set(std::env::var("TLS_CERT_FILE"));
        let key = set(std::env::var("TLS_KEY_FILE"));
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
            })),
            (None, None) => Ok(None),
            (Some(cert), None) => Err(ConfigError {
                name: "TLS_CERT_FILE".into(),
                value: cert,
                reason: "TLS_KEY_FILE must be set with it".into(),
            }),
            (None, Some(key)) => Err(ConfigError {
                name: "TLS_KEY_FILE".into(),
                value: key,
                reason: "TLS_CERT_FILE must be set with it".into(),
            }),
        }
    }

    /// Reads the files and builds the server configuration: TLS 1.2 and
    /// 1.3, HTTP/2 and HTTP/1.1 offered by ALPN, no client certificates.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TlsError::Certificate {
                path: self.cert.clone(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsError::Certificate {
                path: self.cert.clone(),
                reason: "no PEM certificate in the file".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| TlsError::Key {
            path: self.key.clone(),
            reason: e.to_string(),
        })?;
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_makes_a_server_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let files = TlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        std::fs::write(&files.cert, cert.cert.pem()).unwrap();
        std::fs::write(&files.key, cert.key_pair.serialize_pem()).unwrap();
        files.server_config().unwrap();
    }

    #[test]
    fn a_missing_or_empty_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("none.pem"),
            key: dir.path().join("key.pem"),
        };
        let err = files.server_config().unwrap_err().to_string();
        assert!(err.contains("none.pem"), "{err}");
        std::fs::write(&files.cert, "not a certificate").unwrap();
        let err = files.server_config().unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
