//! A file system that loses power: for tests that claim data survives a
//! power cut.
//!
//! A `SIGKILL` leaves the kernel's page cache intact, so a crash test passes
//! whether or not the code fsyncs the right files in the right order. This
//! crate mounts an in-memory FUSE file system that keeps two views of every
//! file and directory (see [`model`]): `live`, which every operation
//! changes, and `durable`, which only `fsync`/`fdatasync` of a file (its
//! data) and `fsync` of a directory (its entries: creates, renames,
//! unlinks) update. A **cut** kills the processes named as victims, throws
//! `live` away for a copy of `durable`, and ends the FUSE connection, so
//! that neither a process nor the kernel's cache of the old mount outlives
//! it; [`Mounted::remount`] then serves what survived, as a reboot would.
//!
//! ```no_run
//! use telemetry_powercut::{PowerCut, Trigger};
//! # fn main() -> Result<(), telemetry_powercut::Error> {
//! let dir = std::path::Path::new("/tmp/mnt");
//! let mut mnt = PowerCut::mount(dir)?;
//! let mut child = std::process::Command::new("my-writer").current_dir(dir).spawn().unwrap();
//! mnt.set_victims(&[child.id()]);
//! // Cut instead of completing the 3rd fsync of the WAL.
//! mnt.cut_when(Trigger::Fsync { name_suffix: "-wal".into(), nth: 3 });
//! mnt.wait_cut(std::time::Duration::from_secs(30));
//! let _ = child.wait();
//! let mnt = mnt.remount()?;
//! // ... check that every acknowledged write is in mnt.path()
//! # Ok(()) }
//! ```
//!
//! # What is served
//! Files and directories with modes, owners and times; `create`, `mknod`
//! (regular files), `mkdir`, `unlink`, `rmdir`, `rename` (with
//! `RENAME_NOREPLACE` and `RENAME_EXCHANGE`), `link`, `read`, `write`,
//! `setattr` (`ftruncate`, `chmod`, `utimens`), `fallocate` (mode 0 and
//! `KEEP_SIZE`), `fsync`, `fsyncdir`, `statfs`, `access`. Shared writable
//! `mmap` works (no `direct_io`): SQLite's `-shm` in WAL mode. Byte-range
//! locks and `flock` are kept by the kernel, locally (see `fuse`). No
//! symlinks, devices, FIFOs, sockets or extended attributes.
//!
//! # Where it runs
//! Linux with `/dev/fuse`; as root it mounts with `mount(2)`, otherwise it
//! needs `fusermount3` (Debian's `fuse3`). Tests call [`should_run`] first.

pub mod model;

mod fuse;
mod mount;
mod state;

pub use mount::{Mounted, PowerCut};
pub use state::{Stats, Trigger};

use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong mounting or cutting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// FUSE cannot be used on this machine.
    #[error("FUSE is not available: {0}")]
    Unavailable(String),
    /// The mount failed.
    #[error("cannot mount the power-cut file system on {path}: {source}")]
    Mount {
        /// The mountpoint.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The thread serving the session could not be started.
    #[error("cannot start the FUSE session thread: {0}")]
    Thread(std::io::Error),
    /// The lazy unmount failed (the session was still ended).
    #[error("cannot unmount {path}: {source}")]
    Unmount {
        /// The mountpoint.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The session did not end after its connection was aborted; the path
    /// must not be mounted again (the old session could unmount the new).
    #[error("the FUSE session on {path} did not end within {waited:?} after its connection was aborted (abort error: {abort:?}); is /sys/fs/fuse/connections mountable (root)?")]
    Stuck {
        /// The mountpoint.
        path: PathBuf,
        /// How long it was given.
        waited: Duration,
        /// Why the abort failed, if it did.
        abort: Option<std::io::Error>,
    },
}

/// The environment variable that makes a missing FUSE a test failure
/// instead of a skip (the CI stage `powerloss` sets it to `1`).
pub const REQUIRE_ENV: &str = "TELEMETRY_POWERLOSS";

/// Whether this machine can mount the file system: `/dev/fuse` and
/// `fusermount3` exist. `Err` says what is missing and how to get it.
pub fn available() -> Result<(), String> {
    if !std::path::Path::new("/dev/fuse").exists() {
        return Err(
            "/dev/fuse does not exist (load the fuse module, or give the container the device)"
                .into(),
        );
    }
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| d.join("fusermount3").is_file())
    });
    if !on_path {
        return Err("fusermount3 is not on PATH (apt-get install fuse3)".into());
    }
    Ok(())
}

/// For a test that needs FUSE: `true` when it can run. When FUSE is
/// missing it prints why and returns `false` (skip), unless
/// [`REQUIRE_ENV`] is `1`: then it panics, so that a CI stage meant to run
/// the power-loss tests cannot pass by skipping them.
pub fn should_run(test: &str) -> bool {
    match available() {
        Ok(()) => true,
        Err(why) if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") => {
            panic!("{test}: {REQUIRE_ENV}=1 but {why}")
        }
        Err(why) => {
            eprintln!("{test}: skipped: {why} (set {REQUIRE_ENV}=1 to make this a failure)");
            false
        }
    }
}
