//! The only module that touches SQLite.
//!
//! # Threading
//! One dedicated thread serves the [`rusqlite::Connection`]. Everyone else
//! talks to it through a [`Store`] handle (a bounded channel), and there is
//! no SQL anywhere else. The connection lives in a mutex that the store
//! thread holds while it runs a command; the one exception to the channel
//! is a small insert with nothing before it, arriving while the store
//! thread is idle and no other client is expected: its submitter takes the
//! mutex (never waiting for it) and commits it itself, sparing a wakeup
//! (see `lead`).
//!
//! # Group commit
//! The thread takes one command, then drains every insert already waiting
//! and commits them all in one transaction: one fsync for many clients. An
//! insert is answered only after that commit returns, which is what makes an
//! acknowledged event durable. When the previous commit carried more
//! requests than are waiting now, it waits briefly for the rest (see
//! [`Inner::gather`]); WAL checkpoints run beside it on their own thread
//! (see `checkpoint`), so no commit pays for one.
//!
//! # Crash windows
//! - Before commit: the client has no ack; nothing was promised.
//! - Seal is one transaction: the batch row (key, compressed body and the
//!   range of events it owns) appears whole or not at all; the events'
//!   rows are not touched (a batch owns its product's uploadable events
//!   from `first_seq` to `last_seq`).
//! - Upload then [`Store::complete`]: a crash between the two leaves the
//!   batch sealed; after restart it is uploaded again under the same key
//!   with the same bytes and `If-None-Match: *`, so the store answers
//!   "already there" (or, if it ignores the header, gets the same bytes
//!   again): never a second object.
//!
//! # Compatibility
//! Schema changes are migrations appended to [`MIGRATIONS`] and applied by
//! `PRAGMA user_version` inside one transaction. A database from a newer
//! daemon is served as it is (never migrated down, its version kept) when
//! the newer build declared that this one can ([`OLDEST_READER`]), and
//! otherwise refused, never modified.

use crate::batch::{compress, KeyLayout, UNROUTED};
use crate::config::{now_us, Clock, SyncMode};
use crate::consent::Permit;
use crate::record::{rfc3339_us, Record};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use telemetry_proto::{EventsPage, Mode};
use tokio::sync::{mpsc, oneshot};

mod bound;
mod checkpoint;
mod consent;
mod dedup;
mod destinations;
mod doorbell;
mod forget;
mod insert;
mod lead;
mod lock;
mod receipts;
mod seal;
mod transparency;

use crate::uploader::destination::DestId;
pub use consent::{Announce, ConsentOutcome, ConsentedSet, Decision};
pub use destinations::{RefusedAt, RetiredProduct};
use doorbell::Doorbell;
pub use forget::Forgotten;
pub use lock::StateLock;
pub use receipts::{NewReceipt, MAX_RECEIPTS, MAX_RECEIPT_BODY_BYTES};

/// Schema migrations, applied in order. Never remove or edit an entry.
pub const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_uploaded_ids.sql"),
    include_str!("migrations/0003_consent.sql"),
    include_str!("migrations/0004_dropped.sql"),
    include_str!("migrations/0005_consented_events.sql"),
    include_str!("migrations/0006_batch_destination.sql"),
    include_str!("migrations/0007_receipts_salts.sql"),
    include_str!("migrations/0008_sealed_by_range.sql"),
    include_str!("migrations/0009_seen_ids.sql"),
    include_str!("migrations/0010_key_counters.sql"),
    include_str!("migrations/0011_consented_fields.sql"),
    include_str!("migrations/0012_receipt_outbox_label.sql"),
    include_str!("migrations/0013_refused.sql"),
    include_str!("migrations/0014_store_compat.sql"),
    include_str!("migrations/0015_local_dropped.sql"),
    include_str!("migrations/0016_seen_ids_product.sql"),
];

/// The oldest schema version whose telemetryd may serve a store this build
/// has migrated; written into the store (`store_compat`) at every open. A
/// migration that older code can live with keeps it: a table or index it
/// never reads, a column with a default that rows it inserts may keep. One
/// it cannot (a column whose older inserts would be wrong, a row whose
/// meaning changes, a constraint older inserts break) raises it to the new
/// [`SCHEMA_VERSION`]. Schema 14 is the first whose builds read it: older
/// ones refuse every newer store.
pub const OLDEST_READER: usize = 14;

// Raising the floor above this build's schema would lock this build out of
// its own store; lowering it below 14 would name builds that never read it.
const _: () = assert!(OLDEST_READER >= 14 && OLDEST_READER <= MIGRATIONS.len());

/// Whether the `events` row in scope is sealed into a final batch.
pub(super) const IN_FINAL: &str = "(events.local_only = 0 AND EXISTS (SELECT 1 FROM batches b
     WHERE b.final = 1 AND b.product = events.product AND events.seq BETWEEN b.first_seq AND b.last_seq))";

/// Whether the `events` row in scope is pending: uploadable and above the
/// highest sealed seq of its product (`batch_id` is always NULL from
/// version 8; saying so lets SQLite use the `events_pending` index).
pub(super) const PENDING: &str = "(events.batch_id IS NULL AND events.local_only = 0
     AND events.seq > (SELECT COALESCE(MAX(b.last_seq), 0) FROM batches b WHERE b.product = events.product))";

/// The migration a build playing a newer release adds (the
/// `future-version` feature, for the versions-side-by-side tests): it
/// changes nothing but the schema version.
const FUTURE_MIGRATIONS: &[&str] = if cfg!(feature = "future-version") {
    &["SELECT 1;"]
} else {
    &[]
};

/// How long the store's connection waits for a lock another connection
/// (the checkpoint thread's) holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema version this build writes (`PRAGMA user_version`); a store
/// with a higher one is from a newer telemetryd and is never touched.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len() + FUTURE_MIGRATIONS.len();

/// How long, at least, an accepted event's id is remembered to drop
/// resends (at most twice this; see [`dedup`]).
pub const DEDUP_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

/// Most inserts committed in one transaction.
const MAX_GROUP: usize = 512;

/// The connections a commit may wait for: those the last commit answered,
/// unless it ended longer ago than the wait `bound` — then they are not on
/// their way back (a quiet spell, or one-shot shims arriving one by one).
fn awaited(
    last: std::collections::HashSet<u64>,
    since_last_commit: Duration,
    bound: Duration,
) -> std::collections::HashSet<u64> {
    if since_last_commit > bound {
        std::collections::HashSet::new()
    } else {
        last
    }
}

/// Longest a commit waits for more inserts to join it.
const MAX_GATHER_WAIT: Duration = Duration::from_millis(1);

