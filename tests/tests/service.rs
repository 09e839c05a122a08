//! Service managers: the unit files checked by systemd's own tools, socket
//! activation, readiness notification, the idle exit, and the launchd plists.

use std::collections::BTreeMap;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use telemetry_client::{event, Client};
use telemetry_tests::*;

const T: Duration = Duration::from_secs(20);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}
/// Copy units into `dir` with ExecStart pointing at the built binary (the
/// verifier checks that the program exists).
fn stage_units(dir: &Path, scope: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for name in ["telemetryd.socket", "telemetryd.service"] {
        let text = std::fs::read_to_string(repo().join("systemd").join(scope).join(name)).unwrap();
        let text = text.replace(
            "/usr/local/bin/telemetryd",
            &bin("telemetryd").display().to_string(),
        );
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        out.push(path);
    }
    out
}

fn verify(units: &[PathBuf], user: bool) {
    let mut cmd = Command::new("systemd-analyze");
    let runtime = tempfile::tempdir().unwrap();
    if user {
        // Checks user-manager specifiers (%t, %S) and restrictions; the
        // user manager needs a runtime directory.
        cmd.arg("--user").env("XDG_RUNTIME_DIR", runtime.path());
    }
    let out = cmd
        .args(["verify", "--man=no"])
        .args(units)
        .output()
        .expect("systemd-analyze is needed for this test (.ci/run installs it)");
    // Unknown keys and bad values are only warnings: demand silence.
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "systemd-analyze verify:\n{}",
        text(&out)
    );
}

#[test]
fn every_unit_file_passes_systemd_analyze_verify() {
    for scope in ["user", "system"] {
        let dir = tempfile::tempdir().unwrap();
        verify(&stage_units(dir.path(), scope), scope == "user");
    }
    // The check can fail: a misspelt key is caught.
    let dir = tempfile::tempdir().unwrap();
    let units = stage_units(dir.path(), "system");
    let broken = std::fs::read_to_string(&units[1])
        .unwrap()
        .replace("NoNewPrivileges=", "NoNewPrivilegez=");
    std::fs::write(&units[1], broken).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .unwrap();
    assert!(text(&out).contains("NoNewPrivilegez"), "{}", text(&out));
}

#[test]
fn the_system_service_is_well_sandboxed() {
    let dir = tempfile::tempdir().unwrap();
    let units = stage_units(dir.path(), "system");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&units[1])
        .output()
        .unwrap();
    let t = text(&out);
    let line = t
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{t}"));
    let level: f64 = line
        .split(':')
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot read {line:?}"));
    assert!(level <= 2.0, "exposure {level} (0 best, 10 worst):\n{t}");
}

#[test]
fn install_writes_verified_units_for_this_binary_and_uninstall_removes_them() {
    let root = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(bin("telemetryd"))
            .args(args)
            .env("HOME", "/home/someone")
            .env_remove("XDG_CONFIG_HOME")
            .output()
            .unwrap()
    };
    let r = root.path().to_str().unwrap();
    let out = run(&["install", "--user", "--root", r]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("systemctl --user enable --now telemetryd.socket"),
        "{t}"
    );
    let dir = root.path().join("home/someone/.config/systemd/user");
    let service = std::fs::read_to_string(dir.join("telemetryd.service")).unwrap();
    assert!(
        service.contains(&format!("ExecStart={}\n", bin("telemetryd").display())),
        "{service}"
    );
    verify(
        &[
            dir.join("telemetryd.socket"),
            dir.join("telemetryd.service"),
        ],
        true,
    );

    let out = run(&["install", "--system", "--root", r]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(root
        .path()
        .join("etc/systemd/system/telemetryd.socket")
        .exists());
    assert!(root.path().join("etc/sysusers.d/telemetry.conf").exists());

    let out = run(&["uninstall", "--user", "--root", r]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!dir.join("telemetryd.service").exists() && !dir.join("telemetryd.socket").exists());
    let out = run(&["install", "--root", r]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--user or --system is required: {}",
        text(&out)
    );
}

/// `telemetryd install|uninstall ARGS` with a fixed home and no
/// `XDG_CONFIG_HOME`, so the planned paths are known.
fn run_install(args: &[&str]) -> std::process::Output {
    Command::new(bin("telemetryd"))
        .args(args)
        .env("HOME", "/home/someone")
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap()
}

