//! WAL checkpoints on their own thread and connection.
//!
//! SQLite's automatic checkpoint runs inside whichever commit pushes the
//! WAL past its threshold, so that one commit (and every client waiting
//! for its ack) also pays for copying pages into the database and an
//! fsync of it: the tail of the acked-emit latency. A `PASSIVE` checkpoint
//! on a second connection does the same work beside the writer, never
//! blocking it. The writer keeps SQLite's automatic checkpoint as a
//! backstop, at [`BACKSTOP_FRAMES`] while this thread runs (SQLite's own
//! 1,000 when it cannot), so the WAL stays bounded at about that plus what
//! is committed during one pass of this thread.
//!
//! Under a steady load the backstop is what restarts the WAL: a `PASSIVE`
//! checkpoint copies what was committed when it started, and by the time
//! it ends more has been, so the WAL is never found wholly copied when the
//! writer next begins (which is when SQLite restarts it). Each backstop
//! costs the writer a sync of the WAL and of the database even when this
//! thread has copied nearly everything already. At SQLite's 1,000 frames
//! that was about 60 fsyncs a second on the store thread with 8 clients
//! sending one event at a time (issue #18); at 4,000 it is about 16.
//!
//! A checkpoint is also what syncs the WAL at `sync = normal`, so it bounds
//! what a power cut can take: the first write after a checkpoint began
//! asks for the next one within [`SYNC_WITHIN`], and [`COMMITS_PER_NUDGE`]
//! commits or [`BYTES_PER_NUDGE`] bytes ask for it at once (see
//! [`Checkpointer::wrote`]). An idle store has nothing to ask, so the
//! thread sleeps until the next write.

use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Write commands between nudges (each writes a handful of pages). Each
/// checkpoint syncs the WAL and the database; every 32 commits that was
/// about 80 fsyncs a second beside a busy writer (issue #18), for pages
/// the next checkpoint would copy again anyway (the right edges of the
/// b-trees change in every commit).
pub(super) const COMMITS_PER_NUDGE: u32 = 128;
/// The writer's automatic checkpoint (in WAL frames, each a page) while
/// this thread runs: 4,000 frames of 4 KiB plus a 24-byte header, about
/// 15.7 MiB of WAL.
pub(super) const BACKSTOP_FRAMES: i64 = 4000;
/// The WAL file is cut back to this size when it restarts after growing
/// past it (a large transaction); below it, SQLite reuses the file in
/// place. Room above the backstop, so the WAL of a steady load (which
/// overshoots the backstop while this thread holds its lock) is not cut
/// back and grown again at every restart.
pub(super) const WAL_SIZE_LIMIT: i64 = 24 * 1024 * 1024;
/// The longest a write waits for its checkpoint when fewer than
/// [`COMMITS_PER_NUDGE`] follow it: at `sync = normal`, what a power cut
/// can take is what was committed in about this long.
pub(super) const SYNC_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);
/// Or this many bytes of new rows, whichever comes first (bulk inserts).
pub(super) const BYTES_PER_NUDGE: u64 = 512 * 1024;

