//! Writing a [`Report`]: `report.json`, one CSV per table, `index.html`;
//! or, for a preview, the same files under names no one publishes by
//! mistake, or a text table on the terminal.
//!
//! Every file is written from the published [`Report`] alone, never from
//! the raw counts, so nothing suppressed can reach any of them.
//!
//! # Previews
//! A preview ([`Report::preview`]) is written as [`PREVIEW_MARKER`] (first,
//! so even an interrupted run leaves it) and the usual files with a
//! `preview-` prefix: no `report.json` for a consumer to pick up, no
//! `index.html` for a static host to serve. Inside, `report.json` says
//! `"preview": true` with a warning and the page opens with a banner. A
//! preview and a publishable report never share a directory: either run
//! refuses a directory that holds the other's files, since uploading the
//! directory would publish both.

use crate::publish::{Report, Table};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A file or the directory could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `--out` names something that is not a directory.
    #[error("--out {}: exists and is not a directory; name a directory (it is created if missing)", dir.display())]
    NotADirectory {
        /// What `--out` named.
        dir: PathBuf,
    },
    /// A preview asked for a directory holding a publishable report.
    #[error("--out {}: refusing to write a preview next to the publishable report there ({found}); a preview must never be published, and uploading this directory would publish it. Choose another --out directory, e.g. {}-preview", dir.display(), dir.display())]
    PreviewBesideReport {
        /// The output directory.
        dir: PathBuf,
        /// The publishable file found there.
        found: &'static str,
    },
    /// A publishable report asked for a directory holding a preview.
    #[error("--out {}: refusing to write a publishable report next to the preview there ({PREVIEW_MARKER}, preview-*); the preview's files have no k rule and must never be published. Delete {PREVIEW_MARKER} and the preview-* files, or choose another --out directory", dir.display())]
    ReportBesidePreview {
        /// The output directory.
        dir: PathBuf,
    },
}

/// The files [`write_all`] creates for a publishable report, relative to
/// the output directory.
pub const FILES: &[&str] = &[
    "report.json",
    "by_event.csv",
    "by_os.csv",
    "by_build.csv",
    "by_week.csv",
    "by_event_week.csv",
    "data.csv",
    "data_percentiles.csv",
    "index.html",
];

/// The file a preview writes first into its directory, saying what the
/// directory is.
pub const PREVIEW_MARKER: &str = "PREVIEW-NOT-FOR-PUBLISHING.txt";

/// The name under which `file` (one of [`FILES`]) is written: itself, or
/// `preview-FILE` for a preview.
pub fn file_name(file: &str, preview: bool) -> String {
    if preview {
        format!("preview-{file}")
    } else {
        file.to_string()
    }
}

