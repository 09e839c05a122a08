//! End-to-end: the real binaries, a real S3 server, real SQLite.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use telemetry_client::{event, ClientError, Response, Value};
use telemetry_proto::{decode_body, encode_body, ErrorCode, Request};
use telemetry_tests::*;

const ACK_TIMEOUT: Duration = Duration::from_secs(10);

fn s3_env(server: &S3Server) -> DaemonEnv {
    DaemonEnv::new(Destination::S3 {
        endpoint: server.endpoint.clone(),
        secret: SECRET_KEY.into(),
    })
}

/// Emit `n` events from one client, one acked emit each; returns the ids.
fn emit_acked(d: &Daemon, product: &str, n: usize) -> Vec<String> {
    let mut client = d.client();
    (0..n)
        .map(|i| {
            let mut data = BTreeMap::new();
            data.insert("duration_s".to_string(), Value::Int(i as i64));
            data.insert("success".to_string(), Value::Bool(i % 2 == 0));
            let ev = event(product, "start_end", "1.2.3", data);
            let id = ev.id.hyphenated().to_string();
            let ack = client.emit(vec![ev], ACK_TIMEOUT).expect("acked emit");
            assert_eq!(ack.accepted, 1);
            id
        })
        .collect()
}

/// Check every line has all fields, and every acked id is present exactly
/// once. Returns the number of lines.
fn assert_exactly_once(lines: &[(String, serde_json::Value)], acked: &BTreeSet<String>) {
    let mut seen = BTreeMap::<String, usize>::new();
    for (key, v) in lines {
        for field in [
            "id",
            "event",
            "product",
            "build",
            "timestamp",
            "machine",
            "os",
            "arch",
            "data",
        ] {
            assert!(
                v.get(field).is_some(),
                "object {key}: line lacks {field}: {v}"
            );
        }
        let machine = v["machine"].as_str().unwrap();
        assert!(
            machine.len() == 64 && machine.bytes().all(|b| b.is_ascii_hexdigit()),
            "{machine}"
        );
        assert!(
            key.contains(&format!("/{}-", &machine[..8])),
            "key {key} names the machine prefix"
        );
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        *seen
            .entry(v["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dups.is_empty(),
        "duplicated ids: {:?}",
        &dups[..dups.len().min(5)]
    );
    let got: BTreeSet<String> = seen.into_keys().collect();
    let missing: Vec<_> = acked.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} acked events missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(lines.len(), acked.len(), "lines in S3 vs acked events");
}

fn key_is_well_formed(key: &str) -> bool {
    // e2e/v1/product=P/dt=YYYY-MM-DD/mmmmmmmm-FIRST-LAST.ndjson.zst
    let parts: Vec<&str> = key.split('/').collect();
    if parts.len() != 5 || parts[0] != "e2e" || parts[1] != "v1" {
        return false;
    }
    let date = parts[3].strip_prefix("dt=").unwrap_or("");
    let name = parts[4].strip_suffix(".ndjson.zst").unwrap_or("");
    let nums: Vec<&str> = name.split('-').collect();
    parts[2].starts_with("product=")
        && date.len() == 10
        && nums.len() == 3
        && nums[0].len() == 8
        && nums[1].parse::<u64>().is_ok()
        && nums[2].parse::<u64>().is_ok()
        && nums[1].parse::<u64>().unwrap() <= nums[2].parse::<u64>().unwrap()
}

#[test]
fn eight_clients_ten_thousand_acked_events_arrive_in_s3_exactly_once_across_a_crash_restart() {
    let s3 = S3Server::start();
    let mut env = s3_env(&s3);
    env.extra
        .push(("TELEMETRY_BATCH_MAX_EVENTS".into(), "1500".into()));
    let daemon = env.start();

    let threads: Vec<_> = (0..8)
        .map(|_| {
            let socket = daemon.socket.clone();
            std::thread::spawn(move || {
                let mut client = telemetry_client::Client::connect(&socket).unwrap();
                let mut ids = Vec::new();
                for i in 0..1250 {
                    let mut data = BTreeMap::new();
                    data.insert("duration_s".to_string(), Value::Int(i));
                    let ev = event("cfdev", "start_end", "1.2.3", data);
                    ids.push(ev.id.hyphenated().to_string());
                    let ack = client.emit(vec![ev], ACK_TIMEOUT).expect("ack");
                    assert_eq!((ack.accepted, ack.duplicates), (1, 0));
                }
                ids
            })
        })
        .collect();
    let acked: BTreeSet<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(acked.len(), 10_000);

    // Restart between emit and flush. SIGKILL, so nothing gets a last
    // upload: what was not uploaded yet must come back from SQLite.
    daemon.kill9();
    let daemon = env.start();
    let pending = daemon.client().status(ACK_TIMEOUT).unwrap().pending_events;
    assert!(pending > 0, "the restart must carry pending events");
    let out = env.run("telemetryctl", &["flush", "--json"]);
    assert!(
        out.status.success(),
        "flush: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Batches sealed before the kill may already have gone out on their own.
    assert!(report["events"].as_u64().unwrap() <= pending);

    let objects = s3.objects();
    assert!(
        objects.len() >= 7,
        "batches of ≤1500 events: got {} objects",
        objects.len()
    );
    for key in objects.keys() {
        assert!(key_is_well_formed(key), "bad key {key}");
    }
    let lines = decode_objects(&objects);
    assert_exactly_once(&lines, &acked);
    for (key, body) in &objects {
        let raw = zstd::stream::decode_all(&body[..]).unwrap();
        assert!(
            !contains(&raw, RAW_IDENTITY.as_bytes()),
            "raw machine identity in {key}"
        );
    }

    let status = daemon.client().status(ACK_TIMEOUT).unwrap();
    assert_eq!(status.pending_events, 0);
    assert_eq!(status.last_error, None);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn sigkill_right_after_acks_loses_nothing() {
    let s3 = S3Server::start();
    let env = s3_env(&s3);
    let daemon = env.start();
    let acked: BTreeSet<String> = emit_acked(&daemon, "cfdev", 300).into_iter().collect();
    daemon.kill9();
    assert!(
        s3.objects().is_empty(),
        "nothing was uploaded before the kill"
    );

    let daemon = env.start();
    let status = daemon.client().status(ACK_TIMEOUT).unwrap();
    assert_eq!(status.pending_events, 300, "acked events survived SIGKILL");
    let report = daemon.client().flush(Duration::from_secs(60)).unwrap();
    assert_eq!(report.events, 300);
    assert_exactly_once(&decode_objects(&s3.objects()), &acked);
}

#[test]
fn wrong_credentials_keep_events_local_show_the_error_and_a_later_flush_delivers_once() {
    let s3 = S3Server::start();
    let good = s3_env(&s3);
    let mut bad = DaemonEnv::new(Destination::S3 {
        endpoint: s3.endpoint.clone(),
        secret: "wrong-secret".into(),
    });
    // Same state dir as the good config, so the restart sees the queue.
    bad.state = good.state.clone();
    bad.socket = good.socket.clone();

    let daemon = bad.start();
    let acked: BTreeSet<String> = emit_acked(&daemon, "cfdev", 50).into_iter().collect();
    let out = bad.run("telemetryctl", &["flush"]);
    assert_eq!(out.status.code(), Some(3), "refused flush exits 3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("PutObject") && stderr.contains("retried"),
        "{stderr}"
    );

    let out = bad.run("telemetryctl", &["status", "--json"]);
    assert!(out.status.success());
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["pending_events"], 50);
    assert!(
        st["last_error"].as_str().unwrap().contains("PutObject"),
        "{st}"
    );
    assert!(st["next_attempt_us"].as_i64().is_some());
    assert!(st["consecutive_failures"].as_u64().unwrap() >= 1);
    let human = bad.run("telemetryctl", &["status"]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("last error:") && human.contains("next attempt"),
        "{human}"
    );
    for text in [
        stderr.to_string(),
        st.to_string(),
        human.to_string(),
        daemon.log(),
    ] {
        assert!(!text.contains("wrong-secret"), "secret leaked: {text}");
    }
    assert!(s3.objects().is_empty());
    assert!(daemon.terminate().unwrap().success());

    // The sealed batch may go out on its own right after the start; the
    // flush covers whatever is left. Either way: everything, once.
    let daemon = good.start();
    daemon.client().flush(Duration::from_secs(60)).unwrap();
    assert_eq!(
        daemon.client().status(ACK_TIMEOUT).unwrap().pending_events,
        0
    );
    assert_exactly_once(&decode_objects(&s3.objects()), &acked);
}

#[test]
fn unreachable_endpoint_keeps_events_and_reports_the_address() {
    // A port nobody listens on, for as long as the test runs.
    let refusing = RefusingPort::new();
    let port = refusing.port;
    let env = DaemonEnv::new(Destination::S3 {
        endpoint: refusing.endpoint(),
        secret: SECRET_KEY.into(),
    });
    let daemon = env.start();
    emit_acked(&daemon, "cfdev", 5);
    let err = daemon.client().flush(Duration::from_secs(60)).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Refused {
                code: ErrorCode::Upload,
                ..
            }
        ),
        "{err}"
    );
    let st = daemon.client().status(ACK_TIMEOUT).unwrap();
    assert_eq!(st.pending_events, 5);
    let error = st.last_error.unwrap_or_default();
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
}

