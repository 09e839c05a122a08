//! Per-event cost of each client, in process, against one daemon in one
//! run: the Rust library, the Go, Node and Python SDKs (each its own bench
//! program, which prints one JSON line), and exec'ing the shim.
//!
//! Every client does the whole of a CLI's call each time: check consent
//! from the files, connect, send, and (acked) wait for the commit.

use crate::{env, ms, pct, time_one};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use telemetry_client::{record_event_with, Client, Value};
use telemetry_tests::DaemonEnv;

/// What one client's row holds (seconds).
struct Row {
    name: String,
    acked_p50: f64,
    acked_p99: f64,
    nowait_p50: f64,
}

fn data() -> BTreeMap<String, Value> {
    BTreeMap::from([("buildpack".to_string(), Value::Str("go".into()))])
}

fn rust(env: &DaemonEnv, n: usize) -> Result<Row> {
    let ep = env.endpoint();
    let budget = Duration::from_secs(5);
    let (mut acked, mut nowait) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let t = Instant::now();
        record_event_with(&ep, "cfdev", "app_created", "1.0", data(), budget)?
            .context("consent is on in the bench")?;
        acked.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        // The library has no no-wait call of its own; this is what one is.
        let on = telemetry_client::consent::resolve("cfdev", &ep.consent).0;
        anyhow::ensure!(on == telemetry_client::Mode::On);
        let ev = telemetry_client::event("cfdev", "app_created", "1.0", data());
        Client::connect_now(&ep.socket)?.emit_no_ack(vec![ev], budget)?;
        nowait.push(t.elapsed().as_secs_f64());
    }
    Ok(Row {
        name: "Rust `record_event_with` (and `emit_no_ack`)".into(),
        acked_p50: pct(&mut acked, 0.5),
        acked_p99: pct(&mut acked, 0.99),
        nowait_p50: pct(&mut nowait, 0.5),
    })
}

fn shim(env: &DaemonEnv, n: usize) -> Result<Row> {
    let emit = |flag: Option<&str>| {
        let mut c = env.command("telemetry-emit");
        c.args(["--product", "cfdev", "--timeout-ms", "2000"]);
        c.args(flag);
        c.args(["app_created", "buildpack=go"]);
        c
    };
    let (mut acked, mut nowait) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        acked.push(time_one(emit(Some("--strict")))?);
        nowait.push(time_one(emit(Some("--no-wait")))?);
    }
    Ok(Row {
        name: "exec `telemetry-emit` (`--strict`, `--no-wait`)".into(),
        acked_p50: pct(&mut acked, 0.5),
        acked_p99: pct(&mut acked, 0.99),
        nowait_p50: pct(&mut nowait, 0.5),
    })
}

/// Run an SDK's bench program in `dir` (`program` ends with the event
/// count); it starts its own daemon from `TELEMETRYD_BIN` (this run's
/// build, at the same default settings: sync=full) and prints one JSON
/// line with `acked_p50_us`, `acked_p99_us`, `nowait_p50_us`.
fn sdk(name: &str, dir: &Path, program: &[String]) -> Result<Row> {
    let out = Command::new(&program[0])
        .args(&program[1..])
        .current_dir(dir)
        .env("TELEMETRYD_BIN", telemetry_tests::bin("telemetryd"))
        .env_remove("TELEMETRY_SOCKET")
        .env_remove("DO_NOT_TRACK")
        .env_remove("TELEMETRY_OPTOUT")
        .output()
        .with_context(|| format!("run {program:?} in {}", dir.display()))?;
    if !out.status.success() {
        bail!(
            "{program:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{program:?} printed no JSON line: {text}"))?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    let us = |k: &str| -> Result<f64> {
        Ok(v[k]
            .as_f64()
            .with_context(|| format!("{program:?}: no {k} in {line}"))?
            / 1e6)
    };
    Ok(Row {
        name: name.into(),
        acked_p50: us("acked_p50_us")?,
        acked_p99: us("acked_p99_us")?,
        nowait_p50: us("nowait_p50_us")?,
    })
}

/// The comparison, printed as a table of ratios to the Rust client and to
/// the shim, measured in the same run against the same daemon.
pub fn run(quick: bool) -> Result<()> {
    let n = if quick { 200 } else { 2000 };
    let shim_runs = if quick { 30 } else { 200 };
    println!("\n## 7. Clients in process ({n} events each, sync=full; the Rust client and the shim against one daemon, each SDK's bench program against its own daemon of the same build and settings; the shim {shim_runs} runs)");
    let env = env("full");
    let _daemon = env.start();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut rows = vec![rust(&env, n)?];
    let count = n.to_string();
    let sdks: [(&str, &str, Vec<&str>); 3] = [
        (
            "Go SDK",
            "sdk/go",
            vec!["go", "run", "./cmd/bench", "-n", &count],
        ),
        ("Node SDK", "sdk/node", vec!["node", "bench.mjs", &count]),
        (
            "Python SDK",
            "sdk/python",
            vec!["python3", "bench.py", &count],
        ),
    ];
    for (name, dir, program) in sdks {
        let program: Vec<String> = program.iter().map(|s| s.to_string()).collect();
        match sdk(name, &root.join(dir), &program) {
            Ok(row) => rows.push(row),
            Err(e) => println!("{name}: not measured: {e:#}"),
        }
    }
    rows.push(shim(&env, shim_runs)?);
    let (rust50, shim50) = (rows[0].acked_p50, rows.last().expect("shim row").acked_p50);
    println!("| client | acked p50 | acked p99 | no-wait p50 | acked p50 ÷ Rust | acked p50 ÷ shim exec |\n|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.2} |",
            r.name,
            ms(r.acked_p50),
            ms(r.acked_p99),
            ms(r.nowait_p50),
            r.acked_p50 / rust50,
            r.acked_p50 / shim50
        );
    }
    Ok(())
}
