//! Local storage under stress: the daemon not running (spool), a full
//! store, a full disk, a damaged or too-new database.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use telemetry_client::{event, ClientError, ErrorCode, Value};
use telemetry_tests::*;

const T: Duration = Duration::from_secs(20);

fn s3_env(server: &S3Server) -> DaemonEnv {
    DaemonEnv::new(Destination::S3 {
        endpoint: server.endpoint.clone(),
        secret: SECRET_KEY.into(),
    })
}

fn spool_of(env: &DaemonEnv) -> PathBuf {
    env.spool_file()
}

fn shim(env: &DaemonEnv, args: &[&str]) -> std::process::Output {
    shim_in(env, "5000", &[], args)
}

/// The shim for product cfdev with a time budget of `budget_ms` and extra
/// environment `vars`.
fn shim_in(
    env: &DaemonEnv,
    budget_ms: &str,
    vars: &[(&str, &str)],
    args: &[&str],
) -> std::process::Output {
    env.command("telemetry-emit")
        .env("TELEMETRY_EMIT_TIMEOUT_MS", budget_ms)
        .envs(vars.iter().copied())
        .args(["--product", "cfdev"])
        .args(args)
        .output()
        .unwrap()
}

fn ids(s3: &S3Server) -> Vec<String> {
    decode_objects(&s3.objects())
        .into_iter()
        .map(|(_, v)| v["id"].as_str().unwrap().to_string())
        .collect()
}

fn assert_once(all: &[String], n: usize) {
    let set: BTreeSet<&String> = all.iter().collect();
    assert_eq!(set.len(), all.len(), "an event was delivered twice");
    assert_eq!(all.len(), n);
}

#[test]
fn events_sent_while_the_daemon_is_down_are_spooled_and_delivered_once() {
    let s3 = S3Server::start();
    let env = s3_env(&s3);
    for _ in 0..4 {
        let out = shim(&env, &["bosh"]);
        assert_eq!(out.status.code(), Some(0));
    }
    let out = shim(&env, &["--strict", "stop"]);
    assert_eq!(out.status.code(), Some(1), "spooled is not acknowledged");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spooled to") && err.contains(spool_of(&env).to_str().unwrap()),
        "{err}"
    );
    let spool = spool_of(&env);
    let mode = std::fs::metadata(&spool).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let copy = std::fs::read(&spool).unwrap();

    // The daemon takes it in at start.
    let daemon = env.start();
    assert_eq!(daemon.client().status(T).unwrap().pending_events, 5);
    assert!(!spool.exists(), "the spool is removed once stored");
    daemon.client().flush(T).unwrap();
    assert!(daemon.terminate().unwrap().success());
    assert_once(&ids(&s3), 5);

    // A crash after storing but before deleting leaves the file behind:
    // taking it in again stores nothing twice.
    std::fs::write(spool.with_extension("spool.ingesting"), &copy).unwrap();
    let daemon = env.start();
    assert_eq!(daemon.client().status(T).unwrap().pending_events, 0);
    daemon.client().flush(T).unwrap();
    assert!(daemon.terminate().unwrap().success());
    assert_once(&ids(&s3), 5);
}

