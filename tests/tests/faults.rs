//! Fault tests: crashes at random moments, S3 outages of every kind, and a
//! permanently wrong destination. Bounded and seeded for CI; set
//! `TELEMETRY_SOAK=1` for the long variants (more kills, longer runs) and
//! `TELEMETRY_FAULT_SEED=N` to replay a run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use telemetry_client::{event, Client, ClientError, ErrorCode, Value};
use telemetry_tests::*;

const T: Duration = Duration::from_secs(20);
fn seed() -> u64 {
    std::env::var("TELEMETRY_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_7e1e)
}

fn s3_env(server: &S3Server) -> DaemonEnv {
    let mut env = DaemonEnv::new(Destination::S3 {
        endpoint: server.endpoint.clone(),
        secret: SECRET_KEY.into(),
    });
    env.extra.extend([
        ("TELEMETRY_RETRY_MIN".to_string(), "100ms".to_string()),
        ("TELEMETRY_RETRY_MAX".to_string(), "1s".to_string()),
        ("TELEMETRY_S3_TIMEOUT".to_string(), "1s".to_string()),
    ]);
    env
}

fn one_event(n: i64) -> telemetry_client::WireEvent {
    let mut data = BTreeMap::new();
    data.insert("duration_s".to_string(), Value::Int(n));
    event("cfdev", "start_end", "1.0.0", data)
}

fn emit(d: &Daemon, n: usize) -> Vec<String> {
    let mut c = d.client();
    (0..n)
        .map(|i| {
            let ev = one_event(i as i64);
            let id = ev.id.hyphenated().to_string();
            c.emit(vec![ev], T).expect("acked even while S3 is down");
            id
        })
        .collect()
}

/// Every acked id present, no id twice, every object valid.
fn assert_delivered_once(s3: &S3Server, acked: &BTreeSet<String>) -> usize {
    let lines = decode_objects(&s3.objects());
    let mut seen = BTreeSet::new();
    for (key, v) in &lines {
        let id = v["id"].as_str().unwrap().to_string();
        assert!(seen.insert(id.clone()), "{id} twice (second in {key})");
    }
    let missing: Vec<_> = acked.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "{} acked events missing: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    lines.len()
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let kills = if soak() { 500 } else { 50 };
    let mut rng = fastrand::Rng::with_seed(seed());
    let s3 = S3Server::start();
    let mut env = s3_env(&s3);
    // Small batches and a short interval: uploads run all the time, so
    // kills land before, during and after them.
    env.extra.extend([
        ("TELEMETRY_BATCH_MAX_EVENTS".to_string(), "15".to_string()),
        ("TELEMETRY_UPLOAD_INTERVAL".to_string(), "1s".to_string()),
    ]);
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    for round in 0..kills {
        let daemon = env.start();
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..2)
            .map(|_| {
                let (socket, stop, acked) = (daemon.socket.clone(), stop.clone(), acked.clone());
                std::thread::spawn(move || {
                    let Ok(mut c) = Client::connect(&socket) else {
                        return;
                    };
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let ev = one_event(n);
                        n += 1;
                        let id = ev.id.hyphenated().to_string();
                        match c.emit(vec![ev], Duration::from_secs(5)) {
                            Ok(_) => {
                                acked.lock().unwrap().insert(id);
                            }
                            Err(_) => return, // the daemon died mid-request: not acked
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.u64(5..120)));
        daemon.kill9();
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            c.join().unwrap();
        }
        if round % 10 == 9 {
            eprintln!("{} kills, {} acked", round + 1, acked.lock().unwrap().len());
        }
    }
    let daemon = env.start();
    daemon.client().flush(T).unwrap();
    assert!(daemon.terminate().unwrap().success());
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "the run acked too little to mean anything: {}",
        acked.len()
    );
    let lines = assert_delivered_once(&s3, &acked);
    // Events committed but whose ack was cut by a kill may be there too,
    // once; nothing else.
    assert!(lines >= acked.len());
}

fn status(d: &Daemon) -> telemetry_client::StatusReport {
    d.client().status(T).unwrap()
}

fn outage(fault: Fault) {
    let s3 = S3Server::start();
    let env = s3_env(&s3);
    let daemon = env.start();
    let mut acked: BTreeSet<String> = BTreeSet::new();
    // One outage in CI; the soak run goes through many in a row.
    let rounds = if soak() { 10 } else { 1 };
    for _ in 0..rounds {
        s3.set_fault(fault);
        acked.extend(emit(&daemon, 5));
        let err = daemon.client().flush(T).unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Refused {
                    code: ErrorCode::Upload,
                    ..
                }
            ),
            "{fault:?}: {err}"
        );
        // Still accepting and storing; status says what is wrong and when
        // the next try is; retries go on by themselves, backing off.
        acked.extend(emit(&daemon, 5));
        let st = status(&daemon);
        assert_eq!(st.pending_events, 10, "{fault:?}");
        assert!(st.last_error.is_some(), "{fault:?}");
        let want = if fault == Fault::Hang { 2 } else { 3 };
        let st = wait_for("retries", T, || {
            let st = status(&daemon);
            (st.consecutive_failures >= want).then_some(st)
        });
        let next = st.next_attempt_us.expect("next attempt shown");
        assert!(
            next - now_us() <= 1_100_000,
            "capped at retry_max (1s): {}",
            next - now_us()
        );
        assert!(
            !st.last_error.as_deref().unwrap().contains("permanent"),
            "{fault:?} is transient"
        );

        s3.set_fault(Fault::None);
        wait_for("recovery", T, || {
            status(&daemon).last_error.is_none().then_some(())
        });
        daemon.client().flush(T).unwrap();
        assert_eq!(status(&daemon).pending_events, 0);
    }
    assert!(daemon.terminate().unwrap().success());
    assert_eq!(assert_delivered_once(&s3, &acked), 10 * rounds, "{fault:?}");
}

