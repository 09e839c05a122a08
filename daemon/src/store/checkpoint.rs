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
//! what a power cut can take: the first write after a checkpoint asks for
//! the next one within [`SYNC_WITHIN`] ([`Checkpointer::soon`]), and
//! [`COMMITS_PER_NUDGE`] commits or [`BYTES_PER_NUDGE`] bytes ask for it at
//! once. An idle store has nothing to ask, so the thread sleeps until the
//! next write.

use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};
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
        let handle = std::thread::Builder::new()
            .name("telemetryd-ckpt".into())
            .spawn(move || {
                while let Ok(ask) = rx.recv() {
                    if ask == Ask::Soon {
                        // Until the count asks, the time is up or the
                        // store closes (a last checkpoint then).
                        let _ = rx.recv_timeout(SYNC_WITHIN);
                    }
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
        })
    }

    /// Ask for a checkpoint now; never blocks (a pending one will do).
    pub(super) fn nudge(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(Ask::Now);
        }
    }

    /// Ask for a checkpoint within [`SYNC_WITHIN`]; never blocks.
    pub(super) fn soon(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(Ask::Soon);
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
    /// The first write since the last ask: checkpoint within
    /// [`SYNC_WITHIN`], sooner if a [`Ask::Now`] comes.
    Soon,
}

/// What a committed write asks of the checkpoint thread.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Due {
    Nothing,
    Soon,
    Now,
}

/// Counts writes since the last nudge.
#[derive(Default)]
pub(super) struct WriteCount {
    commits: u32,
    bytes: u64,
}

impl WriteCount {
    /// Record one committed write of about `bytes` and say what to ask
    /// of the checkpointer: now when enough was written (and the count
    /// starts over), soon for the first write since then.
    pub(super) fn add(&mut self, bytes: u64) -> Due {
        self.commits += 1;
        self.bytes += bytes;
        if self.commits >= COMMITS_PER_NUDGE || self.bytes >= BYTES_PER_NUDGE {
            *self = WriteCount::default();
            Due::Now
        } else if self.commits == 1 {
            Due::Soon
        } else {
            Due::Nothing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nudges_after_enough_commits_or_bytes() {
        let mut w = WriteCount::default();
        assert_eq!(w.add(10), Due::Soon, "the first write asks for a sync soon");
        assert!((2..COMMITS_PER_NUDGE).all(|_| w.add(10) == Due::Nothing));
        assert_eq!(
            w.add(10),
            Due::Now,
            "the COMMITS_PER_NUDGE-th small commit nudges"
        );
        assert_eq!(w.add(10), Due::Soon, "and the count starts over");
        assert_eq!(
            w.add(BYTES_PER_NUDGE),
            Due::Now,
            "one big write nudges at once"
        );
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
        let ckpt = Checkpointer::start(&path).expect("second connection opens");
        ckpt.nudge();
        drop(ckpt); // joins after the nudged checkpoint ran
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(
            after >= 50 * 4000,
            "the checkpoint copied the rows into the database: {after}"
        );
    }

    #[test]
    fn a_write_asked_for_soon_is_checkpointed_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.execute_batch("CREATE TABLE t (x BLOB); ").unwrap();
        writer
            .execute("INSERT INTO t VALUES (zeroblob(40000))", [])
            .unwrap();
        let ckpt = Checkpointer::start(&path).expect("second connection opens");
        ckpt.soon();
        // Still running (not dropped, which checkpoints at once): the
        // thread's own timer must do it.
        let deadline = std::time::Instant::now() + SYNC_WITHIN * 10;
        while std::fs::metadata(&path).unwrap().len() < 40000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the write was not checkpointed within {:?}",
                SYNC_WITHIN * 10
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(ckpt);
    }
}
