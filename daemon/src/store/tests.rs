use super::*;
use crate::batch::Routing;
use crate::config::SyncMode;
use crate::consent::Permit;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::UNIX_EPOCH;

pub(super) fn record(n: u128, product: &str) -> Record {
    Record {
        id: uuid::Uuid::from_u128(n).into_bytes(),
        product: product.to_string(),
        line: format!("{{\"n\":{n}}}"),
        local_only: false,
        consent_generation: 0,
    }
}

/// The receipt the uploader would make for `b`.
pub(super) fn receipt(b: &SealedBatch) -> NewReceipt {
    NewReceipt {
        destination: "outbox:/tmp/o".into(),
        sha256: format!("{:064x}", b.id),
        bytes: b.body.len() as u64,
        already_there: false,
        body: b.body.clone(),
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
                        .apply_consent(p, d(Mode::On), record(0, p))
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
        store.complete(again.id, receipt(&again)).await.unwrap();
        let s = store.stats().await.unwrap();
        assert_eq!((s.pending_events, s.sealed_batches), (2, 0));
        // Force seals everything left, one batch per product.
        assert_eq!(store.seal(true).await.unwrap(), 2);
        let mut keys = Vec::new();
        while let Some(b) = store.next_sealed().await.unwrap() {
            keys.push(b.key.clone());
            store.complete(b.id, receipt(&b)).await.unwrap();
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

/// The `{first}-{last}` of a key.
fn key_numbers(key: &str) -> (i64, i64) {
    let stem = key.strip_suffix(".ndjson.zst").unwrap();
    let mut parts = stem.rsplitn(3, '-');
    let last = parts.next().unwrap().parse().unwrap();
    let first = parts.next().unwrap().parse().unwrap();
    (first, last)
}

#[test]
fn sequence_numbers_start_at_creation_time_and_are_never_reused() {
    let f = Fixture::new();
    let (store, thread) = f.open(1);
    rt().block_on(async {
        store.insert(vec![record(1, "a")]).await.unwrap();
        store.seal(true).await.unwrap();
        let b = store.next_sealed().await.unwrap().unwrap();
        store.complete(b.id, receipt(&b)).await.unwrap();
        store.insert(vec![record(2, "a")]).await.unwrap();
    });
    drop(store);
    thread.join();
    let conn = Connection::open(f.dir.path().join(DB_FILE)).unwrap();
    let seqs: Vec<i64> = conn
        .prepare("SELECT seq FROM events ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // The uploaded event's row is gone; its number is not given again.
    let base = 1_800_000_000_000_000i64 / 1000 * 1000;
    assert_eq!(seqs, [base + 2]);
}

/// A key's numbers are its product's own, from a start of its own: nothing in
/// one product's keys says anything about another product's events (the
/// store's sequence numbers, which all products share, would), and after a
/// forget the new ID's keys are not adjacent to the old one's marker.
#[test]
fn key_numbers_are_each_products_own_from_a_start_of_their_own() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        let sealed = |products: &'static [&'static str]| {
            let store = &store;
            async move {
                store.seal(true).await.unwrap();
                let mut keys = std::collections::BTreeMap::new();
                while let Some(b) = store.next_sealed().await.unwrap() {
                    keys.insert(b.product.clone(), (key_numbers(&b.key), b.events));
                    store.complete(b.id, receipt(&b)).await.unwrap();
                }
                assert_eq!(keys.len(), products.len(), "{keys:?}");
                keys
            }
        };
        store
            .insert(vec![
                record(1, "a"),
                record(2, "b"),
                record(3, "a"),
                record(4, "b"),
                record(5, "b"),
            ])
            .await
            .unwrap();
        let one = sealed(&["a", "b"]).await;
        let ((a1, a2), a_events) = one["a"];
        let ((b1, b2), _) = one["b"];
        assert_eq!(
            (a2 - a1 + 1, b2 - b1 + 1),
            (2, 3),
            "each counts its own events"
        );
        assert_eq!(a_events, 2);
        for n in [a1, b1] {
            assert!((1i64 << 40..1 << 53).contains(&n), "{n}");
        }
        assert!((a1 - b1).abs() > 1_000_000, "independent starts: {a1} {b1}");
        // b's events in between do not show in a's next key.
        store
            .insert(vec![record(6, "b"), record(7, "a"), record(8, "b")])
            .await
            .unwrap();
        let two = sealed(&["a", "b"]).await;
        assert_eq!(two["a"].0, (a2 + 1, a2 + 1));
        assert_eq!(two["b"].0, (b2 + 1, b2 + 2));
        // Forget a: its marker goes under the old numbering, the new ID's
        // first batch starts somewhere else.
        let mut marker = record(9, "a");
        marker.line = "{\"event\":\"telemetry_forget\"}".into();
        store
            .forget("a".into(), Some(marker), "ab".repeat(16))
            .await
            .unwrap();
        let marked = sealed(&["a"]).await;
        assert_eq!(marked["a"].0, (a2 + 2, a2 + 2));
        store.insert(vec![record(10, "a")]).await.unwrap();
        let after = sealed(&["a"]).await;
        let (n, _) = after["a"].0;
        assert!(
            (n - (a2 + 2)).abs() > 1_000_000,
            "{n} follows the marker's {}",
            a2 + 2
        );
    });
    drop(store);
    thread.join();
}

#[test]
fn concurrent_inserts_are_all_committed() {
    let f = Fixture::new();
    let (store, thread) = f.open(1_000_000);
    let rt = rt2();
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
}

/// The checkpoint thread copies the WAL beside the writer, and the
/// writer's own checkpoint (at `BACKSTOP_FRAMES`) lets its next write
/// restart it: under a steady stream of commits the file stays within
/// bounds, many times smaller than everything written through it.
#[test]
fn the_wal_stays_bounded_under_a_steady_stream_of_commits() {
    let f = Fixture::new();
    let (store, thread) = f.open(1_000_000);
    let wal = f.dir.path().join(format!("{DB_FILE}-wal"));
    let rt = rt2();
    // 4 clients × 1,000 commits of one 8 KiB row: at least 3 pages each
    // (2 of them overflow) and over 30,000 WAL frames (120 MiB) in all.
    let line = "x".repeat(8 * 1024);
    let (largest, backstop) = rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..4u128 {
            let (store, wal, line) = (store.clone(), wal.clone(), line.clone());
            tasks.push(tokio::spawn(async move {
                let mut largest = 0;
                for i in 0..1000u128 {
                    let mut r = record(t * 10_000 + i, "a");
                    r.line = line.clone();
                    let out = insert_from(&store, t as u64, vec![r]).await.unwrap();
                    assert_eq!(out.accepted, 1);
                    largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
                }
                largest
            }));
        }
        let mut largest = 0;
        for t in tasks {
            largest = largest.max(t.await.unwrap());
        }
        let backstop = store
            .run_on(|inner| {
                inner
                    .conn
                    .pragma_query_value(None, "wal_autocheckpoint", |r| r.get::<_, i64>(0))
                    .map_err(sql("test"))
            })
            .await
            .unwrap();
        (largest, backstop)
    });
    assert_eq!(backstop, checkpoint::BACKSTOP_FRAMES);
    // The backstop's size, plus what is committed while the checkpoint
    // thread holds the lock the writer's checkpoint needs (a slow disk or
    // a loaded machine makes that more: 8 MiB more was once exceeded by
    // 3 MiB with two builds beside it): bounded all the same, against the
    // 120 MiB written.
    let bound = checkpoint::WAL_SIZE_LIMIT as u64 + (16 << 20);
    assert!(
        largest > 0 && largest <= bound,
        "the WAL reached {largest} bytes (bound {bound})"
    );
    let conn = Connection::open(f.dir.path().join(DB_FILE)).unwrap();
    let rows: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM events WHERE length(line) = 8192",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 4000, "every commit is in the database or its WAL");
    drop(store);
    thread.join();
}

