//! Consent as the store applies it: on, local and off, forgetting, and inserts checked against an older look at the consent files.

use super::*;

/// How many dedup generations remember record `n`'s id.
fn seen(conn: &Connection, n: u128) -> i64 {
    conn.query_row(
        "SELECT (SELECT COUNT(*) FROM seen_ids_a WHERE id = ?1) + (SELECT COUNT(*) FROM seen_ids_b WHERE id = ?1)",
        [&record(n, "").id[..]],
        |r| r.get(0),
    )
    .unwrap()
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
    let all_seen = "SELECT (SELECT COUNT(*) FROM seen_ids_a) + (SELECT COUNT(*) FROM seen_ids_b)";
    assert_eq!(count(all_seen), 3);
    conn.execute("DELETE FROM events", []).unwrap();
    drop(conn);
    // Forget and a switch to off, on the store itself.
    let (store, thread) = f.open(100);
    rt().block_on(async {
        assert_eq!(
            store.insert(vec![record(11, "a")]).await.unwrap().accepted,
            1
        );
        forget(&store, "a", Some(record(98, "a")), "0".repeat(32)).await;
        assert_eq!(
            store.insert(vec![record(12, "b")]).await.unwrap().accepted,
            1
        );
        let off = store
            .apply_consent("b", d(Mode::Off), record(99, "b"), Announce::Installed)
            .await
            .unwrap();
        assert_eq!(off.purged, 1);
    });
    drop(store);
    thread.join();
    let conn = Connection::open(f.dir.path().join(DB_FILE)).unwrap();
    for id in [11u128, 12] {
        assert_eq!(seen(&conn, id), 0, "id {id} forgotten with its event");
    }
}

/// Products `sent` and `never` on; `sent` sealed a batch (its event `id`)
/// under its current ID, `never` did not.
async fn one_of_two_sent(store: &Store, id: u128) {
    for p in ["sent", "never"] {
        store
            .apply_consent(p, d(Mode::On), record(99, p), Announce::Installed)
            .await
            .unwrap();
    }
    store.insert(vec![record(id, "sent")]).await.unwrap();
    store.seal(true).await.unwrap();
}

/// An off for a product no manifest describes is announced only if the
/// product sealed a batch under its current ID (its vendor may know this
/// machine): a product uninstalled after sending is still told, a name
/// never installed is not.
#[test]
fn an_off_without_a_manifest_is_announced_only_for_a_product_that_sent() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        one_of_two_sent(&store, 1).await;
        store.insert(vec![record(2, "never")]).await.unwrap();
        for (p, announced) in [("sent", true), ("never", false)] {
            let out = store
                .apply_consent(p, d(Mode::Off), record(98, p), Announce::IfKnown)
                .await
                .unwrap();
            assert_eq!(out.purged, 1, "{p}");
            assert_eq!(out.final_event, announced, "{p}");
        }
    });
    drop(store);
    thread.join();
}

/// A forget leaves no id of the product's events behind, uploaded ones
/// included (they are in the uploaded objects too: a link to what the
/// vendor holds, and a timeline); other products' ids stay. As with an
/// off, a product no manifest describes gets a marker only if it sent.
#[test]
fn forget_forgets_the_ids_of_uploaded_events_too_and_marks_only_a_product_that_sent() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        store
            .insert(vec![record(1, "a"), record(2, "a"), record(3, "b")])
            .await
            .unwrap();
    });
    drop(store);
    thread.join();
    // As if uploaded: the events are gone, their ids remembered.
    let conn = Connection::open(f.dir.path().join(DB_FILE)).unwrap();
    conn.execute("DELETE FROM events", []).unwrap();
    drop(conn);
    let (store, thread) = f.open(100);
    rt().block_on(async {
        one_of_two_sent(&store, 4).await;
        for (p, marked) in [("a", false), ("sent", true), ("never", false)] {
            let out = store
                .forget(
                    p.into(),
                    Some(record(98, p)),
                    Announce::IfKnown,
                    "ab".repeat(16),
                )
                .await
                .unwrap();
            assert_eq!(out.marker, marked, "{p}");
        }
    });
    drop(store);
    thread.join();
    let conn = Connection::open(f.dir.path().join(DB_FILE)).unwrap();
    assert_eq!((seen(&conn, 1), seen(&conn, 2), seen(&conn, 4)), (0, 0, 0));
    assert_eq!(seen(&conn, 3), 1, "another product's id stays");
}

