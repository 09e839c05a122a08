//! What users agreed to send, counted: every catalogued data key of every
//! catalogued event, by value.
//!
//! - **enum**: events and machines per value;
//! - **bool**: per `true` and `false`;
//! - **int**: per bin, and the nearest-rank p50, p90 and p99 over events
//!   (the smallest value whose events, with all smaller values', reach
//!   ⌈p·N/100⌉ of the N events that carry the key; `sql/report.sql`
//!   computes the same with `row_number`, so every engine agrees exactly);
//! - **string**: not counted. A catalogued string is bounded, not
//!   enumerated, and a free value can name a machine or a person.
//!
//! Every event of a catalogued event name falls in exactly one row of each
//! of its keys' tables: its value, or [`NONE`] when it did not send the key
//! or sent something the catalogue does not allow. So the rows of a key
//! always add up to the event's own count, and subtracting published rows
//! from it reveals nothing the k rule hid (see `publish`).
//!
//! A line whose data the catalogue does not allow (a key it does not list
//! for that event, a value out of range, an event it does not know that
//! carries data: a hand-made object, another catalogue version) is left out
//! of every value table and counted in [`DataAggregator::left_out`], which
//! the terminal summary prints. Nothing of it is published as a value.
//!
//! # Bins
//! An int key's bins are its catalogue's `bins` (edges e₀ < … < eₙ), else
//! derived from `min` and `max`: from `lo = max(min, 0)` (or `min` when
//! `max` is negative), the edges are `lo` and every power of two above it
//! up to `max` (2⁶² without a `max`), plus `0` and the negated powers of
//! two below 0 when `min` is negative. Values below e₀ fall in `..e₀`,
//! values from eᵢ up to (not including) eᵢ₊₁ in `eᵢ..eᵢ₊₁`, values from eₙ
//! on in `eₙ..`: Rust's range notation, half-open.

use crate::aggregate::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use telemetry_sink::manifest::{FieldType, Manifest};

/// The row of events that did not send the key (or sent a value the
/// catalogue does not allow). Cannot collide with a catalogued value:
/// those are identifiers.
pub const NONE: &str = "(none)";

/// The percentiles published for an int key.
pub const PERCENTILES: [u32; 3] = [50, 90, 99];

/// How one catalogued key is counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// One of these values.
    Enum(Vec<String>),
    /// `true` or `false`.
    Bool,
    /// An integer in `min..=max`, counted in the bins `edges` make.
    Int {
        /// Smallest allowed.
        min: Option<i64>,
        /// Largest allowed.
        max: Option<i64>,
        /// Bin edges, strictly ascending.
        edges: Vec<i64>,
    },
    /// Catalogued, checked, not counted (see the module docs).
    String(usize),
}

impl Kind {
    fn from_field(f: &FieldType) -> Kind {
        match f {
            FieldType::Enum { values } => Kind::Enum(values.clone()),
            FieldType::Bool => Kind::Bool,
            FieldType::Int { min, max, bins } => Kind::Int {
                min: *min,
                max: *max,
                edges: bins.clone().unwrap_or_else(|| derive_edges(*min, *max)),
            },
            FieldType::String { max_len } => Kind::String(*max_len),
        }
    }

    /// The type's name in `report.json`.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Enum(_) => "enum",
            Kind::Bool => "bool",
            Kind::Int { .. } => "int",
            Kind::String(_) => "string",
        }
    }

    /// The row `v` counts in, if the catalogue allows `v`.
    fn label(&self, v: &serde_json::Value) -> Option<String> {
        match (self, v) {
            (Kind::Enum(values), serde_json::Value::String(s)) => {
                values.contains(s).then(|| s.clone())
            }
            (Kind::Bool, serde_json::Value::Bool(b)) => Some(b.to_string()),
            (Kind::Int { min, max, edges }, v) => {
                let i = v.as_i64()?;
                let in_range = min.is_none_or(|m| i >= m) && max.is_none_or(|m| i <= m);
                in_range.then(|| bin_label(edges, i))
            }
            (Kind::String(max_len), serde_json::Value::String(s)) => {
                (s.len() <= *max_len).then(String::new)
            }
            _ => None,
        }
    }
}

