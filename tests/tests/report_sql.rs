//! The SQL for maintainers, checked against the real `telemetry-report` on
//! the same generated quarter (see report_quarter): `sql/report.sql` in
//! DuckDB here, and `sql/report.spark.sql` in Apache Spark (local mode)
//! in the `spark` stage of scripts/test-all.sh. Every cell the report
//! publishes must be the engine's raw cell, every `other` row the engine's
//! sum of what the report merged, and nothing under k published.

mod report_quarter;

use report_quarter::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;
use telemetry_tests::{bin, files_under, text, S3Server, BUCKET};

/// The engines the SQL is checked on.
#[derive(Clone, Copy)]
enum Engine {
    /// sql/report.sql.
    DuckDb,
    /// sql/report.spark.sql.
    #[cfg_attr(not(feature = "spark"), allow(dead_code))]
    Spark,
}

impl Engine {
    /// `sql_report.py`'s name for it.
    fn dialect_name(self) -> &'static str {
        match self {
            Engine::DuckDb => "duckdb",
            Engine::Spark => "spark",
        }
    }

    /// `telemetry-report catalog-sql --dialect`.
    fn dialect(self) -> &'static str {
        match self {
            Engine::DuckDb => "standard",
            Engine::Spark => "spark",
        }
    }

    /// A Python that has the engine.
    fn python(self) -> PathBuf {
        match self {
            Engine::DuckDb => duckdb_python(),
            Engine::Spark => spark_python(),
        }
    }
}

/// The Python with PySpark the Spark test runs: `$TELEMETRY_SPARK_VENV`,
/// else `~/.cache/telemetryd-spark/venv` (kept outside the clone: the
/// wheel is 450 MB), created on first use. Spark runs on the JVM: needs
/// Java 17 or later (`java` on PATH or `JAVA_HOME`).
fn spark_python() -> PathBuf {
    let venv = std::env::var_os("TELEMETRY_SPARK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").expect("HOME")).join(".cache/telemetryd-spark/venv")
        });
    let python = venv_with(
        &venv,
        "pyspark",
        PYSPARK_VERSION,
        "PySpark is needed to check sql/report.spark.sql; scripts/test-all.sh spark installs it",
    );
    let java = Command::new("java").arg("-version").output();
    assert!(
        java.is_ok_and(|o| o.status.success()),
        "Spark needs Java 17 or later: apt-get install openjdk-17-jre-headless (scripts/test-all.sh spark does this)"
    );
    python
}

/// The Spark release the Spark SQL is checked with: 4.2 or later reads
/// .ndjson.zst without a native Hadoop library. Keep in step with
/// scripts/test-all.sh.
const PYSPARK_VERSION: &str = "4.3.0";

/// The Python with DuckDB the SQL test runs: `target/duckdb-venv`, created
/// on first use (needs python3 with venv and PyPI access).
fn duckdb_python() -> PathBuf {
    let target = telemetry_tests::bin_dir()
        .parent()
        .expect("target dir")
        .to_path_buf();
    venv_with(
        &target.join("duckdb-venv"),
        "duckdb",
        DUCKDB_VERSION,
        "DuckDB is needed to check sql/report.sql; .ci/run installs it",
    )
}

