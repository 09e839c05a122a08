//! Counting: events and distinct machines per cell, de-duplicated by event id.
//!
//! # Memory
//! Proportional to what must be distinct, not to the raw data: one 16-byte
//! id per distinct event in the period (a `HashSet<u128>`, ~32 bytes with
//! the table's overhead: ~32 MB per million events), one entry per distinct
//! machine (its 64-hex id once, then a 4-byte index), and one 4-byte index
//! per (cell, machine) pair. A project whose quarter does not fit runs the
//! same queries on Athena or Trino (`sql/`).
//!
//! # Duplicates
//! The daemon never writes an event twice under one key, but a replayed
//! batch (a store re-created from a backup, a spool taken in twice) can put
//! the same event in a second object. The first line with an id counts;
//! later ones are counted as duplicates and ignored. Lines with one id are
//! copies of one event, so which one counts does not change a number.

use crate::period::{Day, Period};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};

/// The dropped-events counter line the daemon adds to a batch.
pub const DROPPED_EVENT: &str = "telemetry_dropped";

/// The marker the daemon uploads when a user asks for a product's data to
/// be forgotten (`telemetryctl forget`): every line of its machine ID is
/// left out of the report, wherever it is in the objects read.
pub const FORGET_EVENT: &str = "telemetry_forget";

/// Events and distinct machines of one cell.
#[derive(Debug, Default, Clone)]
pub struct Cell {
    /// Events (for the dropped counter: the sum of its `count`s).
    pub events: u64,
    /// Distinct machines, as indexes into the aggregator's machine table.
    pub machines: HashSet<u32>,
}

impl Cell {
    fn add(&mut self, machine: u32, events: u64) {
        // One per event line: cannot come near u64::MAX.
        self.events += events;
        self.machines.insert(machine);
    }
}

/// The largest dropped sum accepted: the SQL in `sql/` sums the counts as
/// BIGINT (i64), and the report must not say what it cannot.
const MAX_DROPPED: u64 = i64::MAX as u64;

/// The largest dropped count one line may carry: more than any daemon can
/// drop between two batches, and small enough that the lines of any object
/// the report can read cannot make the sum overflow. So a hand-made count
/// is a damaged line (named with its object), not a failure of whichever
/// genuine line comes after it.
const MAX_DROPPED_LINE: u64 = 1 << 40;

/// What the reader saw, for the report's `source` section.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SourceStats {
    /// Objects read.
    pub objects: u64,
    /// Compressed bytes read.
    pub bytes: u64,
    /// NDJSON lines read.
    pub lines: u64,
    /// Lines whose event id was already counted (replayed batches).
    pub duplicates: u64,
    /// Lines whose day is outside the period (read from the grace days).
    pub outside_period: u64,
    /// Machine IDs left out because a `telemetry_forget` marker of theirs
    /// is in the objects read.
    pub forgotten_machines: u64,
    /// Lines of those machines left out (their markers included).
    pub forgotten_lines: u64,
    /// Damaged objects left out whole (`--skip-damaged`).
    pub skipped_objects: u64,
}

/// Running counts for one product and period.
pub struct Aggregator {
    period: Period,
    seen: HashSet<u128>,
    /// Machine IDs whose every line is left out (see [`FORGET_EVENT`]).
    exclude: HashSet<String>,
    /// Machine IDs with a marker in the lines read, excluded or not yet.
    pub forgotten: HashSet<String>,
    machine_index: HashMap<String, u32>,
    /// Every counted event (not the dropped counters).
    pub all: Cell,
    /// Per event name.
    pub by_event: HashMap<String, Cell>,
    /// Per `os`.
    pub by_os: HashMap<String, Cell>,
    /// Per `build`.
    pub by_build: HashMap<String, Cell>,
    /// Per week (its Monday).
    pub by_week: HashMap<Day, Cell>,
    /// Per (event, week).
    pub by_event_week: HashMap<(String, Day), Cell>,
    /// `telemetry_dropped` counters: `events` is the sum of their counts.
    pub dropped: Cell,
    /// How many `telemetry_dropped` lines there were.
    pub dropped_reports: u64,
    /// Per catalogued data key and value.
    pub data: crate::data::DataAggregator,
    /// What was read.
    pub stats: SourceStats,
    /// Why each damaged object was left out (`--skip-damaged`).
    pub skipped: Vec<String>,
    /// The product of the object being read (its `product=` partition).
    partition: Option<String>,
}