/// Send raw bytes, then read whatever the daemon answers until it closes.
fn raw_exchange(socket: &std::path::Path, bytes: &[u8], half_close: bool) -> Option<Response> {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    if half_close {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .expect("daemon closes the connection");
    if buf.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
    assert_eq!(buf.len(), 4 + len, "exactly one reply, then close");
    Some(decode_body(&buf[4..]).unwrap())
}

fn error_code(r: Option<Response>) -> Option<ErrorCode> {
    match r {
        Some(Response::Error { code, message }) => {
            assert!(!message.is_empty());
            Some(code)
        }
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[test]
fn malformed_frames_get_an_error_reply_and_the_daemon_keeps_serving() {
    let env = DaemonEnv::new(Destination::Outbox);
    let daemon = env.start();
    let sock = daemon.socket.clone();

    // Garbage body in a well-formed frame.
    let mut garbage = 7u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(
        error_code(raw_exchange(&sock, &garbage, false)),
        Some(ErrorCode::Malformed)
    );

    // A length prefix far over the maximum.
    let huge = (64 * 1024 * 1024u32).to_be_bytes();
    assert_eq!(
        error_code(raw_exchange(&sock, &huge, false)),
        Some(ErrorCode::FrameTooLarge)
    );

    // An unknown protocol version.
    let mut body = encode_body(&Request::Status).unwrap();
    body[0] = 0x7f;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    assert_eq!(
        error_code(raw_exchange(&sock, &frame, false)),
        Some(ErrorCode::UnsupportedVersion)
    );

    // A truncated frame: announces 100 bytes, sends 10, closes its side.
    let mut short = 100u32.to_be_bytes().to_vec();
    short.extend_from_slice(&[0u8; 10]);
    if let Some(r) = raw_exchange(&sock, &short, true) {
        assert_eq!(error_code(Some(r)), Some(ErrorCode::Malformed));
    }

    // An invalid event is refused with a clear message; nothing stored.
    let mut bad = event("cfdev", "Bad-Name", "1.0", BTreeMap::new());
    bad.data.insert("path".into(), Value::Str("x".into()));
    let err = daemon.client().emit(vec![bad], ACK_TIMEOUT).unwrap_err();
    match err {
        ClientError::Refused {
            code: ErrorCode::Invalid,
            message,
        } => {
            assert!(message.contains("Bad-Name"), "{message}")
        }
        other => panic!("{other}"),
    }

    // A well-behaved client is still served, and nothing bad was stored.
    let ids = emit_acked(&daemon, "cfdev", 3);
    assert_eq!(ids.len(), 3);
    assert_eq!(
        daemon.client().status(ACK_TIMEOUT).unwrap().pending_events,
        3
    );
}

#[test]
fn shim_without_a_daemon_exits_zero_fast_and_strict_fails_clearly() {
    let env = DaemonEnv::new(Destination::Outbox);
    let start = Instant::now();
    let out = env.run("telemetry-emit", &["--product", "cfdev", "stop"]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "quiet without --strict: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // The budget is not what this part is about: a long one, so a loaded
    // machine's slow spool write does not end it first.
    let out = env
        .command("telemetry-emit")
        .env("TELEMETRY_EMIT_TIMEOUT_MS", "5000")
        .args(["--product", "cfdev", "--strict", "stop"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not reachable") && stderr.contains(env.socket.to_str().unwrap()),
        "{stderr}"
    );

    // Bad arguments: exit 0 without --strict, 2 with.
    let out = env.run("telemetry-emit", &["--product", "cfdev", "stop", "novalue"]);
    assert_eq!(out.status.code(), Some(0));
    let out = env.run(
        "telemetry-emit",
        &["--product", "cfdev", "--strict", "stop", "novalue"],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn shim_and_telemetryctl_with_the_embedded_outbox_default() {
    let env = DaemonEnv::new(Destination::Outbox);
    let daemon = env.start();
    let out = env.run(
        "telemetry-emit",
        &[
            "--product",
            "cfdev",
            "--build",
            "0.9.1",
            "--strict",
            "--timeout-ms",
            "5000",
            "start_end",
            "duration_s=42",
            "success=true",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = env.run("telemetryctl", &["status"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pending:      1 event ("), "{text}");
    assert!(text.contains("outbox:"), "{text}");

    let out = env.run("telemetryctl", &["flush", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["events"], 1);
    let key = report["keys"][0].as_str().unwrap().to_string();
    assert!(key.starts_with("v1/product=cfdev/dt="), "{key}");
    let file = env.state.join("outbox").join(&key);
    let raw = zstd::stream::decode_all(&read_all(&file).unwrap()[..]).unwrap();
    let line: serde_json::Value = serde_json::from_slice(raw.strip_suffix(b"\n").unwrap()).unwrap();
    assert_eq!(line["event"], "start_end");
    assert_eq!(line["build"], "0.9.1");
    assert_eq!(line["data"]["duration_s"], 42);
    assert_eq!(line["data"]["success"], true);

    let out = env.run("telemetryctl", &["flush"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "nothing to upload"
    );
    drop(daemon);
}

#[test]
fn telemetryctl_exit_codes() {
    let env = DaemonEnv::new(Destination::Outbox);
    let out = env.run("telemetryctl", &["status"]);
    assert_eq!(out.status.code(), Some(1), "unreachable daemon");
    assert!(String::from_utf8_lossy(&out.stderr).contains(env.socket.to_str().unwrap()));
    let out = env.run("telemetryctl", &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "usage error");
    let out = env.run("telemetryctl", &["--help"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_second_daemon_on_the_same_socket_is_refused_and_bad_config_names_key_and_file() {
    let env = DaemonEnv::new(Destination::Outbox);
    let daemon = env.start();
    // Same state dir: refused on the lock before any socket is touched
    // (regression, #12: it logged "telemetryd listening" first).
    let other_socket = env.root().join("other-run/telemetryd.sock");
    let out = env
        .command("telemetryd")
        .env("TELEMETRY_SOCKET", &other_socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another telemetryd is using the state directory")
            && stderr.contains(env.state.join("lock").to_str().unwrap()),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");
    assert!(!other_socket.exists() && !other_socket.parent().unwrap().exists());
    // Same socket, another state dir: refused on the socket.
    let out = env
        .command("telemetryd")
        .env("TELEMETRY_STATE_DIR", env.root().join("other-state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already listening") && stderr.contains(env.socket.to_str().unwrap()),
        "{stderr}"
    );
    // The first daemon is unaffected.
    daemon.client().status(ACK_TIMEOUT).unwrap();
    assert!(daemon.terminate().unwrap().success());
    assert!(!env.socket.exists(), "socket removed on clean exit");

    let cfg = env.root().join("config.toml");
    std::fs::write(
        &cfg,
        "[s3]\nbucket = \"ok-bucket\"\npath_style = \"maybe\"\n",
    )
    .unwrap();
    let out = env.run("telemetryd", &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("path_style") && stderr.contains(cfg.to_str().unwrap()),
        "{stderr}"
    );
}

#[test]
fn sigterm_uploads_what_is_pending_and_exits_zero() {
    let s3 = S3Server::start();
    let env = s3_env(&s3);
    let daemon = env.start();
    let acked: BTreeSet<String> = emit_acked(&daemon, "cfdev", 20).into_iter().collect();
    let status = daemon.terminate().unwrap();
    assert!(status.success(), "{status}");
    assert_exactly_once(&decode_objects(&s3.objects()), &acked);
}

#[test]
fn duplicate_ids_are_stored_once() {
    let env = DaemonEnv::new(Destination::Outbox);
    let daemon = env.start();
    let ev = event("cfdev", "stop", "1.0", BTreeMap::new());
    let mut c = daemon.client();
    let a = c.emit(vec![ev.clone()], ACK_TIMEOUT).unwrap();
    let b = c.emit(vec![ev.clone(), ev], ACK_TIMEOUT).unwrap();
    assert_eq!((a.accepted, a.duplicates), (1, 0));
    assert_eq!((b.accepted, b.duplicates), (0, 2));
    assert_eq!(c.status(ACK_TIMEOUT).unwrap().pending_events, 1);
}

#[test]
fn an_event_resent_after_its_upload_is_not_uploaded_twice() {
    let s3 = S3Server::start();
    let env = s3_env(&s3);
    let daemon = env.start();
    let ev = event("cfdev", "stop", "1.0", BTreeMap::new());
    let mut c = daemon.client();
    c.emit(vec![ev.clone()], ACK_TIMEOUT).unwrap();
    assert_eq!(c.flush(Duration::from_secs(60)).unwrap().events, 1);
    // The client did not see the ack (say it timed out) and sends again.
    let again = c.emit(vec![ev.clone()], ACK_TIMEOUT).unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 1));
    assert_eq!(c.flush(Duration::from_secs(60)).unwrap().events, 0);
    let ids: BTreeSet<String> = [ev.id.hyphenated().to_string()].into();
    assert_exactly_once(&decode_objects(&s3.objects()), &ids);
}

/// `rounds` times: `no_ack` emits whose replies the client skips, then one
/// acked emit; every ack must be the acked emit's own.
fn no_ack_emits_then_an_ack(daemon: &Daemon, rounds: u64, no_ack: u64) {
    let mut c = daemon.client();
    for round in 0..rounds {
        for _ in 0..no_ack {
            c.emit_no_ack(
                vec![event("cfdev", "stop", "1.0", BTreeMap::new())],
                ACK_TIMEOUT,
            )
            .unwrap();
        }
        let ack = c
            .emit(
                vec![event("cfdev", "bosh", "1.0", BTreeMap::new())],
                ACK_TIMEOUT,
            )
            .unwrap();
        assert_eq!(ack.accepted, 1, "round {round}");
    }
    let st = c.status(ACK_TIMEOUT).unwrap();
    assert_eq!(st.pending_events, rounds * (no_ack + 1));
}

/// Events sent without waiting for the commit are counted from the
/// commit's outcome: one sent twice is stored once and a duplicate once,
/// not "stored" twice.
#[test]
fn no_ack_emits_are_counted_as_their_commit_went() {
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::write(env.root().join("consent"), "cfdev on\n").unwrap();
    let daemon = env.start();
    let mut c = daemon.client();
    let ev = event("cfdev", "stop", "1.0", BTreeMap::new());
    c.emit_no_ack(vec![ev.clone()], ACK_TIMEOUT).unwrap();
    c.emit_no_ack(vec![ev], ACK_TIMEOUT).unwrap();
    // Committed in order: once this is acknowledged, so are they.
    let last = event("cfdev", "stop", "1.0", BTreeMap::new());
    assert_eq!(c.emit(vec![last], ACK_TIMEOUT).unwrap().accepted, 1);
    let counters = c.status(ACK_TIMEOUT).unwrap().counters;
    assert_eq!(
        (counters.received, counters.stored, counters.duplicates),
        (3, 2, 1),
        "{counters:?}"
    );
}

#[test]
fn replies_stay_matched_after_no_ack_emits() {
    let env = DaemonEnv::new(Destination::Outbox);
    no_ack_emits_then_an_ack(&env.start(), 1, 5);
}

#[test]
fn a_client_that_stops_reading_gets_every_ack_in_order_once_it_reads() {
    // The store thread writes an ack itself when the socket takes it at
    // once; when the client has stopped reading and the socket is full, the
    // connection task must finish it, and replies must keep their order.
    let env = DaemonEnv::new(Destination::Outbox);
    let daemon = env.start_with(&[("TELEMETRY_SYNC", "normal")]);
    let n = 30_000;
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for _ in 0..n {
            let req = Request::Emit {
                events: vec![event("cfdev", "stop", "1.0", BTreeMap::new())],
                ack: true,
            };
            writer
                .write_all(&telemetry_proto::encode_frame(&req).unwrap())
                .unwrap();
        }
    });
    // Read nothing until the daemon stalls on the full socket: what it
    // stored stops growing short of n. (Answers to pipelined requests go
    // out several to a write, so it takes many to fill the socket.)
    // Stored so far (batches of 10,000 go to the outbox meanwhile).
    let status = || daemon.client().status(ACK_TIMEOUT).unwrap().counters.stored;
    let mut last = status();
    let stalled = wait_for(
        "the daemon to stall on a full socket",
        Duration::from_secs(60),
        || {
            std::thread::sleep(Duration::from_millis(300));
            let now = status();
            let stalled = now == last && now > 0;
            last = now;
            stalled.then_some(now)
        },
    );
    assert!(
        stalled < n,
        "{stalled} of {n} stored before the socket filled"
    );
    stream.set_read_timeout(Some(ACK_TIMEOUT)).unwrap();
    for i in 0..n {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        stream.read_exact(&mut body).unwrap();
        let reply: Response = decode_body(&body).unwrap();
        assert_eq!(
            reply,
            Response::Ack {
                accepted: 1,
                duplicates: 0
            },
            "reply #{i}"
        );
    }
    sender.join().unwrap();
    assert_eq!(status(), n);
}

#[test]
fn without_room_for_second_handles_every_answer_goes_through_the_connection_task() {
    // 2 × 40,000 connections exceed any open-file limit the daemon sets for
    // itself (at most 65,536), so it makes no second handles: acks are
    // written by the connection tasks, and must still come, in order.
    let env = DaemonEnv::new(Destination::Outbox);
    let daemon = env.start_with(&[("TELEMETRY_MAX_CONNECTIONS", "40000")]);
    no_ack_emits_then_an_ack(&daemon, 50, 2);
}

/// The events only the daemon records (an off's final event, a forget's
/// marker, a drop count) are refused from a client, though `cfdev`'s
/// manifest lists `telemetry_off`: a client must not fake a user's off or
/// a forget.
#[test]
fn a_client_cannot_send_the_events_only_the_daemon_records() {
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::write(
        env.root().join("consent"),
        "cfdev on
",
    )
    .unwrap();
    let daemon = env.start();
    for name in ["telemetry_off", "telemetry_forget", "telemetry_dropped"] {
        let err = daemon
            .client()
            .emit(
                vec![event("cfdev", name, "1.0", BTreeMap::new())],
                ACK_TIMEOUT,
            )
            .unwrap_err();
        match err {
            ClientError::Refused {
                code: ErrorCode::Invalid,
                message,
            } => assert!(
                message.contains("recorded by telemetryd itself"),
                "{message}"
            ),
            other => panic!("{name}: {other}"),
        }
    }
    let s = daemon.client().status(ACK_TIMEOUT).unwrap();
    assert_eq!(s.pending_events, 0);
}

/// An event stamped far ahead of the machine's clock is refused, naming
/// why: its batch would be filed under a day before the event's own, which
/// no report of its period reads. A few minutes ahead is taken.
#[test]
fn an_event_from_the_future_is_refused() {
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::write(env.root().join("consent"), "cfdev on\n").unwrap();
    let daemon = env.start();
    let at = |ahead_s: i64| {
        let mut ev = event("cfdev", "stop", "1.0", BTreeMap::new());
        ev.timestamp_us += ahead_s * 1_000_000;
        daemon.client().emit(vec![ev], ACK_TIMEOUT)
    };
    match at(86_400 * 30).unwrap_err() {
        ClientError::Refused {
            code: ErrorCode::Invalid,
            message,
        } => assert!(message.contains("after this machine's clock"), "{message}"),
        other => panic!("{other}"),
    }
    assert_eq!(at(600).expect("ten minutes ahead is taken").accepted, 1);
    let s = daemon.client().status(ACK_TIMEOUT).unwrap();
    assert_eq!(s.pending_events, 1);
}

/// #12: a refused event is logged (product, event, reason), counted by
/// reason in `status`, and spool ingestion names why it refused.
#[test]
fn a_refused_event_is_logged_counted_by_reason_and_named_when_spooled() {
    let env = DaemonEnv::new(Destination::Outbox);
    // A catalogued product the user never opted in to: the daemon's own
    // consent check refuses it (the shim would not even connect).
    std::fs::create_dir_all(env.root().join("catalog")).unwrap();
    std::fs::write(
        env.root().join("catalog/offprod.toml"),
        "product = \"offprod\"\n[events.ping]\ndescription = \"p\"\n",
    )
    .unwrap();
    let daemon = env.start();
    // A typo in the event name, through the real shim (exit 0, quiet).
    let out = env.shim(&[], &["app_creatd"]);
    assert_eq!(out.status.code(), Some(0));
    let err = daemon
        .client()
        .emit(
            vec![event("offprod", "ping", "1.0", BTreeMap::new())],
            ACK_TIMEOUT,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Refused {
                code: ErrorCode::ConsentOff,
                ..
            }
        ),
        "{err}"
    );
    // Garbage: malformed, no product.
    let mut garbage = 3u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[2, 0xff, 0xff]);
    raw_exchange(&daemon.socket, &garbage, false);

    let counts = |d: &Daemon| -> BTreeMap<(String, ErrorCode), u64> {
        d.client()
            .status(ACK_TIMEOUT)
            .unwrap()
            .refusals
            .into_iter()
            .map(|r| ((r.product, r.code), r.count))
            .collect()
    };
    let got = wait_for("three refusals", Duration::from_secs(10), || {
        let c = counts(&daemon);
        (c.values().sum::<u64>() == 3).then_some(c)
    });
    assert_eq!(
        got[&("cfdev".into(), ErrorCode::NotInCatalogue)],
        1,
        "{got:?}"
    );
    assert_eq!(
        got[&("offprod".into(), ErrorCode::ConsentOff)],
        1,
        "{got:?}"
    );
    assert_eq!(got[&(String::new(), ErrorCode::Malformed)], 1, "{got:?}");
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("refused") && l.contains("app_creatd"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert!(
        line.contains("cfdev") && line.contains("not_in_catalogue"),
        "{line}"
    );
    // The human status and its JSON say the same.
    let out = env.run("telemetryctl", &["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        json["refusals"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["code"] == "not_in_catalogue"
                && r["product"] == "cfdev"
                && r["count"] == 1
                && r["last_event"] == "app_creatd"
                && r["last_message"]
                    .as_str()
                    .is_some_and(|m| m.contains("no event \"app_creatd\""))),
        "{json}"
    );
    // Why, without the daemon's log.
    let out = env.run("telemetryctl", &["status"]);
    let human = text(&out);
    let line = human
        .lines()
        .find(|l| l.starts_with("refused:") && l.contains("cfdev"))
        .unwrap_or_else(|| panic!("{human}"));
    assert!(
        line.contains("not_in_catalogue since start; the latest: ")
            && line.contains("no event \"app_creatd\" in its catalogue"),
        "{line}"
    );
    assert!(daemon.terminate().unwrap().success());

    // Spooled while the daemon is down, refused when taken in: the log
    // names the reason (it said only `refused=1`).
    let out = env.shim(&[], &["app_creatd"]);
    assert_eq!(out.status.code(), Some(0));
    let daemon = env.start();
    let log = wait_for("the spool to be taken in", Duration::from_secs(10), || {
        let log = daemon.log();
        log.lines()
            .rfind(|l| l.contains("ingested the spool"))
            .map(str::to_string)
    });
    assert!(log.contains("not_in_catalogue=1"), "{log}");
    assert_eq!(counts(&daemon).values().sum::<u64>(), 1);
    let human = text(&env.run("telemetryctl", &["status"]));
    assert!(
        human.contains(
            "spooled:      1 event taken in from the spool (0 new; 1 duplicate or refused)"
        ),
        "{human}"
    );
    // One that is stored: no rest to speak of.
    assert!(daemon.terminate().unwrap().success());
    let out = env.shim(&[], &["app_created", "buildpack=go"]);
    assert_eq!(out.status.code(), Some(0));
    let daemon = env.start();
    wait_for(
        "the second spool to be taken in",
        Duration::from_secs(10),
        || daemon.log().contains("ingested the spool").then_some(()),
    );
    let human = text(&env.run("telemetryctl", &["status"]));
    assert!(
        human.contains("spooled:      1 event taken in from the spool (1 new)\n"),
        "{human}"
    );
}

/// #12: `status` says when the next automatic upload is due, and turning a
/// product on is logged like off and local.
#[test]
fn status_says_when_the_next_upload_is_due_and_consent_on_is_logged() {
    let mut env = DaemonEnv::new(Destination::Outbox);
    env.extra
        .push(("TELEMETRY_UPLOAD_INTERVAL".into(), "1h".into()));
    let daemon = env.start();
    let status = daemon.client().status(ACK_TIMEOUT).unwrap();
    assert_eq!(status.next_upload_us, None, "nothing waiting: none due");
    let before = now_us();
    emit_acked(&daemon, "cfdev", 1);
    let after = now_us();
    let due = daemon
        .client()
        .status(ACK_TIMEOUT)
        .unwrap()
        .next_upload_us
        .expect("an upload is due once an event waits");
    let hour = 3_600_000_000;
    assert!(
        due >= before + hour && due <= after + hour,
        "due {due}, event stored between {before} and {after}"
    );
    let out = env.run("telemetryctl", &["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("next upload:  20"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The test environment opted in to cfdev before the daemon started:
    // applying that `on` is logged.
    let log = daemon.log();
    assert!(
        log.lines().any(|l| l.contains("applied consent change")
            && l.contains("cfdev")
            && l.contains("mode=on")),
        "{log}"
    );
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Resident KiB of the read-only mappings of `pid`'s own executable (its
/// code and constants), from `/proc/PID/smaps`.
#[cfg(target_os = "linux")]
fn resident_code_kib(pid: u32) -> u64 {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let exe = exe.to_string_lossy().into_owned();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let (mut ours, mut total) = (false, 0);
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.starts_with(|c: char| c.is_ascii_hexdigit()) {
            let perms = words.next().unwrap_or("");
            ours = line.ends_with(exe.as_str()) && !perms.contains('w');
        } else if ours && first == "Rss:" {
            total += words.next().unwrap().parse::<u64>().unwrap();
        }
    }
    total
}

/// After `idle_trim` without connections the daemon hands its mapped code
/// back; the next client is served as before, and the trim comes again
/// after the next quiet spell.
#[cfg(target_os = "linux")]
#[test]
fn an_idle_daemon_hands_its_code_back_and_serves_the_next_client() {
    let mut env = DaemonEnv::new(Destination::Outbox);
    env.extra.push(("TELEMETRY_IDLE_TRIM".into(), "1s".into()));
    let d = env.start();
    let trimmed = |from: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = resident_code_kib(d.pid());
            if now * 2 < from {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "still {now} KiB of {from} after 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    for round in 0..2 {
        // An open connection holds the trim off while the busy size is
        // read, however slow this machine is.
        let hold = UnixStream::connect(&env.socket).unwrap();
        emit_acked(&d, "cfdev", 2);
        let busy = resident_code_kib(d.pid());
        drop(hold);
        let idle = trimmed(busy);
        eprintln!("round {round}: resident code {busy} KiB busy, {idle} KiB idle");
    }
    assert_eq!(emit_acked(&d, "cfdev", 1).len(), 1, "served after the trim");
}
