//! Mounting, cutting and mounting again.
//!
//! # A cut, in order
//! 1. Under the file system's lock (`State::cut`): SIGKILL the victims,
//!    drop everything unsynced, move the epoch on. From here the old
//!    session answers every request with `EIO`.
//! 2. Lazy unmount (`umount2(MNT_DETACH)`, or `fusermount3 -u -z` when not
//!    root): the path no longer leads to the old mount, though processes
//!    that still hold its files keep them.
//! 3. Abort the FUSE connection (`/sys/fs/fuse/connections/N/abort`,
//!    mounting `fusectl` there if needed): every request in flight or to
//!    come fails, the kernel drops the old mount's page cache with its
//!    superblock, and the session thread ends.
//! 4. Join the session thread. Only then may a new session mount the same
//!    path: a session that ends later could otherwise unmount its
//!    successor.

use crate::fuse::PowerCutFs;
use crate::model::Model;
use crate::state::{Shared, Stats, Trigger};
use crate::Error;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where the kernel lists FUSE connections (the `fusectl` file system).
const FUSECTL: &str = "/sys/fs/fuse/connections";

/// How long a session may take to end once its connection is aborted.
const SESSION_END: Duration = Duration::from_secs(10);

/// The power-cut file system: in memory, empty at first, losing on a cut
/// everything that was not fsynced (see the crate docs).
#[derive(Debug)]
pub struct PowerCut;

impl PowerCut {
    /// Mount a new, empty power-cut file system on the existing directory
    /// `mountpoint`. Its root is owned by this process's user and durable.
    pub fn mount(mountpoint: impl AsRef<Path>) -> Result<Mounted, Error> {
        crate::available().map_err(Error::Unavailable)?;
        // SAFETY: geteuid/getegid take no arguments and cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Mounted::start(Shared::new(Model::new(uid, gid)), mountpoint.as_ref())
    }
}

/// A live session of the file system on its mountpoint. Dropping it
/// unmounts (without a cut, but the contents are gone with it).
pub struct Mounted {
    shared: Arc<Shared>,
    path: PathBuf,
    epoch: u64,
    session: Option<Session>,
}

