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
//! - `totals` and `dropped` are suppressed whole when under `k` (for
//!   `dropped` also when no machine dropped anything, for the same reason);
//!   when `totals` is, every table is empty.
//! - Run statistics (objects, lines, duplicates, lines outside the period)
//!   are not published: `lines − duplicates − outside_period` is
//!   `totals.events + dropped.reports`, which would give suppressed numbers
//!   back, and a duplicate count may come from one machine. They go to the
//!   terminal summary only.
//!
//! Machine ids are only ever counted; the report has no field that could
//! hold one.

use crate::aggregate::{Aggregator, Cell, SourceStats};
use crate::period::Period;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use std::collections::{HashMap, HashSet};

/// Identifies the format of `report.json` (see `report/SCHEMA.md`).
pub const SCHEMA: &str = "telemetry-report/1";

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

/// The whole report, as written to `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// The product.
    pub product: String,
    /// The period.
    pub period: PeriodOut,
    /// The minimum number of machines behind every published number.
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

/// Apply the k rule to `agg`, read with `late_days` grace days.
pub fn publish(agg: &Aggregator, product: &str, period: &Period, late_days: u16, k: u64) -> Report {
    let totals = counts(&agg.all);
    let ok = totals.machines >= k;
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
            let counts = week_cells
                .get(&(*e, w.to_string()))
                .map(|c| counts(c))
                .filter(|n| n.machines >= k);
            by_event_week.push(WeekCell {
                event: e.to_string(),
                week: w.to_string(),
                counts,
            });
        }
    }
    // Under k machines, including none: "nobody dropped" published as 0
    // would tell it apart from "a few machines dropped".
    let dropped = Some(Dropped {
        events: agg.dropped.events,
        reports: agg.dropped_reports,
        machines: agg.dropped.machines.len() as u64,
    })
    .filter(|d| ok && d.machines >= k);
    Report {
        schema: SCHEMA,
        product: product.to_string(),
        period: PeriodOut {
            label: period.label.clone(),
            from: period.from.to_string(),
            to: period.to.to_string(),
            late_days,
        },
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
        let r = publish(&a, "p", &Period::quarter("2026Q4").unwrap(), 14, 3);
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
        let r = publish(&a, "p", &Period::quarter("2026Q4").unwrap(), 14, 3);
        let v = serde_json::to_value(&r).unwrap();
        assert!(v.get("source").is_none(), "{v}");
        assert_eq!(v["period"]["late_days"], 14);
        // Two machines dropped events: under k = 3.
        assert_eq!(v["dropped"], serde_json::json!({"suppressed": true}));
        assert_eq!(v["totals"]["machines"], 10);
        // None at all is suppressed too, so that it looks like a few.
        let mut none = Aggregator::new(Period::quarter("2026Q4").unwrap());
        for m in 0..3 {
            none.add_line(&line(100 + m as u128, "stop", "2026-10-05", m))
                .unwrap();
        }
        let r = publish(&none, "p", &Period::quarter("2026Q4").unwrap(), 14, 3);
        assert!(r.totals.is_some() && r.dropped.is_none());
    }
}
