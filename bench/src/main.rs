//! `telemetry-bench`: measures telemetryd against its limits. Every figure
//! is printed as a ratio to a baseline measured in the same run (absolute
//! times on a shared 2-core machine are noise), with the raw medians next
//! to it. Benchmarks print; they assert nothing.
//!
//! ```text
//! cargo run --release -p telemetry-bench -- all          # everything (minutes)
//! cargo run --release -p telemetry-bench -- all --quick  # smaller, for a smoke run
//! ```

mod broker;
mod scale;
mod sdks;
mod stream;
mod syslog;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use telemetry_client::{event, Client, Value, WireEvent};
use telemetry_tests::{Daemon, DaemonEnv, Destination, S3Server, SECRET_KEY};

#[derive(Parser)]
#[command(
    name = "telemetry-bench",
    about = "Benchmarks for telemetryd (figures as ratios to same-run baselines)"
)]
struct Cli {
    #[command(subcommand)]
    what: What,
    /// Smaller sizes and shorter waits: a smoke run, not a measurement.
    #[arg(long, global = true)]
    quick: bool,
    /// `stream` only: run just this row, CONNECTIONSxEVENTSxWINDOW (for
    /// example 4x1000x4), for --seconds at --sync, with no baselines: a
    /// steady load to profile the daemon under (its pid is printed).
    #[arg(long, value_name = "CxExW", global = true)]
    row: Option<String>,
    /// With --row: how long to run.
    #[arg(long, default_value_t = 20, global = true)]
    seconds: u64,
    /// With --row: the daemon's sync mode (normal or full).
    #[arg(long, default_value = "normal", global = true)]
    sync: String,
}

#[derive(Subcommand, Clone, Copy, PartialEq, Eq)]
enum What {
    /// Everything below.
    All,
    /// Wall time of one telemetry-emit run vs `true` and `logger -u`; in-process acked emit latency.
    Shim,
    /// Wall time of the shim run that finds no daemon and starts one vs a normal shim run and `true`.
    Autostart,
    /// Acked events per second with 1, 8 and 64 connections vs raw SQLite.
    Ingest,
    /// Streaming clients (windows of requests in flight) vs raw SQLite in 1000-row transactions and syslog-ng; CPU and instructions per acked event.
    Stream,
    /// RSS, CPU and wakeups of an idle daemon.
    Idle,
    /// Upload a large backlog to the S3 test server; ingest and status with it pending.
    Backlog,
    /// telemetry-broker grants and uploads through it vs the S3 server's own PUT rate.
    Broker,
    /// Per-event cost of the Rust, Go, Node and Python clients in process vs exec'ing the shim.
    Sdks,
    /// Bytes per event in S3; telemetry-report's rate and peak RSS at 1M and 10M events vs reading the objects (docs/SCALE.md).
    Report,
}

const T: Duration = Duration::from_secs(60);

fn main() -> Result<()> {
    let cli = Cli::parse();
    build_binaries()?;
    println!("machine: {} cores, {}", cores(), uname());
    let run = |w: What| cli.what == What::All || cli.what == w;
    if run(What::Shim) {
        shim(cli.quick)?;
    }
    if run(What::Autostart) {
        autostart(cli.quick)?;
    }
    if run(What::Ingest) {
        ingest(cli.quick)?;
    }
    if run(What::Stream) {
        match &cli.row {
            Some(row) => stream::row(row, cli.seconds, &cli.sync)?,
            None => stream::run(cli.quick)?,
        }
    }
    if run(What::Idle) {
        idle(cli.quick)?;
    }
    if run(What::Backlog) {
        backlog(cli.quick)?;
    }
    if run(What::Broker) {
        broker::run(cli.quick)?;
    }
    if run(What::Sdks) {
        sdks::run(cli.quick)?;
    }
    if run(What::Report) {
        scale::run(cli.quick)?;
    }
    Ok(())
}

/// The daemon and shims must be builds of this binary's profile next to it
/// (`bin()` looks beside this executable): release for figures; a debug
/// run is a smoke test, and says so.
fn build_binaries() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec!["build", "-q", "--workspace", "--bins"];
    if cfg!(debug_assertions) {
        println!("profile: debug (a smoke run; figures need --release)");
    } else {
        args.push("--release");
    }
    let status = Command::new(cargo)
        // The whole workspace, as the README builds it: building only some
        // packages unifies features differently and relinks everything.
        .args(&args)
        .status()
        .context("run cargo build for the binaries")?;
    if !status.success() {
        bail!("building the release binaries failed");
    }
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn uname() -> String {
    Command::new("uname")
        .arg("-srm")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: f64) -> String {
    format!("{:.3} ms", d * 1e3)
}

/// 0..n in an order that depends on `seed` (Fisher-Yates over xorshift;
/// a benchmark needs no better randomness).
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

