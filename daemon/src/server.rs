//! Accepting connections and serving frames.
//!
//! [`run`] is the whole daemon: it opens the store, starts the uploader and
//! accepts connections until `shutdown` resolves. Each connection gets its
//! own task ([`crate::connection::serve`]), which reads requests, keeps a
//! window of acknowledged emits in flight and answers each in order; a bad
//! frame gets an error reply and closes only that connection.
//!
//! # Shutdown
//! 1. Stop accepting; tell connection tasks to stop after the request they
//!    are serving (each holds a `done` sender; we wait until all are
//!    dropped, bounded by a grace period, then abort the stragglers).
//! 2. Stop the uploader, which makes one last bounded upload attempt.
//! 3. Drop the last store handles; the store thread commits what is queued
//!    and closes the database.

use crate::batch::{KeyLayout, Routing};
use crate::catalog::{CatalogError, Catalogues};
use crate::config::Config;
use crate::consent::Consent;
use crate::identity::{Identity, IdentityError};
use crate::notify::Notifier;
use crate::store::{StateLock, Store, StoreError, StoreOptions};
use crate::transport::{self, Conn, Listener, PeerIdentity};
use crate::uploader::{self, Uploader, UploaderOptions};
use futures::SinkExt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use telemetry_proto::{Encoding, ErrorCode, Limits, Request, Response, WireCodec};
use telemetry_sink::Sink;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::Framed;

/// Extra time connection tasks get, beyond the shutdown timeout, to finish
/// the request they are serving; then they are aborted.
const CONNECTION_GRACE: Duration = Duration::from_secs(2);

/// How long a client over the connection limit has to send its first byte,
/// which says whether the refusal goes out as a frame or a JSON line.
const BUSY_READ: Duration = Duration::from_millis(100);

/// Refusals waiting for a first byte at once; past it a refused connection
/// is answered in binary without waiting, so a flood of silent connections
/// cannot pin descriptors.
const BUSY_WAITERS: usize = 64;

/// How long shutdown waits for the store thread to close the database.
const STORE_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The machine identity could not be read or created.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An event catalogue could not be loaded.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Everything a request handler may use.
pub struct Ctx {
    /// This context, for work that must run on a task of its own.
    pub me: std::sync::Weak<Ctx>,
    /// The event store.
    pub store: Store,
    /// The uploader.
    pub uploader: Uploader,
    /// The machine identity (hands out per-product anonymous IDs).
    pub identity: Arc<Identity>,
    /// Event limits.
    pub limits: Limits,
    /// When the daemon started.
    pub started: Instant,
    /// Where batches go (for status).
    pub destination: String,
    /// The consent layers.
    pub consent: Arc<Consent>,
    /// Wall clock.
    pub clock: crate::config::Clock,
    /// Event catalogues.
    pub catalogues: Arc<Catalogues>,
    /// The consent decision the store last acted on, per product (a copy,
    /// so emits only go to the store for a transition when it changed).
    pub applied: std::sync::Mutex<std::collections::BTreeMap<String, crate::store::Decision>>,
    /// Serializes consent reconciliation.
    pub reconcile_lock: tokio::sync::Mutex<()>,
    /// Who the daemon runs as (for the permission check).
    pub daemon_identity: PeerIdentity,
    /// A connection must deliver each complete request within this time.
    pub connection_timeout: Duration,
    /// Connections served at once; more are refused with `Busy`.
    pub max_connections: usize,
    /// Things that went wrong at startup and were recovered from (shown by
    /// `status`).
    pub incidents: Vec<String>,
    /// What shims spooled while the daemon was not reachable.
    pub spool: crate::spool::SpoolState,
    /// Connection activity, for the idle exit.
    pub activity: Activity,
    /// Exit after this long without a connection (`idle_exit`), uploading
    /// what may go first.
    pub idle_exit: Option<Duration>,
    /// Whether acknowledged emits may be answered from the store thread
    /// (which takes a second descriptor per connection; see
    /// [`room_for_second_handles`]).
    pub direct_replies: bool,
    /// Refused events, counted and logged.
    pub refusals: Arc<crate::refusals::Refusals>,
    /// Where events went since start (shared with the store thread, which
    /// counts a commit's events before it writes the acknowledgement).
    pub counters: Arc<crate::counters::EventCounters>,
    /// Held shared from an emit's rendering (which writes the product's
    /// anonymous ID into each line) to its commit, and exclusively by
    /// `forget` while it switches a product's ID: no line made with the
    /// old ID can be stored after the switch.
    pub id_lock: Arc<tokio::sync::RwLock<()>>,
    /// Busy refusals allowed to wait for a first byte (see [`BUSY_WAITERS`]).
    pub busy_waiters: Arc<tokio::sync::Semaphore>,
    /// Room for events waiting for their commit, across all connections
    /// (see [`MAX_QUEUED_EVENTS`]).
    pub queued_events: Arc<tokio::sync::Semaphore>,
    /// How to stop the daemon under the service manager that runs it
    /// (`Stop` is refused with it); `None`: `Stop` may stop it.
    pub supervisor: Option<String>,
    /// Notified by `Stop`: the accept loop shuts down as on SIGTERM.
    pub stop: tokio::sync::Notify,
}

