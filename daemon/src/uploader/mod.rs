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
//! # Destinations
//! Each batch goes to the destination fixed when it was sealed (see
//! [`destination`]). Every destination is uploaded to independently and at
//! the same time, with its own backoff, last upload and last error: one
//! bucket that is down or slow never holds back another product's.
//!
//! # Failures
//! A failed upload leaves the batch sealed; the next attempt at that
//! destination waits an exponentially growing, jittered delay capped at
//! `retry_max` (or the `Retry-After` it asked for). A refusal of one batch
//! or one product (a broker's `400`/`413` naming a field of it) stops only
//! that batch or product: the drain passes over it and the batches behind
//! it go, and the refusal is the drain's outcome. The error and the next
//! attempt time are kept for `status`. Nothing is dropped because an upload
//! failed, with two exceptions the vendor decides: a product its
//! destination says is retired (HTTP 410) is not uploaded again, and what
//! was pending for it is dropped and counted; a batch whose builds are all
//! retired (410 naming `builds`) is dropped and counted alone, and the
//! product's later batches go on.

use crate::config::{now_us, Clock};
use crate::store::{NewReceipt, Passed, RefusedAt, RetiredProduct, Stats, Store, StoreError};
use destination::{DestId, Registry};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use telemetry_proto::FlushReport;
use telemetry_sink::{Delivered, UploadError};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

pub mod destination;

/// Upload progress of one destination, shared with the `status` handler.
#[derive(Debug, Clone, Default)]
pub struct DestinationState {
    /// Events uploaded there since start.
    pub uploaded_events: u64,
    /// Compressed bytes uploaded there since start.
    pub uploaded_bytes: u64,
    /// Batches that were already there (a replay answered `412`).
    pub already_there: u64,
    /// Objects written there since start (replays included).
    pub uploads: u64,
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
    /// No automatic attempt before this (monotonic twin of
    /// `next_attempt_us`).
    retry_at: Option<Instant>,
}

/// Upload progress, shared with the `status` handler. The flat fields sum
/// up every destination, for `status` readers that know only one.
#[derive(Debug, Clone, Default)]
pub struct UploadState {
    /// Events uploaded since start.
    pub uploaded_events: u64,
    /// Time of the last successful upload (µs).
    pub last_upload_us: Option<i64>,
    /// Key of the last object written.
    pub last_key: Option<String>,
    /// Message of the last failure at any destination still failing.
    pub last_error: Option<String>,
    /// The earliest retry due at a failing destination (µs).
    pub next_attempt_us: Option<i64>,
    /// The most failures in a row at any destination.
    pub consecutive_failures: u32,
    /// Per destination (`None`: the daemon's own).
    pub destinations: BTreeMap<DestId, DestinationState>,
    /// Products their vendor retired.
    pub retired: Vec<RetiredProduct>,
    /// What each destination refused for good (by receipt label), as the
    /// store keeps it.
    pub refused: Vec<RefusedAt>,
}

impl UploadState {
    /// Recompute the flat summary from the destinations.
    fn summarize(&mut self) {
        let failing = self
            .destinations
            .values()
            .filter(|d| d.last_error.is_some());
        self.last_error = failing
            .clone()
            .max_by_key(|d| d.next_attempt_us)
            .and_then(|d| d.last_error.clone());
        self.next_attempt_us = failing.clone().filter_map(|d| d.next_attempt_us).min();
        self.consecutive_failures = failing.map(|d| d.consecutive_failures).max().unwrap_or(0);
    }
}

/// Why a flush or upload cycle failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CycleError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A destination failed.
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// Some destinations failed (each named, with its error); the others
    /// were uploaded to.
    #[error("{}", .0.iter().map(|(d, e)| format!("{d}: {e}")).collect::<Vec<_>>().join("; "))]
    Destinations(Vec<(String, UploadError)>),
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

/// Held shared by every upload in flight and exclusively by consent
/// changes and purges, so those never race a batch on its way out while
/// destinations still upload side by side.
#[derive(Default)]
pub struct UploadLock(tokio::sync::RwLock<()>);

impl UploadLock {
    /// Wait until no batch is on its way out, and keep it so.
    pub async fn lock(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.0.write().await
    }