/// The checkpoint thread. Dropping it stops the thread and closes its
/// connection (waiting for a checkpoint in progress to end).
pub(super) struct Checkpointer {
    tx: Option<SyncSender<Ask>>,
    handle: Option<JoinHandle<()>>,
    /// Writes since the last ask for a checkpoint now.
    count: WriteCount,
    /// Whether a checkpoint that has not begun yet is asked for: it will
    /// cover every write until then. The thread clears it as a checkpoint
    /// begins, so the next write asks again.
    asked: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Open a second connection to `path` and start the thread. `None`
    /// when that is not possible; the writer's automatic checkpoint then
    /// does the work, as SQLite does by default.
    pub(super) fn start(path: &Path) -> Option<Checkpointer> {
        let conn = match Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "no checkpoint connection; commits will checkpoint themselves");
                return None;
            }
        };
        // A few pending asks are enough: a checkpoint covers everything
        // committed before it starts.
        let (tx, rx) = sync_channel::<Ask>(2);
        let asked = Arc::new(AtomicBool::new(false));
        let begun = asked.clone();
        let handle = std::thread::Builder::new()
            .name("telemetryd-ckpt".into())
            .spawn(move || {
                while let Ok(ask) = rx.recv() {
                    if ask == Ask::Soon {
                        // Until the count asks, the time is up or the
                        // store closes (a last checkpoint then).
                        let _ = rx.recv_timeout(SYNC_WITHIN);
                    }
                    // Writes from here on are not surely covered.
                    begun.store(false, Ordering::SeqCst);
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "WAL checkpoint failed; will retry at the next nudge");
                    }
                }
            })
            .ok()?;
        Some(Checkpointer {
            tx: Some(tx),
            handle: Some(handle),
            count: WriteCount::default(),
            asked,
        })
    }

    /// Count one committed write of about `bytes` and ask for what it
    /// needs: a checkpoint now once enough was written, else one within
    /// [`SYNC_WITHIN`] unless one not yet begun will cover it. Never
    /// blocks, and costs a commit no system call unless it asks.
    pub(super) fn wrote(&mut self, bytes: u64) {
        let covered = self.asked.swap(true, Ordering::SeqCst);
        if self.count.add(bytes) {
            self.ask(Ask::Now);
        } else if !covered {
            self.ask(Ask::Soon);
        }
    }

    /// A full queue already holds an ask the thread has yet to act on.
    fn ask(&self, ask: Ask) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(ask);
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// What the writer asks of the checkpoint thread.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// Enough was written: checkpoint at once.
    Now,
    /// A write no begun checkpoint covers: checkpoint within
    /// [`SYNC_WITHIN`], sooner if a [`Ask::Now`] comes.
    Soon,
}

/// Counts writes since the last ask for a checkpoint now.
#[derive(Default)]
struct WriteCount {
    commits: u32,
    bytes: u64,
}

impl WriteCount {
    /// Record one committed write of about `bytes`; true when it is time
    /// to ask for a checkpoint now (and the count starts over).
    fn add(&mut self, bytes: u64) -> bool {
        self.commits += 1;
        self.bytes += bytes;
        if self.commits >= COMMITS_PER_NUDGE || self.bytes >= BYTES_PER_NUDGE {
            *self = WriteCount::default();
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nudges_after_enough_commits_or_bytes() {
        let mut w = WriteCount::default();
        assert!((1..COMMITS_PER_NUDGE).all(|_| !w.add(10)));
        assert!(w.add(10), "the COMMITS_PER_NUDGE-th small commit nudges");
        assert!(!w.add(10), "and the count starts over");
        assert!(w.add(BYTES_PER_NUDGE), "one big write nudges at once");
    }

    #[test]
    fn a_checkpoint_beside_the_writer_copies_the_wal_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.execute_batch("CREATE TABLE t (x BLOB); ").unwrap();
        for _ in 0..50 {
            writer
                .execute("INSERT INTO t VALUES (zeroblob(4000))", [])
                .unwrap();
        }
        let before = std::fs::metadata(&path).unwrap().len();
        assert!(
            before < 50 * 4000,
            "rows are still only in the WAL: {before}"
        );
        let mut ckpt = Checkpointer::start(&path).expect("second connection opens");
        ckpt.wrote(BYTES_PER_NUDGE);
        drop(ckpt); // joins after the nudged checkpoint ran
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(
            after >= 50 * 4000,
            "the checkpoint copied the rows into the database: {after}"
        );
    }

    /// Writes too few to ask for a checkpoint now are each checkpointed
    /// (so synced) within the bound by the thread's own timer, the ones
    /// after a timed checkpoint as well as the first.
    #[test]
    fn every_write_is_checkpointed_within_the_bound_however_few() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.execute_batch("CREATE TABLE t (x BLOB); ").unwrap();
        // Still running (not dropped, which checkpoints at once): the
        // thread's own timer must do it.
        let mut ckpt = Checkpointer::start(&path).expect("second connection opens");
        for round in 1..=3u64 {
            writer
                .execute("INSERT INTO t VALUES (zeroblob(40000))", [])
                .unwrap();
            ckpt.wrote(40_000);
            let deadline = std::time::Instant::now() + SYNC_WITHIN * 10;
            while std::fs::metadata(&path).unwrap().len() < round * 40_000 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "write {round} was not checkpointed within {:?}",
                    SYNC_WITHIN * 10
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        drop(ckpt);
    }
}