/// Bin edges derived from an int key's bounds (see the module docs).
pub fn derive_edges(min: Option<i64>, max: Option<i64>) -> Vec<i64> {
    const TOP: i64 = 1 << 62;
    let max = max.unwrap_or(TOP);
    let min = min.unwrap_or(0).min(max);
    let mut edges = Vec::new();
    if min < 0 {
        // -2^k down to just above min, ascending, then 0.
        let mut p: i64 = 1;
        let mut negative = Vec::new();
        while -p > min && p < TOP {
            // Only edges a value can reach.
            if -p <= max {
                negative.push(-p);
            }
            p *= 2;
        }
        edges.push(min);
        edges.extend(negative.into_iter().rev());
        if max >= 0 {
            edges.push(0);
        }
    } else {
        edges.push(min);
    }
    let lo = *edges.last().expect("one edge");
    let mut p: i64 = 1;
    while p <= max && p < TOP {
        if p > lo {
            edges.push(p);
        }
        p *= 2;
    }
    edges.dedup();
    edges
}

/// The bin of `v` among `edges` (see the module docs).
pub fn bin_label(edges: &[i64], v: i64) -> String {
    match edges.iter().rposition(|e| *e <= v) {
        None => format!("..{}", edges[0]),
        Some(i) if i + 1 == edges.len() => format!("{}..", edges[i]),
        Some(i) => format!("{}..{}", edges[i], edges[i + 1]),
    }
}

/// Every bin label of `edges`, in order (the first only if some value can
/// fall below `edges[0]`: not when `min` is `edges[0]`).
pub fn bin_labels(edges: &[i64], min: Option<i64>) -> Vec<String> {
    let mut out = Vec::new();
    if min.is_none_or(|m| m < edges[0]) {
        out.push(format!("..{}", edges[0]));
    }
    for w in edges.windows(2) {
        out.push(format!("{}..{}", w[0], w[1]));
    }
    out.push(format!("{}..", edges[edges.len() - 1]));
    out
}

/// One product's catalogue as the report counts it: event → key → kind.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Catalog {
    /// Where it came from, for the summary.
    pub source: String,
    /// Event name → data key → kind.
    pub events: BTreeMap<String, BTreeMap<String, Kind>>,
}

impl Catalog {
    /// From a product manifest.
    pub fn from_manifest(m: &Manifest) -> Catalog {
        Catalog {
            source: m.source_name.clone(),
            events: m
                .events
                .iter()
                .map(|(e, keys)| {
                    let keys = keys
                        .iter()
                        .map(|(k, f)| (k.clone(), Kind::from_field(f)))
                        .collect();
                    (e.clone(), keys)
                })
                .collect(),
        }
    }
}

/// The counts of one (event, key).
#[derive(Debug, Default, Clone)]
pub struct KeyCounts {
    /// Per value (enum value, `true`/`false`, bin label, or [`NONE`]).
    pub values: HashMap<String, Cell>,
    /// An int key's events per exact value, for the percentiles: memory
    /// per distinct value, not per event.
    pub ints: BTreeMap<i64, u64>,
    /// The machines behind `ints`.
    pub int_machines: HashSet<u32>,
}

/// The value tables of every catalogued (event, key).
#[derive(Debug, Default)]
pub struct DataAggregator {
    catalog: Option<Catalog>,
    /// (event, key) → counts, for the keys that are counted (not strings).
    pub keys: BTreeMap<(String, String), KeyCounts>,
    /// Lines whose data the catalogue does not allow.
    pub left_out: u64,
}

impl DataAggregator {
    /// Counting against `catalog` (`None`: no value tables at all).
    pub fn new(catalog: Option<Catalog>) -> DataAggregator {
        DataAggregator {
            catalog,
            keys: BTreeMap::new(),
            left_out: 0,
        }
    }

    /// The catalogue counted against.
    pub fn catalog(&self) -> Option<&Catalog> {
        self.catalog.as_ref()
    }