#[test]
fn clients_that_wait_for_each_other_are_all_committed_and_one_that_leaves_is_not_waited_for() {
    let f = Fixture::new();
    let (store, thread) = f.open(1_000_000);
    let rt = rt2();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let store = store.clone();
            // Clients 0..4 leave early: later commits expect them once and
            // must go on without them.
            let n = if t < 4 { 3 } else { 200 };
            tasks.push(tokio::spawn(async move {
                for i in 0..n {
                    let id = u128::from(t) * 1000 + i;
                    let out = insert_from(&store, t, vec![record(id, "a")]).await.unwrap();
                    assert_eq!(out.accepted, 1);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(store.stats().await.unwrap().pending_events, 4 * 3 + 4 * 200);
        // A lone client after all that is answered by its own commit.
        let lone = tokio::time::timeout(
            Duration::from_secs(5),
            insert_from(&store, 99, vec![record(99_000, "a")]),
        )
        .await
        .expect("answered")
        .unwrap();
        assert_eq!(lone.accepted, 1);
    });
    drop(store);
    thread.join();
}

#[test]
fn an_id_resent_after_its_upload_is_dropped_within_the_window() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        store.insert(vec![record(1, "a")]).await.unwrap();
        store.seal(true).await.unwrap();
        let b = store.next_sealed().await.unwrap().unwrap();
        store.complete(b.id, receipt(&b)).await.unwrap();
        let again = store
            .insert(vec![record(1, "a"), record(2, "a")])
            .await
            .unwrap();
        assert_eq!((again.accepted, again.duplicates), (1, 1));
        // A window later its generation is the previous one: still known.
        f.now
            .fetch_add(DEDUP_WINDOW.as_micros() as i64 + 1, Ordering::SeqCst);
        let later = store.insert(vec![record(1, "a")]).await.unwrap();
        assert_eq!((later.accepted, later.duplicates), (0, 1));
        // Another window on, that generation is emptied: forgotten.
        f.now
            .fetch_add(DEDUP_WINDOW.as_micros() as i64 + 1, Ordering::SeqCst);
        let late = store.insert(vec![record(1, "a")]).await.unwrap();
        assert_eq!((late.accepted, late.duplicates), (1, 0));
        // And remembered again from then on.
        let again = store.insert(vec![record(1, "a")]).await.unwrap();
        assert_eq!((again.accepted, again.duplicates), (0, 1));
    });
    drop(store);
    thread.join();
}

#[test]
fn a_clock_corrected_back_from_far_ahead_does_not_stop_the_generations() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    let window = DEDUP_WINDOW.as_micros() as i64;
    rt().block_on(async {
        store.insert(vec![record(1, "a")]).await.unwrap();
        // The generation began under a clock two days ahead.
        f.now.fetch_sub(2 * 24 * 3600 * 1_000_000, Ordering::SeqCst);
        store.insert(vec![record(2, "a")]).await.unwrap();
        f.now.fetch_add(window + 1, Ordering::SeqCst);
        let out = store.insert(vec![record(1, "a")]).await.unwrap();
        assert_eq!(out.duplicates, 1, "a window on: the previous generation");
        f.now.fetch_add(window + 1, Ordering::SeqCst);
        let out = store.insert(vec![record(1, "a")]).await.unwrap();
        assert_eq!(
            out.accepted, 1,
            "two windows after the clock was corrected: forgotten"
        );
    });
    drop(store);
    thread.join();
}

#[test]
fn purge_forget_and_off_forget_the_ids_of_what_they_delete() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        store
            .insert(vec![record(1, "a"), local(2, "a"), record(3, "b")])
            .await
            .unwrap();
        assert_eq!(store.purge(Some("a".to_string())).await.unwrap(), 2);
        // Nothing of a's deleted events is kept, their ids included; b's
        // event is untouched and still known.
        let out = store
            .insert(vec![record(1, "a"), local(2, "a"), record(3, "b")])
            .await
            .unwrap();
        assert_eq!((out.accepted, out.duplicates), (2, 1));
    });
    drop(store);
    thread.join();
    let conn = Connection::open(f.dir.path().join(DB_FILE)).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let seen = "SELECT (SELECT COUNT(*) FROM seen_ids_a) + (SELECT COUNT(*) FROM seen_ids_b)";
    assert_eq!(count(seen), 3);
    conn.execute("DELETE FROM events", []).unwrap();
    drop(conn);
    // Forget and a switch to off, on the store itself.
    let (store, thread) = f.open(100);
    rt().block_on(async {
        assert_eq!(
            store.insert(vec![record(11, "a")]).await.unwrap().accepted,
            1
        );
        store
            .forget("a".to_string(), Some(record(98, "a")), "0".repeat(32))
            .await
            .unwrap();
        assert_eq!(
            store.insert(vec![record(12, "b")]).await.unwrap().accepted,
            1
        );
        let off = store
            .apply_consent("b", d(Mode::Off), record(99, "b"))
            .await
            .unwrap();
        assert_eq!(off.purged, 1);
    });
    drop(store);
    thread.join();
    let conn = Connection::open(f.dir.path().join(DB_FILE)).unwrap();
    for id in [11u128, 12] {
        let known: i64 = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM seen_ids_a WHERE id = ?1) + (SELECT COUNT(*) FROM seen_ids_b WHERE id = ?1)",
                [&record(id, "a").id[..]],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(known, 0, "id {id} forgotten with its event");
    }
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

#[test]
fn turning_on_off_purges_and_seals_only_the_final_event() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        store
            .apply_consent("a", d(Mode::On), record(99, "a"))
            .await
            .unwrap();
        store
            .insert(vec![record(1, "a"), record(2, "a"), record(3, "b")])
            .await
            .unwrap();
        store.seal(true).await.unwrap();
        store.insert(vec![record(4, "a")]).await.unwrap();
        f.permits
            .lock()
            .unwrap()
            .insert("a".into(), Permit::FinalOnly);
        f.permits
            .lock()
            .unwrap()
            .insert("b".into(), Permit::Nothing);
        let out = store
            .apply_consent("a", d(Mode::Off), record(99, "a"))
            .await
            .unwrap();
        assert_eq!(out.purged, 3);
        assert!(out.final_event);
        // Applying the same decision again does nothing.
        let again = store
            .apply_consent("a", d(Mode::Off), record(98, "a"))
            .await
            .unwrap();
        assert_eq!(again, ConsentOutcome::default());
        let b = store.next_sealed().await.unwrap().unwrap();
        assert_eq!(
            zstd::stream::decode_all(&b.body[..]).unwrap(),
            b"{\"n\":99}\n"
        );
        store.complete(b.id, receipt(&b)).await.unwrap();
        // Product b is untouched; nothing of a remains.
        let page = store.show(None, 0).await.unwrap();
        assert_eq!(page.events.len(), 1);
        assert!(page.events[0].line.contains("\"n\":3"));
        assert_eq!(
            store.applied().await.unwrap().get("a").map(|d| d.mode),
            Some(Mode::Off)
        );
    });
    drop(store);
    thread.join();
    // The decision survives a restart.
    let (store, thread) = f.open(100);
    let applied = rt().block_on(store.applied()).unwrap();
    assert_eq!(applied.get("a").map(|d| d.mode), Some(Mode::Off));
    drop(store);
    thread.join();
}

