//! From counts to a publishable report: the k-anonymity rule.
//!
//! Every number written counts at least `k` distinct machines:
//! - In the one-dimensional tables (`by_event`, `by_os`, `by_build`,
//!   `by_week`) a value seen on fewer than `k` machines is not written at
//!   all (its name could itself be unique to a machine, e.g. a private
//!   build); it is merged into one `other` row. If that `other` row would
//!   itself count fewer than `k` machines, the smallest published rows are
//!   merged into it too until it does ("secondary suppression"), so that
//!   `totals` minus the published rows never reveals a small group.
//! - `by_event_week` is the full grid of the events published in
//!   `by_event` and the weeks published in `by_week` (both names already
//!   public). A cell under `k` machines, including one with none at all, is
//!   listed as `suppressed` with no numbers: were empty cells left out, a
//!   reader could tell "no machine" from "a few machines".
//! - `totals` and `dropped` are suppressed whole when under `k`; when
//!   `totals` is, every table is empty. `dropped` is written as 0 when no
//!   machine dropped anything: a 0 counts no machine, so it says nothing
//!   about any machine (a suppressed `dropped` then means that 1 to k − 1
//!   machines dropped events, with no number and nothing naming them).
//! - Run statistics (objects, lines, duplicates, lines outside the period)
//!   are not published: `lines − duplicates − outside_period` is
//!   `totals.events + dropped.reports`, which would give suppressed numbers
//!   back, and a duplicate count may come from one machine. They go to the
//!   terminal summary only.
//!
//! Machine ids are only ever counted; the report has no field that could
//! hold one, in a preview too.
//!
//! # Preview
//! [`Privacy::Preview`] (`--preview`) is for a developer looking at their
//! own data: the same aggregates with no k rule (k = 1), nothing merged or
//! suppressed, empty cells written as 0. Such a report is marked
//! (`preview`, `warnings`, and by `output` in its file names and page) and
//! must never be published.

use crate::aggregate::{Aggregator, Cell, SourceStats};
use crate::period::{Day, Period};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use std::collections::{HashMap, HashSet};

/// Identifies the format of `report.json` (see `report/SCHEMA.md`).
pub const SCHEMA: &str = "telemetry-report/2";

/// The smallest k a publishable report accepts: with 1, a published number
/// could describe a single machine (what it ran, its private build).
pub const MIN_K: u64 = 2;

/// Events and machines of a published cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Events.
    pub events: u64,
    /// Distinct machines.
    pub machines: u64,
}

/// A published row of a one-dimensional table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The value (event name, OS, build, week).
    pub key: String,
    /// Its counts.
    pub counts: Counts,
}

/// The merged values of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Other {
    /// How many distinct values were merged.
    pub values: u64,
    /// Their counts together (machines counted once).
    pub counts: Counts,
}

/// A one-dimensional table: published rows, largest first (`by_week` in
/// time order), then `other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The name of the key column: `event`, `os`, `build` or `week`.
    pub column: &'static str,
    /// Rows with at least `k` machines.
    pub rows: Vec<Row>,
    /// Everything else, if anything.
    pub other: Option<Other>,
}

/// A cell of `by_event_week`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeekCell {
    /// Event name.
    pub event: String,
    /// Monday of the week (`YYYY-MM-DD`).
    pub week: String,
    /// The counts, or `None` when suppressed.
    pub counts: Option<Counts>,
}

/// Which numbers a report may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privacy {
    /// Publishable: every number counts at least this many machines (the
    /// caller enforces k ≥ 2; 1 would publish single machines).
    K(u64),
    /// Every count, however few machines: for a developer's own eyes,
    /// never for publishing (see the module docs).
    Preview,
}

/// Whether the period could still get batches when the report ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completeness {
    /// Its last grace day has passed.
    Complete,
    /// It is not over, or its grace days are not: numbers can still grow.
    Partial {
        /// The first UTC day on which a run would be complete
        /// ([`Period::complete_on`]).
        complete_on: Day,
    },
}

/// The first entry of `warnings` in a preview.
pub const PREVIEW_WARNING: &str = "PREVIEW — NOT FOR PUBLISHING: no k-anonymity applied. Every count is shown, however few machines it covers; made by `telemetry-report --preview` for a look at your own data. Run without --preview for a publishable report.";

