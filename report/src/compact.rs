//! `telemetry-report compact`: a day's many small batch objects copied
//! into a few large ones, in a mirror with the same layout.
//!
//! Every machine uploads its own small objects, so a bucket of a million
//! machines holds tens of millions of objects a quarter, each one GET for
//! the report and one file split for Athena or Spark (docs/SCALE.md). The
//! mirror holds each day as `compacted-RUN-NNNN.ndjson.zst` parts of the
//! same NDJSON lines, so the report (`--source`), the SQL table definitions
//! and Spark read it unchanged, and give the same numbers: lines keep their
//! ids, and every reader counts an id once.
//!
//! The raw batches are never changed or deleted: they are the archive,
//! kept five years by the lifecycle rule. Rewriting them would restart S3's
//! expiry clock for every event in them, which the rule's one day of slack
//! cannot absorb. The mirror is a derived copy with its own, shorter
//! lifecycle (README: "Small objects and the mirror").
//!
//! # A day, again and again
//! `dt=` is the day a batch was sealed, and a machine that was offline
//! uploads it later, so a day's raw objects keep growing. Each compacted
//! day keeps `_sources` (which readers skip: Hive, Spark, Athena and
//! DuckDB's `*.ndjson.zst` glob ignore it): the run's id and the raw
//! objects it read, by key and size. A rerun lists the day (one LIST) and
//! does nothing more when that list is unchanged, so compacting a whole
//! quarter before its report reads only what arrived late.
//!
//! A changed day is read whole and written whole under new part names
//! (the run's id), uploaded, then `_sources` is replaced, then the older
//! runs' parts are deleted. A failure at any step leaves at worst old and
//! new parts side by side (each event in both, counted once by every
//! reader) and a rerun finishes the job; never a day with lines missing.
//! A day whose raw objects are all gone (a damaged batch moved out, a
//! deletion request) loses its parts too. Each line is checked as the
//! report checks it before it is copied: a damaged object stops the day
//! with its key and line before anything of the day is written, or, with
//! [`Damaged::Skip`] (`--skip-damaged`), is left out whole and named, as
//! the report leaves it out: one hand-made object in a bucket clients may
//! write to would otherwise stop every compaction of its day.

use crate::period::Day;
use crate::source::{Source, SourceError};
use crate::{Damaged, Staged, PREFETCH};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Size at which a part is closed (compressed; it ends a zstd block past
/// it): one S3 PUT takes at most 5 GB, and a part this size is one task's
/// work for Spark or Athena.
pub const PART_BYTES: u64 = 512 * 1024 * 1024;

/// The mirror's record of what a day's parts were made from.
pub const SOURCES: &str = "_sources";

/// A compaction that stopped, and whether the mirror's day changed.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// Reading or checking the raw objects (or the work directory)
    /// failed before anything was written.
    #[error("{0}; nothing of this day was changed in the mirror")]
    Read(SourceError),
    /// Writing to the mirror failed part way.
    #[error("{0}; the mirror's day may hold old and new parts side by side until compact runs again (every reader counts an event once)")]
    Write(SourceError),
}

/// What one day's compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayOutcome {
    /// The `dt=` day.
    pub day: Day,
    /// Raw objects listed.
    pub objects: u64,
    /// Their compressed bytes.
    pub bytes_in: u64,
    /// Nothing to do: the raw objects are those the parts were made from.
    pub unchanged: bool,
    /// Lines copied.
    pub lines: u64,
    /// Parts written.
    pub parts: u64,
    /// Their compressed bytes.
    pub bytes_out: u64,
    /// Parts of earlier runs deleted.
    pub stale: u64,
    /// Damaged objects left out whole ([`Damaged::Skip`]), each named with
    /// why.
    pub skipped: Vec<String>,
}

/// The local name of part `n` (1-based) while it is written.
fn part_name(n: u64) -> String {
    format!("compacted-{n:04}.ndjson.zst")
}

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

type Encoder = zstd::stream::write::Encoder<'static, Counting<std::io::BufWriter<std::fs::File>>>;

/// Writes lines into zstd parts of at most about `limit` compressed bytes
/// in `dir`.
pub struct PartWriter {
    dir: PathBuf,
    limit: u64,
    current: Option<Encoder>,
    done: Vec<(PathBuf, u64)>,
}

