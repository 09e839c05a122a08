//! A daemon started on demand by a client (`telemetryd --autostarted`),
//! and binaries of different ages sharing one state directory.
//!
//! With no service manager, the first client that finds no daemon starts
//! one (see `telemetry_client::autostart`). Several vendors ship their own
//! telemetryd, so the binary a client starts may be older or newer than
//! the one that served last. The rules:
//!
//! 1. **The daemon that holds the state dir's lock serves.** A second
//!    daemon never touches the store.
//! 2. **An autostarted daemon steps aside quietly.** When the lock is held
//!    and a daemon answers on the socket, it logs one line and exits 0.
//!    When the lock is held but nobody answers, the holder is starting or
//!    exiting at its idle exit: it waits up to [`LOCK_WAIT`] for the lock,
//!    so that events spooled during an idle exit are taken in at once by
//!    the daemon that follows (rather than at the next start).
//! 3. **The newest binary that ever served runs.** Each serving daemon
//!    records its schema and protocol versions and its path in
//!    `STATE_DIR/telemetryd.current` (unless a newer one is recorded). The
//!    store's schema only moves forward, so an older binary finds a store
//!    newer than it knows: autostarted, it hands over to the recorded
//!    binary (exec, same arguments) when that still exists. Otherwise it
//!    serves the store as it is when the newer build said it may (the
//!    store's `oldest_reader`, see [`crate::store::OLDEST_READER`]), and
//!    else steps aside (one line, exit 0) without touching the store; the
//!    events wait in the spool for a binary that can open it. Started by
//!    hand or by a service manager, it serves such a store too, and
//!    refuses with an error one it may not, as the operator asked for
//!    that binary.
//! 4. **Nothing a daemon cannot read is dropped.** Spooled frames of a newer
//!    protocol are put back for a newer daemon (see [`crate::spool`]), and
//!    clients spool an event a daemon refuses as `unsupported_version`.
//!
//! A daemon already serving is not replaced by a newer binary: it keeps
//! serving until its idle exit, and the next start applies rule 3.
//! Replacing it would mean stopping a daemon this binary did not start
//! (perhaps a service manager's) while it holds connections.

use crate::store::{Schema, StateLock, StoreError, SCHEMA_VERSION};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long an autostarted daemon waits for a lock whose holder does not
/// answer on the socket (it is starting up or exiting).
pub const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Idle exit of an autostarted daemon when none is configured: nothing
/// supervises it, and the next client starts it again.
pub const DEFAULT_IDLE_EXIT: Duration = Duration::from_secs(300);

/// Set in the environment of a binary this daemon handed over to, so a
/// chain of handovers cannot loop.
const HANDED_OVER_VAR: &str = "TELEMETRY_HANDED_OVER";

/// The record of the newest binary that served: `SCHEMA PROTOCOL PATH`.
const CURRENT_FILE: &str = "telemetryd.current";

/// What an autostarted daemon does about the state dir's lock.
pub enum Start {
    /// It holds the lock: serve.
    Serve(StateLock),
    /// Another daemon serves (or would not let go): exit 0.
    StepAside,
}

