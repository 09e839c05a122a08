//! The store's size bound: what a full store drops, and what it never drops.

use super::*;

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
