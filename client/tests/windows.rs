//! End to end on Windows (run under wine by `scripts/windows.sh test`):
//! the daemon on a named pipe, the shim, `telemetryctl status` and `flush`,
//! the batch in the outbox; consent off means no connection; a second
//! daemon on the same pipe is refused; past the pipe's instance limit the
//! shim spools; the machine-wide service installed, started, stopped and
//! removed through the service control manager; the per-user start at
//! logon (`telemetryctl start`) installed and removed.
#![cfg(windows)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn exe(name: &str) -> PathBuf {
    // Integration tests live in target/<triple>/debug/deps; the binaries
    // one level up.
    let deps = std::env::current_exe().unwrap();
    deps.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join(format!("{name}.exe"))
}

struct Env {
    dir: tempfile::TempDir,
    pipe: String,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("consent"), "cfdev on\n").unwrap();
        std::fs::write(
            dir.path().join("machine-id"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        let pipe = format!(
            r"\\.\pipe\telemetryd-test-{}",
            uuid::Uuid::new_v4().simple()
        );
        Env { dir, pipe }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn command(&self, name: &str) -> Command {
        let mut c = Command::new(exe(name));
        c.env("TELEMETRY_SOCKET", &self.pipe)
            .env("TELEMETRY_STATE_DIR", self.path("state"))
            .env("TELEMETRY_CONSENT_FILE", self.path("consent"))
            .env("TELEMETRY_SYSTEM_CONSENT_FILE", self.path("system-consent"))
            .env("TELEMETRY_MACHINE_ID_FILE", self.path("machine-id"))
            .env("TELEMETRY_CATALOG_DIR", self.path("catalog"))
            .env("TELEMETRY_CONFIG", self.path("config.toml"))
            .env("TELEMETRY_AUTOSTART", "0")
            .env_remove("DO_NOT_TRACK")
            .env_remove("TELEMETRY_OPTOUT");
        c
    }

    fn start(&self) -> Child {
        self.start_with(&[])
    }

    fn start_with(&self, vars: &[(&str, &str)]) -> Child {
        std::fs::write(self.path("config.toml"), "").unwrap();
        let child = self
            .command("telemetryd")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path("daemon.log")).unwrap())
            .spawn()
            .expect("start telemetryd.exe");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.ctl(&["status"]).status.success() {
                return child;
            }
            assert!(
                Instant::now() < deadline,
                "telemetryd did not answer: {}",
                std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Wait until `status` shows `n` pending events: a spool taken in.
    fn wait_pending(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.ctl(&["status", "--json"]);
            let report: serde_json::Value =
                serde_json::from_slice(&status.stdout).unwrap_or_default();
            if report["pending_events"] == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the spool was not taken in: {report}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        run(self.command("telemetryctl").args(args))
    }

    fn emit(&self, args: &[&str]) -> Output {
        run(self
            .command("telemetry-emit")
            .args(["--product", "cfdev", "--timeout-ms", "10000"])
            .args(args))
    }
}

/// Run `cmd` to its end. Wine's process creation now and then fails
/// outright (`ERROR_INTERNAL_ERROR`, 1359, seen once in CI while the pipe
/// instance test waited for its spool): the program never started, so
/// nothing it would do has happened, and starting it again is the same
/// test. Any other failure, or five in a row, fails the test.
fn run(cmd: &mut Command) -> Output {
    let mut tries = 0;
    loop {
        match cmd.output() {
            Ok(out) => return out,
            Err(e) if e.raw_os_error() == Some(1359) && tries < 4 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("starting {cmd:?}: {e}"),
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn the_daemon_serves_a_named_pipe_end_to_end() {
    let env = Env::new();
    let mut daemon = env.start();

    let out = env.emit(&["--strict", "app_created", "buildpack=go"]);
    assert!(out.status.success(), "{}", text(&out));
    let status = env.ctl(&["status", "--json"]);
    assert!(status.status.success(), "{}", text(&status));
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["pending_events"], 1, "{report}");

    // A second daemon on the same pipe is refused, saying why.
    let second = env.command("telemetryd").output().unwrap();
    assert!(!second.status.success());
    assert!(
        text(&second).contains("named pipe") || text(&second).contains("lock"),
        "{}",
        text(&second)
    );

    let flushed = env.ctl(&["flush"]);
    assert!(flushed.status.success(), "{}", text(&flushed));
    let batches: Vec<PathBuf> = files_under(&env.path("state").join("outbox"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".ndjson.zst"))
        .collect();
    assert_eq!(batches.len(), 1, "{batches:?}");

    // `telemetryctl stop` returns once the daemon's process has exited (an
    // uninstaller may then replace telemetryd.exe), which it does cleanly.
    let stopped = env.ctl(&["stop", "--json"]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    let json: serde_json::Value = serde_json::from_slice(&stopped.stdout).unwrap();
    assert_eq!(json["stopped"], true, "{json}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "telemetryd still runs after stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn with_consent_off_the_shim_connects_to_nothing() {
    let env = Env::new();
    std::fs::write(env.path("consent"), "cfdev off\n").unwrap();
    // Nothing serves the pipe: a connection attempt would spool; off
    // must not even do that.
    let out = env.emit(&["--strict", "app_created", "buildpack=go"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(!env.path("state").exists(), "nothing written");
}

#[test]
fn without_a_daemon_the_shim_spools_within_its_budget() {
    let env = Env::new();
    let started = Instant::now();
    let out = env.emit(&["--strict", "app_created", "buildpack=go"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("spooled"), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut daemon = env.start();
    env.wait_pending(1);
    let _ = daemon.kill();
    let _ = daemon.wait();
}

#[test]
fn past_the_pipes_instance_limit_the_shim_spools_and_the_event_arrives_later() {
    let env = Env::new();
    let mut daemon = env.start_with(&[("TELEMETRY_MAX_CONNECTIONS", "1")]);
    // The only instance, taken by a client that sends nothing.
    // At the limit the daemon makes the next instance once the last client
    // is gone (within 50 ms): until then the name does not exist.
    let deadline = Instant::now() + Duration::from_secs(10);
    let held = loop {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&env.pipe)
        {
            Ok(f) => break f,
            Err(e) => assert!(Instant::now() < deadline, "the one pipe instance: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let started = Instant::now();
    let out = env.emit(&["--strict", "app_created", "buildpack=go"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "ERROR_PIPE_BUSY is busy: {}",
        text(&out)
    );
    assert!(text(&out).contains("spooled"), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(held);
    env.wait_pending(1);
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// Whether anything serves the pipe `name`, asked without connecting
/// (`WaitNamedPipeW` fails with ERROR_FILE_NOT_FOUND when nothing does).
fn pipe_exists(name: &str) -> bool {
    use std::os::windows::ffi::OsStrExt;
    let wide: Vec<u16> = std::ffi::OsStr::new(name)
        .encode_wide()
        .chain(Some(0))
        .collect();
    // SAFETY: a NUL-terminated name.
    let ok = unsafe { windows_sys::Win32::System::Pipes::WaitNamedPipeW(wide.as_ptr(), 1) };
    ok != 0 || std::io::Error::last_os_error().raw_os_error() != Some(2)
}

/// `sc.exe ARGS` (wine has one): its output.
fn sc(args: &[&str]) -> Output {
    Command::new("sc.exe").args(args).output().expect("sc.exe")
}

/// The service's state as `sc query` prints it (`RUNNING`, `STOPPED`...),
/// or `None` when it is not installed.
fn service_state() -> Option<String> {
    let out = sc(&["query", "telemetryd"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let line = stdout.lines().find(|l| l.contains("STATE"))?;
    line.split_whitespace().last().map(str::to_string)
}

fn wait_for_state(want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while service_state().as_deref() != Some(want) {
        assert!(
            Instant::now() < deadline,
            "the service is {:?}, not {want}",
            service_state()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The service and logon tests change machine-wide state (the service
/// `telemetryd`, this user's `Run` value): under wine that is the test
/// prefix's; on a real Windows machine they run only when asked to.
fn may_change_the_machine() -> bool {
    let asked = std::env::var_os("TELEMETRY_WINDOWS_SYSTEM_TESTS").is_some_and(|v| v == "1");
    if !(asked || telemetry_platform::windows::under_wine()) {
        eprintln!("skipped: not under wine; set TELEMETRY_WINDOWS_SYSTEM_TESTS=1 to run it here");
        return false;
    }
    true
}

/// Stops and removes the service however the test ends.
struct Uninstall<'a>(&'a Env, PathBuf);

impl Drop for Uninstall<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .command("telemetryd")
            .env("ProgramData", &self.1)
            .args(["uninstall", "--system"])
            .output();
    }
}

#[test]
fn the_machine_wide_service_is_installed_started_stopped_and_removed() {
    const MACHINE_PIPE: &str = r"\\.\pipe\telemetryd";
    if !may_change_the_machine() {
        return;
    }
    let env = Env::new();
    let data = env.path("ProgramData");
    let telemetryd = |args: &[&str]| {
        env.command("telemetryd")
            .env("ProgramData", &data)
            .args(args)
            .output()
            .unwrap()
    };
    let _cleanup = Uninstall(&env, data.clone());

    let dry = telemetryd(&["install", "--system", "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(
        text(&dry).contains("would register the service telemetryd"),
        "{}",
        text(&dry)
    );
    assert!(!data.exists(), "a dry run writes nothing");
    assert_eq!(service_state(), None, "a dry run registers nothing");

    let installed = telemetryd(&["install", "--system"]);
    assert!(installed.status.success(), "{}", text(&installed));
    assert_eq!(service_state().as_deref(), Some("STOPPED"));
    let machine = data.join("telemetry");
    assert!(machine.join("config.toml").is_file());
    // The state directory's DACL, read back: LocalSystem and the
    // administrators only. Wine keeps no file ACLs (platform's unit test
    // says so); there only the directory is checked.
    assert!(machine.join("state").is_dir());
    if !telemetry_platform::windows::under_wine() {
        let sddl =
            telemetry_platform::windows::security::path_sddl(&machine.join("state")).unwrap();
        assert!(sddl.contains("D:P"), "{sddl}");
        assert!(
            !sddl.contains(";;;BU)") && !sddl.contains(";;;WD)"),
            "{sddl}"
        );
    }
    // The machine owner's opt-in for cfdev.
    std::fs::write(machine.join("machine-consent"), "cfdev on\n").unwrap();

    let started = sc(&["start", "telemetryd"]);
    assert!(started.status.success(), "{}", text(&started));
    wait_for_state("RUNNING");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !env
        .ctl(&["--socket", MACHINE_PIPE, "status"])
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the service does not answer on {MACHINE_PIPE}: {}",
            std::fs::read_to_string(machine.join("state").join("telemetryd.log"))
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = env
        .command("telemetry-emit")
        .env("TELEMETRY_SOCKET", MACHINE_PIPE)
        .args(["--product", "cfdev", "--timeout-ms", "10000", "--strict"])
        .args(["app_created", "buildpack=go"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let status = env.ctl(&["--socket", MACHINE_PIPE, "status", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["pending_events"], 1, "{report}");

    let stopped = sc(&["stop", "telemetryd"]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    wait_for_state("STOPPED");
    assert!(!env
        .ctl(&["--socket", MACHINE_PIPE, "status"])
        .status
        .success());
    let log = std::fs::read_to_string(machine.join("state").join("telemetryd.log")).unwrap();
    assert!(log.contains("asked to stop"), "{log}");

    let removed = telemetryd(&["uninstall", "--system"]);
    assert!(removed.status.success(), "{}", text(&removed));
    assert!(
        text(&removed).contains("remove the service telemetryd"),
        "{}",
        text(&removed)
    );
    assert_eq!(service_state(), None);
    // What was not uploaded stays, as the uninstall says.
    assert!(machine.join("state").exists());

    // What a package runs instead: the staged script registers the same.
    let staged = env.path("staged");
    let out = telemetryd(&["install", "--system", "--root", &staged.to_string_lossy()]);
    assert!(out.status.success(), "{}", text(&out));
    let script = staged.join("telemetryd-service.cmd");
    let ran = Command::new("cmd.exe")
        .arg("/c")
        .arg(&script)
        .output()
        .unwrap();
    assert_eq!(
        service_state().as_deref(),
        Some("STOPPED"),
        "{}\n{}",
        text(&ran),
        std::fs::read_to_string(&script).unwrap()
    );
    assert!(machine.join("config.toml").is_file());
    let removed = telemetryd(&["uninstall", "--system"]);
    assert!(removed.status.success(), "{}", text(&removed));
    assert_eq!(service_state(), None);
}

#[test]
fn the_user_daemon_is_started_at_logon_by_telemetryctl_start() {
    use telemetry_platform::windows::registry::run_value;
    if !may_change_the_machine() {
        return;
    }
    let env = Env::new();
    std::fs::write(env.path("config.toml"), "").unwrap();
    let telemetryd = |args: &[&str]| env.command("telemetryd").args(args).output().unwrap();
    // Left by a run that stopped half way.
    telemetryd(&["uninstall", "--user"]);

    let dry = telemetryd(&["install", "--user", "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(
        text(&dry).contains(
            r"would set HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\telemetryd"
        ),
        "{}",
        text(&dry)
    );
    assert_eq!(run_value("telemetryd"), None, "a dry run sets nothing");

    let installed = telemetryd(&["install", "--user"]);
    assert!(installed.status.success(), "{}", text(&installed));
    let command = run_value("telemetryd").expect("the Run value");
    assert!(command.ends_with("telemetryctl.exe start"), "{command}");

    // What Windows runs at the next logon (wine has no logon), run here:
    // a detached daemon starts, and a second start finds it.
    let start = |extra: &[&str]| {
        env.command("telemetryctl")
            .env("TELEMETRY_AUTOSTART", "1")
            .env("TELEMETRY_IDLE_EXIT", "20s")
            .arg("start")
            .args(extra)
            .output()
            .unwrap()
    };
    let t = Instant::now();
    let first = start(&[]);
    assert!(first.status.success(), "{}", text(&first));
    // The daemon holds none of telemetryctl's handles: its output (a pipe
    // to this test) ended when telemetryctl exited, not when the daemon
    // exits (20 s idle).
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert!(text(&first).contains("started"), "{}", text(&first));
    let second = start(&["--json"]);
    let outcome: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(
        outcome["started"],
        false,
        "{outcome}\n{}",
        std::fs::read_to_string(env.path("state").join("telemetryd.log")).unwrap_or_default()
    );
    let out = env.emit(&["--strict", "app_created", "buildpack=go"]);
    assert!(out.status.success(), "{}", text(&out));

    // Nothing pending, so that it may exit once idle.
    let flushed = env.ctl(&["flush"]);
    assert!(flushed.status.success(), "{}", text(&flushed));

    let removed = telemetryd(&["uninstall", "--user"]);
    assert!(removed.status.success(), "{}", text(&removed));
    assert_eq!(run_value("telemetryd"), None);
    // The autostarted daemon exits once idle (20 s here). Watched without
    // connecting, which would keep it busy.
    let deadline = Instant::now() + Duration::from_secs(60);
    while pipe_exists(&env.pipe) {
        assert!(Instant::now() < deadline, "the started daemon never exited");
        std::thread::sleep(Duration::from_millis(500));
    }
}