#[test]
fn local_events_are_never_sealed_and_stay_local_after_turning_on() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        store
            .apply_consent("a", d(Mode::Local), record(99, "a"))
            .await
            .unwrap();
        store
            .insert(vec![local(1, "a"), local(2, "a")])
            .await
            .unwrap();
        assert_eq!(store.seal(true).await.unwrap(), 0);
        let s = store.stats().await.unwrap();
        assert_eq!((s.pending_events, s.local_events), (0, 2));
        store
            .apply_consent("a", d(Mode::On), record(99, "a"))
            .await
            .unwrap();
        store.insert(vec![record(3, "a")]).await.unwrap();
        assert_eq!(store.seal(true).await.unwrap(), 1);
        let b = store.next_sealed().await.unwrap().unwrap();
        assert_eq!(
            zstd::stream::decode_all(&b.body[..]).unwrap(),
            b"{\"n\":3}\n"
        );
        let page = store.show(Some("a".into()), 0).await.unwrap();
        let states: Vec<_> = page.events.iter().map(|e| e.state).collect();
        use telemetry_proto::EventState::*;
        assert_eq!(states, vec![LocalOnly, LocalOnly, Sealed]);
        assert_eq!(page.events[2].batch_key.as_deref(), Some(b.key.as_str()));
        // on -> local: even the sealed batch stays home.
        let out = store
            .apply_consent("a", d(Mode::Local), record(99, "a"))
            .await
            .unwrap();
        assert_eq!(out.made_local, 1);
        assert!(store.next_sealed().await.unwrap().is_none());
        assert_eq!(store.stats().await.unwrap().local_events, 3);
        assert_eq!(store.purge(Some("a".into())).await.unwrap(), 3);
        assert_eq!(store.stats().await.unwrap(), Stats::default());
    });
    drop(store);
    thread.join();
}

#[test]
fn batches_without_permit_are_not_handed_out() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        store.insert(vec![record(1, "a")]).await.unwrap();
        f.permits
            .lock()
            .unwrap()
            .insert("a".into(), Permit::Nothing);
        assert_eq!(store.seal(true).await.unwrap(), 0, "no seal without permit");
        f.permits.lock().unwrap().insert("a".into(), Permit::All);
        assert_eq!(store.seal(true).await.unwrap(), 1);
        f.permits
            .lock()
            .unwrap()
            .insert("a".into(), Permit::FinalOnly);
        assert!(store.next_sealed().await.unwrap().is_none());
        let s = store.stats().await.unwrap();
        assert_eq!((s.sealed_batches, s.uploadable_batches), (1, 0));
    });
    drop(store);
    thread.join();
}

#[test]
fn show_pages_through_many_events() {
    let f = Fixture::new();
    let (store, thread) = f.open(1_000_000);
    rt().block_on(async {
        let recs: Vec<Record> = (0..2500u128)
            .map(|i| Record {
                line: format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(100)),
                ..record(i, "a")
            })
            .collect();
        for chunk in recs.chunks(500) {
            store.insert(chunk.to_vec()).await.unwrap();
        }
        let mut after = 0;
        let mut seen = 0;
        let mut pages = 0;
        loop {
            let page = store.show(None, after).await.unwrap();
            let frame =
                telemetry_proto::encode_frame(&telemetry_proto::Response::Events(page.clone()));
            assert!(frame.is_ok(), "a page fits in one frame");
            seen += page.events.len();
            pages += 1;
            match page.next_after_seq {
                Some(s) => after = s,
                None => break,
            }
        }
        assert_eq!(seen, 2500);
        assert!(pages > 2);
    });
    drop(store);
    thread.join();
}

/// A request checked against an earlier look at the consent files is
/// stored only if the look made for its commit (one per commit, after
/// every request in it arrived) saw the same files; one checked against a
/// look of its own (generation 0) needs none.
#[test]
fn an_insert_checked_against_an_older_look_at_the_consent_files_is_sent_back() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    let at = |n: u128, generation: u64| Record {
        consent_generation: generation,
        ..record(n, "a")
    };
    let looks = || f.consent_looks.load(Ordering::SeqCst);
    rt().block_on(async {
        let before = looks();
        assert_eq!(store.insert(vec![at(1, 0)]).await.unwrap().accepted, 1);
        assert_eq!(looks(), before, "nothing to confirm, no look");
        assert_eq!(store.insert(vec![at(2, 1)]).await.unwrap().accepted, 1);
        assert_eq!(looks(), before + 1);
        // The files changed after the request's look (the store's sees 2).
        f.consent_generation.store(2, Ordering::SeqCst);
        let err = store.insert(vec![at(3, 1), at(4, 1)]).await.unwrap_err();
        assert!(matches!(err, StoreError::ConsentStale), "{err}");
        assert_eq!(store.insert(vec![at(3, 2)]).await.unwrap().accepted, 1);
    });
    // Three requests queued while the store thread waits for the store
    // (held by another thread) are committed together: one look, and only
    // the stale one is sent back.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let inner = store.inner.clone();
    let holder = std::thread::spawn(move || {
        let _held = inner.lock().unwrap();
        held_tx.send(()).unwrap();
        let _ = release_rx.recv();
    });
    held_rx.recv().unwrap();
    rt().block_on(async {
        let queue = |r: Record| store.submit_then(None, false, vec![r], |_| ());
        let stale = queue(at(5, 1)).await.unwrap();
        let fresh = queue(at(6, 2)).await.unwrap();
        let own = queue(at(7, 0)).await.unwrap();
        let before = looks();
        release_tx.send(()).unwrap();
        assert!(matches!(
            stale.await.unwrap().0,
            Err(StoreError::ConsentStale)
        ));
        assert_eq!(fresh.await.unwrap().0.unwrap().accepted, 1);
        assert_eq!(own.await.unwrap().0.unwrap().accepted, 1);
        assert_eq!(looks(), before + 1, "one look for the commit");
        assert_eq!(store.stats().await.unwrap().pending_events, 5);
    });
    holder.join().unwrap();
    drop(store);
    thread.join();
}

