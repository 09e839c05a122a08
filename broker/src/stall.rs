//! A connection's socket whose writes give up when the client stops
//! reading.
//!
//! hyper bounds how long a client may take to send (the header and body
//! timeouts) but not how long it may take to read: a client that pipelines
//! requests and never reads its answers fills the socket's buffers, and the
//! connection then waits on its write for as long as the client keeps it
//! open, holding one of the broker's connection places. Here a write (or
//! flush, or shutdown) that makes no progress for the limit fails with
//! `TimedOut`, which ends the connection.
//!
//! Whatever ends a connection, the kernel must not keep what its client
//! never read: closed gently, those answers would hold the socket's send
//! buffer (megabytes) in FIN-WAIT-1 for minutes, beyond every connection
//! cap. So a connection dropped while a write waits for the client is
//! reset ([`Abort::abort_on_close`]), and one closed gently (hyper's idle
//! or header timeout can close a connection whose client stopped reading
//! before any write had to wait) gives what is still queued at most the
//! send limit to be taken ([`Abort::bound_close`]). A live connection
//! is never given a kernel timeout: a client on a slow or briefly
//! silent network keeps it for as long as the broker's own limits allow.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How a socket's close treats what its peer has not taken yet.
pub trait Abort {
    /// Discard what is queued for the peer at close, and reset.
    fn abort_on_close(&self);
    /// Close gently, but drop what waits unacknowledged past `limit`.
    fn bound_close(&self, limit: Duration);
}

impl Abort for tokio::net::TcpStream {
    fn abort_on_close(&self) {
        // Failing leaves a gentle close: the connection still ends.
        let _ = self.set_zero_linger();
    }

    fn bound_close(&self, limit: Duration) {
        // TCP_USER_TIMEOUT, which the kernel applies after the close too (to
        // the zero-window probes of a client that reads nothing). Whole
        // milliseconds, at least one: zero would turn it off.
        #[cfg(target_os = "linux")]
        let _ = socket2::SockRef::from(self)
            .set_tcp_user_timeout(Some(limit.max(Duration::from_millis(1))));
        #[cfg(not(target_os = "linux"))]
        let _ = limit;
    }
}

impl Abort for tokio::io::DuplexStream {
    fn abort_on_close(&self) {}
    fn bound_close(&self, _: Duration) {}
}

/// `inner`, with writes bounded by `limit` without progress.
pub struct SendDeadline<S: Abort> {
    inner: S,
    limit: Duration,
    /// Armed when a write first found the socket full; cleared by any
    /// progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S: Abort> SendDeadline<S> {
    pub fn new(inner: S, limit: Duration) -> SendDeadline<S> {
        SendDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After the inner socket answered `polled`: progress disarms the
    /// deadline; a wait arms it (once) and fails when it passes. A
    /// shutdown is no progress (a TCP socket's returns at once, its FIN
    /// queued behind whatever the client has not taken).
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
        progress: bool,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                if progress {
                    self.stalled = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match sleep.as_mut().poll(cx) {
                    // Still armed: the socket is reset when dropped.
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client read nothing for {limit:?}"),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: Abort> Drop for SendDeadline<S> {
    fn drop(&mut self) {
        if self.stalled.is_some() {
            // The last write found the socket full and nothing was taken
            // since: whatever ends the connection, its client is not reading.
            self.inner.abort_on_close();
        } else {
            self.inner.bound_close(self.limit);
        }
    }
}

impl<S: AsyncRead + Abort + Unpin> AsyncRead for SendDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Abort + Unpin> AsyncWrite for SendDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled, true)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled, true)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled, true)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A writer whose reader keeps reading, however slowly, is waited
    /// for; one whose reader stops fails once the limit passes without
    /// progress. (Real time: the paused clock needs a tokio feature the
    /// rest of the tree does not build with.)
    #[tokio::test]
    async fn a_write_fails_only_after_the_limit_without_progress() {
        const LIMIT: Duration = Duration::from_millis(400);
        let (a, mut b) = tokio::io::duplex(64);
        let mut w = SendDeadline::new(a, LIMIT);
        let chunk = [7u8; 64];
        // The pipe holds one chunk; the reader takes one every 250 ms,
        // so each write waits about that long: within the limit.
        let reader = tokio::spawn(async move {
            let mut sink = [0u8; 64];
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                b.read_exact(&mut sink).await.unwrap();
            }
            b
        });
        let started = Instant::now();
        for _ in 0..4 {
            w.write_all(&chunk)
                .await
                .expect("a slow reader is waited for");
        }
        assert!(
            started.elapsed() >= Duration::from_millis(700),
            "the writes waited for the reader"
        );
        let b = reader.await.unwrap();
        // Now nobody reads: the next write waits out the limit, then fails.
        let started = Instant::now();
        let e = w.write_all(&chunk).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(
            started.elapsed() >= LIMIT,
            "failed after {:?}",
            started.elapsed()
        );
        drop(b);
    }

    /// A connection given up on is reset: the client meets an error, not
    /// a clean end after the answers still queued, and the kernel keeps
    /// nothing of it. So is one dropped for another reason (hyper's header
    /// timeout) while a write waits; one whose writes were all taken is
    /// closed gently.
    #[tokio::test]
    async fn a_stalled_tcp_connection_is_reset_not_closed() {
        // Given up on by the deadline.
        let (mut w, client) = tcp_pair(Duration::from_millis(300)).await;
        let e = fill(&mut w).await;
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        drop(w);
        assert_reset(client).await;
        // Dropped while a write waits, long before the deadline, after a
        // shutdown (as hyper closes a connection it times out itself).
        let (mut w, client) = tcp_pair(Duration::from_secs(60)).await;
        let waited = tokio::time::timeout(Duration::from_millis(300), fill(&mut w)).await;
        assert!(waited.is_err(), "the write was still waiting");
        w.shutdown().await.unwrap();
        drop(w);
        assert_reset(client).await;
        // Written whole, then closed: a clean end with every byte.
        let (mut w, client) = tcp_pair(Duration::from_secs(60)).await;
        w.write_all(b"answer").await.unwrap();
        drop(w);
        assert_eq!(read_all(client).await.unwrap(), b"answer");
    }

    /// `client`'s connection ends in a reset, not an end of stream.
    async fn assert_reset(client: std::net::TcpStream) {
        let end = read_all(client).await.map(|got| got.len());
        assert_eq!(
            end.expect_err("a reset").kind(),
            io::ErrorKind::ConnectionReset
        );
    }

    /// A writer on one end of a local TCP connection, and the other end.
    async fn tcp_pair(
        limit: Duration,
    ) -> (SendDeadline<tokio::net::TcpStream>, std::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (SendDeadline::new(server, limit), client)
    }

    /// Write until a write fails (the client reads nothing).
    async fn fill(w: &mut SendDeadline<tokio::net::TcpStream>) -> io::Error {
        let chunk = vec![7u8; 64 * 1024];
        loop {
            if let Err(e) = w.write_all(&chunk).await {
                return e;
            }
        }
    }

    /// Everything `client` receives until the end, or the error that ends it.
    async fn read_all(client: std::net::TcpStream) -> io::Result<Vec<u8>> {
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut client = client;
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut sink = Vec::new();
            client.read_to_end(&mut sink).map(|_| sink)
        })
        .await
        .unwrap()
    }
}
