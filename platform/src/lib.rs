//! Operating-system helpers the daemon and its clients share, so that
//! each is written once: on Windows, which user a process runs as (the
//! daemon checks its clients, a client checks the pipe's server).
//! Nothing here on Unix yet: the standard library covers it.

#[cfg(windows)]
pub mod windows;
