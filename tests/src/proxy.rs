//! A real HTTP CONNECT proxy on 127.0.0.1, the kind corporate networks
//! put between users and the internet: it reads `CONNECT host:port`,
//! opens the TCP connection, answers `200` and copies bytes both ways
//! (TLS stays end to end). It records every request line it was sent and
//! can be told to refuse tunnels with `403`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest request head the proxy reads before giving up on a client.
const MAX_HEAD: usize = 16 * 1024;

/// A running CONNECT proxy; stops when dropped.
pub struct ConnectProxy {
    /// `http://127.0.0.1:PORT`, the value for `HTTPS_PROXY`.
    pub url: String,
    requests: Arc<Mutex<Vec<String>>>,
    refuse: Arc<AtomicBool>,
    _runtime: tokio::runtime::Runtime,
}

impl ConnectProxy {
    /// Start a proxy on a free port.
    pub fn start() -> ConnectProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime for the proxy");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let refuse = Arc::new(AtomicBool::new(false));
        let (seen, no) = (requests.clone(), refuse.clone());
        runtime.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, no) = (seen.clone(), no.clone());
                tokio::spawn(async move {
                    // A failed tunnel only ends that tunnel; the client
                    // sees the connection close.
                    let _ = serve(client, seen, no).await;
                });
            }
        });
        ConnectProxy {
            url,
            requests,
            refuse,
            _runtime: runtime,
        }
    }

    /// Every request line received, e.g. `CONNECT 127.0.0.1:4431 HTTP/1.1`.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// The `host:port` of every CONNECT received (tunnels asked for).
    pub fn connect_targets(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|line| {
                let mut parts = line.split(' ');
                (parts.next() == Some("CONNECT"))
                    .then(|| parts.next().unwrap_or_default().to_string())
            })
            .collect()
    }

    /// From now on, answer every CONNECT with `403 Forbidden`.
    pub fn set_refuse(&self, refuse: bool) {
        self.refuse.store(refuse, Ordering::SeqCst);
    }
}

async fn serve(
    mut client: TcpStream,
    seen: Arc<Mutex<Vec<String>>>,
    refuse: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let end = loop {
        let mut buf = [0u8; 2048];
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > MAX_HEAD {
            client
                .write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n")
                .await?;
            return Ok(());
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).to_string();
    let line = text.lines().next().unwrap_or_default().to_string();
    seen.lock().unwrap().push(line.clone());
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "CONNECT" {
        client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\nconnection: close\r\n\r\n")
            .await?;
        return Ok(());
    }
    if refuse.load(Ordering::SeqCst) {
        client
            .write_all(b"HTTP/1.1 403 Forbidden\r\nconnection: close\r\n\r\n")
            .await?;
        return Ok(());
    }
    let mut upstream = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(_) => {
            client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\nconnection: close\r\n\r\n")
                .await?;
            return Ok(());
        }
    };
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    // Bytes the client sent right after its head belong to the tunnel.
    upstream.write_all(&head[end..]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}
