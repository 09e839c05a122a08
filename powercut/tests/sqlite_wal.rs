//! SQLite in WAL mode (bundled, as the daemon builds it) on the power-cut
//! file system: at `synchronous=FULL` every transaction whose COMMIT
//! returned survives cuts at random moments; at `synchronous=OFF` a cut
//! after commits loses some, so the harness sees the difference.
//!
//! The writer is a separate process (this test binary run again, see
//! [`sqlite_writer_process`]), so that the cut can kill it: it commits one
//! row per transaction and appends each id to a file off the mount only
//! after its COMMIT returned — the "acknowledged" set.

use rusqlite::Connection;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use telemetry_powercut::{should_run, Mounted, PowerCut, Trigger};

/// Set in the writer process: `DB<TAB>SYNC<TAB>FIRST_ID<TAB>ACKED_FILE`.
const CHILD_ENV: &str = "POWERCUT_SQLITE_WRITER";
/// What the writer prints once it is ready for "go" on stdin.
const READY: &str = "POWERCUT-WRITER-READY";

/// Not a test of its own: the writer process the tests below start (it
/// returns at once unless [`CHILD_ENV`] is set).
#[test]
fn sqlite_writer_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('\t').collect();
    let [db, sync, first, acked] = parts[..] else {
        panic!("bad {CHILD_ENV}: {spec:?}");
    };
    let first: i64 = first.parse().unwrap();
    let conn = Connection::open(db).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    conn.execute_batch(&format!("PRAGMA synchronous={sync}"))
        .unwrap();
    // Read once, so the -shm is set up before the power can be cut.
    let _: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    let mut acked = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(acked)
        .unwrap();
    println!("{READY}");
    std::io::stdout().flush().unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    for id in first.. {
        // One transaction per row: execute returns after COMMIT.
        conn.execute(
            "INSERT INTO t(id, body) VALUES (?1, randomblob(?2))",
            (id, 100 + id % 900),
        )
        .unwrap();
        // One write(2) per id, so a kill never tears a line.
        acked.write_all(format!("{id}\n").as_bytes()).unwrap();
    }
}

/// A running writer, killed by the cut.
struct Writer {
    child: Child,
    acked: PathBuf,
}

impl Writer {
    /// Start a writer on `db` with `synchronous=sync`, register it as the
    /// victim, wait until it is ready, arm `trigger` (if any) and let it go.
    fn start(mnt: &Mounted, db: &Path, sync: &str, first: i64, trigger: Option<Trigger>) -> Writer {
        let acked = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        let acked = acked.keep().unwrap();
        let spec = format!("{}\t{sync}\t{first}\t{}", db.display(), acked.display());
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sqlite_writer_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, spec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        mnt.set_victims(&[child.id()]);
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains(READY) => break,
                Some(Ok(_)) => continue,
                other => panic!("the writer ended before it was ready: {other:?}"),
            }
        }
        if let Some(t) = trigger {
            mnt.cut_when(t);
        }
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        Writer { child, acked }
    }

    /// The ids whose COMMIT returned so far.
    fn acked(&self) -> BTreeSet<i64> {
        std::fs::read_to_string(&self.acked)
            .unwrap_or_default()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    }

    /// Wait for the victim to die of the cut; its acknowledged ids.
    fn killed(mut self) -> BTreeSet<i64> {
        let status = self.child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the writer must die of the cut, not by itself: {status}"
        );
        let acked = self.acked();
        let _ = std::fs::remove_file(&self.acked);
        acked
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Create the database (WAL, one table) durably before any writer runs.
fn create_db(db: &Path) {
    let conn = Connection::open(db).unwrap();
    conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))
        .unwrap();
    conn.execute_batch(
        "PRAGMA synchronous=FULL; CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)",
    )
    .unwrap();
    drop(conn);
    // SQLite syncs the directory after creating its journal and WAL, not
    // after creating the database file; both are in this directory.
    std::fs::File::open(db.parent().unwrap())
        .unwrap()
        .sync_all()
        .unwrap();
}

