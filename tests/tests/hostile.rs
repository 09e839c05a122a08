//! Hostile and careless clients: slow senders, connection floods, random
//! bytes, lying lengths, other users. The daemon keeps serving everyone else.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};
use telemetry_client::{event, Client, ErrorCode, Response};
use telemetry_proto::decode_body;
use telemetry_tests::*;

const T: Duration = Duration::from_secs(20);

/// This test process holds 1,000 sockets while other tests run beside it.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
fn env_with(extra: &[(&str, &str)]) -> DaemonEnv {
    let mut env = DaemonEnv::new(Destination::Outbox);
    env.extra
        .extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

fn served(d: &Daemon) {
    let ack = d
        .client()
        .emit(vec![event("cfdev", "stop", "1.0", BTreeMap::new())], T)
        .expect("a well-behaved client is served");
    assert_eq!(ack.accepted, 1);
}

/// Read one reply frame (or None at EOF) with a deadline.
fn read_reply(s: &mut UnixStream) -> Option<Response> {
    s.set_read_timeout(Some(T)).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(decode_body(&body).unwrap())
}

#[test]
fn a_slowloris_client_is_cut_off_and_others_are_served_meanwhile() {
    let env = env_with(&[("TELEMETRY_CONNECTION_TIMEOUT", "1s")]);
    let daemon = env.start();
    let mut slow = UnixStream::connect(&daemon.socket).unwrap();
    let start = Instant::now();
    // A frame that announces 1000 bytes, delivered one byte at a time.
    slow.write_all(&1000u32.to_be_bytes()).unwrap();
    let mut cut = false;
    for _ in 0..30 {
        served(&daemon);
        if slow.write_all(&[1]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if !cut {
        // The write may still succeed into the socket buffer; the read
        // side tells whether the daemon closed it.
        slow.set_read_timeout(Some(T)).unwrap();
        let mut buf = [0u8; 16];
        // EOF or a reset means the daemon closed it; a read timeout would
        // mean it is still open, which is not "cut off".
        cut = match slow.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
        };
    }
    assert!(cut, "the slow client was never cut off");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "cut off late: {:?}",
        start.elapsed()
    );
    served(&daemon);
}

#[test]
fn a_thousand_idle_connections_do_not_exhaust_the_daemon() {
    let env = env_with(&[
        ("TELEMETRY_CONNECTION_TIMEOUT", "1s"),
        ("TELEMETRY_MAX_CONNECTIONS", "100"),
    ]);
    let daemon = env.start();
    raise_fd_limit();
    let mut conns: Vec<UnixStream> = (0..1000)
        .map(|_| UnixStream::connect(&daemon.socket).unwrap())
        .collect();
    // Those over the limit are told so, clearly, and closed.
    let mut busy = 0;
    for c in conns.iter_mut().skip(200) {
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        if let Some(Response::Error {
            code: ErrorCode::Busy,
            message,
        }) = read_reply(c)
        {
            assert!(message.contains("100"), "{message}");
            busy += 1;
        }
    }
    assert!(busy >= 700, "refusals: {busy}");
    // The idle ones time out; then everyone is served again.
    let d = &daemon;
    wait_for("a free slot", T, || {
        Client::connect(&d.socket)
            .ok()?
            .emit(vec![event("cfdev", "stop", "1.0", BTreeMap::new())], T)
            .ok()
    });
    drop(conns);
    served(&daemon);
}

#[test]
fn random_bytes_and_lying_lengths_get_errors_and_never_hurt_the_daemon() {
    let env = env_with(&[("TELEMETRY_CONNECTION_TIMEOUT", "1s")]);
    let daemon = env.start();
    let mut rng = fastrand::Rng::with_seed(7);
    let rounds = if soak() { 5000 } else { 300 };
    for _ in 0..rounds {
        let mut s = UnixStream::connect(&daemon.socket).unwrap();
        let len = rng.usize(0..300);
        let mut junk: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        if rng.bool() && junk.len() >= 4 {
            // A plausible, small length prefix that lies about what follows.
            let claimed = rng.u32(0..64);
            junk[..4].copy_from_slice(&claimed.to_be_bytes());
        }
        let _ = s.write_all(&junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        // Whatever it answers, it answers an error (or nothing) and closes.
        s.set_read_timeout(Some(T)).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        if out.len() >= 4 {
            let n = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
            if out.len() >= 4 + n {
                match decode_body::<Response>(&out[4..4 + n]) {
                    Ok(Response::Error { .. }) => {}
                    // Random bytes that happen to form a valid request.
                    Ok(_) => {}
                    Err(e) => panic!("the daemon sent an undecodable reply: {e}"),
                }
            }
        }
    }
    // A frame whose length is shorter than its content: the tail is read
    // as the next frame and rejected.
    let mut s = UnixStream::connect(&daemon.socket).unwrap();
    let body = telemetry_proto::encode_body(&telemetry_proto::Request::Status).unwrap();
    let mut frame = ((body.len() - 1) as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame.extend_from_slice(&[0xff; 8]);
    s.write_all(&frame).unwrap();
    assert!(matches!(read_reply(&mut s), Some(Response::Error { .. })));
    served(&daemon);
    assert!(
        daemon.terminate().unwrap().success(),
        "still healthy at the end"
    );
}

#[test]
fn files_and_socket_are_private_to_the_user() {
    let env = env_with(&[]);
    let daemon = env.start();
    served(&daemon);
    let env_state = env.state.clone();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&daemon.socket), 0o600);
    assert_eq!(mode(daemon.socket.parent().unwrap()), 0o700);
    assert_eq!(mode(&env_state), 0o700);
    for f in files_under(&env_state) {
        assert_eq!(mode(&f) & 0o077, 0, "{} is readable by others", f.display());
    }
}

/// Another local user (uid 65534) may emit and ask for status, but not
/// flush, show, purge or change consent (`telemetryctl consent` says so).
/// Needs root to become that user.
#[test]
fn another_user_may_emit_but_not_read_or_change_stored_data() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: switching to another uid needs root (CI runs as root)");
        return;
    }
    let env = env_with(&[]);
    let daemon = env.start();
    served(&daemon);
    // Stand in for the machine-wide socket (0666 here, 0660 + group there):
    // the other user can reach it, and the daemon must decide.
    for dir in [env.root(), daemon.socket.parent().unwrap()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(
        env.root().join("consent"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    // Binaries where that user can run them.
    let bins = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bins.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["telemetryctl", "telemetry-emit"] {
        std::fs::copy(bin(name), bins.path().join(name)).unwrap();
    }
    let as_nobody = |name: &str, args: &[&str]| {
        let mut cmd = std::process::Command::new(bins.path().join(name));
        cmd.args(args).envs(env.envs()).uid(65534).gid(65534);
        cmd.output().unwrap()
    };
    let out = as_nobody(
        "telemetry-emit",
        &[
            "--product",
            "cfdev",
            "--strict",
            "--timeout-ms",
            "5000",
            "bosh",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_nobody("telemetryctl", &["status"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The destinations' check is the daemon's user's: for another user
    // doctor says it was not made (a warning), not that it failed.
    let out = as_nobody("telemetryctl", &["doctor"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("WARN destinations: not checked") && !said.contains("FAIL destinations"),
        "{said}"
    );
    // A refusal is counted for everyone, but its event and message (a
    // client's choice of names, perhaps another account's) only for the
    // daemon's user.
    let out = as_nobody(
        "telemetry-emit",
        &["--product", "cfdev", "--timeout-ms", "5000", "app_creatd"],
    );
    assert_eq!(out.status.code(), Some(0));
    let latest = |out: std::process::Output| -> (u64, String) {
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let r = json["refusals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["code"] == "not_in_catalogue")
            .unwrap_or_else(|| panic!("{json}"))
            .clone();
        (
            r["count"].as_u64().unwrap(),
            r["last_message"].as_str().unwrap().to_string(),
        )
    };
    let (count, message) = latest(as_nobody("telemetryctl", &["status", "--json"]));
    assert_eq!((count, message.as_str()), (1, ""));
    let (count, message) = latest(env.run("telemetryctl", &["status", "--json"]));
    assert_eq!(count, 1);
    assert!(message.contains("app_creatd"), "{message}");
    for args in [&["show"][..], &["purge"][..], &["flush"][..], &["stop"][..]] {
        let out = as_nobody("telemetryctl", args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("permission_denied") && err.contains("uid 65534"),
            "{args:?}: {err}"
        );
    }
    // Their own consent file is theirs to write, but this daemon does not
    // take its changes: said so (exit 0: their file did change), not
    // "applies when it starts".
    let theirs = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(theirs.path(), Some(65534), Some(65534)).unwrap();
    // As that user, with their own consent file.
    let as_them = |name: &str, args: &[&str]| {
        let mut cmd = std::process::Command::new(bins.path().join(name));
        cmd.args(args)
            .envs(env.envs())
            .env("TELEMETRY_CONSENT_FILE", theirs.path().join("consent"))
            .uid(65534)
            .gid(65534);
        cmd.output().unwrap()
    };
    let out = as_them("telemetryctl", &["consent", "cfdev", "off"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("follows its owner's consent file, not yours") && !err.contains("yet"),
        "{err}"
    );
    // Nothing was purged or flushed on their say-so.
    assert_eq!(daemon.client().status(T).unwrap().pending_events, 2);
    // The owner turns it off while this user's own file says on: the
    // refusal names whose decision it is, and advises no `consent on`
    // (theirs is on already, and this daemon does not read it).
    std::fs::write(theirs.path().join("consent"), "cfdev on\n").unwrap();
    std::fs::write(env.root().join("consent"), "cfdev off\n").unwrap();
    let out = as_them(
        "telemetry-emit",
        &[
            "--product",
            "cfdev",
            "--strict",
            "--timeout-ms",
            "5000",
            "bosh",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("follows its owner's decision")
            && err.contains(&env.root().join("consent").display().to_string())
            && !err.contains("consent cfdev on"),
        "{err}"
    );
    // The owner is told how to turn it back on.
    match daemon
        .client()
        .emit(vec![event("cfdev", "stop", "1.0", BTreeMap::new())], T)
    {
        Err(telemetry_client::ClientError::Refused {
            code: ErrorCode::ConsentOff,
            message,
        }) => assert!(
            message.contains("telemetryctl consent cfdev on") && !message.contains("owner's"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    // A socket not open to them: told so, not "is it running?" (the
    // machine-wide socket's group is named in a unit test of the client).
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = as_nobody("telemetryctl", &["status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not open to this user") && !err.contains("is it running"),
        "{err}"
    );
}

/// A name as long as a frame allows, or an id that would carry the
/// machine's network address, gets a short `invalid` reply on a connection
/// that goes on serving: an error quoting the whole name would not fit in
/// a reply frame, and the client would see its connection closed.
#[test]
fn a_huge_name_or_a_time_and_mac_id_gets_a_short_error_and_the_connection_goes_on() {
    let env = env_with(&[]);
    std::fs::write(env.root().join("consent"), "cfdev on\n").unwrap();
    let d = env.start();
    let mut client = d.client();
    let huge = event("cfdev", &"a".repeat(60_000), "1.0", BTreeMap::new());
    let mut v1 = event("cfdev", "stop", "1.0", BTreeMap::new());
    v1.id = "c232ab00-9414-11ec-b3c8-9f68deced846".parse().unwrap();
    for (bad, what) in [(huge, "is not a valid name"), (v1, "not a random UUID")] {
        match client.emit(vec![bad], T) {
            Err(telemetry_client::ClientError::Refused {
                code: ErrorCode::Invalid,
                message,
            }) => assert!(message.len() < 1_000 && message.contains(what), "{message}"),
            other => panic!("{other:?}"),
        }
        let ok = event("cfdev", "stop", "1.0", BTreeMap::new());
        assert_eq!(client.emit(vec![ok], T).unwrap().accepted, 1);
    }
}

/// What sits in the spool file's place decides nothing about the daemon's
/// start: a FIFO (no writer), a link to `/dev/zero` and an `.ingesting`
/// file of that kind are set aside, not read for ever or until memory
/// runs out; the daemon serves, and a later start is not held up either.
#[test]
fn a_fifo_or_an_endless_link_as_the_spool_does_not_stop_the_daemon() {
    for (kind, ingesting) in [("fifo", false), ("zero", false), ("zero", true)] {
        let env = env_with(&[]);
        std::fs::write(env.root().join("consent"), "cfdev on\n").unwrap();
        let spool = env.spool_file();
        std::fs::create_dir_all(spool.parent().unwrap()).unwrap();
        let target = if ingesting {
            spool.with_extension("spool.ingesting")
        } else {
            spool.clone()
        };
        if kind == "fifo" {
            let made = std::process::Command::new("mkfifo")
                .arg(&target)
                .status()
                .unwrap();
            assert!(made.success());
        } else {
            std::os::unix::fs::symlink("/dev/zero", &target).unwrap();
        }
        let t = Instant::now();
        let d = env.start();
        served(&d);
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{kind}: {:?}",
            t.elapsed()
        );
        wait_for("the spool set aside", T, || {
            (target.symlink_metadata().is_err()).then_some(())
        });
        let aside: Vec<String> = std::fs::read_dir(spool.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".damaged-"))
            .collect();
        assert_eq!(aside.len(), 1, "{kind}: {aside:?}");
        assert!(d.log().contains("set aside"), "{}", d.log());
    }
}

/// Where `XDG_RUNTIME_DIR` is unset the socket is under
/// `/tmp/telemetry-<uid>`: another user who made that directory first and
/// listens there, or who linked it to a directory of theirs, must not
/// receive events (the client checks who serves before it sends). Root's
/// socket (a service manager's) is used. Needs root to listen as another
/// user.
#[test]
fn a_socket_another_user_serves_is_refused_roots_is_used() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: listening as another uid needs root (CI runs as root)");
        return;
    }
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    // /tmp (1777) and /home (root's, 0755) stand-ins, and the other user's
    // directories in each.
    let tmp = tempfile::tempdir().unwrap();
    mode(tmp.path(), 0o1777);
    let home = tempfile::tempdir().unwrap();
    mode(home.path(), 0o755);
    let squat = tmp.path().join("telemetry-0");
    let theirs = home.path().join("them");
    for d in [&squat, &theirs] {
        std::fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(65534), Some(65534)).unwrap();
        mode(d, 0o755);
    }
    let linked = tmp.path().join("telemetry-1");
    std::os::unix::fs::symlink(&theirs, &linked).unwrap();
    // A Python other users can run (a pyenv shim under /root is not).
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| !p.starts_with('/') || std::path::Path::new(p).exists())
        .unwrap();
    for (dir, via) in [(&squat, &squat), (&theirs, &linked)] {
        let sock = dir.join("telemetryd.sock");
        // Bound under another name and renamed once listening: the path
        // appears only when a connect can succeed.
        let mut child = std::process::Command::new(python)
            .args([
                "-c",
                "import os,socket,sys,time\ns=socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1]+'.new')\ns.listen(16)\nos.rename(sys.argv[1]+'.new',sys.argv[1])\ntime.sleep(30)",
            ])
            .arg(&sock)
            .uid(65534)
            .gid(65534)
            .spawn()
            .expect("python3");
        wait_for("the other user's listener", Duration::from_secs(10), || {
            sock.exists().then_some(())
        });
        let refused = Client::connect(via.join("telemetryd.sock"))
            .err()
            .map(|e| e.to_string());
        child.kill().unwrap();
        child.wait().unwrap();
        let refused = refused.expect("connected to another user's socket");
        assert!(
            refused.contains("served by uid 65534") && refused.contains("not telemetryd's"),
            "{refused}"
        );
        assert!(!refused.contains("is it running"), "{refused}");
    }
    // Root's socket in the same place: used.
    let sock = squat.join("root.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    Client::connect(&sock).expect("root's socket");
}

/// Without HOME the default state directory is `$TMPDIR/telemetry-UID/state`.
/// Another user who made it first (here: left open to every user, as they
/// would) must not get to run a program as this user (a planted record of
/// a "newer" telemetryd to hand over to), opt them in (a planted consent
/// file), or read their spooled events.
#[test]
fn a_state_directory_another_user_made_first_is_not_used() {
    let tmp = tempfile::tempdir().unwrap();
    let uid = unsafe { libc::getuid() };
    let theirs = tmp.path().join(format!("telemetry-{uid}"));
    let state = theirs.join("state");
    let run_daemon = || {
        std::process::Command::new(telemetry_tests::bin("telemetryd"))
            .arg("--autostarted")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("TMPDIR", tmp.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    // Only the directory above made by them: the state directory is not
    // made in it either.
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = run_daemon();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("refusing the state directory"),
        "{}",
        text(&out)
    );
    assert!(!state.exists(), "made in their directory");
    std::fs::create_dir_all(&state).unwrap();
    for d in [&theirs, &state] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let ran = tmp.path().join("ran");
    let evil = tmp.path().join("evil.sh");
    std::fs::write(&evil, format!("#!/bin/sh\ntouch {}\n", ran.display())).unwrap();
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        state.join("telemetryd.current"),
        format!("99 9 {}\n", evil.display()),
    )
    .unwrap();
    std::fs::write(state.join("consent"), "cfdev on 2026-12-01T00:00:00Z\n").unwrap();
    let run_with = |bin: &str, args: &[&str], env: &[(&str, &std::path::Path)]| {
        std::process::Command::new(telemetry_tests::bin(bin))
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("TMPDIR", tmp.path())
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let run = |bin: &str, args: &[&str]| run_with(bin, args, &[]);
    let out = run("telemetryd", &["--autostarted"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("refusing the state directory")
            && text(&out).contains("writable by every user"),
        "{}",
        text(&out)
    );
    assert!(!ran.exists(), "the planted program ran");
    // The planted `on` is not believed: off, and the shim says why.
    let out = run(
        "telemetry-emit",
        &["--strict", "--product", "cfdev", "stop"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("not believed"), "{}", text(&out));
    // Nothing is written there: no decision, no spooled event.
    let out = run("telemetryctl", &["consent", "cfdev", "on"]);
    assert!(!out.status.success(), "{}", text(&out));
    // (Root, as CI runs, is refused by root's own rule first.)
    assert!(
        text(&out).contains("writable by every user")
            || text(&out).contains("may be written by other users"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(state.join("consent")).unwrap(),
        "cfdev on 2026-12-01T00:00:00Z\n"
    );
    assert!(!ran.exists(), "the planted program ran");
    // With consent from a file of the user's own, the event is not spooled
    // where the other user could read it; nor when only the directory above
    // the state directory is open (its owner could swap the state directory
    // for one of theirs).
    let own = tmp.path().join("own-consent");
    std::fs::write(&own, "cfdev on 2026-12-01T00:00:00Z\n").unwrap();
    for state_mode in [0o777, 0o700] {
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(state_mode)).unwrap();
        let out = run_with(
            "telemetry-emit",
            &["--strict", "--product", "cfdev", "stop"],
            &[("TELEMETRY_CONSENT_FILE", &own)],
        );
        assert!(!out.status.success(), "{state_mode:o}: {}", text(&out));
        assert!(
            text(&out).contains("writable by every user"),
            "{state_mode:o}: {}",
            text(&out)
        );
        assert!(!ran.exists(), "the planted program ran");
        let spooled: Vec<_> = std::fs::read_dir(state.join("spool"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("events"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(spooled.is_empty(), "{state_mode:o}: {spooled:?}");
    }

    // A user other than root records no decision there either (root has a
    // stricter rule of its own, met above).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED the other user's part: switching uid needs root (CI runs as root)");
        return;
    }
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let nobody = tmp.path().join("telemetry-65534");
    std::fs::create_dir_all(nobody.join("state")).unwrap();
    for d in [nobody.clone(), nobody.join("state")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let ctl = tmp.path().join("telemetryctl");
    std::fs::copy(bin("telemetryctl"), &ctl).unwrap();
    let out = std::process::Command::new(&ctl)
        .args(["consent", "cfdev", "on"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("TMPDIR", tmp.path())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("writable by every user"),
        "{}",
        text(&out)
    );
    assert!(!nobody.join("state/consent").exists());
}