#[test]
fn an_insert_checked_before_an_off_is_refused_after_it() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        store
            .apply_consent("a", d(Mode::On), record(99, "a"))
            .await
            .unwrap();
        // The handler saw "on"; the off reaches the store first.
        store
            .apply_consent("a", d(Mode::Off), record(98, "a"))
            .await
            .unwrap();
        let err = store.insert(vec![record(1, "a")]).await.unwrap_err();
        assert!(matches!(err, StoreError::ConsentChanged { .. }), "{err}");
        // Same for a switch to local: nothing stored as uploadable.
        store
            .apply_consent("a", d(Mode::Local), record(97, "a"))
            .await
            .unwrap();
        assert!(store.insert(vec![record(2, "a")]).await.is_err());
        store.insert(vec![local(3, "a")]).await.unwrap();
        // Other commands in the same group are unaffected.
        store
            .apply_consent("b", d(Mode::On), record(96, "b"))
            .await
            .unwrap();
        store.insert(vec![record(4, "b")]).await.unwrap();
    });
    let counted = |store: &Store| {
        let s = rt().block_on(store.stats()).unwrap();
        (s.pending_events, s.pending_bytes, s.local_events)
    };
    let before = counted(&store);
    assert_eq!(before.2, 1, "one local event");
    drop(store);
    thread.join();
    // The counters loaded at startup split pending from local as the
    // running store did.
    let (store, thread) = f.open(100);
    assert_eq!(counted(&store), before);
    drop(store);
    thread.join();
}

#[test]
fn an_off_missed_while_down_is_applied_before_the_new_on() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        store
            .apply_consent("a", d(Mode::On), record(99, "a"))
            .await
            .unwrap();
        store
            .insert(vec![record(1, "a"), record(2, "a")])
            .await
            .unwrap();
        // The user turned it off and on again; we only see the result.
        let back_on = Decision {
            mode: Mode::On,
            off_marker: Some("2026-11-27T00:00:00Z".into()),
        };
        let out = store
            .apply_consent("a", back_on.clone(), record(98, "a"))
            .await
            .unwrap();
        assert_eq!(out.purged, 2);
        assert!(out.final_event);
        let b = store.next_sealed().await.unwrap().unwrap();
        assert_eq!(
            zstd::stream::decode_all(&b.body[..]).unwrap(),
            b"{\"n\":98}\n"
        );
        // Applying the same decision again changes nothing.
        let again = store
            .apply_consent("a", back_on, record(97, "a"))
            .await
            .unwrap();
        assert_eq!(again, ConsentOutcome::default());
    });
    drop(store);
    thread.join();
}

#[test]
fn a_pending_final_event_survives_local_then_off() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        store
            .apply_consent("a", d(Mode::On), record(99, "a"))
            .await
            .unwrap();
        store
            .apply_consent("a", d(Mode::Off), record(98, "a"))
            .await
            .unwrap();
        store
            .apply_consent("a", d(Mode::Local), record(97, "a"))
            .await
            .unwrap();
        store.insert(vec![local(1, "a")]).await.unwrap();
        let out = store
            .apply_consent("a", d(Mode::Off), record(96, "a"))
            .await
            .unwrap();
        assert_eq!(out.purged, 1);
        assert!(!out.final_event, "local -> off records nothing new");
        f.permits
            .lock()
            .unwrap()
            .insert("a".into(), Permit::FinalOnly);
        let b = store
            .next_sealed()
            .await
            .unwrap()
            .expect("the first off's final batch is kept");
        assert_eq!(
            zstd::stream::decode_all(&b.body[..]).unwrap(),
            b"{\"n\":98}\n"
        );
    });
    drop(store);
    thread.join();
}

#[test]
fn a_damaged_database_is_moved_aside_and_replaced() {
    let f = Fixture::new();
    let path = f.dir.path().join(DB_FILE);
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let (store, thread, incident) =
        Store::open_or_recover(&StateLock::acquire(f.dir.path()).unwrap(), f.opts(10)).unwrap();
    let incident = incident.expect("an incident is reported");
    assert!(
        incident.contains("damaged") && incident.contains(".corrupt-"),
        "{incident}"
    );
    let aside: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(
        std::fs::read(aside[0].path()).unwrap(),
        vec![0x5a; 8192],
        "kept as it was"
    );
    rt().block_on(async {
        store
            .apply_consent("a", d(Mode::On), record(0, "a"))
            .await
            .unwrap();
        store.insert(vec![record(1, "a")]).await.unwrap();
    });
    drop(store);
    thread.join();
}

