//! Issue #13, items 7 and 8: a shim that finds no daemon and no service
//! manager starts one (detached, rate-limited, never for a product that is
//! off, within its budget), the idle exit loses nothing, and daemon builds
//! of different protocol and schema versions share one state dir.
//!
//! The daemons here are started by the shim, detached: they are not our
//! children, so [`Started`] finds them by the pid they log and stops them
//! on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use telemetry_tests::*;

/// Autostart on (the harness turns it off for every other suite).
const ON: (&str, &str) = ("TELEMETRY_AUTOSTART", "1");

/// The state dir's log of autostarted daemons.
fn log_of(env: &DaemonEnv) -> PathBuf {
    env.state.join("telemetryd.log")
}

fn log_text(env: &DaemonEnv) -> String {
    std::fs::read_to_string(log_of(env)).unwrap_or_default()
}

/// Pids of the daemons that started serving, from their log lines.
fn serving_pids(env: &DaemonEnv) -> Vec<i32> {
    log_text(env)
        .lines()
        .filter(|l| l.contains("telemetryd listening"))
        .filter_map(|l| {
            let at = l.find(" pid=")? + 5;
            let digits: String = l[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// Alive and not a zombie (the container's init may not reap).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_string()))
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// A daemon some shim started; SIGTERM on drop.
struct Started(i32);

impl Started {
    /// Wait until the `n`th daemon of this env serves.
    fn nth(env: &DaemonEnv, n: usize) -> Started {
        let pid = wait_for(
            "an autostarted telemetryd to serve",
            Duration::from_secs(30),
            || serving_pids(env).get(n - 1).copied(),
        );
        Started(pid)
    }

    /// SIGTERM and wait until it is gone.
    fn stop(self) {
        self.term_and_wait();
    }

    fn term_and_wait(&self) {
        // SAFETY: kill(2) on a pid this test's shim started.
        unsafe { libc::kill(self.0, libc::SIGTERM) };
        wait_for("telemetryd to exit", Duration::from_secs(30), || {
            (!alive(self.0)).then_some(())
        });
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if alive(self.0) {
            self.term_and_wait();
        }
    }
}

/// A command for the binary at `path` (perhaps another build's) with the
/// environment of `env`.
fn command_at(env: &DaemonEnv, path: &Path) -> Command {
    let template = env.command("telemetry-emit");
    let mut cmd = Command::new(path);
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd
}

/// Run `shim` (with autostart on, `--strict`) as if the rate limit's
/// interval had passed: each call may start a daemon.
fn shim_with(env: &DaemonEnv, shim: &Path, args: &[&str]) -> Output {
    let _ = std::fs::remove_file(env.state.join("autostart.stamp"));
    command_at(env, shim)
        .env(ON.0, ON.1)
        .env("TELEMETRY_EMIT_TIMEOUT_MS", "5000")
        .args(["--product", "cfdev", "--strict"])
        .args(args)
        .output()
        .expect("run telemetry-emit")
}

/// Pending events as `telemetryctl show --ndjson` of `ctl` prints them.
fn pending(env: &DaemonEnv, ctl: &Path) -> Option<usize> {
    let out = command_at(env, ctl)
        .args(["show", "--ndjson"])
        .output()
        .ok()?;
    out.status.success().then(|| {
        text(&out)
            .lines()
            .filter(|l| l.contains("\"event\""))
            .count()
    })
}

/// Events uploaded to the outbox (an idle exit uploads what it may).
fn in_outbox(env: &DaemonEnv) -> usize {
    files_under(&env.state.join("outbox"))
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".ndjson.zst"))
        .map(|p| {
            let body = zstd::decode_all(&std::fs::read(p).unwrap()[..]).unwrap();
            body.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count()
        })
        .sum()
}

/// Wait until `n` events are stored or uploaded (a daemon stopped with
/// SIGTERM uploads what it may to the outbox first).
fn wait_pending(env: &DaemonEnv, ctl: &Path, n: usize) {
    wait_for(
        &format!("{n} events stored or uploaded"),
        Duration::from_secs(30),
        || (pending(env, ctl)? + in_outbox(env) == n).then_some(()),
    );
}

#[test]
fn a_shim_with_no_daemon_starts_one_within_its_budget_and_the_event_is_delivered() {
    binaries();
    let env = DaemonEnv::new(Destination::Outbox);
    let budget_ms = 1000;
    let t = Instant::now();
    let out = env.shim(
        &[
            ON,
            ("TELEMETRY_EMIT_TIMEOUT_MS", &budget_ms.to_string()),
            // Must not reach the daemon.
            ("AWS_SECRET_ACCESS_KEY", "host-secret"),
            ("GITHUB_TOKEN", "host-token"),
        ],
        &["--strict", "app_created", "buildpack=go"],
    );
    let took = t.elapsed();
    let msg = text(&out);
    // Spooled (not acknowledged: nothing served yet) and a daemon started,
    // all before the budget's timer.
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains("spooled to") && msg.contains("started "),
        "{msg}"
    );
    // It started one: not also "is it running? start it".
    assert!(!msg.contains("is it running"), "{msg}");
    assert!(
        // The margin is for starting the process on a loaded machine.
        took < Duration::from_millis(budget_ms + 500),
        "the shim took {took:?}, budget {budget_ms} ms"
    );
    let daemon = Started::nth(&env, 1);
    wait_pending(&env, &bin("telemetryctl"), 1);
    // Detached: its own session, not our child, credentials scrubbed.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", daemon.0)).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let (ppid, session): (u32, i32) = (fields[1].parse().unwrap(), fields[3].parse().unwrap());
    assert_ne!(
        ppid,
        std::process::id(),
        "the daemon is not the test's child"
    );
    assert_ne!(
        session, daemon.0,
        "not a session leader (no controlling tty)"
    );
    // SAFETY: getsid(0) has no preconditions.
    assert_ne!(session, unsafe { libc::getsid(0) }, "its own session");
    let environ = std::fs::read(format!("/proc/{}/environ", daemon.0)).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(!environ.contains("host-secret") && !environ.contains("host-token"));
    assert!(environ.contains("TELEMETRY_STATE_DIR="), "ours are kept");
    assert!(
        environ.contains("AWS_SHARED_CREDENTIALS_FILE=/dev/null")
            && environ.contains("AWS_EC2_METADATA_DISABLED=true"),
        "nor the user's AWS files or instance role"
    );
    assert!(log_text(&env).contains("autostarted=true"));
    // With the daemon up, the next shim is acknowledged and starts nothing.
    let out = env.shim(&[ON], &["--strict", "app_created", "buildpack=go"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_pending(&env, &bin("telemetryctl"), 2);
    assert_eq!(serving_pids(&env).len(), 1);
    daemon.stop();
}

/// A host that ignores SIGCHLD hands that on to the shim: the kernel reaps
/// the intermediate process itself, and the start is still reported as made
/// (waiting for it failed with ECHILD, and `--strict` said it could not
/// start telemetryd, though it had).
/// A FIFO in the autostart log's (or stamp's) place is refused at once:
/// opening one for writing with no reader would block the host that starts
/// the daemon (`telemetryctl start` has no timer; a library host none but
/// its budget).
#[test]
fn a_fifo_as_the_autostart_log_or_stamp_fails_at_once() {
    binaries();
    for name in ["telemetryd.log", "autostart.stamp"] {
        let env = DaemonEnv::new(Destination::Outbox);
        std::fs::create_dir_all(&env.state).unwrap();
        let fifo = env.state.join(name);
        let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let mut child = env
            .command("telemetryctl")
            .env(ON.0, ON.1)
            .args(["start", "--timeout", "2s"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if child.try_wait().unwrap().is_none() {
            let _ = child.kill();
            panic!("telemetryctl start hung on a FIFO as {name}");
        }
        let out = child.wait_with_output().unwrap();
        let msg = text(&out);
        assert_ne!(out.status.code(), Some(0), "{name}: {msg}");
        assert!(
            msg.contains(name) && msg.contains("not a plain file"),
            "{name}: {msg}"
        );
        // Nothing started: no daemon answers (the log cannot say: it is
        // the FIFO).
        std::fs::remove_file(&fifo).unwrap();
        assert!(
            telemetry_client::Client::connect(&env.socket).is_err(),
            "nothing started"
        );
    }
}

/// `telemetryctl stop` then `start` at once starts a daemon: the rate limit
/// of autostarts (one per 10 s, so fifty shims start one) is for clients,
/// not for a person asking. It waited out its timeout and said a daemon it
/// never started did not answer.
#[test]
fn stop_then_start_at_once_starts_the_daemon() {
    binaries();
    let env = DaemonEnv::new(Destination::Outbox);
    let start = || {
        env.command("telemetryctl")
            .env(ON.0, ON.1)
            .args(["start", "--timeout", "8s"])
            .output()
            .unwrap()
    };
    let out = start();
    assert!(out.status.success(), "{}", text(&out));
    let first = Started::nth(&env, 1);
    let out = env.run("telemetryctl", &["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    first.stop();
    let t = Instant::now();
    let out = start();
    assert!(out.status.success(), "{}", text(&out));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let _second = Started::nth(&env, 2);
}

/// `start` is not held off by a start moments ago, so the daemon it starts
/// may find the state dir's lock held by one still coming up; after 3 s
/// that one steps aside ("did not let go"), which is no failure: `start`
/// keeps waiting, and the first one answers.
#[test]
fn start_waits_for_a_daemon_still_coming_up_that_holds_the_lock() {
    binaries();
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::create_dir_all(&env.state).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(env.state.join("lock"))
        .unwrap();
    lock.lock().unwrap();
    let start = env
        .command("telemetryctl")
        .env(ON.0, ON.1)
        .args(["start", "--timeout", "20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "the started daemon to step aside",
        Duration::from_secs(15),
        || log_text(&env).contains("did not let go").then_some(()),
    );
    // The one coming up comes up.
    drop(lock);
    let daemon = env.start();
    let out = start.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    drop(daemon);
}

#[test]
fn a_host_that_ignores_sigchld_still_starts_the_daemon_and_says_so() {
    use std::os::unix::process::CommandExt;
    binaries();
    let env = DaemonEnv::new(Destination::Outbox);
    let mut cmd = env.command("telemetry-emit");
    cmd.env(ON.0, ON.1)
        .env("TELEMETRY_EMIT_TIMEOUT_MS", "2000")
        .args(["--product", "cfdev", "--strict", "app_created"]);
    // SAFETY: signal() is async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGCHLD, libc::SIG_IGN);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains("spooled to") && msg.contains("started "),
        "{msg}"
    );
    let daemon = Started::nth(&env, 1);
    wait_pending(&env, &bin("telemetryctl"), 1);
    daemon.stop();
}

#[test]
fn with_the_product_off_nothing_starts() {
    binaries();
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::write(env.root().join("consent"), "cfdev off\n").unwrap();
    let out = env.shim(&[ON], &["--strict", "app_created", "buildpack=go"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    // Give a daemon that would have been started time to show up.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!env.state.exists(), "nothing written to the state dir");
    assert!(!env.socket.exists(), "no daemon bound the socket");
}

#[test]
fn a_captured_shim_leaves_no_daemon_holding_the_callers_pipes() {
    binaries();
    // As `$(cli)` or a CI step does: stdout and stderr are pipes, and the
    // caller reads them to EOF. The daemon keeps running, but must not
    // hold them.
    let env = DaemonEnv::new(Destination::Outbox);
    let t = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut cmd = env.command("telemetry-emit");
    // A budget long enough for the spool and the start on a loaded machine.
    cmd.env(ON.0, ON.1)
        .env("TELEMETRY_EMIT_TIMEOUT_MS", "5000")
        .args(["--product", "cfdev", "app_created", "buildpack=go"])
        .stdin(Stdio::null());
    std::thread::spawn(move || {
        let _ = tx.send(cmd.output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the caller's pipes reached EOF")
        .unwrap();
    assert!(out.status.success());
    let daemon = Started::nth(&env, 1);
    assert!(
        t.elapsed() < Duration::from_secs(10) && alive(daemon.0),
        "the daemon runs on after the caller's pipes closed"
    );
    wait_pending(&env, &bin("telemetryctl"), 1);
}

/// A client that is not ours (the Go and Node SDKs) may let descriptors
/// through to the daemon it starts, beyond stdio: the daemon closes them
/// itself, or the reader of such a pipe would wait for as long as it runs.
#[test]
fn an_autostarted_daemon_closes_what_it_inherited_beyond_stdio() {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd};
    binaries();
    let env = DaemonEnv::new(Destination::Outbox);
    let mut fds = [0; 2];
    // SAFETY: pipe fills the array it is given; the write end is made
    // inheritable on purpose, as a careless client would leave it.
    let (mut reader, writer) = unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        libc::fcntl(fds[0], libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(fds[1], libc::F_SETFD, 0);
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    let mut daemon = env
        .command("telemetryd")
        .arg("--autostarted")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(writer.as_raw_fd() > 2);
    drop(writer);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = tx.send(reader.read_to_end(&mut rest).map(|_| rest.len()));
    });
    let eof = rx.recv_timeout(Duration::from_secs(10));
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(
        matches!(eof, Ok(Ok(0))),
        "the daemon still held the inherited pipe after 10 s: {eof:?}"
    );
}

/// An autostarted daemon leaves the directory the CLI was run from, which
/// it would otherwise hold for its whole life (a folder Windows then cannot
/// delete, a USB stick Unix cannot unmount), and the relative paths it was
/// given keep meaning what they meant there, also at a reload.
#[test]
fn an_autostarted_daemon_leaves_the_directory_it_was_started_in() {
    binaries();
    let env = DaemonEnv::new(Destination::Outbox);
    let root = env.state.parent().unwrap().to_path_buf();
    let work = root.join("work");
    std::fs::create_dir(&work).unwrap();
    let _ = std::fs::remove_file(env.state.join("autostart.stamp"));
    let out = command_at(&env, &bin("telemetry-emit"))
        .current_dir(&work)
        .env(ON.0, ON.1)
        .env("TELEMETRY_EMIT_TIMEOUT_MS", "5000")
        .env("TELEMETRY_CONFIG", "../config.toml")
        .env("TELEMETRY_OUTBOX_DIR", "outbox-here")
        // The socket env.socket names, relative: bound before the move (it
        // names the spool the shim kept), removed at exit after it.
        .env("TELEMETRY_SOCKET", "../run/telemetryd.sock")
        .args(["--product", "cfdev", "app_created", "buildpack=go"])
        .output()
        .expect("run telemetry-emit");
    assert!(out.status.success(), "{}", text(&out));
    let daemon = Started::nth(&env, 1);
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/cwd", daemon.0)).unwrap(),
        Path::new("/"),
        "the daemon still holds the directory it was started in"
    );
    wait_pending(&env, &bin("telemetryctl"), 1);
    // A reload reads the config file named relative to where it started.
    // SAFETY: kill(2) on the daemon this test's shim started.
    unsafe { libc::kill(daemon.0, libc::SIGHUP) };
    wait_for("the reload", Duration::from_secs(30), || {
        let log = log_text(&env);
        (log.contains("reload:") || log.contains("reloaded")).then_some(log)
    });
    let log = log_text(&env);
    assert!(
        log.contains("reloaded the configuration") && !log.contains("only after a restart"),
        "{log}"
    );
    daemon.stop();
    assert!(!env.socket.exists(), "the socket it bound is removed");
    let uploaded: Vec<PathBuf> = files_under(&work.join("outbox-here"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".ndjson.zst"))
        .collect();
    assert_eq!(
        uploaded.len(),
        1,
        "the relative outbox dir, taken from where it started"
    );
}

#[test]
fn an_autostarted_daemon_trusts_the_cas_a_relative_ssl_cert_file_names() {
    // The TLS library reads SSL_CERT_FILE where the daemon is when it
    // builds a client: after it left the directory the CLI ran in. An
    // autostarted daemon has no keys, so the vendor's bucket takes
    // unsigned puts (as the manifest's `auth = "anonymous"` expects).
    binaries();
    let s3 = S3Server::start_with(S3Policy {
        anonymous_put: Some(("vendor-in".into(), "raw/".into())),
    });
    s3.create_bucket("vendor-in");
    let front = telemetry_tests::tls::TlsFront::start(&s3.endpoint);
    let env = DaemonEnv::new(Destination::Outbox);
    let catalog = env.root().join("catalog");
    std::fs::create_dir_all(&catalog).unwrap();
    std::fs::write(
        catalog.join("toola.toml"),
        format!(
            "product = \"toola\"\n[events.ran]\n\n[upload]\nauth = \"anonymous\"\nbucket = \"vendor-in\"\nprefix = \"raw\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n",
            front.endpoint
        ),
    )
    .unwrap();
    std::fs::write(env.root().join("consent"), "toola on\n").unwrap();
    let work = env.root().join("work");
    std::fs::create_dir_all(work.join("certs")).unwrap();
    std::fs::copy(telemetry_tests::tls::ca_bundle(), work.join("certs/ca.pem")).unwrap();
    let _ = std::fs::remove_file(env.state.join("autostart.stamp"));
    let out = command_at(&env, &bin("telemetry-emit"))
        .current_dir(&work)
        .env(ON.0, ON.1)
        .env("TELEMETRY_EMIT_TIMEOUT_MS", "5000")
        .env("SSL_CERT_FILE", "certs/ca.pem")
        .args(["--product", "toola", "ran"])
        .output()
        .expect("run telemetry-emit");
    assert!(out.status.success(), "{}", text(&out));
    let daemon = Started::nth(&env, 1);
    wait_pending(&env, &bin("telemetryctl"), 1);
    let out = env.run("telemetryctl", &["flush"]);
    assert!(
        out.status.success(),
        "flush: {}\n{}",
        text(&out),
        log_text(&env)
    );
    assert_eq!(s3.objects_in("vendor-in").len(), 1);
    assert!(front.handshakes() >= 1);
    daemon.stop();
}

#[test]
fn concurrent_shims_start_one_daemon_and_every_event_is_delivered() {
    binaries();
    let mut env = DaemonEnv::new(Destination::Outbox);
    env.extra
        .push(("TELEMETRY_SPOOL_CHECK_INTERVAL".into(), "1s".into()));
    let n = 12;
    let shims: Vec<_> = (0..n)
        .map(|_| {
            env.command("telemetry-emit")
                .env(ON.0, ON.1)
                .env("TELEMETRY_EMIT_TIMEOUT_MS", "5000")
                .args(["--product", "cfdev", "app_created", "buildpack=go"])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut s in shims {
        assert!(s.wait().unwrap().success());
    }
    let daemon = Started::nth(&env, 1);
    // Events spooled after the daemon's first look are taken in at its next
    // spool check, which a connection triggers.
    wait_pending(&env, &bin("telemetryctl"), n);
    assert_eq!(serving_pids(&env), vec![daemon.0], "one daemon started");
}

#[test]
fn idle_exit_without_a_service_manager_loses_no_event_emitted_around_it() {
    binaries();
    let mut env = DaemonEnv::new(Destination::Outbox);
    env.extra.extend([
        ("TELEMETRY_IDLE_EXIT".to_string(), "1s".to_string()),
        ("TELEMETRY_SPOOL_CHECK_INTERVAL".into(), "1s".into()),
    ]);
    let shim = bin("telemetry-emit");
    let mut sent = 0;
    // Emits spaced around the idle exit: some find the daemon serving, some
    // exiting, some gone. Each is acknowledged or spooled, and a daemon the
    // next emit starts takes in what was spooled.
    for i in 0..10u64 {
        let out = shim_with(&env, &shim, &["app_created", "buildpack=go"]);
        assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
        sent += 1;
        std::thread::sleep(Duration::from_millis(800 + (i * 97) % 500));
    }
    // The idle exit happened: more than one daemon served.
    let pids = serving_pids(&env);
    assert!(
        pids.len() >= 2,
        "no idle exit seen; log:\n{}",
        log_text(&env)
    );
    assert!(log_text(&env).contains("idle with nothing pending"));
    // Whatever is still spooled is taken in by the next daemon an emit
    // starts (counted too); an idle exit uploads to the outbox first.
    let ctl = bin("telemetryctl");
    wait_for("every event delivered", Duration::from_secs(60), || {
        let stored = pending(&env, &ctl).unwrap_or(0) + in_outbox(&env);
        if stored == sent {
            return Some(());
        }
        if !env.socket.exists() {
            let out = shim_with(&env, &shim, &["app_created", "buildpack=go"]);
            assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
        None
    });
    for pid in serving_pids(&env) {
        drop(Started(pid));
    }
}

/// The binaries of a build one protocol and one schema version ahead
/// (the `future-version` feature). Built in the workspace's own target
/// dir, so only the four workspace crates compile again (a separate target
/// dir would rebuild every dependency: minutes in CI), copied to
/// `future-bin/`, then the normal build is restored. While that happens
/// `target/debug` briefly holds the future binaries, so every test in this
/// file calls [`binaries`] before it runs anything (cargo runs test
/// executables one at a time, so no other suite is running).
fn future_bin(name: &str) -> PathBuf {
    binaries().join(name)
}

/// Build the future binaries once; every test waits for it.
fn binaries() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let build = |future: bool| {
            let mut cmd = Command::new(&cargo);
            cmd.current_dir(workspace).args([
                "build",
                "--bins",
                "-p",
                "telemetryd",
                "-p",
                "telemetry-client",
            ]);
            if future {
                cmd.args(["--features", "telemetryd/future-version"]);
            }
            let status = cmd.status().expect("run cargo");
            assert!(status.success(), "cargo build (future: {future}) failed");
        };
        let t = Instant::now();
        let out = bin_dir().parent().unwrap().join("future-bin");
        std::fs::create_dir_all(&out).unwrap();
        build(true);
        for name in ["telemetryd", "telemetry-emit", "telemetryctl"] {
            let dst = out.join(name);
            let _ = std::fs::remove_file(&dst);
            std::fs::copy(bin_dir().join(name), &dst).unwrap();
        }
        build(false);
        eprintln!("future-version build took {:?}", t.elapsed());
        out
    })
}

/// `SCHEMA PROTOCOL PATH` of the binary recorded as the newest.
fn recorded(env: &DaemonEnv) -> String {
    std::fs::read_to_string(env.state.join("telemetryd.current")).unwrap_or_default()
}

#[test]
fn an_older_daemon_hands_over_to_the_newer_binary_or_steps_aside() {
    binaries();
    let env = DaemonEnv::new(Destination::Outbox);
    let (new_shim, new_ctl) = (future_bin("telemetry-emit"), future_bin("telemetryctl"));
    let old_shim = bin("telemetry-emit");
    // A newer release's shim starts its daemon (beside it): the store is
    // migrated one schema version ahead and that binary recorded.
    let out = shim_with(&env, &new_shim, &["app_created", "buildpack=go"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let newer = Started::nth(&env, 1);
    wait_pending(&env, &new_ctl, 1);
    assert!(
        recorded(&env).contains("future-bin/telemetryd"),
        "{}",
        recorded(&env)
    );
    newer.stop();
    // An older vendor's shim (protocol 2) starts its own, older daemon,
    // which finds the newer store and hands over: the newer binary serves
    // and takes in the older shim's spooled event.
    let out = shim_with(&env, &old_shim, &["app_created", "buildpack=go"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let handed = Started::nth(&env, 2);
    assert!(log_text(&env).contains("handing over to the newer binary"));
    wait_pending(&env, &new_ctl, 2);
    // The newer daemon answers the older vendor's tools in their own
    // protocol version: the older shim is acknowledged, and the older
    // telemetryctl reads its status and its JSON lines.
    let out = shim_with(&env, &old_shim, &["app_created", "buildpack=go"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let old_ctl = bin("telemetryctl");
    wait_pending(&env, &old_ctl, 3);
    let out = env.run("telemetryctl", &["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut json = std::process::Command::new("socat")
        .args([
            "-t",
            "5",
            "-",
            &format!("UNIX-CONNECT:{}", env.socket.display()),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("socat (installed by .ci/run)");
    {
        use std::io::Write;
        let mut stdin = json.stdin.take().unwrap();
        stdin.write_all(b"{\"v\":2,\"status\":{}}\n").unwrap();
    }
    let reply = json.wait_with_output().unwrap();
    let reply = String::from_utf8_lossy(&reply.stdout);
    assert!(reply.starts_with("{\"v\":2,\"status\":"), "{reply}");
    handed.stop();
    // Without the newer binary (its record points nowhere), and with a
    // store its builds said only they may serve (as a newer release whose
    // migration older code cannot live with would), the older daemon
    // steps aside: exit 0, one line, the store untouched.
    let line = recorded(&env);
    let (versions, _) = line.rsplit_once(' ').unwrap();
    let gone = format!(
        "{versions} {}\n",
        env.root().join("gone/telemetryd").display()
    );
    std::fs::write(env.state.join("telemetryd.current"), &gone).unwrap();
    store_sql(&env, "UPDATE store_compat SET oldest_reader = 99;");
    let before = std::fs::read(env.state.join("events.sqlite3")).unwrap();
    let old_daemon = env
        .command("telemetryd")
        .arg("--autostarted")
        .output()
        .unwrap();
    assert!(old_daemon.status.success(), "{}", text(&old_daemon));
    assert!(
        text(&old_daemon).contains("stepping aside without touching it")
            && text(&old_daemon).contains("needs a telemetryd of schema 99")
            && text(&old_daemon).contains("is gone"),
        "{}",
        text(&old_daemon)
    );
    assert_eq!(
        std::fs::read(env.state.join("events.sqlite3")).unwrap(),
        before,
        "untouched"
    );
    // `telemetryctl start` says so at once, not after its whole timeout.
    let _ = std::fs::remove_file(env.state.join("autostart.stamp"));
    let t = Instant::now();
    let out = env
        .command("telemetryctl")
        .env(ON.0, ON.1)
        .args(["start", "--timeout", "30s"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("it logged:") && text(&out).contains("is gone"),
        "{}",
        text(&out)
    );
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    // A newer binary starts again and finds everything: the four events.
    // It writes its own word into the store again: older builds from
    // schema 14 on may serve it (its one migration changes nothing).
    let _ = std::fs::remove_file(env.state.join("autostart.stamp"));
    let out = shim_with(&env, &new_shim, &["app_created", "buildpack=go"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let newest = Started::nth(&env, 3);
    wait_pending(&env, &new_ctl, 4);
    newest.stop();
    // Uninstalled again: now the older daemon, started by an older shim,
    // serves the newer store as it is, and the older tools work with it.
    // (The floor is set apart from the builds' own, so a rewrite shows.)
    std::fs::write(env.state.join("telemetryd.current"), &gone).unwrap();
    let newer_schema = store_sql(&env, "UPDATE store_compat SET oldest_reader = 3;");
    let out = shim_with(&env, &old_shim, &["app_created", "buildpack=go"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let _older = Started::nth(&env, 4);
    assert!(
        log_text(&env).contains("serving it as it is"),
        "{}",
        log_text(&env)
    );
    wait_pending(&env, &old_ctl, 5);
    let out = shim_with(&env, &old_shim, &["app_created", "buildpack=go"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    wait_pending(&env, &old_ctl, 6);
    assert_eq!(
        store_sql(&env, ""),
        newer_schema,
        "neither migrated down nor its floor rewritten"
    );
}

/// Run SQL `statements` on the state dir's store (python's sqlite3, as a
/// tool of another build would); its schema version and floor after them.
fn store_sql(env: &DaemonEnv, statements: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit(); print(c.execute('PRAGMA user_version').fetchone()[0], c.execute('SELECT oldest_reader FROM store_compat').fetchone()[0])",
        ])
        .arg(env.state.join("events.sqlite3"))
        .arg(statements)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_newer_shims_events_wait_in_the_spool_while_an_older_daemon_serves() {
    binaries();
    let mut env = DaemonEnv::new(Destination::Outbox);
    env.extra
        .push(("TELEMETRY_SPOOL_CHECK_INTERVAL".into(), "1s".into()));
    let (new_shim, new_ctl) = (future_bin("telemetry-emit"), future_bin("telemetryctl"));
    let old = env.start();
    // The older daemon answers `unsupported_version`: the newer shim spools.
    let out = shim_with(&env, &new_shim, &["app_created", "buildpack=go"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("spooled to"), "{}", text(&out));
    // The newer telemetryctl reads that answer (in the older version) and
    // says what to do.
    let ctl = env.command("telemetryctl");
    let out = Command::new(&new_ctl)
        .envs(ctl.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("unsupported_version")
            && text(&out).contains("older than this client")
            && text(&out).contains("telemetryctl stop"),
        "{}",
        text(&out)
    );
    // The older daemon looks at the spool (a connection after the check
    // interval) and leaves the newer frame there.
    std::thread::sleep(Duration::from_millis(1200));
    wait_for(
        "the older daemon to look at the spool",
        Duration::from_secs(20),
        || {
            let _ = old.client().status(Duration::from_secs(2));
            old.log()
                .contains("left events of a newer protocol in the spool")
                .then_some(())
        },
    );
    assert_eq!(pending(&env, &bin("telemetryctl")), Some(0));
    assert!(std::fs::metadata(env.spool_file()).unwrap().len() > 0);
    old.terminate().unwrap();
    // A newer daemon, started by the newer shim, takes it in.
    let out = shim_with(&env, &new_shim, &["app_created", "buildpack=go"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let _newer = Started::nth(&env, 1);
    wait_pending(&env, &new_ctl, 2);
}