/// The product whose partition `key` is under (`…/product=P/dt=…/…`).
pub fn partition_of(key: &str) -> Option<&str> {
    key.split('/')
        .find_map(|part| part.strip_prefix("product="))
}

#[derive(Deserialize)]
struct Line {
    id: String,
    /// Written by every daemon; checked against the object's partition.
    product: String,
    event: String,
    build: String,
    timestamp: String,
    machine: String,
    os: String,
    #[serde(default)]
    data: serde_json::Map<String, serde_json::Value>,
}

/// A line as the report reads it, with its id and UTC day; the error says
/// what is wrong (the caller adds the object and line number).
fn parse_line(line: &[u8], partition: Option<&str>) -> Result<(Line, u128, Day), String> {
    let l: Line = serde_json::from_slice(line).map_err(|e| format!("not an event: {e}"))?;
    // A daemon files each line under its own product: another product's
    // line in this partition was made by hand (a granted client chooses
    // the body it uploads), and must not be counted as this product's.
    if let Some(want) = partition.filter(|want| *want != l.product) {
        return Err(format!(
            "product {:?} in product={want}'s partition (no daemon files a line there)",
            l.product.chars().take(MAX_FIELD_LEN).collect::<String>()
        ));
    }
    let id = uuid::Uuid::parse_str(&l.id)
        .map_err(|e| format!("event id {:?} is not a UUID: {e}", l.id))?
        .as_u128();
    // Daemons write ids in the canonical form only. Other spellings of one
    // UUID (upper case, braces, `urn:uuid:`, no hyphens) would be one event
    // here but several to the SQL, which compares ids as text.
    if l.id.len() != 36 || l.id.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "event id {:?} is not a UUID in canonical form (lower-case, hyphenated)",
            l.id
        ));
    }
    // Its first ten characters are its UTC day (as the SQL takes them)
    // only in UTC, as daemons write it: an offset would file the event
    // under another day.
    let day = l
        .timestamp
        .get(..10)
        .filter(|_| is_utc_rfc3339(&l.timestamp))
        .and_then(|d| Day::parse(d).ok())
        .ok_or_else(|| {
            format!(
                "timestamp {:?} is not RFC 3339 in UTC (YYYY-MM-DDTHH:MM:SS[.fraction]Z, as daemons write it)",
                l.timestamp.chars().take(MAX_FIELD_LEN).collect::<String>()
            )
        })?;
    if l.machine.is_empty() || l.event.is_empty() {
        return Err("empty machine or event".into());
    }
    // Every distinct value is kept in memory until the end: a hand-made
    // object of near-identical 1 MiB machine IDs would otherwise take the
    // report's memory, not one line's. No daemon writes more than 64 bytes.
    for (field, value) in [
        ("machine", &l.machine),
        ("event", &l.event),
        ("build", &l.build),
        ("os", &l.os),
    ] {
        if value.len() > MAX_FIELD_LEN {
            return Err(format!(
                "{field} is {} bytes (at most {MAX_FIELD_LEN}; no daemon writes that)",
                value.len()
            ));
        }
    }
    // The names the report may publish are only what a daemon can write:
    // its charset and lengths, so a hand-made object (anyone may write an
    // `anonymous` prefix, and a broker never sees bodies) cannot put
    // markup, spaces or sentences on the vendor's public page (an
    // identifier it can: SCHEMA.md's known limit on invented machines).
    let names = telemetry_proto::Limits::default();
    telemetry_proto::validate_name("event", &l.event, &names)
        .and_then(|()| telemetry_proto::validate_name("os", &l.os, &names))
        .and_then(|()| telemetry_proto::validate_build(&l.build, &names))
        .map_err(|e| format!("not a line a daemon writes: {e}"))?;
    Ok((l, id, day))
}

/// The longest `machine`, `event`, `build` or `os` a line may carry.
pub const MAX_FIELD_LEN: usize = 256;

/// Whether the report can read `line` (what `compact` checks before it
/// copies a line, so a mirror never holds what the raw data would refuse),
/// and the drop count it carries if it is a `telemetry_dropped` line (0
/// otherwise), which `--skip-damaged` adds up before counting an object.
pub fn check_line(line: &[u8], partition: Option<&str>) -> Result<u64, String> {
    let (l, _, _) = parse_line(line, partition)?;
    if l.event == DROPPED_EVENT {
        return dropped_count(&l.data);
    }
    Ok(0)
}

