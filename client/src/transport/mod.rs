//! The platform seam on the client side: a blocking connection to the
//! daemon with per-operation timeouts.
//!
//! A Unix socket on Linux and macOS ([`unix`]); a named pipe on Windows
//! (`windows`: overlapped I/O, so reads and writes have timeouts, and the
//! pipe's server must be this user or LocalSystem). Each platform module
//! gives `Stream` with
//! `connect(path, wait)` (waits up to `wait` for a full listen backlog or
//! a busy pipe), `connect_now(path)`
//! (never waits: a full backlog or a busy pipe fails at once),
//! `set_read_timeout`/`set_write_timeout`, and `Read` and `Write`.

#[cfg(unix)]
pub mod unix;
#[cfg(unix)]
pub use unix::Stream;

#[cfg(windows)]
pub mod windows;
#[cfg(windows)]
pub use self::windows::Stream;
