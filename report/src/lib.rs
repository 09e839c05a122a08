//! # telemetry-report
//!
//! The maintainers' side of telemetryd: read every uploaded batch of a
//! period, count, and publish anonymous aggregates that are safe to put on a
//! public web page.
//!
//! ```text
//!  S3 bucket or outbox dir ──list──> keys of the period (dt= partitions + grace days)
//!        │ stream one object at a time, zstd-decode, split lines
//!        v
//!  aggregate::Aggregator  (dedup by event id; events + distinct machines per cell)
//!        │ publish::publish  (k-anonymity: merge/suppress cells under k machines)
//!        v
//!  output::write_all ──> report.json, *.csv, index.html (html: SVG charts, no scripts)
//! ```
//!
//! `--preview` takes the same path with no k rule ([`publish::Privacy`]) and
//! ends in a terminal table or `preview-*` files that are marked as not for
//! publishing; a period not yet complete is refused, or marked partial
//! ([`publish::Completeness`], [`period::Period::complete_on`]).
//!
//! - [`period`]: quarters, days, ISO weeks; which partitions a period reads.
//! - [`source`]: listing and streaming objects from S3 or a directory.
//! - [`aggregate`]: the counts, and their memory bounds.
//! - [`data`]: the catalogued data keys' values, bins and percentiles.
//! - [`publish`]: the k rule, and the report's shape (`report/SCHEMA.md`).
//! - [`output`], [`html`]: the files.
//! - [`retention`]: the five-year S3 lifecycle rule.
//!
//! The same aggregates as SQL for Athena, Trino or DuckDB are in `sql/`;
//! the tests check that both give the same numbers over the same objects.

pub mod aggregate;
pub mod compact;
pub mod data;
pub mod html;
pub mod output;
pub mod period;
pub mod publish;
pub mod retention;
pub mod source;
pub mod sql;

use period::Period;
use source::{ObjectRef, Source, SourceError};

/// Which reading of the objects a [`Progress`] call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The first (and usually only) one.
    First,
    /// The second, made when the first found a `telemetry_forget` marker:
    /// every object again, without the lines of the machines it names.
    WithoutForgotten,
}

/// Called after each object with (pass, objects done, objects total, bytes
/// done).
pub type Progress<'a> = &'a mut dyn FnMut(Pass, u64, u64, u64);

/// Objects opened ahead of the one being read. S3 answers each GET after
/// tens of milliseconds; eight in flight hide that, and memory stays eight
/// connections' buffers (bodies are streamed, not collected).
pub const PREFETCH: usize = 8;

/// What to do with an object that is not a complete stream of valid lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damaged {
    /// Stop with an error naming it (the default: nothing is published
    /// from data the maintainer has not looked at).
    Stop,
    /// Leave it out whole and go on (`--skip-damaged`): each object's lines
    /// are checked before any is counted, so none of a damaged object's
    /// lines is. Its objects' lines are held in memory while checked, up to
    /// [`MAX_STAGED`]; a larger object counts as damaged.
    Skip,
}

/// The most decompressed line bytes of one object held while it is checked
/// ([`Damaged::Skip`]). A daemon's batch is a few MB at most.
pub const MAX_STAGED: usize = 256 << 20;

/// Read `objects` from `source` and count them for `period`, with value
/// tables for `catalog`'s data keys, leaving out every line of a machine
/// ID in `forgotten` or with a `telemetry_forget` marker in `objects`.
pub async fn aggregate(
    source: &Source,
    objects: &[ObjectRef],
    period: &Period,
    catalog: Option<data::Catalog>,
    forgotten: std::collections::HashSet<String>,
    damaged: Damaged,
    progress: Progress<'_>,
) -> Result<aggregate::Aggregator, SourceError> {
    let mut agg = aggregate::Aggregator::with_catalog(period.clone(), catalog);
    agg.exclude(forgotten);
    let agg = read_all(source, objects, agg, damaged, &mut |d, t, b| {
        progress(Pass::First, d, t, b)
    })
    .await?;
    if agg.forgotten_all_excluded() {
        return Ok(agg);
    }
    // Machines whose users asked to be forgotten: read again without any
    // of their lines (a marker may come after a machine's other lines, and
    // undoing counts already made would need a record of every one).
    let again = agg.excluding_forgotten();
    read_all(source, objects, again, damaged, &mut |d, t, b| {
        progress(Pass::WithoutForgotten, d, t, b)
    })
    .await
}