    /// Count the data of one event of `event` from `machine`.
    pub fn add(
        &mut self,
        event: &str,
        data: &serde_json::Map<String, serde_json::Value>,
        machine: u32,
    ) {
        let Some(catalog) = &self.catalog else {
            return;
        };
        let Some(keys) = catalog.events.get(event) else {
            if !data.is_empty() {
                self.left_out += 1;
            }
            return;
        };
        // The whole line is allowed, or none of it counts.
        let mut labels: HashMap<&str, String> = HashMap::with_capacity(data.len());
        for (k, v) in data {
            match keys.get(k).and_then(|kind| kind.label(v)) {
                Some(label) => {
                    labels.insert(k.as_str(), label);
                }
                None => {
                    labels.clear();
                    self.left_out += 1;
                    break;
                }
            }
        }
        for (key, kind) in keys {
            if matches!(kind, Kind::String(_)) {
                continue;
            }
            let counts = self
                .keys
                .entry((event.to_string(), key.clone()))
                .or_default();
            let label = labels.get(key.as_str()).cloned();
            if let (Kind::Int { .. }, Some(_)) = (kind, &label) {
                let v = data[key].as_i64().expect("checked by label");
                *counts.ints.entry(v).or_default() += 1;
                counts.int_machines.insert(machine);
            }
            let cell = counts
                .values
                .entry(label.unwrap_or_else(|| NONE.to_string()))
                .or_default();
            cell.events += 1;
            cell.machines.insert(machine);
        }
    }
}

