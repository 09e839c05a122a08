//! Streaming ingest (issue #18): clients that keep a window of acknowledged
//! requests in flight on one connection (`telemetry_client::stream`),
//! against raw SQLite in 1000-row transactions and against syslog-ng,
//! all in the same run; the daemon's CPU time per acknowledged event; and,
//! where valgrind is installed, its instructions per acknowledged event
//! (the one figure this VM's noise cannot move: it has no hardware
//! counters for `perf`, so valgrind counts them).

use crate::{env, median, one, raw_rate, syslog, T};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use telemetry_client::stream::{Stream, StreamOptions};
use telemetry_client::{Client, WireEvent};
use telemetry_tests::wait_for;

/// How the clients send: events packed per request, requests in flight.
#[derive(Clone, Copy)]
struct Shape {
    per_request: usize,
    window: usize,
}

/// The rows: one event per request waiting for each answer (the classic
/// client), then windows of one-event requests, then packed requests.
const SHAPES: [Shape; 6] = [
    Shape {
        per_request: 1,
        window: 1,
    },
    Shape {
        per_request: 1,
        window: 16,
    },
    Shape {
        per_request: 1,
        window: 64,
    },
    Shape {
        per_request: 100,
        window: 4,
    },
    Shape {
        per_request: 1000,
        window: 1,
    },
    Shape {
        per_request: 1000,
        window: 4,
    },
];

/// Events per connection, made before the clock starts (making them is
/// the clients' cost, not the daemon's; the raw baseline renders its rows
/// beforehand too). They are dealt round-robin, so each id (a UUIDv7,
/// ordered by when it was made) is near the ids the other connections send
/// at the same moment, as with clients that make their events as they go.
/// Made one connection after another, each connection's ids were a run of
/// their own: a commit of one request from each of 8 connections then
/// inserted at 8 places in the seen-ids b-tree and wrote about 11 of its
/// 14 WAL pages there, where the raw baseline appends in order.
fn events_for(conns: usize, total: usize, base: i64) -> Vec<Vec<WireEvent>> {
    let per = total / conns;
    let mut batches: Vec<Vec<WireEvent>> = (0..conns).map(|_| Vec::with_capacity(per)).collect();
    for i in 0..per {
        for (k, batch) in batches.iter_mut().enumerate() {
            batch.push(one(base + (k * per + i) as i64));
        }
    }
    batches
}