#[test]
fn a_newer_database_is_not_recovered_over() {
    let f = Fixture::new();
    let (store, thread) = f.open(10);
    drop(store);
    thread.join();
    let conn = Connection::open(f.dir.path().join(DB_FILE)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = Store::open_or_recover(&StateLock::acquire(f.dir.path()).unwrap(), f.opts(10))
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
}

#[test]
fn a_full_store_drops_the_oldest_pending_counts_and_reports_them() {
    let mut f = Fixture::new();
    // Each test line is `{"n":N}` + newline: 8 bytes for one digit.
    f.max_store_bytes = 40;
    let (store, thread) = f.open(100);
    rt().block_on(async {
        for n in 1..=5u128 {
            store.insert(vec![record(n, "a")]).await.unwrap();
        }
        let s = store.stats().await.unwrap();
        assert_eq!((s.pending_events, s.pending_bytes), (5, 40));
        assert!(s.dropped.is_empty());
        // Two more: the two oldest go.
        store
            .insert(vec![record(6, "a"), record(7, "a")])
            .await
            .unwrap();
        let s = store.stats().await.unwrap();
        assert_eq!((s.pending_events, s.pending_bytes), (5, 40));
        assert_eq!(s.dropped, vec![("a".to_string(), 2)]);
        let page = store.show(None, 0).await.unwrap();
        let lines: Vec<&str> = page.events.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(
            lines,
            vec![
                r#"{"n":3}"#,
                r#"{"n":4}"#,
                r#"{"n":5}"#,
                r#"{"n":6}"#,
                r#"{"n":7}"#
            ]
        );
        // The next batch carries the count, and the count resets.
        store.seal(true).await.unwrap();
        let b = store.next_sealed().await.unwrap().unwrap();
        let body = String::from_utf8(zstd::stream::decode_all(&b.body[..]).unwrap()).unwrap();
        let last: serde_json::Value = serde_json::from_str(body.lines().last().unwrap()).unwrap();
        assert_eq!(last["event"], "telemetry_dropped");
        assert_eq!(last["data"]["count"], 2);
        assert_eq!(last["machine"], "abcdef0123");
        assert!(store.stats().await.unwrap().dropped.is_empty());
    });
    drop(store);
    thread.join();
    // The counters survive a restart.
    let (store, thread) = f.open(100);
    rt().block_on(async {
        assert_eq!(store.stats().await.unwrap().pending_events, 5);
    });
    drop(store);
    thread.join();
}

#[test]
fn a_full_store_drops_the_oldest_unsealed_of_every_product_and_kind_never_sealed_ones() {
    let mut f = Fixture::new();
    // `{"n":N}` + newline: 8 bytes for one digit, 9 for two.
    f.max_store_bytes = 64;
    let (store, thread) = f.open(2);
    rt().block_on(async {
        store
            .insert(vec![record(1, "a"), record(2, "a")])
            .await
            .unwrap();
        assert_eq!(store.seal(false).await.unwrap(), 1);
        store.insert(vec![local(3, "a")]).await.unwrap();
        store.insert(vec![record(4, "b")]).await.unwrap();
        store.insert(vec![record(5, "a")]).await.unwrap();
        store.insert(vec![local(6, "b")]).await.unwrap();
        store
            .insert(vec![record(7, "b"), record(8, "a")])
            .await
            .unwrap();
        assert!(store.stats().await.unwrap().dropped.is_empty());
        // 17 bytes over: the three oldest unsealed rows, whichever product
        // and kind (a's local 3, b's 4, a's 5), not the sealed 1 and 2.
        store
            .insert(vec![record(9, "a"), record(10, "b")])
            .await
            .unwrap();
        let page = store.show(None, 0).await.unwrap();
        let lines: Vec<&str> = page.events.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(
            lines,
            vec![
                r#"{"n":1}"#,
                r#"{"n":2}"#,
                r#"{"n":6}"#,
                r#"{"n":7}"#,
                r#"{"n":8}"#,
                r#"{"n":9}"#,
                r#"{"n":10}"#
            ]
        );
        let s = store.stats().await.unwrap();
        // Local-only events are dropped but never counted upstream.
        assert_eq!(s.dropped, vec![("a".to_string(), 1), ("b".to_string(), 1)]);
        // Pending counts what is not uploaded yet: the sealed 1 and 2 too.
        assert_eq!(
            (s.pending_events, s.sealed_batches, s.local_events),
            (6, 1, 1)
        );
    });
    drop(store);
    thread.join();
}

#[test]
fn a_long_outage_evicts_the_oldest_sealed_batch_never_the_new_events() {
    let mut f = Fixture::new();
    f.max_store_bytes = 40;
    let (store, thread) = f.open(2);
    rt().block_on(async {
        store
            .insert(vec![
                record(1, "a"),
                record(2, "a"),
                record(3, "a"),
                record(4, "a"),
            ])
            .await
            .unwrap();
        assert_eq!(store.seal(true).await.unwrap(), 2);
        // Uploads are failing; new events keep coming.
        let out = store
            .insert(vec![record(5, "a"), record(6, "a")])
            .await
            .unwrap();
        assert_eq!(out.accepted, 2);
        let s = store.stats().await.unwrap();
        assert_eq!((s.pending_events, s.sealed_batches), (4, 1));
        assert_eq!(s.dropped, vec![("a".to_string(), 2)]);
        let page = store.show(None, 0).await.unwrap();
        let lines: Vec<&str> = page.events.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(
            lines,
            vec![r#"{"n":3}"#, r#"{"n":4}"#, r#"{"n":5}"#, r#"{"n":6}"#]
        );
    });
    drop(store);
    thread.join();
}

/// A batch handed to the uploader may be on its way: making room drops the
/// next oldest instead, so its events are not counted as dropped and
/// delivered too. Once it is done with, it may go.
#[test]
fn making_room_never_drops_the_batch_an_upload_is_carrying() {
    let mut f = Fixture::new();
    f.max_store_bytes = 40;
    let (store, thread) = f.open(2);
    rt().block_on(async {
        let four = (1..=4).map(|n| record(n, "a")).collect();
        store.insert(four).await.unwrap();
        assert_eq!(store.seal(true).await.unwrap(), 2);
        let carried = store.next_sealed().await.unwrap().unwrap();
        store
            .insert(vec![record(5, "a"), record(6, "a")])
            .await
            .unwrap();
        let s = store.stats().await.unwrap();
        assert_eq!(s.dropped, vec![("a".to_string(), 2)]);
        let page = store.show(None, 0).await.unwrap();
        let lines: Vec<&str> = page.events.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(
            lines,
            vec![r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":5}"#, r#"{"n":6}"#],
            "the carried batch (1, 2) stays; the one behind it went"
        );
        store.complete(carried.id, receipt(&carried)).await.unwrap();
        let s = store.stats().await.unwrap();
        assert_eq!(
            (s.pending_events, s.sealed_batches, s.dropped.len()),
            (2, 0, 1)
        );
        // The next batch (5, 6) carries that count. Its upload fails, so
        // it is let go: making room may take it, and gives its carried
        // count back with its own events.
        assert_eq!(store.seal(true).await.unwrap(), 1);
        assert!(store.stats().await.unwrap().dropped.is_empty());
        let failed = store.next_sealed_to(None).await.unwrap().unwrap();
        store.let_go(None).await.unwrap();
        store
            .insert(vec![record(7, "a"), record(8, "a")])
            .await
            .unwrap();
        assert!(
            store.next_sealed_to(None).await.unwrap().is_none(),
            "{failed:?}"
        );
        let s = store.stats().await.unwrap();
        assert_eq!(s.dropped, vec![("a".to_string(), 2 + 2)]);
        let page = store.show(None, 0).await.unwrap();
        let lines: Vec<&str> = page.events.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(lines, vec![r#"{"n":7}"#, r#"{"n":8}"#]);
    });
    drop(store);
    thread.join();
}

/// A batch its destination refuses for good is dropped alone and counted;
/// the batch behind it is next.
#[test]
fn a_rejected_batch_is_dropped_and_counted_and_the_next_one_is_up() {
    let f = Fixture::new();
    let (store, thread) = f.open(2);
    rt().block_on(async {
        store
            .insert(vec![
                record(1, "a"),
                record(2, "a"),
                record(3, "a"),
                record(4, "a"),
            ])
            .await
            .unwrap();
        assert_eq!(store.seal(true).await.unwrap(), 2);
        let first = store.next_sealed().await.unwrap().unwrap();
        assert_eq!(store.reject(first.id).await.unwrap(), 2);
        assert_eq!(store.reject(first.id).await.unwrap(), 0, "gone already");
        let s = store.stats().await.unwrap();
        assert_eq!((s.pending_events, s.sealed_batches), (2, 1));
        assert_eq!(s.dropped, vec![("a".to_string(), 2)]);
        let next = store.next_sealed().await.unwrap().unwrap();
        assert_ne!(next.id, first.id);
        let body = zstd::stream::decode_all(&next.body[..]).unwrap();
        assert_eq!(body, b"{\"n\":3}\n{\"n\":4}\n");
        store.complete(next.id, receipt(&next)).await.unwrap();
        // A batch that carried the drop count (its telemetry_dropped line)
        // gives it back when it is dropped: the count is not lost.
        store.insert(vec![record(5, "a")]).await.unwrap();
        assert_eq!(store.seal(true).await.unwrap(), 1);
        let carrier = store.next_sealed().await.unwrap().unwrap();
        let body = String::from_utf8(zstd::stream::decode_all(&carrier.body[..]).unwrap()).unwrap();
        assert!(
            body.contains("telemetry_dropped") && body.contains("\"count\":2"),
            "{body}"
        );
        assert_eq!(store.stats().await.unwrap().dropped, vec![]);
        assert_eq!(store.reject(carrier.id).await.unwrap(), 1);
        assert_eq!(
            store.stats().await.unwrap().dropped,
            vec![("a".to_string(), 3)]
        );
    });
    drop(store);
    thread.join();
}

#[test]
fn an_insert_that_cannot_fit_is_refused_not_dropped() {
    let mut f = Fixture::new();
    f.max_store_bytes = 10;
    let (store, thread) = f.open(100);
    rt().block_on(async {
        store.insert(vec![record(1, "a")]).await.unwrap();
        let err = store
            .insert(vec![record(2, "a"), record(3, "a")])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Full { limit: 10 }), "{err}");
        // Refused whole: nothing of it stored, nothing older lost.
        let s = store.stats().await.unwrap();
        assert_eq!(s.pending_events, 1);
        assert!(s.dropped.is_empty());
    });
    drop(store);
    thread.join();
}

#[test]
fn commits_wait_only_for_clients_answered_just_now() {
    let last: std::collections::HashSet<u64> = [1, 2, 3].into_iter().collect();
    let bound = Duration::from_micros(600);
    assert_eq!(
        awaited(last.clone(), Duration::from_micros(100), bound),
        last,
        "answered 100 µs ago: on their way back"
    );
    assert!(
        awaited(last, Duration::from_millis(5), bound).is_empty(),
        "after a quiet spell nobody is waited for"
    );
}

#[test]
fn the_doorbell_wakes_a_waiting_commit_only_when_that_changes_what_it_does() {
    use std::collections::HashSet;
    use std::sync::mpsc::channel;
    let bell = Arc::new(Doorbell::default());
    let long = Duration::from_secs(10);

    // Something rang since the caller looked: no wait at all.
    let seen = bell.count();
    bell.ring_insert(None);
    let t = Instant::now();
    bell.wait(seen, t + long, &HashSet::from([1]));
    assert!(t.elapsed() < Duration::from_secs(1));

    // Waiting for clients 1 and 2: client 1 and a client nobody waits for
    // do not end the wait; client 2, the last, does.
    let (done_tx, done_rx) = channel();
    let waiter = {
        let bell = bell.clone();
        let seen = bell.count();
        std::thread::spawn(move || {
            bell.wait(seen, Instant::now() + long, &HashSet::from([1, 2]));
            done_tx.send(()).unwrap();
        })
    };
    // Let the waiter register what it waits for.
    while bell.lock().awaited.is_empty() {
        std::thread::yield_now();
    }
    bell.ring_insert(Some(1));
    bell.ring_insert(Some(7));
    bell.ring_insert(None);
    assert!(
        done_rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "still waiting for client 2"
    );
    bell.ring_insert(Some(2));
    done_rx
        .recv_timeout(long)
        .expect("the last awaited client ends the wait");
    waiter.join().unwrap();

    // Any other command ends the wait at once.
    let (done_tx, done_rx) = channel();
    let waiter = {
        let bell = bell.clone();
        let seen = bell.count();
        std::thread::spawn(move || {
            bell.wait(seen, Instant::now() + long, &HashSet::from([3]));
            done_tx.send(()).unwrap();
        })
    };
    while bell.lock().awaited.is_empty() {
        std::thread::yield_now();
    }
    bell.ring();
    done_rx.recv_timeout(long).expect("a command ends the wait");
    waiter.join().unwrap();

    // Nobody comes: the wait ends at its deadline.
    let seen = bell.count();
    let t = Instant::now();
    bell.wait(seen, t + Duration::from_millis(100), &HashSet::from([4]));
    assert!(t.elapsed() >= Duration::from_millis(100));
}

#[test]
fn consented_event_sets_are_recorded_once_and_unversioned_ones_renewed() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        let names = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(store.consented_events("a", 2, None).await.unwrap(), None);
        let got = store
            .consented_events("a", 2, names(&["x", "y"]))
            .await
            .unwrap();
        assert_eq!(got, names(&["x", "y"]));
        // The first set recorded for a version stays.
        let got = store
            .consented_events("a", 2, names(&["x", "y", "z"]))
            .await
            .unwrap();
        assert_eq!(got, names(&["x", "y"]));
        store.consented_events("a", 0, names(&["x"])).await.unwrap();
        // A new decision forgets the set of a decision without a version,
        // not the versioned ones.
        store
            .apply_consent("a", d(Mode::Local), record(99, "a"))
            .await
            .unwrap();
        assert_eq!(store.consented_events("a", 0, None).await.unwrap(), None);
        assert_eq!(
            store.consented_events("a", 2, None).await.unwrap(),
            names(&["x", "y"])
        );
    });
    drop(store);
    thread.join();
}