/// Wall time of one run of `cmd` (seconds); fails if it fails.
fn time_one(mut cmd: Command) -> Result<f64> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let t = Instant::now();
    let status = cmd.status().context("run command")?;
    let took = t.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(took)
}

fn env(sync: &str) -> DaemonEnv {
    let mut env = DaemonEnv::new(Destination::Outbox);
    env.extra.push(("TELEMETRY_SYNC".into(), sync.into()));
    env
}

fn one(n: i64) -> WireEvent {
    let mut data = BTreeMap::new();
    data.insert("duration_s".to_string(), Value::Int(n % 86400));
    data.insert("success".to_string(), Value::Bool(n % 3 != 0));
    event("cfdev", "start_end", "1.4.2", data)
}

fn shim(quick: bool) -> Result<()> {
    let n = if quick { 30 } else { 300 };
    println!("\n## 1. Shim cost ({n} rounds, median wall time; the runs of a round are interleaved in a fresh order each round, so load drift and idle time hit every row alike)");
    let sock_dir = tempfile::tempdir()?;
    let sock = sock_dir.path().join("log.sock");
    let sink = UnixDatagram::bind(&sock)?;
    // Drain what logger sends so its socket never fills.
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while sink.recv(&mut buf).is_ok() {}
    });
    let envs = [env("full"), env("normal")];
    let daemons: Vec<Daemon> = envs.iter().map(|e| e.start()).collect();
    let emit = |env: &DaemonEnv, flag: Option<&str>| {
        let mut c = env.command("telemetry-emit");
        c.args(["--product", "cfdev", "--timeout-ms", "2000"]);
        c.args(flag);
        c.args(["app_created", "buildpack=go"]);
        c
    };
    let names = [
        "`true`",
        "`logger -u`",
        "`telemetry-emit` (sync=full)",
        "`telemetry-emit --strict` (sync=full)",
        "`telemetry-emit` (sync=normal)",
        "`telemetry-emit --strict` (sync=normal)",
        "`telemetry-emit --no-wait` (sync=full)",
    ];
    const NO_WAIT: usize = 6;
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(n); names.len()];
    for round in 0..n {
        let mut logger = Command::new("logger");
        logger.arg("-u").arg(&sock).arg("app_created buildpack=go");
        let cmds = [
            Command::new("true"),
            logger,
            emit(&envs[0], None),
            emit(&envs[0], Some("--strict")),
            emit(&envs[1], None),
            emit(&envs[1], Some("--strict")),
            emit(&envs[0], Some("--no-wait")),
        ];
        // A fresh order each round: a run right after another on the same
        // daemon finds it awake, one after a pause finds it asleep, and no
        // row should always get the same neighbour.
        let mut cmds = cmds.map(Some);
        for i in shuffled(cmds.len(), round as u64) {
            let c = cmds[i].take().expect("each row runs once a round");
            times[i].push(time_one(c)?);
            if i == NO_WAIT {
                // That shim left before its event was committed: wait for
                // the commit here, untimed, or the next run would pay it.
                daemons[0].client().emit(vec![one(round as i64)], T)?;
            }
        }
    }
    let medians: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
    let (mt, ml) = (medians[0], medians[1]);
    println!("| run | median | ÷ true | ÷ logger |\n|---|---|---|---|");
    for (name, m) in names.iter().zip(&medians) {
        println!("| {name} | {} | {:.2} | {:.2} |", ms(*m), m / mt, m / ml);
    }
    first_byte(&envs[0], n)?;
    // In-process client: one connection, acked emits back to back, next
    // to the fsync floor measured on the same file system.
    let (f50, f99) = fsync_floor(n * 10, None)?;
    println!(
        "\nfsync floor (4 KiB write + fdatasync, {} runs): p50 {} p99 {}",
        n * 10,
        ms(f50),
        ms(f99)
    );
    // A shim's commit finds the disk idle: on a VM the first flush after a
    // pause costs several times one in a busy loop, and that, not the
    // daemon, is most of what sync=full adds to a shim run.
    let pause = Duration::from_millis(2);
    let (p50, p99) = fsync_floor(n, Some(pause))?;
    println!(
        "fsync floor after a {} ms pause each (the disk idle, as between two shim runs; {n} runs): p50 {} p99 {}",
        pause.as_millis(),
        ms(p50),
        ms(p99)
    );
    // The same emits to the lockstep server (same rows, schema and sync;
    // one thread, no handoffs, no checks), interleaved one for one: about
    // the least an acked emit over a socket costs on this machine.
    println!("| in-process acked emit | p50 | p99 | lockstep server p50 | p99 | p99 ÷ lockstep p99 | p99 ÷ fsync p99 |\n|---|---|---|---|---|---|---|");
    for (sync, daemon) in ["full", "normal"].iter().zip(&daemons) {
        let mut c = daemon.client();
        let server = Lockstep::start(sync, 1, wal_for(sync), false)?;
        let mut ideal = Client::connect(&server.path)?;
        let (mut lat, mut floor) = (Vec::with_capacity(n * 10), Vec::with_capacity(n * 10));
        for i in 0..(n * 10) as i64 {
            let t = Instant::now();
            c.emit(vec![one(i)], T)?;
            lat.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            ideal.emit(vec![one(i)], T)?;
            floor.push(t.elapsed().as_secs_f64());
        }
        drop(ideal);
        server.finish()?;
        let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
        let (l50, l99) = (pct(&mut floor, 0.5), pct(&mut floor, 0.99));
        println!(
            "| sync={sync} | {} | {} | {} | {} | {:.2} | {:.2} |",
            ms(p50),
            ms(p99),
            ms(l50),
            ms(l99),
            p99 / l99,
            p99 / f99
        );
    }
    Ok(())
}

