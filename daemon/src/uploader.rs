//! The uploader: seals due batches, writes them to the sink, and only then
//! deletes them from the store.
//!
//! # Schedule
//! It sleeps until the earliest of: the oldest pending event reaching the
//! upload interval, a retry deadline, a nudge from the store (a batch hit
//! its size limit, or the first event arrived), a flush request, or
//! shutdown. With nothing pending it has no timer at all, so an idle daemon
//! does not wake up.
//!
//! # Failures
//! A failed upload leaves the batch sealed; the next attempt waits an
//! exponentially growing, jittered delay capped at `retry_max`. The error
//! and the next attempt time are kept for `status`. Nothing is dropped
//! because an upload failed, whatever the error.

use crate::config::{now_us, Clock};
use crate::store::{Stats, Store, StoreError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use telemetry_proto::FlushReport;
use telemetry_sink::{Sink, UploadError};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

/// Upload progress, shared with the `status` handler.
#[derive(Debug, Clone, Default)]
pub struct UploadState {
    /// Events uploaded since start.
    pub uploaded_events: u64,
    /// Time of the last successful upload (µs).
    pub last_upload_us: Option<i64>,
    /// Key of the last object written.
    pub last_key: Option<String>,
    /// Message of the last failure, cleared by a success.
    pub last_error: Option<String>,
    /// When the next attempt is due after a failure (µs).
    pub next_attempt_us: Option<i64>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
}

/// Why a flush or upload cycle failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CycleError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The destination failed.
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// The daemon is stopping; the final upload attempt takes over.
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

/// A cycle that failed part way: what was uploaded before the error.
#[derive(Debug, Clone)]
pub struct CycleFailure {
    /// Objects written before the failure.
    pub done: FlushReport,
    /// What failed.
    pub error: CycleError,
}

impl std::fmt::Display for CycleFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)?;
        if !self.done.keys.is_empty() {
            write!(
                f,
                " (after uploading {} event(s) in {} object(s): {})",
                self.done.events,
                self.done.keys.len(),
                self.done.keys.join(", ")
            )?;
        }
        Ok(())
    }
}

impl From<CycleError> for CycleFailure {
    fn from(error: CycleError) -> Self {
        CycleFailure {
            done: FlushReport::default(),
            error,
        }
    }
}

type FlushReply = oneshot::Sender<Result<FlushReport, CycleFailure>>;

/// Talk to the running uploader.
#[derive(Clone)]
pub struct Uploader {
    notify: Arc<Notify>,
    /// Held while a batch is being written and completed; consent changes
    /// and purges take it so they never race a batch on its way out.
    pub upload_lock: Arc<tokio::sync::Mutex<()>>,
    flush_tx: mpsc::Sender<FlushReply>,
    /// Shared progress for `status`.
    pub state: Arc<Mutex<UploadState>>,
    /// For telling `status` when the next upload is due.
    upload_interval: Duration,
    clock: Clock,
}

impl Uploader {
    /// When the next upload is due without anyone asking (µs since the
    /// epoch), by the rule the worker sleeps on (see `Worker::next_wake`):
    /// the retry time after a failure, now when a sealed batch may go, else
    /// when the oldest event reaches the upload interval; `None` when
    /// nothing may be uploaded.
    pub fn next_upload_us(&self, stats: &Stats, retry_at_us: Option<i64>) -> Option<i64> {
        let now = now_us(&self.clock);
        if stats.uploadable_batches == 0 && stats.uploadable_unsealed == 0 {
            return None;
        }
        if retry_at_us.is_some() {
            return retry_at_us;
        }
        if stats.uploadable_batches > 0 {
            return Some(now);
        }
        stats
            .oldest_unsealed_us
            .map(|oldest| (oldest + self.upload_interval.as_micros() as i64).max(now))
    }

    /// Ask the uploader to re-plan (new events arrived).
    pub fn nudge(&self) {
        self.notify.notify_one();
    }

