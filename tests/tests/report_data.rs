//! The report's value tables (issue #16), end to end: a generated quarter
//! of cfdev batches with known data distributions, reported by the real
//! `telemetry-report` from a directory at k = 5 and k = 50 and checked value
//! by value against counts this test keeps itself; values under k, and data
//! the catalogue does not allow, are written nowhere.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};
use telemetry_tests::bin;

const PRODUCT: &str = "cfdev";

/// (event, key, value label) → (events, machines).
type Truth = BTreeMap<(String, String, String), (u64, BTreeSet<usize>)>;

struct Quarter {
    objects: Vec<(String, Vec<u8>)>,
    truth: Truth,
    /// (event, key) → every valid value sent, for the percentiles.
    ints: BTreeMap<(String, String), Vec<i64>>,
    /// Events per event name.
    events: BTreeMap<String, (u64, BTreeSet<usize>)>,
    /// Lines with data the catalogue does not allow.
    left_out: u64,
}

/// The bin of `v` among the powers of two cfdev's duration_s (0..=86400)
/// gets, written independently of the report's code.
fn duration_bin(v: i64) -> String {
    if v == 0 {
        return "0..1".into();
    }
    let lo = 1i64 << (63 - v.leading_zeros());
    if lo >= 65536 {
        "65536..".into()
    } else {
        format!("{lo}..{}", lo * 2)
    }
}

/// Nearest rank, by sorting: the value at position ⌈p·n/100⌉ (1-based).
fn nearest_rank(values: &[i64], p: usize) -> i64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = (p * v.len()).div_ceil(100).max(1);
    v[rank - 1]
}