    /// [`UploadLock::lock`] if no batch is on its way out now.
    pub fn try_lock(
        &self,
    ) -> Result<tokio::sync::RwLockWriteGuard<'_, ()>, tokio::sync::TryLockError> {
        self.0.try_write()
    }

    async fn shared(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.0.read().await
    }
}

/// Talk to the running uploader.
#[derive(Clone)]
pub struct Uploader {
    notify: Arc<Notify>,
    /// Held while a batch is being written and completed; consent changes
    /// and purges take it so they never race a batch on its way out.
    pub upload_lock: Arc<UploadLock>,
    flush_tx: mpsc::Sender<FlushReply>,
    /// Shared progress for `status`.
    pub state: Arc<Mutex<UploadState>>,
    /// The destinations, for naming them in `status`.
    pub registry: Arc<Registry>,
    /// The timing settings, shared with the worker (changed by a reload).
    timing: Arc<std::sync::RwLock<Timing>>,
    clock: Clock,
}

/// The uploader's timing, which a configuration reload may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Seal when the oldest pending event is this old.
    pub upload_interval: Duration,
    /// First retry delay.
    pub retry_min: Duration,
    /// Largest retry delay.
    pub retry_max: Duration,
}

fn read_timing(t: &std::sync::RwLock<Timing>) -> Timing {
    *t.read().unwrap_or_else(|p| p.into_inner())
}

impl Uploader {
    /// Whether `product`'s vendor retired it (a `410` for the product):
    /// nothing of it is uploaded again.
    pub fn is_retired(&self, product: &str) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retired
            .iter()
            .any(|r| r.product == product)
    }

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
        stats.oldest_unsealed_us.map(|oldest| {
            (oldest + read_timing(&self.timing).upload_interval.as_micros() as i64).max(now)
        })
    }

    /// Use `timing` from now on (a configuration reload); the worker
    /// re-plans at once.
    pub fn set_timing(&self, timing: Timing) {
        *self.timing.write().unwrap_or_else(|p| p.into_inner()) = timing;
        self.nudge();
    }

    /// Ask the uploader to re-plan (new events arrived).
    pub fn nudge(&self) {
        self.notify.notify_one();
    }

    /// What [`Uploader::nudge`] signals, for a thread that holds no
    /// `Uploader` (the store thread nudges after a commit that filled a
    /// batch): `notify_one` on it is a nudge.
    pub fn nudger(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    /// Seal everything pending, upload to every destination now (backoff
    /// or not) and wait for the result.
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
    registry: Arc<Registry>,
    opts: UploaderOptions,
    /// What `opts` says, as a reload last changed it.
    timing: Arc<std::sync::RwLock<Timing>>,
    state: Arc<Mutex<UploadState>>,
    /// Turns true at shutdown; interrupts a running cycle so the bounded
    /// final attempt can start.
    stop: watch::Receiver<bool>,
    /// See [`Uploader::upload_lock`].
    upload_lock: Arc<UploadLock>,
    /// See [`RetiredSet`].
    retired_set: RetiredSet,
    /// Sealing failed this many cycles in a row (a full disk, a damaged
    /// store): the next try waits [`backoff`], not for the oldest event's
    /// deadline, which has passed and would wake the worker at once.
    seal_failures: u32,
    /// When sealing may be tried again after a failure.
    seal_retry_at: Option<Instant>,
}

