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

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `inner`, with writes bounded by `limit` without progress.
pub struct SendDeadline<S> {
    inner: S,
    limit: Duration,
    /// Armed when a write first found the socket full; cleared by any
    /// progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> SendDeadline<S> {
    pub fn new(inner: S, limit: Duration) -> SendDeadline<S> {
        SendDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After the inner socket answered `polled`: progress disarms the
    /// deadline; a wait arms it (once) and fails when it passes.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match sleep.as_mut().poll(cx) {
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

impl<S: AsyncRead + Unpin> AsyncRead for SendDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled)
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
}
