//! Opening a store: migrations, older schemas, a damaged or newer database, one store per directory.

use super::*;

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

    // A newer build whose migrations this one cannot live with says so.
    too_new_for_us(&conn, Some(99));
    drop(conn);
    let err = Store::open(f.dir.path(), f.opts(10)).err().unwrap();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains(DB_FILE));
    assert!(
        err.to_string().contains("needs schema 99 or newer"),
        "{err}"
    );
    // Refused, not modified.
    let conn = Connection::open(&path).unwrap();
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, 99);
}

/// Make the store look migrated by a newer build (schema 99) that said
/// builds from `oldest_reader` on may serve it (`None`: said nothing, as
/// builds before schema 14).
fn too_new_for_us(conn: &Connection, oldest_reader: Option<i64>) {
    conn.pragma_update(None, "user_version", 99).unwrap();
    match oldest_reader {
        Some(n) => conn
            .execute("UPDATE store_compat SET oldest_reader = ?1", [n])
            .map(drop),
        None => conn.execute_batch("DROP TABLE store_compat"),
    }
    .unwrap();
}

/// What this build writes into a store it opens.
const OURS: Schema = Schema {
    version: SCHEMA_VERSION as i64,
    oldest_reader: Some(OLDEST_READER as i64),
};

fn schema_of(path: &Path) -> Schema {
    Schema::read(&Connection::open(path).unwrap()).unwrap()
}