#[test]
fn an_on_product_may_store_local_only_events_and_an_off_one_none() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        store
            .insert(vec![local(1, "a"), record(2, "a")])
            .await
            .unwrap();
        assert_eq!(store.stats().await.unwrap().local_events, 1);
        store
            .apply_consent("b", d(Mode::Off), record(99, "b"))
            .await
            .unwrap();
        let err = store.insert(vec![local(3, "b")]).await.unwrap_err();
        assert!(matches!(err, StoreError::ConsentChanged { .. }), "{err:?}");
    });
    drop(store);
    thread.join();
}

#[test]
fn receipts_are_kept_with_their_bodies_bounded_and_listed_a_page_at_a_time() {
    let f = Fixture::new();
    let (store, thread) = f.open(1);
    rt().block_on(async {
        let n = MAX_RECEIPTS + 5;
        for i in 0..n {
            store
                .insert(vec![record(1000 + u128::from(i), "a")])
                .await
                .unwrap();
            store.seal(true).await.unwrap();
            let b = store.next_sealed().await.unwrap().unwrap();
            // The last bodies are big: only the newest fit the bound.
            let mut r = receipt(&b);
            if i >= n - 3 {
                r.body = vec![7; (MAX_RECEIPT_BODY_BYTES / 2) as usize];
            }
            store.complete(b.id, r).await.unwrap();
        }
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = store.receipts(after).await.unwrap();
            assert_eq!(page.max_receipts, MAX_RECEIPTS);
            all.extend(page.receipts);
            match page.next_after {
                Some(a) => after = a,
                None => break,
            }
        }
        assert_eq!(all.len() as u64, MAX_RECEIPTS, "the oldest were dropped");
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(all.last().unwrap().seq, n, "the newest kept");
        let kept: Vec<bool> = all.iter().rev().take(4).map(|r| r.body_kept).collect();
        assert_eq!(
            kept,
            [true, true, false, false],
            "two half-limit bodies fit"
        );
        // A kept body of a real batch lists its lines.
        let small = &all[all.len() - 4];
        let lines = store
            .receipt_lines(small.key.clone(), 0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(lines.receipts[0].key, small.key);
        assert!(lines.lines.is_empty(), "its body was dropped");
        assert!(store
            .receipt_lines("no/such".into(), 0)
            .await
            .unwrap()
            .is_none());
    });
    drop(store);
    thread.join();
}