/// The shim's time to its first byte sent: the bench listens on a socket
/// of its own in the daemon's place, spawns `telemetry-emit --strict`
/// pointed at it and takes the time from the spawn to the first byte read
/// (then answers as the daemon would, so the shim exits 0), against the
/// wall time of spawning `true` and waiting for it, interleaved round by
/// round. Everything before the first byte is the shim's own: exec,
/// start-up, arguments, consent files, connect.
fn first_byte(env: &DaemonEnv, n: usize) -> Result<()> {
    use std::io::Read;
    use telemetry_proto::{encode_frame, Response};
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("first-byte.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    let ack = encode_frame(&Response::Ack {
        accepted: 1,
        duplicates: 0,
    })?;
    let (mut first, mut truth) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let mut cmd = env.command("telemetry-emit");
        cmd.env("TELEMETRY_SOCKET", &path)
            .args(["--product", "cfdev", "--strict", "--timeout-ms", "2000"])
            .args(["app_created", "buildpack=go"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let t = Instant::now();
        let mut child = cmd.spawn().context("spawn telemetry-emit")?;
        let (mut s, _) = listener.accept()?;
        let mut head = [0u8; 4];
        s.read_exact(&mut head[..1])?;
        first.push(t.elapsed().as_secs_f64());
        s.read_exact(&mut head[1..])?;
        let mut body = vec![0u8; u32::from_be_bytes(head) as usize];
        s.read_exact(&mut body)?;
        s.write_all(&ack)?;
        if !child.wait()?.success() {
            bail!("telemetry-emit --strict failed against the bench's socket");
        }
        truth.push(time_one(Command::new("true"))?);
    }
    let (f, t) = (median(&mut first), median(&mut truth));
    println!(
        "
shim's time to its first byte sent (spawn to first byte read, {n} runs): {} (÷ `true`'s whole run {}: {:.2})",
        ms(f),
        ms(t),
        f / t
    );
    Ok(())
}

/// The shim's cost on the run that starts the daemon (no daemon, no
/// service manager: it spools the event and starts `telemetryd` detached),
/// against a shim run with the daemon up and `true`, in the same rounds.
/// Each starting run gets a fresh state dir (no rate limit in the way);
/// after it, untimed, the bench waits until that daemon serves and stops
/// it, so its start-up does not load the next run.
fn autostart(quick: bool) -> Result<()> {
    let n = if quick { 10 } else { 100 };
    println!("\n## 1b. Shim cost on the run that starts the daemon ({n} rounds, median wall time, rows in a fresh order each round)");
    let warm = env("full");
    let _daemon = warm.start();
    let emit = |env: &DaemonEnv| {
        let mut c = env.command("telemetry-emit");
        c.args(["--product", "cfdev", "app_created", "buildpack=go"]);
        c
    };
    let names = [
        "`true`",
        "`telemetry-emit`, daemon running (sync=full)",
        "`telemetry-emit`, no daemon: spools, starts `telemetryd`",
    ];
    const STARTS: usize = 2;
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(n); names.len()];
    for round in 0..n {
        let cold = env("full");
        let mut starting = emit(&cold);
        starting.env("TELEMETRY_AUTOSTART", "1");
        let mut cmds = [
            Some(Command::new("true")),
            Some(emit(&warm)),
            Some(starting),
        ];
        for i in shuffled(cmds.len(), round as u64) {
            let c = cmds[i].take().expect("each row runs once a round");
            times[i].push(time_one(c)?);
            if i == STARTS {
                stop_autostarted(&cold)?;
            }
        }
    }
    let medians: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
    println!("| run | median | ÷ true | ÷ shim, daemon running |\n|---|---|---|---|");
    for (name, m) in names.iter().zip(&medians) {
        println!(
            "| {name} | {} | {:.2} | {:.2} |",
            ms(*m),
            m / medians[0],
            m / medians[1]
        );
    }
    Ok(())
}

