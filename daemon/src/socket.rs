//! Binding the daemon's Unix socket safely.
//!
//! A path too long for `sockaddr_un` is refused before anything is created
//! (see [`check_path_len`]). The parent directory is created 0700 and the socket is made 0600, so only
//! this user can talk to the daemon. An existing socket file is probed: if a
//! live daemon answers, we refuse to start; if nobody does, it is stale and
//! removed. On drop, the socket file is removed only if it is still the one
//! we created (same inode and change time), never another daemon's.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another process is listening on the path.
    #[error("another telemetryd is already listening on {0}; stop it first, or pass --socket with another path")]
    InUse(PathBuf),
    /// Something that is not a socket is at the path; we never delete it.
    #[error("{0} exists and is not a socket; remove it or pass --socket with another path")]
    NotASocket(PathBuf),
    /// The socket's directory could be tampered with by another user.
    #[error("the socket directory {path} {problem}; another user could replace the socket. Fix its owner and mode (chmod 700), or pass --socket with another path")]
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The path does not fit in `sockaddr_un.sun_path`; nothing was created.
    #[error(
        "socket path {path}: {}; pass a shorter --socket or TELEMETRY_SOCKET, e.g. {}",
        too_long_reason(*.len, *.max),
        short_example(euid()).display()
    )]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The most bytes a socket path may have ([`max_path_len`]).
        max: usize,
    },
    /// Creating the directory, removing a stale socket or binding failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A socket this process bound; removes its file on drop.
pub struct BoundSocket {
    listener: Option<UnixListener>,
    path: PathBuf,
    /// (inode, ctime s, ctime ns): inodes are reused at once, so the
    /// change time tells our file from a later one.
    id: (u64, i64, i64),
}