/// The whole report, as written to `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// Made with [`Privacy::Preview`]: not for publishing.
    pub preview: bool,
    /// What a reader must know before using the numbers (a preview, a
    /// partial period); empty for a complete, publishable report.
    pub warnings: Vec<String>,
    /// For the person running the report only (stderr), never published:
    /// events whose names the catalogue does not list, counted in `other`
    /// (their count may be under k, and the catalogue's path is local).
    #[serde(skip)]
    pub unlisted: Option<String>,
    /// The product.
    pub product: String,
    /// The period.
    pub period: PeriodOut,
    /// The period was not complete when the report ran (see
    /// [`Completeness`]).
    pub partial: bool,
    /// With `partial`: the first UTC day (`YYYY-MM-DD`) on which a run
    /// would be complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete_on: Option<String>,
    /// The minimum number of machines behind every published number (1 in
    /// a preview).
    pub k: u64,
    /// What was read. Never written to the output directory (see the
    /// module comment): only printed in the terminal summary.
    #[serde(skip)]
    pub source: SourceStats,
    /// All events and machines (`None`: suppressed).
    #[serde(serialize_with = "ser_maybe")]
    pub totals: Option<Counts>,
    /// Events and machines per event name.
    pub by_event: Table,
    /// Per operating system.
    pub by_os: Table,
    /// Per build (the CLI's version).
    pub by_build: Table,
    /// Per week (its Monday).
    pub by_week: Table,
    /// Per event and week: every event published in `by_event` × every
    /// week published in `by_week`.
    #[serde(serialize_with = "ser_week_cells")]
    pub by_event_week: Vec<WeekCell>,
    /// Events dropped by daemons whose local store was full.
    #[serde(serialize_with = "ser_dropped")]
    pub dropped: Option<Dropped>,
    /// Per catalogued data key of every event published in `by_event`:
    /// its values (see [`crate::data`]). Empty without a catalogue.
    pub data: Vec<DataTable>,
    /// Lines whose data the catalogue does not allow (left out of `data`;
    /// terminal summary only, like `source`).
    #[serde(skip)]
    pub data_left_out: u64,
}

/// One catalogued key of one event: its values under the k rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataTable {
    /// The event.
    pub event: String,
    /// The data key.
    pub key: String,
    /// `enum`, `bool` or `int`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// An int key's bin edges (each row's `value` is a bin, `a..b`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bins: Option<Vec<i64>>,
    /// Per value (or bin, or `(none)`), largest first, then `other`.
    pub values: Table,
    /// An int key's percentiles: `None` for other types; `Some(None)`
    /// when fewer than k machines sent a value.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_percentiles"
    )]
    pub percentiles: Option<Option<Percentiles>>,
}

/// Nearest-rank percentiles of an int key over the events that carry it,
/// each given as the bin it falls in, never as the value: the value at a
/// rank is one event's, so one machine's (with under 100 events the p99 is
/// the largest value sent). The bin is a published row of the key's table
/// (at least `k` machines), or [`OTHER`] when it was merged into `other`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    /// Events with a value.
    pub events: u64,
    /// Machines behind them.
    pub machines: u64,
    /// The median's bin.
    pub p50: String,
    /// The 90th percentile's bin.
    pub p90: String,
    /// The 99th percentile's bin.
    pub p99: String,
}

/// A percentile whose bin is under `k` machines, merged into the table's
/// `other` row.
pub const OTHER: &str = "other";

fn ser_percentiles<S: Serializer>(
    v: &Option<Option<Percentiles>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(Some(p)) => p.serialize(s),
        _ => suppressed(s),
    }
}

/// The value tables of the events in `published` (see [`crate::data`]).
fn data_tables(agg: &Aggregator, published: &[&str], k: u64, preview: bool) -> Vec<DataTable> {
    use crate::data::{bin_label, nearest_rank, Kind};
    let Some(catalog) = agg.data.catalog() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for event in published {
        let Some(keys) = catalog.events.get(*event) else {
            continue;
        };
        for (key, kind) in keys {
            if matches!(kind, Kind::String(_)) {
                continue;
            }
            let Some(counts) = agg.data.keys.get(&(event.to_string(), key.clone())) else {
                continue;
            };
            let values = one_dimension(
                "value",
                counts.values.iter().map(|(v, c)| (v.clone(), c)).collect(),
                k,
            );
            let (bins, percentiles) = match kind {
                Kind::Int { edges, .. } => {
                    let machines = counts.int_machines.len() as u64;
                    // The bin, if it is a published row (see Percentiles).
                    let p = |q| {
                        nearest_rank(&counts.ints, q).map(|v| {
                            let bin = bin_label(edges, v);
                            if values.rows.iter().any(|r| r.key == bin) {
                                bin
                            } else {
                                OTHER.to_string()
                            }
                        })
                    };
                    let pct = match (p(50), p(90), p(99)) {
                        (Some(p50), Some(p90), Some(p99)) if preview || machines >= k => {
                            Some(Percentiles {
                                events: counts.ints.values().sum(),
                                machines,
                                p50,
                                p90,
                                p99,
                            })
                        }
                        _ => None,
                    };
                    (Some(edges.clone()), Some(pct))
                }
                _ => (None, None),
            };
            out.push(DataTable {
                event: event.to_string(),
                key: key.clone(),
                kind: kind.name(),
                bins,
                values,
                percentiles,
            });
        }
    }
    out
}

/// The period in `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct PeriodOut {
    /// `2026Q4` or `FROM..TO`.
    pub label: String,
    /// First day.
    pub from: String,
    /// Last day.
    pub to: String,
    /// Grace days read after `to` (`--late-days`): the `dt=` partitions
    /// read were `from ..= to + late_days`, so a rerun or an SQL check can
    /// ask the same question.
    pub late_days: u16,
}

/// Dropped-event counters reported by daemons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Dropped {
    /// Events dropped (sum of the counters).
    pub events: u64,
    /// Counter lines (one per batch that reported drops).
    pub reports: u64,
    /// Distinct machines that reported drops.
    pub machines: u64,
}