/// What can go wrong in the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open the event store {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: Arc<rusqlite::Error>,
    },
    /// The state directory or database file could not be prepared.
    #[error("cannot prepare {path}: {source}; the state dir (--state-dir / TELEMETRY_STATE_DIR, or state_dir in the config file) must be a directory this user can write")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: Arc<std::io::Error>,
    },
    /// The database was written by a newer telemetryd that did not say
    /// this one may serve it.
    #[error("the event store {path} has schema version {found}, newer than this telemetryd supports ({supported}){}; upgrade telemetryd or point --state-dir elsewhere", needs_text(*.oldest_reader))]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// The newest this build knows.
        supported: usize,
        /// The oldest schema the newer build said may serve it, when it
        /// said (builds before schema 14 did not).
        oldest_reader: Option<i64>,
    },
    /// A statement failed.
    #[error("event store {op} failed: {source}")]
    Sqlite {
        /// What was being done.
        op: &'static str,
        /// Why.
        source: Arc<rusqlite::Error>,
    },
    /// Compressing a batch failed.
    #[error("cannot compress batch: {0}")]
    Compress(Arc<std::io::Error>),
    /// A kept batch body could not be decompressed.
    #[error("cannot decompress the kept batch {key}: {source}")]
    Decompress {
        /// The batch's key.
        key: String,
        /// Why.
        source: Arc<std::io::Error>,
    },
    /// The store thread has stopped.
    #[error("the event store is closed")]
    Closed,
    /// The store is at its size limit and nothing older can make room.
    #[error("the event store is full (max_store_bytes = {limit}) and nothing older can be dropped; raise max_store_bytes or let uploads catch up")]
    Full {
        /// The limit.
        limit: u64,
    },
    /// The consent files changed between the look a request was checked
    /// against and the look before its commit: it is checked again (never
    /// an answer a client sees).
    #[error("the consent files changed while the events waited for their commit")]
    ConsentStale,
    /// The product's consent changed between the check and the commit.
    #[error("consent for {product:?} changed while the events were being recorded; nothing was recorded")]
    ConsentChanged {
        /// The product.
        product: String,
    },
    /// Another process holds the state directory.
    #[error("another telemetryd is using the state directory (lock {path} is held); stop it, or use another --state-dir")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
}

impl StoreError {
    /// Whether SQLite says the file is damaged or not a database at all.
    pub fn is_corruption(&self) -> bool {
        let source = match self {
            StoreError::Open { source, .. } | StoreError::Sqlite { source, .. } => source,
            _ => return false,
        };
        matches!(
            source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::NotADatabase) | Some(rusqlite::ErrorCode::DatabaseCorrupt)
        )
    }
}

fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Sqlite {
        op,
        source: Arc::new(e),
    }
}

/// Settings the store needs from the daemon's config.
#[derive(Clone)]
pub struct StoreOptions {
    /// SQLite durability.
    pub sync: SyncMode,
    /// Seal when a product has this many pending events.
    pub batch_max_events: usize,
    /// Seal when a product's pending NDJSON reaches this many bytes.
    pub batch_max_bytes: usize,
    /// Seal when the oldest pending event is this old.
    pub upload_interval: Duration,
    /// Object key layout.
    pub layout: KeyLayout,
    /// Wall clock.
    pub clock: Clock,
    /// Most NDJSON bytes kept (pending, sealed and local); past it the
    /// oldest unsealed events are dropped and counted.
    pub max_store_bytes: u64,
    /// What may be sealed and uploaded for a product (its consent).
    pub permit: Arc<dyn Fn(&str) -> Permit + Send + Sync>,
    /// Look at the consent files now and return the generation seen (see
    /// `Consent::look`): made once per commit that holds records checked
    /// against an earlier look, which are stored only if it matches theirs.
    pub consent_look: Arc<dyn Fn() -> u64 + Send + Sync>,
}

/// Result of one insert command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InsertOutcome {
    /// Events newly stored.
    pub accepted: u32,
    /// Events whose id was already stored.
    pub duplicates: u32,
    /// The uploader should re-plan: a batch is ready, or the first pending
    /// event arrived (which starts the age clock).
    pub wake_uploader: bool,
}

/// What one drain of a destination has passed over: batches it refused,
/// and products it refused as a whole (no manifest for them at its
/// broker). The batches behind them still go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Passed {
    /// Sealed batch ids.
    pub batches: BTreeSet<i64>,
    /// Product names.
    pub products: BTreeSet<String>,
}

/// A sealed batch waiting for upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBatch {
    /// Row id.
    pub id: i64,
    /// Its product.
    pub product: String,
    /// Where it goes, fixed when it was sealed.
    pub destination: DestId,
    /// Object key.
    pub key: String,
    /// zstd-compressed NDJSON.
    pub body: Vec<u8>,
    /// Events in it.
    pub events: u64,
    /// NDJSON bytes before compression.
    pub raw_bytes: u64,
}

/// Counters for `status`, all O(1) to produce.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats {
    /// Events stored and not yet uploaded (sealed or not).
    pub pending_events: u64,
    /// NDJSON bytes of those events.
    pub pending_bytes: u64,
    /// Sealed batches waiting for upload.
    pub sealed_batches: u64,
    /// Reception time of the oldest event not yet sealed.
    pub oldest_unsealed_us: Option<i64>,
    /// Sealed batches the current consent allows to upload now.
    pub uploadable_batches: u64,
    /// Unsealed events the current consent allows to upload.
    pub uploadable_unsealed: u64,
    /// Events kept on this machine only (`local` mode).
    pub local_events: u64,
    /// Events dropped to stay under the size limit and not yet reported
    /// upstream, per product.
    pub dropped: Vec<(String, u64)>,
    /// Sealed batches the current consent allows to upload now, per
    /// destination (absent: none).
    pub uploadable_by_destination: BTreeMap<DestId, u64>,
    /// Batches held until their product's manifest is usable again (see
    /// [`crate::batch::UNROUTED`]).
    pub held_batches: u64,
    /// Uploadable events dropped to stay under `max_store_bytes` since
    /// the store opened.
    pub store_full_drops: u64,
    /// Local-only events dropped so, per product, since the store was
    /// made (kept across restarts; a forget clears its product's).
    pub local_full_drops: BTreeMap<String, u64>,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Called on the store thread with an insert's outcome, as soon as it is
/// known (after the commit, or on refusal).
type Done = Box<dyn FnOnce(Result<InsertOutcome, StoreError>) + Send>;

