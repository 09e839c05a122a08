//! Issue #12's report tests: a developer's own data (previews), periods
//! that are not complete, no dropped events, and a broken config file that
//! must not block a report over a directory. A module of `report.rs`, for
//! its imports and helpers.

use super::*;

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
    let mut expected: BTreeSet<String> = REPORT_CSVS
        .iter()
        .chain(&["report.json", "index.html"])
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
    // The one warning is of the README.txt the quarter's data holds.
    let said = text(&o);
    let warnings: Vec<&str> = said.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{}", text(&o));
    assert!(
        warnings[0].contains("not read: 1 file under the period's days that is not a batch object")
            && warnings[0].ends_with("dt=2026-11-01/README.txt"),
        "{}",
        text(&o)
    );
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
