//! The state directory's lock: one daemon per store.

use super::StoreError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The exclusive lock on a state directory (`STATE_DIR/lock`), so two
/// daemons never share one store (their counters and uploads would
/// interleave). Held while any clone lives: the daemon takes it before it
/// binds its socket, and the store thread keeps a clone until it closes
/// the database.
#[derive(Clone)]
pub struct StateLock {
    _file: Arc<std::fs::File>,
    dir: PathBuf,
}

impl StateLock {
    /// Create `state_dir` (0700) if needed and lock it, or fail with
    /// [`StoreError::Locked`] if another process holds it.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, StoreError> {
        telemetry_sink::fsutil::create_private_dir(state_dir).map_err(|e| StoreError::Io {
            path: state_dir.to_path_buf(),
            source: Arc::new(e),
        })?;
        Ok(StateLock {
            _file: Arc::new(lock_state_dir(state_dir)?),
            dir: state_dir.to_path_buf(),
        })
    }

    /// The locked state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// How long a held lock is tried again before it counts as another
/// daemon's. `telemetryctl stop` holds it shared for a moment to learn
/// whether a stopping daemon has let go; a daemon started by hand or by a
/// service manager in that moment must not fail as if the store were
/// another daemon's (an autostarted one retries for longer anyway).
const PROBE_GRACE: Duration = Duration::from_millis(200);

/// Take an exclusive lock on `state_dir/lock`.
pub(super) fn lock_state_dir(state_dir: &Path) -> Result<std::fs::File, StoreError> {
    let path = state_dir.join("lock");
    let file = telemetry_platform::fs::with_mode(
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true),
        0o600,
    )
    .open(&path)
    .map_err(|e| StoreError::Io {
        path: path.clone(),
        source: Arc::new(e),
    })?;
    let step = Duration::from_millis(5);
    let mut waited = Duration::ZERO;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if waited < PROBE_GRACE => {
                std::thread::sleep(step);
                waited += step;
            }
            Err(_) => return Err(StoreError::Locked { path }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moments_shared_hold_is_waited_out_and_an_owner_is_not() {
        let dir = tempfile::tempdir().unwrap();
        // `telemetryctl stop`'s probe: shared, let go a moment later.
        let probe = std::fs::File::create(dir.path().join("lock")).unwrap();
        probe.try_lock_shared().unwrap();
        let letgo = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            drop(probe);
        });
        let lock = StateLock::acquire(dir.path()).expect("taken once the probe let go");
        letgo.join().unwrap();
        // A daemon's exclusive hold is still refused, after the grace.
        let started = std::time::Instant::now();
        let err = StateLock::acquire(dir.path()).err().unwrap();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(started.elapsed() >= PROBE_GRACE);
        drop(lock);
    }
}