enum Cmd {
    Insert {
        records: Vec<Record>,
        reply: Option<Done>,
        /// The connection waiting for the reply, if one is (see
        /// [`Inner::gather`]).
        client: Option<u64>,
    },
    Seal {
        force: bool,
        reply: Reply<usize>,
    },
    NextSealed {
        /// Only batches for this destination (`None`: any).
        to: Option<DestId>,
        /// Batches and products this drain has already passed over.
        past: Passed,
        reply: Reply<Option<SealedBatch>>,
    },
    Retire {
        product: String,
        destination: String,
        message: String,
        reply: Reply<u64>,
    },
    Retired {
        reply: Reply<Vec<RetiredProduct>>,
    },
    Stats {
        reply: Reply<Stats>,
    },
    ApplyConsent {
        product: String,
        decision: Decision,
        final_record: Record,
        announce: Announce,
        reply: Reply<ConsentOutcome>,
    },
    Applied {
        reply: Reply<BTreeMap<String, Decision>>,
    },
    ConsentedEvents {
        product: String,
        version: u32,
        offer: Option<ConsentedSet>,
        reply: Reply<Option<ConsentedSet>>,
    },
    Show {
        product: Option<String>,
        after_seq: i64,
        reply: Reply<EventsPage>,
    },
    Purge {
        product: Option<String>,
        reply: Reply<u64>,
    },
    /// Run on the store thread: how the submodules' requests (receipts,
    /// forget) reach it without a variant each.
    Run(Box<dyn FnOnce(&mut Inner) + Send>),
}

/// Handle to the store thread. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// Declared before `tx`, so a handle lets go of it before the store
    /// thread can see the queue close: the thread's is then the last, and
    /// the database is closed there, before [`StoreThread::join`] returns.
    inner: Arc<std::sync::Mutex<Inner>>,
    /// Commands sent to the store thread and not yet finished there (see
    /// [`Queued`]).
    queued: Arc<Queued>,
    tx: mpsc::Sender<Cmd>,
    bell: Arc<Doorbell>,
}

/// Commands handed to the store thread and not yet finished: counted
/// from before the send until the thread is done with them (for an insert,
/// until its commit), so one the thread has taken from its queue but not
/// yet run still counts. A reader leads only when this is zero (see
/// `lead`): every insert sent before, `ack=false` ones included, is then
/// committed. A command the store thread died in (a panic) is never
/// counted down, so nobody leads on a store nobody serves.
#[derive(Default)]
struct Queued(std::sync::atomic::AtomicUsize);

impl Queued {
    fn add(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn done(&self, n: usize) {
        self.0.fetch_sub(n, std::sync::atomic::Ordering::SeqCst);
    }

    fn none(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst) == 0
    }
}

/// The outcome of a submitted insert, once committed (or refused), with
/// what the submitter's `first` returned (see [`Store::submit_then`]).
pub struct InsertWait<R>(oneshot::Receiver<(Result<InsertOutcome, StoreError>, R)>);

impl<R> std::future::Future for InsertWait<R> {
    type Output = Result<(Result<InsertOutcome, StoreError>, R), StoreError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.map_err(|_| StoreError::Closed))
    }
}

/// Joins the store thread once every [`Store`] handle is dropped.
pub struct StoreThread(std::thread::JoinHandle<()>);

impl StoreThread {
    /// Wait for the thread to finish its queue and close the database.
    pub fn join(self) {
        let _ = self.0.join();
    }
}

/// Name of the database file inside the state dir.
pub const DB_FILE: &str = "events.sqlite3";

impl Store {
    /// Open (creating and migrating if needed) `state_dir/events.sqlite3`
    /// and start the store thread.
    pub fn open(state_dir: &Path, opts: StoreOptions) -> Result<(Store, StoreThread), StoreError> {
        Store::open_locked(&StateLock::acquire(state_dir)?, opts)
    }