impl BoundSocket {
    /// Take the listener (for handing to the runtime). Can be called once.
    pub fn take_listener(&mut self) -> Option<UnixListener> {
        self.listener.take()
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| file_id(&m) == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Refuse a socket directory that another user owns or can write to: they
/// could swap the socket and read events or forge acknowledgements.
/// (Sticky shared directories like `/tmp` itself are fine.)
fn check_dir(dir: &Path) -> Result<(), SocketError> {
    let meta = std::fs::metadata(dir).map_err(|source| SocketError::Io {
        what: "inspect",
        path: dir.to_path_buf(),
        source,
    })?;
    let me = euid();
    let mode = meta.permissions().mode();
    let sticky = mode & 0o1000 != 0;
    let problem = if meta.uid() != me && meta.uid() != 0 {
        Some(format!("is owned by uid {}, not by uid {me}", meta.uid()))
    } else if mode & 0o022 != 0 && !sticky {
        Some(format!(
            "is writable by other users (mode {:o})",
            mode & 0o777
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(SocketError::UnsafeDir {
            path: dir.to_path_buf(),
            problem,
        }),
        None => Ok(()),
    }
}

fn file_id(m: &std::fs::Metadata) -> (u64, i64, i64) {
    (m.ino(), m.ctime(), m.ctime_nsec())
}

/// First file descriptor passed by a service manager (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// The name telemetryd's socket carries in `LISTEN_FDNAMES` (`FileDescriptorName=`);
/// without it, the first passed socket is used.
pub const FD_NAME: &str = "telemetryd";

/// Take the listening socket a service manager passed us, if any.
///
/// systemd (and `systemd-socket-activate`): `LISTEN_PID` must be our pid,
/// `LISTEN_FDS` the count of sockets starting at fd 3, `LISTEN_FDNAMES`
/// optional names. The variables are checked, not trusted: the fd must be a
/// socket. Such a socket belongs to the service manager: we never unlink it.
///
/// `env` looks up a variable; `pid` is our process id.
pub fn activated_listener(
    env: impl Fn(&str) -> Option<String>,
    pid: u32,
) -> Result<Option<UnixListener>, SocketError> {
    let (Some(listen_pid), Some(count)) = (env("LISTEN_PID"), env("LISTEN_FDS")) else {
        return Ok(None);
    };
    if listen_pid.trim().parse::<u32>().ok() != Some(pid) {
        return Ok(None); // meant for another process
    }
    let bad = |what: String| SocketError::Io {
        what: "use the socket passed by the service manager:",
        path: PathBuf::from(format!("LISTEN_FDS={count}")),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, what),
    };
    let count: i32 = count
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=64).contains(n))
        .ok_or_else(|| bad("LISTEN_FDS is not a count of 1 to 64".into()))?;
    let names: Vec<String> = env("LISTEN_FDNAMES")
        .map(|n| n.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    let index = match names.iter().position(|n| n == FD_NAME) {
        Some(i) => i as i32,
        // One unnamed (or differently named) socket: it is ours.
        None if count == 1 => 0,
        None => {
            return Err(bad(format!(
                "{count} sockets passed but none named {FD_NAME:?} in LISTEN_FDNAMES; set FileDescriptorName={FD_NAME}"
            )))
        }
    };
    if index >= count {
        return Err(bad(format!("socket index {index} ≥ LISTEN_FDS")));
    }
    // None of the passed fds may leak into anything we might start.
    for other in LISTEN_FDS_START..LISTEN_FDS_START + count {
        // SAFETY: fcntl on an fd number; no memory is shared.
        unsafe { libc::fcntl(other, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let fd = LISTEN_FDS_START + index;
    check_listening_unix_stream(fd).map_err(bad)?;
    use std::os::unix::io::FromRawFd;
    // SAFETY: the service manager handed this fd to us (LISTEN_PID is our
    // pid) and nothing else in the process owns it.
    let listener = unsafe { UnixListener::from_raw_fd(fd) };
    listener
        .set_nonblocking(true)
        .map_err(|e| bad(e.to_string()))?;
    Ok(Some(listener))
}

/// Whether `fd` is a listening `AF_UNIX` stream socket, which is all the
/// daemon can serve (not `Accept=yes`, TCP or datagram sockets).
fn check_listening_unix_stream(fd: i32) -> Result<(), String> {
    let int_opt = |opt| {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `v`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some(v)
    };
    // SAFETY: fstat writes into a zeroed stat of the right type.
    let is_socket = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    };
    if !is_socket {
        return Err(format!("fd {fd} is not a socket"));
    }
    if int_opt(libc::SO_TYPE) != Some(libc::SOCK_STREAM) {
        return Err(format!("fd {fd} is not a stream socket (ListenStream=)"));
    }
    // SAFETY: getsockname writes at most `len` bytes into `addr`.
    let family = unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        (libc::getsockname(
            fd,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        ) == 0)
            .then_some(addr.ss_family as libc::c_int)
    };
    if family != Some(libc::AF_UNIX) {
        return Err(format!(
            "fd {fd} is not a Unix socket; use a path in ListenStream="
        ));
    }
    #[cfg(target_os = "linux")]
    if int_opt(libc::SO_ACCEPTCONN) != Some(1) {
        return Err(format!(
            "fd {fd} is not listening (Accept=yes is not supported)"
        ));
    }
    Ok(())
}

/// macOS launchd: the socket named `name` in the plist's `Sockets`.
#[cfg(target_os = "macos")]
pub fn launchd_listener(name: &str) -> Result<Option<UnixListener>, SocketError> {
    use std::ffi::CString;
    use std::os::unix::io::FromRawFd;
    extern "C" {
        fn launch_activate_socket(
            name: *const libc::c_char,
            fds: *mut *mut libc::c_int,
            cnt: *mut libc::size_t,
        ) -> libc::c_int;
    }
    let cname = CString::new(name).expect("socket name has no NUL");
    let mut fds: *mut libc::c_int = std::ptr::null_mut();
    let mut cnt: libc::size_t = 0;
    // SAFETY: launch_activate_socket fills `fds` with a malloc'd array of
    // `cnt` descriptors that we own and must free.
    let rc = unsafe { launch_activate_socket(cname.as_ptr(), &mut fds, &mut cnt) };
    if rc == libc::ESRCH {
        return Ok(None); // not started by launchd
    }
    if rc != 0 || fds.is_null() || cnt == 0 {
        if !fds.is_null() {
            // SAFETY: launchd allocated it; we free it once.
            unsafe { libc::free(fds.cast()) };
        }
        return Err(SocketError::Io {
            what: "take the launchd socket",
            path: PathBuf::from(name),
            source: std::io::Error::from_raw_os_error(if rc != 0 { rc } else { libc::ENOENT }),
        });
    }
    // SAFETY: as above; we take the first and close the rest.
    let listener = unsafe {
        let all = std::slice::from_raw_parts(fds, cnt);
        for &extra in &all[1..] {
            libc::close(extra);
        }
        let l = UnixListener::from_raw_fd(all[0]);
        libc::free(fds.cast());
        l
    };
    listener
        .set_nonblocking(true)
        .map_err(|source| SocketError::Io {
            what: "configure the launchd socket",
            path: PathBuf::from(name),
            source,
        })?;
    Ok(Some(listener))
}

/// The most bytes a socket path may have: the size of `sockaddr_un`'s
/// `sun_path` (108 on Linux, 104 on macOS) less the terminating NUL.
pub fn max_path_len() -> usize {
    // The array's length, read from the type alone: no value is needed.
    fn len_of<const N: usize>(_: fn(&libc::sockaddr_un) -> &[libc::c_char; N]) -> usize {
        N
    }
    len_of(|a| &a.sun_path) - 1
}

/// Why a socket path of `len` bytes cannot be bound when at most `max` fit
/// (shared with the configuration's check, which names the value's origin).
pub fn too_long_reason(len: usize, max: usize) -> String {
    format!(
        "it is {len} bytes long, but a Unix socket path can have at most {max} bytes on this system ({} with the terminating NUL, the size of sockaddr_un.sun_path)",
        max + 1
    )
}

/// A socket path short enough for any home, for messages: the Linux
/// default without `$XDG_RUNTIME_DIR` and `$TMPDIR`, for user `uid`.
pub fn short_example(uid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/telemetry-{uid}/telemetryd.sock"))
}

/// The effective uid (for messages).
fn euid() -> u32 {
    telemetry_platform::proc::effective_uid()
}

/// Refuse a path that does not fit in `sockaddr_un` (binding it would fail
/// with the unhelpful "path must be shorter than SUN_LEN").
pub fn check_path_len(path: &Path) -> Result<(), SocketError> {
    let len = path.as_os_str().len();
    let max = max_path_len();
    if len > max {
        return Err(SocketError::PathTooLong {
            path: path.to_path_buf(),
            len,
            max,
        });
    }
    Ok(())
}

/// Bind `path` as described in the module docs.
pub fn bind(path: &Path) -> Result<BoundSocket, SocketError> {
    let io = |what: &'static str| {
        let path = path.to_path_buf();
        move |source| SocketError::Io { what, path, source }
    };
    // Before the directory is made, so a refused path leaves nothing behind.
    check_path_len(path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            telemetry_sink::fsutil::create_private_dir(dir)
                .map_err(io("create the directory for"))?;
        }
        check_dir(dir)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(SocketError::NotASocket(path.to_path_buf()));
        }
        match UnixStream::connect(path) {
            Ok(_) => return Err(SocketError::InUse(path.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %path.display(), "removing stale socket");
                std::fs::remove_file(path).map_err(io("remove the stale socket"))?;
            }
            Err(source) => {
                return Err(SocketError::Io {
                    what: "probe the existing socket",
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    let listener = UnixListener::bind(path).map_err(io("bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("set permissions on"))?;
    let id = file_id(&std::fs::symlink_metadata(path).map_err(io("stat"))?);
    listener.set_nonblocking(true).map_err(io("configure"))?;
    Ok(BoundSocket {
        listener: Some(listener),
        // Removed by this path at exit, after an autostarted daemon has
        // left the folder a relative one was given in.
        path: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_live_socket_replaces_stale_one_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/d.sock");
        let first = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        assert!(matches!(bind(&path), Err(SocketError::InUse(_))));

        // Simulate a crash: the listener is gone but the file stays.
        let mut crashed = first;
        drop(crashed.take_listener());
        std::mem::forget(crashed);
        let second = bind(&path).unwrap();
        drop(second);
        assert!(!path.exists(), "our own socket is removed on drop");
    }

    #[test]
    fn never_deletes_a_file_that_is_not_a_socket_and_refuses_unsafe_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, b"keep me").unwrap();
        assert!(matches!(bind(&path), Err(SocketError::NotASocket(_))));
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");

        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = bind(&open.join("d.sock")).err().unwrap();
        assert!(matches!(err, SocketError::UnsafeDir { .. }), "{err}");
        assert!(err.to_string().contains("writable by other users"), "{err}");
    }

    #[test]
    fn a_path_over_the_limit_is_refused_before_anything_is_created() {
        let expected = if cfg!(target_os = "macos") { 103 } else { 107 };
        assert_eq!(max_path_len(), expected);
        let dir = tempfile::tempdir().unwrap();
        let name_len = |extra: usize| expected + extra - dir.path().join("sub/").as_os_str().len();
        let long = dir.path().join("sub").join("s".repeat(name_len(1)));
        assert_eq!(long.as_os_str().len(), expected + 1);
        let err = bind(&long).err().unwrap();
        assert!(matches!(err, SocketError::PathTooLong { .. }), "{err}");
        let msg = err.to_string();
        for want in [
            long.to_str().unwrap(),
            &format!("it is {} bytes long", expected + 1),
            &format!("at most {expected} bytes"),
            &format!("({} with the terminating NUL", expected + 1),
            "--socket",
            "TELEMETRY_SOCKET",
            "e.g. /tmp/telemetry-",
        ] {
            assert!(msg.contains(want), "{want:?} not in {msg}");
        }
        assert!(!dir.path().join("sub").exists(), "no directory is created");

        // The longest path that fits binds.
        let fits = dir.path().join("sub").join("s".repeat(name_len(0)));
        drop(bind(&fits).unwrap());
    }

    #[test]
    fn activation_variables_for_another_pid_are_ignored() {
        let env = |k: &str| match k {
            "LISTEN_PID" => Some("1".to_string()),
            "LISTEN_FDS" => Some("1".to_string()),
            _ => None,
        };
        assert!(activated_listener(env, std::process::id())
            .unwrap()
            .is_none());
        assert!(activated_listener(|_| None, 42).unwrap().is_none());
        let bad = |k: &str| match k {
            "LISTEN_PID" => Some("42".to_string()),
            "LISTEN_FDS" => Some("zero".to_string()),
            _ => None,
        };
        assert!(activated_listener(bad, 42).is_err());
    }

    #[test]
    fn does_not_remove_a_socket_it_did_not_create() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        let mut ours = bind(&path).unwrap();
        drop(ours.take_listener());
        std::fs::remove_file(&path).unwrap();
        // Take the freed inode first so the other socket surely gets a new
        // one (ctime alone is only as fine as the kernel's coarse clock).
        std::fs::write(dir.path().join("filler"), b"").unwrap();
        let _theirs = UnixListener::bind(&path).unwrap();
        drop(ours);
        assert!(path.exists());
    }
}
