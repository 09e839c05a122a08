use super::*;
use crate::batch::Routing;
use crate::config::SyncMode;
use crate::consent::Permit;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::UNIX_EPOCH;

mod bound;
mod consent;
mod insert;
mod schema;
mod seal;

pub(super) fn record(n: u128, product: &str) -> Record {
    Record {
        id: uuid::Uuid::from_u128(n).into_bytes(),
        product: product.to_string(),
        line: format!("{{\"n\":{n}}}"),
        local_only: false,
        consent_generation: 0,
    }
}

/// A `telemetry_forget` marker for `product`, its line told apart by `n`.
pub(super) fn forget_marker(n: u128, product: &str) -> Record {
    Record {
        line: format!("{{\"event\":\"telemetry_forget\",\"n\":{n}}}"),
        ..record(n, product)
    }
}

/// Forget `product` of an installed manifest, with `marker`, drawing `salt`.
pub(super) async fn forget(
    store: &Store,
    product: &str,
    marker: Option<Record>,
    salt: String,
) -> Forgotten {
    store
        .forget(product.into(), marker, Announce::Installed, salt)
        .await
        .unwrap()
}

/// The receipt the uploader would make for `b`.
pub(super) fn receipt(b: &SealedBatch) -> NewReceipt {
    NewReceipt {
        destination: "outbox".into(),
        sha256: format!("{:064x}", b.id),
        bytes: b.body.len() as u64,
        already_there: false,
        body: b.body.clone(),
        key: None,
    }
}

pub(super) struct Fixture {
    pub(super) dir: tempfile::TempDir,
    now: Arc<AtomicI64>,
    pub(super) permits: Arc<std::sync::Mutex<BTreeMap<String, Permit>>>,
    max_store_bytes: u64,
    /// What the store's look at the consent files sees.
    consent_generation: Arc<std::sync::atomic::AtomicU64>,
    /// Looks the store made.
    consent_looks: Arc<AtomicI64>,
}

impl Fixture {
    pub(super) fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            now: Arc::new(AtomicI64::new(1_800_000_000_000_000)),
            permits: Arc::default(),
            max_store_bytes: u64::MAX,
            consent_generation: Arc::new(1.into()),
            consent_looks: Arc::default(),
        }
    }

    pub(super) fn opts(&self, max_events: usize) -> StoreOptions {
        let now = self.now.clone();
        StoreOptions {
            sync: SyncMode::Normal,
            batch_max_events: max_events,
            batch_max_bytes: 1 << 20,
            upload_interval: Duration::from_secs(60),
            layout: KeyLayout {
                prefix: "p".into(),
                machine_id: Arc::new(|_| "abcdef0123".to_string()),
                route: Arc::new(|_| Routing::Own),
            },
            clock: Arc::new(move || {
                UNIX_EPOCH + Duration::from_micros(now.load(Ordering::SeqCst) as u64)
            }),
            max_store_bytes: self.max_store_bytes,
            permit: {
                let permits = self.permits.clone();
                Arc::new(move |p: &str| {
                    permits
                        .lock()
                        .unwrap()
                        .get(p)
                        .copied()
                        .unwrap_or(Permit::All)
                })
            },
            consent_look: {
                let generation = self.consent_generation.clone();
                let looks = self.consent_looks.clone();
                Arc::new(move || {
                    looks.fetch_add(1, Ordering::SeqCst);
                    generation.load(Ordering::SeqCst)
                })
            },
        }
    }

    /// Open the store with products `a` and `b` opted in.
    pub(super) fn open(&self, max_events: usize) -> (Store, StoreThread) {
        let (store, thread) = Store::open(self.dir.path(), self.opts(max_events)).unwrap();
        rt().block_on(async {
            for p in ["a", "b"] {
                if !store.applied().await.unwrap().contains_key(p) {
                    store
                        .apply_consent(p, d(Mode::On), record(0, p), Announce::Installed)
                        .await
                        .unwrap();
                }
            }
        });
        (store, thread)
    }
}

pub(super) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Two workers, as the daemon runs: clients that really run side by side.
fn rt2() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// An insert from a client on connection `client`, as the emit handler
/// makes for a connection's second request onward.
async fn insert_from(
    store: &Store,
    client: u64,
    records: Vec<Record>,
) -> Result<InsertOutcome, StoreError> {
    store
        .insert_then(Some(client), false, records, |_| ())
        .await
        .and_then(|(r, ())| r)
}

pub(super) fn d(mode: Mode) -> Decision {
    Decision {
        mode,
        off_marker: None,
    }
}

fn local(n: u128, product: &str) -> Record {
    Record {
        local_only: true,
        ..record(n, product)
    }
}

/// What a caller hands `insert_no_wait` to keep (the emit handler's room
/// among the events waiting for a commit) is held until the commit, not
/// dropped when the records are queued: otherwise clients that never wait
/// for an answer could queue without bound.
/// Hold the store thread in a command of its own (the store with it)
/// until the returned sender sends; the task ends once it is let go.
async fn hold_store_thread(
    store: &Store,
) -> (
    std::sync::mpsc::Sender<()>,
    tokio::task::JoinHandle<Result<(), StoreError>>,
) {
    let (entered_tx, entered) = tokio::sync::oneshot::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let store = store.clone();
    let blocker = tokio::spawn(async move {
        store
            .run_on(move |_| {
                let _ = entered_tx.send(());
                let _ = release_rx.recv();
                Ok(())
            })
            .await
    });
    entered.await.unwrap();
    (release, blocker)
}

/// Wait until the store thread has finished what it had (it may still
/// hold the store for a moment after answering, or be starting up): a
/// lone insert then finds the store idle.
async fn until_idle(store: &Store) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(store.queued.none() && store.inner.try_lock().is_ok()) {
        assert!(
            Instant::now() < deadline,
            "the store thread never went idle"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
