//! Operating-system helpers the daemon and its clients share, so that
//! each is written once: private files and directories (modes on Unix,
//! inherited ACLs on Windows), Windows command lines, and on Windows which
//! user a process runs as (the daemon checks its clients, a client checks
//! the pipe's server), security descriptors and the registry; and handing
//! an idle daemon's mapped code back to the kernel, and closing what an
//! autostarted daemon inherited.

pub mod cmdline;
pub mod fs;
pub mod mem;
pub mod proc;
#[cfg(windows)]
pub mod windows;

/// The Windows SID of LocalSystem, the account services run as: the
/// administrator's identity for permission checks, as root is on Unix.
/// (Defined on every platform, so the checks that compare with it are
/// tested everywhere.)
pub const LOCAL_SYSTEM_SID: &str = "S-1-5-18";
