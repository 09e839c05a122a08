//! Writing a [`Report`]: `report.json`, one CSV per table, `index.html`.
//!
//! Every file is written from the published [`Report`] alone, never from
//! the raw counts, so nothing suppressed can reach any of them.

use crate::publish::{Report, Table};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct WriteError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// The files [`write_all`] creates, relative to the output directory.
pub const FILES: &[&str] = &[
    "report.json",
    "by_event.csv",
    "by_os.csv",
    "by_build.csv",
    "by_week.csv",
    "by_event_week.csv",
    "index.html",
];

/// Write every output file into `dir` (created if missing).
pub fn write_all(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, WriteError> {
    std::fs::create_dir_all(dir).map_err(|source| WriteError {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut json = serde_json::to_string_pretty(report).expect("report serializes to JSON");
    json.push('\n');
    let files: Vec<(&str, String)> = vec![
        ("report.json", json),
        ("by_event.csv", table_csv(&report.by_event)),
        ("by_os.csv", table_csv(&report.by_os)),
        ("by_build.csv", table_csv(&report.by_build)),
        ("by_week.csv", table_csv(&report.by_week)),
        ("by_event_week.csv", event_week_csv(report)),
        ("index.html", crate::html::page(report)),
    ];
    let mut written = Vec::new();
    for (name, body) in files {
        let path = dir.join(name);
        write_atomic(&path, body.as_bytes()).map_err(|source| WriteError {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
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
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `KEY,events,machines,other_values`: published rows, then the merged
/// row with an empty key and the number of values merged.
fn table_csv(t: &Table) -> String {
    let mut out = format!("{},events,machines,other_values\n", t.column);
    for r in &t.rows {
        let _ = writeln!(
            out,
            "{},{},{},",
            csv_field(&r.key),
            r.counts.events,
            r.counts.machines
        );
    }
    if let Some(o) = &t.other {
        let _ = writeln!(
            out,
            ",{},{},{}",
            o.counts.events, o.counts.machines, o.values
        );
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

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(csv_field("1.0"), "1.0");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