/// Apply `privacy` to `agg`, read with `late_days` grace days.
pub fn publish(
    agg: &Aggregator,
    product: &str,
    period: &Period,
    late_days: u16,
    privacy: Privacy,
    completeness: Completeness,
) -> Report {
    let (k, preview) = match privacy {
        Privacy::K(k) => (k, false),
        Privacy::Preview => (1, true),
    };
    let totals = counts(&agg.all);
    // A preview publishes totals even with no machine at all (a period
    // whose batches held only events outside it).
    let ok = preview || totals.machines >= k;
    let table = |column: &'static str, cells: Vec<(String, &Cell)>| {
        if ok {
            one_dimension(column, cells, k)
        } else {
            Table {
                column,
                rows: Vec::new(),
                other: None,
            }
        }
    };
    // With a catalogue, only the names it lists (and the daemon's own
    // events) are published: any other, from a hand-made object or a
    // catalogue that has dropped it, goes into `other` unnamed, whatever
    // its count. A preview, for the vendor's eyes only, names them.
    let listed = |name: &str| {
        preview
            || agg.data.catalog().is_none_or(|c| {
                c.events.contains_key(name)
                    || telemetry_sink::manifest::DAEMON_EVENTS.contains(&name)
            })
    };
    let (named, unlisted): (Vec<_>, Vec<_>) = agg
        .by_event
        .iter()
        .map(|(k, c)| (k.clone(), c))
        .partition(|(k, _)| listed(k));
    let unlisted_events: u64 = unlisted.iter().map(|(_, c)| c.events).sum();
    let unlisted_names = unlisted.len();
    let by_event = if ok {
        one_dimension_merging("event", named, unlisted, k)
    } else {
        table("event", Vec::new())
    };
    let by_os = table(
        "os",
        agg.by_os.iter().map(|(k, c)| (k.clone(), c)).collect(),
    );
    let by_build = table(
        "build",
        agg.by_build.iter().map(|(k, c)| (k.clone(), c)).collect(),
    );
    let mut by_week = table(
        "week",
        agg.by_week
            .iter()
            .map(|(d, c)| (d.to_string(), c))
            .collect(),
    );
    // A time series reads in time order (the SQL's `ORDER BY week` too);
    // which weeks went into `other` was decided by size above.
    by_week.rows.sort_by(|a, b| a.key.cmp(&b.key));
    // Only names already public: published events × published weeks. The
    // whole grid is listed so that a cell with no machine looks the same as
    // a cell with fewer than k.
    let mut events: Vec<&str> = by_event.rows.iter().map(|r| r.key.as_str()).collect();
    events.sort_unstable();
    let data = data_tables(agg, &events, k, preview);
    let mut weeks: Vec<&str> = by_week.rows.iter().map(|r| r.key.as_str()).collect();
    weeks.sort_unstable();
    let week_cells: HashMap<(&str, String), &Cell> = agg
        .by_event_week
        .iter()
        .map(|((e, w), c)| ((e.as_str(), w.to_string()), c))
        .collect();
    let mut by_event_week = Vec::with_capacity(events.len() * weeks.len());
    for e in &events {
        for w in &weeks {
            let cell = week_cells.get(&(*e, w.to_string())).map(|c| counts(c));
            let counts = if preview {
                // Nothing suppressed: a cell no machine sent is a 0.
                Some(cell.unwrap_or(Counts {
                    events: 0,
                    machines: 0,
                }))
            } else {
                cell.filter(|n| n.machines >= k)
            };
            by_event_week.push(WeekCell {
                event: e.to_string(),
                week: w.to_string(),
                counts,
            });
        }
    }
    // Written when it counts k machines or more, and when it counts none
    // at all: a 0 describes no machine. Under k (but not 0) it is
    // suppressed, as is everything when the totals are.
    let dropped = Some(Dropped {
        events: agg.dropped.events,
        reports: agg.dropped_reports,
        machines: agg.dropped.machines.len() as u64,
    })
    .filter(|d| d.machines == 0 || (ok && d.machines >= k));
    let mut warnings = Vec::new();
    if preview {
        warnings.push(PREVIEW_WARNING.to_string());
    }
    let unlisted = (unlisted_names > 0 && ok).then(|| {
        format!(
            "{unlisted_events} events under {unlisted_names} {} that the catalogue ({}) does not list are counted in \"other\", never named; pass the catalogue that lists them (--catalog) if they are yours",
            if unlisted_names == 1 { "name" } else { "names" },
            agg.data.catalog().map_or("", |c| c.source.as_str())
        )
    });
    let complete_on = match completeness {
        Completeness::Complete => None,
        Completeness::Partial { complete_on } => {
            warnings.push(partial_warning(period, late_days, complete_on));
            Some(complete_on.to_string())
        }
    };
    Report {
        schema: SCHEMA,
        preview,
        warnings,
        unlisted,
        product: product.to_string(),
        period: PeriodOut {
            label: period.label.clone(),
            from: period.from.to_string(),
            to: period.to.to_string(),
            late_days,
        },
        partial: complete_on.is_some(),
        complete_on,
        k,
        source: agg.stats,
        totals: Some(totals).filter(|_| ok),
        by_event,
        by_os,
        by_build,
        by_week,
        by_event_week,
        dropped,
        data,
        data_left_out: agg.data.left_out,
    }
}