/// Start the uploader task. It stops when `shutdown` turns true, after one
/// last bounded upload attempt.
pub fn spawn(
    store: Store,
    registry: Registry,
    retired: Vec<RetiredProduct>,
    refused: Vec<RefusedAt>,
    retired_set: RetiredSet,
    opts: UploaderOptions,
    shutdown: watch::Receiver<bool>,
) -> (Uploader, tokio::task::JoinHandle<()>) {
    let notify = Arc::new(Notify::new());
    let (flush_tx, flush_rx) = mpsc::channel(16);
    retired_set
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .extend(retired.iter().map(|r| r.product.clone()));
    let state = Arc::new(Mutex::new(UploadState {
        retired,
        refused,
        ..UploadState::default()
    }));
    let upload_lock = Arc::new(UploadLock::default());
    let registry = Arc::new(registry);
    let timing = Arc::new(std::sync::RwLock::new(Timing {
        upload_interval: opts.upload_interval,
        retry_min: opts.retry_min,
        retry_max: opts.retry_max,
    }));
    let clock = opts.clock.clone();
    let worker = Worker {
        timing: timing.clone(),
        retired_set,
        upload_lock: upload_lock.clone(),
        store,
        registry: registry.clone(),
        opts,
        state: state.clone(),
        stop: shutdown.clone(),
        seal_failures: 0,
        seal_retry_at: None,
    };
    let handle = tokio::spawn(worker.run(notify.clone(), flush_rx, shutdown));
    (
        Uploader {
            notify,
            upload_lock,
            flush_tx,
            state,
            registry,
            timing,
            clock,
        },
        handle,
    )
}

/// Products their vendor retired, shared with the store's permit so their
/// events are never sealed again.
pub type RetiredSet = Arc<std::sync::RwLock<std::collections::BTreeSet<String>>>;

/// Whether `product` is in `set`.
pub fn is_retired(set: &RetiredSet, product: &str) -> bool {
    set.read()
        .unwrap_or_else(|p| p.into_inner())
        .contains(product)
}

/// How one destination's share of a cycle ended.
struct Drained {
    dest: DestId,
    report: FlushReport,
    result: Result<(), CycleError>,
}

