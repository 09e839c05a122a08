//! The Rust client library's `record_event_with` against the real daemon:
//! consent first, the acknowledgement, the time budget, and the spool.

use std::collections::BTreeMap;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};
use telemetry_client::{record_event_with, ClientError, Endpoint, ErrorCode, Value};
use telemetry_tests::{wait_for, DaemonEnv, Destination};

const T: Duration = Duration::from_secs(10);

fn endpoint(env: &DaemonEnv) -> Endpoint {
    env.endpoint()
}

/// Bytes in the spool the client writes for this daemon.
fn spooled(env: &DaemonEnv) -> usize {
    std::fs::read(env.spool_file()).map_or(0, |b| b.len())
}

#[test]
fn with_consent_off_nothing_is_touched() {
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::write(env.root().join("consent"), "cfdev off\n").unwrap();
    std::fs::create_dir_all(env.socket.parent().unwrap()).unwrap();
    // Something listens: it must never be connected to.
    let listener = UnixListener::bind(&env.socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let got = record_event_with(&endpoint(&env), "cfdev", "stop", "1", BTreeMap::new(), T);
    assert!(matches!(got, Ok(None)), "{got:?}");
    assert!(listener.accept().is_err(), "no connection was made");
    assert!(
        !env.state.exists(),
        "nothing written: no spool, no state dir"
    );
}

#[test]
fn an_event_is_acknowledged_or_refused_by_the_daemon() {
    let env = DaemonEnv::new(Destination::Outbox);
    let d = env.start();
    let ep = endpoint(&env);
    let data = BTreeMap::from([("buildpack".to_string(), Value::Str("go".into()))]);
    let acked = record_event_with(&ep, "cfdev", "app_created", "1", data, T)
        .unwrap()
        .expect("on");
    assert_eq!((acked.accepted, acked.duplicates), (1, 0));
    assert_eq!(d.client().status(T).unwrap().pending_events, 1);

    let refused = record_event_with(&ep, "cfdev", "no_such_event", "1", BTreeMap::new(), T);
    assert!(
        matches!(
            refused,
            Err(ClientError::Refused {
                code: ErrorCode::NotInCatalogue,
                ..
            })
        ),
        "{refused:?}"
    );
    let invalid = record_event_with(&ep, "cfdev", "Bad Name", "1", BTreeMap::new(), T);
    assert!(
        matches!(
            invalid,
            Err(ClientError::Refused {
                code: ErrorCode::Invalid,
                ..
            })
        ),
        "{invalid:?}"
    );
    assert_eq!(spooled(&env), 0, "refusals are never spooled");
}

#[test]
fn without_a_daemon_the_event_is_spooled_and_taken_in_later() {
    let env = DaemonEnv::new(Destination::Outbox);
    let got = record_event_with(&endpoint(&env), "cfdev", "stop", "1", BTreeMap::new(), T);
    assert!(
        matches!(got, Err(ClientError::Unreachable { .. })),
        "{got:?}"
    );
    assert!(spooled(&env) > 0, "spooled");
    let d = env.start();
    wait_for("the spooled event", T, || {
        (d.client().status(T).ok()?.pending_events == 1).then_some(())
    });
}

#[test]
fn a_daemon_that_never_answers_costs_no_more_than_the_budget() {
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::create_dir_all(env.socket.parent().unwrap()).unwrap();
    // Accepts (the kernel does, into the backlog) and never answers.
    let _listener = UnixListener::bind(&env.socket).unwrap();
    let budget = Duration::from_millis(500);
    let started = Instant::now();
    let got = record_event_with(
        &endpoint(&env),
        "cfdev",
        "stop",
        "1",
        BTreeMap::new(),
        budget,
    );
    let took = started.elapsed();
    assert!(matches!(got, Err(ClientError::TimedOut { .. })), "{got:?}");
    // The slack covers the spool write and a loaded 2-core machine.
    // The slack is for a loaded machine's scheduling, not for waiting.
    assert!(took < budget + Duration::from_secs(1), "took {took:?}");
    assert!(spooled(&env) > 0, "spooled for later");
}

#[test]
fn a_locked_spool_costs_no_more_than_the_budget() {
    let env = DaemonEnv::new(Destination::Outbox);
    // A spool someone holds locked (a daemon taking it in, a stuck
    // writer), and no daemon: the call spools, and must not wait for the
    // lock past its budget.
    let spool = env.spool_file();
    std::fs::create_dir_all(spool.parent().unwrap()).unwrap();
    let holder = std::fs::File::create(&spool).unwrap();
    holder.lock().unwrap();
    let budget = Duration::from_millis(300);
    let (tx, rx) = std::sync::mpsc::channel();
    let ep = endpoint(&env);
    std::thread::spawn(move || {
        let started = Instant::now();
        let got = record_event_with(&ep, "cfdev", "stop", "1", BTreeMap::new(), budget);
        let _ = tx.send((got, started.elapsed()));
    });
    let (got, took) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("record_event_with still waiting for the spool's lock after 10 s");
    assert!(
        matches!(got, Err(ClientError::Unreachable { .. })),
        "{got:?}"
    );
    // The slack is for a loaded machine's scheduling, not for waiting.
    assert!(took < budget + Duration::from_secs(1), "took {took:?}");
    assert_eq!(spooled(&env), 0, "nothing written under another's lock");
}