/// #12: `telemetry-emit --socket OTHER` with the daemon on OTHER down
/// spooled into the state dir's one spool, and the daemon that owned the
/// state dir delivered the event; now only a daemon on OTHER takes it in.
/// The unnamed spool older shims wrote is still taken in.
#[test]
fn an_event_spooled_for_another_socket_is_delivered_only_by_the_daemon_there() {
    let mut env = DaemonEnv::new(Destination::Outbox);
    let other = env.root().join("other/telemetryd.sock");
    let other_arg = other.to_str().unwrap();
    let out = shim(&env, &["--strict", "--socket", other_arg, "stop"]);
    assert_eq!(out.status.code(), Some(1), "spooled is not acknowledged");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !spool_of(&env).exists(),
        "not in this daemon's spool: {err}"
    );
    let other_spool = std::fs::read_dir(env.state.join("spool"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_str().unwrap().ends_with(".spool"))
        .expect("a spool for the other socket");
    assert!(err.contains(other_spool.to_str().unwrap()), "{err}");

    let daemon = env.start();
    assert_eq!(daemon.client().status(T).unwrap().pending_events, 0);
    assert!(
        other_spool.exists(),
        "left for the daemon on the other socket"
    );
    assert!(daemon.terminate().unwrap().success());

    // The daemon on the other socket, sharing this state dir, takes it in.
    let own = std::mem::replace(&mut env.socket, other.clone());
    let daemon = env.start();
    assert_eq!(daemon.client().status(T).unwrap().pending_events, 1);
    assert!(!other_spool.exists());
    assert!(daemon.terminate().unwrap().success());
    env.socket = own;

    let legacy = telemetry_proto::paths::spool_file(&env.state);
    let ev = event("cfdev", "stop", "1.0", BTreeMap::new());
    telemetry_client::spool::append(&legacy, &ev).unwrap();
    let daemon = env.start();
    // (The other daemon uploaded its event to the outbox when it stopped.)
    assert_eq!(daemon.client().status(T).unwrap().pending_events, 1);
    assert!(!legacy.exists());
}

#[test]
fn a_running_daemon_picks_up_the_spool_periodically() {
    let env = {
        let mut e = DaemonEnv::new(Destination::Outbox);
        e.extra
            .push(("TELEMETRY_SPOOL_CHECK_INTERVAL".into(), "200ms".into()));
        e
    };
    let daemon = env.start();
    // A shim that timed out on a busy daemon spooled its event.
    let ev = event("cfdev", "bosh", "1.0", BTreeMap::new());
    let spooled = telemetry_client::spool::append(&spool_of(&env), &ev).unwrap();
    assert_eq!(spooled, telemetry_client::spool::Spooled::Written);
    let d = &daemon;
    wait_for("the spool to be ingested", T, || {
        // Connections are what trigger the check.
        let st = d.client().status(T).ok()?;
        (st.pending_events == 1).then_some(())
    });
    // The same event arriving directly as well is kept once.
    let again = daemon.client().emit(vec![ev], T).unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 1));
}

