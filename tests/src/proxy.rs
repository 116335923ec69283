//! Proxies between a service and a server: one that cuts connections, one that adds TLS.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

/// A TCP proxy in front of a server that a test can cut (refuse and drop every connection) and
/// restore: an outage of one dependency without stopping the shared server.
#[derive(Debug)]
pub struct Proxy {
    pub addr: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let generation = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let upstream = upstream.to_owned();
        let (flag, gen_) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused in effect
                }
                let upstream = upstream.clone();
                let (flag, gen_) = (flag.clone(), gen_.clone());
                let born = gen_.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
                    tokio::pin!(copy);
                    loop {
                        tokio::select! {
                            _ = &mut copy => return,
                            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                                if !flag.load(Ordering::SeqCst) || gen_.load(Ordering::SeqCst) != born {
                                    return; // cut: both sides see the connection drop
                                }
                            }
                        }
                    }
                });
            }
        });
        Ok(Proxy { addr, up, generation })
    }

    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A TLS-terminating proxy in front of a plain server: HTTPS to the shared ClickHouse without
/// reconfiguring it. `cert` and `key` are PEM files (the server certificate and its key).
#[derive(Debug)]
pub struct TlsProxy {
    pub addr: String,
}

impl TlsProxy {
    pub async fn start(upstream: &str, cert: &Path, key: &Path) -> anyhow::Result<Self> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        runtime::install_crypto_provider();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(cert)?.collect::<Result<_, _>>().context("server certificate")?;
        let key = PrivateKeyDer::from_pem_file(key).context("server key")?;
        let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let upstream = upstream.to_owned();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(client).await else { return };
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                });
            }
        });
        Ok(TlsProxy { addr })
    }
}
