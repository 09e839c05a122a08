//! `telemetryctl status [--json]`.

use super::{bytes, when};
use crate::Failure;
use std::path::Path;
use std::time::Duration;
use telemetry_client::Client;

/// Flags of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the status as JSON (stable field names, times in µs since the epoch).
    #[arg(long)]
    json: bool,
}

/// Run `status`.
pub fn run(socket: &Path, args: &Args) -> Result<(), Failure> {
    let s = Client::connect(socket)?.status(Duration::from_secs(5))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
        return Ok(());
    }
    println!(
        "telemetryd {} (up {})",
        s.daemon_version,
        humantime::format_duration(Duration::from_secs(s.uptime_secs))
    );
    println!("socket:       {}", socket.display());
    println!("destination:  {}", s.destination);
    println!(
        "pending:      {} events ({}), {} sealed batch(es)",
        s.pending_events,
        bytes(s.pending_bytes),
        s.sealed_batches
    );
    match (&s.last_upload_us, &s.last_upload_key) {
        (Some(t), Some(k)) => println!(
            "uploaded:     {} events since start; last at {} ({k})",
            s.uploaded_events,
            when(*t)
        ),
        _ => println!("uploaded:     nothing since start"),
    }
    match &s.last_error {
        Some(e) => {
            println!("last error:   {e}");
            let next = s.next_attempt_us.map(when).unwrap_or_else(|| "-".into());
            println!(
                "retrying:     {} failure(s) in a row; next attempt at {next}",
                s.consecutive_failures
            );
        }
        None => println!("last error:   none"),
    }
    for (product, n) in &s.dropped {
        println!("dropped:      {n} oldest {product} event(s): the store was full (reported with the next upload)");
    }
    for i in &s.incidents {
        println!("incident:     {i}");
    }
    if s.local_events > 0 {
        println!(
            "local only:   {} events (kept here, never uploaded)",
            s.local_events
        );
    }
    for c in &s.consent {
        println!(
            "consent:      {}: {} ({})",
            c.product,
            c.mode,
            c.layer.as_str()
        );
    }
    Ok(())
}
