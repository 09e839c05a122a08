//! `telemetryctl show [--product P] [--ndjson|--json]`.

use crate::Failure;
use std::path::Path;
use std::time::Duration;
use telemetry_client::{Client, EventState};

/// Flags of `show`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this product.
    #[arg(long)]
    product: Option<String>,
    /// Print only the lines that will be uploaded, exactly as they will be (NDJSON).
    #[arg(long, conflicts_with = "json")]
    ndjson: bool,
    /// Print a JSON array of {seq, state, batch_key, event}.
    #[arg(long)]
    json: bool,
}

/// Run `show`.
pub fn run(socket: &Path, args: &Args) -> Result<(), Failure> {
    let events = Client::connect(socket)?.show(args.product.as_deref(), Duration::from_secs(30))?;
    if args.ndjson {
        for e in events
            .iter()
            .filter(|e| matches!(e.state, EventState::Sealed | EventState::Pending))
        {
            println!("{}", e.line);
        }
        return Ok(());
    }
    if args.json {
        let v: Vec<_> = events
            .iter()
            .map(|e| {
                let state = match e.state {
                    EventState::Sealed => "sealed",
                    EventState::Pending => "pending",
                    EventState::LocalOnly => "local_only",
                    EventState::Withheld => "withheld",
                };
                let event: serde_json::Value = serde_json::from_str(&e.line).unwrap_or_default();
                serde_json::json!({"seq": e.seq, "state": state, "batch_key": e.batch_key, "event": event})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    if events.is_empty() {
        println!("nothing stored: no event is waiting to be sent");
        return Ok(());
    }
    let mut current: Option<(EventState, Option<&str>)> = None;
    for e in &events {
        let group = (e.state, e.batch_key.as_deref());
        if current != Some(group) {
            match group {
                (EventState::Sealed, Some(key)) => {
                    println!("# sealed, goes out with the next upload as {key}:")
                }
                (EventState::Sealed, None) | (EventState::Pending, _) => {
                    println!("# pending, goes into the next batch:")
                }
                (EventState::LocalOnly, _) => println!("# local only, never uploaded:"),
                (EventState::Withheld, _) => {
                    println!("# kept but not uploaded: consent is off for now (administrator or environment):")
                }
            }
            current = Some(group);
        }
        println!("{}", e.line);
    }
    Ok(())
}
