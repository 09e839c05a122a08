//! The transport's cost on this platform: a daemon on its default kind of
//! endpoint (a Unix socket; on Windows a named pipe), then N of each:
//! a `status` round trip (transport and dispatch only), an acknowledged
//! emit through the library (consent check, connect, send, commit, ack),
//! and the shim's wall time (`telemetry-emit --strict`, process start
//! included). Prints one JSON line of medians and p99s in microseconds.
//!
//! `scripts/windows.sh bench` builds and runs it natively and under wine,
//! and prints the ratios (BENCHMARKS.md, "Windows under wine").
//!
//! Usage: transport_bench [N]   (default 200; the daemon and the shim are
//! taken from the directory above this example's, as cargo lays them out)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use telemetry_client::{record_event_with, Client, Endpoint, Value};

fn exe(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("own path");
    let dir = me
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(name: &str, mut v: Vec<f64>) -> String {
    format!(
        "\"{name}_p50_us\":{:.0},\"{name}_p99_us\":{:.0}",
        pct(&mut v, 0.5) * 1e6,
        pct(&mut v, 0.99) * 1e6
    )
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N is a count"))
        .unwrap_or(200);
    let dir =
        std::env::temp_dir().join(format!("telemetry-transport-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("consent"), "cfdev on\n").unwrap();
    std::fs::write(dir.join("config.toml"), "").unwrap();
    std::fs::write(dir.join("machine-id"), "0123456789abcdef0123456789abcdef\n").unwrap();
    let socket = if cfg!(windows) {
        PathBuf::from(format!(r"\\.\pipe\telemetryd-bench-{}", std::process::id()))
    } else {
        dir.join("telemetryd.sock")
    };
    let vars: Vec<(&str, PathBuf)> = vec![
        ("TELEMETRY_SOCKET", socket.clone()),
        ("TELEMETRY_STATE_DIR", dir.join("state")),
        ("TELEMETRY_CONSENT_FILE", dir.join("consent")),
        ("TELEMETRY_SYSTEM_CONSENT_FILE", dir.join("system-consent")),
        ("TELEMETRY_MACHINE_ID_FILE", dir.join("machine-id")),
        ("TELEMETRY_CATALOG_DIR", dir.join("catalog")),
        ("TELEMETRY_CONFIG", dir.join("config.toml")),
        ("TELEMETRY_AUTOSTART", PathBuf::from("0")),
    ];
    let mut daemon = Command::new(exe("telemetryd"))
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start telemetryd");
    let budget = Duration::from_secs(5);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Client::connect(&socket)
        .and_then(|mut c| c.status(budget))
        .is_err()
    {
        assert!(Instant::now() < deadline, "telemetryd did not answer");
        std::thread::sleep(Duration::from_millis(50));
    }
    let endpoint = Endpoint {
        socket: socket.clone(),
        consent: telemetry_client::consent::ConsentPaths {
            user: dir.join("consent"),
            system: dir.join("system-consent"),
        },
        state_dir: dir.join("state"),
        autostart: false,
    };
    let data = BTreeMap::from([("buildpack".to_string(), Value::Str("go".into()))]);
    let (mut status, mut acked, mut shim) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        Client::connect(&socket).unwrap().status(budget).unwrap();
        status.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        record_event_with(
            &endpoint,
            "cfdev",
            "app_created",
            "1.0",
            data.clone(),
            budget,
        )
        .unwrap()
        .expect("consent is on");
        acked.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let out = Command::new(exe("telemetry-emit"))
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .args(["--product", "cfdev", "--timeout-ms", "5000", "--strict"])
            .args(["app_created", "buildpack=go"])
            .output()
            .unwrap();
        shim.push(t.elapsed().as_secs_f64());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{{\"platform\":\"{}\",\"n\":{n},{},{},{}}}",
        if cfg!(windows) { "windows" } else { "unix" },
        summary("status", status),
        summary("acked", acked),
        summary("shim", shim)
    );
}
