//! A real TLS endpoint with a self-signed CA: terminates TLS on 127.0.0.1
//! with the committed test leaf (`tests/certs/server.pem`, for 127.0.0.1
//! and localhost, signed by `tests/certs/ca.pem`) and forwards the bytes
//! to a plain backend such as [`crate::S3Server`], like a TLS-terminating
//! load balancer in front of a self-hosted store.
//!
//! The certificates are committed with a 100-year validity (see
//! `tests/certs/README.md`) rather than generated per run, so the tests
//! need no certificate-generation crate.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// The directory of the committed test certificates.
pub fn certs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("certs")
}

/// The test CA (PEM), to pass as `TELEMETRY_CA_BUNDLE`.
pub fn ca_bundle() -> PathBuf {
    certs_dir().join("ca.pem")
}

/// A running TLS front; stops when dropped.
pub struct TlsFront {
    /// `https://127.0.0.1:PORT`.
    pub endpoint: String,
    handshakes: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

impl TlsFront {
    /// Serve TLS on a free port and forward to `backend`
    /// (`http://127.0.0.1:PORT`).
    pub fn start(backend: &str) -> TlsFront {
        use rustls_pki_types::pem::PemObject;
        let backend = backend
            .strip_prefix("http://")
            .expect("backend is http://HOST:PORT")
            .to_string();
        let dir = certs_dir();
        let chain = rustls_pki_types::CertificateDer::pem_file_iter(dir.join("server.pem"))
            .expect("read tests/certs/server.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("parse tests/certs/server.pem");
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(dir.join("server.key"))
            .expect("read tests/certs/server.key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("test certificate and key match");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime for the TLS front");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the TLS front");
        let endpoint = format!("https://{}", listener.local_addr().unwrap());
        let handshakes = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let (ok, bad) = (handshakes.clone(), failed.clone());
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, backend, ok, bad) =
                    (acceptor.clone(), backend.clone(), ok.clone(), bad.clone());
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(tls) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                            tls
                        }
                        Err(_) => {
                            // The client refused our certificate (or spoke
                            // no TLS): counted, connection closed.
                            bad.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    if let Ok(mut up) = TcpStream::connect(&backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                    }
                });
            }
        });
        TlsFront {
            endpoint,
            handshakes,
            failed,
            _runtime: runtime,
        }
    }

    /// `127.0.0.1:PORT`, as a CONNECT target names it.
    pub fn authority(&self) -> &str {
        self.endpoint.trim_start_matches("https://")
    }

    /// TLS handshakes that completed.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// Connections whose TLS handshake failed (e.g. the client did not
    /// trust the certificate).
    pub fn failed_handshakes(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }
}
