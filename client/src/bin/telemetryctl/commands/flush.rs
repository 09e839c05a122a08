//! `telemetryctl flush [--json] [--timeout 2m]`.

use super::{bytes, count, print_json};
use crate::Failure;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;
use telemetry_client::{Client, ClientError};

/// Flags of `flush`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the result as JSON: the serde form of telemetry-proto's
    /// FlushReport ({"keys": [...], "events": N, "bytes": N}).
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the upload, e.g. 30s, 2m or 1h.
    #[arg(long, default_value = "2m", value_name = "DURATION", value_parser = duration)]
    timeout: Duration,
}

/// Parse a duration flag, saying what a valid one looks like (humantime's
/// own message, "expected number at 0", does not).
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| "expected a duration such as 30s, 2m or 1h".to_string())
}

/// Run `flush`.
pub fn run(socket: &Path, args: &Args) -> Result<(), Failure> {
    let mut client = Client::connect(socket)?;
    // An upload can take a while: a person at a terminal is told what is
    // being waited for (scripts, and --json, get only the result).
    if !args.json && std::io::stderr().is_terminal() {
        eprintln!(
            "sealing and uploading what is pending (waiting up to {}; Ctrl-C stops the wait, not the upload)…",
            humantime::format_duration(args.timeout)
        );
    }
    let r = client.flush(args.timeout).map_err(|e| {
        let timed_out = matches!(e, ClientError::TimedOut { .. });
        let mut f = Failure::from(e);
        if timed_out {
            f.message.push_str(
                "; the upload goes on in the daemon: `telemetryctl status` shows how it ends (or wait longer with --timeout)",
            );
        }
        f
    })?;
    if args.json {
        return print_json(&r);
    }
    if r.keys.is_empty() {
        outln!("nothing to upload");
        return Ok(());
    }
    outln!(
        "uploaded {} in {}, {}:",
        count(r.events, "event", "events"),
        count(r.keys.len() as u64, "object", "objects"),
        bytes(r.bytes)
    );
    for k in &r.keys {
        outln!("  {k}");
    }
    Ok(())
}