/// The thread serving one FUSE connection.
struct Session {
    thread: JoinHandle<std::io::Result<()>>,
    /// The connection's number under [`FUSECTL`].
    connection: u64,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted")
            .field("path", &self.path)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Mounted {
    fn start(shared: Arc<Shared>, path: &Path) -> Result<Mounted, Error> {
        let epoch = shared.lock().epoch;
        let fs = PowerCutFs::new(shared.clone(), epoch);
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("powercut".into()),
            fuser::MountOption::Subtype("powercut".into()),
            fuser::MountOption::DefaultPermissions,
            fuser::MountOption::RW,
        ];
        // Mounts and answers INIT before it returns.
        let session = fuser::Session::new(fs, path, &config).map_err(|source| Error::Mount {
            path: path.to_path_buf(),
            source,
        })?;
        let thread = std::thread::Builder::new()
            .name("powercut-fuse".into())
            .spawn(move || session.run())
            .map_err(Error::Thread)?;
        // The first stat waits for the session to answer INIT and tells
        // the connection's number: the mount's anonymous device.
        let dev = std::fs::metadata(path)
            .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
            .map_err(|source| Error::Mount {
                path: path.to_path_buf(),
                source,
            })?;
        // fusectl names a connection by the kernel's dev_t:
        // major << 20 | minor.
        let connection = (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev));
        Ok(Mounted {
            shared,
            path: path.to_path_buf(),
            epoch,
            session: Some(Session { thread, connection }),
        })
    }

    /// The mountpoint.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The processes a cut kills (with SIGKILL, before the file system
    /// answers anything more): the "machine" that loses its power. Replaces
    /// the previous list; a cut clears it.
    pub fn set_victims(&self, pids: &[u32]) {
        self.shared.set_victims(pids);
    }

    /// Cut the power when the file system sees `trigger` (replacing any
    /// armed trigger). [`Mounted::wait_cut`] tells when it fired.
    pub fn cut_when(&self, trigger: Trigger) {
        self.shared.arm(trigger);
    }

    /// Whether the power of this session was cut (by a trigger or
    /// [`Mounted::cut`]).
    pub fn has_cut(&self) -> bool {
        self.shared.lock().epoch != self.epoch
    }

    /// Wait up to `timeout` for a cut of this session; whether it happened.
    pub fn wait_cut(&self, timeout: Duration) -> bool {
        self.shared.wait_cut(self.epoch, timeout)
    }

    /// What the file system served so far (all sessions).
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats
    }

    /// Cut the power now: kill the victims, drop everything unsynced, and
    /// end this session (see the module docs). The mountpoint is empty
    /// afterwards until [`Mounted::remount`].
    pub fn cut(&mut self) -> Result<(), Error> {
        self.cut_now();
        self.teardown()
    }

    fn cut_now(&self) {
        let mut st = self.shared.lock();
        if st.epoch == self.epoch {
            st.cut();
        }
        drop(st);
        self.shared.notify_cut();
    }

    /// Power on again: cut first if that has not happened, end this
    /// session, and mount a new one at the same path serving what was
    /// durable.
    pub fn remount(mut self) -> Result<Mounted, Error> {
        self.cut_now();
        self.teardown()?;
        Mounted::start(self.shared.clone(), &self.path)
    }

    /// End the session: lazy unmount, abort, join (module docs, 2–4).
    fn teardown(&mut self) -> Result<(), Error> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let unmounted = unmount_lazily(&self.path);
        // Even when the unmount failed, the connection must end: an
        // aborted mount answers nothing, so the test sees it at once.
        let aborted = abort(session.connection);
        let deadline = Instant::now() + SESSION_END;
        while !session.thread.is_finished() {
            if Instant::now() > deadline {
                return Err(Error::Stuck {
                    path: self.path.clone(),
                    waited: SESSION_END,
                    abort: aborted.err(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // The session's own result: an aborted connection may end it with
        // an error, which is what was asked for.
        let _ = session.thread.join();
        unmounted.map_err(|source| Error::Unmount {
            path: self.path.clone(),
            source,
        })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // Without a cut: unmount and end the session; the victims live on.
        let _ = self.teardown();
    }
}

/// Detach the mount at `path` (as root with umount2, else with
/// `fusermount3 -u -z`); not mounted any more counts as done.
fn unmount_lazily(path: &Path) -> std::io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a valid NUL-terminated path and plain flags.
    let rc = unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        // Not a mountpoint (any more): already detached.
        Some(libc::EINVAL) => Ok(()),
        Some(libc::EPERM) => {
            let status = std::process::Command::new("fusermount3")
                .args(["-u", "-z", "-q"])
                .arg(path)
                .status()?;
            if status.success() {
                Ok(())
            } else {
                Err(std::io::Error::other(format!(
                    "fusermount3 -u -z {} failed with {status}",
                    path.display()
                )))
            }
        }
        _ => Err(err),
    }
}

/// Abort FUSE connection `connection` through fusectl, mounting fusectl
/// first if it is not mounted (root only).
fn abort(connection: u64) -> std::io::Result<()> {
    if !fusectl_mounted() {
        mount_fusectl();
    }
    let dir = Path::new(FUSECTL).join(connection.to_string());
    std::fs::write(dir.join("abort"), b"1")
}

/// Whether something is mounted on [`FUSECTL`]: then it is on another
/// device than its parent.
fn fusectl_mounted() -> bool {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &str| std::fs::metadata(p).map(|m| m.dev()).ok();
    matches!((dev(FUSECTL), dev("/sys/fs/fuse")), (Some(a), Some(b)) if a != b)
}

/// Mount the FUSE control file system on [`FUSECTL`]; a failure (not root,
/// mounted meanwhile by another test) shows when the abort file is missing.
fn mount_fusectl() {
    let (src, target, fstype) = (c"fusectl", c"/sys/fs/fuse/connections", c"fusectl");
    // SAFETY: NUL-terminated strings that outlive the call, no data.
    unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        );
    }
}