impl Worker {
    fn timing(&self) -> Timing {
        read_timing(&self.timing)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, UploadState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

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
                    let result = self.cycle(true, true, true).await;
                    let _ = reply.send(result);
                }
                _ = notify.notified() => {
                    let _ = self.cycle(false, true, false).await;
                }
                _ = sleep_until_opt(wake_at) => {
                    let _ = self.cycle(false, true, false).await;
                }
            }
        }
        // Answer flushes that raced with shutdown rather than leave them
        // hanging; the final attempt below covers their events.
        flush_rx.close();
        // Not `now`: a destination backing off (a 429's Retry-After above
        // all) is not contacted early because the daemon stops; its events
        // stay for the next start.
        match tokio::time::timeout(self.opts.shutdown_timeout, self.cycle(true, false, false)).await
        {
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

    /// When a destination is backing off: its retry deadline.
    fn retry_at(&self, dest: &DestId) -> Option<Instant> {
        self.state()
            .destinations
            .get(dest)
            .and_then(|d| d.retry_at)
            .filter(|t| *t > Instant::now())
    }

    /// When to wake up without being asked: now if a sealed batch waits
    /// for a destination that is not backing off, else the earliest retry
    /// deadline of one that is, or the oldest event's age deadline; never
    /// when nothing waits.
    async fn next_wake(&self) -> Option<Instant> {
        let stats = match self.store.stats().await {
            Ok(s) => s,
            Err(_) => return Some(Instant::now() + self.timing().retry_min),
        };
        let mut wake = stats.oldest_unsealed_us.map(|oldest| {
            let due = oldest + self.timing().upload_interval.as_micros() as i64;
            let wait = due.saturating_sub(now_us(&self.opts.clock)).max(0);
            let at = Instant::now() + Duration::from_micros(wait as u64);
            self.seal_retry_at.map_or(at, |retry| at.max(retry))
        });
        for dest in stats.uploadable_by_destination.keys() {
            let at = self.retry_at(dest).unwrap_or_else(Instant::now);
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
        if stats.held_batches > 0 {
            // A batch waits for its manifest to be fixed, which nothing
            // announces: look again now and then (the seal places it).
            let at = Instant::now() + HELD_RECHECK;
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
        wake
    }

    /// Seal what is due (everything if `force`) and upload the sealed
    /// batches of every destination at once, each oldest first; a
    /// destination backing off is skipped unless `now` (a flush). An
    /// `interruptible` cycle stops at shutdown.
    async fn cycle(
        &mut self,
        force: bool,
        interruptible: bool,
        now: bool,
    ) -> Result<FlushReport, CycleFailure> {
        let mut report = FlushReport::default();
        let mut sealed = Ok(());
        let result = self
            .try_cycle(force, interruptible, now, &mut report, &mut sealed)
            .await;
        match &sealed {
            Ok(()) => {
                self.seal_failures = 0;
                self.seal_retry_at = None;
            }
            Err(e) => {
                self.seal_failures = self.seal_failures.saturating_add(1);
                let Timing {
                    retry_min,
                    retry_max,
                    ..
                } = self.timing();
                let delay = backoff(self.seal_failures, retry_min, retry_max);
                self.seal_retry_at = Some(Instant::now() + delay);
                tracing::warn!(error = %e, retry_in = ?delay, "cannot seal a batch; what is sealed is still uploaded");
            }
        }
        self.report_status().await;
        match result {
            Ok(()) => Ok(report),
            Err(error) => Err(CycleFailure {
                done: report,
                error,
            }),
        }
    }

    async fn try_cycle(
        &self,
        force: bool,
        interruptible: bool,
        now: bool,
        report: &mut FlushReport,
        sealed: &mut Result<(), CycleError>,
    ) -> Result<(), CycleError> {
        // A failure to seal (a full disk, say) must not keep what is
        // already sealed from going, which frees space too.
        *sealed = match self.drop_retired().await {
            Ok(()) => self.store.seal(force).await.map(|_| ()).map_err(Into::into),
            Err(e) => Err(e),
        };
        let stats = self.store.stats().await?;
        let dests: Vec<DestId> = stats
            .uploadable_by_destination
            .into_keys()
            .filter(|d| now || self.retry_at(d).is_none())
            .collect();
        let drained =
            futures::future::join_all(dests.into_iter().map(|d| self.drain(d, interruptible)))
                .await;
        let mut failures = Vec::new();
        let mut other = None;
        for d in drained {
            report.events += d.report.events;
            report.bytes += d.report.bytes;
            report.keys.extend(d.report.keys);
            self.record(&d.dest, &d.result);
            match d.result {
                Ok(()) => {}
                Err(CycleError::Upload(e)) => failures.push((self.registry.describe(&d.dest).0, e)),
                Err(e) => other = Some(e),
            }
        }
        if let Some(e) = other {
            return Err(e);
        }
        if let Err(e) = sealed {
            return Err(e.clone());
        }
        // One failure's message names its bucket or URL already.
        match failures.len() {
            0 => Ok(()),
            1 => Err(CycleError::Upload(failures.remove(0).1)),
            _ => Err(CycleError::Destinations(failures)),
        }
    }

    /// Drop what arrived for retired products since the last cycle.
    async fn drop_retired(&self) -> Result<(), CycleError> {
        let retired: Vec<RetiredProduct> = self.state().retired.clone();
        let mut changed = false;
        for r in retired {
            let n = self
                .store
                .retire(&r.product, &r.destination, &r.message)
                .await?;
            changed |= n > 0;
        }
        if changed {
            let all = self.store.retired().await?;
            self.state().retired = all;
        }
        Ok(())
    }

    /// Upload every uploadable batch for `dest`, oldest first, until none
    /// is left or one fails.
    async fn drain(&self, dest: DestId, interruptible: bool) -> Drained {
        let mut report = FlushReport::default();
        let result = self.try_drain(&dest, interruptible, &mut report).await;
        Drained {
            dest,
            report,
            result,
        }
    }

    async fn try_drain(
        &self,
        dest: &DestId,
        interruptible: bool,
        report: &mut FlushReport,
    ) -> Result<(), CycleError> {
        let target = self.registry.get(dest).await?;
        // Batches (or whole products) the destination refused in this
        // drain: passed over so the ones behind them still go, and the
        // first refusal is this drain's outcome (the destination then
        // retries at the slow cap, when they are offered again).
        let mut past = Passed::default();
        let mut refused: Option<UploadError> = None;
        loop {
            let lock = self.upload_lock.clone();
            let _guard = lock.shared().await;
            // Looked up under the lock: a purge or consent change just
            // before may have removed it.
            let Some(batch) = self
                .store
                .next_sealed_past(dest.clone(), past.clone())
                .await?
            else {
                return refused.map_or(Ok(()), |e| Err(e.into()));
            };
            let size = batch.body.len() as u64;
            // What the receipt keeps: the exact bytes' hash, and the body
            // itself (the store bounds how many it keeps).
            let sha256 = telemetry_sink::broker::hex_sha256(&batch.body);
            let body = batch.body.clone();
            let put = target.put(&batch.key, batch.body);
            let put = if interruptible {
                let mut stop = self.stop.clone();
                let done = tokio::select! {
                    r = put => Some(r),
                    _ = stop.wait_for(|s| *s) => None,
                };
                match done {
                    Some(r) => r,
                    None => {
                        self.store.let_go(dest.clone()).await?;
                        return Err(CycleError::ShuttingDown);
                    }
                }
            } else {
                put.await
            };
            let (delivered, stored_as) = match put {
                Ok(d) => d,
                Err(UploadError::Retired {
                    destination,
                    product,
                    message,
                }) => {
                    // The vendor's off switch, for this product only: the
                    // destination itself is fine for the others.
                    self.retired_set
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(product.clone());
                    let dropped = self.store.retire(&product, &destination, &message).await?;
                    tracing::warn!(product, destination, dropped, message, "the vendor retired this product; its events are dropped and nothing more is uploaded for it");
                    let all = self.store.retired().await?;
                    self.state().retired = all;
                    continue;
                }
                Err(e) if refused_for_good(&e, &batch.key, now_us(&self.opts.clock)) => {
                    // Counted as the destination's refusal, kept across
                    // restarts, not as a full store's drops (which the next
                    // upload reports to the vendor).
                    let why = telemetry_sink::untrusted(
                        &e.to_string(),
                        telemetry_sink::MAX_UNTRUSTED_CHARS,
                    );
                    let label = self.registry.receipt_label(dest);
                    let dropped = self.store.reject(batch.id, &label, &why).await?;
                    tracing::warn!(key = %batch.key, dropped, error = %e, "the destination refuses this batch for good; its events are dropped (shown in status under this destination), and the batches behind it go on");
                    let refused = self.store.refused().await?;
                    self.state().refused = refused;
                    continue;
                }
                Err(e) if refusal_scope(&e).is_some() => {
                    self.store.let_go(dest.clone()).await?;
                    let whole_product = refusal_scope(&e) == Some(Scope::Product);
                    if whole_product {
                        past.products.insert(batch.product.clone());
                    } else {
                        past.batches.insert(batch.id);
                    }
                    tracing::warn!(key = %batch.key, whole_product, error = %e, "the destination refuses this batch; it is kept and offered again at the slow cap, and the batches behind it go on");
                    refused.get_or_insert(e);
                    continue;
                }
                Err(e) => {
                    // Not on its way any more: no longer kept from eviction
                    // while the destination backs off.
                    self.store.let_go(dest.clone()).await?;
                    return Err(e.into());
                }
            };
            let replay = delivered == Delivered::AlreadyThere;
            let key = stored_as.clone().unwrap_or_else(|| batch.key.clone());
            let receipt = NewReceipt {
                destination: self.registry.receipt_label(dest),
                sha256,
                bytes: size,
                already_there: replay,
                body,
                key: stored_as,
            };
            self.store.complete(batch.id, receipt).await?;
            tracing::info!(key = %key, events = batch.events, bytes = size, already_there = replay, "uploaded batch");
            report.events += batch.events;
            report.bytes += size;
            report.keys.push(key.clone());
            let mut st = self.state();
            let now = now_us(&self.opts.clock);
            st.uploaded_events += batch.events;
            st.last_upload_us = Some(now);
            st.last_key = Some(key.clone());
            let d = st.destinations.entry(dest.clone()).or_default();
            d.uploaded_events += batch.events;
            d.uploaded_bytes += size;
            d.already_there += u64::from(replay);
            d.uploads += 1;
            d.last_upload_us = Some(now);
            d.last_key = Some(key);
        }
    }

    /// Keep the outcome for one destination for `status` and plan its
    /// next retry.
    fn record(&self, dest: &DestId, result: &Result<(), CycleError>) {
        let now = now_us(&self.opts.clock);
        let Timing {
            retry_min: min,
            retry_max: max,
            ..
        } = self.timing();
        let label = self.registry.describe(dest).0;
        let mut st = self.state();
        let d = st.destinations.entry(dest.clone()).or_default();
        match result {
            Err(CycleError::ShuttingDown) => {}
            Ok(()) => {
                d.retry_at = None;
                d.consecutive_failures = 0;
                d.last_error = None;
                d.next_attempt_us = None;
            }
            Err(e) => {
                d.consecutive_failures = d.consecutive_failures.saturating_add(1);
                let upload = match e {
                    CycleError::Upload(u) => Some(u),
                    _ => None,
                };
                let permanent = upload.is_some_and(UploadError::is_permanent);
                // Retrying soon cannot fix a permanent error: go straight
                // to the slow cap, but never give up on the events.
                let failures = if permanent {
                    u32::MAX
                } else {
                    d.consecutive_failures
                };
                let mut delay = backoff(failures, min, max);
                // A destination that said when to come back is taken at
                // its word: no sooner.
                if let Some(UploadError::Throttled { retry_after, .. }) = upload {
                    delay = throttled(*retry_after, min);
                }
                if permanent {
                    tracing::error!(destination = %label, error = %e, retry_in = ?delay, "upload refused until the configuration is fixed; events are kept and offered again at the slow cap");
                }
                d.retry_at = Some(Instant::now() + delay);
                d.last_error = Some(e.to_string());
                d.next_attempt_us = Some(now + delay.as_micros() as i64);
                tracing::warn!(destination = %label, error = %e, retry_in = ?delay, "upload failed");
            }
        }
        st.summarize();
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
        let st = self.state().clone();
        let last = st
            .last_upload_us
            .map(crate::record::rfc3339_us)
            .unwrap_or_else(|| "never".into());
        let error = st.last_error.as_deref().unwrap_or("none");
        self.opts.notifier.send(&format!(
            "STATUS={pending} event(s) pending; last upload {last}; last error: {error}"
        ));
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Whether `e` refuses the batch at `key` itself, for good: every build
/// in it retired by the vendor (a `410` naming `builds`), or refused for
/// its day while that day is over [`TOO_OLD_DAYS`] days behind this
/// machine's clock (a machine offline past the broker's day window; no
/// change on the vendor's side will make that day acceptable, and the
/// batch would hold back every batch behind it). Any other refusal is
/// kept and retried at the slow cap, since the vendor can fix it (a cap
/// set too low, a missing manifest), and so is a day refused while recent
/// (the broker's clock or window may be off).
fn refused_for_good(e: &UploadError, key: &str, now_us: i64) -> bool {
    let UploadError::Rejected { field, status, .. } = e else {
        return false;
    };
    // Every build in the batch retired by its vendor: this batch is gone
    // for good, the product's later batches (a live build) still go.
    if *status == 410 {
        return true;
    }
    field.as_deref() == Some("day")
        && key_day_us(key).is_some_and(|day| now_us - day > TOO_OLD_DAYS * 86_400_000_000)
}

/// What a refusal that is not for good is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// This batch (its size, day, builds, key): later ones may pass.
    Batch,
    /// Every batch of its product (the broker has no manifest for it):
    /// other products' may pass.
    Product,
}

/// Whether `e` refuses one batch or one product rather than the
/// destination, and which: the drain then passes over it and goes on.
/// Only the fields that differ between batches name a batch, and only
/// those shared by a product's batches name the product; any other
/// refusal (no field, the request as a whole, a field a newer broker
/// checks) says nothing about the batches behind it, so the drain stops
/// there rather than ask for each of them.
fn refusal_scope(e: &UploadError) -> Option<Scope> {
    let UploadError::Rejected {
        field: Some(field), ..
    } = e
    else {
        return None;
    };
    match field.as_str() {
        "bytes" | "day" | "builds" | "key" | "first_seq" | "last_seq" | "sha256" => {
            Some(Scope::Batch)
        }
        "product" | "machine8" => Some(Scope::Product),
        _ => None,
    }
}

/// How often the uploader looks whether a batch held for a broken
/// manifest can be placed (only while one is held).
const HELD_RECHECK: Duration = Duration::from_secs(30);

/// A batch refused for its day is dropped only once its day is this many
/// days old: past the broker's default window (45 days), so a broker whose
/// window or clock is briefly wrong cannot make a machine drop batches a
/// corrected broker would take.
const TOO_OLD_DAYS: i64 = 60;

/// The start of the `dt=` day in a batch key, in µs since the epoch.
fn key_day_us(key: &str) -> Option<i64> {
    let (_, rest) = key.split_once("/dt=")?;
    let day = rest.get(..10)?;
    let t = humantime::parse_rfc3339(&format!("{day}T00:00:00Z")).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_micros() as i64)
}

/// How long to wait after a `429` that asked for `retry_after`: at least
/// that, and never less than `min` (a `Retry-After: 0` from a broken or
/// hostile endpoint must not make the daemon ask again as fast as it can),
/// plus up to a tenth more, so clients told the same time do not all come
/// back at once.
pub fn throttled(retry_after: Duration, min: Duration) -> Duration {
    let base = retry_after.max(min);
    base + (base / 10).mul_f64(fastrand::f64())
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
    fn a_throttled_destination_waits_as_asked_never_less_than_the_minimum() {
        let min = Duration::from_secs(30);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..100 {
            let zero = throttled(Duration::ZERO, min);
            assert!(zero >= min && zero <= Duration::from_secs(33), "{zero:?}");
            let asked = throttled(Duration::from_secs(600), min);
            assert!(
                asked >= Duration::from_secs(600) && asked <= Duration::from_secs(660),
                "{asked:?}"
            );
            seen.insert(asked);
        }
        assert!(seen.len() > 50, "jittered");
    }

    #[test]
    fn only_a_batch_at_fault_is_refused_for_good() {
        let rejected = |status, field: Option<&str>| UploadError::Rejected {
            destination: "https://b".into(),
            status,
            field: field.map(String::from),
            message: "no".into(),
        };
        let key = "p/v1/product=cfdev/dt=2026-10-01/abcdef01-1-2.ndjson.zst";
        let day = key_day_us(key).unwrap();
        let days = |n: i64| day + n * 86_400_000_000;
        assert!(
            !refused_for_good(&rejected(413, Some("bytes")), key, days(100)),
            "the vendor can raise its cap"
        );
        assert!(refused_for_good(&rejected(400, Some("day")), key, days(61)));
        assert!(
            !refused_for_good(&rejected(400, Some("day")), key, days(59)),
            "recent: the broker's clock may be off"
        );
        assert!(
            !refused_for_good(&rejected(400, Some("product")), key, days(100)),
            "the destination's doing"
        );
        assert!(!refused_for_good(&rejected(400, None), key, days(100)));
        assert!(
            refused_for_good(&rejected(410, Some("builds")), key, days(0)),
            "every build in it retired: this batch never goes"
        );
        let throttled = UploadError::Throttled {
            destination: "https://b".into(),
            retry_after: Duration::from_secs(1),
            message: String::new(),
        };
        assert!(!refused_for_good(&throttled, key, days(100)));
        assert_eq!(key_day_us("no day here"), None);

        // What a drain passes over when the refusal is not for good.
        assert_eq!(
            refusal_scope(&rejected(413, Some("bytes"))),
            Some(Scope::Batch)
        );
        assert_eq!(
            refusal_scope(&rejected(400, Some("day"))),
            Some(Scope::Batch)
        );
        assert_eq!(
            refusal_scope(&rejected(400, Some("product"))),
            Some(Scope::Product)
        );
        assert_eq!(
            refusal_scope(&rejected(400, Some("body"))),
            None,
            "the request as a whole: the next batch's would be refused too"
        );
        assert_eq!(refusal_scope(&rejected(400, None)), None);
        assert_eq!(
            refusal_scope(&rejected(400, Some("machine8"))),
            Some(Scope::Product),
            "the same for every batch of the product"
        );
        assert_eq!(
            refusal_scope(&rejected(400, Some("colour"))),
            None,
            "a field this daemon does not know: not asked for each batch"
        );
        assert_eq!(refusal_scope(&throttled), None);
    }

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