#[test]
fn a_full_store_drops_the_oldest_and_tells_the_maintainers() {
    let s3 = S3Server::start();
    let mut env = s3_env(&s3);
    env.extra
        .push(("TELEMETRY_MAX_STORE_BYTES".into(), "4000".into()));
    let daemon = env.start();
    let mut c = daemon.client();
    let mut sent = Vec::new();
    for i in 0..60 {
        let mut data = BTreeMap::new();
        data.insert("duration_s".to_string(), Value::Int(i));
        let ev = event("cfdev", "start_end", "1.0.0", data);
        sent.push(ev.id.hyphenated().to_string());
        c.emit(vec![ev], T).unwrap();
    }
    let st: serde_json::Value =
        serde_json::from_slice(&env.run("telemetryctl", &["status", "--json"]).stdout).unwrap();
    assert!(st["pending_bytes"].as_u64().unwrap() <= 4000, "{st}");
    let dropped = st["dropped"][0][1].as_u64().unwrap();
    assert!(dropped > 0 && st["dropped"][0][0] == "cfdev", "{st}");
    let human = String::from_utf8_lossy(&env.run("telemetryctl", &["status"]).stdout).to_string();
    assert!(
        human.contains("dropped:") && human.contains("store was full"),
        "{human}"
    );
    let shown = String::from_utf8_lossy(&env.run("telemetryctl", &["show"]).stdout).to_string();
    assert!(
        shown.contains(&format!(
            "# the next batch of cfdev also carries a telemetry_dropped line counting {dropped} events"
        )),
        "{shown}"
    );

    // Sealed while the destination fails: `show` prints the batch's
    // counter line too, exactly as it is then uploaded (no event row holds
    // it, and it was left out).
    s3.set_fault(Fault::Status(503, "SlowDown"));
    assert!(c.flush(T).is_err());
    let shown =
        String::from_utf8_lossy(&env.run("telemetryctl", &["show", "--ndjson"]).stdout).to_string();
    assert!(shown.contains("\"event\":\"telemetry_dropped\""), "{shown}");
    s3.set_fault(Fault::None);
    c.flush(T).unwrap();
    let uploaded: String = s3
        .objects()
        .values()
        .map(|z| String::from_utf8(zstd::stream::decode_all(&z[..]).unwrap()).unwrap())
        .collect();
    assert_eq!(shown, uploaded, "show printed exactly what went out");
    assert!(daemon.terminate().unwrap().success());
    let lines = decode_objects(&s3.objects());
    let counter: Vec<_> = lines
        .iter()
        .filter(|(_, v)| v["event"] == "telemetry_dropped")
        .collect();
    assert_eq!(counter.len(), 1);
    assert_eq!(counter[0].1["data"]["count"].as_u64(), Some(dropped));
    let kept: Vec<&str> = lines
        .iter()
        .filter(|(_, v)| v["event"] == "start_end")
        .map(|(_, v)| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(kept.len() as u64 + dropped, 60);
    // The newest are the ones kept.
    assert!(kept
        .iter()
        .all(|id| sent[dropped as usize..].iter().any(|s| s == id)));
}

/// Events kept on this machine only (`local`) that a full store drops are
/// never counted upstream (nothing of them leaves), so `status` and
/// `doctor` say so, per product: they went unseen.
#[test]
fn a_full_store_says_how_many_local_events_it_dropped() {
    let mut env = DaemonEnv::new(Destination::Outbox);
    env.extra
        .push(("TELEMETRY_MAX_STORE_BYTES".into(), "4000".into()));
    std::fs::write(env.root().join("consent"), "cfdev local\n").unwrap();
    let daemon = env.start();
    let mut c = daemon.client();
    for i in 0..60 {
        let mut data = BTreeMap::new();
        data.insert("duration_s".to_string(), Value::Int(i));
        c.emit(vec![event("cfdev", "start_end", "1.0.0", data)], T)
            .unwrap();
    }
    let st: serde_json::Value =
        serde_json::from_slice(&env.run("telemetryctl", &["status", "--json"]).stdout).unwrap();
    let local = st["local_events"].as_u64().unwrap();
    let dropped = &st["counters"]["local_full_drops"];
    assert_eq!(dropped[0][0], "cfdev", "{st}");
    assert_eq!(dropped[0][1].as_u64().unwrap() + local, 60, "{st}");
    assert_eq!(
        st["counters"]["store_full_drops"], 0,
        "nothing uploadable: {st}"
    );
    assert_eq!(
        st["dropped"],
        serde_json::json!([]),
        "nothing to tell upstream: {st}"
    );
    let human = text(&env.run("telemetryctl", &["status"]));
    assert!(
        human.contains("of cfdev kept on this machine only (local) dropped so far"),
        "{human}"
    );
    // Kept across a restart (an autostarted daemon exits when idle).
    let n = dropped[0][1].clone();
    drop(c);
    assert!(daemon.terminate().unwrap().success());
    let daemon = env.start();
    let again = daemon.client().status(T).unwrap().counters.local_full_drops;
    assert_eq!(again, vec![("cfdev".to_string(), n.as_u64().unwrap())]);
    let doctor = text(&env.run("telemetryctl", &["doctor"]));
    assert!(
        doctor.contains("WARN drops: the store dropped")
            && doctor.contains("of cfdev kept on this machine only"),
        "{doctor}"
    );
    // A purge takes the count with the events it deletes.
    assert!(env
        .run("telemetryctl", &["purge", "--product", "cfdev"])
        .status
        .success());
    let after = daemon.client().status(T).unwrap();
    assert_eq!(
        (after.local_events, after.counters.local_full_drops),
        (0, vec![])
    );
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_gets_a_clear_error_and_the_daemon_recovers_when_space_returns() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a small file system needs root (CI runs as root)");
        return;
    }
    let s3 = S3Server::start();
    let mut env = s3_env(&s3);
    let _fs = Tmpfs::mount(&env.state, "4m").expect("mount a 4 MiB tmpfs for the state dir");
    env.extra.push(("TELEMETRY_SYNC".into(), "normal".into()));
    let daemon = env.start();
    // Fill the disk, leaving a little room.
    let filler = env.state.join("filler");
    let free = |p: &Path| {
        // SAFETY: statvfs into a zeroed struct.
        unsafe {
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            let mut s: libc::statvfs = std::mem::zeroed();
            assert_eq!(libc::statvfs(c.as_ptr(), &mut s), 0);
            s.f_bavail as u64 * s.f_frsize as u64
        }
    };
    let room = free(&env.state);
    std::fs::write(&filler, vec![7u8; room.saturating_sub(400 * 1024) as usize]).unwrap();

    let mut c = daemon.client();
    let mut acked = BTreeSet::new();
    let mut full = None;
    for i in 0..5000 {
        let mut data = BTreeMap::new();
        data.insert("duration_s".to_string(), Value::Int(i));
        let ev = event("cfdev", "start_end", "1.0.0", data);
        let id = ev.id.hyphenated().to_string();
        match c.emit(vec![ev], T) {
            Ok(_) => {
                acked.insert(id);
            }
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    let err = full.expect("the disk filled up");
    match &err {
        ClientError::Refused {
            code: ErrorCode::Storage,
            message,
        } => {
            assert!(message.contains("full"), "says the disk is full: {message}")
        }
        other => panic!("expected a storage error, got {other}"),
    }
    // Still up and answering.
    daemon.client().status(T).unwrap();
    // Space returns: it recovers by itself.
    std::fs::remove_file(&filler).unwrap();
    let ok = daemon
        .client()
        .emit(vec![event("cfdev", "bosh", "1.0", BTreeMap::new())], T)
        .unwrap();
    assert_eq!(ok.accepted, 1);
    daemon.client().flush(T).unwrap();
    assert!(daemon.terminate().unwrap().success());
    let delivered: BTreeSet<String> = ids(&s3).into_iter().collect();
    assert!(
        acked.is_subset(&delivered),
        "every acknowledged event was delivered"
    );
    assert!(acked.len() > 10);
}

#[test]
fn a_damaged_database_is_moved_aside_and_a_newer_one_served_only_if_it_allows() {
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::create_dir_all(&env.state).unwrap();
    let db = env.state.join("events.sqlite3");
    std::fs::write(
        &db,
        b"this is not a database, it is a damaged file\n".repeat(200),
    )
    .unwrap();
    let daemon = env.start();
    let out = env.run("telemetryctl", &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("incident:") && text.contains("damaged") && text.contains(".corrupt-"),
        "{text}"
    );
    let aside: Vec<_> = std::fs::read_dir(&env.state)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("events.sqlite3.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "kept for inspection");
    daemon
        .client()
        .emit(vec![event("cfdev", "bosh", "1.0", BTreeMap::new())], T)
        .expect("a fresh store works");
    assert!(daemon.terminate().unwrap().success());

    // A database from a newer telemetryd that said builds of schema 99 on
    // may serve it: refused, never touched.
    let sql = |statements: &str| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit(); print(c.execute('PRAGMA user_version').fetchone()[0])",
            ])
            .arg(&db)
            .arg(statements)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    sql("PRAGMA user_version=99; UPDATE store_compat SET oldest_reader = 99;");
    let before = std::fs::read(&db).unwrap();
    let out = env.run("telemetryd", &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("newer")
            && err.contains("needs schema 99 or newer")
            && err.contains("upgrade telemetryd"),
        "{err}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), before, "not modified");

    // One whose telemetryd said this build may serve it: served as it is.
    sql("UPDATE store_compat SET oldest_reader = 14;");
    let daemon = env.start();
    daemon
        .client()
        .emit(vec![event("cfdev", "bosh", "1.0", BTreeMap::new())], T)
        .expect("served");
    let log = daemon.log();
    assert!(log.contains("serving it as it is"), "{log}");
    assert!(daemon.terminate().unwrap().success());
    assert_eq!(sql(""), "99", "not migrated down");
}

#[test]
fn a_busy_daemon_gets_the_event_through_the_spool() {
    let mut env = DaemonEnv::new(Destination::Outbox);
    env.extra.extend([
        ("TELEMETRY_MAX_CONNECTIONS".into(), "1".into()),
        ("TELEMETRY_SPOOL_CHECK_INTERVAL".into(), "100ms".into()),
    ]);
    let daemon = env.start();
    // Someone holds the only slot (served, so surely holding it).
    let hog = wait_for("the only slot", T, || {
        let mut c = daemon.client();
        c.status(T).ok().map(|_| c)
    });
    let out = shim(&env, &["--strict", "bosh"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    // The refusal may arrive as a `busy` reply or, when the daemon closes
    // first, as a broken pipe: spooled either way.
    assert!(err.contains("spooled to"), "{err}");
    drop(hog);
    let d = &daemon;
    let st = wait_for("the spooled event", T, || {
        let st = d.client().status(T).ok()?;
        (st.pending_events == 1).then_some(st)
    });
    // The turned-away connection is counted, under no product (#12).
    assert!(
        st.refusals
            .iter()
            .any(|r| r.code == ErrorCode::Busy && r.product.is_empty() && r.count >= 1),
        "{:?}",
        st.refusals
    );
}

#[test]
fn a_hung_daemon_costs_the_shim_its_budget_and_no_more_and_the_event_is_spooled() {
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::create_dir_all(env.socket.parent().unwrap()).unwrap();
    // Listens (so connect and the write succeed) but never answers.
    let _hung = std::os::unix::net::UnixListener::bind(&env.socket).unwrap();
    let start = std::time::Instant::now();
    let out = shim_in(&env, "600", &[], &["--strict", "bosh"]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("spooled to"),
        "the spool got its share of the budget: {}",
        text(&out)
    );
    assert!(
        took < Duration::from_millis(1500),
        "took {took:?} for a 600 ms budget"
    );
    assert!(spool_of(&env).exists());
}

#[test]
fn a_full_listen_backlog_does_not_hold_the_shim_the_event_is_spooled_at_once() {
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::create_dir_all(env.socket.parent().unwrap()).unwrap();
    // Listens but never accepts; fill its backlog so the next connect would
    // block until an accept that never comes.
    // A backlog of one fills after a connection or two, whatever the
    // open-file limit.
    let stuck = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    stuck
        .bind(&socket2::SockAddr::unix(&env.socket).unwrap())
        .unwrap();
    stuck.listen(1).unwrap();
    let mut held = Vec::new();
    while let Ok(c) = telemetry_client::Client::connect_now(&env.socket) {
        held.push(c);
        assert!(held.len() < 100, "the backlog never filled");
    }
    let start = std::time::Instant::now();
    let out = shim(&env, &["--strict", "bosh"]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("spooled to"), "{}", text(&out));
    assert!(
        took < Duration::from_millis(2500),
        "took {took:?}: the connect waited on the backlog instead of failing"
    );
    assert!(spool_of(&env).exists());
}

#[test]
fn the_budget_ends_a_shim_blocked_on_a_locked_spool() {
    let env = DaemonEnv::new(Destination::Outbox);
    // No daemon, so the shim goes to the spool, whose lock this test holds.
    let spool = spool_of(&env);
    std::fs::create_dir_all(spool.parent().unwrap()).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spool)
        .unwrap();
    lock.lock().unwrap();
    // The last run starts with SIGALRM blocked, as a host may leave it (the
    // mask survives exec): the budget must hold all the same.
    for (strict, code, blocked) in [(true, 1, false), (false, 0, false), (true, 1, true)] {
        let mut cmd = env.command("telemetry-emit");
        cmd.args(["--product", "cfdev", "--timeout-ms", "400", "bosh"]);
        if strict {
            cmd.arg("--strict");
        }
        if blocked {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, libc::SIGALRM);
                    libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                    Ok(())
                });
            }
        }
        let start = std::time::Instant::now();
        let out = cmd.output().unwrap();
        let took = start.elapsed();
        assert_eq!(
            out.status.code(),
            Some(code),
            "strict={strict}: {}",
            text(&out)
        );
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_millis(1400),
            "strict={strict}: took {took:?} for a 400 ms budget"
        );
        if strict {
            assert!(text(&out).contains("time budget"), "{}", text(&out));
        } else {
            assert!(
                text(&out).is_empty(),
                "quiet without --strict: {}",
                text(&out)
            );
        }
    }
    lock.unlock().unwrap();
    assert_eq!(
        std::fs::metadata(&spool).unwrap().len(),
        0,
        "nothing half-written"
    );
}

