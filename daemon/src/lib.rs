//! # telemetryd
//!
//! The collector daemon of an opt-in, anonymous usage-telemetry system for
//! command-line tools. CLI shims send events over a Unix socket; the daemon
//! validates them, adds the anonymous machine ID, commits them to SQLite and
//! acknowledges; an uploader seals pending events into zstd-compressed
//! NDJSON batches and writes them to S3 (or a local outbox) under
//! deterministic keys, deleting them locally only after the write succeeded.
//!
//! ## Where things are
//! - [`config`]: the one [`Config`] struct (flags, env, file, defaults).
//! - [`socket`]: binding the Unix socket safely, or taking the one a
//!   service manager passed (systemd `LISTEN_FDS`, launchd).
//! - [`notify`], [`install`]: `sd_notify`, and writing the unit files.
//! - [`ondemand`]: started by a client without a service manager, and
//!   binaries of different ages on one state dir (who serves, who steps
//!   aside).
//! - [`server`]: [`run`], the accept loop and the per-connection task.
//! - [`cmd`]: one handler per request.
//! - [`store`]: the only code that touches SQLite (one thread, group commit).
//! - [`uploader`], [`batch`]: sealing, keys, bodies; destinations, S3 and
//!   the manifest format are in the shared `telemetry-sink` crate.
//! - [`identity`], [`record`]: the anonymous machine ID and the stored line.
//! - [`consent`], [`catalog`]: who may collect what (checked on every emit
//!   and before every upload); [`refusals`]: what was refused, counted and
//!   logged; [`counters`]: where every event went.
//!
//! `main.rs` only parses arguments, binds the socket and passes a signal
//! future to [`run`].

/// `println!` for what the daemon's own commands print (`install`,
/// `--check-config`): a write that fails (a reader that has gone, a full
/// disk, a closed stdout) does not stop the command, where `println!`
/// panicked, which stopped an install between its steps (on Windows a
/// closed pipe is no signal, so `telemetryd --check-config | more` ended in
/// a panic there). Any failure but a reader that has gone is kept for
/// [`output_error`], so a command whose output is its answer can say so.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` as [`outln!`] has it.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_out(format_args!($($arg)*))
    };
}

/// What [`outln!`] and [`out!`] call.
#[doc(hidden)]
pub fn write_out(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(text) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let _ = OUTPUT_ERROR.set(e.to_string());
        }
    }
}

static OUTPUT_ERROR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The first failure to write [`outln!`]'s output (a full disk, a closed
/// stdout), if any; a reader that has gone is none.
pub fn output_error() -> Option<&'static str> {
    OUTPUT_ERROR.get().map(String::as_str)
}

pub mod batch;
pub mod catalog;
pub mod check;
pub mod cmd;
pub mod config;
pub mod connection;
pub mod consent;
pub mod counters;
pub mod identity;
pub mod install;
pub mod notify;
pub mod ondemand;
pub mod record;
pub mod refusals;
pub mod reload;
pub mod server;
#[cfg(unix)]
pub mod socket;
pub mod spool;
pub mod store;
pub mod transport;
pub mod uploader;

pub use config::Config;
pub use server::{run, run_locked, DaemonError};

/// An error and its causes on one line (shared with the report and the
/// broker: `telemetry_sink::error_chain`).
pub use telemetry_sink::error_chain;

#[cfg(test)]
mod error_chain_tests {
    #[test]
    fn a_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = crate::config::ConfigError::Read {
            path: "/etc/x.toml".into(),
            source: io,
        };
        let e = anyhow::Error::new(e).context("loading the configuration");
        assert_eq!(
            super::error_chain(e.as_ref()),
            "loading the configuration: cannot read config file /etc/x.toml: no such file"
        );
    }
}
