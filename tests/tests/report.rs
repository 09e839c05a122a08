//! `telemetry-report` end to end: a generated quarter in the real S3 test
//! server (SigV4, real SDK), the real binary, and every number checked
//! against the generator's own count — never against the report's code.
//!
//! The generated quarter is what a bucket really holds: thousands of
//! machines on several OSes and builds, the cfdev catalogue with common and
//! rare events, batches sealed days after their events, events just
//! outside the quarter, batches filed after the quarter ended (the grace
//! days), replayed batches whose events reappear under another key,
//! `telemetry_dropped` counters, a second product, and a stray object.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, UNIX_EPOCH};
use telemetry_tests::{bin, files_under, text, S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};

const PREFIX: &str = "maint";
const PRODUCT: &str = "cfdev";
const QUARTER: &str = "2026Q4";
/// The report's default grace for late batches.
const LATE_DAYS: i64 = 14;
/// The first day on which a report of QUARTER with LATE_DAYS is complete
/// (its last grace day, 2027-01-14, has passed): what the tests take as
/// today, so that they do not depend on the real date.
const COMPLETE_ON: &str = "2027-01-15";
/// The variable that sets the day telemetry-report takes as today.
const TODAY_VAR: &str = "TELEMETRY_REPORT_TODAY";

const COMMON_EVENTS: &[(&str, u32)] = &[
    ("start_begin", 30),
    ("start_end", 28),
    ("stop", 15),
    ("app_created", 20),
    ("route_created", 6),
    ("deployed_service", 4),
    ("service_created", 5),
    ("user_provided_service_created", 2),
    ("app_bound_to_service", 4),
    ("app_restage", 3),
    ("error", 6),
    ("telemetry_off", 1),
];
const OSES: &[(&str, u32)] = &[("linux", 60), ("macos", 32), ("windows", 8)];
const BUILDS: &[(&str, u32)] = &[("0.9.0", 10), ("0.9.1", 35), ("1.0.0", 40), ("1.0.1", 15)];
/// A build only one machine runs: must never appear in any output.
const UNIQUE_BUILD: &str = "2.0.0-dev.7f3a9c";
/// An OS only one machine runs: must never appear in any output.
const UNIQUE_OS: &str = "illumos";

fn day_of(date: &str) -> i64 {
    let t = humantime::parse_rfc3339(&format!("{date}T00:00:00Z")).unwrap();
    (t.duration_since(UNIX_EPOCH).unwrap().as_secs() / 86_400) as i64
}

fn date_of(day: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(day as u64 * 86_400);
    humantime::format_rfc3339(t).to_string()[..10].to_string()
}

/// Monday of the week of `day`, computed here without the report's code:
/// 1970-01-05 was a Monday.
fn monday(day: i64) -> i64 {
    let monday0 = day_of("1970-01-05");
    day - (day - monday0).rem_euclid(7)
}

fn pick<'a>(rng: &mut fastrand::Rng, table: &[(&'a str, u32)]) -> &'a str {
    let total: u32 = table.iter().map(|t| t.1).sum();
    let mut n = rng.u32(0..total);
    for (v, w) in table {
        if n < *w {
            return v;
        }
        n -= w;
    }
    unreachable!()
}

struct Machine {
    id: String,
    os: String,
    build: String,
}

#[derive(Clone)]
struct Ev {
    id: u128,
    event: String,
    build: String,
    day: i64,
    line: String,
    machine: usize,
    dropped: Option<u64>,
}

/// Counts per key: events and the set of machine indexes.
type Cells = BTreeMap<String, (u64, BTreeSet<usize>)>;

#[derive(Default)]
struct Truth {
    totals: (u64, BTreeSet<usize>),
    by_event: Cells,
    by_os: Cells,
    by_build: Cells,
    by_week: Cells,
    by_event_week: BTreeMap<(String, String), (u64, BTreeSet<usize>)>,
    dropped: (u64, u64, BTreeSet<usize>),
    objects: u64,
    lines: u64,
    duplicates: u64,
    outside: u64,
}

struct Quarter {
    machines: Vec<Machine>,
    /// (key, compressed body), in generation order.
    objects: Vec<(String, Vec<u8>)>,
    truth: Truth,
}

fn add(cells: &mut Cells, key: &str, machine: usize) {
    let e = cells.entry(key.to_string()).or_default();
    e.0 += 1;
    e.1.insert(machine);
}