#[test]
fn forget_deletes_the_products_data_seals_the_marker_alone_and_keeps_the_salt() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        store
            .insert(vec![record(1, "a"), record(2, "a"), record(3, "b")])
            .await
            .unwrap();
        store.seal(true).await.unwrap();
        store.insert(vec![record(4, "a")]).await.unwrap();
        let mut marker = record(5, "a");
        marker.line = "{\"event\":\"telemetry_forget\"}".into();
        let out = store
            .forget("a".into(), Some(marker), "ab".repeat(16))
            .await
            .unwrap();
        assert_eq!((out.purged, out.marker), (3, true));
        assert!(out.since_us > 0);
        let page = store.show(Some("a".into()), 0).await.unwrap();
        assert_eq!(page.events.len(), 1);
        assert!(page.events[0].line.contains("telemetry_forget"));
        assert_eq!(page.events[0].state, telemetry_proto::EventState::Sealed);
        let b_events = store.show(Some("b".into()), 0).await.unwrap();
        assert_eq!(b_events.events.len(), 1, "other products untouched");
        let salts = store.id_salts().await.unwrap();
        assert_eq!(
            salts.get("a").map(|(salt, _)| salt.as_str()),
            Some("ab".repeat(16).as_str())
        );
        // Without a marker (not on): deleted, nothing recorded.
        let out = store
            .forget("b".into(), None, "cd".repeat(16))
            .await
            .unwrap();
        assert_eq!((out.purged, out.marker), (1, false));
        assert!(store
            .show(Some("b".into()), 0)
            .await
            .unwrap()
            .events
            .is_empty());
    });
    drop(store);
    thread.join();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        assert_eq!(
            store.id_salts().await.unwrap().len(),
            2,
            "salts survive a restart"
        );
    });
    drop(store);
    thread.join();
}

#[test]
fn a_v7_database_with_sealed_rows_keeps_every_event_in_its_place() {
    let f = Fixture::new();
    let (store, thread) = f.open(2);
    rt().block_on(async {
        store
            .insert(vec![record(1, "a"), record(2, "a"), record(4, "b")])
            .await
            .unwrap();
        store.insert(vec![local(3, "a")]).await.unwrap();
        store.insert(vec![record(5, "a")]).await.unwrap();
        // a: 1, 2 sealed together (the local 3 is between, not in it).
        assert_eq!(store.seal(false).await.unwrap(), 1);
    });
    drop(store);
    thread.join();
    // Back to what version 7 wrote: each sealed row names its batch.
    let path = f.dir.path().join(DB_FILE);
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP INDEX batches_by_product;
         CREATE INDEX events_by_batch ON events (batch_id) WHERE batch_id IS NOT NULL;
         UPDATE events SET batch_id = (SELECT b.id FROM batches b WHERE b.product = events.product
             AND events.seq BETWEEN b.first_seq AND b.last_seq) WHERE local_only = 0;",
    )
    .unwrap();
    back_to_v8(&conn);
    conn.pragma_update(None, "user_version", 7).unwrap();
    let marked: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM events WHERE batch_id IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(marked, 2, "a's two");
    drop(conn);

    let (store, thread) = f.open(2);
    rt().block_on(async {
        let s = store.stats().await.unwrap();
        assert_eq!(
            (s.pending_events, s.sealed_batches, s.local_events),
            (4, 1, 1),
            "{s:?}"
        );
        let mut seen = Vec::new();
        while let Some(b) = store.next_sealed().await.unwrap() {
            seen.push(zstd::stream::decode_all(&b.body[..]).unwrap());
            store.complete(b.id, receipt(&b)).await.unwrap();
        }
        assert_eq!(seen, [b"{\"n\":1}\n{\"n\":2}\n".to_vec()]);
        let s = store.stats().await.unwrap();
        assert_eq!(
            (s.pending_events, s.local_events),
            (2, 1),
            "b's 4 and a's 5 wait; the local 3 stays"
        );
        assert_eq!(store.seal(true).await.unwrap(), 2);
        let b = store.next_sealed().await.unwrap().unwrap();
        let body = zstd::stream::decode_all(&b.body[..]).unwrap();
        assert!(body == b"{\"n\":5}\n" || body == b"{\"n\":4}\n", "{body:?}");
        // Sent again after its upload: a duplicate, not stored.
        let out = store.insert(vec![record(1, "a")]).await.unwrap();
        assert_eq!((out.accepted, out.duplicates), (0, 1));
    });
    drop(store);
    thread.join();
    let conn = Connection::open(&path).unwrap();
    let marked: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM events WHERE batch_id IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(marked, 0, "version 8 clears batch_id");
}

/// Undo migration 0010 (per-product key numbers).
fn back_to_v9(conn: &Connection) {
    conn.execute_batch("DROP TABLE key_counters; DROP TABLE key_secret; PRAGMA user_version = 9;")
        .unwrap();
}

/// Undo migrations 0010 and 0009 on a closed store's database: ids of
/// events no longer stored go to `uploaded_ids` (uploaded at time 1), the
/// events table gets its unique index on id back, the generations go.
fn back_to_v8(conn: &Connection) {
    back_to_v9(conn);
    conn.execute_batch(
        "CREATE TABLE uploaded_ids (id BLOB PRIMARY KEY, uploaded_us INTEGER NOT NULL) WITHOUT ROWID;
         CREATE INDEX uploaded_ids_age ON uploaded_ids (uploaded_us);
         INSERT INTO uploaded_ids (id, uploaded_us)
             SELECT id, 1 FROM (SELECT id FROM seen_ids_a UNION SELECT id FROM seen_ids_b)
             WHERE id NOT IN (SELECT id FROM events);
         DROP TABLE seen_ids_a;
         DROP TABLE seen_ids_b;
         DROP TABLE seen_generation;
         CREATE UNIQUE INDEX events_id ON events (id);
         PRAGMA user_version = 8;",
    )
    .unwrap();
}

#[test]
fn a_v8_database_keeps_its_ids_deduplicated_and_its_seq_high_water() {
    let f = Fixture::new();
    let (store, thread) = f.open(2);
    rt().block_on(async {
        store
            .insert(vec![record(1, "a"), record(2, "a")])
            .await
            .unwrap();
        assert_eq!(store.seal(false).await.unwrap(), 1);
        let b = store.next_sealed().await.unwrap().unwrap();
        store.complete(b.id, receipt(&b)).await.unwrap();
        store
            .insert(vec![record(3, "a"), local(4, "a")])
            .await
            .unwrap();
    });
    drop(store);
    thread.join();
    let path = f.dir.path().join(DB_FILE);
    let conn = Connection::open(&path).unwrap();
    back_to_v8(&conn);
    let uploaded: i64 = conn
        .query_row("SELECT COUNT(*) FROM uploaded_ids", [], |r| r.get(0))
        .unwrap();
    assert_eq!(uploaded, 2, "1 and 2 were uploaded");
    // Rows deleted at the top: the next seq must still be above them.
    let high: i64 = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'events'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    conn.execute(
        "DELETE FROM events WHERE seq = (SELECT MAX(seq) FROM events)",
        [],
    )
    .unwrap();
    drop(conn);

    let (store, thread) = f.open(2);
    rt().block_on(async {
        let out = store
            .insert(vec![record(1, "a"), record(3, "a"), record(9, "a")])
            .await
            .unwrap();
        assert_eq!(
            (out.accepted, out.duplicates),
            (1, 2),
            "1 (uploaded) and 3 (stored) are known; 9 is new"
        );
    });
    drop(store);
    thread.join();
    let conn = Connection::open(&path).unwrap();
    let newest: i64 = conn
        .query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(newest, high + 1, "no seq reused");
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('uploaded_ids', 'events_id', 'events_v9')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "the old dedup table and index are gone");
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