    /// [`Store::open`] in a state directory already locked.
    pub fn open_locked(
        lock: &StateLock,
        opts: StoreOptions,
    ) -> Result<(Store, StoreThread), StoreError> {
        let path = lock.dir().join(DB_FILE);
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e| StoreError::Io {
                path: p,
                source: Arc::new(e),
            }
        };
        let lock = lock.clone();
        // Create the file 0600 ourselves: SQLite copies the database's mode
        // to its -wal and -shm files.
        telemetry_platform::fs::with_mode(
            std::fs::OpenOptions::new().create(true).append(true),
            0o600,
        )
        .open(&path)
        .map_err(io(&path))?;
        let conn = Connection::open(&path).map_err(|e| StoreError::Open {
            path: path.clone(),
            source: Arc::new(e),
        })?;
        let bell = Arc::new(Doorbell::default());
        let (tx, rx) = mpsc::channel(1024);
        let queued = Arc::new(Queued::default());
        let inner = Inner::new(conn, &path, opts, lock, bell.clone(), queued.clone())?;
        let inner = Arc::new(std::sync::Mutex::new(inner));
        let shared = inner.clone();
        let handle = std::thread::Builder::new()
            .name("telemetryd-store".into())
            .spawn(move || Inner::serve(&shared, rx))
            .map_err(io(&path))?;
        Ok((
            Store {
                inner,
                queued,
                tx,
                bell,
            },
            StoreThread(handle),
        ))
    }

    /// [`Store::open`], but a damaged database is moved aside (kept for
    /// inspection as `events.sqlite3.corrupt-<time>`) and a fresh one
    /// created. Returns the incident, for `status`, when that happened. A
    /// database from a newer telemetryd is still refused, never touched.
    pub fn open_or_recover(
        lock: &StateLock,
        opts: StoreOptions,
    ) -> Result<(Store, StoreThread, Option<String>), StoreError> {
        let state_dir = lock.dir();
        match Store::open_locked(lock, opts.clone()) {
            Ok((s, t)) => Ok((s, t, None)),
            Err(e) if e.is_corruption() => {
                let path = state_dir.join(DB_FILE);
                let stamp = rfc3339_us(now_us(&opts.clock)).replace(':', "");
                let aside = state_dir.join(format!("{DB_FILE}.corrupt-{stamp}"));
                for suffix in ["", "-wal", "-shm"] {
                    let from = PathBuf::from(format!("{}{suffix}", path.display()));
                    let to = PathBuf::from(format!("{}{suffix}", aside.display()));
                    if from.exists() {
                        std::fs::rename(&from, &to).map_err(|source| StoreError::Io {
                            path: from.clone(),
                            source: Arc::new(source),
                        })?;
                    }
                }
                let incident = format!(
                    "{} was damaged ({e}); moved to {} for inspection and started a new store at {}",
                    path.display(),
                    aside.display(),
                    rfc3339_us(now_us(&opts.clock))
                );
                tracing::error!("{incident}");
                let (s, t) = Store::open_locked(lock, opts)?;
                Ok((s, t, Some(incident)))
            }
            Err(e) => Err(e),
        }
    }

    /// Hand `cmd` to the store thread, counted in [`Queued`] until it is
    /// done there.
    async fn send(&self, cmd: Cmd) -> Result<(), StoreError> {
        self.queued.add();
        self.tx.send(cmd).await.map_err(|_| {
            self.queued.done(1);
            StoreError::Closed
        })
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply)).await?;
        self.bell.ring();
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Store records; resolves after they are committed.
    pub async fn insert(&self, records: Vec<Record>) -> Result<InsertOutcome, StoreError> {
        self.insert_then(None, false, records, |_| ())
            .await
            .and_then(|(r, ())| r)
    }

    /// Store records for a client; `first` runs on the thread that commits
    /// (the store thread, or the caller's when it leads) with the outcome
    /// the moment it is known, before this future is woken, so
    /// it can answer the client without a handoff back to the caller's
    /// thread (each handoff is a wakeup, and on a small VM a wakeup costs
    /// as much as the rest of a request). Resolves to the outcome and what
    /// `first` returned; `first` does not run when the store is closed.
    ///
    /// `client` is the connection waiting, when it will likely send again
    /// once answered: commits wait briefly for such clients to share one
    /// fsync. With `alone` (nothing of the submitter's is queued before
    /// it), the caller's thread may commit it itself (see [`Store::lead`]).
    pub async fn insert_then<R: Send + 'static>(
        &self,
        client: Option<u64>,
        alone: bool,
        records: Vec<Record>,
        first: impl FnOnce(&Result<InsertOutcome, StoreError>) -> R + Send + 'static,
    ) -> Result<(Result<InsertOutcome, StoreError>, R), StoreError> {
        self.submit_then(client, alone, records, first).await?.await
    }

    /// [`Store::insert_then`] in two steps: this one queues the records
    /// (so inserts submitted one after another commit in that order, in
    /// one transaction when they are queued together), the returned
    /// future waits for the outcome. A pipelining connection queues each
    /// request as it arrives and waits for none of them before reading
    /// the next.
    pub async fn submit_then<R: Send + 'static>(
        &self,
        client: Option<u64>,
        alone: bool,
        records: Vec<Record>,
        first: impl FnOnce(&Result<InsertOutcome, StoreError>) -> R + Send + 'static,
    ) -> Result<InsertWait<R>, StoreError> {
        let (tx, rx) = oneshot::channel();
        let done: Done = Box::new(move |outcome| {
            let r = first(&outcome);
            let _ = tx.send((outcome, r));
        });
        let Some((records, done)) = self.lead(alone, client, records, done) else {
            return Ok(InsertWait(rx));
        };
        self.send(Cmd::Insert {
            records,
            reply: Some(done),
            client,
        })
        .await?;
        self.bell.ring_insert(client);
        Ok(InsertWait(rx))
    }

    /// Queue records without waiting for the commit. `done` is called on
    /// the store thread with the outcome once the records are committed
    /// (or refused), not when they are queued: what it holds (what bounds
    /// the events waiting for a commit) must cover these too.
    pub async fn insert_no_wait(
        &self,
        records: Vec<Record>,
        done: impl FnOnce(&Result<InsertOutcome, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let done: Done = Box::new(move |outcome| done(&outcome));
        self.send(Cmd::Insert {
            records,
            reply: Some(done),
            client: None,
        })
        .await?;
        self.bell.ring_insert(None);
        Ok(())
    }

    /// Seal the batches that are due (all pending events if `force`).
    /// Returns how many batches were sealed.
    pub async fn seal(&self, force: bool) -> Result<usize, StoreError> {
        self.call(|reply| Cmd::Seal { force, reply }).await
    }

    /// The oldest sealed batch the current consent allows to upload, if
    /// any.
    pub async fn next_sealed(&self) -> Result<Option<SealedBatch>, StoreError> {
        self.call(|reply| Cmd::NextSealed {
            to: None,
            past: Passed::default(),
            reply,
        })
        .await
    }

    /// The oldest uploadable sealed batch for destination `to`, if any.
    pub async fn next_sealed_to(&self, to: DestId) -> Result<Option<SealedBatch>, StoreError> {
        self.next_sealed_past(to, Passed::default()).await
    }

    /// The oldest uploadable sealed batch for destination `to` that is
    /// not in `past` (batches, or products, its destination refused in
    /// this drain), if any.
    pub async fn next_sealed_past(
        &self,
        to: DestId,
        past: Passed,
    ) -> Result<Option<SealedBatch>, StoreError> {
        self.call(|reply| Cmd::NextSealed {
            to: Some(to),
            past,
            reply,
        })
        .await
    }

    /// The upload of the batch last handed out for `to` failed (it will be
    /// asked for again): making room may drop it meanwhile.
    pub async fn let_go(&self, to: DestId) -> Result<(), StoreError> {
        self.run_on(move |inner| {
            inner.handed_out.remove(&Some(to));
            Ok(())
        })
        .await
    }

    /// Stop uploading `product` for good (its vendor retired it): drop its
    /// events not yet uploaded, sealed or not (local ones stay), and count
    /// them against it. Returns how many were dropped now.
    pub async fn retire(
        &self,
        product: &str,
        destination: &str,
        message: &str,
    ) -> Result<u64, StoreError> {
        let (product, destination, message) = (
            product.to_string(),
            destination.to_string(),
            message.to_string(),
        );
        self.call(|reply| Cmd::Retire {
            product,
            destination,
            message,
            reply,
        })
        .await
    }

    /// Drop sealed batch `id` because its destination refuses it for good
    /// (a retired build, too old for the broker's day window): the batch,
    /// not the destination, is at fault, and retrying it would hold back
    /// every batch behind it. Its events are not counted as a full store's
    /// drops: they are added to `destination`'s refused count (its receipt
    /// label), with `why`, which `status` shows.
    pub async fn reject(&self, id: i64, destination: &str, why: &str) -> Result<u64, StoreError> {
        let (destination, why) = (destination.to_string(), why.to_string());
        self.run_on(move |inner| inner.reject(id, &destination, &why))
            .await
    }

    /// What each destination refused for good, as [`Store::reject`]
    /// recorded it.
    pub async fn refused(&self) -> Result<Vec<RefusedAt>, StoreError> {
        self.run_on(|inner| inner.refused()).await
    }

    /// Products retired so far.
    pub async fn retired(&self) -> Result<Vec<RetiredProduct>, StoreError> {
        self.call(|reply| Cmd::Retired { reply }).await
    }

    /// Use new batch and size limits from now on (a configuration reload):
    /// `(batch_max_events, batch_max_bytes, upload_interval, max_store_bytes)`.
    pub async fn set_limits(
        &self,
        batch_max_events: usize,
        batch_max_bytes: usize,
        upload_interval: Duration,
        max_store_bytes: u64,
    ) -> Result<(), StoreError> {
        self.run_on(move |inner| {
            inner.opts.batch_max_events = batch_max_events;
            inner.opts.batch_max_bytes = batch_max_bytes;
            inner.opts.upload_interval = upload_interval;
            inner.opts.max_store_bytes = max_store_bytes;
            Ok(())
        })
        .await
    }

    /// Run `f` on the store thread and return what it returns.
    async fn run_on<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.call(|reply| {
            Cmd::Run(Box::new(move |inner| {
                let _ = reply.send(f(inner));
            }))
        })
        .await
    }

    /// Current counters.
    pub async fn stats(&self) -> Result<Stats, StoreError> {
        self.call(|reply| Cmd::Stats { reply }).await
    }

    /// Act on the user's consent decision for `product` (see
    /// [`ConsentOutcome`]): purge on `off`, keep `local` events local, and
    /// record `final_record` (the `telemetry_off` event) when an `on`
    /// product is turned off, as `announce` says.
    pub async fn apply_consent(
        &self,
        product: &str,
        decision: Decision,
        final_record: Record,
        announce: Announce,
    ) -> Result<ConsentOutcome, StoreError> {
        let product = product.to_string();
        self.call(|reply| Cmd::ApplyConsent {
            product,
            decision,
            final_record,
            announce,
            reply,
        })
        .await
    }

    /// The consent decision last acted on, per product.
    pub async fn applied(&self) -> Result<BTreeMap<String, Decision>, StoreError> {
        self.call(|reply| Cmd::Applied { reply }).await
    }

    /// The event set consented to for `product` at manifest `version` (0:
    /// a decision without a version), recording `offer` as that set first
    /// if none is recorded yet. `None`: none recorded and no offer.
    pub async fn consented_events(
        &self,
        product: &str,
        version: u32,
        offer: Option<ConsentedSet>,
    ) -> Result<Option<ConsentedSet>, StoreError> {
        let product = product.to_string();
        self.call(|reply| Cmd::ConsentedEvents {
            product,
            version,
            offer,
            reply,
        })
        .await
    }

    /// A page of stored events after `after_seq`, oldest first.
    pub async fn show(
        &self,
        product: Option<String>,
        after_seq: i64,
    ) -> Result<EventsPage, StoreError> {
        self.call(|reply| Cmd::Show {
            product,
            after_seq,
            reply,
        })
        .await
    }

    /// Delete every stored event not yet uploaded (of `product`, or all).
    pub async fn purge(&self, product: Option<String>) -> Result<u64, StoreError> {
        self.call(|reply| Cmd::Purge { product, reply }).await
    }
}

