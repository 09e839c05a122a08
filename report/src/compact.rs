//! `telemetry-report compact`: a day's many small batch objects copied
//! into a few large ones, in a mirror with the same layout.
//!
//! Every machine uploads its own small objects, so a bucket of a million
//! machines holds tens of millions of objects a quarter, each one GET for
//! the report and one file split for Athena or Spark (docs/SCALE.md). The
//! mirror holds each day as `compacted-NNNN.ndjson.zst` parts of the same
//! NDJSON lines, so the report (`--source`), the SQL table definitions and
//! Spark read it unchanged, and give the same numbers: lines keep their
//! ids, and every reader counts an id once.
//!
//! The raw batches are never changed or deleted: they are the archive,
//! kept five years by the lifecycle rule. Rewriting them would restart S3's
//! expiry clock for every event in them, which the rule's one day of slack
//! cannot absorb. The mirror is a derived copy with its own, shorter
//! lifecycle (README: "Small objects and the mirror").
//!
//! A day is read whole and written whole, so running it again (after late
//! uploads) replaces the day's parts; parts of an earlier, larger run that
//! the new one does not write are deleted, and nothing else in the mirror
//! is touched. Each line is checked as the report checks it before it is
//! copied: a damaged object stops the day with its key and line, and the
//! day's old parts stay as they were.

use crate::period::Day;
use crate::source::{Source, SourceError};
use crate::PREFETCH;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Largest part, compressed: one S3 PUT takes at most 5 GB, and a part
/// this size is one task's work for Spark or Athena.
pub const PART_BYTES: u64 = 512 * 1024 * 1024;

/// What one day's compaction read and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayOutcome {
    /// The `dt=` day.
    pub day: Day,
    /// Raw objects read.
    pub objects: u64,
    /// Their compressed bytes.
    pub bytes_in: u64,
    /// Lines copied.
    pub lines: u64,
    /// Parts written.
    pub parts: u64,
    /// Their compressed bytes.
    pub bytes_out: u64,
    /// Parts of an earlier run deleted.
    pub stale: u64,
}

/// The name of part `n` (1-based).
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

/// Copy `product`'s objects filed on `day` in `source` into parts in
/// `into`, using `work` for the parts on their way. `None` when the day
/// has no objects.
pub async fn compact_day(
    source: &Source,
    into: &Source,
    product: &str,
    day: Day,
    work: &Path,
    part_bytes: u64,
) -> Result<Option<DayOutcome>, SourceError> {
    use futures::StreamExt;
    let objects = source.list(product, day, day).await?;
    if objects.is_empty() {
        return Ok(None);
    }
    let work_err = |e: std::io::Error| SourceError::Write {
        location: work.display().to_string(),
        message: format!("writing a part: {e}"),
    };
    let mut parts = PartWriter::new(work, part_bytes);
    let mut outcome = DayOutcome {
        day,
        objects: objects.len() as u64,
        bytes_in: objects.iter().map(|o| o.size).sum(),
        lines: 0,
        parts: 0,
        bytes_out: 0,
        stale: 0,
    };
    let mut opened = futures::stream::iter(&objects)
        .map(|obj| async move { (obj, source.open(obj).await) })
        .buffered(PREFETCH);
    while let Some((obj, body)) = opened.next().await {
        let mut write_error = None;
        let read = source
            .read_opened(obj, body?, |line| {
                crate::aggregate::check_line(line)?;
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
        read?;
    }
    let written = parts.finish().map_err(work_err)?;
    let prefix = into.day_prefix(product, day);
    let mut keys = Vec::new();
    for (path, bytes) in &written {
        let name = path.file_name().expect("a part name").to_string_lossy();
        let key = format!("{prefix}{name}");
        into.put_file(&key, path).await?;
        let _ = std::fs::remove_file(path);
        outcome.parts += 1;
        outcome.bytes_out += bytes;
        keys.push(key);
    }
    // Parts of an earlier run this one did not replace: its lines are all
    // in the new parts (a day only grows), so they would only be counted
    // as duplicates.
    for old in into.list(product, day, day).await? {
        let name = old.key.rsplit('/').next().unwrap_or_default();
        if name.starts_with("compacted-") && !keys.contains(&old.key) {
            into.delete(&old.key).await?;
            outcome.stale += 1;
        }
    }
    Ok(Some(outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

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

    #[test]
    fn no_lines_no_parts() {
        let dir = tempfile::tempdir().unwrap();
        assert!(PartWriter::new(dir.path(), 10).finish().unwrap().is_empty());
    }
}
