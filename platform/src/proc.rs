//! The process's own descriptors.

/// Close every descriptor from `first` up: what a daemon started by a
/// client may have inherited that it has no use for. A client that let a
/// pipe (`$(cli)`, a `make -j` jobserver, a process substitution) through
/// to the daemon would otherwise keep its reader waiting for as long as the
/// daemon runs. Call it before the process opens anything of its own.
#[cfg(unix)]
pub fn close_from(first: i32) {
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
        let mut lim: libc::rlimit = std::mem::zeroed();
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            (lim.rlim_cur as u64).min(65_536) as i32
        } else {
            1024
        };
        for fd in first..max {
            libc::close(fd);
        }
    }
}