/// Pending (unsealed) totals of one product, kept in memory so status and
/// seal decisions never scan the table.
#[derive(Debug, Default, Clone, Copy)]
struct Pending {
    events: u64,
    bytes: u64,
}

struct Inner {
    /// Declared before `conn`: stopped (and its connection closed) first.
    checkpointer: Option<checkpoint::Checkpointer>,
    /// The current generation of seen ids (see [`dedup`]).
    seen: dedup::SeenIds,
    /// Connections answered by the last insert commit (see [`Inner::gather`]).
    last_clients: std::collections::HashSet<u64>,
    /// Rung by senders (see [`Doorbell`]).
    bell: Arc<Doorbell>,
    /// Counted down as commands finish (see [`Queued`]).
    queued: Arc<Queued>,
    /// How long the last insert commit took, and when it ended.
    last_commit: Duration,
    last_commit_end: Instant,
    conn: Connection,
    /// Held (flock) for as long as the store is open.
    _lock: StateLock,
    opts: StoreOptions,
    unsealed: BTreeMap<String, Pending>,
    /// Local-only events per product.
    local: BTreeMap<String, Pending>,
    /// Dropped-event counts not yet reported, per product (mirrors `dropped`).
    dropped: BTreeMap<String, u64>,
    /// The consent decision last acted on, per product.
    applied: BTreeMap<String, Decision>,
    sealed_events: u64,
    sealed_bytes: u64,
    sealed_batches: u64,
    /// Uploadable events dropped to stay under `max_store_bytes` since
    /// start.
    full_drops: u64,
    /// Local-only events dropped to stay under the limit, per product
    /// (mirrors the `local_dropped` table).
    local_full_drops: BTreeMap<String, u64>,
    /// The batch last handed to the uploader, per destination asked for:
    /// it may be on its way, so making room never drops it (its events
    /// would be counted as dropped and delivered too).
    handed_out: BTreeMap<Option<DestId>, i64>,
}

/// What a store's schema says about this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    /// Its `PRAGMA user_version`.
    pub version: i64,
    /// The oldest schema whose builds may serve it, as the build that last
    /// opened it wrote; `None` before schema 14 (or unreadable).
    pub oldest_reader: Option<i64>,
}

impl Schema {
    /// Read both, writing nothing.
    pub fn read(conn: &Connection) -> rusqlite::Result<Schema> {
        let version = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        // Any failure (no such table before v14) reads as "not said", which
        // only ever refuses.
        let oldest_reader = conn
            .query_row(
                "SELECT oldest_reader FROM store_compat WHERE only = 1",
                [],
                |r| r.get(0),
            )
            .ok();
        Ok(Schema {
            version,
            oldest_reader,
        })
    }

    /// Whether it is newer than this build knows.
    pub fn is_newer(&self) -> bool {
        self.version > SCHEMA_VERSION as i64
    }

    /// Whether this build may serve it: its own schema or older (then
    /// migrated), or newer with a newer build's word that this one can.
    pub fn servable(&self) -> bool {
        !self.is_newer()
            || self
                .oldest_reader
                .is_some_and(|oldest| oldest <= SCHEMA_VERSION as i64)
    }

    /// The refusal for a store this build may not serve.
    fn too_new(&self, path: &Path) -> StoreError {
        StoreError::TooNew {
            path: path.to_path_buf(),
            found: self.version,
            supported: SCHEMA_VERSION,
            oldest_reader: self.oldest_reader,
        }
    }
}