/// The warning of a report made before `complete_on`.
pub fn partial_warning(period: &Period, late_days: u16, complete_on: Day) -> String {
    format!(
        "PARTIAL: {} is not complete. Batches filed up to {} (the period's end plus --late-days {late_days}) are read, and more can still arrive until that day has passed, so the numbers can still grow. A run on or after {complete_on} (UTC) is complete.",
        period.label,
        period.last_dt(late_days),
    )
}

fn counts(c: &Cell) -> Counts {
    Counts {
        events: c.events,
        machines: c.machines.len() as u64,
    }
}

fn one_dimension(column: &'static str, cells: Vec<(String, &Cell)>, k: u64) -> Table {
    one_dimension_merging(column, cells, Vec::new(), k)
}

/// [`one_dimension`], with `merged` always in `other` whatever their
/// counts.
fn one_dimension_merging<'a>(
    column: &'static str,
    cells: Vec<(String, &'a Cell)>,
    merged: Vec<(String, &'a Cell)>,
    k: u64,
) -> Table {
    let (mut rows, mut small): (Vec<_>, Vec<_>) = cells
        .into_iter()
        .partition(|(_, c)| c.machines.len() as u64 >= k);
    small.extend(merged);
    // Largest first; ties by name so the output is repeatable.
    let order = |a: &(String, &Cell), b: &(String, &Cell)| {
        (b.1.machines.len(), b.1.events, &a.0).cmp(&(a.1.machines.len(), a.1.events, &b.0))
    };
    rows.sort_by(order);
    let union = |small: &[(String, &Cell)]| {
        let mut machines: HashSet<u32> = HashSet::new();
        let mut events = 0;
        for (_, c) in small {
            machines.extend(c.machines.iter().copied());
            events += c.events;
        }
        Counts {
            events,
            machines: machines.len() as u64,
        }
    };
    let mut other = union(&small);
    // Secondary suppression: a non-empty `other` under k would let
    // totals − published reveal a small group, so grow it from the smallest
    // published rows until it reaches k.
    while !small.is_empty() && other.machines < k {
        let Some(row) = rows.pop() else { break };
        small.push(row);
        other = union(&small);
    }
    Table {
        column,
        rows: rows
            .into_iter()
            .map(|(key, c)| Row {
                key,
                counts: counts(c),
            })
            .collect(),
        other: (!small.is_empty()).then_some(Other {
            values: small.len() as u64,
            counts: other,
        }),
    }
}

impl Serialize for Table {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.rows.len() + self.other.is_some() as usize))?;
        for r in &self.rows {
            seq.serialize_element(&KeyedRow {
                column: self.column,
                key: Some(&r.key),
                other: None,
                counts: r.counts,
            })?;
        }
        if let Some(o) = &self.other {
            seq.serialize_element(&KeyedRow {
                column: self.column,
                key: None,
                other: Some(o.values),
                counts: o.counts,
            })?;
        }
        seq.end()
    }
}

struct KeyedRow<'a> {
    column: &'static str,
    key: Option<&'a str>,
    other: Option<u64>,
    counts: Counts,
}

impl Serialize for KeyedRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry(self.column, &self.key)?;
        if let Some(values) = self.other {
            m.serialize_entry("other", &true)?;
            m.serialize_entry("values", &values)?;
        }
        m.serialize_entry("events", &self.counts.events)?;
        m.serialize_entry("machines", &self.counts.machines)?;
        m.end()
    }
}

fn ser_maybe<S: Serializer>(v: &Option<Counts>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(c) => c.serialize(s),
        None => suppressed(s),
    }
}

fn ser_dropped<S: Serializer>(v: &Option<Dropped>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(d) => d.serialize(s),
        None => suppressed(s),
    }
}

fn suppressed<S: Serializer>(s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(1))?;
    m.serialize_entry("suppressed", &true)?;
    m.end()
}