#[test]
fn what_an_unwaited_insert_keeps_is_held_until_its_commit() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        // Hold the store thread in a command of its own, so the insert
        // queued behind it cannot be committed yet.
        let (release, blocker) = hold_store_thread(&store).await;
        let room = Arc::new(tokio::sync::Semaphore::new(1));
        let permit = room.clone().acquire_owned().await.unwrap();
        store
            .insert_no_wait(vec![record(7, "a")], move |_| drop(permit))
            .await
            .unwrap();
        assert_eq!(
            room.available_permits(),
            0,
            "queued but not committed: the room is still taken"
        );
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        // Commands are served in order: the insert has been committed.
        let s = store.stats().await.unwrap();
        assert_eq!(s.pending_events, 1);
        assert_eq!(room.available_permits(), 1, "given back at the commit");
    });
    drop(store);
    thread.join();
}

/// The thread an insert's outcome was first seen on: the store thread's
/// name, or the submitter's.
fn committed_on(
    store: &Store,
    alone: bool,
    n: u128,
) -> impl std::future::Future<Output = (InsertOutcome, Option<String>)> + Send + 'static {
    let store = store.clone();
    async move {
        let (outcome, on) = store
            .insert_then(Some(1), alone, vec![record(n, "a")], |_| {
                std::thread::current().name().map(String::from)
            })
            .await
            .unwrap();
        (outcome.unwrap(), on)
    }
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

#[test]
fn a_lone_insert_to_an_idle_store_is_committed_by_its_submitter() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    let here = std::thread::current().name().map(String::from);
    rt().block_on(async {
        until_idle(&store).await;
        let (out, on) = committed_on(&store, true, 1).await;
        assert_eq!(out.accepted, 1);
        assert_eq!(on, here, "no handoff to the store thread");
        // Led again: the same client, alone.
        assert_eq!(committed_on(&store, true, 2).await.1, here);
        // With something of its own queued before it, it must not overtake.
        let (out, on) = committed_on(&store, false, 3).await;
        assert_eq!(out.accepted, 1);
        assert_eq!(on.as_deref(), Some("telemetryd-store"));
        // Led commits are commits like the store thread's: a resend is a
        // duplicate.
        until_idle(&store).await;
        let (out, on) = committed_on(&store, true, 1).await;
        assert_eq!((out.duplicates, on), (1, here));
    });
    drop(store);
    thread.join();
    // Durable: there after the store is closed and opened again.
    let (store, thread) = f.open(100);
    let s = rt().block_on(store.stats()).unwrap();
    assert_eq!(s.pending_events, 3);
    drop(store);
    thread.join();
}

#[test]
fn a_lone_insert_to_a_busy_store_waits_for_the_store_thread() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        let (release, blocker) = hold_store_thread(&store).await;
        // The store thread holds the store: the insert is queued, and the
        // submitter is not blocked behind it.
        let insert = tokio::spawn(committed_on(&store, true, 1));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !insert.is_finished(),
            "not committed while the store is held"
        );
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        let (out, on) = insert.await.unwrap();
        assert_eq!(out.accepted, 1);
        assert_eq!(on.as_deref(), Some("telemetryd-store"));
    });
    drop(store);
    thread.join();
}

#[test]
fn a_lone_insert_never_overtakes_one_the_store_thread_has_taken_but_not_run() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    let runtime = rt();
    // Hold the store as a leader would, so the store thread takes the
    // unwaited insert from its queue and then waits for the store.
    let held = store.inner.lock().unwrap();
    runtime
        .block_on(store.insert_no_wait(vec![record(1, "a")], |_| ()))
        .unwrap();
    while store.tx.capacity() != store.tx.max_capacity() {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(!store.queued.none(), "taken, not run: still counted");
    drop(held);
    runtime.block_on(async {
        // The queue is empty and the store free (unless the store thread
        // has got to it already): whoever commits this one, it follows
        // the insert sent before it.
        let (out, _) = committed_on(&store, true, 2).await;
        assert_eq!(out.accepted, 1);
        let order = store
            .run_on(|inner| {
                let mut st = inner
                    .conn
                    .prepare("SELECT id FROM events ORDER BY seq")
                    .map_err(sql("test"))?;
                let ids = st
                    .query_map([], |r| r.get::<_, Vec<u8>>(0))
                    .map_err(sql("test"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(sql("test"));
                ids
            })
            .await
            .unwrap();
        assert_eq!(
            order,
            [record(1, "a").id.to_vec(), record(2, "a").id.to_vec()]
        );
    });
    drop(store);
    thread.join();
}

#[test]
fn nobody_leads_while_a_command_sent_to_the_store_thread_is_unfinished() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        until_idle(&store).await;
        // As when the store thread has taken a command from its queue and
        // not yet run it: the queue is empty and the store free, yet a
        // lone insert must go behind it (the moment is too short to make
        // happen on purpose).
        store.queued.add();
        let (out, on) = committed_on(&store, true, 1).await;
        store.queued.done(1);
        assert_eq!(out.accepted, 1);
        assert_eq!(on.as_deref(), Some("telemetryd-store"));
        // Finished, the same insert leads again.
        until_idle(&store).await;
        let here = std::thread::current().name().map(String::from);
        assert_eq!(committed_on(&store, true, 2).await.1, here);
    });
    drop(store);
    thread.join();
}

#[test]
fn a_lone_insert_does_not_lead_while_the_clients_of_a_shared_commit_are_due() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        // As right after a commit that answered clients 1 and 2.
        store
            .run_on(|inner| {
                inner.last_clients = [1, 2].into();
                inner.last_commit = Duration::from_secs(1);
                inner.last_commit_end = Instant::now() + Duration::from_secs(3600);
                Ok(())
            })
            .await
            .unwrap();
        // Client 1 is back; client 2 is due: the store thread waits for it
        // rather than this commit going alone.
        let (out, on) = committed_on(&store, true, 1).await;
        assert_eq!(out.accepted, 1);
        assert_eq!(on.as_deref(), Some("telemetryd-store"));
    });
    drop(store);
    thread.join();
}

#[test]
fn nobody_leads_on_a_store_whose_thread_has_died() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        let died = store
            .run_on(|_| -> Result<(), StoreError> { panic!("the store thread dies") })
            .await;
        assert!(matches!(died, Err(StoreError::Closed)));
        let lone = store
            .insert_then(Some(1), true, vec![record(1, "a")], |_| ())
            .await;
        assert!(
            matches!(lone, Err(StoreError::Closed)),
            "refused, not committed on a store nobody serves: {lone:?}"
        );
    });
    drop(store);
    thread.join();
}

#[test]
fn a_panicking_answer_loses_only_its_own_reply() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        // First on the store thread, then led by this thread (nobody else
        // is expected once the last commit is long past).
        for (n, alone) in [(1, false), (3, true)] {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let panicked = store
                .insert_then(Some(1), alone, vec![record(n, "a")], |_| {
                    panic!("writing this answer fails")
                })
                .await;
            assert!(matches!(panicked, Err(StoreError::Closed)), "{panicked:?}");
            // The store still serves, and the event was committed.
            let next = insert_from(&store, 2, vec![record(n + 1, "a")])
                .await
                .unwrap();
            assert_eq!(next.accepted, 1);
            let again = insert_from(&store, 2, vec![record(n, "a")]).await.unwrap();
            assert_eq!((again.accepted, again.duplicates), (0, 1));
        }
    });
    drop(store);
    thread.join();
}
