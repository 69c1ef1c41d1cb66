//! What can stop a Redis connection from being set up, before any network
//! traffic ([`ConnectError`]): the URL, the CA bundle, an option the store
//! cannot honour; and the configuration variable each one is about, so
//! that a function refusing to start names the variable to fix.
//!
//! The URL is parsed here once, as the client parses it (a bad database
//! number or `?protocol=` is refused now, not at the first connect), and
//! the CA bundle is read and checked here: the client itself would accept
//! a file with no certificate in it, and fail every TLS handshake later.

use std::path::Path;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::settings::ConfigError;

/// Why a Redis connection could not be set up. Never repeats the URL: it
/// may hold a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The CA bundle could not be read.
    #[error("cannot read the CA file {path}: {source}")]
    CaFile {
        /// The file.
        path: String,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The CA bundle was read but cannot be used.
    #[error("cannot use the CA file {path}: {reason}")]
    CaBundle {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL is not one the client can use.
    #[error("invalid Redis URL: {0}")]
    Url(#[source] redis::RedisError),
    /// The client could not be built from the URL and options.
    #[error("invalid Redis URL or options: {0}")]
    Client(#[source] redis::RedisError),
    /// Replica acknowledgements were asked for in cluster mode.
    #[error("min_replicas needs a standalone Redis, not cluster mode")]
    ReplicasInCluster,
}

impl ConnectError {
    /// The environment variable this failure is about, as
    /// [`RedisStore::from_env`](super::RedisStore::from_env) reads them:
    /// `REDIS_URL`, `REDIS_CA_FILE` or `REDIS_MIN_REPLICAS`.
    pub fn variable(&self) -> &'static str {
        match self {
            Self::CaFile { .. } | Self::CaBundle { .. } => "REDIS_CA_FILE",
            Self::Url(_) | Self::Client(_) => "REDIS_URL",
            Self::ReplicasInCluster => "REDIS_MIN_REPLICAS",
        }
    }
}

impl From<ConnectError> for ConfigError {
    /// The failure as a bad value of [`ConnectError::variable`].
    fn from(error: ConnectError) -> Self {
        Self {
            var: error.variable(),
            reason: error.to_string(),
        }
    }
}

/// `url` parsed as the client parses it.
pub(super) fn connection_info(url: &str) -> Result<ConnectionInfo, ConnectError> {
    url.into_connection_info().map_err(ConnectError::Url)
}

/// The CA bundle at `path`, read and checked, for a TLS connection to
/// `info`: at least one certificate, each one a usable trust anchor.
pub(super) fn ca_bundle(
    path: &Path,
    info: &ConnectionInfo,
) -> Result<TlsCertificates, ConnectError> {
    let shown = path.display().to_string();
    let unusable = |reason: String| ConnectError::CaBundle {
        path: shown.clone(),
        reason,
    };
    if !matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
        return Err(unusable(
            "a CA bundle is for TLS, and the URL does not start with rediss://".to_owned(),
        ));
    }
    let pem = std::fs::read(path).map_err(|source| ConnectError::CaFile {
        path: shown.clone(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| unusable(format!("not a PEM certificate bundle ({e})")))?;
        roots
            .add(cert)
            .map_err(|e| unusable(format!("a certificate is not a trust anchor ({e})")))?;
    }
    if roots.is_empty() {
        return Err(unusable("it holds no PEM certificate".to_owned()));
    }
    Ok(TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_names_its_variable_and_never_the_url() {
        let secret = "redis://:pw-secret@h:6379/x";
        let url = connection_info(secret).unwrap_err();
        assert_eq!(url.variable(), "REDIS_URL");
        let config = ConfigError::from(url);
        assert_eq!(config.var, "REDIS_URL");
        assert!(!config.to_string().contains("pw-secret"), "{config}");
        let info = connection_info("rediss://h:6380").unwrap();
        let missing = ca_bundle(Path::new("/no/such/ca.pem"), &info).unwrap_err();
        assert_eq!(missing.variable(), "REDIS_CA_FILE");
        let plain = connection_info("redis://h:6379").unwrap();
        let without_tls = ca_bundle(Path::new("/no/such/ca.pem"), &plain).unwrap_err();
        assert!(matches!(without_tls, ConnectError::CaBundle { .. }));
        assert_eq!(
            ConnectError::ReplicasInCluster.variable(),
            "REDIS_MIN_REPLICAS"
        );
    }
}