/// `uninstall` offers only what says where the installation is: its
/// help shows no `--bin` (nothing is written), and a `--bin` that
/// `install` would refuse (relative) is accepted and ignored, so a script
/// may undo an install with the same arguments.
#[test]
fn uninstall_takes_where_not_what() {
    let help = text(&run_install(&["uninstall", "--help"]));
    assert!(
        help.contains("--dry-run") && help.contains("--root"),
        "{help}"
    );
    assert!(!help.contains("--bin"), "{help}");
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().to_str().unwrap();
    let out = run_install(&[
        "uninstall",
        "--user",
        "--root",
        r,
        "--bin",
        "relative/telemetryd",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run_install(&[
        "install",
        "--user",
        "--root",
        r,
        "--bin",
        "relative/telemetryd",
    ]);
    assert!(!out.status.success(), "install still refuses it");
}

/// Every directory under `dir` (itself included), recursively.
fn dirs_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        out.push(d);
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn install_dry_run_prints_every_file_with_its_mode_and_contents_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    for scope in ["--user", "--system"] {
        let root = tmp.path().join(&scope[2..]).join("stage");
        let r = root.to_str().unwrap();
        let args = [
            "install",
            scope,
            "--root",
            r,
            "--bin",
            "/usr/bin/telemetryd",
        ];
        let dry = run_install(&[&args[..], &["--dry-run"]].concat());
        assert!(dry.status.success(), "{}", text(&dry));
        assert!(!root.exists(), "a dry run creates nothing: {}", text(&dry));
        let printed = String::from_utf8_lossy(&dry.stdout).into_owned();

        // What the real run writes is exactly what the dry run showed.
        let real = run_install(&args);
        assert!(real.status.success(), "{}", text(&real));
        let files = files_under(&root);
        assert!(files.len() >= 2, "{files:?}");
        for f in &files {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            let contents = std::fs::read_to_string(f).unwrap();
            let shown = format!("would write {} ({mode:o}):\n{contents}", f.display());
            assert!(printed.contains(&shown), "{shown}\nnot in:\n{printed}");
        }
        for d in dirs_under(&root) {
            let shown = format!("would create {} (", d.display());
            assert!(printed.contains(&shown), "{shown}\nnot in:\n{printed}");
        }
    }
}

#[test]
fn install_warns_when_the_service_would_run_a_binary_from_a_cargo_target_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().to_str().unwrap();
    // The binary under test runs from target/debug: `cargo clean` deletes it.
    let built = bin("telemetryd").display().to_string();
    for scope in ["--user", "--system"] {
        let out = run_install(&["install", scope, "--root", r, "--dry-run"]);
        assert!(out.status.success(), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("warning:"), "{err}");
        assert!(err.contains(&built), "names the binary: {err}");
        assert!(err.contains("cargo"), "{err}");
        assert!(err.contains("--bin"), "says how to install another: {err}");
    }
    let err = String::from_utf8_lossy(
        &run_install(&["install", "--user", "--root", r, "--dry-run"]).stderr,
    )
    .into_owned();
    assert!(err.contains("~/.local/bin/telemetryd"), "{err}");

    // A target dir by another name (CARGO_TARGET_DIR) is known by its lock file.
    let out_dir = tmp.path().join("build-output/debug");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(out_dir.join(".cargo-lock"), b"").unwrap();
    let elsewhere = out_dir.join("telemetryd");
    let out = run_install(&[
        "install",
        "--user",
        "--root",
        r,
        "--dry-run",
        "--bin",
        elsewhere.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&elsewhere.display().to_string()), "{err}");

    // From a stable place: no warning, and that path is what the unit runs.
    let out = run_install(&[
        "install",
        "--user",
        "--root",
        r,
        "--bin",
        "/usr/local/bin/telemetryd",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stderr.is_empty(), "{}", text(&out));
    let service = std::fs::read_to_string(
        tmp.path()
            .join("home/someone/.config/systemd/user/telemetryd.service"),
    )
    .unwrap();
    assert!(
        service.contains("ExecStart=/usr/local/bin/telemetryd\n"),
        "{service}"
    );

    // A relative path would not mean the same to the service manager.
    let out = run_install(&["install", "--user", "--root", r, "--bin", "bin/telemetryd"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bin/telemetryd") && err.contains("absolute"),
        "{err}"
    );
}

#[test]
fn install_with_root_tells_a_packager_what_to_do_instead_of_reloading_this_machine() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().to_str().unwrap();
    let args = ["--root", r, "--bin", "/usr/bin/telemetryd"];
    let out = run_install(&[&["install", "--user"][..], &args].concat());
    assert!(out.status.success(), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !t.contains("next, run"),
        "nothing to run on this machine: {t}"
    );
    assert!(t.contains(&format!("staged under {r}")), "{t}");
    assert!(t.contains("on the target system"), "{t}");
    assert!(
        t.contains("systemctl --user enable --now telemetryd.socket"),
        "{t}"
    );

    let out = run_install(&[&["install", "--system"][..], &args].concat());
    assert!(out.status.success(), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!t.contains("next, run"), "{t}");
    assert!(t.contains(&format!("staged under {r}")), "{t}");
    assert!(t.contains("systemd-sysusers"), "{t}");
    // The offline command it suggests for an image really enables the
    // socket inside the staged tree.
    let enable = format!("systemctl --root={r} enable telemetryd.socket");
    assert!(t.contains(&enable), "{t}");
    let out = Command::new("systemctl")
        .args(["--root", r, "enable", "telemetryd.socket"])
        .output()
        .expect("systemctl (.ci/run installs the systemd tools)");
    assert!(out.status.success(), "{}", text(&out));
    // The link is absolute within the tree, so it dangles from here.
    let link = tmp
        .path()
        .join("etc/systemd/system/sockets.target.wants/telemetryd.socket");
    assert!(link.symlink_metadata().is_ok(), "{}", text(&out));

    // Uninstalling from a staged tree does not ask to disable anything here,
    // and takes the enablement link with the unit (`systemctl disable`
    // could not, once the unit file is gone, before systemd v256).
    // A link to another copy of the unit (the package's) is not this
    // install's to take.
    let wants = tmp
        .path()
        .join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    let packaged = wants.join("telemetryd.socket");
    std::os::unix::fs::symlink("/usr/lib/systemd/system/telemetryd.socket", &packaged).unwrap();
    let out = run_install(&[&["uninstall", "--system"][..], &args].concat());
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(!t.contains("also run"), "{t}");
    assert!(
        link.symlink_metadata().is_err(),
        "the enablement link dangles: {t}"
    );
    assert!(t.contains(&format!("remove {}", link.display())), "{t}");
    assert!(
        packaged.symlink_metadata().is_ok(),
        "a link to the package's unit was taken: {t}"
    );
}

#[test]
fn a_socket_path_over_the_platform_limit_fails_clearly_and_creates_nothing() {
    // sockaddr_un.sun_path: 108 bytes on Linux, 104 on macOS, with the NUL.
    let sun_path = if cfg!(target_os = "macos") { 104 } else { 108 };
    let env = DaemonEnv::new(Destination::Outbox);
    let deep = env.root().join("d".repeat(60)).join("e".repeat(60));
    let long = deep.join("telemetryd.sock");
    let len = long.as_os_str().len();
    assert!(len >= sun_path);
    let before = dirs_under(env.root());
    let by_flag = env
        .command("telemetryd")
        .arg("--socket")
        .arg(&long)
        .output()
        .unwrap();
    let by_env = env
        .command("telemetryd")
        .env("TELEMETRY_SOCKET", &long)
        .output()
        .unwrap();
    for (out, origin) in [
        (by_flag, "flag --socket"),
        (by_env, "environment variable TELEMETRY_SOCKET"),
    ] {
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        for want in [
            origin,
            &long.display().to_string(),
            &format!("{len} bytes"),
            &format!("at most {} bytes", sun_path - 1),
            &format!("{sun_path} with the terminating NUL"),
            "TELEMETRY_SOCKET",
        ] {
            assert!(err.contains(want), "{want:?} not in: {err}");
        }
        assert_eq!(
            dirs_under(env.root()),
            before,
            "no directory is left behind"
        );
    }
    // The default path, too long because $XDG_RUNTIME_DIR is: refused
    // before the state directory (or its lock) is created.
    let out = env
        .command("telemetryd")
        .env_remove("TELEMETRY_SOCKET")
        .env("XDG_RUNTIME_DIR", &deep)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("at most {} bytes", sun_path - 1)),
        "{err}"
    );
    assert!(!env.state.exists(), "state dir created: {err}");
    assert_eq!(dirs_under(env.root()), before);

    // The longest path that fits works.
    let mut env = env;
    let room = sun_path - 1 - env.root().join("run/").as_os_str().len();
    env.socket = env.root().join("run").join("s".repeat(room));
    assert_eq!(env.socket.as_os_str().len(), sun_path - 1);
    let daemon = env.start();
    assert_eq!(daemon.client().emit(stop_event(), T).unwrap().accepted, 1);
}