/// Generate a quarter of `n` machines with a fixed seed.
fn generate(n: usize, seed: u64) -> Quarter {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (from, to) = (day_of("2026-10-01"), day_of("2026-12-31"));
    let last_dt = to + LATE_DAYS;
    let mut machines: Vec<Machine> = (0..n)
        .map(|_| Machine {
            id: (0..4).map(|_| format!("{:016x}", rng.u64(..))).collect(),
            os: pick(&mut rng, OSES).to_string(),
            build: pick(&mut rng, BUILDS).to_string(),
        })
        .collect();
    // The machines of the small groups below send everything inside the
    // quarter, so the groups have exactly their sizes.
    const SPECIAL: usize = 50;
    assert!(
        n > SPECIAL,
        "the small groups need more than {SPECIAL} machines"
    );
    // Small groups around k = 5. The groups under k add up to k or more
    // without the 4-machine ones, so only the k rule itself (not the
    // secondary suppression) keeps those out of the published rows.
    machines[0].os = UNIQUE_OS.into();
    machines[0].build = UNIQUE_BUILD.into();
    for m in &mut machines[1..3] {
        m.os = "freebsd".into();
    }
    for m in &mut machines[30..33] {
        m.os = "netbsd".into();
    }
    for m in &mut machines[40..44] {
        m.os = "openbsd".into();
    }
    // Builds: 1 + 3 machines under k, fewer than k together, so the
    // smallest published build joins them (secondary suppression).
    for m in &mut machines[3..6] {
        m.build = "1.1.0-rc1".into();
    }
    let rare: &[(&str, std::ops::Range<usize>)] = &[
        ("user_created", 10..13),  // 3 machines: merged into other
        ("bosh", 30..33),          // 3 machines: merged into other
        ("space_created", 13..17), // 4 machines: merged into other
        ("org_created", 17..22),   // exactly 5: published
        ("uninstall", 22..30),     // 8: published
    ];

    let mut objects = Vec::new();
    let mut truth = Truth::default();
    let mut all_events: Vec<Ev> = Vec::new();
    for (mi, m) in machines.iter().enumerate() {
        let count = 1 + rng.usize(0..24);
        let mut evs: Vec<Ev> = Vec::new();
        let mut names: Vec<String> = (0..count)
            .map(|_| pick(&mut rng, COMMON_EVENTS).to_string())
            .collect();
        for (name, range) in rare {
            if range.contains(&mi) {
                names.push(name.to_string());
            }
        }
        for name in names {
            // Mostly inside the quarter, some a few days either side.
            let day = if mi < SPECIAL {
                rng.i64(from..=to - 10)
            } else {
                rng.i64(from - 5..=to + 6)
            };
            let secs = day as u64 * 86_400 + rng.u64(0..86_400);
            let ts = UNIX_EPOCH
                + Duration::from_secs(secs)
                + Duration::from_micros(rng.u64(1..1_000_000));
            let id = rng.u128(..);
            let data = match name.as_str() {
                "app_created" => format!(
                    r#"{{"buildpack":"{}"}}"#,
                    pick(&mut rng, &[("go", 1), ("java", 1), ("nodejs", 1)])
                ),
                "error" => r#"{"kind":"timeout"}"#.to_string(),
                _ => "{}".to_string(),
            };
            let line = format!(
                r#"{{"id":"{}","event":"{name}","product":"{PRODUCT}","build":"{}","timestamp":"{}","machine":"{}","os":"{}","arch":"x86_64","data":{data}}}"#,
                uuid::Uuid::from_u128(id).hyphenated(),
                m.build,
                humantime::format_rfc3339_micros(ts),
                m.id,
                m.os
            );
            evs.push(Ev {
                id,
                event: name,
                build: m.build.clone(),
                day,
                line,
                machine: mi,
                dropped: None,
            });
        }
        evs.sort_by_key(|e| e.day);
        // Seal into batches of 1..=12 events, filed a few days later.
        let mut seq = 1i64;
        let mut rest = &evs[..];
        let mut batch_no = 0;
        while !rest.is_empty() {
            let size = (1 + rng.usize(0..12)).min(rest.len());
            let (batch, tail) = rest.split_at(size);
            rest = tail;
            let last_day = batch.last().unwrap().day;
            let delay = if rng.u32(0..50) == 0 {
                10
            } else {
                rng.i64(0..=2)
            };
            let dt = last_day + delay;
            let mut lines: Vec<Ev> = batch.to_vec();
            // Every 37th machine's daemon dropped events in its first batch.
            if mi % 37 == 0 && batch_no == 0 {
                let n = rng.u64(1..500);
                let id = rng.u128(..);
                let ts = UNIX_EPOCH + Duration::from_secs(dt as u64 * 86_400 + 3600);
                lines.push(Ev {
                    id,
                    event: "telemetry_dropped".into(),
                    build: "telemetryd-0.1.0".into(),
                    day: dt,
                    line: format!(
                        r#"{{"id":"{}","event":"telemetry_dropped","product":"{PRODUCT}","build":"telemetryd-0.1.0","timestamp":"{}","machine":"{}","os":"{}","arch":"x86_64","data":{{"count":{n}}}}}"#,
                        uuid::Uuid::from_u128(id).hyphenated(),
                        humantime::format_rfc3339_micros(ts),
                        m.id,
                        m.os
                    ),
                    machine: mi,
                    dropped: Some(n),
                });
            }
            let first = seq;
            seq += size as i64;
            let key = |first: i64, last: i64| {
                format!(
                    "{PREFIX}/v1/product={PRODUCT}/dt={}/{}-{first}-{last}.ndjson.zst",
                    date_of(dt),
                    &m.id[..8]
                )
            };
            let read = from <= dt && dt <= last_dt;
            let emit = |objects: &mut Vec<(String, Vec<u8>)>,
                        truth: &mut Truth,
                        key: String,
                        lines: &[Ev],
                        replay: bool| {
                let body: String = lines.iter().map(|e| format!("{}\n", e.line)).collect();
                objects.push((key, zstd::stream::encode_all(body.as_bytes(), 3).unwrap()));
                if !read {
                    return;
                }
                truth.objects += 1;
                for e in lines {
                    truth.lines += 1;
                    if !(from <= e.day && e.day <= to) {
                        truth.outside += 1;
                    } else if replay {
                        truth.duplicates += 1;
                    }
                }
            };
            emit(&mut objects, &mut truth, key(first, seq - 1), &lines, false);
            // Replays: the whole batch again under the numbers a re-created
            // store would give it, or its second half.
            match rng.u32(0..50) {
                0 | 1 => emit(
                    &mut objects,
                    &mut truth,
                    key(first + 100_000, seq - 1 + 100_000),
                    &lines,
                    true,
                ),
                2 => {
                    let half = &lines[lines.len() / 2..];
                    emit(
                        &mut objects,
                        &mut truth,
                        key(first + 200_000, seq - 1 + 200_000),
                        half,
                        true,
                    )
                }
                _ => {}
            }
            // A batch filed after the grace days is not read, even if some
            // of its events are in the period (documented: run the report
            // after the grace days, or raise --late-days).
            if read {
                all_events.extend(lines);
            }
            batch_no += 1;
        }
    }
    for e in &all_events {
        if !(from <= e.day && e.day <= to) {
            continue;
        }
        let m = &machines[e.machine];
        if let Some(n) = e.dropped {
            truth.dropped.0 += n;
            truth.dropped.1 += 1;
            truth.dropped.2.insert(e.machine);
            continue;
        }
        truth.totals.0 += 1;
        truth.totals.1.insert(e.machine);
        add(&mut truth.by_event, &e.event, e.machine);
        add(&mut truth.by_os, &m.os, e.machine);
        add(&mut truth.by_build, &e.build, e.machine);
        let week = date_of(monday(e.day));
        add(&mut truth.by_week, &week, e.machine);
        let c = truth
            .by_event_week
            .entry((e.event.clone(), week))
            .or_default();
        c.0 += 1;
        c.1.insert(e.machine);
    }
    // Ids are random 128-bit numbers; a collision would break the count.
    let ids: BTreeSet<u128> = all_events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), all_events.len());
    // Another product, and an object that is not a batch: both ignored.
    for i in 0..3 {
        let body = format!(
            r#"{{"id":"{}","event":"stop","product":"otherprod","build":"1","timestamp":"2026-11-0{}T00:00:00.000000Z","machine":"{}","os":"linux","arch":"x86_64","data":{{}}}}"#,
            uuid::Uuid::from_u128(rng.u128(..)).hyphenated(),
            i + 1,
            "ab".repeat(32)
        ) + "\n";
        objects.push((
            format!(
                "{PREFIX}/v1/product=otherprod/dt=2026-11-0{}/abababab-{i}-{i}.ndjson.zst",
                i + 1
            ),
            zstd::stream::encode_all(body.as_bytes(), 3).unwrap(),
        ));
    }
    objects.push((
        format!("{PREFIX}/v1/product={PRODUCT}/dt=2026-11-01/README.txt"),
        b"not a batch".to_vec(),
    ));
    Quarter {
        machines,
        objects,
        truth,
    }
}

