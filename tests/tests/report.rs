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

mod report_issue12;
mod report_quarter;

use report_quarter::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, UNIX_EPOCH};
use telemetry_tests::{files_under, text, S3Server, BUCKET, SECRET_KEY};

/// The CSV files a report writes, named here rather than taken from the
/// report's own list, so the tests do not check the code with itself.
const REPORT_CSVS: [&str; 7] = [
    "by_event.csv",
    "by_os.csv",
    "by_build.csv",
    "by_week.csv",
    "by_event_week.csv",
    "data.csv",
    "data_percentiles.csv",
];

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

    // A mistyped product is told which there are.
    let o = run_report(
        &server,
        &home,
        &dir.path().join("typo"),
        &["--product", "cfdve"],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("(products there: cfdev, otherprod)"),
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
    assert!(
        text(&o).contains(" objects from s3://"),
        "the summary names what it read: {}",
        text(&o)
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
    for f in REPORT_CSVS {
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

    // --skip-damaged leaves such an object out whole, even the valid line
    // before its bad one, names it, and goes on: the report is the one
    // made without the object.
    let fresh = format!(
        r#"{{"id":"{}","event":"app_created","product":"{PRODUCT}","build":"9.9.9","timestamp":"2026-11-02T10:00:00.000000Z","machine":"{}","os":"linux","arch":"x86_64","data":{{}}}}"#,
        uuid::Uuid::from_u128(0x5eed),
        "ab".repeat(32)
    );
    let mixed = format!("{fresh}\n{{\"id\":\"not-a-uuid\"}}\n");
    server.put_objects(&[(
        bad_key.clone(),
        zstd::stream::encode_all(mixed.as_bytes(), 3).unwrap(),
    )]);
    let skipped = dir.path().join("skipped");
    let o = run_report(
        &server,
        &dir.path().join("home"),
        &skipped,
        &["--product", PRODUCT, "--skip-damaged"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("left out 1 damaged object whole")
            && text(&o).contains(&format!("{bad_key} line 2")),
        "{}",
        text(&o)
    );
    server.put_objects(&[(
        bad_key.clone(),
        zstd::stream::encode_all(&b""[..], 3).unwrap(),
    )]);
    let without = dir.path().join("without");
    let o = run_report(
        &server,
        &dir.path().join("home"),
        &without,
        &["--product", PRODUCT],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        read_json(&skipped.join("report.json")),
        read_json(&without.join("report.json"))
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
    // A source directory that does not hold v1/ (the folder above a synced
    // prefix): said so, not only "cannot list".
    let above = dir.path().join("synced");
    std::fs::create_dir_all(above.join("telemetry/v1")).unwrap();
    let o = report_cmd(&server, &home)
        .args(["--quarter", "2026Q3", "--preview", "--source"])
        .arg(&above)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--source must be the directory that holds v1/"),
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
    // A bad bucket in --source is blamed on --source, not on the bucket
    // setting it is passed on as.
    let o = report_cmd(&server, &home)
        .args(["retention", "--check", "--source", "s3://Bad_Bucket/x"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("invalid --source") && !text(&o).contains("TELEMETRY_S3_BUCKET"),
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

    // Nothing on the bucket yet (and no batch under the prefix: noted).
    let o = retention(&["--check"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("missing"), "{}", text(&o));
    assert!(text(&o).contains("no object under"), "{}", text(&o));
    // The layout's own v1 given as part of the prefix would make a rule
    // for .../v1/v1/, which covers nothing: refused, naming the fix.
    let o = report_cmd(&server, &home)
        .args(["retention", "--apply", "--source", &format!("{source}/v1/")])
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("--source {source}")),
        "{}",
        text(&o)
    );

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
    // The command it suggests names the bucket as it was told it.
    assert!(
        text(&o).contains(&format!(
            "run `telemetry-report retention --apply --source {other_source}`"
        )),
        "{}",
        text(&o)
    );
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
    // One line, not the SDK's debug dump of its error's structs.
    assert_eq!(text(&o).trim_end().lines().count(), 1, "{}", text(&o));
    assert!(!text(&o).contains("ServiceError {"), "{}", text(&o));
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
                for f in ["events", "machines"] {
                    expected.insert(format!("{base}/percentiles/{f}"), p[f].to_string());
                }
                for f in ["p50", "p90", "p99"] {
                    let bin = p[f].as_str().unwrap();
                    expected.insert(format!("{base}/percentiles/{f}"), bin.into());
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
