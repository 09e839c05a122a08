//! The process's own descriptors.

/// Close every descriptor a daemon started by a client inherited beyond
/// stdio and any socket a service manager passed (`LISTEN_FDS` from 3, when
/// `LISTEN_PID` is this process). A client that let a pipe (`$(cli)`, a
/// `make -j` jobserver, a process substitution) through to the daemon would
/// otherwise keep its reader waiting for as long as the daemon runs. Call it
/// before the process opens anything of its own.
#[cfg(unix)]
pub fn close_inherited() {
    let listen = |var: &str| std::env::var(var).ok().and_then(|v| v.parse::<u32>().ok());
    let activated = match (listen("LISTEN_PID"), listen("LISTEN_FDS")) {
        (Some(pid), Some(n)) if pid == std::process::id() => n.min(1024) as i32,
        _ => 0,
    };
    close_from(3 + activated);
}

/// Close every descriptor from `first` up.
#[cfg(unix)]
fn close_from(first: i32) {
    // SAFETY: closing descriptors nobody in this process uses yet (the
    // caller's promise) has no other effect.
    unsafe {
        #[cfg(target_os = "linux")]
        {
            // close_range(first, ~0, 0), Linux 5.9+.
            if libc::syscall(
                libc::SYS_close_range,
                first as libc::c_uint,
                libc::c_uint::MAX,
                0 as libc::c_uint,
            ) == 0
            {
                return;
            }
        }
        // The descriptors open, listed (then closed, once the listing's own
        // descriptor is closed too); else every number up to the limit.
        let dir = if cfg!(target_os = "linux") {
            "/proc/self/fd"
        } else {
            "/dev/fd"
        };
        if let Ok(entries) = std::fs::read_dir(dir) {
            let open: Vec<i32> = entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|fd| *fd >= first)
                .collect();
            for fd in open {
                libc::close(fd);
            }
            return;
        }
        let mut lim: libc::rlimit = std::mem::zeroed();
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            (lim.rlim_cur as u64).min(1 << 20) as i32
        } else {
            1024
        };
        for fd in first..max {
            libc::close(fd);
        }
    }
}

/// The uid of the process at the other end of the connected Unix socket
/// `fd`: the one that called `listen` (for a socket a service manager made,
/// root), as the kernel recorded it.
#[cfg(unix)]
pub fn socket_peer_uid(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd;
    let fd = fd.as_raw_fd();
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: a zeroed ucred is a valid value to be filled in.
        let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: `cred` and `len` are valid out-pointers of the sizes given.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                &mut cred as *mut libc::ucred as *mut libc::c_void,
                &mut len,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(cred.uid)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let (mut uid, mut gid) = (0, 0);
        // SAFETY: valid out-pointers.
        if unsafe { libc::getpeereid(fd, &mut uid, &mut gid) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(uid)
    }
}

/// Raise the soft open-file limit to the hard one (at most 65,536): every
/// client connection is a descriptor, and the usual soft limit (1024) is
/// low for a server many clients talk to at once. Returns the soft limit
/// now in force, if it can be read. (Windows has no such limit: `None`.)
#[cfg(unix)]
pub fn raise_fd_limit() -> Option<u64> {
    // SAFETY: getrlimit/setrlimit on local structs.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = lim.rlim_max.min(65536).max(lim.rlim_cur);
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = want;
            }
        }
        Some(lim.rlim_cur as u64)
    }
}

/// See the Unix version: Windows has no such limit.
#[cfg(not(unix))]
pub fn raise_fd_limit() -> Option<u64> {
    None
}

/// This process's effective uid.
#[cfg(unix)]
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Unset every environment variable whose name starts with `prefix` and
/// whose value is empty, so that an empty variable counts as unset in the
/// whole process, as it does in the SDKs and `telemetry_proto::paths`. CI
/// systems and wrapper scripts often export a variable empty
/// (`TELEMETRY_BUILD=`); read by clap it would be an empty value given, and
/// the shim would refuse its event ("build \"\" is not valid") or blame a
/// flag nobody typed. Call it first in `main`, before any thread starts:
/// changing the environment races with other threads reading it.
pub fn forget_empty_vars(prefix: &str) {
    let empty: Vec<std::ffi::OsString> = std::env::vars_os()
        .filter(|(k, v)| v.is_empty() && k.to_str().is_some_and(|k| k.starts_with(prefix)))
        .map(|(k, _)| k)
        .collect();
    for k in empty {
        std::env::remove_var(k);
    }
}

/// Wait until process `pid` has exited, at most `timeout`; whether it has.
/// A process gone already counts as exited (so does one this process may
/// not wait for on Windows: it cannot be told apart there). For
/// `telemetryctl stop`: a daemon closes its listener first and exits only
/// after its last upload, and a Windows uninstaller may replace its program
/// file only then.
pub fn wait_for_exit(pid: u32, timeout: std::time::Duration) -> bool {
    wait_impl(pid, timeout)
}

#[cfg(unix)]
fn wait_impl(pid: u32, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    loop {
        // SAFETY: kill with signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive || is_zombie(pid) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Exited, but not yet reaped by its parent (a daemon run by hand from a
/// shell that has not waited yet). Linux only (`/proc`): elsewhere such a
/// process counts as running until it is reaped, which a daemon started by
/// a client (adopted by init or launchd) is at once.
#[cfg(unix)]
fn is_zombie(pid: libc::pid_t) -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[cfg(windows)]
fn wait_impl(pid: u32, timeout: std::time::Duration) -> bool {
    use windows_sys::Win32::Foundation::{CloseHandle, WAIT_OBJECT_0};
    use windows_sys::Win32::System::Threading::{
        OpenProcess, WaitForSingleObject, PROCESS_SYNCHRONIZE,
    };
    // SAFETY: OpenProcess returns a handle or null; the handle is closed
    // after the wait.
    unsafe {
        let h = OpenProcess(PROCESS_SYNCHRONIZE, 0, pid);
        if h.is_null() {
            return true;
        }
        let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX - 1);
        let done = WaitForSingleObject(h, ms) == WAIT_OBJECT_0;
        CloseHandle(h);
        done
    }
}

#[cfg(test)]
mod tests {
    #[cfg(unix)]
    #[test]
    fn waits_for_a_process_to_exit() {
        use std::time::Duration;
        let mut child = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .unwrap();
        assert!(!super::wait_for_exit(child.id(), Duration::from_millis(50)));
        // Exited and not yet reaped counts as exited (only Linux's /proc
        // tells a zombie apart; elsewhere it counts once reaped).
        if cfg!(target_os = "linux") {
            assert!(super::wait_for_exit(child.id(), Duration::from_secs(10)));
        }
        child.wait().unwrap();
        assert!(super::wait_for_exit(child.id(), Duration::ZERO));
    }

    #[test]
    fn empty_variables_with_the_prefix_are_forgotten_and_no_others() {
        // Names no other test reads; the test binary's threads do not
        // touch the environment.
        std::env::set_var("TELEMETRYTEST_EMPTY", "");
        std::env::set_var("TELEMETRYTEST_SET", "x");
        std::env::set_var("OTHERTEST_EMPTY", "");
        super::forget_empty_vars("TELEMETRYTEST_");
        assert_eq!(std::env::var_os("TELEMETRYTEST_EMPTY"), None);
        assert_eq!(std::env::var("TELEMETRYTEST_SET").as_deref(), Ok("x"));
        assert_eq!(std::env::var("OTHERTEST_EMPTY").as_deref(), Ok(""));
        std::env::remove_var("OTHERTEST_EMPTY");
        std::env::remove_var("TELEMETRYTEST_SET");
    }
}
