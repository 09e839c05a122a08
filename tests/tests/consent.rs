//! Consent, anonymity and transparency, end to end with the real binaries.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};
use telemetry_client::{event, ClientError, ErrorCode};
use telemetry_tests::*;

const T: Duration = Duration::from_secs(10);

fn s3_env(server: &S3Server) -> DaemonEnv {
    DaemonEnv::new(Destination::S3 {
        endpoint: server.endpoint.clone(),
        secret: SECRET_KEY.into(),
    })
}
fn ctl(env: &DaemonEnv, args: &[&str]) -> Output {
    let out = env.run("telemetryctl", args);
    assert!(
        out.status.success(),
        "telemetryctl {args:?}: {}",
        text(&out)
    );
    out
}

/// Emit `n` acked `start_end` events; returns their ids.
fn emit(d: &Daemon, n: usize) -> Vec<String> {
    d.emit_start_ends(n)
}

/// The daemon refuses a cfdev event as off; its error.
fn assert_off_refused(d: &Daemon) -> ClientError {
    let err = d
        .client()
        .emit(vec![event("cfdev", "stop", "1", BTreeMap::new())], T)
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
    err
}

fn ids_in(lines: &[(String, serde_json::Value)]) -> BTreeSet<String> {
    lines
        .iter()
        .map(|(_, v)| v["id"].as_str().unwrap().to_string())
        .collect()
}

/// Files under `dir` with their sizes and modification times.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(&p).unwrap();
            (p, (m.len(), m.modified().unwrap()))
        })
        .collect()
}

/// A listener on the daemon's socket path that records whether anyone
/// connected: stands in for the daemon to prove the shim did not try.
fn decoy(env: &DaemonEnv) -> UnixListener {
    std::fs::create_dir_all(env.socket.parent().unwrap()).unwrap();
    let l = UnixListener::bind(&env.socket).unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

fn connected(l: &UnixListener) -> bool {
    match l.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    }
}

/// Run the shim under strace and return the traced syscalls.
fn strace_shim(env: &DaemonEnv, extra_env: &[(&str, &str)]) -> String {
    let log = env.root().join("strace.log");
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-qq",
        "-e",
        "trace=connect,execve,openat,creat,mkdir,rename,unlink",
        "-o",
    ])
    .arg(&log)
    .arg(bin("telemetry-emit"))
    .args(["--product", "cfdev", "--strict", "stop"]);
    for var in ["DO_NOT_TRACK", "TELEMETRY_OPTOUT"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.envs());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .expect("strace is needed for this test (.ci/run installs it)");
    // strace exits with the shim's code: 4, consent off.
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    std::fs::read_to_string(&log).unwrap()
}

fn assert_touches_nothing(trace: &str) {
    let execs = trace.lines().filter(|l| l.contains("execve(")).count();
    assert_eq!(execs, 1, "only the shim itself is executed:\n{trace}");
    assert!(
        !trace.contains("connect("),
        "no connection attempt:\n{trace}"
    );
    for line in trace.lines().filter(|l| l.contains("openat(")) {
        assert!(
            !(line.contains("O_WRONLY") || line.contains("O_RDWR") || line.contains("O_CREAT")),
            "no file opened for writing: {line}"
        );
    }
    for call in ["creat(", "mkdir(", "rename(", "unlink("] {
        assert!(!trace.contains(call), "no {call}..):\n{trace}");
    }
}

#[test]
fn undecided_means_off_the_shim_connects_to_nothing_writes_nothing_starts_nothing() {
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::remove_file(env.root().join("consent")).unwrap();
    let listener = decoy(&env);
    let before = snapshot(env.root());

    for (args, code) in [(&["stop"][..], 0), (&["--strict", "stop"][..], 4)] {
        let out = env.shim(&[], args);
        assert_eq!(out.status.code(), Some(code), "{}", text(&out));
    }
    assert!(
        !connected(&listener),
        "the shim must not connect when consent is off"
    );
    let trace = strace_shim(&env, &[]);
    assert_touches_nothing(&trace);
    assert_eq!(
        snapshot(env.root())
            .keys()
            .filter(|p| !p.ends_with("strace.log"))
            .count(),
        before.len()
    );
    for (path, meta) in &before {
        assert_eq!(
            snapshot(env.root()).get(path),
            Some(meta),
            "{} changed",
            path.display()
        );
    }
}

#[test]
fn opt_out_variables_win_over_the_users_on() {
    let env = DaemonEnv::new(Destination::Outbox);
    let listener = decoy(&env);
    for (var, value) in [
        ("DO_NOT_TRACK", "1"),
        ("TELEMETRY_OPTOUT", "1"),
        ("DO_NOT_TRACK", "yes"),
    ] {
        let out = env.shim(&[(var, value)], &["stop"]);
        assert_eq!(out.status.code(), Some(0));
        assert!(!connected(&listener), "{var}={value} must stop the shim");
        assert_touches_nothing(&strace_shim(&env, &[(var, value)]));
    }
    // A value that is not UTF-8 is set all the same: read as unset, the
    // shim would fail open.
    let out = env
        .command("telemetry-emit")
        .args(["--product", "cfdev", "--strict", "stop"])
        .env(
            "DO_NOT_TRACK",
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"\xff"),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        !connected(&listener),
        "DO_NOT_TRACK=\\xff must stop the shim"
    );
    // "0" and empty are not opt-outs: the shim does connect.
    let out = env.shim(
        &[
            ("DO_NOT_TRACK", "0"),
            ("TELEMETRY_OPTOUT", ""),
            ("TELEMETRY_EMIT_TIMEOUT_MS", "300"),
        ],
        &["stop"],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(connected(&listener), "DO_NOT_TRACK=0 is not an opt-out");

    let mut cmd = env.command("telemetryctl");
    let out = cmd
        .args(["consent", "cfdev"])
        .env("DO_NOT_TRACK", "1")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(
        t.contains("cfdev: off") && t.contains("DO_NOT_TRACK"),
        "{t}"
    );
    // The check a script makes before sending (`--json`) reads only the
    // files when the product is off: no connection on the user's behalf.
    while connected(&listener) {}
    let out = env
        .command("telemetryctl")
        .args(["consent", "cfdev", "--json"])
        .env("DO_NOT_TRACK", "1")
        .output()
        .unwrap();
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (got["mode"].as_str(), got["layer"].as_str()),
        (Some("off"), Some("environment")),
        "{got}"
    );
    assert!(!connected(&listener), "consent --json connected while off");
}