fn ser_week_cells<S: Serializer>(v: &[WeekCell], s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for c in v {
        let value = match c.counts {
            Some(n) => {
                serde_json::json!({"event": c.event, "week": c.week, "events": n.events, "machines": n.machines})
            }
            None => serde_json::json!({"event": c.event, "week": c.week, "suppressed": true}),
        };
        seq.serialize_element(&value)?;
    }
    seq.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(machines: std::ops::Range<u32>, events: u64) -> Cell {
        Cell {
            events,
            machines: machines.collect(),
        }
    }

    #[test]
    fn small_values_merge_into_other_and_other_reaches_k() {
        let (a, b, c, d) = (
            cell(0..10, 100),
            cell(10..16, 60),
            cell(16..18, 5),
            cell(18..19, 1),
        );
        let t = one_dimension(
            "os",
            vec![
                ("linux".into(), &a),
                ("macos".into(), &b),
                ("plan9".into(), &c),
                ("haiku".into(), &d),
            ],
            5,
        );
        // plan9 + haiku have 3 machines < 5, so the smallest published row
        // (macos) joins them.
        assert_eq!(t.rows.len(), 1);
        assert_eq!(t.rows[0].key, "linux");
        let o = t.other.unwrap();
        assert_eq!(o.values, 3);
        assert_eq!(
            o.counts,
            Counts {
                events: 66,
                machines: 9
            }
        );
    }

    #[test]
    fn no_other_when_everything_is_big_enough() {
        let (a, b) = (cell(0..5, 10), cell(3..9, 10));
        let t = one_dimension("os", vec![("x".into(), &a), ("y".into(), &b)], 5);
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0].key, "y", "more machines first");
        assert!(t.other.is_none());
    }

    #[test]
    fn json_marks_other_and_suppressed() {
        let (a, b, c) = (cell(0..5, 10), cell(5..7, 3), cell(7..8, 1));
        let t = one_dimension(
            "build",
            vec![("1.0".into(), &a), ("dev".into(), &b), ("dev2".into(), &c)],
            3,
        );
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"build": "1.0", "events": 10, "machines": 5},
                {"build": null, "other": true, "values": 2, "events": 4, "machines": 3}
            ])
        );
        let s = serde_json::to_string(&t).unwrap();
        assert!(!s.contains("dev"), "a merged value is never written: {s}");
    }

    fn line(id: u128, event: &str, day: &str, machine: u32) -> Vec<u8> {
        let data = if event == crate::aggregate::DROPPED_EVENT {
            r#"{"count":7}"#
        } else {
            "{}"
        };
        format!(
            r#"{{"id":"{}","event":"{event}","product":"p","build":"1.0","timestamp":"{day}T10:00:00.000001Z","machine":"m{machine}","os":"linux","arch":"x86_64","data":{data}}}"#,
            uuid::Uuid::from_u128(id)
        )
        .into_bytes()
    }

    /// `stop` on machines 0..10 in the weeks of 10-05, 10-12 and 10-19 and
    /// on machines 0..2 in the week of 10-26; `start` on machines 0..5 in
    /// the week of 10-12 only; `telemetry_dropped` from machines 0..2.
    fn weeks_aggregator() -> Aggregator {
        let mut a = Aggregator::new(Period::quarter("2026Q4").unwrap());
        let mut id = 0;
        let mut add =
            |a: &mut Aggregator, event: &str, day: &str, machines: std::ops::Range<u32>| {
                for m in machines {
                    id += 1;
                    a.add_line(&line(id, event, day, m)).unwrap();
                }
            };
        for day in ["2026-10-05", "2026-10-12", "2026-10-19"] {
            add(&mut a, "stop", day, 0..10);
        }
        add(&mut a, "stop", "2026-10-26", 0..2);
        add(&mut a, "start", "2026-10-12", 0..5);
        add(&mut a, crate::aggregate::DROPPED_EVENT, "2026-10-12", 0..2);
        a
    }

    #[test]
    fn event_week_grid_is_published_events_by_published_weeks() {
        let a = weeks_aggregator();
        let r = publish_k3(&a, Completeness::Complete);
        // by_week: 10-26 (2 machines) is under k; secondary suppression
        // takes the smallest published week (10-19) with it. The rest
        // read in time order, though 10-12 has more machines.
        let weeks: Vec<&str> = r.by_week.rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(weeks, ["2026-10-05", "2026-10-12"]);
        let cells: Vec<(&str, &str, Option<u64>)> = r
            .by_event_week
            .iter()
            .map(|c| {
                (
                    c.event.as_str(),
                    c.week.as_str(),
                    c.counts.map(|n| n.machines),
                )
            })
            .collect();
        // No cell of a week by_week did not publish (10-19 would give the
        // merged week's numbers back), and `start` in the week of 10-05,
        // where no machine sent it, is listed suppressed like a small cell.
        assert_eq!(
            cells,
            [
                ("start", "2026-10-05", None),
                ("start", "2026-10-12", Some(5)),
                ("stop", "2026-10-05", Some(10)),
                ("stop", "2026-10-12", Some(10)),
            ]
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v["by_event_week"][0],
            serde_json::json!({"event": "start", "week": "2026-10-05", "suppressed": true})
        );
    }

    #[test]
    fn no_run_statistics_and_dropped_under_k_suppressed() {
        let a = weeks_aggregator();
        assert!(a.stats.lines > 0);
        let r = publish_k3(&a, Completeness::Complete);
        let v = serde_json::to_value(&r).unwrap();
        assert!(v.get("source").is_none(), "{v}");
        assert_eq!(v["period"]["late_days"], 14);
        // Two machines dropped events: under k = 3.
        assert_eq!(v["dropped"], serde_json::json!({"suppressed": true}));
        assert_eq!(v["totals"]["machines"], 10);
    }

    fn no_drops(machines: u32) -> Aggregator {
        let mut a = Aggregator::new(q4());
        for m in 0..machines {
            a.add_line(&line(100 + m as u128, "stop", "2026-10-05", m))
                .unwrap();
        }
        a
    }

    /// With a catalogue, a name it does not list is never published, even
    /// with k machines or more: it goes into `other`, and a warning counts
    /// it (a preview still names it).
    #[test]
    fn names_the_catalogue_does_not_list_go_into_other() {
        let manifest = telemetry_sink::Manifest::builtin_cfdev();
        let mut a =
            Aggregator::with_catalog(q4(), Some(crate::data::Catalog::from_manifest(&manifest)));
        let mut id = 0;
        for (event, machines) in [("stop", 0..6), ("bosh", 0..5), ("made_up", 0..7)] {
            for m in machines {
                id += 1;
                a.add_line(&line(id, event, "2026-10-05", m)).unwrap();
            }
        }
        let r = publish_k3(&a, Completeness::Complete);
        let names: Vec<&str> = r.by_event.rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(names, ["stop", "bosh"]);
        let other = r.by_event.other.as_ref().unwrap();
        assert_eq!((other.values, other.counts.events), (1, 7));
        // Said to whoever runs it, never published: the count may be
        // under k, and the catalogue's path is theirs.
        assert!(
            r.unlisted
                .as_deref()
                .is_some_and(|w| w.contains("7 events under 1 name that")),
            "{:?}",
            r.unlisted
        );
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            !json.contains("made_up") && !json.contains("under 1 name"),
            "{json}"
        );
        let preview = publish(&a, "p", &q4(), 14, Privacy::Preview, Completeness::Complete);
        assert!(preview.by_event.rows.iter().any(|r| r.key == "made_up"));
    }

    // Issue #12: the page said "suppressed" for dropped events when none
    // were dropped.
    #[test]
    fn no_dropped_events_is_published_as_zero_not_suppressed() {
        let zero = serde_json::json!({"events": 0, "reports": 0, "machines": 0});
        let r = publish_k3(&no_drops(3), Completeness::Complete);
        assert!(r.totals.is_some());
        assert_eq!(serde_json::to_value(&r).unwrap()["dropped"], zero);
        // Also when the totals are suppressed: a 0 describes no machine.
        let r = publish_k3(&no_drops(2), Completeness::Complete);
        assert!(r.totals.is_none());
        assert_eq!(serde_json::to_value(&r).unwrap()["dropped"], zero);
    }

    fn q4() -> Period {
        Period::quarter("2026Q4").unwrap()
    }

    /// `agg` published as product `p` for 2026Q4, 14 late days, k = 3.
    fn publish_k3(agg: &Aggregator, completeness: Completeness) -> Report {
        publish(agg, "p", &q4(), 14, Privacy::K(3), completeness)
    }

    #[test]
    fn a_publishable_report_says_it_is_neither_a_preview_nor_partial() {
        let r = publish_k3(&weeks_aggregator(), Completeness::Complete);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["preview"], false);
        assert_eq!(v["partial"], false);
        assert_eq!(v["warnings"], serde_json::json!([]));
        assert!(v.get("complete_on").is_none(), "{v}");
    }

    #[test]
    fn a_partial_report_says_so_and_when_it_is_complete() {
        let complete_on = q4().complete_on(14);
        let r = publish_k3(&weeks_aggregator(), Completeness::Partial { complete_on });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["partial"], true);
        assert_eq!(v["complete_on"], "2027-01-15");
        let w = v["warnings"][0].as_str().unwrap();
        assert!(
            w.starts_with("PARTIAL") && w.contains("2027-01-14") && w.contains("2027-01-15"),
            "{w}"
        );
        // The numbers are the same as a complete run's.
        let full = publish_k3(&weeks_aggregator(), Completeness::Complete);
        assert_eq!(v["totals"], serde_json::to_value(&full).unwrap()["totals"]);
    }

    // Issue #12: a developer with one or two machines saw only "other" and
    // "suppressed".
    #[test]
    fn a_preview_shows_every_count_with_nothing_merged_or_suppressed() {
        let a = weeks_aggregator();
        let r = publish(&a, "p", &q4(), 14, Privacy::Preview, Completeness::Complete);
        assert!(r.preview);
        assert_eq!(r.k, 1);
        assert_eq!(r.warnings, [PREVIEW_WARNING]);
        for t in [&r.by_event, &r.by_os, &r.by_build, &r.by_week] {
            assert!(t.other.is_none(), "{}: nothing merged", t.column);
        }
        // The week of 10-26 has two machines: published.
        let weeks: Vec<&str> = r.by_week.rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(weeks.len(), 4, "{weeks:?}");
        assert!(weeks.contains(&"2026-10-26"));
        // The whole grid, zeros included: start was only sent in one week.
        assert_eq!(r.by_event_week.len(), 2 * 4);
        assert!(r.by_event_week.iter().all(|c| c.counts.is_some()));
        let start_1005 = r
            .by_event_week
            .iter()
            .find(|c| c.event == "start" && c.week == "2026-10-05")
            .unwrap();
        assert_eq!(
            start_1005.counts,
            Some(Counts {
                events: 0,
                machines: 0
            })
        );
        // Two machines dropped events: shown.
        assert_eq!(
            r.dropped,
            Some(Dropped {
                events: 14,
                reports: 2,
                machines: 2
            })
        );
        // One machine alone: still every count.
        let one = publish(
            &no_drops(1),
            "p",
            &q4(),
            14,
            Privacy::Preview,
            Completeness::Complete,
        );
        assert_eq!(
            one.totals,
            Some(Counts {
                events: 1,
                machines: 1
            })
        );
        assert_eq!(one.by_event.rows[0].key, "stop");
        let v = serde_json::to_value(&one).unwrap();
        assert_eq!(v["preview"], true);
        assert_eq!(v["k"], 1);
        assert!(!v.to_string().contains("\"m0\""), "no machine id: {v}");
    }

    /// `start_end` on machines 0..20: duration_s = machine × 10 (so 0..190)
    /// and success = (machine is even), and two events of machine 0 with
    /// data the catalogue does not allow; `app_created` on machines 0..20
    /// with buildpack go (0..12), java (12..18), ruby (18..20), and on
    /// machine 20 without one; `rare` (a catalogued event) on 2 machines
    /// and `stop` (not catalogued) on 3.
    fn data_aggregator() -> Aggregator {
        let m = telemetry_sink::Manifest::parse(
            r#"
product = "p"
[events.start_end]
data.duration_s = { type = "int", min = 0, max = 86400 }
data.success = { type = "bool" }
[events.app_created]
data.buildpack = { type = "enum", values = ["go", "java", "ruby"] }
[events.rare]
data.kind = { type = "enum", values = ["a"] }
"#,
            std::path::Path::new("p.toml"),
            Some("p"),
        )
        .unwrap();
        let catalog = crate::data::Catalog::from_manifest(&m);
        let mut a = Aggregator::with_catalog(q4(), Some(catalog));
        let mut id = 0u128;
        let mut add = |a: &mut Aggregator, event: &str, machine: u32, data: String| {
            id += 1;
            let l = format!(
                r#"{{"id":"{}","event":"{event}","product":"p","build":"1.0","timestamp":"2026-10-06T10:00:00.000001Z","machine":"m{machine}","os":"linux","arch":"x86_64","data":{data}}}"#,
                uuid::Uuid::from_u128(id)
            );
            a.add_line(l.as_bytes()).unwrap();
        };
        for m in 0..20 {
            let data = format!(r#"{{"duration_s":{},"success":{}}}"#, m * 10, m % 2 == 0);
            add(&mut a, "start_end", m, data);
            let bp = match m {
                0..12 => "go",
                12..18 => "java",
                _ => "ruby",
            };
            add(
                &mut a,
                "app_created",
                m,
                format!(r#"{{"buildpack":"{bp}"}}"#),
            );
        }
        add(&mut a, "app_created", 20, "{}".into());
        add(&mut a, "start_end", 0, r#"{"duration_s":-5}"#.into());
        add(
            &mut a,
            "start_end",
            0,
            r#"{"duration_s":5,"colour":"red"}"#.into(),
        );
        add(&mut a, "rare", 0, r#"{"kind":"a"}"#.into());
        add(&mut a, "rare", 1, r#"{"kind":"a"}"#.into());
        // With `rare`, 5 machines in by_event's other row: no published
        // event has to join it.
        for m in 2..5 {
            add(&mut a, "stop", m, "{}".into());
        }
        a
    }

    #[test]
    fn data_values_follow_the_k_rule_and_add_up_to_their_event() {
        let a = data_aggregator();
        assert_eq!(a.data.left_out, 2);
        let r = publish(&a, "p", &q4(), 14, Privacy::K(5), Completeness::Complete);
        let table = |e: &str, k: &str| {
            r.data
                .iter()
                .find(|d| d.event == e && d.key == k)
                .unwrap_or_else(|| {
                    panic!(
                        "no table for {e}.{k}: {:?}",
                        r.data
                            .iter()
                            .map(|d| (&d.event, &d.key))
                            .collect::<Vec<_>>()
                    )
                })
        };
        // Enum: go 12 and java 6 published; ruby (2) and (none) (1) are
        // under 5 machines together (3), so java joins them.
        let bp = table("app_created", "buildpack");
        assert_eq!(bp.kind, "enum");
        let rows: Vec<(&str, u64, u64)> = bp
            .values
            .rows
            .iter()
            .map(|r| (r.key.as_str(), r.counts.events, r.counts.machines))
            .collect();
        assert_eq!(rows, [("go", 12, 12)]);
        let other = bp.values.other.as_ref().unwrap();
        assert_eq!(
            (other.values, other.counts.events, other.counts.machines),
            (3, 9, 9)
        );
        // Bool: true on 10 even machines, false on 10 odd; the two
        // left-out lines of machine 0 are (none), under k, merged.
        let success = table("start_end", "success");
        let keys: Vec<&str> = success.values.rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys.len()
                + success
                    .values
                    .other
                    .as_ref()
                    .map_or(0, |o| o.values as usize),
            3
        );
        // Every key's rows add up to its event's events.
        let start_end = r
            .by_event
            .rows
            .iter()
            .find(|r| r.key == "start_end")
            .unwrap();
        for d in r.data.iter().filter(|d| d.event == "start_end") {
            let sum: u64 = d.values.rows.iter().map(|r| r.counts.events).sum::<u64>()
                + d.values.other.as_ref().map_or(0, |o| o.counts.events);
            assert_eq!(sum, start_end.counts.events, "{}", d.key);
        }
        // Int: bins from the catalogue's bounds; nearest-rank percentiles
        // over the 20 valid values 0, 10, …, 190: ranks 10, 18 and 20.
        let d = table("start_end", "duration_s");
        assert_eq!(d.bins.as_ref().unwrap()[..3], [0, 1, 2]);
        assert_eq!(
            d.percentiles,
            Some(Some(Percentiles {
                events: 20,
                machines: 20,
                p50: "64..128".into(),
                p90: "128..256".into(),
                p99: "128..256".into(),
            }))
        );
        // `rare` is not published (2 machines): no table for it at all.
        assert!(r.data.iter().all(|d| d.event != "rare"));
        // Nothing under k is written: not ruby, not the left-out key.
        let json = serde_json::to_string(&r).unwrap();
        for hidden in ["ruby", "colour", "red", "\"rare\""] {
            assert!(!json.contains(hidden), "{hidden} in {json}");
        }
        // With k = 25 nothing at all is published, percentiles included.
        let r = publish(&a, "p", &q4(), 14, Privacy::K(25), Completeness::Complete);
        assert!(r.data.is_empty());
    }

    #[test]
    fn percentiles_under_k_machines_are_suppressed_but_the_bins_stay() {
        let m = telemetry_sink::Manifest::parse(
            "product = \"p\"\n[events.e]\ndata.n = { type = \"int\", bins = [10] }\n",
            std::path::Path::new("p.toml"),
            Some("p"),
        )
        .unwrap();
        let mut a = Aggregator::with_catalog(q4(), Some(crate::data::Catalog::from_manifest(&m)));
        for (id, (machine, data)) in [
            (0, "{\"n\":3}"),
            (1, "{\"n\":30}"),
            (2, "{}"),
            (3, "{}"),
            (4, "{}"),
        ]
        .into_iter()
        .enumerate()
        {
            let l = format!(
                r#"{{"id":"{}","event":"e","product":"p","build":"1.0","timestamp":"2026-10-06T10:00:00.000001Z","machine":"m{machine}","os":"linux","arch":"x86_64","data":{data}}}"#,
                uuid::Uuid::from_u128(id as u128 + 1)
            );
            a.add_line(l.as_bytes()).unwrap();
        }
        let r = publish(&a, "p", &q4(), 14, Privacy::K(3), Completeness::Complete);
        let d = &r.data[0];
        assert_eq!(d.percentiles, Some(None), "2 machines sent a value");
        let v = serde_json::to_value(d).unwrap();
        assert_eq!(v["percentiles"], serde_json::json!({"suppressed": true}));
        assert_eq!(v["bins"], serde_json::json!([10]));
        // (none) has 3 machines; ..10 and 10.. one each, merged with it.
        assert_eq!(d.values.rows.len(), 0);
        assert_eq!(d.values.other.as_ref().unwrap().counts.machines, 5);
        // A preview shows them all.
        let p = publish(&a, "p", &q4(), 14, Privacy::Preview, Completeness::Complete);
        assert_eq!(p.data[0].percentiles.clone().unwrap().unwrap().p50, "..10");
    }

    /// A percentile is one event's value, so one machine's: it is given as
    /// its bin, and as `other` when that bin is not published.
    #[test]
    fn percentiles_are_published_as_bins_never_as_values() {
        let m = telemetry_sink::Manifest::parse(
            "product = \"p\"\n[events.e]\ndata.n = { type = \"int\", bins = [10, 20] }\n",
            std::path::Path::new("p.toml"),
            Some("p"),
        )
        .unwrap();
        let mut a = Aggregator::with_catalog(q4(), Some(crate::data::Catalog::from_manifest(&m)));
        // ..10: four machines; 10..20: three; 20..: one (the outlier).
        for (machine, n) in [3, 5, 8, 9, 11, 12, 13, 40_000].into_iter().enumerate() {
            let l = format!(
                r#"{{"id":"{}","event":"e","product":"p","build":"1.0","timestamp":"2026-10-06T10:00:00.000001Z","machine":"m{machine}","os":"linux","arch":"x86_64","data":{{"n":{n}}}}}"#,
                uuid::Uuid::from_u128(machine as u128 + 1)
            );
            a.add_line(l.as_bytes()).unwrap();
        }
        let r = publish(&a, "p", &q4(), 14, Privacy::K(3), Completeness::Complete);
        let d = &r.data[0];
        // 20.. (one machine) is merged with 10..20 to reach k.
        let rows: Vec<&str> = d.values.rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(rows, ["..10"]);
        let p = d.percentiles.clone().unwrap().unwrap();
        // Ranks 4, 8 and 8 of 8: the values 9, 40000 and 40000.
        assert_eq!(
            (p.p50.as_str(), p.p90.as_str(), p.p99.as_str()),
            ("..10", OTHER, OTHER)
        );
        let json = serde_json::to_string(&r).unwrap();
        for value in ["40000", "\"9\"", ":9,"] {
            assert!(!json.contains(value), "{value} in {json}");
        }
    }
}
