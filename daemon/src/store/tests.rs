use super::*;
use crate::config::SyncMode;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::SystemTime;

fn record(n: u128, product: &str) -> Record {
    Record {
        id: uuid::Uuid::from_u128(n).into_bytes(),
        product: product.to_string(),
        line: format!("{{\"n\":{n}}}"),
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    now: Arc<AtomicI64>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            now: Arc::new(AtomicI64::new(1_800_000_000_000_000)),
        }
    }

    fn opts(&self, max_events: usize) -> StoreOptions {
        let now = self.now.clone();
        StoreOptions {
            sync: SyncMode::Normal,
            batch_max_events: max_events,
            batch_max_bytes: 1 << 20,
            upload_interval: Duration::from_secs(60),
            layout: KeyLayout {
                prefix: "p".into(),
                machine_id: Arc::new(|_| "abcdef0123".to_string()),
            },
            clock: Arc::new(move || {
                UNIX_EPOCH + Duration::from_micros(now.load(Ordering::SeqCst) as u64)
            }),
        }
    }

    fn open(&self, max_events: usize) -> (Store, StoreThread) {
        Store::open(self.dir.path(), self.opts(max_events)).unwrap()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn migrating_twice_is_a_no_op_and_newer_schema_is_refused() {
    let f = Fixture::new();
    let path = f.dir.path().join(DB_FILE);
    let mut conn = Connection::open(&path).unwrap();
    migrate(&mut conn, &path, 1_000_000).unwrap();
    migrate(&mut conn, &path, 2_000_000).unwrap();
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, MIGRATIONS.len() as i64);

    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = Store::open(f.dir.path(), f.opts(10)).err().unwrap();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains(DB_FILE));
    // Refused, not modified.
    let conn = Connection::open(&path).unwrap();
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, 99);
}

#[test]
fn duplicates_are_stored_once_and_counted() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        let a = store
            .insert(vec![record(1, "a"), record(2, "a")])
            .await
            .unwrap();
        assert_eq!((a.accepted, a.duplicates), (2, 0));
        assert!(a.wake_uploader, "first pending event starts the age clock");
        let b = store
            .insert(vec![record(2, "a"), record(3, "a")])
            .await
            .unwrap();
        assert_eq!((b.accepted, b.duplicates), (1, 1));
        assert!(!b.wake_uploader);
        let s = store.stats().await.unwrap();
        assert_eq!(s.pending_events, 3);
        assert_eq!(s.pending_bytes, 3 * 8);
    });
    drop(store);
    thread.join();
}

#[test]
fn seal_upload_complete_and_sealed_batches_survive_restart() {
    let f = Fixture::new();
    let (store, thread) = f.open(2);
    let first = rt().block_on(async {
        let out = store
            .insert(vec![
                record(1, "a"),
                record(2, "a"),
                record(3, "a"),
                record(4, "b"),
            ])
            .await
            .unwrap();
        assert!(out.wake_uploader);
        // Product a has 3 ≥ 2 pending: one batch of 2; b is not due yet.
        assert_eq!(store.seal(false).await.unwrap(), 1);
        let s = store.stats().await.unwrap();
        assert_eq!((s.pending_events, s.sealed_batches), (4, 1));
        store.next_sealed().await.unwrap().unwrap()
    });
    assert_eq!(first.events, 2);
    assert!(
        first
            .key
            .starts_with("p/v1/product=a/dt=2027-01-15/abcdef01-"),
        "{}",
        first.key
    );
    let body = zstd::stream::decode_all(&first.body[..]).unwrap();
    assert_eq!(body, b"{\"n\":1}\n{\"n\":2}\n");
    drop(store);
    thread.join();

    // Reopen: the same sealed batch, same key, same bytes; counters rebuilt.
    let (store, thread) = f.open(2);
    rt().block_on(async {
        let again = store.next_sealed().await.unwrap().unwrap();
        assert_eq!(again, first);
        let s = store.stats().await.unwrap();
        assert_eq!((s.pending_events, s.sealed_batches), (4, 1));
        store.complete(again.id).await.unwrap();
        let s = store.stats().await.unwrap();
        assert_eq!((s.pending_events, s.sealed_batches), (2, 0));
        // Force seals everything left, one batch per product.
        assert_eq!(store.seal(true).await.unwrap(), 2);
        let mut keys = Vec::new();
        while let Some(b) = store.next_sealed().await.unwrap() {
            keys.push(b.key.clone());
            store.complete(b.id).await.unwrap();
        }
        assert_eq!(keys.len(), 2);
        assert!(keys.iter().all(|k| *k != first.key));
        assert_eq!(store.stats().await.unwrap(), Stats::default());
    });
    drop(store);
    thread.join();
}