#[test]
fn turning_on_off_purges_and_seals_only_the_final_event() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        store
            .apply_consent("a", d(Mode::On), record(99, "a"), Announce::Installed)
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
            .apply_consent("a", d(Mode::Off), record(99, "a"), Announce::Installed)
            .await
            .unwrap();
        assert_eq!(out.purged, 3);
        assert!(out.final_event);
        // Applying the same decision again does nothing.
        let again = store
            .apply_consent("a", d(Mode::Off), record(98, "a"), Announce::Installed)
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
            .apply_consent("a", d(Mode::Local), record(99, "a"), Announce::Installed)
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
            .apply_consent("a", d(Mode::On), record(99, "a"), Announce::Installed)
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
            .apply_consent("a", d(Mode::Local), record(99, "a"), Announce::Installed)
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
            .apply_consent("a", d(Mode::On), record(99, "a"), Announce::Installed)
            .await
            .unwrap();
        // The handler saw "on"; the off reaches the store first.
        store
            .apply_consent("a", d(Mode::Off), record(98, "a"), Announce::Installed)
            .await
            .unwrap();
        let err = store.insert(vec![record(1, "a")]).await.unwrap_err();
        assert!(matches!(err, StoreError::ConsentChanged { .. }), "{err}");
        // Same for a switch to local: nothing stored as uploadable.
        store
            .apply_consent("a", d(Mode::Local), record(97, "a"), Announce::Installed)
            .await
            .unwrap();
        assert!(store.insert(vec![record(2, "a")]).await.is_err());
        store.insert(vec![local(3, "a")]).await.unwrap();
        // Other commands in the same group are unaffected.
        store
            .apply_consent("b", d(Mode::On), record(96, "b"), Announce::Installed)
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
            .apply_consent("a", d(Mode::On), record(99, "a"), Announce::Installed)
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
            .apply_consent("a", back_on.clone(), record(98, "a"), Announce::Installed)
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
            .apply_consent("a", back_on, record(97, "a"), Announce::Installed)
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
            .apply_consent("a", d(Mode::On), record(99, "a"), Announce::Installed)
            .await
            .unwrap();
        store
            .apply_consent("a", d(Mode::Off), record(98, "a"), Announce::Installed)
            .await
            .unwrap();
        store
            .apply_consent("a", d(Mode::Local), record(97, "a"), Announce::Installed)
            .await
            .unwrap();
        store.insert(vec![local(1, "a")]).await.unwrap();
        let out = store
            .apply_consent("a", d(Mode::Off), record(96, "a"), Announce::Installed)
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
fn consented_event_sets_are_recorded_once_and_unversioned_ones_renewed() {
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        let names = |v: &[&str]| Some(v.iter().map(|s| (s.to_string(), None)).collect::<Vec<_>>());
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
            .apply_consent("a", d(Mode::Local), record(99, "a"), Announce::Installed)
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

/// The events' fields go to a column of their own, so the `events` column
/// stays names only (what a schema-10 daemon reads); a set recorded before
/// fields were reads back by name.
#[test]
fn consented_fields_are_kept_apart_from_the_names() {
    let set = |v: &[(&str, Option<&str>)]| {
        Some(
            v.iter()
                .map(|(n, f)| (n.to_string(), f.map(str::to_string)))
                .collect::<Vec<_>>(),
        )
    };
    let fields = set(&[("ran", Some("cmd=enum")), ("walked", Some(""))]);
    let names = set(&[("ran", None), ("walked", None)]);
    let f = Fixture::new();
    let (store, thread) = f.open(100);
    rt().block_on(async {
        let got = store
            .consented_events("a", 3, fields.clone())
            .await
            .unwrap();
        assert_eq!(got, fields);
        let got = store.consented_events("a", 4, names.clone()).await.unwrap();
        assert_eq!(got, names);
    });
    drop(store);
    thread.join();
    let conn = Connection::open(f.dir.path().join(DB_FILE)).unwrap();
    let row = |v: i64| -> (String, Option<String>) {
        conn.query_row(
            "SELECT events, fields FROM consented_events WHERE product = 'a' AND version = ?1",
            [v],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    assert_eq!(row(3), ("ran\nwalked".into(), Some("cmd=enum\n".into())));
    assert_eq!(row(4), ("ran\nwalked".into(), None));
    // A row whose two columns disagree (never written so) covers no field.
    conn.execute(
        "UPDATE consented_events SET fields = 'x=int' WHERE product = 'a' AND version = 3",
        [],
    )
    .unwrap();
    drop(conn);
    let (store, thread) = f.open(100);
    rt().block_on(async {
        let got = store.consented_events("a", 3, None).await.unwrap();
        assert_eq!(got, set(&[("ran", Some("")), ("walked", Some(""))]));
        let got = store.consented_events("a", 4, None).await.unwrap();
        assert_eq!(got, names);
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
            .apply_consent("b", d(Mode::Off), record(99, "b"), Announce::Installed)
            .await
            .unwrap();
        let err = store.insert(vec![local(3, "b")]).await.unwrap_err();
        assert!(matches!(err, StoreError::ConsentChanged { .. }), "{err:?}");
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
        let out = forget(&store, "a", Some(forget_marker(5, "a")), "ab".repeat(16)).await;
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
        // A second forget before the first marker left keeps that marker
        // (the user's request under the older ID) and adds its own.
        store.insert(vec![record(6, "a")]).await.unwrap();
        let out = forget(&store, "a", Some(forget_marker(7, "a")), "ef".repeat(16)).await;
        assert_eq!((out.purged, out.marker), (1, true));
        let page = store.show(Some("a".into()), 0).await.unwrap();
        let lines: Vec<&str> = page.events.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(
            lines,
            [
                forget_marker(5, "a").line.as_str(),
                forget_marker(7, "a").line.as_str()
            ]
        );
        // Without a marker (not on): deleted, nothing recorded.
        let out = forget(&store, "b", None, "cd".repeat(16)).await;
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
