//! End to end on Windows (run under wine by `scripts/windows.sh test`):
//! the daemon on a named pipe, the shim, `telemetryctl status` and `flush`,
//! the batch in the outbox; consent off means no connection; a second
//! daemon on the same pipe is refused; the pipe's security descriptor
//! admits only the owner.
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
        std::fs::write(self.path("config.toml"), "").unwrap();
        let child = self
            .command("telemetryd")
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

    fn ctl(&self, args: &[&str]) -> Output {
        self.command("telemetryctl").args(args).output().unwrap()
    }

    fn emit(&self, args: &[&str]) -> Output {
        self.command("telemetry-emit")
            .args(["--product", "cfdev", "--timeout-ms", "10000"])
            .args(args)
            .output()
            .unwrap()
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

    let _ = daemon.kill();
    let _ = daemon.wait();
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
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = env.ctl(&["status", "--json"]);
        let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
        if report["pending_events"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the spool was not taken in");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
}