/// The report binary with S3 settings for `server`, nothing of the
/// developer's own configuration, and [`COMPLETE_ON`] as today.
fn report_cmd(server: &S3Server, home: &Path) -> Command {
    let mut cmd = Command::new(bin("telemetry-report"));
    for var in [
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "TELEMETRY_S3_BUCKET",
        "TELEMETRY_S3_PREFIX",
        "TELEMETRY_S3_PATH_STYLE",
    ] {
        cmd.env_remove(var);
    }
    std::fs::create_dir_all(home).unwrap();
    std::fs::write(home.join("config.toml"), "").unwrap();
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("TELEMETRY_CONFIG", home.join("config.toml"))
        .env("TELEMETRY_S3_ENDPOINT", &server.endpoint)
        .env("TELEMETRY_S3_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env(TODAY_VAR, COMPLETE_ON);
    cmd
}

fn run_report(server: &S3Server, home: &Path, out: &Path, extra: &[&str]) -> Output {
    let source = format!("s3://{BUCKET}/{PREFIX}");
    let mut args = vec![
        "--source",
        &source,
        "--quarter",
        QUARTER,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    report_cmd(server, home)
        .args(&args)
        .output()
        .expect("run telemetry-report")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Check a one-dimensional table against the truth and the k rule.
fn check_table(report: &Value, name: &str, column: &str, truth: &Cells, k: u64, total: u64) {
    let rows = report[name]
        .as_array()
        .unwrap_or_else(|| panic!("{name} is not an array"));
    let mut published = BTreeSet::new();
    let mut sum = 0;
    let mut other = None;
    for (i, row) in rows.iter().enumerate() {
        if row.get("other") == Some(&Value::Bool(true)) {
            assert_eq!(i, rows.len() - 1, "{name}: other is the last row");
            assert!(row[column].is_null(), "{name}: other has no value: {row}");
            other = Some(row);
            continue;
        }
        let key = row[column]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: row without {column}: {row}"));
        let (events, machines) = truth
            .get(key)
            .unwrap_or_else(|| panic!("{name}: {key} is not in the data"));
        assert_eq!(u(&row["events"]), *events, "{name}/{key} events");
        assert_eq!(
            u(&row["machines"]),
            machines.len() as u64,
            "{name}/{key} machines"
        );
        assert!(
            u(&row["machines"]) >= k,
            "{name}/{key} published with fewer than k machines"
        );
        published.insert(key.to_string());
        sum += events;
    }
    let merged: Vec<_> = truth
        .iter()
        .filter(|(key, _)| !published.contains(*key))
        .collect();
    for (key, (_, machines)) in truth {
        if (machines.len() as u64) < k {
            assert!(
                !published.contains(key),
                "{name}/{key} has {} machines < k",
                machines.len()
            );
        }
    }
    match other {
        None => assert!(
            merged.is_empty(),
            "{name}: {} values neither published nor merged",
            merged.len()
        ),
        Some(o) => {
            let events: u64 = merged.iter().map(|(_, c)| c.0).sum();
            let machines: BTreeSet<usize> = merged
                .iter()
                .flat_map(|(_, c)| c.1.iter().copied())
                .collect();
            assert_eq!(
                u(&o["values"]),
                merged.len() as u64,
                "{name}: values merged"
            );
            assert_eq!(u(&o["events"]), events, "{name}: other events");
            assert_eq!(
                u(&o["machines"]),
                machines.len() as u64,
                "{name}: other machines"
            );
            assert!(
                u(&o["machines"]) >= k,
                "{name}: other counts fewer than k machines"
            );
            sum += events;
        }
    }
    assert_eq!(sum, total, "{name}: rows add up to the total");
}

/// The run statistics from the terminal summary ("read N objects (X MB,
/// L lines, D duplicates ignored, O outside the period)"): objects, lines,
/// duplicates, outside the period.
fn summary_stats(o: &Output) -> (u64, u64, u64, u64) {
    let t = text(o);
    let number_before = |what: &str| -> u64 {
        let end = t
            .find(what)
            .unwrap_or_else(|| panic!("summary lacks {what:?}: {t}"));
        let head = t[..end].trim_end();
        let start = head
            .rfind(|c: char| !c.is_ascii_digit())
            .map_or(0, |i| i + 1);
        head[start..]
            .parse()
            .unwrap_or_else(|_| panic!("no number before {what:?}: {t}"))
    };
    (
        number_before(" objects ("),
        number_before(" lines,"),
        number_before(" duplicates ignored"),
        number_before(" outside the period"),
    )
}

/// Checks `report` against the truth; returns how many `by_event_week`
/// cells had no machine at all (listed as suppressed).
fn check_report(report: &Value, q: &Quarter, k: u64) -> usize {
    let t = &q.truth;
    assert_eq!(report["schema"], "telemetry-report/1");
    assert_eq!(report["product"], PRODUCT);
    assert_eq!(report["k"], k);
    assert_eq!(report["period"]["from"], "2026-10-01");
    assert_eq!(report["period"]["to"], "2026-12-31");
    assert_eq!(u(&report["totals"]["events"]), t.totals.0);
    assert_eq!(u(&report["totals"]["machines"]), t.totals.1.len() as u64);
    // Run statistics are not published (they would give suppressed
    // numbers back); the terminal summary has them, see `summary_stats`.
    assert!(report.get("source").is_none(), "no source block: {report}");
    check_table(report, "by_event", "event", &t.by_event, k, t.totals.0);
    check_table(report, "by_os", "os", &t.by_os, k, t.totals.0);
    check_table(report, "by_build", "build", &t.by_build, k, t.totals.0);
    check_table(report, "by_week", "week", &t.by_week, k, t.totals.0);
    // by_event_week: the full grid of published events × published weeks,
    // numbers or marked suppressed (also where no machine sent the event
    // that week, so that none and a few look alike).
    let published = |table: &str, column: &str| -> BTreeSet<String> {
        report[table]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r[column].as_str().map(str::to_string))
            .collect()
    };
    let (events, weeks) = (published("by_event", "event"), published("by_week", "week"));
    let cells = report["by_event_week"].as_array().unwrap();
    let none = (0, BTreeSet::new());
    let expected: Vec<_> = events
        .iter()
        .flat_map(|e| weeks.iter().map(move |w| (e.clone(), w.clone())))
        .map(|key| {
            let cell = t.by_event_week.get(&key).unwrap_or(&none);
            (key, cell)
        })
        .collect();
    assert_eq!(cells.len(), expected.len(), "by_event_week cells");
    for c in cells {
        let w = c["week"].as_str().unwrap();
        assert!(weeks.contains(w), "by_event_week has unpublished week {w}");
    }
    let (mut suppressed, mut empty) = (0, 0);
    for ((event, week), (events, machines)) in expected {
        if machines.is_empty() {
            empty += 1;
        }
        let cell = cells
            .iter()
            .find(|c| c["event"] == event.as_str() && c["week"] == week.as_str())
            .unwrap_or_else(|| panic!("by_event_week lacks {event} {week}"));
        if machines.len() as u64 >= k {
            assert_eq!(u(&cell["events"]), *events, "{event} {week}");
            assert_eq!(
                u(&cell["machines"]),
                machines.len() as u64,
                "{event} {week}"
            );
        } else {
            suppressed += 1;
            assert_eq!(cell["suppressed"], true, "{event} {week}: {cell}");
            assert!(
                cell.get("events").is_none() && cell.get("machines").is_none(),
                "{cell}"
            );
        }
    }
    assert!(
        suppressed > 0,
        "the data must exercise suppression in by_event_week"
    );
    let d = &report["dropped"];
    if t.dropped.2.len() as u64 >= k && t.totals.1.len() as u64 >= k {
        assert_eq!(u(&d["events"]), t.dropped.0);
        assert_eq!(u(&d["reports"]), t.dropped.1);
        assert_eq!(u(&d["machines"]), t.dropped.2.len() as u64);
    } else {
        assert_eq!(d, &serde_json::json!({"suppressed": true}));
    }
    empty
}

/// No output file holds a machine ID (whole, or the 8-character key
/// prefix when it cannot be mistaken for a number), a value unique to one
/// machine, or the name of an event fewer than k machines sent.
fn check_privacy(out: &Path, q: &Quarter, secret_values: &[&str]) {
    let files = files_under(out);
    assert_eq!(
        files.len(),
        9,
        "report.json, seven CSVs, index.html: {files:?}"
    );
    for f in files {
        let body = String::from_utf8(std::fs::read(&f).unwrap()).unwrap();
        for m in &q.machines {
            assert!(
                !body.contains(&m.id),
                "{} contains a machine id",
                f.display()
            );
            let short = &m.id[..8];
            if short.bytes().any(|b| b.is_ascii_alphabetic()) {
                assert!(
                    !body.contains(short),
                    "{} contains a key prefix {short}",
                    f.display()
                );
            }
        }
        for v in secret_values {
            assert!(
                !body.contains(v),
                "{} contains {v:?}, seen on fewer than k machines",
                f.display()
            );
        }
    }
}

#[test]
fn a_quarter_in_s3_is_reported_exactly_with_k_suppression_and_no_machine_ids() {
    let q = generate(2500, 7);
    assert!(q.truth.duplicates > 100, "the data must exercise dedup");
    assert!(
        q.truth.outside > 100,
        "the data must exercise the period bounds"
    );
    let server = S3Server::start();
    let t0 = Instant::now();
    server.put_objects(&q.objects);
    eprintln!("uploaded {} objects in {:?}", q.objects.len(), t0.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");

    // Two products in the bucket: the report asks which one.
    let out = dir.path().join("ambiguous");
    let o = run_report(&server, &home, &out, &[]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("cfdev, otherprod") && text(&o).contains("--product"),
        "{}",
        text(&o)
    );

    let out = dir.path().join("k5");
    let t0 = Instant::now();
    let o = run_report(&server, &home, &out, &["--product", PRODUCT]);
    assert!(o.status.success(), "telemetry-report failed:\n{}", text(&o));
    eprintln!("report took {:?}: {}", t0.elapsed(), text(&o));
    assert!(o.stdout.is_empty(), "progress and summary go to stderr");
    assert!(
        !text(&o).contains('\r'),
        "no progress line when stderr is not a terminal"
    );
    let report = read_json(&out.join("report.json"));
    let empty = check_report(&report, &q, 5);
    assert!(
        empty > 0,
        "the data must exercise event-week cells with no machine"
    );
    let t = &q.truth;
    assert_eq!(
        summary_stats(&o),
        (t.objects, t.lines, t.duplicates, t.outside),
        "objects, lines, duplicates and lines outside the period in the summary"
    );
    // The small groups made for this test are where they should be.
    let events: Vec<&str> = report["by_event"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["event"].as_str())
        .collect();
    assert!(
        events.contains(&"org_created"),
        "exactly k machines is enough"
    );
    assert!(events.contains(&"uninstall"));
    check_privacy(
        &out,
        &q,
        &[
            UNIQUE_BUILD,
            UNIQUE_OS,
            "freebsd",
            "netbsd",
            "openbsd",
            "1.1.0-rc1",
            "user_created",
            "space_created",
            "bosh",
        ],
    );
    // Secondary suppression happened: the builds under k (2 values, 4
    // machines together) took the smallest published build with them.
    let other_build = report["by_build"].as_array().unwrap().last().unwrap();
    assert_eq!(other_build["other"], true);
    assert_eq!(other_build["values"], 3, "{other_build}");
    assert!(u(&other_build["machines"]) > 5 + 100, "{other_build}");

    // The CSVs say the same as the JSON.
    let csv = std::fs::read_to_string(out.join("by_event.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("event,events,machines,other_values"));
    for row in report["by_event"].as_array().unwrap() {
        let line = lines.next().expect("a CSV line per row");
        let expected = match row["event"].as_str() {
            Some(e) => format!("{e},{},{},", row["events"], row["machines"]),
            None => format!(",{},{},{}", row["events"], row["machines"], row["values"]),
        };
        assert_eq!(line, expected);
    }
    assert_eq!(lines.next(), None);

    // k is configurable.
    let out50 = dir.path().join("k50");
    let o = run_report(&server, &home, &out50, &["--product", PRODUCT, "--k", "50"]);
    assert!(o.status.success(), "{}", text(&o));
    check_report(&read_json(&out50.join("report.json")), &q, 50);

    // The same objects in a local outbox directory give the same report.
    let outbox = dir.path().join("outbox");
    for (key, body) in &q.objects {
        let path = outbox.join(key.strip_prefix(&format!("{PREFIX}/")).unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let out_dir = dir.path().join("from-dir");
    let o = report_cmd(&server, &home)
        .args([
            "--source",
            outbox.to_str().unwrap(),
            "--product",
            PRODUCT,
            "--quarter",
            QUARTER,
            "--out",
            out_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(read_json(&out_dir.join("report.json")), report);
    for f in ["index.html", "by_event_week.csv", "by_os.csv"] {
        assert_eq!(
            std::fs::read(out_dir.join(f)).unwrap(),
            std::fs::read(out.join(f)).unwrap(),
            "{f} differs between the S3 and the directory source"
        );
    }
}

/// Every number in a JSON value, with its path (`/period/late_days`).
fn numbers(v: &Value, path: &str, out: &mut Vec<(String, u64)>) {
    match v {
        Value::Number(n) => out.push((path.to_string(), n.as_u64().unwrap())),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                numbers(x, &format!("{path}/{i}"), out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                numbers(x, &format!("{path}/{k}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn a_product_with_k_minus_1_machines_publishes_no_count_anywhere() {
    let q = generate(60, 11);
    let t = &q.truth;
    let machines = t.totals.1.len() as u64;
    let k = machines + 1;
    assert!(!t.dropped.2.is_empty() && t.duplicates > 0 && t.outside > 0);
    let server = S3Server::start();
    server.put_objects(&q.objects);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run_report(
        &server,
        &dir.path().join("home"),
        &out,
        &["--product", PRODUCT, "--k", &k.to_string()],
    );
    assert!(o.status.success(), "{}", text(&o));
    // The maintainer running it still sees what was read, on the terminal.
    assert_eq!(
        summary_stats(&o),
        (t.objects, t.lines, t.duplicates, t.outside)
    );
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["totals"], serde_json::json!({"suppressed": true}));
    assert_eq!(report["dropped"], serde_json::json!({"suppressed": true}));
    for table in ["by_event", "by_os", "by_build", "by_week", "by_event_week"] {
        assert_eq!(report[table], serde_json::json!([]), "{table}");
    }
    // The only numbers are the parameters: no count of any kind (objects,
    // lines, duplicates...) from which a suppressed one could be derived.
    let mut found = Vec::new();
    numbers(&report, "", &mut found);
    found.sort();
    assert_eq!(
        found,
        vec![("/k".to_string(), k), ("/period/late_days".to_string(), 14)],
        "{report}"
    );
    for f in [
        "by_event.csv",
        "by_os.csv",
        "by_build.csv",
        "by_week.csv",
        "by_event_week.csv",
        "data.csv",
        "data_percentiles.csv",
    ] {
        let body = std::fs::read_to_string(out.join(f)).unwrap();
        assert_eq!(body.lines().count(), 1, "{f} holds only its header: {body}");
    }
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let cells: Vec<&str> = html
        .split("data-cell=\"")
        .skip(1)
        .map(|s| &s[..s.find('"').unwrap()])
        .collect();
    assert_eq!(
        cells,
        ["k", "totals/suppressed", "dropped/suppressed"],
        "{html}"
    );
    // The page shows k itself (a parameter, which here may equal one of
    // the counts below); take it out before looking for counts.
    let html = html.replace(&format!("data-cell=\"k\">{k}<"), "data-cell=\"k\"><");
    for n in [
        t.objects,
        t.lines,
        t.duplicates,
        t.outside,
        t.totals.0,
        t.dropped.0,
    ] {
        assert!(
            !html.contains(&format!(">{n}<")) && !html.contains(&format!(" {n} ")),
            "index.html shows {n}"
        );
    }
}

#[test]
fn a_dropped_count_under_k_cannot_be_derived_from_other_numbers() {
    // Two of the 60 machines dropped events: under k = 5, while totals
    // are published.
    let q = generate(60, 11);
    let t = &q.truth;
    assert!((1..5).contains(&t.dropped.2.len()) && t.totals.1.len() >= 5);
    let server = S3Server::start();
    server.put_objects(&q.objects);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run_report(
        &server,
        &dir.path().join("home"),
        &out,
        &["--product", PRODUCT],
    );
    assert!(o.status.success(), "{}", text(&o));
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["dropped"], serde_json::json!({"suppressed": true}));
    assert_eq!(u(&report["totals"]["events"]), t.totals.0);
    // lines − duplicates − outside_period = totals.events + dropped.reports:
    // none of the three may be published, or dropped.reports comes back.
    assert!(report.get("source").is_none(), "{report}");
    let mut found = Vec::new();
    numbers(&report, "", &mut found);
    for (path, n) in &found {
        assert!(
            ![t.lines, t.lines - t.duplicates, t.lines - t.outside].contains(n),
            "{path} = {n} is a line count"
        );
    }
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("data-cell=\"dropped/suppressed\""));
    assert!(
        !html.contains(&format!(">{}<", t.objects)) && !html.contains("objects"),
        "the page shows no run statistics"
    );
}

#[test]
fn a_damaged_object_stops_the_report_with_its_key() {
    let q = generate(60, 11);
    let server = S3Server::start();
    server.put_objects(&q.objects);
    let bad_key = format!("{PREFIX}/v1/product={PRODUCT}/dt=2026-11-02/deadbeef-1-3.ndjson.zst");
    let mut good = q
        .objects
        .iter()
        .find(|(k, _)| k.contains("dt=2026-11"))
        .unwrap()
        .1
        .clone();
    good.truncate(good.len() - 4);
    server.put_objects(&[(bad_key.clone(), good)]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run_report(
        &server,
        &dir.path().join("home"),
        &out,
        &["--product", PRODUCT],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let msg = text(&o);
    assert!(
        msg.contains(&format!("s3://{BUCKET}/{bad_key}")) && msg.contains("truncated"),
        "{msg}"
    );
    assert!(
        !out.join("report.json").exists(),
        "no partial report is written"
    );

    // A line that is not an event: the key and the line number.
    let bad_line = zstd::stream::encode_all(&b"{\"id\":\"not-a-uuid\"}\n"[..], 3).unwrap();
    server.put_objects(&[(bad_key.clone(), bad_line)]);
    let o = run_report(
        &server,
        &dir.path().join("home"),
        &out,
        &["--product", PRODUCT],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains(&format!("{bad_key} line 1")),
        "{}",
        text(&o)
    );
}

#[test]
fn usage_errors_are_clear() {
    let server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let o = report_cmd(&server, &home)
        .args(["--quarter", "2026Q5", "--out", "x", "--source", "/"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("invalid quarter \"2026Q5\""),
        "{}",
        text(&o)
    );
    let o = report_cmd(&server, &home)
        .args(["--quarter", "2026Q4"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "clap's usage exit code");
    assert!(text(&o).contains("--out"), "{}", text(&o));
    let o = report_cmd(&server, &home)
        .args(["--quarter", "2026Q4", "--k", "1", "--out", "x"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "k = 1 would publish single machines"
    );
    // Issue #12: the refusal says the minimum and the way to see one's
    // own data.
    assert!(
        text(&o).contains("at least 2") && text(&o).contains("--preview"),
        "{}",
        text(&o)
    );
    let o = report_cmd(&server, &home)
        .args([
            "--source",
            &format!("s3://{BUCKET}/{PREFIX}"),
            "--quarter",
            "2026Q4",
            "--out",
            "x",
            "--product",
            PRODUCT,
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("no batch objects for product cfdev"),
        "{}",
        text(&o)
    );
    let o = report_cmd(&server, &home).arg("--help").output().unwrap();
    assert!(o.status.success());
    for word in [
        "--quarter",
        "--from",
        "--to",
        "--source",
        "--k",
        "--late-days",
        "--preview",
        "--allow-partial",
        "At least 2",
        "retention",
    ] {
        assert!(text(&o).contains(word), "--help lacks {word}");
    }
}

#[test]
fn retention_apply_puts_the_five_year_rule_and_check_reads_it_back() {
    let server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let source = format!("s3://{BUCKET}/{PREFIX}");
    let retention = |args: &[&str]| {
        report_cmd(&server, &home)
            .arg("retention")
            .args(["--source", &source])
            .args(args)
            .output()
            .unwrap()
    };
    // The rule as shipped, for the bucket's prefix.
    let o = retention(&[]);
    assert!(o.status.success(), "{}", text(&o));
    let printed: Value = serde_json::from_slice(&o.stdout).unwrap();
    let shipped: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../report/lifecycle.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut expected = shipped.clone();
    expected["Rules"][0]["Filter"]["Prefix"] = Value::from(format!("{PREFIX}/v1/"));
    // The ID names the prefix, so rules of other prefixes can coexist.
    let our_id = format!("telemetryd-5y-expiry:{PREFIX}/v1/");
    expected["Rules"][0]["ID"] = Value::from(our_id.as_str());
    assert_eq!(printed, expected);
    let days = shipped["Rules"][0]["Expiration"]["Days"].as_i64().unwrap();
    // + 1 (midnight rounding) + 1 noncurrent day + 1 (rounding) <= 1826.
    assert_eq!(days, 1823, "five years, never more, versioned or not");

    // Nothing on the bucket yet.
    let o = retention(&["--check"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("missing"), "{}", text(&o));

    // Someone else's rule is already there; apply must keep it.
    let client = server.client();
    use aws_sdk_s3::types::*;
    let theirs = LifecycleRule::builder()
        .id("logs-30-days")
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("logs/").build())
        .expiration(LifecycleExpiration::builder().days(30).build())
        .build()
        .unwrap();
    let put = |rules: Vec<LifecycleRule>| {
        server
            .block_on(
                client
                    .put_bucket_lifecycle_configuration()
                    .bucket(BUCKET)
                    .lifecycle_configuration(
                        BucketLifecycleConfiguration::builder()
                            .set_rules(Some(rules))
                            .build()
                            .unwrap(),
                    )
                    .send(),
            )
            .expect("put lifecycle through the SDK");
    };
    put(vec![theirs.clone()]);

    let o = retention(&["--apply"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 other rule(s) kept"), "{}", text(&o));
    let o = retention(&["--check"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // What the server holds, read with the SDK, is the shipped rule.
    let got = server
        .block_on(
            client
                .get_bucket_lifecycle_configuration()
                .bucket(BUCKET)
                .send(),
        )
        .expect("get lifecycle");
    let rules = got.rules();
    assert_eq!(rules.len(), 2);
    assert!(rules.iter().any(|r| r.id() == Some("logs-30-days")));
    let ours = rules
        .iter()
        .find(|r| r.id() == Some(our_id.as_str()))
        .expect("our rule");
    assert_eq!(ours.status(), &ExpirationStatus::Enabled);
    assert_eq!(
        ours.filter().and_then(|f| f.prefix()),
        Some(format!("{PREFIX}/v1/").as_str())
    );
    assert_eq!(ours.expiration().and_then(|e| e.days()), Some(days as i32));
    assert_eq!(
        ours.noncurrent_version_expiration()
            .and_then(|e| e.noncurrent_days()),
        Some(1)
    );
    assert_eq!(
        ours.abort_incomplete_multipart_upload()
            .and_then(|a| a.days_after_initiation()),
        Some(7)
    );

    // Applying twice changes nothing.
    let o = retention(&["--apply"]);
    assert!(o.status.success(), "{}", text(&o));
    let again = server
        .block_on(
            client
                .get_bucket_lifecycle_configuration()
                .bucket(BUCKET)
                .send(),
        )
        .unwrap();
    assert_eq!(again.rules().len(), 2);

    // A second prefix in the same bucket (another product's daemons):
    // applying its rule keeps ours, and both check as in place.
    let other_source = format!("s3://{BUCKET}/other-team/telemetry");
    let other = |args: &[&str]| {
        report_cmd(&server, &home)
            .arg("retention")
            .args(["--source", &other_source])
            .args(args)
            .output()
            .unwrap()
    };
    let o = other(&["--check"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let o = other(&["--apply"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("2 other rule(s) kept"), "{}", text(&o));
    for (o, what) in [
        (retention(&["--check"]), "ours"),
        (other(&["--check"]), "other"),
    ] {
        assert_eq!(o.status.code(), Some(0), "{what}: {}", text(&o));
    }
    let both = server
        .block_on(
            client
                .get_bucket_lifecycle_configuration()
                .bucket(BUCKET)
                .send(),
        )
        .unwrap();
    let ids: BTreeSet<&str> = both.rules().iter().filter_map(|r| r.id()).collect();
    assert_eq!(
        ids,
        BTreeSet::from([
            "logs-30-days",
            "telemetryd-5y-expiry:other-team/telemetry/v1/",
            our_id.as_str()
        ])
    );

    // Someone weakens our rule (ten years): check notices.
    let weakened = LifecycleRule::builder()
        .id(our_id.as_str())
        .status(ExpirationStatus::Enabled)
        .filter(
            LifecycleRuleFilter::builder()
                .prefix(format!("{PREFIX}/v1/"))
                .build(),
        )
        .expiration(LifecycleExpiration::builder().days(3650).build())
        .build()
        .unwrap();
    put(vec![theirs, weakened]);
    // (The other prefix's rule is gone with this put; only ours matters.)
    let o = retention(&["--check"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("different") && text(&o).contains("3650"),
        "{}",
        text(&o)
    );

    // The server checks what AWS checks: a rule with Days 0 is refused
    // (every put above also carried the integrity header AWS requires,
    // or the wrapper would have refused it too).
    let zero = LifecycleRule::builder()
        .id("zero")
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("x/").build())
        .expiration(LifecycleExpiration::builder().days(0).build())
        .build()
        .unwrap();
    let refused = server.block_on(
        client
            .put_bucket_lifecycle_configuration()
            .bucket(BUCKET)
            .lifecycle_configuration(
                BucketLifecycleConfiguration::builder()
                    .rules(zero)
                    .build()
                    .unwrap(),
            )
            .send(),
    );
    let err = refused.expect_err("Days 0 is refused");
    assert_eq!(
        aws_sdk_s3::error::ProvideErrorMetadata::code(&err),
        Some("InvalidArgument"),
        "{err:?}"
    );

    // A bucket that does not exist: an error naming it.
    let o = report_cmd(&server, &home)
        .args(["retention", "--check", "--source", "s3://no-such-bucket"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("s3://no-such-bucket") && text(&o).contains("NoSuchBucket"),
        "{}",
        text(&o)
    );
}

/// The Python with DuckDB the SQL test runs: `target/duckdb-venv`, created
/// on first use (needs python3 with venv and PyPI access).
fn duckdb_python() -> PathBuf {
    let target = telemetry_tests::bin_dir()
        .parent()
        .expect("target dir")
        .to_path_buf();
    let venv = target.join("duckdb-venv");
    let python = venv.join("bin/python");
    let has_duckdb = |p: &Path| {
        Command::new(p)
            .args(["-c", "import duckdb"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if python.exists() && has_duckdb(&python) {
        return python;
    }
    let how = format!(
        "DuckDB is needed to check sql/report.sql: `python3 -m venv {0} && {0}/bin/pip install duckdb=={DUCKDB_VERSION}` (needs python3-venv and PyPI); .ci/run does this",
        venv.display()
    );
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(venv.join("bin/pip"))
            .args(["install", "-q", &format!("duckdb=={DUCKDB_VERSION}")])
            .status()
            .is_ok_and(|s| s.success());
    assert!(ok && has_duckdb(&python), "{how}");
    python
}

/// The DuckDB release the SQL is checked with.
const DUCKDB_VERSION: &str = "2.0.1";

#[test]
fn the_sql_queries_in_duckdb_give_exactly_the_reports_numbers() {
    let python = duckdb_python();
    let q = generate(600, 23);
    let server = S3Server::start();
    server.put_objects(&q.objects);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run_report(
        &server,
        &dir.path().join("home"),
        &out,
        &["--product", PRODUCT],
    );
    assert!(o.status.success(), "{}", text(&o));
    let duplicates = summary_stats(&o).2;
    // DuckDB reads the same objects, fetched back from the S3 server.
    let copy = dir.path().join("copy");
    for (key, body) in server.objects() {
        let path = copy.join(key.strip_prefix(&format!("{PREFIX}/")).unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let o = Command::new(&python)
        .arg(root.join("tests/scripts/duckdb_report.py"))
        .args([
            root.join("sql").to_str().unwrap(),
            copy.to_str().unwrap(),
            out.join("report.json").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "duckdb_report.py failed:\n{}", text(&o));
    let sql: Value = serde_json::from_slice(&o.stdout).unwrap();
    // Every named statement of report.sql ran, under its own name, and
    // nothing else (a comment mentioning "-- name: " is not a statement).
    let names: BTreeSet<&str> = sql
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "by_build",
            "by_event",
            "by_event_week",
            "by_os",
            "by_week",
            "dropped",
            "duplicates",
            "other",
            "totals"
        ]),
        "{sql}"
    );
    let report = read_json(&out.join("report.json"));
    let k = u(&report["k"]);

    assert_eq!(sql["totals"][0]["events"], report["totals"]["events"]);
    assert_eq!(sql["totals"][0]["machines"], report["totals"]["machines"]);
    assert_eq!(u(&sql["duplicates"][0]["duplicates"]), duplicates);
    assert!(duplicates > 0);
    assert_eq!(sql["dropped"][0]["events"], report["dropped"]["events"]);
    assert_eq!(sql["dropped"][0]["reports"], report["dropped"]["reports"]);
    assert_eq!(sql["dropped"][0]["machines"], report["dropped"]["machines"]);
    for (table, column) in [
        ("by_event", "event"),
        ("by_os", "os"),
        ("by_build", "build"),
        ("by_week", "week"),
    ] {
        let raw = sql[table].as_array().unwrap();
        let rows = report[table].as_array().unwrap();
        let mut published = 0;
        for row in rows {
            if row["other"] == true {
                // The script computed the merged row from the raw table:
                // every value the report did not publish.
                assert_eq!(
                    sql["other"][table]["events"], row["events"],
                    "{table} other"
                );
                assert_eq!(
                    sql["other"][table]["machines"], row["machines"],
                    "{table} other"
                );
                assert_eq!(
                    sql["other"][table]["values"], row["values"],
                    "{table} other"
                );
                continue;
            }
            published += 1;
            let cell = raw
                .iter()
                .find(|c| c[column] == row[column])
                .unwrap_or_else(|| panic!("{table}: SQL lacks {row}"));
            assert_eq!(cell["events"], row["events"], "{table} {row}");
            assert_eq!(cell["machines"], row["machines"], "{table} {row}");
        }
        for cell in raw {
            if u(&cell["machines"]) < k {
                assert!(
                    !rows.iter().any(|r| r[column] == cell[column]),
                    "{table}: {cell} is under k"
                );
            }
        }
        assert!(published > 0 && published <= raw.len());
    }
    let raw = sql["by_event_week"].as_array().unwrap();
    let cells = report["by_event_week"].as_array().unwrap();
    assert!(!cells.is_empty());
    for c in cells {
        let Some(r) = raw
            .iter()
            .find(|r| r["event"] == c["event"] && r["week"] == c["week"])
        else {
            // No machine sent the event that week: listed, suppressed.
            assert_eq!(c["suppressed"], true, "SQL lacks {c}");
            continue;
        };
        if c["suppressed"] == true {
            assert!(u(&r["machines"]) < k);
        } else {
            assert_eq!(r["events"], c["events"]);
            assert_eq!(r["machines"], c["machines"]);
        }
    }
}

/// `chromium`, or a failure saying how to install it.
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        if let Some(p) = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        }) {
            return p;
        }
    }
    panic!("headless Chromium is needed to check the report page: `apt-get install chromium` (Debian); .ci/run installs it");
}

/// Run Chromium headless on `url` with `args`, killed after a minute.
fn run_chromium(args: &[String], url: &str) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            // The test may run as root in a container, where Chromium's
            // sandbox cannot start.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            // Without these Chromium calls home at start; the page itself
            // must need no network at all.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(60);
    // Read stdout on a thread so a large DOM cannot block the child.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut buf).map(|_| buf)
    });
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 60 s on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    Output {
        stdout: reader.join().unwrap().unwrap(),
        ..out
    }
}

#[test]
fn the_page_renders_in_headless_chromium_and_shows_the_reports_numbers() {
    let browser = chromium();
    let t0 = Instant::now();
    let q = generate(300, 5);
    eprintln!(
        "generated {} objects in {:?}",
        q.objects.len(),
        t0.elapsed()
    );
    let server = S3Server::start();
    let t0 = Instant::now();
    server.put_objects(&q.objects);
    eprintln!("uploaded in {:?}", t0.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let t0 = Instant::now();
    let o = run_report(
        &server,
        &dir.path().join("home"),
        &out,
        &["--product", PRODUCT],
    );
    assert!(o.status.success(), "{}", text(&o));
    eprintln!("report took {:?}", t0.elapsed());
    let report = read_json(&out.join("report.json"));
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    // Self-contained: nothing to fetch.
    for needle in ["<script", "src=", "@import", "url(", "http://", "https://"] {
        let allowed = needle == "http://"
            && html.matches(needle).count()
                == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count();
        assert!(
            allowed || !html.contains(needle),
            "index.html contains {needle}"
        );
    }
    let url = format!("file://{}", out.join("index.html").display());
    let t0 = Instant::now();
    let o = run_chromium(&["--dump-dom".to_string()], &url);
    assert!(
        o.status.success(),
        "{} failed: {}",
        browser.display(),
        text(&o)
    );
    eprintln!("chromium --dump-dom took {:?}", t0.elapsed());
    let dom = String::from_utf8(o.stdout).unwrap();
    assert!(dom.contains("<svg"), "the charts are in the rendered DOM");

    // Every number on the rendered page, by its data-cell, is the JSON's.
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    for part in dom.split("data-cell=\"").skip(1) {
        let (cell, rest) = part.split_once('"').unwrap();
        let value = rest[rest.find('>').unwrap() + 1..]
            .split('<')
            .next()
            .unwrap();
        shown.insert(cell.replace("&amp;", "&"), value.to_string());
    }
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    expected.insert("k".into(), report["k"].to_string());
    expected.insert(
        "totals/events".into(),
        report["totals"]["events"].to_string(),
    );
    expected.insert(
        "totals/machines".into(),
        report["totals"]["machines"].to_string(),
    );
    expected.insert(
        "dropped/events".into(),
        report["dropped"]["events"].to_string(),
    );
    for (table, column) in [
        ("by_event", "event"),
        ("by_os", "os"),
        ("by_build", "build"),
        ("by_week", "week"),
    ] {
        for row in report[table].as_array().unwrap() {
            let key = row[column].as_str().unwrap_or("@other");
            for f in ["events", "machines"] {
                expected.insert(format!("{table}/{key}/{f}"), row[f].to_string());
            }
        }
    }
    for c in report["by_event_week"].as_array().unwrap() {
        let base = format!(
            "by_event_week/{}/{}",
            c["event"].as_str().unwrap(),
            c["week"].as_str().unwrap()
        );
        if c["suppressed"] == true {
            expected.insert(format!("{base}/suppressed"), "–".into());
        } else {
            expected.insert(format!("{base}/events"), c["events"].to_string());
        }
    }
    for d in report["data"].as_array().unwrap() {
        let base = format!(
            "data/{}/{}",
            d["event"].as_str().unwrap(),
            d["key"].as_str().unwrap()
        );
        for row in d["values"].as_array().unwrap() {
            let key = row["value"].as_str().unwrap_or("@other");
            for f in ["events", "machines"] {
                expected.insert(format!("{base}/{key}/{f}"), row[f].to_string());
            }
        }
        match &d["percentiles"] {
            serde_json::Value::Null => {}
            p if p["suppressed"] == true => {
                expected.insert(
                    format!("{base}/percentiles/suppressed"),
                    "suppressed".into(),
                );
            }
            p => {
                for f in ["p50", "p90", "p99", "events", "machines"] {
                    expected.insert(format!("{base}/percentiles/{f}"), p[f].to_string());
                }
            }
        }
    }
    assert_eq!(shown, expected, "the page's numbers are report.json's");

    // It really renders: a screenshot of the page.
    let png = dir.path().join("page.png");
    let o = run_chromium(
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1200,2400".to_string(),
        ],
        &url,
    );
    assert!(o.status.success(), "{}", text(&o));
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        bytes.len() > 20_000,
        "a page with charts, not a blank one: {} bytes",
        bytes.len()
    );
    // Keep a copy for a human to look at.
    let keep = telemetry_tests::bin_dir()
        .parent()
        .unwrap()
        .join("report-page.png");
    let _ = std::fs::copy(&png, keep);
}

#[test]
fn batches_uploaded_by_real_daemons_are_reported() {
    use telemetry_tests::{decode_objects, DaemonEnv, Destination};
    let server = S3Server::start();
    const MACHINES: usize = 6;
    for i in 0..MACHINES {
        let env = DaemonEnv::new(Destination::S3 {
            endpoint: server.endpoint.clone(),
            secret: SECRET_KEY.into(),
        });
        // A different machine identity per daemon.
        std::fs::write(
            env.root().join("machine-id"),
            format!("report-test-identity-{i}"),
        )
        .unwrap();
        let daemon = env.start();
        for (event, data) in [
            ("start_begin", None),
            ("app_created", Some("buildpack=go")),
            ("stop", None),
        ] {
            // A generous budget: debug builds on a loaded 2-core machine
            // (the default 100 ms ran out here once under a full test run).
            let mut args = vec![
                "--product",
                PRODUCT,
                "--build",
                "1.0.0",
                "--strict",
                "--timeout-ms",
                "5000",
                event,
            ];
            args.extend(data);
            let o = env.run("telemetry-emit", &args);
            assert!(o.status.success(), "emit: {}", text(&o));
        }
        let o = env.run("telemetryctl", &["flush"]);
        assert!(o.status.success(), "flush: {}", text(&o));
        daemon.terminate().unwrap();
    }
    let objects = server.objects();
    let machine_ids: BTreeSet<String> = decode_objects(&objects)
        .iter()
        .map(|(_, v)| v["machine"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(machine_ids.len(), MACHINES);

    // Today, with a day either side in case the test runs across midnight.
    let today = (std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400) as i64;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // The real clock: a period around today is still running, so the
    // report needs --allow-partial and says so.
    let o = report_cmd(&server, &dir.path().join("home"))
        .env_remove(TODAY_VAR)
        .args([
            "--source",
            &format!("s3://{BUCKET}/e2e"),
            "--from",
            &date_of(today - 1),
            "--to",
            &date_of(today + 1),
            "--allow-partial",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let r = read_json(&out.join("report.json"));
    assert_eq!(r["partial"], true);
    // The day after the last day read: --to + 14 grace days + 1.
    assert_eq!(r["complete_on"], date_of(today + 16).as_str(), "{r}");
    assert!(text(&o).contains("warning: PARTIAL"), "{}", text(&o));
    assert_eq!(
        r["product"], PRODUCT,
        "the only product is found without --product"
    );
    assert_eq!(
        r["totals"],
        serde_json::json!({"events": 3 * MACHINES, "machines": MACHINES})
    );
    let by_event: BTreeMap<String, (u64, u64)> = r["by_event"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["event"].as_str().unwrap().to_string(),
                (u(&row["events"]), u(&row["machines"])),
            )
        })
        .collect();
    let m = MACHINES as u64;
    assert_eq!(
        by_event,
        BTreeMap::from([
            ("app_created".into(), (m, m)),
            ("start_begin".into(), (m, m)),
            ("stop".into(), (m, m))
        ])
    );
    assert_eq!(r["by_os"][0]["os"], std::env::consts::OS);
    assert_eq!(r["by_build"][0]["build"], "1.0.0");
    for f in files_under(&out) {
        let body = std::fs::read_to_string(&f).unwrap();
        for id in &machine_ids {
            assert!(
                !body.contains(id.as_str()) && !body.contains(&id[..16]),
                "{} holds a machine id",
                f.display()
            );
        }
    }
}

/// The objects of a developer's own quarter: two machines (one running a
/// build no one else has), a few events each, no dropped counters. Returns
/// the objects (keys without a prefix, as in an outbox) and the machine IDs.
fn two_machines() -> (Vec<(String, Vec<u8>)>, [String; 2]) {
    let ids = ["a1".repeat(32), "b2".repeat(32)];
    // (machine, build, event, day)
    let events: &[(usize, &str, &str, &str)] = &[
        (0, "0.1.0-dev+mine", "start_begin", "2026-10-05"),
        (0, "0.1.0-dev+mine", "app_created", "2026-10-05"),
        (0, "0.1.0-dev+mine", "stop", "2026-10-06"),
        (0, "0.1.0-dev+mine", "stop", "2026-11-20"),
        (1, "1.0.0", "start_begin", "2026-10-07"),
        (1, "1.0.0", "stop", "2026-10-08"),
    ];
    let mut objects = Vec::new();
    for (m, id) in ids.iter().enumerate() {
        let lines: Vec<_> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.0 == m)
            .collect();
        for (seq, (i, (_, build, event, day))) in lines.iter().enumerate() {
            let line = format!(
                r#"{{"id":"{}","event":"{event}","product":"{PRODUCT}","build":"{build}","timestamp":"{day}T12:00:00.000001Z","machine":"{id}","os":"linux","arch":"x86_64","data":{{}}}}"#,
                uuid::Uuid::from_u128(1000 + *i as u128).hyphenated()
            ) + "\n";
            objects.push((
                format!(
                    "v1/product={PRODUCT}/dt={day}/{}-{}-{}.ndjson.zst",
                    &id[..8],
                    seq + 1,
                    seq + 1
                ),
                zstd::stream::encode_all(line.as_bytes(), 3).unwrap(),
            ));
        }
    }
    (objects, ids)
}

fn write_outbox(dir: &Path, objects: &[(String, Vec<u8>)]) {
    for (key, body) in objects {
        let path = dir.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
}

/// Every file under `dir`, by name.
fn names_under(dir: &Path) -> BTreeSet<String> {
    files_under(dir)
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn issue_12_a_developer_previews_their_own_data_and_cannot_mistake_it_for_a_report() {
    let server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let outbox = dir.path().join("outbox");
    let (objects, ids) = two_machines();
    write_outbox(&outbox, &objects);
    let run = |args: &[&str]| {
        report_cmd(&server, &home)
            .args(["--source", outbox.to_str().unwrap(), "--quarter", QUARTER])
            .args(args)
            .output()
            .unwrap()
    };
    let no_machine_id = |what: &str, body: &str| {
        for id in &ids {
            assert!(!body.contains(&id[..16]), "{what} holds a machine id");
        }
    };

    // --preview and --k do not mix.
    let o = run(&["--preview", "--k", "2"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // On the terminal: a table, the warning first, every count.
    let o = run(&["--preview"]);
    assert!(o.status.success(), "{}", text(&o));
    let table = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(
        table.starts_with("PREVIEW — NOT FOR PUBLISHING: no k-anonymity applied"),
        "{table}"
    );
    no_machine_id("the preview table", &text(&o));
    assert!(table.contains("totals: 6 events, 2 machines"), "{table}");
    assert!(
        table.contains("dropped by full local stores: none"),
        "{table}"
    );
    let row = |key: &str| -> Vec<String> {
        table
            .lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .find(|w| w.len() == 3 && w[0] == key)
            .unwrap_or_else(|| panic!("no row {key}: {table}"))
    };
    assert_eq!(row("stop")[1..], ["3", "2"]);
    assert_eq!(row("app_created")[1..], ["1", "1"]);
    assert_eq!(
        row("0.1.0-dev+mine")[1..],
        ["4", "1"],
        "a build of one machine"
    );
    assert_eq!(row("2026-11-16")[1..], ["1", "1"], "a week of one machine");

    // As JSON: report.json's shape, marked, k = 1, nothing merged or
    // suppressed, empty cells 0.
    let o = run(&["--preview", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    no_machine_id("the preview JSON", &text(&o));
    let json: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["preview"], true);
    assert_eq!(json["k"], 1);
    assert!(
        json["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("PREVIEW — NOT FOR PUBLISHING"),
        "{json}"
    );
    assert_eq!(
        json["totals"],
        serde_json::json!({"events": 6, "machines": 2})
    );
    assert_eq!(
        json["dropped"],
        serde_json::json!({"events": 0, "reports": 0, "machines": 0})
    );
    let by = |table: &str, column: &str| -> BTreeMap<String, (u64, u64)> {
        json[table]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                assert!(r.get("other").is_none(), "{table}: nothing merged: {r}");
                (
                    r[column].as_str().unwrap().to_string(),
                    (u(&r["events"]), u(&r["machines"])),
                )
            })
            .collect()
    };
    assert_eq!(
        by("by_event", "event"),
        BTreeMap::from([
            ("app_created".into(), (1, 1)),
            ("start_begin".into(), (2, 2)),
            ("stop".into(), (3, 2))
        ])
    );
    assert_eq!(
        by("by_build", "build"),
        BTreeMap::from([("0.1.0-dev+mine".into(), (4, 1)), ("1.0.0".into(), (2, 1))])
    );
    assert_eq!(
        by("by_week", "week"),
        BTreeMap::from([("2026-10-05".into(), (5, 2)), ("2026-11-16".into(), (1, 1))])
    );
    let cells = json["by_event_week"].as_array().unwrap();
    assert_eq!(cells.len(), 3 * 2, "every event × every week");
    for c in cells {
        assert!(c.get("suppressed").is_none(), "nothing suppressed: {c}");
    }
    let cell = |e: &str, w: &str| {
        cells
            .iter()
            .find(|c| c["event"] == e && c["week"] == w)
            .map(|c| (u(&c["events"]), u(&c["machines"])))
            .unwrap()
    };
    assert_eq!(cell("stop", "2026-11-16"), (1, 1));
    assert_eq!(cell("app_created", "2026-11-16"), (0, 0), "none is a 0");

    // Into a directory: a marker file and preview-* files, never the
    // names a publishing step picks up.
    let preview = dir.path().join("preview");
    let o = run(&["--preview", "--out", preview.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("NOT FOR PUBLISHING"), "{}", text(&o));
    let mut expected: BTreeSet<String> = [
        "report.json",
        "by_event.csv",
        "by_os.csv",
        "by_build.csv",
        "by_week.csv",
        "by_event_week.csv",
        "data.csv",
        "data_percentiles.csv",
        "index.html",
    ]
    .iter()
    .map(|f| format!("preview-{f}"))
    .collect();
    expected.insert("PREVIEW-NOT-FOR-PUBLISHING.txt".into());
    assert_eq!(names_under(&preview), expected);
    assert_eq!(read_json(&preview.join("preview-report.json")), json);
    let marker = std::fs::read_to_string(preview.join("PREVIEW-NOT-FOR-PUBLISHING.txt")).unwrap();
    assert!(marker.contains("Do not publish"), "{marker}");
    let html = std::fs::read_to_string(preview.join("preview-index.html")).unwrap();
    // The banner is the first thing on the page, and in the title.
    let body = &html[html.find("<body>").unwrap() + "<body>".len()..];
    assert!(
        body.trim_start().starts_with(
            "<div class=\"preview\" role=\"alert\">PREVIEW — NOT FOR PUBLISHING: no k-anonymity applied"
        ),
        "{html}"
    );
    assert!(
        html.contains("<title>PREVIEW — NOT FOR PUBLISHING"),
        "{html}"
    );
    assert!(html.contains("<a href=\"preview-report.json\">"), "{html}");
    assert!(!html.contains("href=\"report.json\""), "{html}");
    for f in files_under(&preview) {
        no_machine_id(
            &f.display().to_string(),
            &std::fs::read_to_string(&f).unwrap(),
        );
    }

    // A publishable report and a preview never share a directory.
    let o = run(&["--k", "2", "--out", preview.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("PREVIEW-NOT-FOR-PUBLISHING.txt") && text(&o).contains("--out"),
        "{}",
        text(&o)
    );
    assert_eq!(names_under(&preview), expected, "nothing added");
    let public = dir.path().join("public");
    let o = run(&["--k", "2", "--out", public.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&["--preview", "--out", public.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("report.json"), "{}", text(&o));
    assert!(
        names_under(&public)
            .iter()
            .all(|f| !f.starts_with("preview") && !f.starts_with("PREVIEW")),
        "{:?}",
        names_under(&public)
    );

    // A preview may look at a quarter that is still running (it is never
    // published), and says that it is partial.
    let o = report_cmd(&server, &home)
        .env(TODAY_VAR, "2026-12-01")
        .args(["--source", outbox.to_str().unwrap(), "--quarter", QUARTER])
        .args(["--preview", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let json: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (&json["partial"], &json["complete_on"]),
        (&Value::Bool(true), &Value::from(COMPLETE_ON))
    );
}

// Issue #12: the page said "suppressed" for dropped events when none were
// dropped.
#[test]
fn issue_12_no_dropped_events_is_shown_as_none_not_suppressed() {
    let server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    write_outbox(&outbox, &two_machines().0);
    for k in ["2", "5"] {
        let out = dir.path().join(format!("k{k}"));
        let o = report_cmd(&server, &dir.path().join("home"))
            .args(["--source", outbox.to_str().unwrap(), "--quarter", QUARTER])
            .args(["--k", k, "--out", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let report = read_json(&out.join("report.json"));
        // With k = 5 the two machines' totals are suppressed; a 0 counts no
        // machine, so it is published either way.
        assert_eq!(report["totals"].get("suppressed").is_some(), k == "5");
        assert_eq!(
            report["dropped"],
            serde_json::json!({"events": 0, "reports": 0, "machines": 0}),
            "k = {k}"
        );
        let html = std::fs::read_to_string(out.join("index.html")).unwrap();
        assert!(
            html.contains(
                "<b data-cell=\"dropped/events\">0</b>events dropped by full local stores (none)"
            ),
            "k = {k}: {html}"
        );
        assert!(!html.contains("dropped/suppressed"), "k = {k}");
    }
}

#[test]
fn issue_12_a_period_that_is_not_complete_is_refused_unless_allowed() {
    let q = generate(60, 11);
    let server = S3Server::start();
    server.put_objects(&q.objects);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let run = |today: &str, out: &Path, extra: &[&str]| {
        let mut cmd = report_cmd(&server, &home);
        cmd.env(TODAY_VAR, today)
            .args(["--source", &format!("s3://{BUCKET}/{PREFIX}")])
            .args(["--product", PRODUCT, "--quarter", QUARTER])
            .args(["--out", out.to_str().unwrap()])
            .args(extra);
        cmd.output().unwrap()
    };

    // The quarter has not ended; then its last grace day has not passed.
    for today in ["2026-12-01", "2027-01-14"] {
        let out = dir.path().join(format!("refused-{today}"));
        let o = run(today, &out, &[]);
        assert_eq!(o.status.code(), Some(1), "{today}: {}", text(&o));
        let msg = text(&o);
        assert!(
            msg.contains("2026Q4 is not complete")
                && msg.contains("2027-01-14")
                && msg.contains(&format!("on or after {COMPLETE_ON}"))
                && msg.contains("--allow-partial"),
            "{today}: {msg}"
        );
        assert!(!out.exists(), "{today}: nothing written");
    }

    // Allowed: written, marked in report.json and on the page, and warned
    // about on stderr. The numbers are what a complete run gives.
    let partial = dir.path().join("partial");
    let o = run("2027-01-14", &partial, &["--allow-partial"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("warning: PARTIAL: 2026Q4 is not complete"),
        "{}",
        text(&o)
    );
    let mut p = read_json(&partial.join("report.json"));
    assert_eq!(p["partial"], true);
    assert_eq!(p["complete_on"], COMPLETE_ON);
    let warning = p["warnings"][0].as_str().unwrap();
    assert!(
        warning.starts_with("PARTIAL") && warning.contains(COMPLETE_ON),
        "{warning}"
    );
    let html = std::fs::read_to_string(partial.join("index.html")).unwrap();
    assert!(
        html.contains("<p class=\"partial\" role=\"note\"><b>Partial period.</b>")
            && html.contains(&format!("on or after {COMPLETE_ON} (UTC)")),
        "{html}"
    );

    // From the day it is complete: no refusal, no warning, no mark.
    let complete = dir.path().join("complete");
    let o = run(COMPLETE_ON, &complete, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("warning"), "{}", text(&o));
    let c = read_json(&complete.join("report.json"));
    assert_eq!(c["partial"], false);
    assert_eq!(c["warnings"], serde_json::json!([]));
    assert!(c.get("complete_on").is_none(), "{c}");
    assert!(!std::fs::read_to_string(complete.join("index.html"))
        .unwrap()
        .contains("class=\"partial\""));
    let m = p.as_object_mut().unwrap();
    for f in ["partial", "complete_on", "warnings"] {
        m.remove(f);
    }
    let mut c = c;
    for f in ["partial", "warnings"] {
        c.as_object_mut().unwrap().remove(f);
    }
    assert_eq!(p, c, "the same numbers");

    // A bad injected day is an error naming the variable.
    let o = run("2027-13-01", &dir.path().join("bad"), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains(TODAY_VAR) && text(&o).contains("YYYY-MM-DD"),
        "{}",
        text(&o)
    );
}

#[test]
fn issue_12_a_broken_config_file_does_not_block_a_report_over_a_directory() {
    let server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let outbox = dir.path().join("outbox");
    write_outbox(&outbox, &two_machines().0);
    let config = dir.path().join("broken.toml");
    let with_config = |body: &str, source: Option<&str>, out: &Path| {
        std::fs::write(&config, body).unwrap();
        let mut cmd = report_cmd(&server, &home);
        cmd.env("TELEMETRY_CONFIG", &config)
            .args(["--quarter", QUARTER, "--k", "2"])
            .args(["--out", out.to_str().unwrap()]);
        if let Some(s) = source {
            cmd.args(["--source", s]);
        }
        cmd.output().unwrap()
    };

    // A typo in a key, a bad value, and an S3 variable with a bad value:
    // none of it matters to a directory, which needs no settings.
    let typo = "[s3]\nbukcet = \"telemetry\"\n";
    let bad_value = "upload_interval = \"soon\"\n";
    for body in [typo, bad_value] {
        let out = dir.path().join("from-dir");
        let o = with_config(body, Some(outbox.to_str().unwrap()), &out);
        assert!(o.status.success(), "{body}: {}", text(&o));
        assert_eq!(read_json(&out.join("report.json"))["totals"]["events"], 6);
    }
    let out = dir.path().join("from-dir-env");
    let o = report_cmd(&server, &home)
        .env("TELEMETRY_S3_PATH_STYLE", "maybe")
        .args(["--source", outbox.to_str().unwrap(), "--quarter", QUARTER])
        .args(["--k", "2", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));

    // A run that needs the configuration reports the file and the key it
    // reads ([s3]); keys only the daemon uses are not the report's business
    // (issue #13: the report no longer links the daemon).
    let source = format!("s3://{BUCKET}/{PREFIX}");
    let o = with_config(
        bad_value,
        Some(source.as_str()),
        &dir.path().join("s3-daemon-key"),
    );
    assert!(
        !text(&o).contains("upload_interval"),
        "a daemon-only key is not read: {}",
        text(&o)
    );
    for (body, key, src) in [
        (typo, "bukcet", Some(source.as_str())),
        (typo, "bukcet", None),
    ] {
        let o = with_config(body, src, &dir.path().join("from-s3"));
        assert_eq!(o.status.code(), Some(1), "{body}: {}", text(&o));
        let msg = text(&o);
        assert!(
            msg.contains(&config.display().to_string()) && msg.contains(key),
            "{src:?}: {msg}"
        );
        assert!(msg.contains("--source DIR"), "says what to do: {msg}");
    }
}
