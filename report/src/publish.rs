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
pub const SCHEMA: &str = "telemetry-report/1";

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

/// A one-dimensional table: published rows, largest first, then `other`.
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
    let by_event = table(
        "event",
        agg.by_event.iter().map(|(k, c)| (k.clone(), c)).collect(),
    );
    let by_os = table(
        "os",
        agg.by_os.iter().map(|(k, c)| (k.clone(), c)).collect(),
    );
    let by_build = table(
        "build",
        agg.by_build.iter().map(|(k, c)| (k.clone(), c)).collect(),
    );
    let by_week = table(
        "week",
        agg.by_week
            .iter()
            .map(|(d, c)| (d.to_string(), c))
            .collect(),
    );
    // Only names already public: published events × published weeks. The
    // whole grid is listed so that a cell with no machine looks the same as
    // a cell with fewer than k.
    let mut events: Vec<&str> = by_event.rows.iter().map(|r| r.key.as_str()).collect();
    events.sort_unstable();
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
    let (mut rows, mut small): (Vec<_>, Vec<_>) = cells
        .into_iter()
        .partition(|(_, c)| c.machines.len() as u64 >= k);
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
        // takes the smallest published week (10-19) with it.
        let weeks: Vec<&str> = r.by_week.rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(weeks, ["2026-10-12", "2026-10-05"]);
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
}