/// The nearest-rank `p`th percentile of `counts` (value → events): the
/// smallest value whose events and all smaller values' reach
/// ⌈p·N/100⌉ of N. `None` for no events.
pub fn nearest_rank(counts: &BTreeMap<i64, u64>, p: u32) -> Option<i64> {
    let n: u64 = counts.values().sum();
    if n == 0 {
        return None;
    }
    let rank = (u64::from(p) * n).div_ceil(100).max(1);
    let mut seen = 0;
    for (v, c) in counts {
        seen += c;
        if seen >= rank {
            return Some(*v);
        }
    }
    counts.keys().next_back().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog() -> Catalog {
        let m = Manifest::parse(
            r#"
product = "p"
[events.start_end]
data.duration_s = { type = "int", min = 0, max = 86400 }
data.success = { type = "bool" }
[events.app_created]
data.buildpack = { type = "enum", values = ["go", "java"] }
data.note = { type = "string", max_len = 8 }
[events.stop]
[events.sized]
data.mb = { type = "int", bins = [10, 100] }
"#,
            std::path::Path::new("p.toml"),
            Some("p"),
        )
        .unwrap();
        Catalog::from_manifest(&m)
    }

    fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn derived_edges_are_powers_of_two_from_the_bounds() {
        assert_eq!(
            derive_edges(Some(0), Some(86400)),
            [
                0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768,
                65536
            ]
        );
        assert_eq!(derive_edges(Some(5), Some(40)), [5, 8, 16, 32]);
        assert_eq!(derive_edges(Some(-5), Some(3)), [-5, -4, -2, -1, 0, 1, 2]);
        assert_eq!(derive_edges(Some(-9), Some(-3)), [-9, -8, -4]);
        let unbounded = derive_edges(None, None);
        assert_eq!(unbounded[0], 0);
        assert_eq!(*unbounded.last().unwrap(), 1 << 61);
    }

    #[test]
    fn values_fall_in_half_open_bins() {
        let e = [0, 1, 2, 4];
        assert_eq!(bin_label(&e, 0), "0..1");
        assert_eq!(bin_label(&e, 3), "2..4");
        assert_eq!(bin_label(&e, 4), "4..");
        assert_eq!(bin_label(&e, 99), "4..");
        assert_eq!(bin_label(&e, -1), "..0");
        assert_eq!(bin_labels(&e, Some(0)), ["0..1", "1..2", "2..4", "4.."]);
        assert_eq!(bin_labels(&[10, 100], None), ["..10", "10..100", "100.."]);
    }

    #[test]
    fn nearest_rank_percentiles_over_events() {
        // 1..=100, one event each: p50 = 50, p90 = 90, p99 = 99.
        let c: BTreeMap<i64, u64> = (1..=100).map(|v| (v, 1)).collect();
        assert_eq!(nearest_rank(&c, 50), Some(50));
        assert_eq!(nearest_rank(&c, 90), Some(90));
        assert_eq!(nearest_rank(&c, 99), Some(99));
        // 3 events: ranks ⌈1.5⌉ = 2, ⌈2.7⌉ = 3, ⌈2.97⌉ = 3.
        let c = BTreeMap::from([(10, 1), (20, 1), (30, 1)]);
        assert_eq!(nearest_rank(&c, 50), Some(20));
        assert_eq!(nearest_rank(&c, 90), Some(30));
        // Weighted: 7 events of 5, 3 of 9: p50 = 5, p90 = 9.
        let c = BTreeMap::from([(5, 7), (9, 3)]);
        assert_eq!(nearest_rank(&c, 50), Some(5));
        assert_eq!(nearest_rank(&c, 70), Some(5));
        assert_eq!(nearest_rank(&c, 71), Some(9));
        assert_eq!(nearest_rank(&BTreeMap::new(), 50), None);
    }

    #[test]
    fn every_event_counts_once_per_key_and_bad_lines_are_left_out() {
        let mut d = DataAggregator::new(Some(catalog()));
        d.add(
            "start_end",
            &obj(json!({"duration_s": 3, "success": true})),
            0,
        );
        d.add("start_end", &obj(json!({"duration_s": 70})), 1);
        // Out of range, a key of another version, a wrong type: left out
        // whole, so success=true there is not counted either.
        d.add(
            "start_end",
            &obj(json!({"duration_s": -1, "success": true})),
            2,
        );
        d.add("start_end", &obj(json!({"duration_s": 3, "extra": 1})), 2);
        d.add("start_end", &obj(json!({"success": "yes"})), 2);
        d.add(
            "app_created",
            &obj(json!({"buildpack": "go", "note": "x"})),
            0,
        );
        d.add("app_created", &obj(json!({"buildpack": "cobol"})), 1);
        d.add("unknown", &obj(json!({"a": 1})), 1);
        d.add("unknown", &obj(json!({})), 1);
        d.add("stop", &obj(json!({})), 1);
        assert_eq!(d.left_out, 5);
        let k = |e: &str, key: &str| &d.keys[&(e.to_string(), key.to_string())];
        let v = |e: &str, key: &str, value: &str| {
            k(e, key)
                .values
                .get(value)
                .map(|c| (c.events, c.machines.len()))
        };
        assert_eq!(v("start_end", "duration_s", "2..4"), Some((1, 1)));
        assert_eq!(v("start_end", "duration_s", "64..128"), Some((1, 1)));
        assert_eq!(v("start_end", "duration_s", NONE), Some((3, 1)));
        assert_eq!(v("start_end", "success", "true"), Some((1, 1)));
        assert_eq!(v("start_end", "success", NONE), Some((4, 2)));
        assert_eq!(v("app_created", "buildpack", "go"), Some((1, 1)));
        assert_eq!(v("app_created", "buildpack", NONE), Some((1, 1)));
        // Each key's rows add up to the event's five (two) lines.
        for (e, key, n) in [
            ("start_end", "duration_s", 5),
            ("start_end", "success", 5),
            ("app_created", "buildpack", 2),
        ] {
            assert_eq!(k(e, key).values.values().map(|c| c.events).sum::<u64>(), n);
        }
        // Strings are checked, never counted.
        assert!(!d.keys.contains_key(&("app_created".into(), "note".into())));
        assert_eq!(
            k("start_end", "duration_s").ints,
            BTreeMap::from([(3, 1), (70, 1)])
        );
    }

    #[test]
    fn without_a_catalogue_nothing_is_counted() {
        let mut d = DataAggregator::new(None);
        d.add("start_end", &obj(json!({"duration_s": 3})), 0);
        assert!(d.keys.is_empty());
        assert_eq!(d.left_out, 0);
    }
}