impl PartWriter {
    /// Parts in `dir` of about `limit` bytes each.
    pub fn new(dir: &Path, limit: u64) -> PartWriter {
        PartWriter {
            dir: dir.to_path_buf(),
            limit,
            current: None,
            done: Vec::new(),
        }
    }

    /// Append one line (without its newline).
    pub fn line(&mut self, line: &[u8]) -> std::io::Result<()> {
        let enc = match &mut self.current {
            Some(enc) => enc,
            None => {
                let path = self.dir.join(part_name(self.done.len() as u64 + 1));
                let file = std::io::BufWriter::new(std::fs::File::create(path)?);
                // Level 3, as the daemon's batches.
                self.current.insert(zstd::stream::write::Encoder::new(
                    Counting {
                        inner: file,
                        bytes: 0,
                    },
                    3,
                )?)
            }
        };
        enc.write_all(line)?;
        enc.write_all(b"\n")?;
        // The encoder holds back what it has not compressed yet, so a part
        // ends a block or so past the limit.
        if enc.get_ref().bytes >= self.limit {
            self.close()?;
        }
        Ok(())
    }

    fn close(&mut self) -> std::io::Result<()> {
        if let Some(enc) = self.current.take() {
            let mut counting = enc.finish()?;
            counting.flush()?;
            let bytes = counting.bytes;
            counting.inner.into_inner()?.sync_all()?;
            let path = self.dir.join(part_name(self.done.len() as u64 + 1));
            self.done.push((path, bytes));
        }
        Ok(())
    }

    /// The parts written, in order, with their sizes.
    pub fn finish(mut self) -> std::io::Result<Vec<(PathBuf, u64)>> {
        self.close()?;
        Ok(self.done)
    }
}

/// `_sources`: the run's id, then each raw object's key and size.
fn sources_text(run: &str, objects: &[crate::source::ObjectRef]) -> String {
    let mut text = format!("run {run}\n");
    for o in objects {
        text += &format!("{} {}\n", o.key, o.size);
    }
    text
}

/// The run id `_sources` names, if its object list is `listing`'s.
fn same_sources(recorded: &str, objects: &[crate::source::ObjectRef]) -> Option<String> {
    let (first, rest) = recorded.split_once('\n')?;
    let run = first.strip_prefix("run ")?;
    let expected = sources_text(run, objects);
    (expected.split_once('\n').map(|(_, r)| r) == Some(rest)).then(|| run.to_string())
}

/// The mirror's parts of `product`'s `day`, and the run each belongs to.
async fn mirror_parts(
    into: &Source,
    product: &str,
    day: Day,
) -> Result<Vec<(String, String)>, SourceError> {
    Ok(into
        .list(product, day, day)
        .await?
        .into_iter()
        .filter_map(|o| {
            let name = o.key.rsplit('/').next()?.to_string();
            let run = name
                .strip_prefix("compacted-")?
                .rsplit_once('-')?
                .0
                .to_string();
            Some((o.key, run))
        })
        .collect())
}

/// How one run compacts: where its parts are made, their size, its name,
/// and what it does about a damaged object.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    /// A directory for the parts on their way.
    pub work: &'a Path,
    /// Size at which a part is closed ([`PART_BYTES`]).
    pub part_bytes: u64,
    /// The run's name, in its parts' names.
    pub name: &'a str,
    /// Stop at a damaged object, or leave it out whole.
    pub damaged: Damaged,
}