#[test]
fn age_seals_with_the_injected_clock() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        store.insert(vec![record(1, "a")]).await.unwrap();
        assert_eq!(store.seal(false).await.unwrap(), 0);
        let s = store.stats().await.unwrap();
        assert_eq!(s.oldest_unsealed_us, Some(f.now.load(Ordering::SeqCst)));
        f.now.fetch_add(61_000_000, Ordering::SeqCst);
        assert_eq!(store.seal(false).await.unwrap(), 1);
        assert_eq!(store.stats().await.unwrap().oldest_unsealed_us, None);
    });
    drop(store);
    thread.join();
}

#[test]
fn sequence_numbers_start_at_creation_time_and_are_never_reused() {
    let f = Fixture::new();
    let (store, thread) = f.open(1);
    let (k1, k2) = rt().block_on(async {
        store.insert(vec![record(1, "a")]).await.unwrap();
        store.seal(true).await.unwrap();
        let b = store.next_sealed().await.unwrap().unwrap();
        store.complete(b.id).await.unwrap();
        store.insert(vec![record(2, "a")]).await.unwrap();
        store.seal(true).await.unwrap();
        (b.key, store.next_sealed().await.unwrap().unwrap().key)
    });
    assert_ne!(k1, k2, "a deleted seq must not be reused");
    let base = 1_800_000_000_000_000i64 / 1000 * 1000;
    assert!(
        k1.ends_with(&format!("-{}-{}.ndjson.zst", base + 1, base + 1)),
        "{k1}"
    );
    drop(store);
    thread.join();
}

#[test]
fn concurrent_inserts_are_all_committed() {
    let f = Fixture::new();
    let (store, thread) = f.open(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..8u128 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..200u128 {
                    let out = store.insert(vec![record(t * 1000 + i, "a")]).await.unwrap();
                    assert_eq!(out.accepted, 1);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(store.stats().await.unwrap().pending_events, 1600);
    });
    drop(store);
    thread.join();
    let _ = SystemTime::now();
}

#[test]
fn an_id_resent_after_its_upload_is_dropped_within_the_window() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        store.insert(vec![record(1, "a")]).await.unwrap();
        store.seal(true).await.unwrap();
        let b = store.next_sealed().await.unwrap().unwrap();
        store.complete(b.id).await.unwrap();
        let again = store
            .insert(vec![record(1, "a"), record(2, "a")])
            .await
            .unwrap();
        assert_eq!((again.accepted, again.duplicates), (1, 1));
        // Past the window the id is forgotten (pruned at the next upload).
        f.now
            .fetch_add(DEDUP_WINDOW.as_micros() as i64 + 1, Ordering::SeqCst);
        store.seal(true).await.unwrap();
        let b = store.next_sealed().await.unwrap().unwrap();
        store.complete(b.id).await.unwrap();
        let late = store.insert(vec![record(1, "a")]).await.unwrap();
        assert_eq!(late.accepted, 1);
    });
    drop(store);
    thread.join();
}

#[test]
fn a_second_store_on_the_same_directory_is_refused() {
    let f = Fixture::new();
    let (store, thread) = f.open(10);
    let err = Store::open(f.dir.path(), f.opts(10)).err().unwrap();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    drop(store);
    thread.join();
    let (store, thread) = f.open(10);
    drop(store);
    thread.join();
}
