//! What the FUSE sessions and the test share: the model, the victims, the
//! armed trigger, and the epoch that makes a cut final.
//!
//! # The cut
//! [`State::cut`] runs under the one lock every request takes, so it is
//! atomic with respect to the file system: the victims get SIGKILL, the
//! model drops everything unsynced, and the epoch moves on. A session
//! serves only requests of its own epoch; from then on the old session
//! answers every request (a dirty page the kernel still writes back, a
//! release from a dying victim) with `EIO` and changes nothing, until the
//! mount control aborts its connection.

use crate::model::{Ino, Model};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// A point, seen from the file system, at which the power is cut instead of
/// completing the operation: the victims are killed and the operation
/// fails with `EIO`, so its caller never learns that it succeeded.
///
/// `nth` counts matching operations from the moment the trigger is armed
/// ([`crate::Mounted::cut_when`]), starting at 1 (0 means 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The `nth` `fsync`/`fdatasync` of a file whose name ends with
    /// `name_suffix` (e.g. `-wal`): the data it would have made durable is
    /// lost.
    Fsync {
        /// End of the file's name.
        name_suffix: String,
        /// Which matching fsync.
        nth: usize,
    },
    /// The `nth` `fsync` of a directory whose name ends with `name_suffix`
    /// (`""` matches every directory, the root included).
    SyncDir {
        /// End of the directory's name.
        name_suffix: String,
        /// Which matching directory fsync.
        nth: usize,
    },
    /// The `nth` rename to a name ending with `to_suffix`: the rename
    /// does not happen.
    Rename {
        /// End of the new name.
        to_suffix: String,
        /// Which matching rename.
        nth: usize,
    },
    /// The `nth` unlink of a name ending with `name_suffix`: the file stays.
    Unlink {
        /// End of the removed name.
        name_suffix: String,
        /// Which matching unlink.
        nth: usize,
    },
    /// The `n`th write request to any file, for cuts at "random" moments
    /// that are still reproducible (the same `n` cuts at the same write of
    /// a deterministic workload).
    AfterWrites(u64),
}

/// An operation a trigger may match.
pub(crate) enum Op<'a> {
    Write,
    Fsync(&'a OsStr),
    SyncDir(&'a OsStr),
    Rename(&'a OsStr),
    Unlink(&'a OsStr),
}

fn ends_with(name: &OsStr, suffix: &str) -> bool {
    name.as_bytes().ends_with(suffix.as_bytes())
}

impl Trigger {
    fn matches(&self, op: &Op<'_>) -> bool {
        match (self, op) {
            (Trigger::AfterWrites(_), Op::Write) => true,
            (Trigger::Fsync { name_suffix, .. }, Op::Fsync(n)) => ends_with(n, name_suffix),
            (Trigger::SyncDir { name_suffix, .. }, Op::SyncDir(n)) => ends_with(n, name_suffix),
            (Trigger::Rename { to_suffix, .. }, Op::Rename(n)) => ends_with(n, to_suffix),
            (Trigger::Unlink { name_suffix, .. }, Op::Unlink(n)) => ends_with(n, name_suffix),
            _ => false,
        }
    }

    fn nth(&self) -> u64 {
        let n = match self {
            Trigger::AfterWrites(n) => *n,
            Trigger::Fsync { nth, .. }
            | Trigger::SyncDir { nth, .. }
            | Trigger::Rename { nth, .. }
            | Trigger::Unlink { nth, .. } => *nth as u64,
        };
        n.max(1)
    }
}

/// Counts of what the file system served, for tests and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Power cuts so far.
    pub cuts: u64,
    /// Write requests served.
    pub writes: u64,
    /// File fsyncs served.
    pub fsyncs: u64,
    /// Directory fsyncs served.
    pub dir_syncs: u64,
}

/// Everything behind the one lock.
pub(crate) struct State {
    pub model: Model,
    /// Bumped by every cut; a session serves only its own epoch.
    pub epoch: u64,
    victims: Vec<libc::pid_t>,
    trigger: Option<(Trigger, u64)>,
    pub stats: Stats,
}

impl State {
    /// Whether `op` fires the armed trigger (counting it if it matches).
    pub fn fires(&mut self, op: Op<'_>) -> bool {
        let Some((trigger, seen)) = self.trigger.as_mut() else {
            return false;
        };
        if !trigger.matches(&op) {
            return false;
        }
        *seen += 1;
        *seen >= trigger.nth()
    }

    /// The power cut (see the module docs).
    pub fn cut(&mut self) {
        for &pid in &self.victims {
            // SAFETY: kill(2) takes plain integers and touches no memory
            // of ours; a victim that has already exited gives ESRCH.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        self.victims.clear();
        self.trigger = None;
        self.model.cut();
        self.epoch += 1;
        self.stats.cuts += 1;
    }

    /// The name the fsync triggers match for `ino` (empty when unnamed).
    pub fn name_of(&self, ino: Ino) -> std::ffi::OsString {
        self.model.name_of(ino).unwrap_or_default()
    }
}

/// The state and a signal for "a cut happened".
pub(crate) struct Shared {
    state: Mutex<State>,
    cut_done: Condvar,
}

impl Shared {
    pub fn new(model: Model) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State {
                model,
                epoch: 0,
                victims: Vec::new(),
                trigger: None,
                stats: Stats::default(),
            }),
            cut_done: Condvar::new(),
        })
    }

    /// The state; a panic elsewhere while holding it does not stop the
    /// file system (the model has no invariant a panic can break halfway
    /// that matters more than answering the kernel).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wake whoever waits in [`Shared::wait_cut`].
    pub fn notify_cut(&self) {
        self.cut_done.notify_all();
    }

    /// Wait until the epoch is past `epoch` or `timeout` passes; whether
    /// it is.
    pub fn wait_cut(&self, epoch: u64, timeout: std::time::Duration) -> bool {
        let guard = self.lock();
        let (guard, _) = self
            .cut_done
            .wait_timeout_while(guard, timeout, |s| s.epoch == epoch)
            .unwrap_or_else(|e| e.into_inner());
        guard.epoch != epoch
    }

    pub fn set_victims(&self, pids: &[u32]) {
        self.lock().victims = pids
            .iter()
            .filter_map(|&p| libc::pid_t::try_from(p).ok())
            // kill(0) or kill(-1) would hit the test itself or everything.
            .filter(|&p| p > 1)
            .collect();
    }

    pub fn arm(&self, trigger: Trigger) {
        self.lock().trigger = Some((trigger, 0));
    }
}