fn generate(machines: usize, seed: u64) -> Quarter {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut q = Quarter {
        objects: Vec::new(),
        truth: Truth::new(),
        ints: BTreeMap::new(),
        events: BTreeMap::new(),
        left_out: 0,
    };
    let mut id = 0u128;
    for m in 0..machines {
        let machine = format!("{:08x}{:056x}", 0x1000_0000 + m, 0xabcu64 * m as u64);
        let mut lines: Vec<(String, String)> = Vec::new();
        // start_end: durations spread over the bins, success mostly true.
        for _ in 0..rng.usize(1..4) {
            let d = match rng.u32(0..10) {
                0 => rng.i64(0..4),
                1..=6 => rng.i64(30..400),
                7 | 8 => rng.i64(400..3000),
                _ => rng.i64(3000..=86400),
            };
            let ok = rng.u32(0..10) < 8;
            lines.push((
                "start_end".into(),
                format!(r#"{{"duration_s":{d},"success":{ok}}}"#),
            ));
        }
        // app_created: go and java everywhere, php on 30 machines (under
        // k = 50), ruby on 3 (under k = 5), one without a buildpack.
        let bp = match m {
            0..3 => Some("ruby"),
            3..33 => Some("php"),
            33 => None,
            _ if m % 3 == 0 => Some("java"),
            _ => Some("go"),
        };
        lines.push((
            "app_created".into(),
            bp.map_or("{}".into(), |b| format!(r#"{{"buildpack":"{b}"}}"#)),
        ));
        // error: kinds, one machine's kind from another catalogue.
        if m % 4 == 0 {
            let kind = if m == 8 { "solar_flare" } else { "timeout" };
            lines.push(("error".into(), format!(r#"{{"kind":"{kind}"}}"#)));
        }
        // Hand-made lines: a key no catalogue has, an out-of-range value.
        if m == 5 {
            lines.push((
                "start_end".into(),
                r#"{"duration_s":12,"colour":"magenta"}"#.into(),
            ));
            lines.push(("start_end".into(), r#"{"duration_s":99999999}"#.into()));
        }
        let mut body = String::new();
        for (event, data) in &lines {
            id += 1;
            let day = 1 + rng.u32(0..28);
            body += &format!(
                r#"{{"id":"{}","event":"{event}","product":"{PRODUCT}","build":"1.0.0","timestamp":"2026-11-{day:02}T12:00:00.000001Z","machine":"{machine}","os":"linux","arch":"x86_64","data":{data}}}"#,
                uuid::Uuid::from_u128(id).hyphenated()
            );
            body.push('\n');
            let e = q.events.entry(event.clone()).or_default();
            e.0 += 1;
            e.1.insert(m);
            let parsed: serde_json::Map<String, Value> = serde_json::from_str(data).unwrap();
            let valid = match event.as_str() {
                "start_end" => parsed.iter().all(|(k, v)| match k.as_str() {
                    "duration_s" => v.as_i64().is_some_and(|d| (0..=86400).contains(&d)),
                    "success" => v.is_boolean(),
                    _ => false,
                }),
                "app_created" => parsed.iter().all(|(k, v)| {
                    k == "buildpack" && ["go", "java", "php", "ruby"].contains(&v.as_str().unwrap())
                }),
                "error" => parsed
                    .iter()
                    .all(|(k, v)| k == "kind" && v.as_str() == Some("timeout")),
                _ => unreachable!(),
            };
            if !valid {
                q.left_out += 1;
            }
            let keys: &[&str] = match event.as_str() {
                "start_end" => &["duration_s", "success"],
                "app_created" => &["buildpack"],
                _ => &["kind"],
            };
            for key in keys {
                let label = match parsed.get(*key).filter(|_| valid) {
                    None => "(none)".to_string(),
                    Some(Value::Number(n)) => {
                        let v = n.as_i64().unwrap();
                        q.ints
                            .entry((event.clone(), key.to_string()))
                            .or_default()
                            .push(v);
                        duration_bin(v)
                    }
                    Some(Value::Bool(b)) => b.to_string(),
                    Some(v) => v.as_str().unwrap().to_string(),
                };
                let t = q
                    .truth
                    .entry((event.clone(), key.to_string(), label))
                    .or_default();
                t.0 += 1;
                t.1.insert(m);
            }
        }
        q.objects.push((
            format!(
                "v1/product={PRODUCT}/dt=2026-11-29/{}-1-1.ndjson.zst",
                &machine[..8]
            ),
            zstd::stream::encode_all(body.as_bytes(), 3).unwrap(),
        ));
    }
    q
}

fn report(outbox: &Path, out: &Path, home: &Path, k: u64) -> Output {
    std::fs::create_dir_all(home).unwrap();
    std::fs::write(home.join("config.toml"), "").unwrap();
    let catalog = Path::new(env!("CARGO_MANIFEST_DIR")).join("../catalog/cfdev.toml");
    Command::new(bin("telemetry-report"))
        .env("HOME", home)
        .env("TELEMETRY_CONFIG", home.join("config.toml"))
        .env("TELEMETRY_REPORT_TODAY", "2027-01-15")
        .args(["--source", outbox.to_str().unwrap(), "--quarter", "2026Q4"])
        .args(["--catalog", catalog.to_str().unwrap()])
        .args(["--k", &k.to_string(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn a_generated_quarter_is_reported_value_by_value_at_k_5_and_50() {
    let q = generate(400, 16);
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    for (key, body) in &q.objects {
        let path = outbox.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    assert_eq!(q.left_out, 3, "the generator's own count");
    for k in [5u64, 50] {
        let out = dir.path().join(format!("k{k}"));
        let o = report(&outbox, &out, &dir.path().join("home"), k);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("{} lines carried data the catalogue", q.left_out)),
            "{stderr}"
        );
        let report: Value =
            serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        let tables = report["data"].as_array().unwrap();
        let mut seen = BTreeSet::new();
        for t in tables {
            let (event, key) = (t["event"].as_str().unwrap(), t["key"].as_str().unwrap());
            seen.insert((event.to_string(), key.to_string()));
            let truth: Vec<(&String, &(u64, BTreeSet<usize>))> = q
                .truth
                .iter()
                .filter(|((e, kk, _), _)| e == event && kk == key)
                .map(|((_, _, v), c)| (v, c))
                .collect();
            let mut merged_events = 0;
            let mut merged_machines = BTreeSet::new();
            let mut published = BTreeSet::new();
            for row in t["values"].as_array().unwrap() {
                if row["other"] == true {
                    continue;
                }
                let value = row["value"].as_str().unwrap();
                let (events, machines) = q
                    .truth
                    .get(&(event.into(), key.into(), value.into()))
                    .unwrap_or_else(|| panic!("{event}.{key}={value} was never sent"));
                assert_eq!(u(&row["events"]), *events, "{event}.{key}={value}");
                assert_eq!(u(&row["machines"]), machines.len() as u64);
                assert!(machines.len() as u64 >= k, "{event}.{key}={value} under k");
                published.insert(value.to_string());
            }
            for (value, (events, machines)) in &truth {
                if !published.contains(value.as_str()) {
                    merged_events += events;
                    merged_machines.extend(machines.iter().copied());
                }
            }
            let other = t["values"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["other"] == true);
            match other {
                Some(o) => {
                    assert_eq!(u(&o["events"]), merged_events, "{event}.{key} other");
                    assert_eq!(u(&o["machines"]), merged_machines.len() as u64);
                    assert!(u(&o["machines"]) >= k, "other reaches k");
                }
                None => assert_eq!(merged_events, 0, "{event}.{key}: nothing merged"),
            }
            // Rows and other add up to the event's own count.
            let all: u64 = truth.iter().map(|(_, c)| c.0).sum();
            assert_eq!(all, q.events[event].0, "{event}.{key}");
            if let Some(values) = q.ints.get(&(event.into(), key.into())) {
                let p = &t["percentiles"];
                let machines: BTreeSet<_> = truth
                    .iter()
                    .filter(|(v, _)| v.as_str() != "(none)")
                    .flat_map(|(_, c)| c.1.iter().copied())
                    .collect();
                assert!(machines.len() as u64 >= k);
                assert_eq!(u(&p["events"]), values.len() as u64);
                assert_eq!(u(&p["machines"]), machines.len() as u64);
                for (name, pct) in [("p50", 50), ("p90", 90), ("p99", 99)] {
                    // The bin, never the value; `other` when not published.
                    let bin = duration_bin(nearest_rank(values, pct));
                    let expected = if published.contains(&bin) {
                        bin.as_str()
                    } else {
                        "other"
                    };
                    assert_eq!(p[name], expected, "{event}.{key} {name}");
                }
                assert_eq!(t["bins"][17], 65536);
            }
        }
        // Every catalogued enum, bool and int key of every event sent.
        let expected: BTreeSet<(String, String)> = [
            ("app_created", "buildpack"),
            ("error", "kind"),
            ("start_end", "duration_s"),
            ("start_end", "success"),
        ]
        .iter()
        .map(|(e, k)| (e.to_string(), k.to_string()))
        .collect();
        assert_eq!(seen, expected);
        // Nothing under k, and nothing the catalogue does not allow, in
        // any file written.
        let mut hidden = vec![
            "magenta",
            "colour",
            "solar_flare",
            "99999999",
            "\"ruby\"",
            "ruby,",
        ];
        if k == 50 {
            hidden.extend(["\"php\"", "php,"]);
        }
        for f in std::fs::read_dir(&out).unwrap() {
            let path = f.unwrap().path();
            let body = std::fs::read_to_string(&path).unwrap();
            for h in &hidden {
                assert!(!body.contains(h), "{h} in {} (k = {k})", path.display());
            }
        }
        let csv = std::fs::read_to_string(out.join("data.csv")).unwrap();
        assert!(csv.contains("app_created,buildpack,enum,go,"), "{csv}");
        // ruby (3 machines) and the one machine without a buildpack are
        // under 5 together, so the smallest published value, php (30),
        // joins them: 34 events on 34 machines, 3 values. At k = 50 those
        // 34 are still under k, so java (122) joins too.
        let other = if k == 5 { ",,34,34,3" } else { ",,156,156,4" };
        assert!(
            csv.contains(&format!("app_created,buildpack,enum{other}")),
            "{csv}"
        );
    }
}