/// A store a newer build migrated is served as it is when that build said
/// this one may: events go in and come out, and neither its version nor
/// its floor moves (its own builds keep them). Without that word (a build
/// before schema 14), or with a floor above this build, it is refused and
/// left as it was.
#[test]
fn a_newer_store_is_served_as_it_is_only_when_its_builds_allow() {
    let f = Fixture::new();
    let path = f.dir.path().join(DB_FILE);
    let (store, thread) = f.open(10);
    rt().block_on(async { store.insert(vec![record(1, "a")]).await.unwrap() });
    drop(store);
    thread.join();
    assert_eq!(schema_of(&path), OURS);
    // A floor of its own (not this build's), so that a rewrite shows.
    let conn = Connection::open(&path).unwrap();
    too_new_for_us(&conn, Some(1));
    drop(conn);
    let (store, thread) = f.open(10);
    rt().block_on(async {
        let out = store
            .insert(vec![record(1, "a"), record(2, "a")])
            .await
            .unwrap();
        assert_eq!((out.accepted, out.duplicates), (1, 1));
        assert_eq!(store.seal(true).await.unwrap(), 1);
        assert_eq!(store.next_sealed().await.unwrap().unwrap().events, 2);
    });
    drop(store);
    thread.join();
    let newer = Schema {
        version: 99,
        oldest_reader: Some(1),
    };
    assert_eq!(schema_of(&path), newer, "served, not migrated down");

    for (oldest, needs) in [(None, false), (Some(SCHEMA_VERSION as i64 + 1), true)] {
        let conn = Connection::open(&path).unwrap();
        too_new_for_us(&conn, oldest);
        drop(conn);
        let before = std::fs::read(&path).unwrap();
        let err = Store::open(f.dir.path(), f.opts(10)).err().unwrap();
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
        assert_eq!(err.to_string().contains("needs schema"), needs, "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "not modified");
        if oldest.is_none() {
            Connection::open(&path)
                .unwrap()
                .execute_batch(
                    "CREATE TABLE store_compat (only INTEGER PRIMARY KEY, oldest_reader INTEGER NOT NULL);
                     INSERT INTO store_compat VALUES (1, 14);",
                )
                .unwrap();
        }
    }
}

/// A store from before schema 14 gets this build's word at its migration.
#[test]
fn a_v13_store_learns_which_builds_may_serve_it() {
    let f = Fixture::new();
    let path = f.dir.path().join(DB_FILE);
    let (store, thread) = f.open(10);
    drop(store);
    thread.join();
    back_to_v13(&Connection::open(&path).unwrap());
    assert_eq!(schema_of(&path).oldest_reader, None);
    let (store, thread) = f.open(10);
    drop(store);
    thread.join();
    assert_eq!(schema_of(&path), OURS);
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
            .apply_consent("a", d(Mode::On), record(0, "a"), Announce::Installed)
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
    too_new_for_us(&conn, Some(99));
    drop(conn);
    let err = Store::open_or_recover(&StateLock::acquire(f.dir.path()).unwrap(), f.opts(10))
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
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
    back_to_v10(conn);
    conn.execute_batch("DROP TABLE key_counters; DROP TABLE key_secret; PRAGMA user_version = 9;")
        .unwrap();
}

/// Undo migration 0016: remembered ids without their product.
fn back_to_v15(conn: &Connection) {
    conn.execute_batch(
        "ALTER TABLE seen_ids_a DROP COLUMN product;
         ALTER TABLE seen_ids_b DROP COLUMN product;
         PRAGMA user_version = 15;",
    )
    .unwrap();
}

/// Undo migrations 0016 and 0015: no count of local-only drops either.
fn back_to_v14(conn: &Connection) {
    back_to_v15(conn);
    conn.execute_batch("DROP TABLE local_dropped; PRAGMA user_version = 14;")
        .unwrap();
}

/// Undo migrations 0015 and 0014: no word on which builds may serve the
/// store either.
fn back_to_v13(conn: &Connection) {
    back_to_v14(conn);
    conn.execute_batch("DROP TABLE store_compat; PRAGMA user_version = 13;")
        .unwrap();
}

/// Undo migration 0013: no record of refused batches.
fn back_to_v12(conn: &Connection) {
    back_to_v13(conn);
    conn.execute_batch("DROP TABLE refused; PRAGMA user_version = 12;")
        .unwrap();
}

/// Undo migrations 0016 to 0011: consented sets by name only (0012 only
/// renamed receipts' outbox label).
fn back_to_v10(conn: &Connection) {
    back_to_v12(conn);
    conn.execute_batch(
        "ALTER TABLE consented_events DROP COLUMN fields; PRAGMA user_version = 10;",
    )
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

/// A schema-10 database holding consented sets (names only, no `fields`
/// column) migrates to 11 with every set kept, each covering its events by
/// name, and a new version's set records its fields.
#[test]
fn a_v10_database_keeps_its_consented_sets_as_names() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    drop(store);
    thread.join();
    let path = f.dir.path().join(DB_FILE);
    let conn = Connection::open(&path).unwrap();
    back_to_v10(&conn);
    // As a schema-10 daemon wrote them.
    conn.execute_batch(
        "INSERT INTO consented_events (product, version, events, recorded_us)
             VALUES ('a', 2, 'ran\nwalked', 1), ('b', 0, 'x', 1);",
    )
    .unwrap();
    drop(conn);

    let (store, thread) = f.open(100);
    let set = |v: &[(&str, Option<&str>)]| {
        Some(
            v.iter()
                .map(|(n, f)| (n.to_string(), f.map(str::to_string)))
                .collect::<Vec<_>>(),
        )
    };
    rt().block_on(async {
        let got = store.consented_events("a", 2, None).await.unwrap();
        assert_eq!(got, set(&[("ran", None), ("walked", None)]));
        let got = store.consented_events("b", 0, None).await.unwrap();
        assert_eq!(got, set(&[("x", None)]));
        // The first set recorded for a version stays: the old one is not
        // replaced by a set with fields.
        let got = store
            .consented_events("a", 2, set(&[("ran", Some("cmd=enum"))]))
            .await
            .unwrap();
        assert_eq!(got, set(&[("ran", None), ("walked", None)]));
        let got = store
            .consented_events("a", 3, set(&[("ran", Some("cmd=enum"))]))
            .await
            .unwrap();
        assert_eq!(got, set(&[("ran", Some("cmd=enum"))]));
    });
    drop(store);
    thread.join();
    let conn = Connection::open(&path).unwrap();
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, MIGRATIONS.len() as i64);
}

/// A schema-11 database's receipts named the outbox with its directory (a
/// path: under a home directory, the user's name); migrating to 12 keeps
/// every receipt and names the outbox alone.
#[test]
fn a_v11_databases_receipts_name_the_outbox_without_its_path() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    drop(store);
    thread.join();
    let path = f.dir.path().join(DB_FILE);
    let conn = Connection::open(&path).unwrap();
    back_to_v12(&conn);
    conn.execute_batch(
        "PRAGMA user_version = 11;
         INSERT INTO receipts (product, destination, key, sha256, bytes, events, uploaded_us, already_there)
             VALUES ('a', 'outbox:/home/alice/.local/state/telemetry/outbox', 'k1', 'h', 1, 1, 1, 0),
                    ('a', 'https://broker.example', 'k2', 'h', 1, 1, 2, 0);",
    )
    .unwrap();
    drop(conn);
    let (store, thread) = f.open(100);
    let page = rt().block_on(store.receipts(0)).unwrap();
    let named: Vec<&str> = page
        .receipts
        .iter()
        .map(|r| r.destination.as_str())
        .collect();
    assert_eq!(named, ["outbox", "https://broker.example"]);
    drop(store);
    thread.join();
}