    /// Seal everything pending, upload now and wait for the result.
    pub async fn flush(&self) -> Result<FlushReport, CycleFailure> {
        let (tx, rx) = oneshot::channel();
        let closed = || CycleFailure::from(CycleError::ShuttingDown);
        self.flush_tx.send(tx).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

/// Uploader timing settings.
#[derive(Clone)]
pub struct UploaderOptions {
    /// Seal when the oldest pending event is this old.
    pub upload_interval: Duration,
    /// First retry delay.
    pub retry_min: Duration,
    /// Largest retry delay.
    pub retry_max: Duration,
    /// Budget for the final upload at shutdown.
    pub shutdown_timeout: Duration,
    /// Wall clock.
    pub clock: Clock,
    /// Where `STATUS=` lines go after each upload attempt.
    pub notifier: Arc<crate::notify::Notifier>,
}

struct Worker {
    store: Store,
    sink: Sink,
    opts: UploaderOptions,
    state: Arc<Mutex<UploadState>>,
    retry_at: Option<Instant>,
    /// Turns true at shutdown; interrupts a running cycle so the bounded
    /// final attempt can start.
    stop: watch::Receiver<bool>,
    /// See [`Uploader::upload_lock`].
    upload_lock: Arc<tokio::sync::Mutex<()>>,
}

/// Start the uploader task. It stops when `shutdown` turns true, after one
/// last bounded upload attempt.
pub fn spawn(
    store: Store,
    sink: Sink,
    opts: UploaderOptions,
    shutdown: watch::Receiver<bool>,
) -> (Uploader, tokio::task::JoinHandle<()>) {
    let notify = Arc::new(Notify::new());
    let (flush_tx, flush_rx) = mpsc::channel(16);
    let state = Arc::new(Mutex::new(UploadState::default()));
    let upload_lock = Arc::new(tokio::sync::Mutex::new(()));
    let (upload_interval, clock) = (opts.upload_interval, opts.clock.clone());
    let worker = Worker {
        upload_lock: upload_lock.clone(),
        store,
        sink,
        opts,
        state: state.clone(),
        retry_at: None,
        stop: shutdown.clone(),
    };
    let handle = tokio::spawn(worker.run(notify.clone(), flush_rx, shutdown));
    (
        Uploader {
            notify,
            upload_lock,
            flush_tx,
            state,
            upload_interval,
            clock,
        },
        handle,
    )
}
impl Worker {
    async fn run(
        mut self,
        notify: Arc<Notify>,
        mut flush_rx: mpsc::Receiver<FlushReply>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            let wake_at = self.next_wake().await;
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(reply) = flush_rx.recv() => {
                    let result = self.cycle(true, true).await;
                    let _ = reply.send(result);
                }
                _ = notify.notified() => {
                    if self.retry_at.is_none() {
                        let _ = self.cycle(false, true).await;
                    }
                }
                _ = sleep_until_opt(wake_at) => {
                    self.retry_at = None;
                    let _ = self.cycle(false, true).await;
                }
            }
        }
        // Answer flushes that raced with shutdown rather than leave them
        // hanging; the final attempt below covers their events.
        flush_rx.close();
        match tokio::time::timeout(self.opts.shutdown_timeout, self.cycle(true, false)).await {
            Ok(Ok(r)) if r.events > 0 => tracing::info!(events = r.events, "final upload done"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "final upload failed; events stay queued for the next start")
            }
            Err(_) => {
                tracing::warn!("final upload timed out; events stay queued for the next start")
            }
        }
        while let Ok(reply) = flush_rx.try_recv() {
            let _ = reply.send(Err(CycleError::ShuttingDown.into()));
        }
    }

    /// When to wake up without being asked: the retry deadline, now if a
    /// sealed batch waits, the oldest event's age deadline, or never.
    async fn next_wake(&self) -> Option<Instant> {
        if let Some(t) = self.retry_at {
            return Some(t);
        }
        match self.store.stats().await {
            Ok(s) if s.uploadable_batches > 0 => Some(Instant::now()),
            Ok(s) => s.oldest_unsealed_us.map(|oldest| {
                let due = oldest + self.opts.upload_interval.as_micros() as i64;
                let wait = due.saturating_sub(now_us(&self.opts.clock)).max(0);
                Instant::now() + Duration::from_micros(wait as u64)
            }),
            Err(_) => Some(Instant::now() + self.opts.retry_min),
        }
    }

    /// Seal what is due (everything if `force`) and upload all sealed
    /// batches, oldest first. An `interruptible` cycle stops at shutdown.
    async fn cycle(
        &mut self,
        force: bool,
        interruptible: bool,
    ) -> Result<FlushReport, CycleFailure> {
        let mut report = FlushReport::default();
        let result = self.try_cycle(force, interruptible, &mut report).await;
        self.record(&result);
        self.report_status().await;
        match result {
            Ok(()) => Ok(report),
            Err(error) => Err(CycleFailure {
                done: report,
                error,
            }),
        }
    }

    /// Keep the outcome of a cycle for `status` and plan the next retry.
    fn record(&mut self, result: &Result<(), CycleError>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Err(CycleError::ShuttingDown) => {}
            Ok(_) => {
                self.retry_at = None;
                st.consecutive_failures = 0;
                st.last_error = None;
                st.next_attempt_us = None;
            }
            Err(e) => {
                st.consecutive_failures = st.consecutive_failures.saturating_add(1);
                let permanent = matches!(e, CycleError::Upload(u) if u.is_permanent());
                // Retrying soon cannot fix a permanent error: go straight
                // to the slow cap, but never give up on the events.
                let failures = if permanent {
                    u32::MAX
                } else {
                    st.consecutive_failures
                };
                let delay = backoff(failures, self.opts.retry_min, self.opts.retry_max);
                if permanent {
                    tracing::error!(error = %e, retry_in = ?delay, "upload failed permanently; fix the configuration, events are kept");
                }
                self.retry_at = Some(Instant::now() + delay);
                st.last_error = Some(e.to_string());
                st.next_attempt_us = Some(now_us(&self.opts.clock) + delay.as_micros() as i64);
                tracing::warn!(error = %e, retry_in = ?delay, "upload failed");
            }
        }
    }

    /// Tell the service manager how things stand (`systemctl status`).
    async fn report_status(&self) {
        if !self.opts.notifier.enabled() {
            return;
        }
        let pending = self
            .store
            .stats()
            .await
            .map(|s| s.pending_events)
            .unwrap_or(0);
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let last = st
            .last_upload_us
            .map(crate::record::rfc3339_us)
            .unwrap_or_else(|| "never".into());
        let error = st.last_error.as_deref().unwrap_or("none");
        self.opts.notifier.send(&format!(
            "STATUS={pending} event(s) pending; last upload {last}; last error: {error}"
        ));
    }

    async fn try_cycle(
        &mut self,
        force: bool,
        interruptible: bool,
        report: &mut FlushReport,
    ) -> Result<(), CycleError> {
        self.store.seal(force).await?;
        loop {
            let lock = self.upload_lock.clone();
            let _guard = lock.lock().await;
            // Looked up under the lock: a purge or consent change just
            // before may have removed it.
            let Some(batch) = self.store.next_sealed().await? else {
                break;
            };
            let size = batch.body.len() as u64;
            let put = self.sink.put(&batch.key, batch.body);
            if interruptible {
                let mut stop = self.stop.clone();
                tokio::select! {
                    r = put => r?,
                    _ = stop.wait_for(|s| *s) => return Err(CycleError::ShuttingDown),
                }
            } else {
                put.await?;
            }
            self.store.complete(batch.id).await?;
            tracing::info!(key = %batch.key, events = batch.events, bytes = size, "uploaded batch");
            report.events += batch.events;
            report.bytes += size;
            report.keys.push(batch.key.clone());
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.uploaded_events += batch.events;
            st.last_upload_us = Some(now_us(&self.opts.clock));
            st.last_key = Some(batch.key);
        }
        Ok(())
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Delay before attempt `failures + 1`: `min * 2^(failures-1)` capped at
/// `max`, then "equal jitter" (a random point in the upper half) so many
/// daemons failing together do not retry in lockstep.
pub fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let exp = min.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let capped = exp.min(max);
    let half = capped / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..100 {
            let d1 = backoff(1, min, max);
            assert!(d1 >= Duration::from_millis(500) && d1 <= min, "{d1:?}");
            let d4 = backoff(4, min, max);
            assert!(
                d4 >= Duration::from_secs(4) && d4 <= Duration::from_secs(8),
                "{d4:?}"
            );
            let d30 = backoff(30, min, max);
            assert!(d30 >= Duration::from_secs(30) && d30 <= max, "{d30:?}");
        }
    }
}
