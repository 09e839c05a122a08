//! The catalogue as a SQL view, for `sql/report.sql` (and its Spark
//! variant): `telemetry-report catalog-sql` prints it.
//!
//! The SQL cannot read a TOML manifest, and re-deriving the bins in SQL
//! would be a second implementation to keep in step; so the report's own
//! [`Catalog`] is written out as rows, one per allowed value:
//!
//! | kind | rows |
//! |---|---|
//! | `enum` | one per value, `label` = the value |
//! | `bool` | `true` and `false` |
//! | `int` | one per bin, `label` = the bin (`a..b`), `lo`/`hi` its bounds (`NULL`: open), `min_value`/`max_value` the allowed range |
//! | `string` | one, `max_len` its limit (checked, never counted) |
//!
//! An entry of a line's `data` is allowed when it matches a row of its
//! event and key: the same text for enums and bools, an integer (written
//! as an integer) in range and in the row's bin for ints.

use crate::data::{bin_labels, Catalog, Kind};
use std::fmt::Write;

/// Which SQL the view is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Athena (engine v3), Trino and DuckDB: `sql/report.sql`.
    Standard,
    /// Apache Spark SQL: `sql/report.spark.sql` (a session's temporary view).
    Spark,
}

/// The view's columns, in order.
pub const COLUMNS: &str =
    "event_name, data_key, kind, label, lo, hi, min_value, max_value, max_len";

/// `CREATE OR REPLACE [TEMPORARY] VIEW report_catalog AS ...` for `catalog`.
pub fn catalog_view(catalog: &Catalog, dialect: Dialect) -> String {
    let text = match dialect {
        Dialect::Standard => "VARCHAR",
        Dialect::Spark => "STRING",
    };
    let null_text = format!("CAST(NULL AS {text})");
    let quote = |s: &str| quote(s, dialect);
    let int = |v: Option<i64>| match v {
        None => "CAST(NULL AS BIGINT)".to_string(),
        // Its magnitude is not a BIGINT literal in Trino.
        Some(i64::MIN) => "(-9223372036854775807 - 1)".to_string(),
        Some(v) => v.to_string(),
    };
    let mut rows = Vec::new();
    for (event, keys) in &catalog.events {
        for (key, kind) in keys {
            let mut row = |label: Option<&str>, lo, hi, min, max, max_len: Option<usize>| {
                rows.push(format!(
                    "({}, {}, '{}', {}, {}, {}, {}, {}, {})",
                    quote(event),
                    quote(key),
                    kind.name(),
                    label.map_or(null_text.clone(), &quote),
                    int(lo),
                    int(hi),
                    int(min),
                    int(max),
                    int(max_len.map(|n| n as i64)),
                ));
            };
            match kind {
                Kind::Enum(values) => {
                    // A value listed twice is one row: two would count
                    // its events twice.
                    let mut seen = std::collections::HashSet::new();
                    for v in values.iter().filter(|v| seen.insert(*v)) {
                        row(Some(v), None, None, None, None, None);
                    }
                }
                Kind::Bool => {
                    for v in ["true", "false"] {
                        row(Some(v), None, None, None, None, None);
                    }
                }
                Kind::Int { min, max, edges } => {
                    for label in bin_labels(edges, *min) {
                        let (lo, hi) = label.split_once("..").expect("a bin label");
                        let bound = |s: &str| (!s.is_empty()).then(|| s.parse().expect("an edge"));
                        row(Some(&label), bound(lo), bound(hi), *min, *max, None);
                    }
                }
                Kind::String(max_len) => row(None, None, None, None, None, Some(*max_len)),
            }
        }
    }
    let create = match dialect {
        Dialect::Standard => "CREATE OR REPLACE VIEW",
        Dialect::Spark => "CREATE OR REPLACE TEMPORARY VIEW",
    };
    let mut out = format!(
        "-- The catalogue {} as rows, for report.sql (written by `telemetry-report catalog-sql`).\n",
        catalog.source
    );
    if rows.is_empty() {
        // VALUES needs a row: one of NULLs, filtered out.
        let _ = writeln!(
            out,
            "{create} report_catalog AS\nSELECT * FROM (VALUES ({null_text}, {null_text}, {null_text}, {null_text}, {n}, {n}, {n}, {n}, {n})) AS c({COLUMNS})\nWHERE event_name IS NOT NULL;",
            n = int(None)
        );
    } else {
        let _ = writeln!(
            out,
            "{create} report_catalog AS\nSELECT * FROM (VALUES\n  {}\n) AS c({COLUMNS});",
            rows.join(",\n  ")
        );
    }
    out
}