#[test]
fn a_shim_that_does_not_wait_hands_the_event_over_or_spools_it() {
    let env = DaemonEnv::new(Destination::Outbox);
    // No daemon: the event goes to the spool, and the run stays quiet.
    let out = shim(&env, &["--no-wait", "bosh"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(spool_of(&env).exists(), "spooled without a daemon");
    let daemon = env.start();
    let pending = || daemon.client().status(T).unwrap().pending_events;
    assert_eq!(pending(), 1, "the spool is taken in at start");

    // With the daemon: handed over, not waited for; the variable works too.
    let out = shim_in(&env, "5000", &[("TELEMETRY_EMIT_NO_WAIT", "1")], &["stop"]);
    assert_eq!(out.status.code(), Some(0));
    wait_for("the handed-over event", T, || {
        (pending() == 2).then_some(())
    });

    // --strict waits for the daemon's answer whatever --no-wait says, and
    // reports a refusal.
    let out = shim(&env, &["--no-wait", "--strict", "no_such_event"]);
    assert_eq!(out.status.code(), Some(3), "refused by the daemon");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_such_event"), "{err}");
    assert_eq!(pending(), 2);
    assert!(!spool_of(&env).exists(), "refused events are not spooled");
}

#[test]
fn a_shim_that_does_not_wait_returns_once_the_frame_is_written() {
    use std::io::Read;
    // A listener that takes frames and never answers: a daemon that dies
    // before its commit looks like this to the shim.
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::create_dir_all(env.socket.parent().unwrap()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(&env.socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let taker = std::thread::spawn(move || {
        // Gives up after a while, so a shim that never connects fails the
        // test rather than hanging it.
        let deadline = std::time::Instant::now() + T;
        let mut frames = Vec::new();
        while frames.len() < 4 && std::time::Instant::now() < deadline {
            let mut s = match listener.accept() {
                Ok((s, _)) => s,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(T)).unwrap();
            let mut len = [0u8; 4];
            s.read_exact(&mut len).unwrap();
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            s.read_exact(&mut body).unwrap();
            frames.push(telemetry_proto::decode_body::<telemetry_proto::Request>(&body).unwrap());
            // Keep the connection open, unanswered, until the shim is gone.
            let _ = s.read(&mut [0u8; 1]);
        }
        frames
    });
    // Not waiting: done once the frame is written; nothing spooled.
    let out = shim(&env, &["--no-wait", "bosh"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        !spool_of(&env).exists(),
        "a handed-over event is not spooled"
    );
    // Waiting: no answer within the budget, so the event is spooled.
    let out = shim_in(&env, "300", &[], &["stop"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(spool_of(&env).exists(), "an unanswered event is spooled");
    // An empty or false-like variable means wait, as if unset.
    for value in ["", "0"] {
        let out = shim_in(&env, "300", &[("TELEMETRY_EMIT_NO_WAIT", value)], &["stop"]);
        assert_eq!(out.status.code(), Some(0));
        assert!(out.stderr.is_empty(), "{value:?}: {out:?}");
    }
    let frames = taker.join().unwrap();
    assert_eq!(frames.len(), 4, "every shim connected: {frames:?}");
    assert!(
        frames[2..]
            .iter()
            .all(|f| matches!(f, telemetry_proto::Request::Emit { ack: true, .. })),
        "{frames:?}"
    );
    assert!(
        matches!(&frames[0], telemetry_proto::Request::Emit { ack: false, events } if events[0].event == "bosh"),
        "{frames:?}"
    );
    assert!(
        matches!(&frames[1], telemetry_proto::Request::Emit { ack: true, .. }),
        "{frames:?}"
    );
}

/// What a purge, an off or a forget deletes is not left readable in the
/// store's files (free pages, the WAL's older page images): the user may
/// hand the file on, or lose the disk.
#[test]
fn deleted_events_are_not_left_readable_in_the_store_files() {
    let env = DaemonEnv::new(Destination::Outbox);
    let daemon = env.start();
    let emit = |n: usize| daemon.emit_start_ends(n);
    let files = || -> Vec<u8> {
        let mut all = Vec::new();
        for suffix in ["", "-wal"] {
            let p = env.state.join(format!("events.sqlite3{suffix}"));
            all.extend(std::fs::read(&p).unwrap_or_default());
        }
        all
    };
    let found = |ids: &[String]| -> Vec<String> {
        let bytes = files();
        ids.iter()
            .filter(|id| bytes.windows(id.len()).any(|w| w == id.as_bytes()))
            .cloned()
            .collect()
    };
    let ids = emit(20);
    assert_eq!(found(&ids).len(), ids.len(), "stored, readable before");
    let out = env.run("telemetryctl", &["purge", "--product", "cfdev"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        found(&ids),
        Vec::<String>::new(),
        "a purge leaves them readable"
    );
    // The same for an off, and for a forget.
    let ids = emit(20);
    let out = env.run("telemetryctl", &["consent", "cfdev", "off"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        found(&ids),
        Vec::<String>::new(),
        "an off leaves them readable"
    );
    let out = env.run("telemetryctl", &["consent", "cfdev", "on"]);
    assert!(out.status.success(), "{}", text(&out));
    let ids = emit(20);
    let out = env.run("telemetryctl", &["forget", "cfdev"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        found(&ids),
        Vec::<String>::new(),
        "a forget leaves them readable"
    );

    // A forget after everything was uploaded, so no stored event is left
    // to delete: the receipts' kept bodies (the very bytes that left) and
    // the remembered ids of the uploaded events go all the same.
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let outbox = || -> Vec<std::path::PathBuf> {
        files_under(&env.state.join("outbox"))
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".ndjson.zst"))
            .collect()
    };
    let before = outbox();
    let ids = emit(20);
    let out = env.run("telemetryctl", &["flush"]);
    assert!(out.status.success(), "{}", text(&out));
    let sent: Vec<Vec<u8>> = outbox()
        .into_iter()
        .filter(|p| !before.contains(p))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(sent.len(), 1, "one batch went");
    let raw: Vec<[u8; 16]> = ids
        .iter()
        .map(|id| *uuid::Uuid::parse_str(id).unwrap().as_bytes())
        .collect();
    let bytes = files();
    assert!(contains(&bytes, &sent[0]), "its receipt keeps the body");
    assert!(raw.iter().all(|id| contains(&bytes, id)), "ids remembered");
    let out = env.run("telemetryctl", &["forget", "cfdev"]);
    assert!(out.status.success(), "{}", text(&out));
    let bytes = files();
    assert!(
        !contains(&bytes, &sent[0]),
        "a forget leaves the bytes that were sent readable"
    );
    let left = raw.iter().filter(|id| contains(&bytes, &id[..])).count();
    assert_eq!(left, 0, "a forget leaves uploaded events' ids readable");
    assert_eq!(
        found(&ids),
        Vec::<String>::new(),
        "a forget leaves uploaded events' lines readable"
    );
}
