//! `telemetryctl flush [--json]`.

use super::bytes;
use crate::Failure;
use std::path::Path;
use std::time::Duration;
use telemetry_client::Client;

/// Flags of `flush`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the result as JSON: {"keys": [...], "events": N, "bytes": N}.
    #[arg(long)]
    json: bool,
    /// How long to wait for the upload.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Run `flush`.
pub fn run(socket: &Path, args: &Args) -> Result<(), Failure> {
    let r = Client::connect(socket)?.flush(args.timeout)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        return Ok(());
    }
    if r.keys.is_empty() {
        println!("nothing to upload");
        return Ok(());
    }
    println!(
        "uploaded {} event(s) in {} object(s), {}:",
        r.events,
        r.keys.len(),
        bytes(r.bytes)
    );
    for k in &r.keys {
        println!("  {k}");
    }
    Ok(())
}
