//! Commits: deduplication, requests gathered into one commit, the WAL bound, and a lone insert committed by its submitter.

use super::*;

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