/// Copy `product`'s objects filed on `day` in `source` into parts in
/// `into` (see the module docs), as `run` says. `None` when neither has
/// anything of the day.
pub async fn compact_day(
    source: &Source,
    into: &Source,
    product: &str,
    day: Day,
    run: Run<'_>,
) -> Result<Option<DayOutcome>, CompactError> {
    use futures::StreamExt;
    let Run {
        work,
        part_bytes,
        name: run,
        damaged,
    } = run;
    let objects = source
        .list(product, day, day)
        .await
        .map_err(CompactError::Read)?;
    let prefix = into.day_prefix(product, day);
    let sources_key = format!("{prefix}{SOURCES}");
    let existing = mirror_parts(into, product, day)
        .await
        .map_err(CompactError::Read)?;
    let recorded = into
        .get_small(&sources_key)
        .await
        .map_err(CompactError::Read)?;
    let mut outcome = DayOutcome {
        day,
        objects: objects.len() as u64,
        bytes_in: objects.iter().map(|o| o.size).sum(),
        unchanged: false,
        lines: 0,
        parts: 0,
        bytes_out: 0,
        stale: 0,
        skipped: Vec::new(),
    };
    if objects.is_empty() {
        if existing.is_empty() && recorded.is_none() {
            return Ok(None);
        }
        // Everything the parts were made from is gone from the archive.
        for (key, _) in &existing {
            into.delete(key).await.map_err(CompactError::Write)?;
            outcome.stale += 1;
        }
        if recorded.is_some() {
            into.delete(&sources_key)
                .await
                .map_err(CompactError::Write)?;
        }
        return Ok(Some(outcome));
    }
    let recorded_run = recorded
        .as_deref()
        .and_then(|r| std::str::from_utf8(r).ok())
        .and_then(|r| same_sources(r, &objects));
    if let Some(done) = recorded_run.filter(|r| existing.iter().any(|(_, run)| run == r)) {
        // Made from these very objects; only an interrupted run's older
        // parts may remain.
        for (key, part_run) in &existing {
            if *part_run != done {
                into.delete(key).await.map_err(CompactError::Write)?;
                outcome.stale += 1;
            }
        }
        outcome.unchanged = true;
        return Ok(Some(outcome));
    }
    let work_err = |e: std::io::Error| {
        CompactError::Read(SourceError::Write {
            location: work.display().to_string(),
            message: format!("writing a part: {e}"),
        })
    };
    let mut parts = PartWriter::new(work, part_bytes);
    // Left out of `_sources` too: the day is then never "unchanged" while
    // it holds them, and each later run names them again (a report over
    // the mirror must not lack them silently).
    let mut skipped_keys = std::collections::HashSet::new();
    let mut opened = futures::stream::iter(&objects)
        .map(|obj| async move { (obj, source.open(obj).await) })
        .buffered(PREFETCH);
    while let Some((obj, body)) = opened.next().await {
        let body = body.map_err(CompactError::Read)?;
        if damaged == Damaged::Skip {
            // Checked whole before any line is copied.
            let mut staged = Staged::default();
            let checked = source
                .read_opened(obj, body, |line| {
                    crate::aggregate::check_line(line, Some(product))?;
                    staged.push(line)
                })
                .await;
            match checked {
                Ok(()) => {
                    for line in staged.lines() {
                        parts.line(line).map_err(work_err)?;
                        outcome.lines += 1;
                    }
                }
                Err(e @ (SourceError::Corrupt { .. } | SourceError::Line { .. })) => {
                    outcome.skipped.push(e.without_remedy());
                    skipped_keys.insert(obj.key.clone());
                }
                Err(e) => return Err(CompactError::Read(e)),
            }
            continue;
        }
        let mut write_error = None;
        let read = source
            .read_opened(obj, body, |line| {
                crate::aggregate::check_line(line, Some(product))?;
                parts.line(line).map_err(|e| {
                    let message = e.to_string();
                    write_error = Some(e);
                    message
                })?;
                outcome.lines += 1;
                Ok(())
            })
            .await;
        if let Some(e) = write_error {
            return Err(work_err(e));
        }
        read.map_err(CompactError::Read)?;
    }
    let written = parts.finish().map_err(work_err)?;
    for (i, (path, bytes)) in written.iter().enumerate() {
        let key = format!("{prefix}compacted-{run}-{:04}.ndjson.zst", i + 1);
        into.put_file(&key, path)
            .await
            .map_err(CompactError::Write)?;
        let _ = std::fs::remove_file(path);
        outcome.parts += 1;
        outcome.bytes_out += bytes;
    }
    let sources = work.join(SOURCES);
    let copied: Vec<_> = objects
        .iter()
        .filter(|o| !skipped_keys.contains(&o.key))
        .cloned()
        .collect();
    std::fs::write(&sources, sources_text(run, &copied)).map_err(work_err)?;
    into.put_file(&sources_key, &sources)
        .await
        .map_err(CompactError::Write)?;
    // Only now: until here a reader saw the old parts (and perhaps some
    // new ones beside them), never fewer lines.
    for (key, part_run) in &existing {
        if part_run != run {
            into.delete(key).await.map_err(CompactError::Write)?;
            outcome.stale += 1;
        }
    }
    Ok(Some(outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A runtime, and a raw directory, a mirror and a work directory in a
    /// temporary one (kept while its guard lives).
    fn day_fixture() -> (
        tokio::runtime::Runtime,
        tempfile::TempDir,
        PathBuf,
        PathBuf,
        PathBuf,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (raw, into, work) = (
            dir.path().join("raw"),
            dir.path().join("mirror"),
            dir.path().join("work"),
        );
        std::fs::create_dir_all(&work).unwrap();
        (rt, dir, raw, into, work)
    }

    /// A run with small parts (so a day makes several).
    fn run_of<'a>(work: &'a Path, name: &'a str, damaged: Damaged) -> Run<'a> {
        Run {
            work,
            part_bytes: 4096,
            name,
            damaged,
        }
    }

    #[test]
    fn parts_split_near_the_limit_and_hold_every_line_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PartWriter::new(dir.path(), 4096);
        let mut rng = fastrand::Rng::with_seed(3);
        let lines: Vec<String> = (0..50_000)
            .map(|i| format!("{{\"n\":{i},\"r\":\"{:016x}\"}}", rng.u64(..)))
            .collect();
        for l in &lines {
            w.line(l.as_bytes()).unwrap();
        }
        let parts = w.finish().unwrap();
        assert!(parts.len() > 3, "{} parts", parts.len());
        let mut all = String::new();
        for (i, (path, bytes)) in parts.iter().enumerate() {
            assert_eq!(
                path.file_name().unwrap().to_str().unwrap(),
                format!("compacted-{:04}.ndjson.zst", i + 1)
            );
            assert_eq!(std::fs::metadata(path).unwrap().len(), *bytes);
            // A part ends within a block of the limit.
            assert!(*bytes < 4096 + 128 * 1024, "{bytes}");
            zstd::stream::read::Decoder::new(std::fs::File::open(path).unwrap())
                .unwrap()
                .read_to_string(&mut all)
                .unwrap();
        }
        assert_eq!(all, lines.join("\n") + "\n");
    }

    /// A raw batch of `n` valid lines (ids from `first`) on 2026-11-03.
    fn batch(root: &Path, name: &str, first: u128, n: u128) {
        let dir = root.join("v1/product=p/dt=2026-11-03");
        std::fs::create_dir_all(&dir).unwrap();
        let mut body = String::new();
        let mut rng = fastrand::Rng::with_seed(first as u64);
        for id in first..first + n {
            body += &format!(
                r#"{{"id":"{}","event":"e","product":"p","build":"1","timestamp":"2026-11-03T00:00:00Z","machine":"{:016x}","os":"linux","data":{{}}}}"#,
                uuid::Uuid::from_u128(id),
                rng.u64(..)
            );
            body.push('\n');
        }
        std::fs::write(
            dir.join(name),
            zstd::encode_all(body.as_bytes(), 3).unwrap(),
        )
        .unwrap();
    }

    /// The mirror's files of the day, and the ids in its parts.
    fn mirror(into: &Path) -> (Vec<String>, Vec<u128>) {
        let dir = into.join("v1/product=p/dt=2026-11-03");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        let mut ids = Vec::new();
        for n in names.iter().filter(|n| n.ends_with(".ndjson.zst")) {
            let body = zstd::decode_all(&std::fs::read(dir.join(n)).unwrap()[..]).unwrap();
            for l in String::from_utf8(body).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                ids.push(
                    uuid::Uuid::parse_str(v["id"].as_str().unwrap())
                        .unwrap()
                        .as_u128(),
                );
            }
        }
        ids.sort();
        (names, ids)
    }

    #[test]
    fn reruns_write_new_parts_before_old_ones_go_and_skip_an_unchanged_day() {
        let (rt, _dir, raw, into, work) = day_fixture();
        let (src, dst) = (Source::Dir(raw.clone()), Source::Dir(into.clone()));
        let day = Day::parse("2026-11-03").unwrap();
        let run = |run: &str| {
            rt.block_on(compact_day(
                &src,
                &dst,
                "p",
                day,
                run_of(&work, run, Damaged::Stop),
            ))
            .unwrap()
            .unwrap()
        };
        batch(&raw, "a-1-3000.ndjson.zst", 1, 3000);
        let first = run("r1");
        assert!(
            first.parts > 1 && first.lines == 3000 && !first.unchanged,
            "{first:?}"
        );
        let (names, ids) = mirror(&into);
        assert!(
            names
                .iter()
                .all(|n| n == SOURCES || n.starts_with("compacted-r1-")),
            "{names:?}"
        );
        assert_eq!(ids, (1..=3000).collect::<Vec<_>>());

        // Unchanged: nothing read or written.
        let again = run("r2");
        assert!(
            again.unchanged && again.parts == 0 && again.stale == 0,
            "{again:?}"
        );
        assert_eq!(mirror(&into).0, names);

        // A late upload: new parts under the new run, the old ones gone,
        // every line once.
        batch(&raw, "b-5000-5999.ndjson.zst", 5000, 1000);
        let late = run("r3");
        assert_eq!((late.lines, late.stale), (4000, first.parts), "{late:?}");
        let (names3, ids) = mirror(&into);
        assert!(
            names3
                .iter()
                .all(|n| n == SOURCES || n.starts_with("compacted-r3-")),
            "{names3:?}"
        );
        assert_eq!(ids, (1..=3000).chain(5000..6000).collect::<Vec<_>>());

        // An interrupted run left its parts beside r3's: the next run,
        // finding the day unchanged, removes them.
        let dayd = into.join("v1/product=p/dt=2026-11-03");
        std::fs::copy(
            dayd.join(&names3[0]),
            dayd.join("compacted-r9-0001.ndjson.zst"),
        )
        .unwrap();
        let cleaned = run("r4");
        assert!(cleaned.unchanged && cleaned.stale == 1, "{cleaned:?}");
        assert_eq!(mirror(&into).0, names3);

        // The raw objects gone: so are the parts and _sources.
        std::fs::remove_dir_all(raw.join("v1/product=p/dt=2026-11-03")).unwrap();
        let gone = run("r5");
        assert_eq!(
            (gone.objects, gone.stale),
            (0, names3.len() as u64 - 1),
            "{gone:?}"
        );
        assert_eq!(mirror(&into), (vec![], vec![]));
        assert!(rt
            .block_on(compact_day(
                &src,
                &dst,
                "p",
                day,
                run_of(&work, "r6", Damaged::Stop)
            ))
            .unwrap()
            .is_none());
    }

    /// A damaged object stops the day with its key, the mirror untouched;
    /// with `Damaged::Skip` it is left out whole and named, and the rest of
    /// the day is copied.
    #[test]
    fn a_damaged_object_stops_the_day_or_is_left_out_whole() {
        let (rt, _dir, raw, into, work) = day_fixture();
        let (src, dst) = (Source::Dir(raw.clone()), Source::Dir(into.clone()));
        let day = Day::parse("2026-11-03").unwrap();
        batch(&raw, "a-1-30.ndjson.zst", 1, 30);
        let junk = "b-1-1.ndjson.zst";
        std::fs::write(
            raw.join("v1/product=p/dt=2026-11-03").join(junk),
            "this is not zstd <html>",
        )
        .unwrap();
        batch(&raw, "c-100-119.ndjson.zst", 100, 20);
        let stopped = rt
            .block_on(compact_day(
                &src,
                &dst,
                "p",
                day,
                run_of(&work, "r1", Damaged::Stop),
            ))
            .unwrap_err()
            .to_string();
        assert!(
            stopped.contains(junk) && stopped.contains("nothing of this day"),
            "{stopped}"
        );
        assert_eq!(mirror(&into), (vec![], vec![]));
        let skipped = rt
            .block_on(compact_day(
                &src,
                &dst,
                "p",
                day,
                run_of(&work, "r2", Damaged::Skip),
            ))
            .unwrap()
            .unwrap();
        assert_eq!(skipped.lines, 50, "{skipped:?}");
        assert_eq!(skipped.skipped.len(), 1, "{skipped:?}");
        assert!(skipped.skipped[0].contains(junk), "{:?}", skipped.skipped);
        assert_eq!(
            mirror(&into).1,
            (1..=30).chain(100..120).collect::<Vec<_>>()
        );
        // Not "unchanged" at the next run: the damaged object is named again.
        let again = rt
            .block_on(compact_day(
                &src,
                &dst,
                "p",
                day,
                run_of(&work, "r3", Damaged::Skip),
            ))
            .unwrap()
            .unwrap();
        assert!(!again.unchanged && again.skipped.len() == 1, "{again:?}");
    }

    #[test]
    fn no_lines_no_parts() {
        let dir = tempfile::tempdir().unwrap();
        assert!(PartWriter::new(dir.path(), 10).finish().unwrap().is_empty());
    }
}