/// `conns` threads streaming their events to `socket` with `shape`; acked
/// events per second. Fails unless every event was acknowledged as new.
fn stream_rate(socket: &Path, batches: Vec<Vec<WireEvent>>, shape: Shape) -> Result<f64> {
    let total: usize = batches.iter().map(Vec::len).sum();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(batches.len() + 1));
    let threads: Vec<_> = batches
        .into_iter()
        .map(|events| {
            let socket = socket.to_path_buf();
            let barrier = barrier.clone();
            std::thread::spawn(move || -> Result<u64> {
                let client = Client::connect(&socket)?;
                let mut stream = Stream::new(
                    client,
                    StreamOptions {
                        window: shape.window,
                        events_per_request: shape.per_request,
                        timeout: T,
                    },
                );
                barrier.wait();
                for ev in events {
                    stream.push(ev)?;
                }
                let report = stream.finish()?;
                if !report.refused.is_empty() {
                    bail!("refused: {:?}", report.refused[0]);
                }
                Ok(report.accepted)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut accepted = 0;
    for t in threads {
        accepted += t.join().expect("client thread")?;
    }
    let took = start.elapsed().as_secs_f64();
    if accepted != total as u64 {
        bail!("{accepted} of {total} events acknowledged as new");
    }
    Ok(total as f64 / took)
}

/// User + system CPU time of `pid` so far, in seconds (all threads).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 (1-based), 12 and 13 here.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// One row's results per round: connections, shape, (acknowledged ev/s,
/// ev/s until all uploaded), CPU seconds per event.
type Row = (usize, Shape, Vec<(f64, f64)>, Vec<f64>);

pub fn run(quick: bool) -> Result<()> {
    let rounds = 3;
    // One-event requests are slow when each waits for its answer: fewer.
    let (single, packed) = if quick {
        (3_000, 30_000)
    } else {
        (24_000, 240_000)
    };
    // Once per run: it may install syslog-ng from Debian.
    let syslog_ng = match syslog::available() {
        Ok(ng) => Some(ng),
        Err(why) => {
            println!("syslog-ng: not available ({why})");
            None
        }
    };
    println!(
        "\n## 2b. Streaming ingest (every event acknowledged after its commit; {rounds} rounds alternating with the baselines; medians)"
    );
    println!("Events per row: {single} with one event per request, {packed} packed. Acknowledged: until the last answer; until all uploaded: until the last batch is in the outbox (sealing and uploading keep the store thread busy beside the inserts). CPU = the daemon's user+system time per event, until all uploaded.");
    for sync in ["normal", "full"] {
        // The baselines, once per round for this sync mode.
        let (mut raw, mut sng, mut sng_cpu) = (vec![], vec![], vec![]);
        let mut rows: Vec<Row> = Vec::new();
        for conns in [1usize, 4, 8] {
            for shape in SHAPES {
                rows.push((conns, shape, vec![], vec![]));
            }
        }
        let env = env(sync);
        let daemon = env.start();
        let mut base = 0i64;
        for _ in 0..rounds {
            raw.push(raw_rate(sync, packed, 1000)?);
            if let (Some(ng), "normal") = (&syslog_ng, sync) {
                let run = ng.rate(packed, 4)?;
                sng.push(run.events_per_s);
                sng_cpu.push(run.cpu_us_per_event);
            }
            for (conns, shape, rates, cpu) in rows.iter_mut() {
                let total = if shape.per_request == 1 {
                    single
                } else {
                    packed
                };
                let batches = events_for(*conns, total, base);
                base += total as i64;
                let before = cpu_seconds(daemon.pid());
                let started = Instant::now();
                let rate = stream_rate(daemon.socket(), batches, *shape)?;
                // Sealing and uploading what came is the daemon's work too:
                // counted here, not left to slow the next row.
                until_packaged(daemon.socket())?;
                let packaged = total as f64 / started.elapsed().as_secs_f64();
                let used = cpu_seconds(daemon.pid()) - before;
                rates.push((rate, packaged));
                cpu.push(used / total as f64);
            }
        }
        let raw = median(&mut raw);
        let sng = (!sng.is_empty()).then(|| median(&mut sng));
        let version = syslog_ng.as_ref().map_or("", |ng| ng.version.as_str());
        println!("\n### sync={sync}: raw SQLite in 1000-row transactions {raw:.0} ev/s{}", match sng {
            Some(s) => format!("; syslog-ng {version} (4 unix-stream connections into SQLite, WAL, synchronous=NORMAL, 1000-row batches, flow-control; acknowledges nothing) {s:.0} ev/s, {:.1} µs CPU/event", median(&mut sng_cpu)),
            None if sync == "normal" => "; syslog-ng not measured".to_string(),
            None => String::new(),
        });
        println!("| connections | events/request | window | acknowledged ev/s | ÷ raw 1000-row | ÷ syslog-ng | ev/s until all uploaded | ÷ raw | ÷ syslog-ng | daemon CPU µs/event (all) |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        let ratio = |x: f64| sng.map_or("–".to_string(), |s| format!("{:.2}", x / s));
        for (conns, shape, rates, mut cpu) in rows {
            let rate = median(&mut rates.iter().map(|r| r.0).collect::<Vec<_>>());
            let packaged = median(&mut rates.iter().map(|r| r.1).collect::<Vec<_>>());
            let cpu = median(&mut cpu) * 1e6;
            println!(
                "| {conns} | {} | {} | {rate:.0} | {:.2} | {} | {packaged:.0} | {:.2} | {} | {cpu:.1} |",
                shape.per_request,
                shape.window,
                rate / raw,
                ratio(rate),
                packaged / raw,
                ratio(packaged),
            );
        }
        daemon.terminate()?;
    }
    instructions(quick)?;
    Ok(())
}

/// One row, `CxExW`, for `seconds`, with nothing else: a steady load to
/// profile the daemon under (`perf record -p PID`, printed first).
pub fn row(row: &str, seconds: u64, sync: &str) -> Result<()> {
    let parts: Vec<usize> = row
        .split('x')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!("--row {row}: expected CONNECTIONSxEVENTSxWINDOW, e.g. 4x1000x4")
        })?;
    let [conns, per_request, window] = parts[..] else {
        bail!("--row {row}: expected three numbers, CONNECTIONSxEVENTSxWINDOW, e.g. 4x1000x4");
    };
    if conns == 0 || per_request == 0 || window == 0 {
        bail!("--row {row}: every number must be at least 1");
    }
    if sync != "normal" && sync != "full" {
        bail!("--sync {sync}: expected normal or full");
    }
    let shape = Shape {
        per_request,
        window,
    };
    let env = env(sync);
    let daemon = env.start();
    println!(
        "daemon pid {} (sync={sync}); streaming {conns}x{per_request}x{window} for {seconds} s",
        daemon.pid()
    );
    // Rounds of about a second each, so the events are made outside the clock.
    let per_round = if per_request == 1 { 20_000 } else { 200_000 }.max(conns * per_request);
    let (mut base, mut rates, mut events) = (0i64, vec![], 0usize);
    let (cpu0, start) = (cpu_seconds(daemon.pid()), Instant::now());
    let end = start + Duration::from_secs(seconds);
    let mut acking = Duration::ZERO;
    while Instant::now() < end {
        let batches = events_for(conns, per_round, base);
        base += per_round as i64;
        let t = Instant::now();
        rates.push(stream_rate(daemon.socket(), batches, shape)?);
        acking += t.elapsed();
        events += per_round;
        // Whether packaging keeps up: what waits to be sealed and uploaded.
        let s = Client::connect(daemon.socket())?.status(T)?;
        println!(
            "  {:.0} ev/s; pending {} events, {} batches sealed, {} uploaded, dropped {:?}",
            rates.last().copied().unwrap_or_default(),
            s.pending_events,
            s.sealed_batches,
            s.uploaded_events,
            s.dropped
        );
    }
    let waited = Instant::now();
    let uploaded = until_packaged(daemon.socket())?;
    let (waited, cpu) = (waited.elapsed(), cpu_seconds(daemon.pid()) - cpu0);
    println!(
        "{} rounds: acknowledged at a median {:.0} ev/s; every event uploaded (or dropped) after {:.1} s more: {:.0} ev/s from the first event to the last upload, of {} sent {} uploaded; daemon CPU {:.1} µs/event in all",
        rates.len(),
        median(&mut rates),
        waited.as_secs_f64(),
        events as f64 / (acking + waited).as_secs_f64(),
        events,
        uploaded,
        cpu / events as f64 * 1e6
    );
    daemon.terminate()?;
    Ok(())
}

/// Wait until nothing is sealed and less than a batch is pending (the
/// uploader has caught up), then flush the rest; the events uploaded
/// since the daemon started.
fn until_packaged(socket: &Path) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let s = Client::connect(socket)?.status(T)?;
        if s.pending_events < 10_000 && s.sealed_batches == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the uploader did not catch up in 300 s: {} events pending, {} batches sealed, last error {:?}",
                s.pending_events,
                s.sealed_batches,
                s.last_error
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Client::connect(socket)?.flush(T)?;
    Ok(Client::connect(socket)?.status(T)?.uploaded_events)
}

/// Instructions per acknowledged event, counted by valgrind (cachegrind,
/// no cache simulation) over the daemon's whole life: a run with the
/// events minus a run without them (start-up, one status, shutdown),
/// divided by the events.
fn instructions(quick: bool) -> Result<()> {
    if Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map_or(true, |s| !s.success())
    {
        println!(
            "\ninstructions per event: valgrind not installed (apt-get install valgrind); skipped"
        );
        return Ok(());
    }
    let n = if quick { 2_000 } else { 20_000 };
    println!("\n### Instructions per acknowledged event (valgrind, sync=normal, 4 connections, {n} events; the daemon's whole process, start-up and shutdown subtracted)");
    println!("| events/request | window | instructions/event |");
    println!("|---|---|---|");
    let idle = counted(None)?;
    for shape in [
        Shape {
            per_request: 1,
            window: 1,
        },
        Shape {
            per_request: 1,
            window: 64,
        },
        Shape {
            per_request: 1000,
            window: 4,
        },
    ] {
        let ir = counted(Some((shape, n)))?;
        println!(
            "| {} | {} | {:.0} |",
            shape.per_request,
            shape.window,
            (ir.saturating_sub(idle)) as f64 / n as f64
        );
    }
    Ok(())
}

/// Instructions a daemon under cachegrind executes from start to exit,
/// serving `work` in between (and one status either way).
fn counted(work: Option<(Shape, usize)>) -> Result<u64> {
    let env = env("normal");
    let out = env.root().join("cachegrind.out");
    let daemon = env.command("telemetryd");
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "--tool=cachegrind",
        "--cache-sim=no",
        "--quiet",
        &format!("--cachegrind-out-file={}", out.display()),
    ])
    .arg(daemon.get_program());
    for (k, v) in daemon.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start telemetryd under valgrind")?;
    let socket = env.socket.clone();
    wait_for(
        "telemetryd under valgrind",
        Duration::from_secs(120),
        || {
            Client::connect(&socket)
                .and_then(|mut c| c.status(Duration::from_secs(10)))
                .ok()
        },
    );
    if let Some((shape, n)) = work {
        stream_rate(&socket, events_for(4, n, 0), shape)?;
    }
    // SAFETY: kill only sends a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait()?;
    if !status.success() {
        bail!("telemetryd under valgrind exited with {status}");
    }
    summary(&out)
}

/// The `summary:` line of a cachegrind output file.
fn summary(path: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    text.lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no summary in {}", path.display()))
}
