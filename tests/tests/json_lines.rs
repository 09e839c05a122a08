//! The JSON-lines protocol against the real daemon: every reply in the
//! connection's encoding (busy refusals and store-thread acks included),
//! bad lines answered without closing, the portable spool directory taken
//! in, and `socat` as a client (the README's example).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use telemetry_client::event;
use telemetry_proto::{encode_line, paths, Request, WireEvent};
use telemetry_tests::{wait_for, Daemon, DaemonEnv, Destination};

const T: Duration = Duration::from_secs(10);

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// A line-oriented connection.
struct Lines {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Lines {
    fn connect(d: &Daemon) -> Lines {
        let s = UnixStream::connect(d.socket()).expect("connect");
        s.set_read_timeout(Some(T)).unwrap();
        Lines {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }

    /// Write one line; a peer that already answered and closed (a busy
    /// refusal) is found out by the read that follows.
    fn send(&mut self, line: &str) {
        let _ = self.writer.write_all(format!("{line}\n").as_bytes());
    }

    /// The next reply line, parsed; `None` at EOF.
    fn reply(&mut self) -> Option<serde_json::Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                assert!(line.ends_with('\n'), "a whole line: {line:?}");
                Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
            }
        }
    }

    fn ask(&mut self, line: &str) -> serde_json::Value {
        self.send(line);
        self.reply().expect("a reply line")
    }
}

fn emit_line(events: &[WireEvent], ack: bool) -> String {
    let line = encode_line(&Request::Emit {
        events: events.to_vec(),
        ack,
    })
    .unwrap();
    String::from_utf8(line).unwrap().trim_end().to_string()
}

fn cfdev(name: &str) -> WireEvent {
    event("cfdev", name, "1.0", BTreeMap::new())
}

fn pending(d: &Daemon) -> u64 {
    d.client().status(T).unwrap().pending_events
}