/// A SQL string literal: `'` doubled in standard SQL; Spark has no such
/// escape (`'a''b'` is two literals, `ab`) and reads `\\` as an escape,
/// so there both take a backslash.
fn quote(s: &str, dialect: Dialect) -> String {
    match dialect {
        Dialect::Standard => format!("'{}'", s.replace('\'', "''")),
        Dialect::Spark => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemetry_sink::manifest::Manifest;

    fn catalog() -> Catalog {
        let m = Manifest::parse(
            r#"
product = "p"
[events.start_end]
data.duration_s = { type = "int", min = 0, max = 10 }
data.success = { type = "bool" }
[events.app_created]
data.buildpack = { type = "enum", values = ["go", "java", "go"] }
data.note = { type = "string", max_len = 8 }
[events.sized]
data.mb = { type = "int", bins = [10, 100] }
[events.stop]
"#,
            std::path::Path::new("p.toml"),
            Some("p"),
        )
        .unwrap();
        Catalog::from_manifest(&m)
    }

    #[test]
    fn every_allowed_value_and_bin_is_a_row() {
        let sql = catalog_view(&catalog(), Dialect::Standard);
        assert!(
            sql.contains("CREATE OR REPLACE VIEW report_catalog AS"),
            "{sql}"
        );
        let rows: Vec<&str> = sql.lines().filter(|l| l.starts_with("  (")).collect();
        let n = "CAST(NULL AS BIGINT)";
        let t = "CAST(NULL AS VARCHAR)";
        assert_eq!(
            rows,
            [
                format!("  ('app_created', 'buildpack', 'enum', 'go', {n}, {n}, {n}, {n}, {n}),"),
                format!("  ('app_created', 'buildpack', 'enum', 'java', {n}, {n}, {n}, {n}, {n}),"),
                format!("  ('app_created', 'note', 'string', {t}, {n}, {n}, {n}, {n}, 8),"),
                format!("  ('sized', 'mb', 'int', '..10', {n}, 10, {n}, {n}, {n}),"),
                format!("  ('sized', 'mb', 'int', '10..100', 10, 100, {n}, {n}, {n}),"),
                format!("  ('sized', 'mb', 'int', '100..', 100, {n}, {n}, {n}, {n}),"),
                format!("  ('start_end', 'duration_s', 'int', '0..1', 0, 1, 0, 10, {n}),"),
                format!("  ('start_end', 'duration_s', 'int', '1..2', 1, 2, 0, 10, {n}),"),
                format!("  ('start_end', 'duration_s', 'int', '2..4', 2, 4, 0, 10, {n}),"),
                format!("  ('start_end', 'duration_s', 'int', '4..8', 4, 8, 0, 10, {n}),"),
                format!("  ('start_end', 'duration_s', 'int', '8..', 8, {n}, 0, 10, {n}),"),
                format!("  ('start_end', 'success', 'bool', 'true', {n}, {n}, {n}, {n}, {n}),"),
                format!("  ('start_end', 'success', 'bool', 'false', {n}, {n}, {n}, {n}, {n})"),
            ]
        );
    }

    #[test]
    fn spark_gets_a_temporary_view_and_an_empty_catalogue_a_filtered_row() {
        let sql = catalog_view(&Catalog::default(), Dialect::Spark);
        assert!(sql.contains("CREATE OR REPLACE TEMPORARY VIEW report_catalog AS"));
        assert!(sql.contains("CAST(NULL AS STRING)") && !sql.contains("VARCHAR"));
        assert!(sql.contains("WHERE event_name IS NOT NULL"), "{sql}");
        assert_eq!(quote("it's", Dialect::Standard), "'it''s'");
        assert_eq!(quote(r"it's a\b", Dialect::Spark), r"'it\'s a\\b'");
    }
}