/// The Python of `venv` with `package==version`, created and installed
/// on first use (needs python3 with venv, and PyPI); else a failure that
/// says how.
fn venv_with(venv: &Path, package: &str, version: &str, why: &str) -> PathBuf {
    // The tests of this file run in parallel: one makes the venv while the
    // others wait (two pip installs into one venv failed one of them).
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let python = venv.join("bin/python");
    let has = |p: &Path| {
        Command::new(p)
            .args(["-c", &format!("import {package}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if python.exists() && has(&python) {
        return python;
    }
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(venv.join("bin/pip"))
            .args(["install", "-q", &format!("{package}=={version}")])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok && has(&python),
        "{why}: `python3 -m venv {0} && {0}/bin/pip install {package}=={version}`",
        venv.display()
    );
    python
}

/// The DuckDB release the SQL is checked with.
const DUCKDB_VERSION: &str = "2.0.1";

/// Run `engine`'s SQL over the objects of a generated quarter and check
/// every raw cell the report published, and the k rule, against it.
/// With `compacted`, the engine reads the mirror `telemetry-report compact`
/// made of the objects (whose own report must be the same) instead.
fn sql_gives_exactly_the_reports_numbers(engine: Engine, compacted: bool) {
    let python = engine.python();
    let q = generate(600, 23);
    let server = S3Server::start();
    server.put_objects(&q.objects);
    // Three users asked to be forgotten: a marker each (in a late day's
    // partition, after their lines) makes the report and the SQL leave out
    // every line of theirs, replays included.
    let forgotten: Vec<&str> = q
        .machines
        .iter()
        .step_by(97)
        .take(3)
        .map(|m| m.id.as_str())
        .collect();
    let markers: Vec<(String, Vec<u8>)> = forgotten
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let line = format!(
                r#"{{"id":"{}","event":"telemetry_forget","product":"{PRODUCT}","build":"1.0.0","timestamp":"2027-01-03T10:00:00.000000Z","machine":"{id}","os":"linux","arch":"x86_64","data":{{}}}}"#,
                uuid::Uuid::from_u128(0xf0f0_0000 + i as u128)
            );
            (
                format!(
                    "{PREFIX}/v1/product={PRODUCT}/dt=2027-01-03/{}-900000-900000.ndjson.zst",
                    &id[..8]
                ),
                zstd::stream::encode_all(format!("{line}\n").as_bytes(), 3).unwrap(),
            )
        })
        .collect();
    server.put_objects(&markers);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run_report(
        &server,
        &dir.path().join("home"),
        &out,
        &["--product", PRODUCT],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(
            "lines of 3 machine IDs whose users asked to be forgotten (telemetry_forget)"
        ),
        "{}",
        text(&o)
    );
    // The markers made it read everything a second time, and it says so.
    assert!(
        text(&o).contains("s, each twice (a telemetry_forget marker"),
        "{}",
        text(&o)
    );
    let duplicates = summary_stats(&o).2;
    let left_out = left_out(&o);
    let read_from = if compacted {
        compact_and_compare(&server, dir.path(), &out, &q);
        MIRROR
    } else {
        PREFIX
    };
    // The engine reads the same objects, fetched back from the S3 server.
    let copy = dir.path().join("copy");
    for (key, body) in server.objects() {
        let Some(rel) = key.strip_prefix(&format!("{read_from}/")) else {
            continue;
        };
        let path = copy.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    // The catalogue the report counted against, as the engine's view.
    let catalog_sql = dir.path().join("catalog.sql");
    let o = Command::new(bin("telemetry-report"))
        .args([
            "catalog-sql",
            "--product",
            PRODUCT,
            "--dialect",
            engine.dialect(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(&catalog_sql, &o.stdout).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let started = Instant::now();
    let o = Command::new(&python)
        .arg(root.join("tests/scripts/sql_report.py"))
        .arg(engine.dialect_name())
        .args([
            root.join("sql").to_str().unwrap(),
            copy.to_str().unwrap(),
            out.join("report.json").to_str().unwrap(),
            catalog_sql.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "sql_report.py failed:\n{}", text(&o));
    // Each statement's time, for --nocapture.
    eprint!("{}", String::from_utf8_lossy(&o.stderr));
    eprintln!(
        "{}: report.sql ran in {:.1} s",
        engine.dialect_name(),
        started.elapsed().as_secs_f64()
    );
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
            "data_left_out",
            "data_percentiles",
            "data_values",
            "dropped",
            "duplicates",
            "other",
            "totals"
        ]),
        "{sql}"
    );
    let report = read_json(&out.join("report.json"));
    let k = u(&report["k"]);
    assert!(
        u(&report["totals"]["machines"]) < q.truth.totals.1.len() as u64,
        "the forgotten machines are left out"
    );

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
    check_data(&sql, &report, k);
    assert_eq!(u(&sql["data_left_out"][0]["lines"]), left_out);
    assert!(
        left_out > HAND_MADE.len() as u64,
        "the data must exercise lines the catalogue does not allow"
    );
}

/// The value tables and percentiles: every published cell equal to the
/// engine's raw cell, every `other` row to the engine's sum of the values
/// the report merged, nothing under k published.
fn check_data(sql: &Value, report: &Value, k: u64) {
    let raw = sql["data_values"].as_array().unwrap();
    let pcts = sql["data_percentiles"].as_array().unwrap();
    let tables = report["data"].as_array().unwrap();
    let (mut others, mut nones, mut published_pcts) = (0, 0, 0);
    assert!(tables.len() >= 5, "{report}");
    for d in tables {
        let name = format!(
            "{}/{}",
            d["event"].as_str().unwrap(),
            d["key"].as_str().unwrap()
        );
        let cells: Vec<&Value> = raw
            .iter()
            .filter(|c| c["event"] == d["event"] && c["data_key"] == d["key"])
            .collect();
        let rows = d["values"].as_array().unwrap();
        for row in rows {
            if row["other"] == true {
                others += 1;
                let o = sql["other"]["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|o| o["event"] == d["event"] && o["key"] == d["key"])
                    .unwrap_or_else(|| panic!("{name}: no other row from SQL"));
                for f in ["values", "events", "machines"] {
                    assert_eq!(o[f], row[f], "{name} other {f}");
                }
                continue;
            }
            if row["value"] == "(none)" {
                nones += 1;
            }
            let cell = cells
                .iter()
                .find(|c| c["value"] == row["value"])
                .unwrap_or_else(|| panic!("{name}: SQL lacks {row}"));
            assert_eq!(cell["events"], row["events"], "{name} {row}");
            assert_eq!(cell["machines"], row["machines"], "{name} {row}");
        }
        for cell in &cells {
            if u(&cell["machines"]) < k {
                assert!(
                    !rows.iter().any(|r| r["value"] == cell["value"]),
                    "{name}: {cell} is under k"
                );
            }
        }
        // Each key's rows add up to its event, in SQL as in the report.
        let event_total = report["by_event"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["event"] == d["event"])
            .map(|r| u(&r["events"]))
            .unwrap();
        assert_eq!(
            cells.iter().map(|c| u(&c["events"])).sum::<u64>(),
            event_total,
            "{name}"
        );
        if d["type"] != "int" {
            continue;
        }
        let p = &d["percentiles"];
        let raw_p = pcts
            .iter()
            .find(|r| r["event"] == d["event"] && r["data_key"] == d["key"]);
        if p["suppressed"] == true {
            assert!(raw_p.is_none_or(|r| u(&r["machines"]) < k), "{name}");
            continue;
        }
        published_pcts += 1;
        let raw_p = raw_p.unwrap_or_else(|| panic!("{name}: SQL has no percentiles"));
        for f in ["events", "machines"] {
            assert_eq!(
                raw_p[f].as_i64(),
                p[f].as_i64(),
                "{name} {f}: SQL {raw_p}, report {p}"
            );
        }
        // Bins: the SQL's own, or `other` where the report merged it.
        for f in ["p50", "p90", "p99"] {
            let bin = raw_p[f].as_str().unwrap();
            let published = rows.iter().any(|r| r["value"] == bin);
            let expected = if published { bin } else { "other" };
            assert_eq!(p[f], expected, "{name} {f}: SQL {raw_p}, report {p}");
        }
    }
    assert!(
        others > 0 && nones > 0 && published_pcts > 0,
        "the data must exercise other rows, (none) rows and percentiles: {report}"
    );
}

/// The terminal summary's count of lines whose data the catalogue does
/// not allow (0 when it says nothing).
fn left_out(o: &Output) -> u64 {
    let t = text(o);
    let Some(end) = t.find(" lines carried data the catalogue") else {
        return 0;
    };
    let head = &t[..end];
    let start = head
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    head[start..].parse().unwrap()
}

/// The mirror's prefix in the test bucket.
const MIRROR: &str = "mirror";

/// `telemetry-report compact` the quarter into [`MIRROR`]: the raw objects
/// are untouched, each day with objects becomes one part, and the report
/// over the mirror is the raw report, file for file.
fn compact_and_compare(server: &S3Server, dir: &Path, raw_out: &Path, q: &Quarter) {
    let before = server.objects();
    let o = report_cmd(server, &dir.join("home"))
        .args(["compact", "--source", &format!("s3://{BUCKET}/{PREFIX}")])
        .args(["--into", &format!("s3://{BUCKET}/{MIRROR}")])
        .args(["--product", PRODUCT, "--quarter", QUARTER])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let after = server.objects();
    let raw_days: BTreeSet<&str> = before
        .keys()
        .filter(|k| {
            k.starts_with(&format!("{PREFIX}/v1/product={PRODUCT}/")) && k.ends_with(".ndjson.zst")
        })
        .map(|k| k.split('/').nth(3).unwrap())
        .collect();
    let mirror: Vec<&String> = after
        .keys()
        .filter(|k| k.starts_with(&format!("{MIRROR}/")) && k.ends_with(".ndjson.zst"))
        .collect();
    // Every raw day of the period and its grace, one part each.
    let in_period: BTreeSet<&str> = raw_days
        .iter()
        .copied()
        .filter(|d| (&"dt=2026-10-01"..=&"dt=2027-01-14").contains(&d))
        .collect();
    assert_eq!(mirror.len(), in_period.len(), "{mirror:?}");
    for d in &in_period {
        let day = format!("{MIRROR}/v1/product={PRODUCT}/{d}/");
        assert!(
            mirror
                .iter()
                .any(|k| k.starts_with(&format!("{day}compacted-"))
                    && k.ends_with("-0001.ndjson.zst")),
            "{d}"
        );
        assert!(after.contains_key(&format!("{day}_sources")), "{d}");
    }
    assert!(
        raw_days.len() > in_period.len(),
        "the data has days outside the period"
    );
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "{k} changed");
    }
    assert!(
        q.objects.len() > 5 * mirror.len(),
        "{} objects into {} parts",
        q.objects.len(),
        mirror.len()
    );
    let out = dir.join("mirror-out");
    let o = report_cmd(server, &dir.join("home"))
        .args([
            "--source",
            &format!("s3://{BUCKET}/{MIRROR}"),
            "--quarter",
            QUARTER,
        ])
        .args(["--out", out.to_str().unwrap(), "--product", PRODUCT])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let names = |d: &Path| -> Vec<PathBuf> {
        files_under(d)
            .into_iter()
            .map(|f| f.strip_prefix(d).unwrap().to_path_buf())
            .collect()
    };
    assert_eq!(names(raw_out), names(&out));
    for f in files_under(raw_out) {
        let name = f.strip_prefix(raw_out).unwrap();
        assert_eq!(
            std::fs::read(&f).unwrap(),
            std::fs::read(out.join(name)).unwrap(),
            "{} differs over the mirror",
            name.display()
        );
    }
}

#[test]
fn the_sql_queries_in_duckdb_give_exactly_the_reports_numbers() {
    sql_gives_exactly_the_reports_numbers(Engine::DuckDb, false);
}

/// Issue #16: the daily compaction's mirror gives the same report, file
/// for file, and the same SQL numbers, from a few large objects.
#[test]
fn a_compacted_mirror_gives_the_same_report_and_the_same_sql_numbers() {
    sql_gives_exactly_the_reports_numbers(Engine::DuckDb, true);
}

/// Run by the `spark` stage of scripts/test-all.sh (`--features spark`):
/// the JVM is a heavy suite of its own, after `cargo test`.
#[cfg(feature = "spark")]
#[test]
fn the_spark_sql_gives_exactly_the_reports_numbers() {
    sql_gives_exactly_the_reports_numbers(Engine::Spark, false);
}
