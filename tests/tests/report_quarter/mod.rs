//! The generated quarter the report tests share (report.rs, report_sql.rs):
//! what a bucket really holds, and the generator's own count of it.
#![allow(dead_code)] // Each test file uses its own part.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, UNIX_EPOCH};
use telemetry_tests::{bin, files_under, text, S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};

pub const PREFIX: &str = "maint";
pub const PRODUCT: &str = "cfdev";
pub const QUARTER: &str = "2026Q4";
/// The report's default grace for late batches.
pub const LATE_DAYS: i64 = 14;
/// The first day on which a report of QUARTER with LATE_DAYS is complete
/// (its last grace day, 2027-01-14, has passed): what the tests take as
/// today, so that they do not depend on the real date.
pub const COMPLETE_ON: &str = "2027-01-15";
/// The variable that sets the day telemetry-report takes as today.
pub const TODAY_VAR: &str = "TELEMETRY_REPORT_TODAY";

pub const COMMON_EVENTS: &[(&str, u32)] = &[
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
pub const OSES: &[(&str, u32)] = &[("linux", 60), ("macos", 32), ("windows", 8)];
pub const BUILDS: &[(&str, u32)] = &[("0.9.0", 10), ("0.9.1", 35), ("1.0.0", 40), ("1.0.1", 15)];
/// A build only one machine runs: must never appear in any output.
pub const UNIQUE_BUILD: &str = "2.0.0-dev.7f3a9c";
/// An OS only one machine runs: must never appear in any output.
pub const UNIQUE_OS: &str = "illumos";
/// Machines (all inside the quarter) that send one hand-made start_end
/// line each whose data the catalogue does not allow.
pub const HAND_MADE: std::ops::Range<usize> = 44..48;

pub fn day_of(date: &str) -> i64 {
    let t = humantime::parse_rfc3339(&format!("{date}T00:00:00Z")).unwrap();
    (t.duration_since(UNIX_EPOCH).unwrap().as_secs() / 86_400) as i64
}

pub fn date_of(day: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(day as u64 * 86_400);
    humantime::format_rfc3339(t).to_string()[..10].to_string()
}

/// Monday of the week of `day`, computed here without the report's code:
/// 1970-01-05 was a Monday.
pub fn monday(day: i64) -> i64 {
    let monday0 = day_of("1970-01-05");
    day - (day - monday0).rem_euclid(7)
}

pub fn pick<'a>(rng: &mut fastrand::Rng, table: &[(&'a str, u32)]) -> &'a str {
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

pub struct Machine {
    pub id: String,
    pub os: String,
    pub build: String,
}

#[derive(Clone)]
pub struct Ev {
    pub id: u128,
    pub event: String,
    pub build: String,
    pub day: i64,
    pub line: String,
    pub machine: usize,
    pub dropped: Option<u64>,
}

/// Counts per key: events and the set of machine indexes.
pub type Cells = BTreeMap<String, (u64, BTreeSet<usize>)>;

#[derive(Default)]
pub struct Truth {
    pub totals: (u64, BTreeSet<usize>),
    pub by_event: Cells,
    pub by_os: Cells,
    pub by_build: Cells,
    pub by_week: Cells,
    pub by_event_week: BTreeMap<(String, String), (u64, BTreeSet<usize>)>,
    pub dropped: (u64, u64, BTreeSet<usize>),
    pub objects: u64,
    pub lines: u64,
    pub duplicates: u64,
    pub outside: u64,
}

pub struct Quarter {
    pub machines: Vec<Machine>,
    /// (key, compressed body), in generation order.
    pub objects: Vec<(String, Vec<u8>)>,
    pub truth: Truth,
}

pub fn add(cells: &mut Cells, key: &str, machine: usize) {
    let e = cells.entry(key.to_string()).or_default();
    e.0 += 1;
    e.1.insert(machine);
}

/// Generate a quarter of `n` machines with a fixed seed.
pub fn generate(n: usize, seed: u64) -> Quarter {
    let mut rng = fastrand::Rng::with_seed(seed);
    // The data values draw from their own stream, so the events, days and
    // batches stay those of `seed`.
    let mut drng = fastrand::Rng::with_seed(seed ^ 0xda7a);
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
        // The machines that send data the catalogue does not allow.
        if HAND_MADE.contains(&mi) {
            names.push("start_end".into());
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
                "app_created" => {
                    let common = pick(&mut rng, &[("go", 1), ("java", 1), ("nodejs", 1)]);
                    // php on 3 machines (merged into other), ruby on 6.
                    let bp = match mi {
                        6..9 => "php",
                        9..15 => "ruby",
                        _ => common,
                    };
                    format!(r#"{{"buildpack":"{bp}"}}"#)
                }
                "error" if (20..23).contains(&mi) => r#"{"kind":"network"}"#.to_string(),
                "error" => r#"{"kind":"timeout"}"#.to_string(),
                "start_end" => match mi {
                    44 => r#"{"duration_s":12,"colour":"magenta"}"#.into(),
                    45 => r#"{"duration_s":99999999,"success":true}"#.into(),
                    46 => r#"{"duration_s":70.5}"#.into(),
                    47 => r#"{"success":"yes"}"#.into(),
                    // No duration: counted under (none).
                    23..27 => r#"{"success":false}"#.into(),
                    _ => {
                        let d = match drng.u32(0..10) {
                            0 => drng.i64(0..4),
                            1..=6 => drng.i64(30..400),
                            7 | 8 => drng.i64(400..3000),
                            _ => drng.i64(3000..=86400),
                        };
                        format!(r#"{{"duration_s":{d},"success":{}}}"#, drng.u32(0..10) < 8)
                    }
                },
                // Data on events the catalogue lists without any: not allowed.
                "stop" if mi == 48 => r#"{"force":true}"#.into(),
                "bosh" => r#"{"director":"lite"}"#.into(),
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
pub fn report_cmd(server: &S3Server, home: &Path) -> Command {
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

pub fn run_report(server: &S3Server, home: &Path, out: &Path, extra: &[&str]) -> Output {
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

pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Check a one-dimensional table against the truth and the k rule.
pub fn check_table(report: &Value, name: &str, column: &str, truth: &Cells, k: u64, total: u64) {
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

/// The run statistics from the terminal summary ("read N objects from SOURCE (X MB,
/// L lines, D duplicates ignored, O outside the period)"): objects, lines,
/// duplicates, outside the period.
pub fn summary_stats(o: &Output) -> (u64, u64, u64, u64) {
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
        number_before(" objects from "),
        number_before(" lines,"),
        number_before(" duplicates ignored"),
        number_before(" outside the period"),
    )
}

/// Checks `report` against the truth; returns how many `by_event_week`
/// cells had no machine at all (listed as suppressed).
pub fn check_report(report: &Value, q: &Quarter, k: u64) -> usize {
    let t = &q.truth;
    assert_eq!(report["schema"], "telemetry-report/2");
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
pub fn check_privacy(out: &Path, q: &Quarter, secret_values: &[&str]) {
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
