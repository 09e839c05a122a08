//! Operating-system helpers the daemon and its clients share, so that
//! each is written once: private files and directories (modes on Unix,
//! inherited ACLs on Windows), and on Windows which user a process runs as
//! (the daemon checks its clients, a client checks the pipe's server).

pub mod fs;
#[cfg(windows)]
pub mod windows;
