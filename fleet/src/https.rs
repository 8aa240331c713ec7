//! HTTPS for the fleet API and dashboard (`edgefleet serve --tls-cert FILE --tls-key FILE`):
//! the certificate and key read and checked against each other at start, and a listener that
//! hands axum finished TLS connections. Handshakes run in tasks of their own, so a slow or
//! silent client never holds up the others; a client speaking plain HTTP to the port gets a
//! plain-HTTP answer saying to use `https://`, instead of a connection closed mid-request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use edgefleet_common::fleet_api::ErrorBody;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The service's certificate chain and private key, as PEM files.
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Why the service's certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("--tls-cert {path}: {source}")]
    ReadCert {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--tls-cert {path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCert { path: PathBuf },
    #[error("--tls-key {path}: {source}")]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--tls-key {path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error(
        "--tls-key {key} does not belong to the certificate in --tls-cert {cert} ({source}): give the key the certificate was issued for"
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// How long a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes completed but not taken by axum yet.
const READY_QUEUE: usize = 64;

/// The first byte of a TLS record carrying a handshake (RFC 8446, 5.1).
const TLS_HANDSHAKE: u8 = 0x16;

/// Reads `identity` and builds the server configuration; fails naming the file that is
/// missing, holds no PEM, or does not match the other.
pub fn server_config(identity: &TlsIdentity) -> Result<rustls::ServerConfig, HttpsError> {
    edgefleet_transport::install_crypto_provider();
    let cert_path = &identity.cert_file;
    let key_path = &identity.key_file;
    let cert_pem = std::fs::read(cert_path).map_err(|source| HttpsError::ReadCert {
        path: cert_path.clone(),
        source,
    })?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| HttpsError::ReadCert {
            path: cert_path.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(HttpsError::NoCert {
            path: cert_path.clone(),
        });
    }
    let key_pem = std::fs::read(key_path).map_err(|source| HttpsError::ReadKey {
        path: key_path.clone(),
        source,
    })?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| HttpsError::ReadKey {
            path: key_path.clone(),
            source,
        })?
        .ok_or_else(|| HttpsError::NoKey {
            path: key_path.clone(),
        })?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| HttpsError::Mismatch {
            cert: cert_path.clone(),
            key: key_path.clone(),
            source,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A listener whose connections are TLS sessions, for `axum::serve`.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Accepts on `listener`; each connection completes its handshake in a task of its own.
    pub fn new(listener: TcpListener, config: rustls::ServerConfig) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (ready_tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor = tokio::spawn(accept(
            listener,
            TlsAcceptor::from(Arc::new(config)),
            ready_tx,
        ));
        Ok(Self {
            ready,
            local_addr,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The acceptor only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let local_addr = listener.local_addr().ok();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(connection) => connection,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "cannot accept an HTTPS connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                handshake(stream, acceptor, local_addr.as_ref()),
            );
            match handshake.await {
                Ok(Ok(Some(tls))) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Ok(None)) => {
                    tracing::info!(%peer, "plain HTTP on the HTTPS port: told the client to use https://");
                }
                Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Completes the handshake, or answers a plain-HTTP request (`None`) with where to go.
async fn handshake(
    mut stream: TcpStream,
    acceptor: TlsAcceptor,
    local_addr: Option<&SocketAddr>,
) -> std::io::Result<Option<TlsStream<TcpStream>>> {
    let mut first = [0u8; 1];
    let read = stream.peek(&mut first).await?;
    if read == 1 && first[0] != TLS_HANDSHAKE {
        stream.write_all(&plain_http_answer(local_addr)).await?;
        let _ = stream.shutdown().await;
        return Ok(None);
    }
    acceptor.accept(stream).await.map(Some)
}

/// A `400` telling a plain-HTTP client that this port speaks HTTPS, as the API's error body.
fn plain_http_answer(local_addr: Option<&SocketAddr>) -> Vec<u8> {
    let address = local_addr.map_or_else(|| "this address".to_owned(), |a| format!("https://{a}"));
    let body = serde_json::to_string(&ErrorBody {
        error: format!(
            "this port serves the fleet API over HTTPS only: use {address} (with --ca-file FILE when its certificate is not signed by a system CA)"
        ),
    })
    .unwrap_or_default();
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