/// Refuse a directory that holds the other kind of output (see the module
/// docs). A missing directory is fine.
pub fn check_dir(dir: &Path, preview: bool) -> Result<(), OutputError> {
    if dir.exists() && !dir.is_dir() {
        return Err(OutputError::NotADirectory {
            dir: dir.to_path_buf(),
        });
    }
    if preview {
        if let Some(found) = FILES.iter().find(|f| dir.join(f).exists()) {
            return Err(OutputError::PreviewBesideReport {
                dir: dir.to_path_buf(),
                found,
            });
        }
    } else if dir.join(PREVIEW_MARKER).exists()
        // The marker deleted by hand does not make the rest publishable.
        || FILES.iter().any(|f| dir.join(file_name(f, true)).exists())
    {
        return Err(OutputError::ReportBesidePreview {
            dir: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// `report.json`'s text.
pub fn json(report: &Report) -> String {
    let mut json = serde_json::to_string_pretty(report).expect("report serializes to JSON");
    json.push('\n');
    json
}

/// Write every output file into `dir` (created if missing).
pub fn write_all(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, OutputError> {
    check_dir(dir, report.preview)?;
    std::fs::create_dir_all(dir).map_err(|source| OutputError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<(String, String)> = Vec::new();
    if report.preview {
        files.push((PREVIEW_MARKER.to_string(), preview_marker(report)));
    }
    let name = |f: &str| file_name(f, report.preview);
    files.extend([
        (name("report.json"), json(report)),
        (name("by_event.csv"), table_csv(&report.by_event)),
        (name("by_os.csv"), table_csv(&report.by_os)),
        (name("by_build.csv"), table_csv(&report.by_build)),
        (name("by_week.csv"), table_csv(&report.by_week)),
        (name("by_event_week.csv"), event_week_csv(report)),
        (name("data.csv"), data_csv(report)),
        (name("data_percentiles.csv"), percentiles_csv(report)),
        (name("index.html"), crate::html::page(report)),
    ]);
    let mut written = Vec::new();
    for (name, body) in files {
        let path = dir.join(name);
        write_atomic(&path, body.as_bytes()).map_err(|source| OutputError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

fn preview_marker(r: &Report) -> String {
    format!(
        "{}\n\nThe files preview-* in this directory are a preview of {} {}: every count is shown, however few machines it covers (k = 1), so they can describe single machines. Do not publish them or this directory. For a publishable report run telemetry-report without --preview, into another directory.\n",
        crate::publish::PREVIEW_WARNING,
        r.product,
        r.period.label
    )
}

/// A preview as text for the terminal: the warnings, then every table.
pub fn preview_text(r: &Report) -> String {
    let mut out = String::new();
    for w in &r.warnings {
        let _ = writeln!(out, "{w}");
    }
    let _ = writeln!(
        out,
        "\n{} {}: {} to {} (UTC), batches filed up to {}",
        r.product,
        r.period.label,
        r.period.from,
        r.period.to,
        crate::period::Day::parse(&r.period.to)
            .map(|d| d.plus(i64::from(r.period.late_days)).to_string())
            .unwrap_or_default()
    );
    match r.totals {
        Some(t) => {
            let _ = writeln!(
                out,
                "totals: {}, {}",
                plural(t.events, "event", "events"),
                plural(t.machines, "machine", "machines")
            );
        }
        None => out.push_str("totals: suppressed\n"),
    }
    match r.dropped {
        Some(d) if d.machines == 0 => out.push_str("dropped by full local stores: none\n"),
        Some(d) => {
            let _ = writeln!(
                out,
                "dropped by full local stores: {} ({}, {})",
                plural(d.events, "event", "events"),
                plural(d.reports, "report", "reports"),
                plural(d.machines, "machine", "machines")
            );
        }
        None => out.push_str("dropped by full local stores: suppressed\n"),
    }
    for t in [&r.by_event, &r.by_os, &r.by_build, &r.by_week] {
        let mut rows: Vec<[String; 3]> = t
            .rows
            .iter()
            .map(|row| {
                [
                    row.key.clone(),
                    row.counts.events.to_string(),
                    row.counts.machines.to_string(),
                ]
            })
            .collect();
        if let Some(o) = &t.other {
            rows.push([
                format!("other ({} values)", o.values),
                o.counts.events.to_string(),
                o.counts.machines.to_string(),
            ]);
        }
        text_table(&mut out, [t.column, "events", "machines"], &rows);
    }
    let rows: Vec<[String; 4]> = r
        .by_event_week
        .iter()
        .filter_map(|c| {
            // Cells no machine sent are left out on the terminal.
            let n = c.counts.filter(|n| n.events > 0)?;
            Some([
                c.event.clone(),
                c.week.clone(),
                n.events.to_string(),
                n.machines.to_string(),
            ])
        })
        .collect();
    text_table(&mut out, ["event", "week", "events", "machines"], &rows);
    let mut rows: Vec<[String; 5]> = Vec::new();
    for d in &r.data {
        for row in &d.values.rows {
            rows.push([
                d.event.clone(),
                d.key.clone(),
                row.key.clone(),
                row.counts.events.to_string(),
                row.counts.machines.to_string(),
            ]);
        }
        if let Some(o) = &d.values.other {
            rows.push([
                d.event.clone(),
                d.key.clone(),
                format!("other ({} values)", o.values),
                o.counts.events.to_string(),
                o.counts.machines.to_string(),
            ]);
        }
    }
    text_table(
        &mut out,
        ["event", "key", "value", "events", "machines"],
        &rows,
    );
    let rows: Vec<[String; 6]> = r
        .data
        .iter()
        .filter_map(|d| {
            let p = d.percentiles.clone().flatten()?;
            Some([
                d.event.clone(),
                d.key.clone(),
                p.p50.to_string(),
                p.p90.to_string(),
                p.p99.to_string(),
                p.machines.to_string(),
            ])
        })
        .collect();
    text_table(
        &mut out,
        ["event", "key", "p50", "p90", "p99", "machines"],
        &rows,
    );
    out
}

/// `n` with the noun that agrees with it ("1 event", "2 events").
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Left-aligned first columns, right-aligned numbers (the last two).
fn text_table<const N: usize>(out: &mut String, head: [&str; N], rows: &[[String; N]]) {
    let mut width = head.map(|h| h.chars().count());
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    out.push('\n');
    let head = head.map(str::to_string);
    for r in std::iter::once(&head).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in r.iter().zip(width).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            if i + 2 >= N {
                let _ = write!(line, "{cell:>w$}");
            } else {
                let _ = write!(line, "{cell:<w$}");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// Write via a temp file and rename, so a published directory never holds
/// half a file.
fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// RFC 4180 quoting, for values (builds, OS names) that might hold a comma.
///
/// A field a spreadsheet would take for a formula (starting with `=`, `+`,
/// `-`, `@`, a tab or a carriage return) gets a leading `'`: builds, OS
/// names and event names come from whoever uploaded a batch, and
/// `=HYPERLINK(…)` from five fake machines must not become a live link in a
/// maintainer's spreadsheet. Numbers and bin labels (`-4`, `-4..-2`) are
/// left as they are.
fn csv_field(s: &str) -> String {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']) && !is_bin_label(s);
    let s = if formula {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if formula || s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// An integer, or a bin label as `crate::data::bin_label` writes it
/// (`..E`, `A..B`, `A..`).
fn is_bin_label(s: &str) -> bool {
    let int = |t: &str| {
        let digits = t.strip_prefix('-').unwrap_or(t);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    };
    match s.split_once("..") {
        None => int(s),
        Some((a, b)) => {
            (a.is_empty() || int(a)) && (b.is_empty() || int(b)) && !(a.is_empty() && b.is_empty())
        }
    }
}

/// `KEY,events,machines,other_values`: published rows, then the merged
/// row with an empty key and the number of values merged.
fn table_csv(t: &Table) -> String {
    let mut out = format!("{},events,machines,other_values\n", t.column);
    rows_csv(&mut out, "", t);
    out
}

/// `t`'s rows as CSV lines after `prefix` (fields ending in a comma):
/// published rows with `other_values` empty, then the merged row with an
/// empty key and the number of values merged.
fn rows_csv(out: &mut String, prefix: &str, t: &Table) {
    for r in &t.rows {
        let _ = writeln!(
            out,
            "{prefix}{},{},{},",
            csv_field(&r.key),
            r.counts.events,
            r.counts.machines
        );
    }
    if let Some(o) = &t.other {
        let _ = writeln!(
            out,
            "{prefix},{},{},{}",
            o.counts.events, o.counts.machines, o.values
        );
    }
}

/// `event,key,type,value,events,machines,other_values`: every value table
/// of `data`, rows as in the one-dimensional CSVs (the merged row has an
/// empty value and the number of values merged).
fn data_csv(r: &Report) -> String {
    let mut out = String::from("event,key,type,value,events,machines,other_values\n");
    for d in &r.data {
        let prefix = format!("{},{},{},", csv_field(&d.event), csv_field(&d.key), d.kind);
        rows_csv(&mut out, &prefix, &d.values);
    }
    out
}

/// `event,key,events,machines,p50,p90,p99,suppressed`: one row per int key.
fn percentiles_csv(r: &Report) -> String {
    let mut out = String::from("event,key,events,machines,p50,p90,p99,suppressed\n");
    for d in &r.data {
        let (e, k) = (csv_field(&d.event), csv_field(&d.key));
        match &d.percentiles {
            Some(Some(p)) => {
                let _ = writeln!(
                    out,
                    "{e},{k},{},{},{},{},{},false",
                    p.events,
                    p.machines,
                    csv_field(&p.p50),
                    csv_field(&p.p90),
                    csv_field(&p.p99)
                );
            }
            Some(None) => {
                let _ = writeln!(out, "{e},{k},,,,,,true");
            }
            None => {}
        }
    }
    out
}

/// `event,week,events,machines,suppressed`.
fn event_week_csv(r: &Report) -> String {
    let mut out = String::from("event,week,events,machines,suppressed\n");
    for c in &r.by_event_week {
        match c.counts {
            Some(n) => {
                let _ = writeln!(
                    out,
                    "{},{},{},{},false",
                    csv_field(&c.event),
                    c.week,
                    n.events,
                    n.machines
                );
            }
            None => {
                let _ = writeln!(out, "{},{},,,true", csv_field(&c.event), c.week);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::{Completeness, Privacy};

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(csv_field("1.0"), "1.0");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn csv_keeps_formulas_from_spreadsheets_but_not_numbers_or_bins() {
        assert_eq!(
            csv_field("=HYPERLINK(\"https://evil/\",\"Update\")"),
            "\"'=HYPERLINK(\"\"https://evil/\"\",\"\"Update\"\")\""
        );
        for f in ["+1+1", "-1+cmd", "@SUM(A1)", "\tx", "-", "-..", "--1"] {
            assert_eq!(csv_field(f), format!("\"'{f}\""), "{f}");
        }
        for f in [
            "-4", "-4..-2", "..-8", "-2..0", "65536..", "..10", "1.0-beta",
        ] {
            assert_eq!(csv_field(f), f, "{f}");
        }
    }

    fn report(privacy: Privacy) -> Report {
        let period = crate::period::Period::quarter("2026Q4").unwrap();
        let mut a = crate::aggregate::Aggregator::new(period.clone());
        let line = format!(
            r#"{{"id":"{}","event":"stop","product":"p","build":"1.0","timestamp":"2026-10-05T10:00:00.000001Z","machine":"{}","os":"linux","arch":"x86_64","data":{{}}}}"#,
            uuid::Uuid::from_u128(1),
            "c3".repeat(32)
        );
        a.add_line(line.as_bytes()).unwrap();
        crate::publish::publish(&a, "p", &period, 14, privacy, Completeness::Complete)
    }

    #[test]
    fn a_preview_is_written_under_its_own_names_beside_a_marker() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let written = write_all(&report(Privacy::Preview), &out).unwrap();
        let mut names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.remove(0), PREVIEW_MARKER, "the marker comes first");
        let expected: Vec<String> = FILES.iter().map(|f| format!("preview-{f}")).collect();
        assert_eq!(names, expected);
        for f in FILES {
            assert!(!out.join(f).exists(), "{f}");
        }
        let body = std::fs::read_to_string(out.join("preview-by_event.csv")).unwrap();
        assert_eq!(body, "event,events,machines,other_values\nstop,1,1,\n");
        for f in written {
            let body = std::fs::read_to_string(&f).unwrap();
            assert!(
                !body.contains("c3c3c3c3"),
                "{} holds the machine id",
                f.display()
            );
        }
    }

    #[test]
    fn a_preview_and_a_report_never_share_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (preview, public) = (dir.path().join("preview"), dir.path().join("public"));
        write_all(&report(Privacy::Preview), &preview).unwrap();
        write_all(&report(Privacy::K(2)), &public).unwrap();
        assert!(matches!(
            write_all(&report(Privacy::K(2)), &preview),
            Err(OutputError::ReportBesidePreview { .. })
        ));
        // Deleting only the marker does not make the preview publishable.
        std::fs::remove_file(preview.join(PREVIEW_MARKER)).unwrap();
        let err = write_all(&report(Privacy::K(2)), &preview).unwrap_err();
        assert!(err.to_string().contains("preview-*"), "{err}");
        assert!(!preview.join("report.json").exists());
        let err = write_all(&report(Privacy::Preview), &public).unwrap_err();
        assert!(
            matches!(
                err,
                OutputError::PreviewBesideReport {
                    found: "report.json",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!public.join(PREVIEW_MARKER).exists());
        // The same kind again is fine (a rerun).
        write_all(&report(Privacy::K(2)), &public).unwrap();
        // A file where the directory should be is named as such.
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let err = write_all(&report(Privacy::K(2)), &file).unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");
    }

    #[test]
    fn the_preview_table_starts_with_the_warning_and_shows_every_count() {
        let t = preview_text(&report(Privacy::Preview));
        assert!(t.starts_with(crate::publish::PREVIEW_WARNING), "{t}");
        assert!(t.contains("totals: 1 event, 1 machine"), "{t}");
        assert!(t.contains("dropped by full local stores: none"), "{t}");
        // Names left-aligned under their header, numbers right-aligned.
        assert!(
            t.contains("\nevent  events  machines\nstop        1         1\n"),
            "{t}"
        );
        assert!(
            t.contains("2026Q4: 2026-10-01 to 2026-12-31 (UTC), batches filed up to 2027-01-14")
        );
        assert!(!t.contains("c3c3c3c3"));
    }
}