/// Wait until the daemon a shim started in `env` serves, then SIGTERM it
/// (it is not our child: its pid is in its log) and wait until it is gone.
fn stop_autostarted(env: &DaemonEnv) -> Result<()> {
    let deadline = Instant::now() + T;
    while Client::connect(&env.socket)
        .and_then(|mut c| c.status(Duration::from_secs(2)))
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("the autostarted telemetryd did not serve within {T:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let log = std::fs::read_to_string(env.state.join("telemetryd.log"))?;
    let pid = log
        .split(" pid=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .context("no pid in the autostarted daemon's log")?
        .to_string();
    Command::new("kill").arg(&pid).status()?;
    // Gone, or a zombie waiting for an init that may not reap.
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    }) {
        if Instant::now() > deadline {
            bail!("the autostarted telemetryd {pid} did not exit");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Acked events per second from `conns` connections, one event per request.
fn ingest_rate(daemon: &Daemon, conns: usize, total: usize) -> Result<f64> {
    drive(&daemon.socket, conns, total)
}

/// `conns` client threads, each sending `total / conns` acked emits (one
/// event each) over its own connection to `socket`; acked events per second.
fn drive(socket: &std::path::Path, conns: usize, total: usize) -> Result<f64> {
    let per = total / conns;
    let start = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|k| {
            let socket = socket.to_path_buf();
            std::thread::spawn(move || -> Result<()> {
                let mut c = Client::connect(&socket)?;
                for i in 0..per {
                    c.emit(vec![one((k * per + i) as i64)], T)?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread")?;
    }
    Ok((per * conns) as f64 / start.elapsed().as_secs_f64())
}

/// How a baseline's WAL is checkpointed. The daemon checkpoints on its own
/// thread, so its commits reuse the WAL file (overwriting pages) without
/// paying for checkpoints. A single connection cannot have both: with
/// `Grow` the WAL is never checkpointed and every commit appends to it;
/// with `Reuse` SQLite's automatic checkpoint keeps it small and some
/// commits pay for a checkpoint. Each ceiling takes the faster of the two
/// for its sync mode (measured on this machine: see [`wal_for`]).
#[derive(Clone, Copy)]
enum Wal {
    Grow,
    Reuse,
}

/// With sync=full every commit is fsynced, and overwriting a reused WAL is
/// cheaper to fsync than growing one (no file size to record): `Reuse` ran
/// 1.3-1.9x faster than `Grow` in transactions of 8 rows (three runs of
/// each, 2026-11-27). With sync=normal nothing is fsynced per commit and
/// the checkpoints are pure cost: `Grow` ran 1.1-1.5x faster.
fn wal_for(sync: &str) -> Wal {
    if sync == "full" {
        Wal::Reuse
    } else {
        Wal::Grow
    }
}

/// A database with the daemon's schema (its migrations), journal and sync
/// settings.
fn raw_db(dir: &std::path::Path, sync: &str, wal: Wal) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(dir.join("raw.sqlite3"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", sync.to_uppercase())?;
    if let Wal::Grow = wal {
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    }
    for step in telemetryd::store::MIGRATIONS {
        conn.execute_batch(step)?;
    }
    Ok(conn)
}

/// The daemon's insert statements: the id into the current generation of
/// seen ids unless a generation has it, then, for a new id, the row.
const SEEN: &str = "INSERT OR IGNORE INTO seen_ids_a (id, product) SELECT ?1, ?2
     WHERE NOT EXISTS (SELECT 1 FROM seen_ids_b WHERE id = ?1)";
const INSERT: &str = "INSERT INTO events (id, product, line, received_us, local_only)
     VALUES (?1, ?2, ?3, ?4, ?5)";

fn insert_all(conn: &mut rusqlite::Connection, rows: &[telemetryd::record::Record]) -> Result<()> {
    let tx = conn.transaction()?;
    {
        let mut seen = tx.prepare_cached(SEEN)?;
        let mut st = tx.prepare_cached(INSERT)?;
        for r in rows {
            if seen.execute(rusqlite::params![&r.id[..], r.product])? == 1 {
                st.execute(rusqlite::params![&r.id[..], r.product, r.line, 0, false])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

fn render(ev: &WireEvent) -> telemetryd::record::Record {
    let machine = "0".repeat(64);
    telemetryd::record::render(ev, &machine, std::env::consts::OS, std::env::consts::ARCH)
}

/// A second ceiling: the simplest server for clients that each wait for
/// their ack before sending again. One thread serves its connections in
/// lockstep — read one request from each, decode it, insert every event in
/// one transaction (same rows, schema, statement and sync as the daemon),
/// write one ack to each. It groups perfectly and has no handoff between
/// threads, no validation, no consent or catalogue check; what it pays
/// beyond the raw loop is mostly the clients' round trip, which no socket
/// server avoids. (With many clients on few cores, waiting for the slowest
/// client each round costs it too, so there it is a yardstick, not a bound.)
struct Lockstep {
    path: std::path::PathBuf,
    server: std::thread::JoinHandle<Result<Usage>>,
    _dir: tempfile::TempDir,
}

impl Lockstep {
    /// Listen, and serve once `conns` clients have connected. With
    /// `checks`, each request also pays what the daemon must do before it
    /// stores anything ([`Checks`]).
    fn start(sync: &str, conns: usize, wal: Wal, checks: bool) -> Result<Lockstep> {
        use std::io::Read;
        use telemetry_proto::{decode_body, encode_frame, Request, Response};
        let dir = tempfile::tempdir()?;
        let checks = checks.then(|| Checks::new(dir.path())).transpose()?;
        let mut conn = raw_db(dir.path(), sync, wal)?;
        let path = dir.path().join("lockstep.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path)?;
        let server = std::thread::spawn(move || -> Result<Usage> {
            let mut socks = (0..conns)
                .map(|_| listener.accept().map(|(s, _)| s))
                .collect::<Result<Vec<_>, _>>()?;
            let ack = encode_frame(&Response::Ack {
                accepted: 1,
                duplicates: 0,
            })?;
            // Counted from the first request on (not the accepts).
            let start = Usage::of_thread();
            loop {
                let (mut rows, mut live) = (Vec::new(), Vec::new());
                for (i, s) in socks.iter_mut().enumerate() {
                    let mut len = [0u8; 4];
                    if s.read_exact(&mut len).is_err() {
                        continue; // that client is done
                    }
                    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                    s.read_exact(&mut body)?;
                    if let Request::Emit { events, .. } = decode_body(&body)? {
                        if let Some(c) = &checks {
                            c.check(&events)?;
                        }
                        rows.extend(events.iter().map(render));
                    }
                    live.push(i);
                }
                if live.is_empty() {
                    return Ok(Usage::of_thread().since(&start));
                }
                insert_all(&mut conn, &rows)?;
                for i in live {
                    socks[i].write_all(&ack)?;
                }
            }
        });
        Ok(Lockstep {
            path,
            server,
            _dir: dir,
        })
    }

    /// Wait until every client has gone; what the server thread used.
    fn finish(self) -> Result<Usage> {
        self.server.join().expect("lockstep server thread")
    }
}

/// Part of what the daemon does for every request before storing it:
/// validate each event, and look at both consent files (a decision
/// changed by the user applies to the very next event); not its catalogue,
/// identity and consented-set lookups. A [`Lockstep`] server that pays
/// these bounds from above what a server reading and committing on one
/// thread could make of the daemon's obligations.
struct Checks {
    user: std::path::PathBuf,
    system: std::path::PathBuf,
    limits: telemetry_proto::Limits,
}

impl Checks {
    fn new(dir: &std::path::Path) -> Result<Checks> {
        let user = dir.join("consent");
        std::fs::write(&user, "cfdev on\n")?;
        Ok(Checks {
            user,
            // As on most machines: no machine-wide decision.
            system: dir.join("system-consent"),
            limits: telemetry_proto::Limits::default(),
        })
    }

    fn check(&self, events: &[WireEvent]) -> Result<()> {
        for ev in events {
            telemetry_proto::validate_event(ev, &self.limits)?;
        }
        let user = std::fs::metadata(&self.user).map(|m| m.len());
        let system = std::fs::metadata(&self.system).map(|m| m.len());
        if user.is_err() || system.is_ok() {
            bail!("the checked lockstep server's consent files changed");
        }
        Ok(())
    }
}

/// CPU time and context switches, of a thread or a whole process.
#[derive(Clone, Copy, Default)]
struct Usage {
    cpu: f64,
    switches: u64,
}

impl Usage {
    /// The calling thread's, so far.
    fn of_thread() -> Usage {
        // SAFETY: getrusage only writes the struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Usage {
            cpu: secs(ru.ru_utime) + secs(ru.ru_stime),
            switches: (ru.ru_nvcsw + ru.ru_nivcsw) as u64,
        }
    }

    /// Every thread of `pid`'s, so far: CPU seconds from the process's
    /// CPU clock (nanoseconds, where `/proc`'s ticks are 10 ms: a quick
    /// round lasts a few of them), and switches per live thread, as
    /// [`switches`] counts them.
    fn of_process(pid: u32) -> (f64, BTreeMap<String, u64>) {
        (
            process_cpu(pid).unwrap_or_else(|| stream::cpu_seconds(pid)),
            switches(pid),
        )
    }

    fn since(&self, start: &Usage) -> Usage {
        Usage {
            cpu: self.cpu - start.cpu,
            switches: self.switches.saturating_sub(start.switches),
        }
    }

    /// Per event, as (CPU µs, switches).
    fn per_event(&self, events: usize) -> (f64, f64) {
        let n = events.max(1) as f64;
        (self.cpu / n * 1e6, self.switches as f64 / n)
    }
}

/// CPU seconds `pid` has used so far, all its threads (those gone too),
/// from its CPU-time clock.
fn process_cpu(pid: u32) -> Option<f64> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: both calls only write the values they are given.
    if unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) } != 0 {
        return None;
    }
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
}

/// Acked events per second through a [`Lockstep`] server whose WAL is
/// handled as `wal` says, and what its thread used.
fn lockstep_rate(
    sync: &str,
    conns: usize,
    total: usize,
    checks: bool,
    wal: Wal,
) -> Result<(f64, Usage)> {
    let server = Lockstep::start(sync, conns, wal, checks)?;
    match drive(&server.path, conns, total) {
        Ok(rate) => Ok((rate, server.finish()?)),
        // The clients only see the server hang up: its own error says why.
        Err(e) => Err(server.finish().err().unwrap_or(e)),
    }
}

/// Raw SQLite: the same rows (the lines the daemon renders for these
/// events), the daemon's own schema, statement, journal and sync settings,
/// in transactions of `batch` rows.
fn raw_rate(sync: &str, total: usize, batch: usize) -> Result<f64> {
    let rows: Vec<_> = (0..total as i64).map(|i| render(&one(i))).collect();
    let dir = tempfile::tempdir()?;
    let mut conn = raw_db(dir.path(), sync, wal_for(sync))?;
    let start = Instant::now();
    for chunk in rows.chunks(batch) {
        insert_all(&mut conn, chunk)?;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// p50 and p99 of one 4 KiB overwrite + fdatasync in a temp dir on the
/// same file system as the daemon's state: the floor under any commit that
/// survives power loss. The page is overwritten in place, so no sync also
/// has to record a new file size. With `pause`, the disk idles that long
/// before each write.
fn fsync_floor(n: usize, pause: Option<Duration>) -> Result<(f64, f64)> {
    use std::os::unix::fs::FileExt as _;
    let dir = tempfile::tempdir()?;
    let f = std::fs::File::create(dir.path().join("fsync"))?;
    let page = [0u8; 4096];
    f.write_all_at(&page, 0)?;
    f.sync_all()?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        if let Some(p) = pause {
            std::thread::sleep(p);
        }
        f.write_all_at(&page, 0)?;
        let t = Instant::now();
        f.sync_data()?;
        v.push(t.elapsed().as_secs_f64());
    }
    Ok((pct(&mut v, 0.5), pct(&mut v, 0.99)))
}

fn ingest(quick: bool) -> Result<()> {
    let total = if quick { 2_000 } else { 20_000 };
    let rounds = 3;
    println!("\n## 2. Ingest throughput ({total} acked events, one per request, in {rounds} rounds alternating with the raw runs; medians)");
    println!("| sync | connections | daemon ev/s | raw SQLite ev/s (same batch size) | ratio | lockstep server ev/s | ratio | raw, 1000-row batches | ratio | CPU µs/event, daemon ÷ lockstep | switches/event, daemon ÷ lockstep | lockstep with the daemon's checks, ev/s | ratio | lockstep with a bounded WAL, ev/s | ratio |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for sync in ["full", "normal"] {
        for conns in [1usize, 8, 64] {
            let env = env(sync);
            let daemon = env.start();
            // Alternate daemon and raw runs so a change in the machine's
            // load hits both sides of the ratio alike.
            let (mut rate, mut raw_same, mut lockstep, mut raw_big) =
                (vec![], vec![], vec![], vec![]);
            // What each server used for its events, summed over the rounds
            // (the daemon's over all its threads: the checkpoints and
            // uploads made while the clients send are its work too).
            let (mut daemon_use, mut lockstep_use) = (Usage::default(), Usage::default());
            let (mut checked, mut bounded) = (vec![], vec![]);
            for _ in 0..rounds {
                let before = Usage::of_process(daemon.pid());
                rate.push(ingest_rate(&daemon, conns, total / rounds)?);
                let after = Usage::of_process(daemon.pid());
                daemon_use.cpu += after.0 - before.0;
                daemon_use.switches += switch_delta(&before.1, &after.1);
                // Group commit makes one transaction of about `conns` events.
                raw_same.push(raw_rate(sync, total / rounds, conns)?);
                let (r, used) = lockstep_rate(sync, conns, total / rounds, false, wal_for(sync))?;
                lockstep.push(r);
                lockstep_use.cpu += used.cpu;
                lockstep_use.switches += used.switches;
                raw_big.push(raw_rate(sync, total / rounds, 1000)?);
                checked.push(lockstep_rate(sync, conns, total / rounds, true, wal_for(sync))?.0);
                // At sync=normal the lockstep server above lets its WAL grow
                // and never syncs it: faster, but no long-running server
                // may do that (the disk fills, and a power cut takes
                // everything since the start). This one keeps SQLite's
                // automatic checkpoint, which bounds the WAL and syncs it
                // every 1,000 pages, about what the daemon's checkpoint
                // thread does (every 128 commits or 1 s). At sync=full the
                // server above already does.
                if let Wal::Grow = wal_for(sync) {
                    bounded.push(lockstep_rate(sync, conns, total / rounds, false, Wal::Reuse)?.0);
                }
            }
            let checked = median(&mut checked);
            let events = total / rounds / conns * conns * rounds;
            let (d_cpu, d_sw) = daemon_use.per_event(events);
            let (l_cpu, l_sw) = lockstep_use.per_event(events);
            let (rate, raw_same, lockstep, raw_big) = (
                median(&mut rate),
                median(&mut raw_same),
                median(&mut lockstep),
                median(&mut raw_big),
            );
            let bounded = if bounded.is_empty() {
                "as the lockstep server's | –".to_string()
            } else {
                let b = median(&mut bounded);
                format!("{b:.0} | {:.2}", rate / b)
            };
            println!(
                "| {sync} | {conns} | {rate:.0} | {raw_same:.0} | {:.2} | {lockstep:.0} | {:.2} | {raw_big:.0} | {:.2} | {d_cpu:.1} ÷ {l_cpu:.1} | {d_sw:.2} ÷ {l_sw:.2} | {checked:.0} | {:.2} | {bounded} |",
                rate / raw_same,
                rate / lockstep,
                rate / raw_big,
                rate / checked
            );
        }
    }
    Ok(())
}

/// Context switches per thread of `pid` (tid → voluntary + involuntary).
fn switches(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            let n: u64 = s
                .lines()
                .filter(|l| {
                    l.starts_with("voluntary_ctxt_switches")
                        || l.starts_with("nonvoluntary_ctxt_switches")
                })
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
            out.insert(t.file_name().to_string_lossy().into_owned(), n);
        }
    }
    out
}

/// Context switches between two samples, per thread, so a thread that
/// starts in between is counted from zero; one that ends in between takes
/// its switches with it (the daemon's threads live as long as it does).
fn switch_delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> u64 {
    after
        .iter()
        .map(|(tid, n)| n.saturating_sub(*before.get(tid).unwrap_or(&0)))
        .sum()
}

/// (VmRSS, VmHWM) in KiB and CPU ticks of `pid`.
fn proc_stats(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let ticks = stat
        .rfind(')')
        .map(|i| {
            let f: Vec<&str> = stat[i + 2..].split_whitespace().collect();
            f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0)
        })
        .unwrap_or(0);
    (field("VmRSS:"), field("VmHWM:"), ticks)
}

fn idle(quick: bool) -> Result<()> {
    let secs = if quick { 10 } else { 60 };
    println!("\n## 3. Idle cost ({secs} s after one emit and flush; baseline: `sleep` in the same window)");
    let mut env = env("full");
    if quick {
        // So that the trim falls inside the short window too.
        env.extra
            .push(("TELEMETRY_IDLE_TRIM".to_string(), "5s".to_string()));
    }
    let daemon = env.start();
    daemon.client().emit(vec![one(1)], T)?;
    daemon.client().flush(T)?;
    let mut sleeper = Command::new("sleep").arg(format!("{}", secs + 5)).spawn()?;
    std::thread::sleep(Duration::from_secs(2));
    let (rss0, _, cpu0) = proc_stats(daemon.pid());
    let (srss, _, _) = proc_stats(sleeper.id());
    let (sw0, ssw0) = (switches(daemon.pid()), switches(sleeper.id()));
    std::thread::sleep(Duration::from_secs(secs));
    let (rss1, hwm, cpu1) = proc_stats(daemon.pid());
    let (sw1, ssw1) = (switches(daemon.pid()), switches(sleeper.id()));
    // The daemon hands its code back once, `idle_trim` (30 s; 5 s when
    // quick) into the quiet, inside the window above; a second window
    // shows that nothing wakes it after that.
    let later = if quick { 5 } else { 30 };
    std::thread::sleep(Duration::from_secs(later));
    let sw2 = switches(daemon.pid());
    let (rss2, _, _) = proc_stats(daemon.pid());
    let _ = sleeper.kill();
    println!("| figure | telemetryd | sleep(1) |\n|---|---|---|");
    println!(
        "| RSS | {:.1} MiB (peak {:.1} MiB; at start {:.1}) | {:.1} MiB |",
        rss1 as f64 / 1024.0,
        hwm as f64 / 1024.0,
        rss0 as f64 / 1024.0,
        srss as f64 / 1024.0
    );
    println!("| CPU time | {} ticks | - |", cpu1 - cpu0);
    println!(
        "| context switches, all threads (wakeups) | {} (the one-off trim of its code included) | {} |",
        switch_delta(&sw0, &sw1),
        switch_delta(&ssw0, &ssw1)
    );
    println!(
        "| the next {later} s: context switches; RSS | {}; {:.1} MiB | - |",
        switch_delta(&sw1, &sw2),
        rss2 as f64 / 1024.0
    );
    Ok(())
}

fn backlog(quick: bool) -> Result<()> {
    let total: usize = if quick { 50_000 } else { 1_000_000 };
    println!("\n## 4 & 5. Backlog of {total} events to the S3 test server; growth");
    let s3 = S3Server::start();
    let mut env = DaemonEnv::new(Destination::S3 {
        endpoint: s3.endpoint.clone(),
        secret: SECRET_KEY.into(),
    });
    env.extra.extend([
        ("TELEMETRY_SYNC".to_string(), "full".to_string()),
        (
            "TELEMETRY_MAX_STORE_BYTES".to_string(),
            "2000000000".to_string(),
        ),
        (
            "TELEMETRY_BATCH_MAX_EVENTS".to_string(),
            "10000".to_string(),
        ),
        (
            "TELEMETRY_BATCH_MAX_BYTES".to_string(),
            "8000000".to_string(),
        ),
    ]);
    // Keep the backlog: pretend the destination is down while filling.
    s3.set_fault(telemetry_tests::Fault::Down);
    let daemon = env.start();
    let probe = 4_000;
    let empty_rate = ingest_rate(&daemon, 8, probe)?;
    let status_empty = status_latency(&daemon, 200)?;
    // Fill in requests of 500 events (about 36 KiB, under the frame limit)
    // from 4 connections.
    let start = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|k| {
            let socket = daemon.socket.clone();
            std::thread::spawn(move || -> Result<()> {
                let mut c = Client::connect(&socket)?;
                let mut i = 0;
                while i < total / 4 {
                    let batch: Vec<_> = (0..500).map(|j| one((k * total + i + j) as i64)).collect();
                    c.emit(batch, T)?;
                    i += 500;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().expect("filler")?;
    }
    let fill = start.elapsed().as_secs_f64();
    let full_rate = ingest_rate(&daemon, 8, probe)?;
    let status_full = status_latency(&daemon, 200)?;
    let pending = daemon.client().status(T)?;
    println!(
        "filled {} events in {:.1} s ({:.0} ev/s in 500-event requests)",
        pending.pending_events,
        fill,
        pending.pending_events as f64 / fill
    );
    println!(
        "| figure | empty store | {} pending | ratio |\n|---|---|---|---|",
        pending.pending_events
    );
    println!(
        "| ingest, 8 connections (ev/s) | {empty_rate:.0} | {full_rate:.0} | {:.2} |",
        full_rate / empty_rate
    );
    println!(
        "| status latency (median) | {} | {} | {:.2} |",
        ms(status_empty),
        ms(status_full),
        status_full / status_empty
    );

    s3.set_fault(telemetry_tests::Fault::None);
    let (_, hwm_before, _) = proc_stats(daemon.pid());
    let t = Instant::now();
    let report = daemon.client().flush(Duration::from_secs(3600))?;
    let up = t.elapsed().as_secs_f64();
    let (_, hwm, _) = proc_stats(daemon.pid());
    println!("| upload figure | value |\n|---|---|");
    println!(
        "| events uploaded | {} in {} objects |",
        report.events,
        report.keys.len()
    );
    println!(
        "| upload rate | {:.0} ev/s ({:.1} s) |",
        report.events as f64 / up,
        up
    );
    println!(
        "| compression (NDJSON bytes ÷ uploaded bytes) | {:.1}× |",
        pending.pending_bytes as f64 / report.bytes as f64
    );
    println!(
        "| daemon peak RSS | {:.1} MiB (before the upload: {:.1} MiB) |",
        hwm as f64 / 1024.0,
        hwm_before as f64 / 1024.0
    );
    let _ = std::io::stdout().flush();
    Ok(())
}

fn status_latency(daemon: &Daemon, n: usize) -> Result<f64> {
    let mut c = daemon.client();
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.status(T)?;
        v.push(t.elapsed().as_secs_f64());
    }
    Ok(median(&mut v))
}