/// The ids in the database after a cut, checked for integrity.
fn rows(db: &Path) -> Vec<i64> {
    let conn = Connection::open(db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok", "integrity_check after a cut");
    let mut stmt = conn.prepare("SELECT id FROM t ORDER BY id").unwrap();
    let ids = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<Vec<i64>, _>>()
        .unwrap();
    ids
}

#[test]
fn full_sync_keeps_every_committed_transaction_across_random_cuts() {
    if !should_run("full_sync_keeps_every_committed_transaction_across_random_cuts") {
        return;
    }
    const CUTS: usize = 12;
    let seed = std::env::var("POWERCUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("seed {seed} (POWERCUT_SEED={seed} repeats these cut points)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.sqlite3");
    let mut mnt = PowerCut::mount(dir.path()).unwrap();
    create_db(&db);
    let mut acked_all = BTreeSet::new();
    let mut next = 0;
    let started = Instant::now();
    for cut in 0..CUTS {
        let at = rng.u64(1..=400);
        let writer = Writer::start(&mnt, &db, "FULL", next, Some(Trigger::AfterWrites(at)));
        assert!(
            mnt.wait_cut(Duration::from_secs(60)),
            "cut {cut}: the power was not cut within 60 s (at write {at})"
        );
        acked_all.extend(writer.killed());
        mnt = mnt.remount().unwrap();
        let ids = rows(&db);
        let missing: Vec<_> = acked_all.iter().filter(|i| !ids.contains(i)).collect();
        assert!(
            missing.is_empty(),
            "cut {cut} (seed {seed}, write {at}): committed rows lost: {missing:?}"
        );
        let expected: Vec<i64> = (0..ids.len() as i64).collect();
        assert_eq!(
            ids, expected,
            "cut {cut}: rows are not a prefix of the commits"
        );
        next = ids.len() as i64;
    }
    eprintln!(
        "{CUTS} cuts, {} committed rows kept, in {:?}",
        acked_all.len(),
        started.elapsed()
    );
    assert!(!acked_all.is_empty(), "no cut came after a commit");
}

#[test]
fn sync_off_loses_committed_transactions_at_a_cut() {
    if !should_run("sync_off_loses_committed_transactions_at_a_cut") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.sqlite3");
    let mut mnt = PowerCut::mount(dir.path()).unwrap();
    create_db(&db);
    let fsyncs = mnt.stats().fsyncs;
    let writer = Writer::start(&mnt, &db, "OFF", 0, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while writer.acked().len() < 200 {
        assert!(
            Instant::now() < deadline,
            "the writer did not commit 200 rows in 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    mnt.cut().unwrap();
    assert_eq!(
        mnt.stats().fsyncs,
        fsyncs,
        "at synchronous=OFF nothing is fsynced"
    );
    let acked = writer.killed();
    let _mnt = mnt.remount().unwrap();
    let ids = rows(&db);
    assert!(
        ids.len() < acked.len(),
        "at synchronous=OFF a cut must lose commits: {} acknowledged, {} kept",
        acked.len(),
        ids.len()
    );
}

#[test]
fn a_cut_at_the_third_wal_fsync_keeps_exactly_the_commits_that_returned() {
    if !should_run("a_cut_at_the_third_wal_fsync_keeps_exactly_the_commits_that_returned") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.sqlite3");
    let mnt = PowerCut::mount(dir.path()).unwrap();
    create_db(&db);
    let trigger = Trigger::Fsync {
        name_suffix: "-wal".into(),
        nth: 3,
    };
    let writer = Writer::start(&mnt, &db, "FULL", 0, Some(trigger));
    assert!(
        mnt.wait_cut(Duration::from_secs(60)),
        "the 3rd WAL fsync never came"
    );
    let acked = writer.killed();
    let _mnt = mnt.remount().unwrap();
    let ids: BTreeSet<i64> = rows(&db).into_iter().collect();
    assert!(
        !acked.is_empty(),
        "no commit returned before the 3rd WAL fsync"
    );
    assert_eq!(
        ids, acked,
        "the transaction whose WAL fsync was cut is gone, every one before it is kept"
    );
}