/// Events received and waiting for their commit, across all connections,
/// at most: what pipelining clients together can make the daemon hold
/// (about 400 bytes each as records). A request waits for room.
pub const MAX_QUEUED_EVENTS: usize = 65_536;

/// Whether the open-file limit leaves room for two descriptors per
/// connection (plus the daemon's own: database, WAL, listener, runtime), so
/// a second handle for answers from the store thread can never be what
/// makes `accept` fail; otherwise every answer goes through its task.
fn room_for_second_handles(open_files: u64, max_connections: usize) -> bool {
    open_files
        >= (max_connections as u64)
            .saturating_mul(2)
            .saturating_add(64)
}

/// Open connections and the time of the last request.
pub struct Activity {
    active: AtomicUsize,
    last: Mutex<Instant>,
    /// Notified at each connection, for the idle trim (which waits for
    /// one without a timer, so an idle daemon stays asleep).
    arrived: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            active: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
            arrived: tokio::sync::Notify::new(),
        }
    }

    pub(crate) fn touch(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn last(&self) -> Instant {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }
}

/// Counts a connection as open from the moment it is accepted (so the idle
/// exit can never race a connection that is about to be served) until its
/// task ends.
pub struct ActiveGuard(Arc<Ctx>);

impl ActiveGuard {
    fn new(ctx: Arc<Ctx>) -> Self {
        ctx.activity.active.fetch_add(1, Ordering::SeqCst);
        ctx.activity.touch();
        ctx.activity.arrived.notify_one();
        ActiveGuard(ctx)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.activity.touch();
        self.0.activity.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Once the daemon has had no connection for `after`, hand its mapped code
/// back to the kernel (`telemetry_platform::mem`), then wait for the next
/// connection and do it again after the next quiet spell. Sleeps without a
/// timer while idle: an idle daemon is never woken for this.
async fn idle_trim(ctx: Arc<Ctx>, after: Option<Duration>) {
    let Some(after) = after else {
        return;
    };
    loop {
        quiet_for(&ctx, after).await;
        // A connection that came and went before this quiet spell left a
        // wakeup behind; it must not count as one after it.
        let _ = futures::FutureExt::now_or_never(ctx.activity.arrived.notified());
        // One accepted since the quiet spell ended may have been the wakeup
        // just dropped: it counts itself before it notifies, so look again.
        if !is_idle(&ctx, after) {
            continue;
        }
        match telemetry_platform::mem::release_code() {
            Ok(bytes) => tracing::debug!(bytes, "idle: released the mapped code"),
            Err(e) => {
                tracing::debug!(error = %e, "idle: cannot release the mapped code; not trying again");
                return;
            }
        }
        ctx.activity.arrived.notified().await;
    }
}

/// Returns once no connection has been open for `period`. While one is
/// open it looks again every `period`; otherwise it sleeps until the last
/// one is `period` old.
async fn quiet_for(ctx: &Ctx, period: Duration) {
    loop {
        if ctx.activity.active.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(period).await;
            continue;
        }
        let quiet_until = ctx.activity.last() + period;
        if quiet_until > Instant::now() {
            tokio::time::sleep_until(quiet_until.into()).await;
            continue;
        }
        return;
    }
}

fn is_idle(ctx: &Ctx, idle: Duration) -> bool {
    ctx.activity.active.load(Ordering::SeqCst) == 0 && ctx.activity.last().elapsed() >= idle
}

/// Resolves once the daemon has had no connection for `idle` and nothing
/// is left that it could upload; never without `idle`. When idle with
/// uploadable events, it uploads them first (the next start may be far
/// away). Events it may not upload (local-only, or withheld by consent)
/// stay in the store and do not keep it running.
async fn idle_exit(ctx: Arc<Ctx>, idle: Option<Duration>) {
    let Some(idle) = idle else {
        return std::future::pending().await;
    };
    loop {
        quiet_for(&ctx, idle).await;
        let work = match ctx.store.stats().await {
            Ok(s) => s.uploadable_batches + s.uploadable_unsealed,
            Err(_) => 1,
        };
        if work == 0 {
            // Look again: a connection may have arrived meanwhile.
            if is_idle(&ctx, idle) {
                return;
            }
            continue;
        }
        // A destination that failed or asked to wait (`Retry-After`) is
        // not flushed early just because the daemon would like to exit:
        // the work stays in the store for the next start, and the daemon
        // exits idle rather than staying up to retry.
        let waiting = {
            let st = ctx.uploader.state.lock().unwrap_or_else(|p| p.into_inner());
            st.destinations
                .values()
                .any(|d| d.next_attempt_us.is_some())
        };
        if waiting {
            if is_idle(&ctx, idle) {
                tracing::info!(
                    "idle; destinations in backoff keep their events for the next start"
                );
                return;
            }
            continue;
        }
        if ctx.uploader.flush().await.is_err() {
            // Destination down: keep retrying on the uploader's schedule,
            // and look again after another idle period.
            tokio::time::sleep(idle).await;
        }
    }
}

/// Pings the service manager's watchdog while the store answers.
async fn watchdog(ctx: Arc<Ctx>, notifier: Arc<Notifier>, interval: Duration) {
    let period = interval / 2;
    loop {
        tokio::time::sleep(period).await;
        if tokio::time::timeout(period, ctx.store.stats())
            .await
            .is_ok_and(|r| r.is_ok())
        {
            notifier.send("WATCHDOG=1");
        } else {
            tracing::warn!("store not answering; withholding the watchdog ping");
        }
    }
}

impl Ctx {
    /// Products named in a consent file or acted on before, sorted.
    pub fn products_with_consent_state(&self) -> Vec<String> {
        let mut products = self.consent.products();
        products.extend(
            self.applied
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .cloned(),
        );
        products.sort();
        products.dedup();
        products
    }
}

/// Run the daemon on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: impl Into<Listener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    // Off the runtime's threads: a held lock is tried again for a moment.
    let dir = config.state_dir.clone();
    let lock = tokio::task::spawn_blocking(move || StateLock::acquire(&dir))
        .await
        .map_err(|e| crate::store::StoreError::Io {
            path: config.state_dir.clone(),
            source: std::sync::Arc::new(std::io::Error::other(e.to_string())),
        })??;
    run_locked(lock, config, listener.into(), shutdown).await
}