/// Start `telemetryd` the way systemd does: the listening socket as fd 3,
/// `LISTEN_FDS=1`, `LISTEN_PID` = the daemon's own pid (a shell sets it to
/// `$$` and then execs the daemon, keeping the pid).
fn spawn_activated(env: &DaemonEnv, listener: &UnixListener, extra: &[(&str, &str)]) -> Child {
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=telemetryd; exec \"$0\"")
        .arg(bin("telemetryd"));
    for var in [
        "DO_NOT_TRACK",
        "TELEMETRY_OPTOUT",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.envs());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(env.root().join("activated.log"))
        .unwrap();
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd != 3 && libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 clears close-on-exec; when fd already is 3, clear it here.
            libc::fcntl(3, libc::F_SETFD, 0);
            Ok(())
        });
    }
    cmd.spawn().expect("spawn socket-activated telemetryd")
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "telemetryd did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop_event() -> Vec<telemetry_client::WireEvent> {
    vec![event("cfdev", "stop", "1.0", BTreeMap::new())]
}

#[test]
fn socket_activated_it_exits_when_idle_and_a_waiting_emit_starts_it_again() {
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::create_dir_all(env.socket.parent().unwrap()).unwrap();
    // The service manager's socket: it lives across daemon runs.
    let listener = UnixListener::bind(&env.socket).unwrap();
    let idle = [("TELEMETRY_IDLE_EXIT", "1s")];

    let mut daemon = spawn_activated(&env, &listener, &idle);
    let mut c = Client::connect(&env.socket).unwrap();
    c.emit(stop_event(), T).expect("first emit acknowledged");
    // The service manager would start it again at once: `telemetryctl
    // stop` leaves it running and says how to stop it there.
    let out = env.run("telemetryctl", &["stop", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let refused: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(refused["error"]["code"], "supervised", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("systemctl stop telemetryd.socket telemetryd.service"),
        "{refused}"
    );
    assert!(daemon.try_wait().unwrap().is_none(), "still serving");
    // Pending events keep it alive; once uploaded, it may go.
    assert_eq!(c.flush(T).unwrap().events, 1);
    drop(c);
    let status = wait_exit(&mut daemon, T);
    assert!(status.success(), "idle exit is a clean exit: {status}");
    assert!(
        env.socket.exists(),
        "a socket it did not create is never removed"
    );

    // A client connects and sends while no daemon runs: the service manager
    // would start one now. Its emit waits in the socket and is served.
    let waiting = {
        let socket = env.socket.clone();
        std::thread::spawn(move || {
            let mut c = Client::connect(&socket).unwrap();
            let ack = c.emit(stop_event(), T);
            (c, ack)
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let mut daemon = spawn_activated(&env, &listener, &idle);
    let (held, ack) = waiting.join().unwrap();
    let ack = ack.expect("the waiting emit is acknowledged");
    assert_eq!(ack.accepted, 1);
    // Still connected, so the idle exit does not upload it first.
    let report = Client::connect(&env.socket).unwrap().flush(T).unwrap();
    drop(held);
    assert_eq!(report.events, 1);
    assert!(wait_exit(&mut daemon, T).success());
    let log = std::fs::read_to_string(env.root().join("activated.log")).unwrap();
    assert_eq!(log.matches("idle with nothing pending").count(), 2, "{log}");
}

/// CPU time (user + system) of a process, from /proc, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// While a client holds a connection it stays up, idle without burning
/// CPU, though the destination is down. Once the client goes it tries to
/// upload, fails, and exits idle with the event kept (README `idle_exit`:
/// work waiting only for a destination in backoff stays for the next
/// start); the next start uploads it and exits. (This test once asserted
/// that it was still up exactly 2 s after the client left, the moment it
/// may exit: a race on a loaded machine.)
#[test]
fn it_stays_up_while_a_client_is_connected_then_keeps_what_it_cannot_upload_for_its_next_start() {
    let s3 = S3Server::start();
    let mut env = DaemonEnv::new(Destination::S3 {
        endpoint: s3.endpoint.clone(),
        secret: SECRET_KEY.into(),
    });
    env.extra.extend([
        ("TELEMETRY_RETRY_MIN".to_string(), "100ms".to_string()),
        ("TELEMETRY_RETRY_MAX".to_string(), "500ms".to_string()),
        ("TELEMETRY_S3_TIMEOUT".to_string(), "1s".to_string()),
    ]);
    std::fs::create_dir_all(env.socket.parent().unwrap()).unwrap();
    let listener = UnixListener::bind(&env.socket).unwrap();
    s3.set_fault(Fault::Down);
    let idle = [("TELEMETRY_IDLE_EXIT", "1s")];
    let mut daemon = spawn_activated(&env, &listener, &idle);
    let mut held = Client::connect(&env.socket).unwrap();
    held.emit(stop_event(), T).unwrap();
    // With a connection open and the destination down it must stay up, and
    // waiting must not burn CPU.
    let before = cpu_ticks(daemon.id());
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "exited with a client connected"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let used = cpu_ticks(daemon.id()) - before;
    assert!(used < 60, "idle waiting used {used} ticks of CPU in 3 s");
    assert_eq!(held.status(T).unwrap().pending_events, 1);
    drop(held);
    assert!(wait_exit(&mut daemon, T).success());
    // It tried (a destination is in backoff only after a failure).
    let log = std::fs::read_to_string(env.root().join("activated.log")).unwrap();
    assert!(
        log.contains("destinations in backoff keep their events for the next start"),
        "{log}"
    );

    // The destination is back: the next start uploads what was kept, then
    // goes.
    s3.set_fault(Fault::None);
    assert!(s3.objects().is_empty());
    let mut daemon = spawn_activated(&env, &listener, &idle);
    assert!(wait_exit(&mut daemon, T).success());
    assert_eq!(decode_objects(&s3.objects()).len(), 1);
}

#[test]
fn the_socket_is_found_by_name_and_a_wrong_fd_is_refused() {
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::create_dir_all(env.socket.parent().unwrap()).unwrap();
    let listener = UnixListener::bind(&env.socket).unwrap();
    let file = std::fs::File::create(env.root().join("not-a-socket")).unwrap();
    let run = |names: &str, first: i32, second: i32| {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!(
                "export LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES={names}; exec \"$0\""
            ))
            .arg(bin("telemetryd"))
            .envs(env.envs())
            .env("TELEMETRY_IDLE_EXIT", "1s")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Through high numbers first, so 3 and 4 never clobber a source.
                for (from, tmp) in [(first, 100), (second, 101)] {
                    if libc::dup2(from, tmp) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (tmp, to) in [(100, 3), (101, 4)] {
                    if libc::dup2(tmp, to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        cmd.spawn().unwrap()
    };
    // fd 3 is a file named "other", fd 4 our socket: found by its name.
    let mut daemon = run("other:telemetryd", file.as_raw_fd(), listener.as_raw_fd());
    let mut c = Client::connect(&env.socket).unwrap();
    assert_eq!(c.emit(stop_event(), T).unwrap().accepted, 1);
    assert_eq!(c.flush(T).unwrap().events, 1);
    drop(c);
    assert!(wait_exit(&mut daemon, T).success());

    // Named telemetryd but not a socket: a clear refusal, not a hang.
    let daemon = run("telemetryd:other", file.as_raw_fd(), listener.as_raw_fd());
    let out = daemon.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fd 3 is not a socket"), "{err}");
}

#[test]
fn an_abstract_notify_socket_works_too() {
    use std::os::linux::net::SocketAddrExt;
    let env = DaemonEnv::new(Destination::Outbox);
    let name = format!("telemetryd-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let rx = UnixDatagram::bind_addr(&addr).unwrap();
    rx.set_read_timeout(Some(T)).unwrap();
    let daemon = env.start_with(&[("NOTIFY_SOCKET", &format!("@{name}"))]);
    let mut buf = [0u8; 1024];
    let n = rx.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    drop(daemon);
}

#[test]
fn systemd_socket_activate_starts_it_on_the_first_connection() {
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::create_dir_all(env.socket.parent().unwrap()).unwrap();
    let cmd = env.command("telemetryd");
    let program = cmd.get_program().to_owned();
    let mut sa = Command::new("systemd-socket-activate");
    sa.arg("-l").arg(&env.socket).arg("--fdname=telemetryd");
    // It passes on only the variables named with -E (values from its own
    // environment).
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            sa.arg("-E").arg(k).env(k, v);
        }
    }
    sa.arg(program)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = sa
        .spawn()
        .expect("systemd-socket-activate (.ci/run installs it)");
    // The socket file appears at bind, before listen: wait until it takes
    // a connection.
    let mut first = wait_for("the activation socket", T, || {
        Client::connect(&env.socket).ok()
    });
    let ack = first.emit(stop_event(), T).unwrap();
    drop(first);
    assert_eq!(ack.accepted, 1);
    let st = Client::connect(&env.socket).unwrap().status(T).unwrap();
    assert_eq!(st.pending_events, 1);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert!(wait_exit(&mut child, T).success());
    assert!(
        env.socket.exists(),
        "the activation socket is not ours to remove"
    );
}

#[test]
fn notify_socket_gets_ready_status_watchdog_and_stopping() {
    let env = DaemonEnv::new(Destination::Outbox);
    let path = env.root().join("notify.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    rx.set_read_timeout(Some(T)).unwrap();
    let p = path.display().to_string();
    let daemon = env.start_with(&[("NOTIFY_SOCKET", &p), ("WATCHDOG_USEC", "200000")]);
    let mut seen: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    // Read notifications until one has a line starting with `want`.
    let mut recv_until = |want: &str, seen: &mut Vec<String>| -> usize {
        let deadline = Instant::now() + T;
        loop {
            if let Some(i) = seen
                .iter()
                .position(|m| m.lines().any(|l| l.starts_with(want)))
            {
                return i;
            }
            assert!(Instant::now() < deadline, "no {want} in {seen:?}");
            let n = rx.recv(&mut buf).expect("a notification");
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    let ready = recv_until("READY=1", &mut seen);
    assert!(seen[ready].contains("STATUS=serving"), "{}", seen[ready]);
    assert!(
        seen[ready].contains(&format!("MAINPID={}", daemon.pid())),
        "{}",
        seen[ready]
    );
    recv_until("WATCHDOG=1", &mut seen);
    daemon.client().emit(stop_event(), T).unwrap();
    daemon.client().flush(T).unwrap();
    recv_until("STATUS=0 event(s) pending; last upload 2", &mut seen);
    assert!(daemon.terminate().unwrap().success());
    let stopping = recv_until("STOPPING=1", &mut seen);
    assert!(ready < stopping);
}

fn plist(name: &str) -> plist::Dictionary {
    plist::Value::from_file(repo().join("launchd").join(name))
        .unwrap_or_else(|e| panic!("{name} is not a valid plist: {e}"))
        .into_dictionary()
        .unwrap()
}

#[test]
fn the_launchd_plists_parse_and_are_consistent() {
    for (name, mode) in [
        ("dev.telemetryd.agent.plist", 0o600),
        ("dev.telemetryd.daemon.plist", 0o660),
    ] {
        let p = plist(name);
        assert_eq!(p["Label"].as_string(), Some("dev.telemetryd"), "{name}");
        let args = p["ProgramArguments"].as_array().unwrap();
        assert_eq!(
            args[0].as_string(),
            Some("@TELEMETRYD@"),
            "{name}: filled in by install"
        );
        let env = p["EnvironmentVariables"].as_dictionary().unwrap();
        // The daemon asks launchd for the socket named "Listener".
        let listener = p["Sockets"].as_dictionary().unwrap()["Listener"]
            .as_dictionary()
            .unwrap();
        // One placeholder for both, so install fills them with one path.
        assert_eq!(
            listener["SockPathName"].as_string(),
            Some("@SOCKET@"),
            "{name}"
        );
        assert_eq!(
            env["TELEMETRY_SOCKET"].as_string(),
            Some("@SOCKET@"),
            "{name}"
        );
        assert_eq!(
            listener["SockPathMode"].as_signed_integer(),
            Some(mode),
            "{name}"
        );
        assert_eq!(env["TELEMETRY_IDLE_EXIT"].as_string(), Some("5m"), "{name}");
        assert!(p.contains_key("StandardErrorPath"), "{name}");
    }
    let daemon_src = std::fs::read_to_string(repo().join("daemon/src/main.rs")).unwrap();
    assert!(daemon_src.contains("launchd_listener(\"Listener\")"));
}