#[test]
fn s3_answering_503_slowdown_then_recovering_delivers_everything_once() {
    outage(Fault::Status(503, "SlowDown"));
}

#[test]
fn s3_answering_500_then_recovering_delivers_everything_once() {
    outage(Fault::Status(500, "InternalError"));
}

#[test]
fn s3_down_then_back_delivers_everything_once() {
    outage(Fault::Down);
}

#[test]
fn s3_hanging_times_out_and_then_delivers_everything_once() {
    outage(Fault::Hang);
}

#[test]
fn a_bucket_that_does_not_exist_is_reported_loudly_retried_slowly_and_never_dropped() {
    let s3 = S3Server::start();
    let mut env = s3_env(&s3);
    env.extra
        .push(("TELEMETRY_RETRY_MAX".to_string(), "10s".to_string()));
    let daemon = env.start();
    // What S3 answers for a bucket that does not exist (the file-backed
    // test server would create it on the fly).
    s3.set_fault(Fault::Status(404, "NoSuchBucket"));
    let acked: BTreeSet<String> = emit(&daemon, 4).into_iter().collect();
    let err = daemon.client().flush(T).unwrap_err().to_string();
    assert!(
        err.contains("NoSuchBucket") && err.contains("permanent"),
        "{err}"
    );
    let st = status(&daemon);
    assert!(
        st.last_error.as_deref().unwrap().contains("permanent"),
        "{st:?}"
    );
    let wait = st.next_attempt_us.unwrap() - now_us();
    assert!(
        wait >= 4_000_000,
        "retried at the slow cap (10s, jittered), not soon: {wait} µs"
    );
    assert_eq!(st.pending_events, 4, "never dropped");
    assert!(
        daemon.log().contains("ERROR") && daemon.log().contains("until the configuration is fixed"),
        "{}",
        daemon.log()
    );
    assert!(daemon.terminate().unwrap().success());

    // Fixed configuration: everything arrives, once.
    s3.set_fault(Fault::None);
    let daemon = env.start();
    daemon.client().flush(T).unwrap();
    assert!(daemon.terminate().unwrap().success());
    assert_eq!(assert_delivered_once(&s3, &acked), 4);
}

#[test]
fn backoff_grows_between_transient_failures() {
    let s3 = S3Server::start();
    let mut env = s3_env(&s3);
    env.extra.extend([
        ("TELEMETRY_RETRY_MIN".to_string(), "400ms".to_string()),
        ("TELEMETRY_RETRY_MAX".to_string(), "30s".to_string()),
    ]);
    let daemon = env.start();
    s3.set_fault(Fault::Status(503, "SlowDown"));
    emit(&daemon, 1);
    let _ = daemon.client().flush(T);
    // Attempts are spaced min·2^(n-1), jittered into [half, full]: after
    // n failures the next wait is at least 400ms·2^(n-2), 1.6 s after the
    // 4th, so the bound below holds however late the poll sees it.
    let start = Instant::now();
    let st = wait_for("4 failures", T, || {
        let st = status(&daemon);
        (st.consecutive_failures >= 4).then_some(st)
    });
    let wait = st.next_attempt_us.unwrap() - now_us();
    assert!(
        wait >= 1_000_000,
        "4th failure waits ≥ 1.6s (jittered): {wait} µs"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "spaced, not hammering"
    );
    let requests = s3.requests.load(Ordering::SeqCst);
    assert!(requests <= 12, "no retry storm: {requests} requests");
}

/// Sealing that fails (here a trigger on the batches table, as a full disk
/// would) neither spins the uploader (it backs off, as for an upload
/// failure) nor keeps what is already sealed from going.
#[test]
fn a_store_that_cannot_seal_backs_off_and_still_uploads_what_is_sealed() {
    let s3 = S3Server::start();
    let mut env = s3_env(&s3);
    env.extra.extend([
        ("TELEMETRY_UPLOAD_INTERVAL".to_string(), "1s".to_string()),
        ("TELEMETRY_RETRY_MIN".to_string(), "200ms".to_string()),
        ("TELEMETRY_RETRY_MAX".to_string(), "2s".to_string()),
    ]);
    let daemon = env.start();
    // A batch sealed, its upload failed.
    s3.set_fault(Fault::Status(503, "SlowDown"));
    let sealed: BTreeSet<String> = emit(&daemon, 2).into_iter().collect();
    assert!(daemon.client().flush(T).is_err());
    assert_eq!(status(&daemon).sealed_batches, 1);
    // Now no batch can be sealed.
    let db = env.state.join("events.sqlite3");
    let o = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"CREATE TRIGGER full BEFORE INSERT ON batches BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END\"); c.commit()",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    s3.set_fault(Fault::None);
    emit(&daemon, 2);
    let err = daemon.client().flush(T).unwrap_err().to_string();
    assert!(err.contains("disk is full"), "{err}");
    assert_eq!(
        assert_delivered_once(&s3, &sealed),
        2,
        "the sealed batch went"
    );
    // The unsealed events' deadline (1 s) passes: tries are spaced by the
    // backoff (200 ms doubling, jittered), not made as fast as possible.
    std::thread::sleep(Duration::from_secs(4));
    let tries = daemon.log().matches("cannot seal a batch").count();
    assert!(
        (2..=12).contains(&tries),
        "{tries} tries in 4 s:\n{}",
        daemon.log()
    );
    assert_eq!(status(&daemon).pending_events, 2, "kept");
    assert!(daemon.terminate().unwrap().success());
}