/// Take the state dir's lock as an autostarted daemon (rule 2).
pub fn take_lock(state_dir: &Path, socket: &Path) -> Result<Start, StoreError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match StateLock::acquire(state_dir) {
            Ok(lock) => return Ok(Start::Serve(lock)),
            Err(StoreError::Locked { path }) => {
                if crate::transport::serves(socket) {
                    tracing::info!(
                        socket = %socket.display(),
                        "another telemetryd serves this state dir; stepping aside"
                    );
                    return Ok(Start::StepAside);
                }
                if Instant::now() >= deadline {
                    tracing::info!(
                        lock = %path.display(),
                        "another telemetryd holds the state dir's lock and did not let go within {LOCK_WAIT:?}; stepping aside"
                    );
                    return Ok(Start::StepAside);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The store's schema when it is newer than this build's, read without
/// writing anything (rule 3). `None`: no store yet, or one at this build's
/// schema or older (if it cannot be read here, opening it reports why).
pub fn newer_store(state_dir: &Path) -> Option<Schema> {
    use rusqlite::OpenFlags;
    let path = state_dir.join(crate::store::DB_FILE);
    if !path.exists() {
        return None;
    }
    let conn = rusqlite::Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    Schema::read(&conn).ok().filter(Schema::is_newer)
}

/// What an autostarted daemon does with a store newer than it knows.
#[derive(Debug, PartialEq, Eq)]
pub enum OnNewer {
    /// No newer binary to hand over to, but the store's builds said this
    /// one may serve it: serve.
    Serve,
    /// Exit 0 without touching the store.
    StepAside,
}

/// The store is newer than this build: hand over to the newest recorded
/// binary (this call then does not return); failing that, serve it when
/// its builds said this one may, or say why this daemon steps aside
/// (rule 3).
pub fn on_newer_store(state_dir: &Path, store: Schema) -> OnNewer {
    let found = store.version;
    let recorded = read_current(state_dir);
    let me = std::env::current_exe().ok();
    // Only a record no other user could have written or changed is run.
    let record = state_dir.join(CURRENT_FILE);
    // The binary too: the record names wherever a daemon last ran from,
    // which may since have gone from a place (/tmp) where anyone may now
    // put a program of that name.
    let recorded = recorded.filter(|rec| {
        let why = telemetry_platform::fs::untrusted(&record)
            .or_else(|| telemetry_platform::fs::untrusted_file(&rec.path));
        match why {
            None => true,
            Some(why) => {
                tracing::warn!(
                    "not handing over to the binary recorded in {}: {why}",
                    record.display()
                );
                false
            }
        }
    });
    match recorded {
        Some(rec)
            if rec.schema >= found
                && rec.path.is_file()
                && Some(&rec.path) != me.as_ref()
                && std::env::var_os(HANDED_OVER_VAR).is_none() =>
        {
            tracing::info!(
                store_schema = found,
                our_schema = SCHEMA_VERSION,
                to = %rec.path.display(),
                "the store is newer than this telemetryd; handing over to the newer binary that served it"
            );
            // Only returns on failure.
            let err = hand_over(
                std::process::Command::new(&rec.path)
                    .args(std::env::args_os().skip(1))
                    .env(HANDED_OVER_VAR, "1"),
            );
            if store.servable() {
                tracing::info!(
                    to = %rec.path.display(),
                    error = %err,
                    "cannot run the newer telemetryd; serving the store myself, as its builds allow"
                );
                return OnNewer::Serve;
            }
            tracing::info!(
                to = %rec.path.display(),
                error = %err,
                "cannot run the newer telemetryd; stepping aside, events wait in the spool"
            );
        }
        other => {
            let why = match &other {
                Some(rec) if !rec.path.is_file() => format!(
                    "the newer telemetryd recorded in {} ({}) is gone (the CLI that shipped it uninstalled?)",
                    state_dir.join(CURRENT_FILE).display(),
                    rec.path.display()
                ),
                _ => format!(
                    "no newer telemetryd is recorded in {}",
                    state_dir.join(CURRENT_FILE).display()
                ),
            };
            if store.servable() {
                tracing::info!(
                    store_schema = found,
                    our_schema = SCHEMA_VERSION,
                    oldest_reader = store.oldest_reader,
                    "the store is newer than this telemetryd and {why}; serving it as it is, which the telemetryd that migrated it allows (its newer features wait for it)"
                );
                return OnNewer::Serve;
            }
            let needs = match store.oldest_reader {
                Some(n) => format!(", which needs a telemetryd of schema {n} or newer"),
                None => String::new(),
            };
            tracing::warn!(
                store_schema = found,
                our_schema = SCHEMA_VERSION,
                "the store is newer than this telemetryd{needs}, and {why}; stepping aside without touching it (events wait in the spool). To serve again: install a CLI whose telemetryd is that new or newer, or move {} aside to start an empty store (what it holds is then not uploaded)",
                state_dir.join(crate::store::DB_FILE).display()
            );
        }
    }
    OnNewer::StepAside
}

/// Record this binary as the one serving `state_dir`, unless a newer one
/// is recorded and still exists (rule 3). Best effort: a failure only
/// costs a later handover.
pub fn record_current(state_dir: &Path) {
    let ours = (SCHEMA_VERSION as i64, telemetry_proto::PROTOCOL_VERSION);
    if let Some(rec) = read_current(state_dir) {
        if (rec.schema, rec.protocol) > ours && rec.path.is_file() {
            return;
        }
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let path = state_dir.join(CURRENT_FILE);
    let line = format!("{} {} {}\n", ours.0, ours.1, exe.display());
    // Private like every file in the state dir (it holds a path).
    let written = telemetry_sink::fsutil::write_private_atomic(&path, line.as_bytes());
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot record this telemetryd as the current one");
    }
}

struct Current {
    schema: i64,
    protocol: u16,
    path: PathBuf,
}

fn read_current(state_dir: &Path) -> Option<Current> {
    let text = std::fs::read_to_string(state_dir.join(CURRENT_FILE)).ok()?;
    let mut parts = text.trim_end_matches('\n').splitn(3, ' ');
    Some(Current {
        schema: parts.next()?.parse().ok()?,
        protocol: parts.next()?.parse().ok()?,
        path: PathBuf::from(parts.next()?),
    })
}

/// Become `cmd` (exec); returns only on failure. Windows cannot replace a
/// process: it starts `cmd` and exits with its status once it ends.
fn hand_over(cmd: &mut std::process::Command) -> std::io::Error {
    #[cfg(unix)]
    {
        std::os::unix::process::CommandExt::exec(cmd)
    }
    #[cfg(not(unix))]
    {
        // Detached from any console as this one is: a console program's
        // child would otherwise get a console window of its own, whose
        // closing stops the daemon.
        const CREATE_NO_WINDOW: u32 = 0x0800_0000;
        std::os::windows::process::CommandExt::creation_flags(cmd, CREATE_NO_WINDOW);
        match cmd.status() {
            Ok(status) => std::process::exit(status.code().unwrap_or(1)),
            Err(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_record_is_kept_and_an_older_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let newer = format!("{} 99 {}\n", SCHEMA_VERSION + 1, exe.display());
        std::fs::write(dir.path().join(CURRENT_FILE), &newer).unwrap();
        record_current(dir.path());
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CURRENT_FILE)).unwrap(),
            newer
        );
        std::fs::write(dir.path().join(CURRENT_FILE), "1 1 /nonexistent\n").unwrap();
        record_current(dir.path());
        let rec = read_current(dir.path()).unwrap();
        assert_eq!(rec.schema, SCHEMA_VERSION as i64);
        assert_eq!(rec.path, exe);
    }
}