/// The part of [`StoreError::TooNew`]'s message that says what the newer
/// build asked for, when it said.
fn needs_text(oldest_reader: Option<i64>) -> String {
    match oldest_reader {
        Some(n) => {
            format!(", and the telemetryd that migrated it needs schema {n} or newer to serve it")
        }
        None => String::new(),
    }
}

/// Apply pending migrations in one transaction and record which builds may
/// serve the store; serve a newer database as it is when its builds said
/// this one may, and refuse it otherwise.
fn migrate(conn: &mut Connection, path: &Path, now_us: i64) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("migration"))?;
    let schema = Schema::read(&tx).map_err(sql("reading schema version"))?;
    if !schema.servable() {
        return Err(schema.too_new(path));
    }
    if schema.is_newer() {
        // Nothing to do, and nothing is written: its own builds keep its
        // version and floor.
        return Ok(());
    }
    let version = schema.version;
    let steps = MIGRATIONS.iter().chain(FUTURE_MIGRATIONS);
    for (i, step) in steps.enumerate().skip(version.max(0) as usize) {
        tx.execute_batch(step).map_err(sql("migration"))?;
        if i == 0 {
            // Start sequence numbers at the creation time in ms × 1000, so
            // a store re-created on this machine (after a wipe or reinstall)
            // never reuses a seq and thus never overwrites an object an
            // earlier store uploaded.
            let base = (now_us / 1000).max(0) * 1000;
            tx.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?1)",
                params![base],
            )
            .map_err(sql("migration"))?;
        }
    }
    // The first generation of seen ids starts when the store first opens
    // at version 9 (the migration cannot know the injected clock).
    if version < 9 {
        tx.execute(
            "UPDATE seen_generation SET since_us = ?1 WHERE since_us = 0",
            params![now_us],
        )
        .map_err(sql("migration"))?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION as i64)
        .map_err(sql("migration"))?;
    // At every open, not only when migrating: this build is the newest to
    // have opened the store, so its word is the one that holds.
    tx.execute(
        "INSERT INTO store_compat (only, oldest_reader) VALUES (1, ?1)
         ON CONFLICT (only) DO UPDATE SET oldest_reader = excluded.oldest_reader",
        params![OLDEST_READER as i64],
    )
    .map_err(sql("migration"))?;
    tx.commit().map_err(sql("migration"))
}

impl Inner {
    /// After deleting a user's events on their word (purge, off, forget):
    /// copy the WAL into the database and empty it, so the deleted rows
    /// are not still readable in the WAL's older page images. Best effort:
    /// a reader in the way leaves it to the checkpoint thread.
    pub(super) fn scrub_wal(&self) {
        // Not waiting long for the checkpoint thread (emits wait behind
        // this thread meanwhile): a few tries while it finishes a pass.
        // Its lock makes SQLite answer "busy" at once, not wait.
        let _ = self.conn.busy_timeout(Duration::from_millis(100));
        let mut emptied = false;
        for _ in 0..5 {
            match self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    r.get::<_, i64>(0)
                }) {
                Ok(0) => {
                    emptied = true;
                    break;
                }
                Ok(_) | Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let _ = self.conn.busy_timeout(BUSY_TIMEOUT);
        if !emptied {
            tracing::warn!("could not empty the WAL after a deletion (a checkpoint was in the way); the deleted rows' older page images stay in it until it is next reused");
        }
        self.not_erasing();
    }

    /// Back to overwriting only where pages are written anyway.
    fn not_erasing(&self) {
        let _ = self.conn.pragma_update(None, "secure_delete", "FAST");
    }

    /// `delete`, a deletion on the user's word, with every freed page
    /// overwritten and the WAL emptied after it; secure_delete goes back
    /// to FAST whatever `delete` returns.
    pub(super) fn erase<T>(
        &mut self,
        delete: impl FnOnce(&mut Self) -> Result<T, StoreError>,
        deleted: impl FnOnce(&T) -> bool,
    ) -> Result<T, StoreError> {
        // Every page the deletion frees is overwritten too.
        let _ = self.conn.pragma_update(None, "secure_delete", "ON");
        let r = delete(self);
        match &r {
            Ok(v) if deleted(v) => self.scrub_wal(),
            _ => self.not_erasing(),
        }
        r
    }