/// One object's lines, held while they are checked.
#[derive(Default)]
pub(crate) struct Staged {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Staged {
    pub(crate) fn push(&mut self, line: &[u8]) -> Result<(), String> {
        if self.bytes.len() + line.len() > MAX_STAGED {
            return Err(format!(
                "the object's lines pass {} MiB, more than --skip-damaged checks before counting",
                MAX_STAGED >> 20
            ));
        }
        self.bytes.extend_from_slice(line);
        self.ends.push(self.bytes.len());
        Ok(())
    }

    pub(crate) fn lines(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(a, b)| &self.bytes[a..b])
    }
}

/// Read `objects` into `agg`.
async fn read_all(
    source: &Source,
    objects: &[ObjectRef],
    mut agg: aggregate::Aggregator,
    damaged: Damaged,
    progress: &mut dyn FnMut(u64, u64, u64),
) -> Result<aggregate::Aggregator, SourceError> {
    use futures::StreamExt;
    let total = objects.len() as u64;
    let mut bytes = 0;
    // Opened in order and read in order, so a run is repeatable.
    let mut opened = futures::stream::iter(objects)
        .map(|obj| async move { (obj, source.open(obj).await) })
        .buffered(PREFETCH);
    let mut done = 0;
    while let Some((obj, body)) = opened.next().await {
        agg.reading(&obj.key);
        match damaged {
            Damaged::Stop => {
                source
                    .read_opened(obj, body?, |line| agg.add_line(line))
                    .await?
            }
            Damaged::Skip => {
                let mut staged = Staged::default();
                // Hand-made counters in several objects, each within the
                // per-line cap, could still pass the sum's: such an object
                // is left out too, not allowed to stop the report.
                let mut carried = 0u64;
                let partition = aggregate::partition_of(&obj.key);
                let checked = source
                    .read_opened(obj, body?, |line| {
                        carried = carried.saturating_add(aggregate::check_line(line, partition)?);
                        staged.push(line)
                    })
                    .await
                    .and_then(|()| {
                        if carried > agg.dropped_room() {
                            return Err(SourceError::Corrupt {
                                location: source.location(&obj.key),
                                message: format!(
                                    "its telemetry_dropped counts add up to {carried}, more than the dropped sum can still take"
                                ),
                            });
                        }
                        Ok(())
                    });
                match checked {
                    Ok(()) => {
                        for (i, line) in staged.lines().enumerate() {
                            agg.add_line(line).map_err(|message| SourceError::Line {
                                location: source.location(&obj.key),
                                line: i as u64 + 1,
                                message,
                            })?;
                        }
                    }
                    Err(e @ (SourceError::Corrupt { .. } | SourceError::Line { .. })) => {
                        agg.stats.skipped_objects += 1;
                        agg.skipped.push(e.without_remedy());
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        done += 1;
        bytes += obj.size;
        agg.stats.objects = done;
        agg.stats.bytes = bytes;
        progress(done, total, bytes);
    }
    Ok(agg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `--skip-damaged`, an object whose drop counts the sum can no
    /// longer take is left out whole, named, and the report goes on.
    #[test]
    fn an_object_whose_drop_counts_would_overflow_the_sum_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let line = |id: u128, event: &str, data: &str| {
            format!(
                r#"{{"id":"{}","event":"{event}","product":"p","build":"1.0","timestamp":"2026-10-05T10:00:00.000001Z","machine":"m","os":"linux","arch":"x86_64","data":{data}}}"#,
                uuid::Uuid::from_u128(id)
            )
        };
        let body = format!(
            "{}\n{}\n",
            line(1, "stop", "{}"),
            line(2, "telemetry_dropped", r#"{"count":5}"#)
        );
        let key = "o.ndjson.zst";
        let bytes = zstd::stream::encode_all(body.as_bytes(), 3).unwrap();
        std::fs::write(dir.path().join(key), &bytes).unwrap();
        let source = Source::Dir(dir.path().to_path_buf());
        let objects = [ObjectRef {
            key: key.into(),
            size: bytes.len() as u64,
        }];
        let period = Period::quarter("2026Q4").unwrap();
        let read = |room: u64| {
            let mut agg = aggregate::Aggregator::new(period.clone());
            agg.dropped.events = i64::MAX as u64 - room;
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(read_all(
                &source,
                &objects,
                agg,
                Damaged::Skip,
                &mut |_, _, _| {},
            ))
            .unwrap()
        };
        let fits = read(5);
        assert_eq!((fits.all.events, fits.stats.skipped_objects), (1, 0));
        let over = read(4);
        assert_eq!(
            (over.all.events, over.stats.skipped_objects),
            (0, 1),
            "left out whole"
        );
        assert!(
            over.skipped[0].contains("add up to 5"),
            "{:?}",
            over.skipped
        );
    }
}