/// `DO_NOT_TRACK` in the shell that runs `telemetryctl` keeps that shell's
/// clients off, but a daemon started elsewhere does not see it: the user
/// is told the daemon still has the product on, or they would believe it
/// off everywhere.
#[test]
fn an_opt_out_in_this_shell_is_told_apart_from_the_daemons_view() {
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::write(env.root().join("consent"), "cfdev on\n").unwrap();
    let _daemon = env.start();
    for args in [
        &["consent", "cfdev"][..],
        &["consent"],
        &["consent", "cfdev", "on"],
    ] {
        let out = env
            .command("telemetryctl")
            .args(args)
            .env("DO_NOT_TRACK", "1")
            .output()
            .unwrap();
        let t = text(&out);
        assert!(out.status.success(), "{args:?}: {t}");
        assert!(
            t.contains("cfdev: off")
                && t.contains("telemetryd does not see this shell's environment and has cfdev on"),
            "{args:?}: {t}"
        );
    }
    // Without the variable there is nothing to tell apart.
    let t = text(&ctl(&env, &["consent", "cfdev"]));
    assert!(t.contains("cfdev: on") && !t.contains("note:"), "{t}");
}

#[test]
fn the_administrators_off_cannot_be_overridden_and_the_daemon_enforces_it_too() {
    let env = DaemonEnv::new(Destination::Outbox);
    let daemon = env.start();
    emit(&daemon, 2);
    std::fs::write(env.root().join("system-consent"), "# admin\n* off\n").unwrap();

    let t = text(&ctl(&env, &["consent", "cfdev"]));
    assert!(t.contains("cfdev: off") && t.contains("system file"), "{t}");
    // The user says on again: still off, and told why.
    let t = text(&ctl(&env, &["consent", "cfdev", "on"]));
    assert!(t.contains("cfdev: off") && t.contains("system file"), "{t}");

    // Defence in depth: a client that skips the shim's check is refused.
    let err = daemon
        .client()
        .emit(vec![event("cfdev", "stop", "1", BTreeMap::new())], T)
        .unwrap_err();
    match err {
        ClientError::Refused {
            code: ErrorCode::ConsentOff,
            message,
        } => {
            assert!(message.contains("system file"), "{message}")
        }
        other => panic!("{other}"),
    }
    // Nothing is uploaded while forced off, but nothing is deleted either.
    let flush = ctl(&env, &["flush", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&flush.stdout).unwrap();
    assert_eq!(report["events"], 0);
    let st: serde_json::Value =
        serde_json::from_slice(&ctl(&env, &["status", "--json"]).stdout).unwrap();
    assert_eq!(st["pending_events"], 2);
    let cfdev = st["consent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["product"] == "cfdev")
        .unwrap();
    assert_eq!(
        (cfdev["mode"].as_str(), cfdev["layer"].as_str()),
        (Some("off"), Some("system"))
    );
}

/// The daemon checks a client that waits for each answer against its last
/// look at the consent files and confirms that look at the commit: a file
/// changed by hand (nothing tells the daemon) still applies to the very
/// next event on a connection that stays open, whichever way it changed.
#[test]
fn a_consent_file_changed_by_hand_applies_to_the_next_event_on_an_open_connection() {
    let env = DaemonEnv::new(Destination::Outbox);
    let daemon = env.start_with(&[("TELEMETRY_LOG", "info,telemetryd=debug")]);
    let user = env.root().join("consent");
    let mut c = daemon.client();
    // Each change comes a moment after the commit before it, so the
    // uploader's look at the files (it wakes at a first pending event) is
    // over and the daemon's last look predates the change.
    let change = |path: &Path, text: &str| {
        std::thread::sleep(Duration::from_millis(200));
        std::fs::write(path, text).unwrap();
    };
    let mut send = |what: &str| {
        let ev = event("cfdev", "stop", "1.0.0", BTreeMap::new());
        let id = ev.id.hyphenated().to_string();
        (id, c.emit(vec![ev], T).map_err(|e| format!("{what}: {e}")))
    };
    let (first, acked) = send("on");
    assert_eq!(acked.unwrap().accepted, 1);
    change(&user, "cfdev local\n");
    let (kept_home, acked) = send("local");
    assert_eq!(acked.unwrap().accepted, 1, "local keeps the event");
    let st = daemon.client().status(T).unwrap();
    // Both kept home: a switch to local keeps what was stored before too.
    assert_eq!((st.pending_events, st.local_events), (0, 2), "{st:?}");

    change(&user, "cfdev off\n");
    match send("off").1 {
        Err(e) => assert!(e.contains("is off"), "{e}"),
        Ok(a) => panic!("stored after an off: {a:?}"),
    }
    change(&user, "cfdev on\n");
    let (after_on, acked) = send("on again");
    assert_eq!(acked.unwrap().accepted, 1, "on applies at once");
    change(&env.root().join("system-consent"), "* off\n");
    match send("system off").1 {
        Err(e) => assert!(e.contains("system file"), "{e}"),
        Ok(a) => panic!("stored while the administrator says off: {a:?}"),
    }
    let shown = text(&ctl(&env, &["show"]));
    assert!(shown.contains(&after_on), "{shown}");
    for purged in [&first, &kept_home] {
        assert!(
            !shown.contains(purged.as_str()),
            "the off purged {purged}: {shown}"
        );
    }
    // The changes to local, off and the administrator's off each met a
    // request checked against the older look (on again did not: a refusal
    // is always made against a look of its own).
    let log = daemon.log();
    assert!(
        log.matches("checked it again").count() >= 1,
        "no request was checked against the daemon's last look: {log}"
    );
}

/// An off the daemon was not told about (the file edited by hand, or an
/// older `telemetryctl` it could not read) is applied whole at the next
/// `status`, `show` or `flush`, not at that product's next event, which
/// its shims (checking the file first) never send: what was stored is
/// purged and the `telemetry_off` recorded, and `show` says so.
#[test]
fn an_off_the_daemon_was_not_told_about_is_applied_at_the_next_status() {
    let env = DaemonEnv::new(Destination::Outbox);
    let daemon = env.start();
    let ids = emit(&daemon, 2);
    assert_eq!(daemon.client().status(T).unwrap().pending_events, 2);
    std::fs::write(env.root().join("consent"), "cfdev off\n").unwrap();
    let st = daemon.client().status(T).unwrap();
    let shown = text(&ctl(&env, &["show"]));
    for id in &ids {
        assert!(!shown.contains(id.as_str()), "not purged: {shown}");
    }
    assert!(
        !shown.contains("an administrator's or the environment's off"),
        "{shown}"
    );
    // What status reported was already the purged store: at most the
    // `telemetry_off` waits.
    assert!(st.pending_events <= 1, "{st:?}");
    drop(daemon);
}

/// A user file that cannot be read (a stray byte from a bad edit, a disk
/// error) decides nothing: nothing new is collected while it lasts, but
/// nothing stored is deleted and no `telemetry_off` recorded, as a user's
/// off would; the shim, `telemetryctl` and `doctor` name the file. Once it
/// reads again, everything is as it was.
#[test]
fn an_unreadable_consent_file_stops_collection_but_deletes_and_announces_nothing() {
    let s3 = S3Server::start();
    let env = s3_env(&s3);
    let daemon = env.start();
    let ids = emit(&daemon, 2);
    let file = env.root().join("consent");
    let good = std::fs::read(&file).unwrap();
    let mut bad = good.clone();
    bad.extend_from_slice(b"\xff\n");
    std::fs::write(&file, &bad).unwrap();
    // `status` applies a changed decision (see the test above): none here.
    let out = ctl(&env, &["status"]);
    assert!(
        text(&out).contains("consent file: the consent file")
            && text(&out).contains("cannot be read"),
        "{}",
        text(&out)
    );
    assert_eq!(daemon.client().status(T).unwrap().pending_events, 2);
    let shown = text(&ctl(&env, &["show"]));
    for id in &ids {
        assert!(shown.contains(id.as_str()), "deleted: {shown}");
    }
    assert!(!shown.contains("telemetry_off"), "{shown}");
    // Nothing new is collected, and the shim says why.
    assert_off_refused(&daemon);
    let out = env.shim(&[], &["--strict", "stop"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("cannot be read"), "{}", text(&out));
    let out = ctl(&env, &["consent", "cfdev"]);
    assert!(
        text(&out).contains(&format!(
            "the consent file {} cannot be read",
            file.display()
        )),
        "{}",
        text(&out)
    );
    let out = env.run("telemetryctl", &["doctor"]);
    assert!(
        text(&out).contains("FAIL consent file") && text(&out).contains("cannot be read"),
        "{}",
        text(&out)
    );
    // Readable again: the two events go, and nothing says off.
    std::fs::write(&file, &good).unwrap();
    ctl(&env, &["flush"]);
    let lines = wait_for_lines(&s3, 2);
    assert_eq!(ids_in(&lines), ids.iter().cloned().collect());
    assert!(lines.iter().all(|(_, v)| v["event"] != "telemetry_off"));
    // With no daemon, "none is needed" (nothing reads as on) still names
    // the file the decisions may be in.
    drop(daemon);
    std::fs::write(&file, &bad).unwrap();
    let out = env.run("telemetryctl", &["status"]);
    assert!(
        text(&out).contains("none is needed") && text(&out).contains("cannot be read"),
        "{}",
        text(&out)
    );
}

/// A line of the user's file that is not understood (a mode misspelt by
/// hand) decides nothing, and `consent` and `doctor` quote it with its
/// number; an opt-out variable in doctor's own shell is a warning, since
/// the daemon cannot see it.
#[test]
fn a_line_not_understood_and_an_opt_out_in_this_shell_are_named() {
    let env = DaemonEnv::new(Destination::Outbox);
    let daemon = env.start();
    let ids = emit(&daemon, 2);
    let file = env.root().join("consent");
    // cfdev's `on` misspelt by hand: it decides nothing, so what is stored
    // stays and no `telemetry_off` is recorded, but nothing new is taken.
    let mut text_of = std::fs::read_to_string(&file)
        .unwrap()
        .replace("cfdev on", "cfdev onn");
    assert!(text_of.contains("cfdev onn"), "{text_of}");
    std::fs::write(&file, &text_of).unwrap();
    let shown = text(&ctl(&env, &["show"]));
    for id in &ids {
        assert!(shown.contains(id.as_str()), "deleted: {shown}");
    }
    assert!(!shown.contains("telemetry_off"), "{shown}");
    assert_off_refused(&daemon);
    // The shim says why it is off: not "nobody decided".
    let out = env
        .command("telemetry-emit")
        .args(["--strict", "--product", "cfdev", "stop"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("not understood") && text(&out).contains("`cfdev onn`"),
        "{}",
        text(&out)
    );
    text_of.push_str("acme locale 2026-12-05T10:00:00Z\n");
    std::fs::write(&file, &text_of).unwrap();
    let bad_line = text_of.lines().count();
    // Each product's message quotes its own line only; another's is no
    // reason for it.
    let strict = |product: &str| {
        text(
            &env.command("telemetry-emit")
                .args(["--strict", "--product", product, "stop"])
                .output()
                .unwrap(),
        )
    };
    let said = strict("cfdev");
    assert!(
        said.contains("`cfdev onn`") && !said.contains("acme locale"),
        "{said}"
    );
    let said = strict("other");
    assert!(
        said.contains("nobody decided yet") && !said.contains("not understood"),
        "{said}"
    );
    let out = ctl(&env, &["consent"]);
    let quoted = format!("line {bad_line}: `acme locale 2026-12-05T10:00:00Z`");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&quoted),
        "{}",
        text(&out)
    );
    let out = env
        .command("telemetryctl")
        .env("DO_NOT_TRACK", "1")
        .arg("doctor")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(
        t.contains("WARN consent file") && t.contains(&quoted),
        "{t}"
    );
    assert!(
        t.contains("WARN environment") && t.contains("DO_NOT_TRACK is set in this shell"),
        "{t}"
    );
    let out = env
        .command("telemetryctl")
        .env("DO_NOT_TRACK", "1")
        .arg("status")
        .output()
        .unwrap();
    assert!(
        text(&out).contains("note:         DO_NOT_TRACK is set in this shell"),
        "{}",
        text(&out)
    );
    // Both are warnings: nothing failed.
    assert!(out.status.success(), "{t}");
}

/// While an upload to a destination that does not answer holds the locks
/// a consent change takes, `status` answers at once (its client waits a
/// few seconds, the upload may take a minute) and leaves the change to the
/// next look; once the upload gave up, the next `status` applies it.
#[test]
fn status_does_not_wait_for_an_upload_to_apply_a_change_it_finds() {
    let s3 = S3Server::start();
    let mut env = s3_env(&s3);
    env.extra.push(("TELEMETRY_S3_TIMEOUT".into(), "6s".into()));
    // No retry of its own after the hung upload: one would send the two
    // events before a `status` applies the off.
    env.extra.push(("TELEMETRY_RETRY_MIN".into(), "30s".into()));
    env.extra.push(("TELEMETRY_RETRY_MAX".into(), "60s".into()));
    let daemon = env.start();
    emit(&daemon, 2);
    s3.set_fault(Fault::Hang);
    let before = s3.requests.load(std::sync::atomic::Ordering::SeqCst);
    let flush = env
        .command("telemetryctl")
        .args(["flush", "--timeout", "30s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the upload to reach S3", T, || {
        (s3.requests.load(std::sync::atomic::Ordering::SeqCst) > before).then_some(())
    });
    std::fs::write(env.root().join("consent"), "cfdev off\n").unwrap();
    let t = std::time::Instant::now();
    let st = daemon.client().status(T).unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(st.pending_events, 2, "not applied while the upload runs");
    s3.set_fault(Fault::None);
    let mut flush = flush;
    flush.wait().unwrap();
    wait_for("the off applied", T, || {
        let st = daemon.client().status(T).unwrap();
        (st.pending_events <= 1).then_some(())
    });
    // Applied as an off: the events gone, the `telemetry_off` recorded
    // (still here, or uploaded).
    let shown = text(&ctl(&env, &["show"]));
    let uploaded = decode_objects(&s3.objects());
    assert!(
        shown.contains("telemetry_off")
            || uploaded.iter().any(|(_, v)| v["event"] == "telemetry_off"),
        "{shown}"
    );
    assert!(
        uploaded.iter().all(|(_, v)| v["event"] == "telemetry_off"),
        "{uploaded:?}"
    );
    drop(daemon);
}

/// `consent P --json` for a product that is off asks no daemon, yet names
/// the manifest a daemon would use and its catalogue version (it gave an
/// empty manifest and version 0, which scripts read as facts); so does
/// `consent P` in any mode when no daemon runs, and with one the JSON
/// carries its warnings about the manifest.
#[test]
fn consent_json_for_an_off_product_names_its_manifest_without_a_daemon() {
    let env = DaemonEnv::new(Destination::Outbox);
    let dir = env.root().join("catalog");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("acme.toml"),
        "product = \"acme\"\n[consent]\nversion = 2\n[events.ran]\n",
    )
    .unwrap();
    std::fs::write(env.root().join("consent"), "acme off\n").unwrap();
    let out = ctl(&env, &["consent", "acme", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["mode"], "off", "{json}");
    assert_eq!(
        json["manifest"],
        dir.join("acme.toml").display().to_string(),
        "{json}"
    );
    assert_eq!(json["version"], 2, "{json}");
    // The built-in example when no file of its name comes first; a file
    // whose `product` is another's is no manifest of this one.
    std::fs::write(env.root().join("consent"), "cfdev off\nother off\n").unwrap();
    std::fs::write(dir.join("other.toml"), "product = \"acme\"\n[events.ran]\n").unwrap();
    let json = |product: &str| -> serde_json::Value {
        serde_json::from_slice(&ctl(&env, &["consent", product, "--json"]).stdout).unwrap()
    };
    let cfdev = json("cfdev");
    assert_eq!(cfdev["manifest"], "built-in cfdev.toml", "{cfdev}");
    assert_eq!(cfdev["version"], 1, "{cfdev}");
    let other = json("other");
    assert!(
        other["manifest_error"]
            .as_str()
            .unwrap()
            .contains("they must match"),
        "{other}"
    );
    // A product that is on, with no daemon running: the same manifest,
    // in JSON and in text (it said "" and version 0, and no line).
    std::fs::write(
        env.root().join("consent"),
        "acme on
",
    )
    .unwrap();
    let on = json("acme");
    assert_eq!(on["mode"], "on", "{on}");
    assert_eq!(
        on["manifest"],
        dir.join("acme.toml").display().to_string(),
        "{on}"
    );
    assert_eq!(on["version"], 2, "{on}");
    let text = String::from_utf8(ctl(&env, &["consent", "acme"]).stdout).unwrap();
    assert!(
        text.contains(&format!(
            "manifest: {} (catalogue version 2",
            dir.join("acme.toml").display()
        )),
        "{text}"
    );
    // A change, and a prompt, answered from the files name it too (they
    // said "" and version 0 where plain `consent P --json` did not).
    for args in [
        &["consent", "acme", "local", "--json"][..],
        &["consent", "acme", "--prompt", "--json"][..],
    ] {
        let changed: serde_json::Value = serde_json::from_slice(&ctl(&env, args).stdout).unwrap();
        let consent = &changed["consent"];
        assert_eq!(
            consent["manifest"],
            dir.join("acme.toml").display().to_string(),
            "{args:?}: {changed}"
        );
        assert_eq!(consent["version"], 2, "{args:?}: {changed}");
    }
    // With a daemon, its warnings about the manifest are in the JSON too.
    std::fs::write(
        dir.join("acme.toml"),
        "product = \"acme\"\nfuture = 1\n[consent]\nversion = 2\n[events.ran]\n",
    )
    .unwrap();
    let _daemon = env.start();
    let on = json("acme");
    let warnings = on["manifest_warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("`future`")),
        "{on}"
    );
}

/// An event of a product no manifest describes is refused as off when
/// someone turned it off (a spooled event of a product the user then
/// turned off: "add its manifest" would be advice to undo that), and as not
/// in the catalogue when nobody decided (a misspelt name: the vendor's
/// news).
#[test]
fn a_product_without_a_manifest_that_was_turned_off_is_refused_as_off() {
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::write(env.root().join("consent"), "cfdev on\nlaterr off\n").unwrap();
    let daemon = env.start();
    let code = |product: &str| match daemon
        .client()
        .emit(vec![event(product, "stop", "1", BTreeMap::new())], T)
    {
        Err(ClientError::Refused { code, .. }) => code,
        other => panic!("{product}: {other:?}"),
    };
    assert_eq!(code("laterr"), ErrorCode::ConsentOff);
    assert_eq!(code("nobody_decided"), ErrorCode::NotInCatalogue);
}

fn wait_for_lines(s3: &S3Server, n: usize) -> Vec<(String, serde_json::Value)> {
    wait_for(&format!("{n} lines in S3"), Duration::from_secs(30), || {
        let lines = decode_objects(&s3.objects());
        (lines.len() >= n).then_some(lines)
    })
}

#[test]
fn turning_off_purges_sends_one_final_telemetry_off_and_nothing_after() {
    let s3 = S3Server::start();
    let env = s3_env(&s3);
    let daemon = env.start();
    let sent = emit(&daemon, 10);
    ctl(&env, &["flush"]);
    let unsent = emit(&daemon, 5);

    let t = text(&ctl(&env, &["consent", "cfdev", "off", "--build", "2.0.0"]));
    assert!(
        t.contains("cfdev: off") && t.contains("deleted 5") && t.contains("telemetry_off"),
        "{t}"
    );

    let lines = wait_for_lines(&s3, 11);
    let last: Vec<_> = lines
        .iter()
        .filter(|(_, v)| v["event"] == "telemetry_off")
        .collect();
    assert_eq!(last.len(), 1, "exactly one telemetry_off");
    assert_eq!(last[0].1["build"], "2.0.0");
    let ids = ids_in(&lines);
    assert!(sent.iter().all(|id| ids.contains(id)));
    assert!(
        unsent.iter().all(|id| !ids.contains(id)),
        "purged events never leave"
    );
    let objects_after_off = s3.objects().len();

    // Nothing after it: the daemon refuses, the shim does not even try.
    assert_off_refused(&daemon);
    let out = env.shim(&[], &["--strict", "stop"]);
    assert_eq!(out.status.code(), Some(4), "off: not recorded");
    ctl(&env, &["flush"]);
    assert!(daemon.terminate().unwrap().success());
    let daemon = env.start();
    ctl(&env, &["flush"]);
    assert_eq!(s3.objects().len(), objects_after_off, "no byte after off");
    assert_eq!(daemon.client().status(T).unwrap().pending_events, 0);
}

/// A product name the running daemon has no manifest for (most likely a
/// slip: `cfdve` for `cfdev`) is recorded, with a warning naming the
/// products it knows; a known one, or no daemon to ask, gets none.
#[test]
fn a_misspelt_product_is_recorded_with_a_warning_naming_the_known_ones() {
    let env = DaemonEnv::new(Destination::Outbox);
    let daemon = env.start();
    let err = |out: &Output| String::from_utf8_lossy(&out.stderr).to_string();
    let out = ctl(&env, &["consent", "cfdve", "off"]);
    let w = err(&out);
    assert!(
        w.contains("warning") && w.contains("\"cfdve\"") && w.contains("cfdev"),
        "{w}"
    );
    let out = ctl(&env, &["consent", "cfdev", "off", "--json"]);
    assert_eq!(err(&out), "", "a known product");
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON on stdout only");
    let out = ctl(&env, &["forget", "nosuch"]);
    assert!(err(&out).contains("\"nosuch\""), "{}", err(&out));
    // `doctor` does not pass an `on` for a name no manifest has.
    ctl(&env, &["consent", "cfdvx", "on"]);
    let out = env.run("telemetryctl", &["doctor"]);
    assert!(
        text(&out).contains("WARN consent cfdvx: on, decided by the user file, but no manifest here describes cfdvx")
            && text(&out).contains("products with one: cfdev"),
        "{}",
        text(&out)
    );
    // The product left out: a setting is not taken for a product's name
    // (that showed a product "off" and exited 0, so the user believed
    // telemetry was off).
    for setting in ["off", "ON", "local"] {
        let out = env.run("telemetryctl", &["consent", setting]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            err(&out).contains("is a setting, not a product")
                && err(&out).contains(&format!("telemetryctl consent PRODUCT {setting}")),
            "{}",
            err(&out)
        );
    }
    // With no daemon to ask, the search path a daemon started now would
    // use is looked at (a misspelt off was recorded in silence while the
    // product meant stayed on).
    drop(daemon);
    let out = ctl(&env, &["consent", "cfdve", "off"]);
    assert!(
        err(&out).contains("no manifest for product \"cfdve\" in ")
            && err(&out).contains("(products with one: cfdev"),
        "no daemon to ask: {}",
        err(&out)
    );
    let out = ctl(&env, &["consent", "cfdev", "off"]);
    assert_eq!(err(&out), "", "a known product");
    // A manifest in the `catalog_dir` the daemon's config file sets is
    // found there too.
    let vendor = env.root().join("vendor-catalog");
    std::fs::create_dir_all(&vendor).unwrap();
    std::fs::write(
        vendor.join("cfdve.toml"),
        "product = \"cfdve\"\n[events.ran]\n",
    )
    .unwrap();
    std::fs::write(
        env.root().join("config.toml"),
        format!("catalog_dir = {:?}\n", vendor.display().to_string()),
    )
    .unwrap();
    let out = ctl(&env, &["consent", "cfdve", "off"]);
    assert_eq!(err(&out), "", "described in the configured catalogue");
}

#[test]
fn a_change_made_while_the_daemon_is_down_is_applied_when_it_starts() {
    let s3 = S3Server::start();
    let env = s3_env(&s3);
    let daemon = env.start();
    let unsent = emit(&daemon, 4);
    daemon.kill9();
    let t = text(&ctl(&env, &["consent", "cfdev", "off"]));
    assert!(
        t.contains("no telemetryd is running") && t.contains("applies it when it starts"),
        "{t}"
    );

    let daemon = env.start();
    wait_for_lines(&s3, 1);
    // Count only once nothing more can be on its way.
    assert!(daemon.terminate().unwrap().success());
    let lines = decode_objects(&s3.objects());
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].1["event"], "telemetry_off");
    let daemon = env.start();
    assert!(unsent.iter().all(|id| !ids_in(&lines).contains(id)));
    assert_eq!(daemon.client().status(T).unwrap().pending_events, 0);
}

/// A socket that cannot be reached for another reason than nothing
/// serving it (a path through a file) is not said to be "no telemetryd
/// running": the error is named, and the decision still stands.
#[test]
fn a_change_that_cannot_reach_the_socket_names_why() {
    let env = DaemonEnv::new(Destination::Outbox);
    let file = env.root().join("a-file");
    std::fs::write(&file, "").unwrap();
    let out = env
        .command("telemetryctl")
        .env("TELEMETRY_SOCKET", file.join("telemetryd.sock"))
        .args(["consent", "cfdev", "off"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("Not a directory") && said.contains("every CLI reads this decision"),
        "{said}"
    );
    assert!(!said.contains("no telemetryd is running"), "{said}");
    assert!(std::fs::read_to_string(env.root().join("consent"))
        .unwrap()
        .contains("cfdev off"));
}

#[test]
fn local_keeps_events_home_and_turning_on_later_does_not_upload_them() {
    let s3 = S3Server::start();
    let env = s3_env(&s3);
    std::fs::remove_file(env.root().join("consent")).unwrap();
    let daemon = env.start();
    ctl(&env, &["consent", "cfdev", "local"]);
    for _ in 0..3 {
        let out = env.shim(&[], &["--strict", "bosh"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let st = daemon.client().status(T).unwrap();
    assert_eq!((st.pending_events, st.local_events), (0, 3));
    let flush: serde_json::Value =
        serde_json::from_slice(&ctl(&env, &["flush", "--json"]).stdout).unwrap();
    assert_eq!(flush["events"], 0);
    let shown = text(&ctl(&env, &["show"]));
    assert!(shown.contains("# local only, never uploaded:"), "{shown}");
    // --ndjson is exactly what will be uploaded: nothing.
    assert!(ctl(&env, &["show", "--ndjson"]).stdout.is_empty());
    assert_eq!(shown.matches("\"event\":\"bosh\"").count(), 3);

    ctl(&env, &["consent", "cfdev", "on"]);
    let after = emit(&daemon, 2);
    ctl(&env, &["flush"]);
    let lines = decode_objects(&s3.objects());
    assert_eq!(
        ids_in(&lines),
        after.into_iter().collect(),
        "only events from the moment of on"
    );
    assert_eq!(daemon.client().status(T).unwrap().local_events, 3);
}

#[test]
fn show_prints_exactly_the_bytes_that_are_uploaded_and_purge_deletes() {
    let s3 = S3Server::start();
    let env = s3_env(&s3);
    let daemon = env.start();
    let out = env.shim(&[], &["--strict", "error", "kind=timeout"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    emit(&daemon, 4);

    let human = text(&ctl(&env, &["show"]));
    assert!(
        human.contains("# pending, goes into the next batch:"),
        "{human}"
    );
    let json: telemetry_proto::EventsPage =
        serde_json::from_slice(&ctl(&env, &["show", "--json"]).stdout).unwrap();
    assert_eq!(json.events.len(), 5);
    assert_eq!(json.events[0].state, telemetry_proto::EventState::Pending);
    let line: serde_json::Value = serde_json::from_str(&json.events[0].line).unwrap();
    assert_eq!(line["data"]["kind"], "timeout");
    let shown = ctl(&env, &["show", "--ndjson"]).stdout;
    ctl(&env, &["flush"]);
    let objects = s3.objects();
    assert_eq!(objects.len(), 1);
    let uploaded = zstd::stream::decode_all(&objects.values().next().unwrap()[..]).unwrap();
    assert_eq!(
        shown, uploaded,
        "show --ndjson is byte for byte what was uploaded"
    );

    emit(&daemon, 7);
    let t = text(&ctl(&env, &["purge", "--product", "cfdev"]));
    assert!(t.contains("deleted 7"), "{t}");
    assert_eq!(daemon.client().status(T).unwrap().pending_events, 0);
    let t = text(&ctl(&env, &["show"]));
    assert!(t.contains("nothing stored"), "{t}");
}

#[test]
fn the_catalogue_rejects_unknown_events_keys_and_values_with_clear_errors() {
    let env = DaemonEnv::new(Destination::Outbox);
    let _daemon = env.start();
    for (args, expect) in [
        (
            &["--strict", "deploy_everything"][..],
            "no event \"deploy_everything\"",
        ),
        (
            &["--strict", "stop", "path=/home/alice"][..],
            "no data key \"path\"",
        ),
        (
            &[
                "--strict",
                "error",
                "kind=/home/alice/app: permission denied",
            ][..],
            "must be one of",
        ),
        (
            &["--strict", "start_end", "duration_s=soon"][..],
            "must be an integer",
        ),
    ] {
        let out = env.shim(&[], args);
        assert_eq!(out.status.code(), Some(3), "refused: {args:?}");
        let t = text(&out);
        // Each names the manifest it was checked against.
        assert!(
            t.contains(expect) && t.contains("catalogue") && t.contains("cfdev.toml"),
            "{args:?}: {t}"
        );
        // One event is not numbered as one of a list.
        assert!(!t.contains('#'), "{args:?}: {t}");
        let quiet = env.shim(&[], &args[1..]);
        assert_eq!(quiet.status.code(), Some(0));
        assert!(quiet.stderr.is_empty());
    }
    let t = text(&ctl(&env, &["show"]));
    assert!(t.contains("nothing stored"), "{t}");
}

#[test]
fn products_get_unlinkable_machine_ids_from_their_own_catalogues() {
    let env = DaemonEnv::new(Destination::Outbox);
    let cat = env.root().join("catalog");
    std::fs::create_dir_all(&cat).unwrap();
    std::fs::write(
        cat.join("mytool.toml"),
        "product = \"mytool\"\n[events.ran]\ndata.fast = { type = \"bool\" }\n",
    )
    .unwrap();
    let _daemon = env.start();
    ctl(&env, &["consent", "mytool", "on"]);
    let out = env
        .command("telemetry-emit")
        .env("TELEMETRY_EMIT_TIMEOUT_MS", "5000")
        .args(["--product", "mytool", "--strict", "ran", "fast=true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(env.shim(&[], &["--strict", "stop"]).status.code(), Some(0));
    let json: telemetry_proto::EventsPage =
        serde_json::from_slice(&ctl(&env, &["show", "--json"]).stdout).unwrap();
    let machines: BTreeSet<String> = json
        .events
        .iter()
        .map(|e| {
            let line: serde_json::Value = serde_json::from_str(&e.line).unwrap();
            line["machine"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(machines.len(), 2, "one anonymous id per product");
}

/// Run `telemetryctl consent cfdev --prompt` on a pseudo-terminal made by
/// `script`, typing `answer`.
fn prompt_on_tty(env: &DaemonEnv, answer: &str) -> String {
    prompt_on_tty_with(env, answer, "")
}

/// [`prompt_on_tty`] with more arguments (`extra`, shell words).
fn prompt_on_tty_with(env: &DaemonEnv, answer: &str, extra: &str) -> String {
    let cmd = format!(
        "{} consent cfdev --prompt {extra}",
        bin("telemetryctl").display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .envs(env.envs())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`script` (util-linux) is needed for this test (.ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answer.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    text(&out)
}

#[test]
fn the_prompt_asks_once_on_a_terminal_defaults_to_no_and_records_nothing_without_one() {
    let env = DaemonEnv::new(Destination::Outbox);
    let consent = env.root().join("consent");
    std::fs::remove_file(&consent).unwrap();

    // No terminal: nothing asked, nothing recorded, still off.
    let out = env
        .command("telemetryctl")
        .args(["consent", "cfdev", "--prompt"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(!consent.exists(), "nothing recorded without a terminal");

    // On a terminal, Enter means No, and the answer is recorded.
    let screen = prompt_on_tty(&env, "\n");
    assert!(
        screen.contains("[y/N]") && screen.contains("anonymous"),
        "{screen}"
    );
    assert!(
        screen.contains("telemetryctl consent cfdev off"),
        "the prompt says how to change it: {screen}"
    );
    // No daemon runs here; the person who answered is not told about one.
    assert!(!screen.contains("telemetryd"), "{screen}");
    assert!(std::fs::read_to_string(&consent)
        .unwrap()
        .contains("cfdev off"));
    // Asked once: a later prompt does not ask again or change anything.
    let screen = prompt_on_tty(&env, "y\n");
    assert!(!screen.contains("[y/N]"), "{screen}");
    assert!(std::fs::read_to_string(&consent)
        .unwrap()
        .contains("cfdev off"));

    std::fs::remove_file(&consent).unwrap();
    prompt_on_tty(&env, "y\n");
    assert!(std::fs::read_to_string(&consent)
        .unwrap()
        .contains("cfdev on"));
    let mode = std::fs::metadata(&consent).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
}

#[test]
fn nothing_identifying_is_stored_or_uploaded() {
    let s3 = S3Server::start();
    nothing_identifying_in(&s3_env(&s3), Some(&s3));
    // The default destination: the local outbox (under the state dir, so
    // scanned with it), whose receipts once named its directory.
    nothing_identifying_in(&DaemonEnv::new(Destination::Outbox), None);
}

/// Run events through `env`'s daemon (uploading to `s3` when given) and
/// check no stored or uploaded byte holds the raw machine identity, the
/// state dir's path, the home directory, the user name or the host name.
fn nothing_identifying_in(env: &DaemonEnv, s3: Option<&S3Server>) {
    let daemon = env.start();
    for args in [
        &["--strict", "app_created", "buildpack=go"][..],
        &["--strict", "error", "kind=network"][..],
    ] {
        assert_eq!(env.shim(&[], args).status.code(), Some(0));
    }
    emit(&daemon, 20);
    ctl(env, &["flush"]);
    emit(&daemon, 5); // some stay pending in SQLite
    assert!(daemon.terminate().unwrap().success());
    let daemon = env.start(); // and the final-upload path ran
    emit(&daemon, 1);
    drop(daemon);

    let mut secrets: Vec<String> = vec![RAW_IDENTITY.into(), env.root().display().to_string()];
    if let Ok(home) = std::env::var("HOME") {
        secrets.push(home);
    }
    let user = Command::new("id").arg("-un").output().unwrap();
    secrets.push(String::from_utf8_lossy(&user.stdout).trim().to_string());
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        secrets.push(host.trim().to_string());
    }
    // Too-short strings would match by chance in binary files.
    secrets.retain(|s| s.len() >= 4 && s != "/");

    let mut blobs: Vec<(String, Vec<u8>)> = files_under(&env.state)
        .into_iter()
        .map(|p| (p.display().to_string(), read_all(&p).unwrap()))
        .collect();
    // Batches in the outbox, as uploaded.
    for (name, bytes) in blobs.clone() {
        if name.ends_with(".zst") {
            let plain =
                zstd::stream::decode_all(&bytes[..]).unwrap_or_else(|e| panic!("{name}: {e}"));
            blobs.push((name, plain));
        }
    }
    for (key, body) in s3.map(S3Server::objects).unwrap_or_default() {
        blobs.push((key.clone(), zstd::stream::decode_all(&body[..]).unwrap()));
        blobs.push((key.clone(), key.into_bytes()));
    }
    assert!(blobs.len() >= 4);
    for (name, bytes) in &blobs {
        for s in &secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{name} contains {s:?}"
            );
        }
    }
}

#[test]
fn off_then_on_while_the_daemon_is_down_still_purges_and_says_off() {
    let s3 = S3Server::start();
    let env = s3_env(&s3);
    let daemon = env.start();
    let before = emit(&daemon, 3);
    daemon.kill9();
    // A CLI ran meanwhile: its event is spooled for the next daemon. The
    // off below takes it as it takes the stored ones.
    let out = env
        .command("telemetry-emit")
        .env("TELEMETRY_AUTOSTART", "0")
        .env("TELEMETRY_EMIT_TIMEOUT_MS", "5000")
        .args(["--product", "cfdev", "stop"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    ctl(&env, &["consent", "cfdev", "off"]);
    ctl(&env, &["consent", "cfdev", "on"]);
    let daemon = env.start();
    wait_for_lines(&s3, 1);
    let after = emit(&daemon, 2);
    ctl(&env, &["flush"]);
    // The spooled event was taken in, and refused there.
    let st = daemon.client().status(T).unwrap();
    assert_eq!(
        (st.counters.spooled, st.counters.taken_in),
        (1, 0),
        "{:?}",
        st.counters
    );
    assert!(daemon.terminate().unwrap().success());
    let lines = decode_objects(&s3.objects());
    let ids = ids_in(&lines);
    assert!(
        before.iter().all(|id| !ids.contains(id)),
        "events from before the off never leave"
    );
    assert!(after.iter().all(|id| ids.contains(id)));
    assert_eq!(
        lines
            .iter()
            .filter(|(_, v)| v["event"] == "telemetry_off")
            .count(),
        1
    );
    assert!(
        lines.iter().all(|(_, v)| v["event"] != "stop"),
        "the spooled event from before the off never leaves: {lines:?}"
    );
    assert_eq!(lines.len(), 3);
}

#[test]
fn on_to_local_keeps_everything_home_end_to_end() {
    let s3 = S3Server::start();
    let env = s3_env(&s3);
    let daemon = env.start();
    emit(&daemon, 4);
    let t = text(&ctl(&env, &["consent", "cfdev", "local"]));
    assert!(t.contains("cfdev: local"), "{t}");
    let st = daemon.client().status(T).unwrap();
    assert_eq!((st.pending_events, st.local_events), (0, 4));
    ctl(&env, &["flush"]);
    assert!(daemon.terminate().unwrap().success());
    assert!(s3.objects().is_empty(), "local means never uploaded");
}

#[test]
fn the_daemon_honours_opt_out_in_its_own_environment() {
    let env = DaemonEnv::new(Destination::Outbox);
    let daemon = env.start_with(&[("DO_NOT_TRACK", "1")]);
    let err = assert_off_refused(&daemon);
    // What can be done about it, not a `consent on` that cannot help.
    assert!(
        err.to_string().contains("unset DO_NOT_TRACK")
            && !err.to_string().contains("consent cfdev on"),
        "{err}"
    );
    let st: serde_json::Value =
        serde_json::from_slice(&ctl(&env, &["status", "--json"]).stdout).unwrap();
    let cfdev = st["consent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["product"] == "cfdev")
        .unwrap();
    assert_eq!(
        (cfdev["mode"].as_str(), cfdev["layer"].as_str()),
        (Some("off"), Some("environment"))
    );
    drop(daemon);
    // An autostarted one ignores the opt-out of the shell that started it
    // (`DO_NOT_TRACK=1 telemetryctl start`): the clients of that shell
    // check it themselves, the others must not be turned off by it.
    let out = env
        .command("telemetryctl")
        .env("DO_NOT_TRACK", "1")
        .env("TELEMETRY_AUTOSTART", "1")
        .args(["start", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let mut client = telemetry_client::Client::connect(&env.socket).unwrap();
    let acked = client.emit(vec![event("cfdev", "stop", "1", BTreeMap::new())], T);
    let _ = env.run("telemetryctl", &["stop"]);
    assert_eq!(acked.expect("acknowledged").accepted, 1);
}

#[test]
fn a_per_product_or_unreadable_system_file_stops_the_shim() {
    let env = DaemonEnv::new(Destination::Outbox);
    let system = env.root().join("system-consent");
    let listener = decoy(&env);
    std::fs::write(&system, "other on\ncfdev off\n").unwrap();
    assert_eq!(env.shim(&[], &["--strict", "stop"]).status.code(), Some(4));
    assert!(!connected(&listener));
    // A system file that exists but cannot be read fails closed (a
    // directory: even root cannot read it as a file).
    std::fs::remove_file(&system).unwrap();
    std::fs::create_dir(&system).unwrap();
    assert_eq!(env.shim(&[], &["--strict", "stop"]).status.code(), Some(4));
    assert!(!connected(&listener));
    let t = text(&env.run("telemetryctl", &["consent", "cfdev"]));
    assert!(t.contains("cfdev: off") && t.contains("system file"), "{t}");
}

#[test]
fn telemetryctl_refuses_when_the_daemon_reads_another_consent_file() {
    let env = DaemonEnv::new(Destination::Outbox);
    let elsewhere = env.root().join("elsewhere-consent");
    std::fs::write(&elsewhere, "cfdev on\n").unwrap();
    std::fs::write(
        env.root().join("config.toml"),
        format!("consent_file = \"{}\"\n", elsewhere.display()),
    )
    .unwrap();
    let mut cmd = env.command("telemetryd");
    cmd.env_remove("TELEMETRY_CONSENT_FILE");
    let log = std::fs::File::create(env.root().join("d.log")).unwrap();
    let mut child = cmd.stderr(log).spawn().unwrap();
    wait_for("daemon", Duration::from_secs(20), || {
        telemetry_client::Client::connect(&env.socket)
            .and_then(|mut c| c.status(T))
            .ok()
    });
    let out = env.run("telemetryctl", &["consent", "cfdev", "off"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains(&elsewhere.display().to_string()), "{t}");
}

#[test]
fn the_prompt_needs_a_terminal_on_stdin_too() {
    let env = DaemonEnv::new(Destination::Outbox);
    let consent = env.root().join("consent");
    std::fs::remove_file(&consent).unwrap();
    // stderr is a terminal (script), stdin is not.
    let cmd = format!(
        "{} consent cfdev --prompt < /dev/null",
        bin("telemetryctl").display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .envs(env.envs())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("[y/N]"));
    assert!(!consent.exists());
}

/// `telemetryctl consent cfdev --prompt` with stdin not a terminal.
fn prompt_without_tty(env: &DaemonEnv, extra_env: &[(&str, &str)], json: bool) -> Output {
    let mut cmd = env.command("telemetryctl");
    cmd.args(["consent", "cfdev", "--prompt"]);
    if json {
        cmd.arg("--json");
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).output().unwrap()
}

#[test]
fn the_prompt_says_what_it_did_and_json_has_a_field_for_it() {
    let env = DaemonEnv::new(Destination::Outbox);
    let consent = env.root().join("consent");
    std::fs::remove_file(&consent).unwrap();
    let json = |out: &Output| -> serde_json::Value {
        assert_eq!(out.status.code(), Some(0), "{}", text(out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
    };

    // Nobody to ask: said on stderr, nothing recorded, exit 0.
    let out = prompt_without_tty(&env, &[], false);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    for expect in [
        "did not ask",
        "stdin",
        "terminal",
        "nothing was recorded",
        "cfdev stays off",
        "telemetryctl consent cfdev on|off|local",
    ] {
        assert!(err.contains(expect), "{expect:?}: {err}");
    }
    let v = json(&prompt_without_tty(&env, &[], true));
    assert_eq!(v["prompt"], "not_a_terminal", "{v}");
    assert_eq!(
        v["consent"],
        serde_json::json!({"product": "cfdev", "mode": "off", "layer": "default",
            "manifest": "built-in cfdev.toml", "manifest_error": null, "version": 1,
            "consented_version": 0, "new_events": [], "manifest_warnings": []})
    );
    assert!(!consent.exists(), "nothing recorded");

    // Forced off by the environment: not asked, nothing to say.
    let out = prompt_without_tty(&env, &[("DO_NOT_TRACK", "1")], true);
    assert_eq!(json(&out)["prompt"], "forced_off");
    assert!(out.stderr.is_empty(), "{}", text(&out));

    // Asked on a terminal: the answer is recorded, and --json says so.
    let screen = prompt_on_tty_with(&env, "y\n", "--json");
    assert!(screen.contains("[y/N]"), "{screen}");
    let start = screen.find('{').expect("JSON after the question");
    let v: serde_json::Value = serde_json::from_str(&screen[start..].replace("\r\n", "\n"))
        .unwrap_or_else(|e| panic!("{e}: {screen}"));
    assert_eq!(v["prompt"], "asked", "{v}");
    assert_eq!(v["consent"]["mode"], "on", "{v}");

    // Decided: not asked again (today's behaviour), nothing printed, and
    // --json says why.
    let before = std::fs::read_to_string(&consent).unwrap();
    let out = prompt_without_tty(&env, &[], false);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{}",
        text(&out)
    );
    let v = json(&prompt_without_tty(&env, &[], true));
    assert_eq!(v["prompt"], "already_decided", "{v}");
    assert_eq!(v["consent"]["mode"], "on", "{v}");
    assert_eq!(std::fs::read_to_string(&consent).unwrap(), before);
}

#[test]
fn a_fifo_in_the_consent_files_place_does_not_hang_the_shim() {
    let env = DaemonEnv::new(Destination::Outbox);
    let fifo = env.root().join("consent.fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut child = env
        .command("telemetry-emit")
        .env("TELEMETRY_CONSENT_FILE", &fifo)
        .env("TELEMETRY_EMIT_TIMEOUT_MS", "5000")
        .args(["--product", "cfdev", "--strict", "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > T {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the shim still waits on a FIFO consent file after {T:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Read as empty: undecided, so off.
    assert_eq!(status.code(), Some(4));
}

/// `telemetryctl consent` that wrote a file the running daemon does not
/// read fails (exit 3, `consent_file`), having written it; a path that
/// reaches the daemon's own file through a link is the same file.
#[test]
fn consent_written_where_the_daemon_does_not_read_fails_but_a_linked_path_is_the_same_file() {
    let env = DaemonEnv::new(Destination::Outbox);
    let _daemon = env.start();
    let other = env.root().join("other-consent");
    let out = env
        .command("telemetryctl")
        .env("TELEMETRY_CONSENT_FILE", &other)
        .args(["consent", "cfdev", "on", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "consent_file", "{v}");
    assert!(std::fs::read_to_string(&other)
        .unwrap()
        .contains("cfdev on"));

    let link = env.root().join("linked");
    std::os::unix::fs::symlink(env.root(), &link).unwrap();
    let out = env
        .command("telemetryctl")
        .env("TELEMETRY_CONSENT_FILE", link.join("consent"))
        .args(["consent", "cfdev", "local"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = ctl(&env, &["consent", "cfdev", "--json"]);
    assert!(
        String::from_utf8_lossy(&s.stdout).contains("\"local\""),
        "{}",
        text(&s)
    );
}