    fn new(
        mut conn: Connection,
        path: &Path,
        opts: StoreOptions,
        lock: StateLock,
        bell: Arc<Doorbell>,
        queued: Arc<Queued>,
    ) -> Result<Inner, StoreError> {
        let open_err = |e| StoreError::Open {
            path: path.to_path_buf(),
            source: Arc::new(e),
        };
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // Look before touching anything: a newer database this build may
        // not serve is refused unmodified (switching the journal mode would
        // already write).
        let schema = Schema::read(&conn).map_err(open_err)?;
        if !schema.servable() {
            return Err(schema.too_new(path));
        }
        if schema.is_newer() {
            tracing::info!(
                store_schema = schema.version,
                our_schema = SCHEMA_VERSION,
                "the event store is newer than this telemetryd, and the telemetryd that migrated it says this one may serve it; serving it as it is"
            );
        }
        // A damaged file is found now, at open, where it can be moved
        // aside, rather than by whichever query reaches the bad page.
        let check: String = conn
            .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
            .map_err(open_err)?;
        if check != "ok" {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                source: Arc::new(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                    Some(check),
                )),
            });
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        let sync = match opts.sync {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(open_err)?;
        // What is deleted is overwritten where its page is written anyway
        // (FAST: no extra I/O for the uploads' and the bounds' deletes); a
        // purge, an off or a forget turns it fully on for its own deletion
        // (see `Inner::erasing`).
        conn.pragma_update(None, "secure_delete", "FAST")
            .map_err(open_err)?;
        migrate(&mut conn, path, now_us(&opts.clock))?;

        let checkpointer = checkpoint::Checkpointer::start(path);
        if checkpointer.is_some() {
            conn.pragma_update(None, "wal_autocheckpoint", checkpoint::BACKSTOP_FRAMES)
                .map_err(open_err)?;
        }
        conn.pragma_update(None, "journal_size_limit", checkpoint::WAL_SIZE_LIMIT)
            .map_err(open_err)?;
        let mut inner = Inner {
            checkpointer,
            seen: dedup::SeenIds::load(&conn)?,
            last_clients: std::collections::HashSet::new(),
            bell,
            queued,
            last_commit: Duration::ZERO,
            last_commit_end: Instant::now(),
            conn,
            _lock: lock,
            opts,
            unsealed: BTreeMap::new(),
            local: BTreeMap::new(),
            dropped: BTreeMap::new(),
            applied: BTreeMap::new(),
            sealed_events: 0,
            sealed_bytes: 0,
            sealed_batches: 0,
            full_drops: 0,
            local_full_drops: BTreeMap::new(),
            handed_out: BTreeMap::new(),
        };
        inner.load_counters()?;
        Ok(inner)
    }

    /// One pass over the table at startup; afterwards counters are kept
    /// up to date incrementally.
    fn load_counters(&mut self) -> Result<(), StoreError> {
        self.applied.clear();
        self.unsealed = self.pending_by_product(PENDING)?;
        self.local = self.pending_by_product("local_only = 1")?;
        self.dropped = self.read_dropped()?;
        self.local_full_drops = self.read_local_dropped()?;
        let mut stmt = self
            .conn
            .prepare("SELECT product, mode, off_marker FROM consent_applied")
            .map_err(sql("loading consent"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })
            .map_err(sql("loading consent"))?;
        for row in rows {
            let (product, mode, off_marker) = row.map_err(sql("loading consent"))?;
            // An unreadable mode can only mean less collection.
            let mode = Mode::parse(&mode).unwrap_or(Mode::Off);
            self.applied.insert(product, Decision { mode, off_marker });
        }
        drop(stmt);
        let (batches, events, bytes): (i64, i64, i64) = self
            .conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(events), 0), COALESCE(SUM(raw_bytes), 0) FROM batches",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(sql("loading counters"))?;
        self.sealed_batches = batches as u64;
        self.sealed_events = events as u64;
        self.sealed_bytes = bytes as u64;
        Ok(())
    }

    /// The store thread: run each command with the store held (a
    /// submitter may hold it for a commit of its own; see
    /// [`Store::lead`]).
    fn serve(shared: &std::sync::Mutex<Inner>, mut rx: mpsc::Receiver<Cmd>) {
        while let Some(cmd) = rx.blocking_recv() {
            shared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .run(cmd, &mut rx);
        }
    }

    /// Commit a group of inserts and account for it.
    fn commit(&mut self, group: Vec<(Vec<Record>, Option<Done>)>) {
        let started = Instant::now();
        let bytes = self.insert_group(group);
        self.last_commit = started.elapsed();
        self.last_commit_end = Instant::now();
        self.wrote(bytes);
    }

    /// Run `cmd`, and any other command gathering takes from the queue.
    fn run(&mut self, cmd: Cmd, rx: &mut mpsc::Receiver<Cmd>) {
        let mut next = Some(cmd);
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Insert {
                    records,
                    reply,
                    client,
                } => {
                    let mut group = vec![(records, reply)];
                    next = self.gather(rx, client, &mut group);
                    // The inserts gathered besides this one (counted
                    // below) are done with it.
                    let gathered = group.len() - 1;
                    self.commit(group);
                    self.queued.done(gathered);
                }
                Cmd::Seal { force, reply } => {
                    let sealed = self.seal(force);
                    if matches!(sealed, Ok(n) if n > 0) {
                        self.wrote(checkpoint::BYTES_PER_NUDGE);
                    }
                    let _ = reply.send(sealed);
                }
                Cmd::NextSealed { to, past, reply } => {
                    let _ = reply.send(self.next_sealed(to.as_ref(), &past));
                }
                Cmd::Retire {
                    product,
                    destination,
                    message,
                    reply,
                } => {
                    let _ = reply.send(self.retire(&product, &destination, &message));
                    self.wrote(checkpoint::BYTES_PER_NUDGE);
                }
                Cmd::Retired { reply } => {
                    let _ = reply.send(self.retired());
                }
                Cmd::Stats { reply } => {
                    let _ = reply.send(self.stats());
                }
                Cmd::ApplyConsent {
                    product,
                    decision,
                    final_record,
                    announce,
                    reply,
                } => {
                    let _ =
                        reply.send(self.apply_consent(&product, decision, final_record, announce));
                    // A switch to off purges rows.
                    self.wrote(checkpoint::BYTES_PER_NUDGE);
                }
                Cmd::Applied { reply } => {
                    let _ = reply.send(Ok(self.applied.clone()));
                }
                Cmd::ConsentedEvents {
                    product,
                    version,
                    offer,
                    reply,
                } => {
                    let _ = reply.send(self.consented_events(&product, version, offer));
                }
                Cmd::Show {
                    product,
                    after_seq,
                    reply,
                } => {
                    let _ = reply.send(self.show(product.as_deref(), after_seq));
                }
                Cmd::Purge { product, reply } => {
                    let _ = reply.send(self.purge(product.as_deref()));
                    self.wrote(checkpoint::BYTES_PER_NUDGE);
                }
                Cmd::Run(f) => {
                    f(self);
                    self.wrote(checkpoint::BYTES_PER_NUDGE);
                }
            }
            self.queued.done(1);
        }
    }

    /// Count a committed write toward the next checkpoint.
    fn wrote(&mut self, bytes: u64) {
        if let Some(c) = &mut self.checkpointer {
            c.wrote(bytes);
        }
    }

    /// NDJSON bytes held: pending, sealed and local-only.
    fn stored_bytes(&self) -> u64 {
        let unsealed: u64 = self.unsealed.values().map(|p| p.bytes).sum();
        let local: u64 = self.local.values().map(|p| p.bytes).sum();
        unsealed + local + self.sealed_bytes
    }

    /// Update the counters after [`bound::make_room`] committed.
    fn forget_freed(&mut self, freed: bound::Freed) {
        // Nearly every commit frees nothing: no query then.
        if freed.unsealed.is_empty() && freed.batches.is_empty() {
            return;
        }
        for ((product, local), (events, bytes)) in freed.unsealed {
            let map = if local {
                &mut self.local
            } else {
                &mut self.unsealed
            };
            if !local {
                self.full_drops += events;
            }
            let p = map.entry(product.clone()).or_default();
            p.events = p.events.saturating_sub(events);
            p.bytes = p.bytes.saturating_sub(bytes);
            tracing::warn!(
                product,
                events,
                local,
                "store full: dropped the oldest pending events"
            );
        }
        for (events, bytes) in freed.batches {
            self.full_drops += events;
            self.sealed_batches = self.sealed_batches.saturating_sub(1);
            self.sealed_events = self.sealed_events.saturating_sub(events);
            self.sealed_bytes = self.sealed_bytes.saturating_sub(bytes);
            tracing::warn!(events, "store full: dropped the oldest sealed batch");
        }
        // The counts per product live in their tables; mirror them.
        if let Ok(rows) = self.read_dropped() {
            self.dropped = rows;
        }
        if let Ok(rows) = self.read_local_dropped() {
            self.local_full_drops = rows;
        }
    }

    /// Events and NDJSON bytes per product of the events matching `filter`
    /// (a fixed SQL condition), for the counters loaded at startup.
    fn pending_by_product(
        &self,
        filter: &'static str,
    ) -> Result<BTreeMap<String, Pending>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT product, COUNT(*), COALESCE(SUM(LENGTH(CAST(line AS BLOB)) + 1), 0)
                 FROM events WHERE {filter} GROUP BY product"
            ))
            .map_err(sql("loading counters"))?;
        let rows = stmt
            .query_map([], |r| {
                let pending = Pending {
                    events: r.get::<_, i64>(1)? as u64,
                    bytes: r.get::<_, i64>(2)? as u64,
                };
                Ok((r.get::<_, String>(0)?, pending))
            })
            .map_err(sql("loading counters"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("loading counters"))
    }

    fn read_dropped(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.counts_in("SELECT product, events FROM dropped")
    }

    /// Local-only events a full store dropped, per product.
    fn read_local_dropped(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.counts_in("SELECT product, events FROM local_dropped")
    }

    /// `(product, count)` rows of `query`.
    fn counts_in(&self, query: &'static str) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(query)
            .map_err(sql("reading drops"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(sql("reading drops"))?;
        rows.collect::<Result<_, _>>().map_err(sql("reading drops"))
    }

    /// Ids of sealed batches the current consent allows to upload, oldest
    /// first. Batches are few (each holds many events), so this is cheap.
    fn uploadable_batch_ids(
        &self,
        to: Option<&DestId>,
        past: &Passed,
    ) -> Result<Vec<i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, product, final FROM batches
                 WHERE (?1 = 0 OR destination IS ?2) AND destination IS NOT ?3 ORDER BY id",
            )
            .map_err(sql("reading sealed batches"))?;
        let rows = stmt
            .query_map(
                params![to.is_some(), to.cloned().flatten(), UNROUTED],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, bool>(2)?,
                    ))
                },
            )
            .map_err(sql("reading sealed batches"))?;
        let mut ids = Vec::new();
        // The permit reads the consent files: once per product, not per batch.
        let mut permits: BTreeMap<String, Permit> = BTreeMap::new();
        for row in rows {
            let (id, product, is_final) = row.map_err(sql("reading sealed batches"))?;
            if past.batches.contains(&id) || past.products.contains(&product) {
                continue;
            }
            let permit = *permits
                .entry(product)
                .or_insert_with_key(|p| (self.opts.permit)(p));
            match permit {
                Permit::All => ids.push(id),
                Permit::FinalOnly if is_final => ids.push(id),
                _ => {}
            }
        }
        Ok(ids)
    }

    /// How many sealed batches may be uploaded now, counted per product
    /// and kind by SQLite, with the permit asked once per product; and how
    /// many are held [`UNROUTED`].
    fn uploadable_batch_count(&self) -> Result<(BTreeMap<DestId, u64>, u64), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT product, final, destination, COUNT(*) FROM batches
                 GROUP BY product, final, destination",
            )
            .map_err(sql("counting sealed batches"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, bool>(1)?,
                    r.get::<_, DestId>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(sql("counting sealed batches"))?;
        let mut permits: BTreeMap<String, Permit> = BTreeMap::new();
        let mut n = BTreeMap::new();
        let mut held = 0;
        for row in rows {
            let (product, is_final, dest, count) = row.map_err(sql("counting sealed batches"))?;
            if dest.as_deref() == Some(UNROUTED) {
                held += count as u64;
                continue;
            }
            let permit = *permits
                .entry(product)
                .or_insert_with_key(|p| (self.opts.permit)(p));
            if permit == Permit::All || (permit == Permit::FinalOnly && is_final) {
                *n.entry(dest).or_insert(0) += count as u64;
            }
        }
        Ok((n, held))
    }

    fn next_sealed(
        &mut self,
        to: Option<&DestId>,
        past: &Passed,
    ) -> Result<Option<SealedBatch>, StoreError> {
        // Asked again for this destination: its last batch is done with
        // (uploaded, refused, or its upload failed and will be retried).
        self.handed_out.remove(&to.cloned());
        let Some(&id) = self.uploadable_batch_ids(to, past)?.first() else {
            return Ok(None);
        };
        self.handed_out.insert(to.cloned(), id);
        self.conn
            .prepare_cached(
                "SELECT id, key, body, events, raw_bytes, product, destination
                 FROM batches WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.query_row(params![id], |r| {
                    Ok(SealedBatch {
                        id: r.get(0)?,
                        key: r.get(1)?,
                        body: r.get(2)?,
                        events: r.get::<_, i64>(3)? as u64,
                        raw_bytes: r.get::<_, i64>(4)? as u64,
                        product: r.get(5)?,
                        destination: r.get(6)?,
                    })
                })
                .optional()
            })
            .map_err(sql("reading sealed batch"))
    }

    fn stats(&mut self) -> Result<Stats, StoreError> {
        let mut oldest: Option<i64> = None;
        let products: Vec<String> = self
            .unsealed
            .iter()
            .filter(|(k, p)| p.events > 0 && (self.opts.permit)(k) == Permit::All)
            .map(|(k, _)| k.clone())
            .collect();
        for product in &products {
            if let Some(t) = self.oldest_unsealed(product)? {
                oldest = Some(oldest.map_or(t, |o: i64| o.min(t)));
            }
        }
        let (ue, ub) = self
            .unsealed
            .values()
            .fold((0, 0), |(e, b), p| (e + p.events, b + p.bytes));
        let (uploadable_by_destination, held_batches) = if self.sealed_batches > 0 {
            self.uploadable_batch_count()?
        } else {
            (BTreeMap::new(), 0)
        };
        let uploadable_batches = uploadable_by_destination.values().sum();
        let uploadable_unsealed = self
            .unsealed
            .iter()
            .filter(|(k, p)| p.events > 0 && (self.opts.permit)(k) == Permit::All)
            .map(|(_, p)| p.events)
            .sum();
        Ok(Stats {
            uploadable_unsealed,
            pending_events: ue + self.sealed_events,
            pending_bytes: ub + self.sealed_bytes,
            sealed_batches: self.sealed_batches,
            oldest_unsealed_us: oldest,
            uploadable_batches,
            local_events: self.local.values().map(|p| p.events).sum(),
            dropped: self.dropped.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            uploadable_by_destination,
            held_batches,
            store_full_drops: self.full_drops,
            local_full_drops: self.local_full_drops.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