/// A `telemetry_dropped` line's count, from its data.
fn dropped_count(data: &serde_json::Map<String, serde_json::Value>) -> Result<u64, String> {
    match data.get("count") {
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= MAX_DROPPED_LINE)
            .ok_or_else(|| {
                format!(
                    "{DROPPED_EVENT} count {v} is not a whole number from 0 to {MAX_DROPPED_LINE}"
                )
            }),
        None => Err(format!("{DROPPED_EVENT} without a count")),
    }
}

impl Aggregator {
    /// How much more the dropped sum can take before it passes what the
    /// SQL can sum (see [`check_line`]).
    pub fn dropped_room(&self) -> u64 {
        MAX_DROPPED.saturating_sub(self.dropped.events)
    }

    /// Empty counts for `period`, with no value tables.
    pub fn new(period: Period) -> Aggregator {
        Aggregator::with_catalog(period, None)
    }

    /// Empty counts for `period`, with value tables for every key of
    /// `catalog` (see [`crate::data`]).
    pub fn with_catalog(period: Period, catalog: Option<crate::data::Catalog>) -> Aggregator {
        Aggregator {
            period,
            seen: HashSet::new(),
            exclude: HashSet::new(),
            forgotten: HashSet::new(),
            machine_index: HashMap::new(),
            all: Cell::default(),
            by_event: HashMap::new(),
            by_os: HashMap::new(),
            by_build: HashMap::new(),
            by_week: HashMap::new(),
            by_event_week: HashMap::new(),
            dropped: Cell::default(),
            dropped_reports: 0,
            data: crate::data::DataAggregator::new(catalog),
            stats: SourceStats::default(),
            skipped: Vec::new(),
            partition: None,
        }
    }

    /// The lines read next are of the object at `key`: each must be of its
    /// partition's product.
    pub fn reading(&mut self, key: &str) {
        self.partition = partition_of(key).map(str::to_string);
    }

    /// Leave out every line of these machine IDs (known to be forgotten
    /// before reading, e.g. from markers outside the period).
    pub fn exclude(&mut self, machines: HashSet<String>) {
        self.stats.forgotten_machines = machines.len() as u64;
        self.exclude = machines;
    }

    /// Whether every machine with a marker in the lines read was left out
    /// from the start (so no second pass is needed).
    pub fn forgotten_all_excluded(&self) -> bool {
        self.forgotten.is_subset(&self.exclude)
    }

    /// Empty counts like `self`'s that leave out every machine it left out
    /// and every one in `self.forgotten`: for a second pass over the same
    /// objects, when the first found markers (they may come after the
    /// machine's other lines).
    pub fn excluding_forgotten(&self) -> Aggregator {
        let mut next = Aggregator::with_catalog(self.period.clone(), self.data.catalog().cloned());
        next.exclude(self.exclude.union(&self.forgotten).cloned().collect());
        next
    }

    /// Count one NDJSON line. The error says what is wrong with it (the
    /// caller adds the object and line number).
    pub fn add_line(&mut self, line: &[u8]) -> Result<(), String> {
        self.stats.lines += 1;
        let (l, id, day) = parse_line(line, self.partition.as_deref())?;
        // Before the period check: a marker in a grace day's partition
        // forgets the period's lines too (the SQL reads the same window).
        if l.event == FORGET_EVENT {
            self.forgotten.insert(l.machine.clone());
        }
        if self.exclude.contains(&l.machine) {
            self.stats.forgotten_lines += 1;
            return Ok(());
        }
        if l.event == FORGET_EVENT {
            // Counted in a pass that did not know the machine yet; the
            // caller reads again with it excluded (see `excluding`).
            return Ok(());
        }
        if !self.period.contains(day) {
            self.stats.outside_period += 1;
            return Ok(());
        }
        if !self.seen.insert(id) {
            self.stats.duplicates += 1;
            return Ok(());
        }
        let next = self.machine_index.len() as u32;
        let m = *self.machine_index.entry(l.machine).or_insert(next);
        if l.event == DROPPED_EVENT {
            let count = dropped_count(&l.data)?;
            // A hostile or corrupt counter must not wrap the sum around.
            let sum = self
                .dropped
                .events
                .checked_add(count)
                .filter(|n| *n <= MAX_DROPPED)
                .ok_or_else(|| {
                    format!(
                        "{DROPPED_EVENT} count {count} makes the dropped sum exceed {MAX_DROPPED}: the {} counters read before it already sum to {}",
                        self.dropped_reports, self.dropped.events
                    )
                })?;
            self.dropped.events = sum;
            self.dropped.machines.insert(m);
            self.dropped_reports += 1;
            return Ok(());
        }
        let week = day.week_start();
        self.data.add(&l.event, &l.data, m);
        self.all.add(m, 1);
        self.by_os.entry(l.os).or_default().add(m, 1);
        self.by_build.entry(l.build).or_default().add(m, 1);
        self.by_week.entry(week).or_default().add(m, 1);
        self.by_event_week
            .entry((l.event.clone(), week))
            .or_default()
            .add(m, 1);
        self.by_event.entry(l.event).or_default().add(m, 1);
        Ok(())
    }
}

