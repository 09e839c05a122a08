//! `telemetry-bench report`: what the data costs at scale (docs/SCALE.md).
//!
//! - bytes per event in S3, by how many events an object holds (the
//!   daemon's NDJSON lines, zstd level 3 as `telemetryd::batch`);
//! - `telemetry-report` over a directory of 1M and 10M events: events per
//!   second against reading the same objects with nothing counted
//!   (decompress and split lines, single thread: the floor any report
//!   pays), and its peak RSS (from `wait4`).

use anyhow::{bail, Context, Result};
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Events per machine per quarter in the generated data: a CLI used a few
/// times a week.
const EVENTS_PER_MACHINE: usize = 100;

/// One daemon's NDJSON line for event `i` of `machine`: the fields and
/// lengths the daemon writes (a UUID, 64-hex machine ID, RFC 3339 with
/// microseconds), cfdev's events and data.
fn line(rng: &mut fastrand::Rng, machine: &str, day: u32, i: u64) -> String {
    let (event, data) = match rng.u32(0..10) {
        0..=2 => (
            "start_end",
            format!(
                r#"{{"duration_s":{},"success":{}}}"#,
                rng.u32(20..900),
                rng.u32(0..10) < 9
            ),
        ),
        3..=4 => ("start_begin", "{}".to_string()),
        5..=6 => (
            "app_created",
            format!(
                r#"{{"buildpack":"{}"}}"#,
                ["go", "java", "nodejs", "python", "ruby"][rng.usize(0..5)]
            ),
        ),
        7 => ("error", r#"{"kind":"timeout"}"#.to_string()),
        8 => ("stop", "{}".to_string()),
        _ => ("service_created", r#"{"service":"mysql"}"#.to_string()),
    };
    let (month, d) = (10 + (day / 31).min(2), 1 + day % 28);
    format!(
        r#"{{"id":"{}","event":"{event}","product":"cfdev","build":"1.{}.0","timestamp":"2026-{month:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z","machine":"{machine}","os":"{}","arch":"x86_64","data":{data}}}"#,
        uuid::Uuid::from_u64_pair(rng.u64(..), i),
        rng.u32(0..4),
        rng.u32(0..24),
        rng.u32(0..60),
        rng.u32(0..60),
        rng.u32(0..1_000_000),
        ["linux", "macos", "windows"][rng.usize(0..3)],
    )
}

fn machine_id(m: usize) -> String {
    format!("{:016x}{:048x}", m as u64 * 0x9e37_79b9_7f4a_7c15, m)
}

/// Bytes per event compressed, by events per object.
fn bytes_per_event() -> Result<()> {
    println!("\n== bytes per event in S3 (NDJSON + zstd level 3, the daemon's encoding)");
    println!("events/object  NDJSON B/event  zstd B/event  ratio");
    let mut rng = fastrand::Rng::with_seed(7);
    let machine = machine_id(1);
    for per in [1usize, 10, 100, 1000, 10_000] {
        let objects = (20_000 / per).max(5);
        let (mut raw, mut z) = (0usize, 0usize);
        for o in 0..objects {
            let mut body = String::new();
            for i in 0..per {
                body += &line(&mut rng, &machine, (o % 90) as u32, i as u64);
                body.push('\n');
            }
            raw += body.len();
            z += zstd::stream::encode_all(body.as_bytes(), 3)?.len();
        }
        let n = (objects * per) as f64;
        println!(
            "{per:>13}  {:>14.0}  {:>12.1}  {:>5.1}x",
            raw as f64 / n,
            z as f64 / n,
            raw as f64 / z as f64
        );
    }
    Ok(())
}

/// Writes `events` events of `events / EVENTS_PER_MACHINE` machines under
/// `root`, `per_object` events per object; returns (objects, bytes).
fn write_quarter(root: &Path, events: usize, per_object: usize) -> Result<(usize, u64)> {
    let mut rng = fastrand::Rng::with_seed(events as u64);
    let machines = events / EVENTS_PER_MACHINE;
    let (mut objects, mut bytes) = (0, 0u64);
    let mut i = 0u64;
    for m in 0..machines {
        let machine = machine_id(m);
        let mut left = EVENTS_PER_MACHINE;
        let mut first = 1;
        while left > 0 {
            let n = left.min(per_object);
            let day = rng.u32(0..90);
            let mut body = String::with_capacity(n * 330);
            for _ in 0..n {
                i += 1;
                body += &line(&mut rng, &machine, day, i);
                body.push('\n');
            }
            let dt = format!("2026-{:02}-{:02}", 10 + (day / 31).min(2), 1 + day % 28);
            let dir = root.join(format!("v1/product=cfdev/dt={dt}"));
            std::fs::create_dir_all(&dir)?;
            let z = zstd::stream::encode_all(body.as_bytes(), 3)?;
            let last = first + n - 1;
            std::fs::write(
                dir.join(format!("{}-{first}-{last}.ndjson.zst", &machine[..8])),
                &z,
            )?;
            bytes += z.len() as u64;
            objects += 1;
            first = last + 1;
            left -= n;
        }
    }
    Ok((objects, bytes))
}

/// Decompress every object under `root` and count its lines: the floor.
fn read_only(root: &Path) -> Result<u64> {
    let mut lines = 0;
    for path in walk(root)? {
        let file = std::fs::File::open(&path)?;
        let reader = std::io::BufReader::new(zstd::stream::Decoder::new(file)?);
        for l in reader.split(b'\n') {
            l?;
            lines += 1;
        }
    }
    Ok(lines)
}

/// Runs `cmd`, returning (seconds, peak RSS in bytes) from `wait4`.
fn run_measured(mut cmd: Command) -> Result<(f64, u64)> {
    use std::os::unix::process::ExitStatusExt;
    let started = Instant::now();
    let child = cmd.spawn().context("spawn")?;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waiting for the child spawned above, which nothing else waits for.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = started.elapsed().as_secs_f64();
    if r != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let st = std::process::ExitStatus::from_raw(status);
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    // ru_maxrss is in KiB on Linux.
    Ok((secs, usage.ru_maxrss as u64 * 1024))
}

/// The report binary with S3 settings for `server` and a fixed today.
fn report_cmd(server: &telemetry_tests::S3Server, home: &Path) -> Result<Command> {
    std::fs::create_dir_all(home)?;
    std::fs::write(home.join("config.toml"), "")?;
    let mut cmd = Command::new(telemetry_tests::bin("telemetry-report"));
    cmd.env("HOME", home)
        .env("TELEMETRY_CONFIG", home.join("config.toml"))
        .env("TELEMETRY_S3_ENDPOINT", &server.endpoint)
        .env("TELEMETRY_S3_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", telemetry_tests::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", telemetry_tests::SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("TELEMETRY_REPORT_TODAY", "2027-01-15")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    Ok(cmd)
}

/// The report over S3 from many small objects (10 events each, as
/// machines upload them) against the same events compacted: what an
/// object costs on top of its events, on loopback (no network latency:
/// real S3 adds 10-50 ms per GET, hidden 8 at a time).
fn small_objects(quick: bool) -> Result<()> {
    let events = if quick { 20_000 } else { 200_000 };
    println!("\n== small objects: telemetry-report over S3 on 127.0.0.1, {events} events");
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("src");
    let (objects, _) = write_quarter(&root, events, 10)?;
    let mut bodies = Vec::new();
    for f in walk(&root)? {
        let key = format!("raw/{}", f.strip_prefix(&root)?.display());
        bodies.push((key, std::fs::read(&f)?));
    }
    let server = telemetry_tests::S3Server::start();
    server.put_objects(&bodies);
    let bucket = telemetry_tests::BUCKET;
    let home = dir.path().join("home");
    let run = |source: &str, out: &str| -> Result<f64> {
        let mut cmd = report_cmd(&server, &home)?;
        cmd.args([
            "--source",
            &format!("s3://{bucket}/{source}"),
            "--quarter",
            "2026Q4",
        ])
        .args(["--quiet", "--out", dir.path().join(out).to_str().unwrap()]);
        Ok(run_measured(cmd)?.0)
    };
    let raw = run("raw", "out-raw")?;
    let mut cmd = report_cmd(&server, &home)?;
    cmd.args(["compact", "--source", &format!("s3://{bucket}/raw")])
        .args([
            "--into",
            &format!("s3://{bucket}/mirror"),
            "--quarter",
            "2026Q4",
            "--quiet",
        ]);
    let compact = run_measured(cmd)?.0;
    let mirrored = run("mirror", "out-mirror")?;
    let parts = server
        .objects()
        .keys()
        .filter(|k| k.starts_with("mirror/") && k.ends_with(".ndjson.zst"))
        .count();
    println!("source                         objects  report s  objects/s  ratio to mirror");
    println!(
        "raw (10 events per object)    {objects:>8}  {raw:>8.2}  {:>9.0}  {:>6.1}x",
        objects as f64 / raw,
        raw / mirrored
    );
    println!(
        "compacted mirror              {parts:>8}  {mirrored:>8.2}  {:>9.0}  {:>6.1}x",
        parts as f64 / mirrored,
        1.0
    );
    println!(
        "compaction itself: {compact:.2} s ({:.0} objects/s; the test server's LIST walks its whole directory, per day listed)",
        objects as f64 / compact
    );
    // The same compaction between directories: no server in the way.
    let mut cmd = report_cmd(&server, &home)?;
    cmd.args(["compact", "--source", root.to_str().unwrap()])
        .args(["--into", dir.path().join("mirror-dir").to_str().unwrap()])
        .args(["--quarter", "2026Q4", "--quiet"]);
    let local = run_measured(cmd)?.0;
    println!(
        "compaction between directories: {local:.2} s ({:.0} objects/s, {:.0} events/s)",
        objects as f64 / local,
        events as f64 / local
    );
    Ok(())
}

/// Every file under `root`.
fn walk(root: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

pub fn run(quick: bool) -> Result<()> {
    bytes_per_event()?;
    small_objects(quick)?;
    println!("\n== telemetry-report over a directory ({EVENTS_PER_MACHINE} events per machine, 100 per object)");
    println!("events      machines  objects  MB zstd  read-only ev/s  report ev/s  ratio  peak RSS  RSS B/event");
    let sizes: &[usize] = if quick {
        &[100_000, 1_000_000]
    } else {
        &[1_000_000, 10_000_000]
    };
    let report = telemetry_tests::bin("telemetry-report");
    for &events in sizes {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("src");
        let started = Instant::now();
        let (objects, bytes) = write_quarter(&root, events, 100)?;
        eprintln!(
            "  generated {events} events in {objects} objects in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        // Warm the page cache for both runs alike.
        let lines = read_only(&root)?;
        let started = Instant::now();
        let again = read_only(&root)?;
        let floor = again as f64 / started.elapsed().as_secs_f64();
        if lines != events as u64 || again != lines {
            bail!("read {lines} lines, wrote {events}");
        }
        let mut cmd = Command::new(&report);
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home)?;
        std::fs::write(home.join("config.toml"), "")?;
        cmd.env("HOME", &home)
            .env("TELEMETRY_CONFIG", home.join("config.toml"))
            .env("TELEMETRY_REPORT_TODAY", "2027-01-15")
            .args(["--source", root.to_str().unwrap(), "--quarter", "2026Q4"])
            .args(["--quiet", "--out", dir.path().join("out").to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let (secs, rss) = run_measured(cmd)?;
        let rate = events as f64 / secs;
        println!(
            "{events:<10}  {:>8}  {objects:>7}  {:>7.1}  {floor:>14.0}  {rate:>11.0}  {:>4.2}x  {:>5.0} MB  {:>11.1}",
            events / EVENTS_PER_MACHINE,
            bytes as f64 / 1e6,
            rate / floor,
            rss as f64 / 1e6,
            rss as f64 / events as f64,
        );
        let _ = std::io::stdout().flush();
    }
    Ok(())
}
