//! rustls client configurations on ring.

use std::sync::Arc;

use rumqttc::TlsConfiguration;

/// Installs ring as rustls' process-wide crypto provider. Edgefleet builds rustls without a
/// default provider (ring needs no C toolchain beyond cc, which keeps cross builds simple), so
/// every TLS user calls this first; later calls do nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The files of a TLS client: a CA (empty: the system roots) and an optional client
/// certificate and key (both or neither).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca_file: String,
    pub client_cert_file: String,
    pub client_key_file: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("CA file {path}: {source}")]
    CaRead {
        path: String,
        source: std::io::Error,
    },
    #[error("CA file {path}: {source}")]
    CaCertificate { path: String, source: rustls::Error },
    #[error("CA file {path} holds no PEM certificate")]
    NoCaCertificate { path: String },
    #[error("client certificate or key {path}: {source}")]
    ClientFile {
        path: String,
        source: std::io::Error,
    },
    #[error("client key file {path} holds no private key")]
    NoClientKey { path: String },
    #[error("client certificate: {0}")]
    ClientCertificate(#[source] rustls::Error),
}

/// The MQTT client's TLS configuration for `files`.
pub fn client_config(files: &TlsFiles) -> Result<TlsConfiguration, TlsError> {
    Ok(TlsConfiguration::Rustls(Arc::new(rustls_client_config(
        files,
    )?)))
}

/// The rustls client configuration for `files`, for any TLS client (MQTT, HTTPS).
pub fn rustls_client_config(files: &TlsFiles) -> Result<rustls::ClientConfig, TlsError> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    if files.ca_file.is_empty() {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
    } else {
        let path = &files.ca_file;
        let pem = std::fs::read(path).map_err(|source| TlsError::CaRead {
            path: path.clone(),
            source,
        })?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|source| TlsError::CaRead {
                path: path.clone(),
                source,
            })?;
            roots.add(cert).map_err(|source| TlsError::CaCertificate {
                path: path.clone(),
                source,
            })?;
        }
        if roots.is_empty() {
            return Err(TlsError::NoCaCertificate { path: path.clone() });
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let client = if files.client_cert_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let read = |path: &str| {
            std::fs::read(path).map_err(|source| TlsError::ClientFile {
                path: path.to_owned(),
                source,
            })
        };
        let cert_path = &files.client_cert_file;
        let key_path = &files.client_key_file;
        let certs = rustls_pemfile::certs(&mut read(cert_path)?.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::ClientFile {
                path: cert_path.clone(),
                source,
            })?;
        let key = rustls_pemfile::private_key(&mut read(key_path)?.as_slice())
            .map_err(|source| TlsError::ClientFile {
                path: key_path.clone(),
                source,
            })?
            .ok_or_else(|| TlsError::NoClientKey {
                path: key_path.clone(),
            })?;
        builder
            .with_client_auth_cert(certs, key)
            .map_err(TlsError::ClientCertificate)?
    };
    Ok(client)
}