/// [`run`] with the state directory locked already: `main` takes the lock
/// before it binds the socket, so a second daemon on the same state
/// directory fails before it touches any socket.
pub async fn run_locked(
    lock: StateLock,
    config: Config,
    listener: Listener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let identity = Arc::new(Identity::load(&config.identity, &config.state_dir)?);
    let catalogues = Arc::new(Catalogues::new(
        std::iter::once(config.catalog_dir.clone())
            .chain(config.manifest_system_dirs.iter().cloned())
            .collect(),
        // Manifests changed on disk are seen within a second.
        Duration::from_secs(1),
    ));
    let consent = Arc::new(Consent::new(
        config.consent_file.clone(),
        config.system_consent_file.clone(),
        config.env_opt_out,
    ));
    let layout = KeyLayout {
        prefix: config
            .s3
            .as_ref()
            .map(|s| s.prefix.clone())
            .unwrap_or_default(),
        machine_id: {
            let identity = identity.clone();
            Arc::new(move |product: &str| identity.machine_id(product))
        },
        // A product's manifest may name its own destination; read when a
        // batch is sealed, and fixed in it from then on.
        route: {
            let catalogues = catalogues.clone();
            Arc::new(move |product: &str| match catalogues.lookup(product) {
                crate::catalog::Lookup::Ready(m) => match &m.upload {
                    Some(u) => Routing::To(crate::uploader::destination::Spec::from_upload(u)),
                    None => Routing::Own,
                },
                _ => Routing::Unknown,
            })
        },
    };
    let retired_set = crate::uploader::RetiredSet::default();
    let (store, store_thread, incident) = Store::open_or_recover(
        &lock,
        StoreOptions {
            sync: config.sync,
            batch_max_events: config.batch_max_events,
            batch_max_bytes: config.batch_max_bytes,
            upload_interval: config.upload_interval,
            layout,
            clock: config.clock.clone(),
            max_store_bytes: config.max_store_bytes,
            permit: {
                let consent = consent.clone();
                let retired = retired_set.clone();
                let catalogues = catalogues.clone();
                Arc::new(move |product: &str| {
                    // A product its vendor retired is never sealed or
                    // uploaded again; the uploader drops what arrives.
                    if crate::uploader::is_retired(&retired, product) {
                        return crate::consent::Permit::Nothing;
                    }
                    // Nothing is sealed or uploaded while a product's
                    // manifest is broken or gone: its destination is not
                    // known, and the daemon's own (another party's bucket,
                    // or the outbox) is not where the user agreed to send
                    // it. Events wait until the manifest is usable again.
                    if !matches!(catalogues.lookup(product), crate::catalog::Lookup::Ready(_)) {
                        return crate::consent::Permit::Nothing;
                    }
                    consent.permit(product)
                })
            },
            consent_look: {
                let consent = consent.clone();
                Arc::new(move || consent.look())
            },
        },
    )?;
    let applied = store.applied().await?;
    // Products the user asked to forget have salted IDs from then on.
    identity.set_salts(store.id_salts().await?);
    // The daemon's own destination: the operator's bucket with the AWS
    // chain, else the outbox. Manifests' destinations join on first use.
    let (own, own_auth) = match &config.s3 {
        Some(s3) => (Sink::s3(s3, config.s3_timeout, &config.net).await, "aws"),
        None => (Sink::Outbox(config.outbox_dir.clone()), "outbox"),
    };
    let registry = crate::uploader::destination::Registry::new(
        own,
        config.destination(),
        own_auth,
        config.s3_timeout,
        config.net.clone(),
    );
    let retired = store.retired().await?;
    let refused = store.refused().await?;
    let notifier = Arc::new(Notifier::new(config.notify_socket.as_deref()));
    let (upload_stop, upload_stop_rx) = watch::channel(false);
    let (uploader, upload_task) = uploader::spawn(
        store.clone(),
        registry,
        retired,
        refused,
        retired_set,
        UploaderOptions {
            upload_interval: config.upload_interval,
            retry_min: config.retry_min,
            retry_max: config.retry_max,
            shutdown_timeout: config.shutdown_timeout,
            clock: config.clock.clone(),
            notifier: notifier.clone(),
        },
        upload_stop_rx,
    );
    let ctx = Arc::new_cyclic(|me| Ctx {
        me: me.clone(),
        store,
        uploader,
        identity,
        limits: Limits::default(),
        started: Instant::now(),
        destination: config.destination(),
        consent,
        clock: config.clock.clone(),
        catalogues,
        applied: std::sync::Mutex::new(applied),
        activity: Activity::new(),
        idle_exit: config.idle_exit,
        reconcile_lock: tokio::sync::Mutex::new(()),
        daemon_identity: transport::own_identity(),
        connection_timeout: config.connection_timeout,
        max_connections: config.max_connections,
        incidents: incident.into_iter().collect(),
        spool: crate::spool::SpoolState::new(
            &config.spool_file,
            &config.spool_dir,
            &config.state_dir,
            config.spool_check_interval,
        ),
        direct_replies: room_for_second_handles(
            transport::open_file_limit(),
            config.max_connections,
        ),
        refusals: Default::default(),
        counters: Default::default(),
        id_lock: Default::default(),
        busy_waiters: Arc::new(tokio::sync::Semaphore::new(BUSY_WAITERS)),
        queued_events: Arc::new(tokio::sync::Semaphore::new(MAX_QUEUED_EVENTS)),
        supervisor: config.supervisor.clone(),
        stop: tokio::sync::Notify::new(),
    });
    // Apply consent changes made while the daemon was not running, then
    // take in what shims spooled meanwhile.
    crate::cmd::consent::reconcile_changed(&ctx, crate::cmd::consent::Wait::Yes).await;

    ctx.spool.due();
    crate::spool::ingest(&ctx).await;
    notifier.send(&format!(
        "READY=1\nSTATUS=serving; {} event(s) pending\nMAINPID={}",
        ctx.store
            .stats()
            .await
            .map(|s| s.pending_events)
            .unwrap_or(0),
        std::process::id()
    ));
    let trim_task = tokio::spawn(idle_trim(ctx.clone(), config.idle_trim));
    let watchdog_task = config
        .watchdog
        .map(|interval| tokio::spawn(watchdog(ctx.clone(), notifier.clone(), interval)));
    let reload_task = config
        .reload
        .clone()
        .map(|reload| tokio::spawn(crate::reload::serve(ctx.clone(), config.clone(), reload)));
    let mut idle = Box::pin(idle_exit(ctx.clone(), config.idle_exit));
    let (conn_stop, conn_stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    // Poll it once before anything is served: a signal future installs its
    // handler when first polled, and `select!` below may take a waiting
    // connection first. A SIGTERM sent after a client was answered must
    // stop the daemon cleanly, not end it by the default action.
    let mut stopping =
        std::future::poll_fn(|cx| std::task::Poll::Ready(shutdown.as_mut().poll(cx).is_ready()))
            .await;
    let mut idled = false;
    while !stopping {
        tokio::select! {
            _ = &mut shutdown => stopping = true,
            _ = ctx.stop.notified() => {
                tracing::info!("asked to stop (telemetryctl stop)");
                stopping = true;
            }
            _ = &mut idle => {
                tracing::info!("idle with nothing pending; exiting until the next connection");
                idled = true;
                break;
            }
            // Reap finished connection tasks so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            res = listener.accept() => match res {
                Ok(stream) if ctx.activity.active.load(Ordering::SeqCst) >= ctx.max_connections => {
                    // Say so rather than leave the client hanging; never
                    // let a client that does not read block the loop.
                    tokio::spawn(refuse_busy(ctx.clone(), stream));
                }
                Ok(stream) => {
                    if ctx.spool.due() {
                        let ctx = ctx.clone();
                        tokio::spawn(async move { crate::spool::ingest(&ctx).await });
                    }
                    let active = ActiveGuard::new(ctx.clone());
                    let task = crate::connection::serve(ctx.clone(), stream, conn_stop_rx.clone(), done_tx.clone(), active);
                    connections.spawn(task);
                }
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    tracing::info!("shutting down");
    notifier.send("STOPPING=1\nSTATUS=shutting down");
    // They hold the context, which must go for the store to close.
    for task in watchdog_task
        .into_iter()
        .chain(reload_task)
        .chain(std::iter::once(trim_task))
    {
        task.abort();
        let _ = task.await;
    }
    drop(listener);
    drop(idle);
    let _ = conn_stop.send(true);
    drop(done_tx);
    let grace = config.shutdown_timeout + CONNECTION_GRACE;
    if tokio::time::timeout(grace, done_rx.recv()).await.is_err() {
        tracing::warn!("some connections did not finish in time; closing them");
    }
    // Aborting drops their store handles, so the store thread can finish.
    connections.shutdown().await;
    if idled {
        // A client that connected between the idle decision and the
        // listener's close found nobody and spooled its event: take it in
        // now. Any spooled after this is taken in by the next daemon, which
        // such a client starts (and which waits for our lock; ondemand).
        crate::spool::ingest(&ctx).await;
    }
    let _ = upload_stop.send(true);
    let _ = upload_task.await;
    drop(ctx);
    // The store thread exits once the last handle is gone, after its queue.
    let join = tokio::task::spawn_blocking(move || store_thread.join());
    if tokio::time::timeout(STORE_CLOSE_TIMEOUT, join)
        .await
        .is_err()
    {
        tracing::warn!(
            "the store did not close in time; SQLite will recover its journal at the next start"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// Tell a client over the connection limit to come back later, in the
/// encoding its first byte chose (binary if it sends nothing within
/// [`BUSY_READ`], or when [`BUSY_WAITERS`] refusals wait already).
async fn refuse_busy(ctx: Arc<Ctx>, mut stream: Conn) {
    use tokio::io::AsyncReadExt;
    let mut first = [0u8; 1];
    let encoding = match ctx.busy_waiters.clone().try_acquire_owned() {
        Ok(_permit) => match tokio::time::timeout(BUSY_READ, stream.read(&mut first)).await {
            Ok(Ok(1)) => Encoding::detect(first[0]),
            _ => Encoding::Binary,
        },
        Err(_) => Encoding::Binary,
    };
    // The request is not read: written in the oldest version this daemon
    // speaks, which every client since reads (a newer one reads older
    // replies, an older one no newer).
    let mut codec = WireCodec::<Request, Response>::with_encoding(encoding);
    codec.answer_in(telemetry_proto::OLDEST_PROTOCOL_VERSION);
    let mut framed = Framed::new(stream, codec);
    let message = format!(
        "telemetryd is serving its maximum of {} connections; try again shortly",
        ctx.max_connections
    );
    ctx.refusals
        .record(crate::refusals::Refusal::unread(ErrorCode::Busy, &message));
    let reply = Response::Error {
        code: ErrorCode::Busy,
        message,
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), framed.send(reply)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_handles_only_when_the_file_limit_has_room_for_them() {
        assert!(room_for_second_handles(65536, 512));
        assert!(room_for_second_handles(1088, 512));
        assert!(!room_for_second_handles(1024, 512), "a common default");
        assert!(!room_for_second_handles(256, 512), "macOS default");
        assert!(room_for_second_handles(256, 64));
    }
}
