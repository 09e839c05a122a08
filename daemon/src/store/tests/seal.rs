//! Sealing batches, their keys and sequence numbers, receipts, and paging through events.

use super::*;

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
        forget(&store, "a", Some(forget_marker(9, "a")), "ab".repeat(16)).await;
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

/// A sealed batch's `telemetry_dropped` line is shown after its last
/// event, marked and with that event's seq, and on the same page: pages
/// of many small batches that each carry one still fit in a frame and
/// hold every event and every counter line once.
#[test]
fn show_pages_through_batches_that_carry_counter_lines() {
    let f = Fixture::new();
    let path = f.dir.path().join(DB_FILE);
    let (store, thread) = f.open(2);
    let batches = 300u128;
    rt().block_on(async {
        for b in 0..batches {
            let recs: Vec<Record> = (0..2u128)
                .map(|i| Record {
                    line: format!("{{\"n\":{},\"pad\":\"{}\"}}", b * 2 + i, "x".repeat(60)),
                    ..record(b * 2 + i, "a")
                })
                .collect();
            store.insert(recs).await.unwrap();
            // What a full store's drop leaves for the next seal to carry.
            Connection::open(&path)
                .unwrap()
                .execute(
                    "INSERT INTO dropped (product, events, since_us) VALUES ('a', 1, 0)",
                    [],
                )
                .unwrap();
            assert_eq!(store.seal(true).await.unwrap(), 1);
        }
        let (mut after, mut events, mut counters, mut pages) = (0, 0u128, 0u128, 0);
        loop {
            let page = store.show(None, after).await.unwrap();
            let frame =
                telemetry_proto::encode_frame(&telemetry_proto::Response::Events(page.clone()));
            assert!(frame.is_ok(), "a page fits in one frame");
            for (i, e) in page.events.iter().enumerate() {
                if e.counter {
                    counters += 1;
                    assert!(e.line.contains("\"telemetry_dropped\""), "{}", e.line);
                    let before = &page.events[i - 1];
                    assert!(
                        !before.counter && before.seq == e.seq,
                        "after its last event"
                    );
                    assert_eq!(before.batch_key, e.batch_key);
                } else {
                    events += 1;
                }
            }
            pages += 1;
            match page.next_after_seq {
                Some(s) => after = s,
                None => break,
            }
        }
        assert_eq!((events, counters), (batches * 2, batches));
        assert!(pages > 1);
    });
    drop(store);
    thread.join();
}

/// A batch its destination refuses for good is dropped alone; the batch
/// behind it is next. Its events are the destination's refusal (the
/// uploader counts them per destination), not drops of a full store, which
/// the next upload would report to the vendor as such.
#[test]
fn a_rejected_batch_is_dropped_alone_and_the_next_one_is_up() {
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
        assert_eq!(store.reject(first.id, "b", "gone").await.unwrap(), 2);
        assert_eq!(
            store.reject(first.id, "b", "gone").await.unwrap(),
            0,
            "gone already"
        );
        let s = store.stats().await.unwrap();
        assert_eq!((s.pending_events, s.sealed_batches), (2, 1));
        assert!(
            s.dropped.is_empty(),
            "not a full store's drops: {:?}",
            s.dropped
        );
        // The destination's refusal, kept: a batch gone already adds none.
        let refused = store.refused().await.unwrap();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(
            (refused[0].destination.as_str(), refused[0].events),
            ("b", 2)
        );
        let next = store.next_sealed().await.unwrap().unwrap();
        assert_ne!(next.id, first.id);
        let body = zstd::stream::decode_all(&next.body[..]).unwrap();
        assert_eq!(body, b"{\"n\":3}\n{\"n\":4}\n");
        store.complete(next.id, receipt(&next)).await.unwrap();
    });
    drop(store);
    thread.join();
}

/// A refused batch that carried a full store's drop count (its
/// `telemetry_dropped` line) gives the count back: it goes with the next.
#[test]
fn a_rejected_batch_gives_back_the_drop_count_it_carried() {
    let mut f = Fixture::new();
    // Each test line is `{"n":N}` + newline: 8 bytes for one digit.
    f.max_store_bytes = 16;
    let (store, thread) = f.open(100);
    rt().block_on(async {
        for n in 1..=3u128 {
            store.insert(vec![record(n, "a")]).await.unwrap();
        }
        assert_eq!(
            store.stats().await.unwrap().dropped,
            vec![("a".to_string(), 1)]
        );
        assert_eq!(store.seal(true).await.unwrap(), 1);
        let carrier = store.next_sealed().await.unwrap().unwrap();
        let body = String::from_utf8(zstd::stream::decode_all(&carrier.body[..]).unwrap()).unwrap();
        assert!(
            body.contains("telemetry_dropped") && body.contains("\"count\":1"),
            "{body}"
        );
        assert_eq!(store.stats().await.unwrap().dropped, vec![]);
        assert_eq!(
            store.reject(carrier.id, "b", "gone again").await.unwrap(),
            2
        );
        assert_eq!(
            store.stats().await.unwrap().dropped,
            vec![("a".to_string(), 1)],
            "the carried count, not the refused batch's own events"
        );
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
