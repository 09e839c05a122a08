//! `telemetryctl flush [--json] [--timeout 2m]`.

use super::{bytes, count, print_json};
use crate::Failure;
use std::path::Path;
use std::time::Duration;
use telemetry_client::Client;

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
    let r = Client::connect(socket)?.flush(args.timeout)?;
    if args.json {
        return print_json(&r);
    }
    if r.keys.is_empty() {
        println!("nothing to upload");
        return Ok(());
    }
    println!(
        "uploaded {} in {}, {}:",
        count(r.events, "event", "events"),
        count(r.keys.len() as u64, "object", "objects"),
        bytes(r.bytes)
    );
    for k in &r.keys {
        println!("  {k}");
    }
    Ok(())
}
