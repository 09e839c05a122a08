//! `telemetry-report compact` over directories: a rerun after late uploads
//! replaces the day's parts (and removes parts it no longer writes), the
//! raw batches are never touched, a damaged batch stops the day with its
//! name and leaves the mirror's day as it was, and a mirror that overlaps
//! its source is refused. The S3 path, and reports and SQL over a mirror,
//! are checked in report_sql.rs.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use telemetry_tests::{bin, files_under, text};

fn line(id: u128, day: &str, machine: u32) -> String {
    format!(
        r#"{{"id":"{}","event":"app_created","product":"cfdev","build":"1.0.0","timestamp":"{day}T12:00:00.000001Z","machine":"{machine:08x}{:056x}","os":"linux","arch":"x86_64","data":{{"buildpack":"go"}}}}"#,
        uuid::Uuid::from_u128(id).hyphenated(),
        machine
    )
}

/// A batch object of `lines` (ids `first..first + lines`) in `root`.
fn batch(root: &Path, day: &str, machine: u32, first: u128, lines: u128) {
    let dir = root.join(format!("v1/product=cfdev/dt={day}"));
    std::fs::create_dir_all(&dir).unwrap();
    let body: String = (first..first + lines)
        .map(|id| line(id, day, machine) + "\n")
        .collect();
    std::fs::write(
        dir.join(format!(
            "{machine:08x}-{first}-{}.ndjson.zst",
            first + lines - 1
        )),
        zstd::stream::encode_all(body.as_bytes(), 3).unwrap(),
    )
    .unwrap();
}

fn compact(src: &Path, into: &Path, day: &str) -> Output {
    Command::new(bin("telemetry-report"))
        .env("HOME", src.parent().unwrap())
        .env("TELEMETRY_CONFIG", "/nonexistent/config.toml")
        .args(["compact", "--source", src.to_str().unwrap()])
        .args(["--into", into.to_str().unwrap()])
        .args(["--from", day, "--to", day, "--late-days", "0"])
        .output()
        .unwrap()
}

/// Every file under `dir`, relative, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files_under(dir)
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(dir).unwrap().display().to_string();
            (rel, std::fs::read(&f).unwrap())
        })
        .collect()
}

/// The ids in a mirror day's parts.
fn mirror_ids(into: &Path, day: &str) -> Vec<String> {
    let dir = into.join(format!("v1/product=cfdev/dt={day}"));
    let mut ids = Vec::new();
    for f in files_under(&dir) {
        if !f.to_string_lossy().ends_with(".ndjson.zst") {
            continue;
        }
        let body = zstd::stream::decode_all(&std::fs::read(&f).unwrap()[..]).unwrap();
        for l in String::from_utf8(body).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            ids.push(v["id"].as_str().unwrap().to_string());
        }
    }
    ids.sort();
    ids
}

#[test]
fn reruns_replace_a_days_parts_and_the_raw_batches_are_never_touched() {
    let dir = tempfile::tempdir().unwrap();
    let (src, into) = (dir.path().join("outbox"), dir.path().join("mirror"));
    let day = "2026-11-03";
    batch(&src, day, 1, 1, 4);
    batch(&src, day, 2, 100, 3);
    batch(&src, "2026-11-04", 3, 200, 2);
    let raw = snapshot(&src);

    let o = compact(&src, &into, day);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("dt=2026-11-03: 2 objects") && text(&o).contains("7 lines -> 1 part"),
        "{}",
        text(&o)
    );
    assert_eq!(snapshot(&src), raw, "the raw batches are untouched");
    let names: Vec<String> = snapshot(&into).into_keys().collect();
    let prefix = "v1/product=cfdev/dt=2026-11-03/";
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names[0].starts_with(&format!("{prefix}_sources"))
            && names[1].starts_with(&format!("{prefix}compacted-"))
            && names[1].ends_with("-0001.ndjson.zst"),
        "{names:?}"
    );
    assert_eq!(mirror_ids(&into, day).len(), 7);

    // Nothing new: nothing read or written.
    let o = compact(&src, &into, day);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("dt=2026-11-03: 2 objects, unchanged since compacted"),
        "{}",
        text(&o)
    );
    assert_eq!(snapshot(&into).into_keys().collect::<Vec<_>>(), names);

    // A late upload for the day, and a part an interrupted earlier run
    // left: the rerun holds every line once and deletes both old parts.
    batch(&src, day, 4, 300, 5);
    let part_dir = into.join(format!("v1/product=cfdev/dt={day}"));
    std::fs::copy(
        into.join(&names[1]),
        part_dir.join("compacted-0-0002.ndjson.zst"),
    )
    .unwrap();
    let o = compact(&src, &into, day);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("(2 old parts deleted)"), "{}", text(&o));
    assert_eq!(mirror_ids(&into, day).len(), 12);
    assert!(!part_dir.join("compacted-0-0002.ndjson.zst").exists());
    assert!(!into.join(&names[1]).exists());
    assert_eq!(
        snapshot(&src).len(),
        raw.len() + 1,
        "only the late upload is new"
    );

    // A damaged batch: the day stops with the object's name and line, and
    // the mirror's day is as it was.
    let before = snapshot(&into);
    let bad = src.join(format!("v1/product=cfdev/dt={day}/00000009-1-1.ndjson.zst"));
    std::fs::write(
        &bad,
        zstd::stream::encode_all(&b"{\"id\":\"not-a-uuid\"}\n"[..], 3).unwrap(),
    )
    .unwrap();
    let o = compact(&src, &into, day);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("00000009-1-1.ndjson.zst line 1")
            && text(&o).contains("nothing of this day was changed"),
        "{}",
        text(&o)
    );
    assert_eq!(snapshot(&into), before);
    assert!(text(&o).contains("--skip-damaged"), "{}", text(&o));
    // With --skip-damaged it is left out whole and named, the rest of the
    // day copied, and the raw batch left where it is.
    let ids_before = mirror_ids(&into, day);
    let o = Command::new(bin("telemetry-report"))
        .env("HOME", src.parent().unwrap())
        .env("TELEMETRY_CONFIG", "/nonexistent/config.toml")
        .args([
            "compact",
            "--skip-damaged",
            "--source",
            src.to_str().unwrap(),
        ])
        .args(["--into", into.to_str().unwrap()])
        .args(["--from", day, "--to", day, "--late-days", "0"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("left out a damaged object whole")
            && text(&o).contains("00000009-1-1.ndjson.zst line 1")
            && text(&o).contains("1 damaged object left out whole"),
        "{}",
        text(&o)
    );
    assert_eq!(mirror_ids(&into, day), ids_before);
    assert!(bad.exists(), "the raw batch is never touched");

    // A mirror inside the source, or the source itself: refused.
    for inside in [src.clone(), src.join("v1/mirror")] {
        let o = compact(&src, &inside, "2026-11-04");
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("overlaps the source"), "{}", text(&o));
    }
}