/// `YYYY-MM-DDTHH:MM:SS`, an optional fraction of 1 to 9 digits, `Z`.
fn is_utc_rfc3339(t: &str) -> bool {
    let b = t.as_bytes();
    let Some((b'Z', head)) = b.split_last() else {
        return false;
    };
    if head.len() < 19 {
        return false;
    }
    let (main, fraction) = head.split_at(19);
    let shape_ok = main.iter().enumerate().all(|(i, c)| match i {
        4 | 7 => *c == b'-',
        10 => *c == b'T',
        13 | 16 => *c == b':',
        _ => c.is_ascii_digit(),
    });
    let fraction_ok = match fraction.split_first() {
        None => true,
        Some((b'.', digits)) => {
            (1..=9).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit)
        }
        Some(_) => false,
    };
    shape_ok && fraction_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: u128, event: &str, day: &str, machine: &str) -> Vec<u8> {
        format!(
            r#"{{"id":"{}","event":"{event}","product":"p","build":"1.0","timestamp":"{day}T10:00:00.000001Z","machine":"{machine}","os":"linux","arch":"x86_64","data":{{}}}}"#,
            uuid::Uuid::from_u128(id)
        )
        .into_bytes()
    }

    #[test]
    fn a_forget_marker_leaves_out_every_line_of_its_machine_on_the_second_pass() {
        let lines = [
            line(1, "stop", "2026-10-01", "m1"),
            line(2, "bosh", "2026-10-02", "m1"),
            line(3, "stop", "2026-10-02", "m2"),
            // In a grace day's partition, after the period: still counts.
            line(4, FORGET_EVENT, "2027-01-03", "m1"),
        ];
        let mut a = Aggregator::new(Period::quarter("2026Q4").unwrap());
        for l in &lines {
            a.add_line(l).unwrap();
        }
        assert_eq!(a.forgotten, HashSet::from(["m1".to_string()]));
        assert!(
            !a.by_event.contains_key(FORGET_EVENT),
            "a marker is not an event"
        );
        let mut b = a.excluding_forgotten();
        for l in &lines {
            b.add_line(l).unwrap();
        }
        assert_eq!((b.all.events, b.all.machines.len()), (1, 1));
        assert_eq!(b.by_event.get("stop").map(|c| c.events), Some(1));
        assert!(!b.by_event.contains_key("bosh"));
        assert_eq!(
            (b.stats.forgotten_machines, b.stats.forgotten_lines),
            (1, 3)
        );
        assert_eq!(
            b.stats.outside_period, 0,
            "m1's grace-day marker was left out first"
        );
    }

    /// A line of another product in a product's partition, or of none, was
    /// made by hand (a granted client chooses its body): damaged, never
    /// counted as this product's.
    #[test]
    fn a_line_of_another_product_in_a_partition_is_damaged() {
        let ours = line(1, "stop", "2026-10-01", "m1");
        assert_eq!(
            partition_of("x/v1/product=p/dt=2026-10-01/a.ndjson.zst"),
            Some("p")
        );
        assert_eq!(check_line(&ours, Some("p")), Ok(0));
        let e = check_line(&ours, Some("other")).unwrap_err();
        assert!(
            e.contains("product \"p\" in product=other's partition"),
            "{e}"
        );
        let mut a = Aggregator::new(Period::quarter("2026Q4").unwrap());
        a.reading("v1/product=other/dt=2026-10-01/a.ndjson.zst");
        assert!(a.add_line(&ours).is_err());
        assert_eq!(a.all.events, 0);
        a.reading("v1/product=p/dt=2026-10-01/b.ndjson.zst");
        a.add_line(&ours).unwrap();
        assert_eq!(a.all.events, 1);
        let bare = String::from_utf8(line(2, "stop", "2026-10-01", "m1"))
            .unwrap()
            .replace("\"product\":\"p\",", "");
        assert!(!bare.contains("product"), "{bare}");
        let e = check_line(bare.as_bytes(), Some("p")).unwrap_err();
        assert!(e.contains("missing field `product`"), "{e}");
    }

    /// Only names a daemon can write are read: markup or a sentence as an
    /// event, os or build makes the line damaged, never a published row.
    #[test]
    fn a_line_with_a_name_no_daemon_writes_is_damaged() {
        assert!(check_line(&line(1, "stop", "2026-10-01", "m1"), None).is_ok());
        for bad in [
            line(2, "<script>alert(1)</script>", "2026-10-01", "m1"),
            line(3, "Stop", "2026-10-01", "m1"),
            String::from_utf8(line(4, "stop", "2026-10-01", "m1"))
                .unwrap()
                .replace("\"linux\"", "\"linux <b>\"")
                .into_bytes(),
            String::from_utf8(line(5, "stop", "2026-10-01", "m1"))
                .unwrap()
                .replace("\"1.0\"", "\"1.0 beta\"")
                .into_bytes(),
        ] {
            let e = check_line(&bad, None).unwrap_err();
            assert!(e.contains("not a line a daemon writes"), "{e}");
        }
    }

    #[test]
    fn counts_dedups_and_filters_the_period() {
        let mut a = Aggregator::new(Period::quarter("2026Q4").unwrap());
        a.add_line(&line(1, "stop", "2026-10-01", "m1")).unwrap();
        a.add_line(&line(1, "stop", "2026-10-01", "m1")).unwrap();
        a.add_line(&line(2, "stop", "2026-10-05", "m2")).unwrap();
        a.add_line(&line(3, "stop", "2026-09-30", "m2")).unwrap();
        a.add_line(&line(4, "bosh", "2027-01-01", "m2")).unwrap();
        assert_eq!(a.all.events, 2);
        assert_eq!(a.all.machines.len(), 2);
        assert_eq!(a.stats.duplicates, 1);
        assert_eq!(a.stats.outside_period, 2);
        // 2026-10-01 is a Thursday (week of 2026-09-28); the 5th a Monday.
        let weeks: Vec<String> = {
            let mut w: Vec<_> = a.by_week.keys().map(|d| d.to_string()).collect();
            w.sort();
            w
        };
        assert_eq!(weeks, ["2026-09-28", "2026-10-05"]);
    }

    #[test]
    fn dropped_counters_are_summed_apart_from_events() {
        let mut a = Aggregator::new(Period::quarter("2026Q4").unwrap());
        let d = |id: u128, n: i128| {
            format!(
                r#"{{"id":"{}","event":"telemetry_dropped","product":"p","build":"telemetryd-0.1.0","timestamp":"2026-11-01T00:00:00.000000Z","machine":"m{id}","os":"linux","arch":"x86_64","data":{{"count":{n}}}}}"#,
                uuid::Uuid::from_u128(id)
            )
        };
        a.add_line(d(1, 7).as_bytes()).unwrap();
        a.add_line(d(2, 5).as_bytes()).unwrap();
        assert_eq!((a.dropped.events, a.dropped_reports), (12, 2));
        assert_eq!(a.all.events, 0);
        assert!(a.add_line(d(3, -1).as_bytes()).is_err());
        // Over i64::MAX (the SQL's BIGINT), or a sum that would pass it:
        // errors, never a wrapped or saturated count.
        let over = a
            .add_line(d(4, i64::MAX as i128 + 1).as_bytes())
            .unwrap_err();
        assert!(over.contains("9223372036854775808"), "{over}");
        assert!(a.add_line(d(5, u64::MAX as i128 + 1).as_bytes()).is_err());
        // One line's count is at most 2^40, more than a daemon can drop
        // between batches: a larger one is this line's fault, named with
        // its object, never a genuine line's that comes after it (the sum
        // of the lines of any object the report reads then stays in i64).
        let one = a.add_line(d(6, (1 << 40) + 1).as_bytes()).unwrap_err();
        assert!(one.contains("from 0 to 1099511627776"), "{one}");
        assert_eq!(a.dropped.events, 12, "nothing added by a refused line");
        a.add_line(d(7, 1 << 40).as_bytes()).unwrap();
        assert_eq!(a.dropped.events, 12 + (1 << 40));
        assert!(
            check_line(d(8, (1 << 40) + 1).as_bytes(), None).is_err(),
            "compact and --skip-damaged see it too"
        );
        // What --skip-damaged adds up before it counts an object.
        assert_eq!(check_line(d(9, 5).as_bytes(), None), Ok(5));
        assert_eq!(check_line(&line(1, "stop", "2026-10-01", "m"), None), Ok(0));
        assert_eq!(a.dropped_room(), MAX_DROPPED - (12 + (1 << 40)));
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let mut a = Aggregator::new(Period::quarter("2026Q4").unwrap());
        assert!(a
            .add_line(b"not json")
            .unwrap_err()
            .contains("not an event"));
        let bad_id = String::from_utf8(line(1, "stop", "2026-10-01", "m"))
            .unwrap()
            .replace("00000000-0000-0000-0000-000000000001", "xyz");
        assert!(a.add_line(bad_id.as_bytes()).unwrap_err().contains("UUID"));
        // Another spelling of a valid UUID is refused, not counted as the
        // same event (the SQL compares ids as text).
        let canonical = "00000000-0000-0000-0000-00000000000a";
        for other in [
            "00000000-0000-0000-0000-00000000000A",
            "{00000000-0000-0000-0000-00000000000a}",
            "urn:uuid:00000000-0000-0000-0000-00000000000a",
            "0000000000000000000000000000000a",
        ] {
            let l = String::from_utf8(line(10, "stop", "2026-10-01", "m"))
                .unwrap()
                .replace(canonical, other);
            let e = a.add_line(l.as_bytes()).unwrap_err();
            assert!(e.contains("canonical form"), "{other}: {e}");
        }
        assert!(a.add_line(&line(10, "stop", "2026-10-01", "m")).is_ok());
        let bad_ts = String::from_utf8(line(1, "stop", "2026-10-01", "m"))
            .unwrap()
            .replace("2026-10-01T", "yesterday");
        assert!(a
            .add_line(bad_ts.as_bytes())
            .unwrap_err()
            .contains("timestamp"));
        // Only UTC, as daemons write it: with an offset, or anything after
        // the day, the first ten characters are not its UTC day.
        for (n, other) in [
            "2026-09-30T23:30:00-02:00",
            "2026-10-05T01:00:00+03:00",
            "2026-10-01garbage",
            "2026-10-01T10:00:00",
            "2026-10-01T10:00:00.Z",
            "2026-10-01T10:00:00.0000000001Z",
            "2026-10-01 10:00:00Z",
        ]
        .iter()
        .enumerate()
        {
            let l = String::from_utf8(line(100 + n as u128, "stop", "2026-10-01", "m"))
                .unwrap()
                .replace("2026-10-01T10:00:00.000001Z", other);
            let e = a.add_line(l.as_bytes()).unwrap_err();
            assert!(e.contains("not RFC 3339 in UTC"), "{other}: {e}");
        }
        for (n, fine) in ["2026-10-01T10:00:00Z", "2026-10-01T10:00:00.5Z"]
            .iter()
            .enumerate()
        {
            let l = String::from_utf8(line(200 + n as u128, "stop", "2026-10-01", "m"))
                .unwrap()
                .replace("2026-10-01T10:00:00.000001Z", fine);
            assert!(a.add_line(l.as_bytes()).is_ok(), "{fine}");
        }
        // A machine ID no daemon writes, long enough to matter in memory.
        let long = "m".repeat(MAX_FIELD_LEN + 1);
        let e = a
            .add_line(&line(1, "stop", "2026-10-01", &long))
            .unwrap_err();
        assert!(e.contains("machine is 257 bytes"), "{e}");
        assert!(a
            .add_line(&line(1, "stop", "2026-10-01", &"m".repeat(MAX_FIELD_LEN)))
            .is_ok());
    }
}