#[test]
fn a_json_client_gets_every_reply_as_a_line_and_survives_its_own_mistakes() {
    let env = DaemonEnv::new(Destination::Outbox);
    let d = env.start();
    let mut c = Lines::connect(&d);

    let status = c.ask(r#"{"v":2,"status":{}}"#);
    assert_eq!(status["v"], 2);
    assert_eq!(status["status"]["consent"][0]["product"], "cfdev");

    // Acknowledged emits (answered from the store thread) come as lines too,
    // one per request, in order.
    for i in 0..5 {
        let reply = c.ask(&emit_line(&[cfdev("stop")], true));
        assert_eq!(
            reply,
            serde_json::json!({"v": 2, "ack": {"accepted": 1, "duplicates": 0}}),
            "emit {i}"
        );
    }
    // Hand-written, as a shell script would: data as plain JSON values.
    let by_hand = format!(
        r#"{{"v":2,"emit":{{"ack":true,"events":[{{"id":"0190f5c2-7b1e-7000-8000-00000000beef","event":"start_end","product":"cfdev","build":"1.0","timestamp_us":{},"data":{{"duration_s":42,"success":true}}}}]}}}}"#,
        now_us()
    );
    assert_eq!(c.ask(&by_hand)["ack"]["accepted"], 1);
    assert_eq!(
        c.ask(&by_hand)["ack"]["duplicates"],
        1,
        "the id keeps it single"
    );

    // Mistakes get an error line naming the problem, and the connection goes on.
    for (line, code, says) in [
        ("not json", "malformed", "not a JSON object"),
        (r#"{"status":{}}"#, "malformed", "\"v\""),
        (r#"{"v":2,"launch":{}}"#, "malformed", "unknown variant"),
        (
            r#"{"v":2,"emit":{"events":[],"ack":"yes"}}"#,
            "malformed",
            "emit",
        ),
    ] {
        let reply = c.ask(line);
        assert_eq!(reply["error"]["code"], code, "{line}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{line}: {message}");
    }
    let refused = c.ask(&emit_line(&[cfdev("no_such_event")], true));
    assert_eq!(refused["error"]["code"], "not_in_catalogue");
    // Blank lines are skipped; the connection still serves.
    c.send("");
    assert_eq!(
        c.ask(&emit_line(&[cfdev("stop")], false))["queued"]["accepted"],
        1
    );
    assert!(c.ask(r#"{"v":2,"status":null}"#)["status"].is_object());
    wait_for("7 events stored", T, || (pending(&d) == 7).then_some(()));

    // Another version, or a line over the limit: an error line, then closed.
    let mut c = Lines::connect(&d);
    let reply = c.ask(r#"{"v":9,"status":{}}"#);
    assert_eq!(reply["error"]["code"], "unsupported_version");
    assert!(
        c.reply().is_none(),
        "closed after a version it cannot speak"
    );
    let mut c = Lines::connect(&d);
    let huge = format!(
        r#"{{"v":2,"status":{{"pad":"{}"}}}}"#,
        "x".repeat(300 * 1024)
    );
    let _ = c.writer.write_all(huge.as_bytes());
    let reply = c.reply().expect("an error line");
    assert_eq!(reply["error"]["code"], "frame_too_large");
    assert!(c.reply().is_none());

    // A last line without its newline counts when the client closes its side.
    let mut s = UnixStream::connect(d.socket()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(br#"{"v":2,"status":{}}"#).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with(r#"{"v":2,"status":{"#) && out.ends_with("}\n"),
        "{out}"
    );

    // Binary clients are served as before, alongside.
    assert_eq!(pending(&d), 7);
}

#[test]
fn a_busy_refusal_comes_in_the_encoding_the_client_speaks() {
    let mut env = DaemonEnv::new(Destination::Outbox);
    env.extra
        .push(("TELEMETRY_MAX_CONNECTIONS".into(), "1".into()));
    let d = env.start();
    // Holds the only slot (served, so surely holding it).
    let holder = wait_for("the only slot", T, || {
        let mut c = Lines::connect(&d);
        c.ask(r#"{"v":2,"status":{}}"#)
            .get("status")
            .is_some()
            .then_some(c)
    });

    let mut json = Lines::connect(&d);
    let reply = json.ask(r#"{"v":2,"status":{}}"#);
    assert_eq!(reply["error"]["code"], "busy", "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("maximum of 1"));

    let mut binary = UnixStream::connect(d.socket()).unwrap();
    binary.set_read_timeout(Some(T)).unwrap();
    binary
        .write_all(&telemetry_proto::encode_frame(&Request::Status).unwrap())
        .unwrap();
    let mut len = [0u8; 4];
    binary.read_exact(&mut len).unwrap();
    assert_eq!(len[0], 0, "a frame, not a line");
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    binary.read_exact(&mut body).unwrap();
    let resp: telemetry_proto::Response = telemetry_proto::decode_body(&body).unwrap();
    assert!(matches!(
        resp,
        telemetry_proto::Response::Error {
            code: telemetry_proto::ErrorCode::Busy,
            ..
        }
    ));
    drop(holder);
}

#[test]
fn the_portable_spool_directory_is_taken_in_at_start() {
    let env = DaemonEnv::new(Destination::Outbox);
    let dir = paths::spool_dir_for(&env.state, &env.socket);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();

    // The shared vectors' example file, byte for byte.
    let vectors: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../vectors/paths.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let spool = &vectors["spool"];
    let example = dir.join(spool["example_file"].as_str().unwrap());
    std::fs::write(
        &example,
        format!("{}\n", spool["example_line"].as_str().unwrap()),
    )
    .unwrap();
    // One file with two events, as an SDK writes them.
    let mut two = [cfdev("stop"), cfdev("start_begin")];
    for ev in &mut two {
        ev.timestamp_us = now_us();
    }
    let two_file = dir.join(format!("{}.json", two[0].id));
    std::fs::write(&two_file, emit_line(&two, false) + "\n").unwrap();
    // Refused for good: removed and counted, not retried.
    let refused = cfdev("no_such_event");
    let refused_file = dir.join(format!("{}.json", refused.id));
    std::fs::write(&refused_file, emit_line(&[refused], false) + "\n").unwrap();
    // Damaged: removed.
    let damaged = dir.join("0190f5c2-7b1e-7000-8000-0000000000ff.json");
    std::fs::write(&damaged, "{\"v\":2,\"emit\":").unwrap();
    // A newer protocol's file waits for a newer daemon; a writer's
    // unfinished temporary file is not read.
    let newer = dir.join("0190f5c2-7b1e-7000-8000-0000000000fe.json");
    std::fs::write(&newer, "{\"v\":3,\"emit\":{}}\n").unwrap();
    let partial = dir.join(".0190f5c2-7b1e-7000-8000-0000000000fd.tmp");
    std::fs::write(&partial, emit_line(&[cfdev("stop")], false)).unwrap();

    let d = env.start();
    // The example's timestamp (2023) is in range; cfdev is on in the env.
    wait_for("the spool taken in", T, || (pending(&d) == 3).then_some(()));
    for f in [&example, &two_file, &refused_file, &damaged] {
        assert!(!f.exists(), "{} should be consumed", f.display());
    }
    assert!(newer.exists(), "left for a newer daemon");
    assert!(partial.exists(), "not renamed yet: not read");
    let status = d.client().status(T).unwrap();
    assert!(
        status
            .refusals
            .iter()
            .any(|r| r.code == telemetry_proto::ErrorCode::NotInCatalogue),
        "{:?}",
        status.refusals
    );
    // The damaged file is not only logged: `status` counts it as a request
    // refused `malformed` (no product could be read) and says what it was.
    let (count, latest) = wait_for("the damaged file counted", T, || {
        d.client()
            .status(T)
            .unwrap()
            .refusals
            .into_iter()
            .find(|r| r.code == telemetry_proto::ErrorCode::Malformed && r.product.is_empty())
            .map(|r| (r.count, r.last_message))
    });
    assert_eq!(count, 1);
    assert!(latest.contains("damaged spool directory entry"), "{latest}");
}

#[test]
fn socat_is_a_client_as_the_readme_shows() {
    let env = DaemonEnv::new(Destination::Outbox);
    let d = env.start();
    // README: echo '{"v":2,"status":{}}' | socat - UNIX-CONNECT:"$sock"
    let mut child = std::process::Command::new("socat")
        .args([
            "-t",
            "5",
            "-",
            &format!("UNIX-CONNECT:{}", d.socket().display()),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("socat (installed by .ci/run)");
    let line = emit_line(&[cfdev("stop")], true);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{line}\n{{\"v\":2,\"status\":{{}}}}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], r#"{"v":2,"ack":{"accepted":1,"duplicates":0}}"#);
    assert!(lines[1].contains(r#""pending_events":1"#), "{}", lines[1]);
}
