//! `telemetryctl show [--product P] [--ndjson|--json]`.

use super::print_json;
use crate::Failure;
use std::path::Path;
use std::time::Duration;
use telemetry_client::{Client, EventState};

/// Flags of `show`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this product.
    #[arg(long, conflicts_with = "receipt", value_parser = super::product_arg)]
    product: Option<String>,
    /// Print the events of this uploaded object instead (a key from
    /// `telemetryctl receipts`), while its body is still kept.
    #[arg(long, value_name = "KEY", value_parser = receipt_key)]
    receipt: Option<String>,
    /// Print only the lines that will be uploaded, exactly as they will be (NDJSON).
    #[arg(long, conflicts_with = "json")]
    ndjson: bool,
    /// Print the serde form of telemetry-proto's EventsPage holding every
    /// stored event: {"events": [{"seq", "state", "batch_key", "line"}],
    /// "next_after_seq": null}, `line` being the NDJSON line as uploaded.
    #[arg(long)]
    pub json: bool,
}

/// Run `show`.
pub fn run(socket: &Path, args: &Args) -> Result<(), Failure> {
    if let Some(key) = &args.receipt {
        return receipt(socket, key, args);
    }
    let page = Client::connect(socket)?.show(args.product.as_deref(), Duration::from_secs(30))?;
    if let (Some(p), true) = (&args.product, page.events.is_empty()) {
        super::warn_if_unknown(socket, p, "nothing of it is stored here");
    }
    if args.json {
        return print_json(&page);
    }
    let events = &page.events;
    if args.ndjson {
        for e in events
            .iter()
            .filter(|e| matches!(e.state, EventState::Sealed | EventState::Pending))
        {
            outln!("{}", e.line);
        }
        return Ok(());
    }
    if events.is_empty() {
        outln!(
            "nothing stored: no event is waiting to be sent (`telemetryctl receipts` lists what was uploaded)"
        );
        return Ok(());
    }
    // Grouped under each header once, in the order they first appear: in
    // store order, pending and local events of two products interleave.
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for e in events {
        let header = match (e.state, e.batch_key.as_deref()) {
            (EventState::Sealed, Some(key)) => {
                format!("# sealed, goes out with the next upload as {key}:")
            }
            (EventState::Sealed, None) | (EventState::Pending, _) => {
                "# pending, goes into the next batch:".to_string()
            }
            (EventState::LocalOnly, _) => "# local only, never uploaded:".to_string(),
            (EventState::Withheld, _) => "# kept but not uploaded for now: an administrator's or the environment's off, or no usable manifest for its product (`telemetryctl doctor` says which):".to_string(),
        };
        match groups.iter_mut().find(|(h, _)| *h == header) {
            Some((_, lines)) => lines.push(&e.line),
            None => groups.push((header, vec![&e.line])),
        }
    }
    for (header, lines) in &groups {
        outln!("{header}");
        for line in lines {
            outln!("{line}");
        }
    }
    // The counter line a batch gets is written when it is sealed (its id
    // and time are made then), so it cannot be shown yet: said instead.
    let dropped = Client::connect(socket)
        .and_then(|mut c| c.status(Duration::from_secs(5)))
        .map(|s| s.dropped)
        .unwrap_or_default();
    for (product, n) in dropped
        .iter()
        .filter(|(p, _)| args.product.as_ref().is_none_or(|only| only == p))
    {
        outln!(
            "# the next batch of {product} also carries a telemetry_dropped line counting {} dropped because the store was full (made when it is sealed)",
            super::count(*n, "event", "events")
        );
    }
    Ok(())
}

/// Longest object key S3 (and so a receipt) has, in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// clap's parser for `--receipt`: a key no receipt can have is a usage
/// error, not a frame the daemon refuses for its size.
fn receipt_key(value: &str) -> Result<String, String> {
    if value.len() > MAX_KEY_BYTES {
        return Err(format!(
            "an object key has at most {MAX_KEY_BYTES} bytes, this one {}; copy it from `telemetryctl receipts`",
            value.len()
        ));
    }
    Ok(value.to_string())
}

/// `show --receipt KEY`: the lines of an uploaded batch, as uploaded.
fn receipt(socket: &Path, key: &str, args: &Args) -> Result<(), Failure> {
    let page = Client::connect(socket)?.receipts(Some(key), Duration::from_secs(30))?;
    // Not a usage error: the command was right, the upload is not there.
    let missing = |code: &str, message: String| Failure {
        exit: crate::EXIT_REFUSED,
        code: code.into(),
        message,
        json_printed: false,
    };
    let Some(found) = page.receipts.first() else {
        return Err(missing(
            "not_found",
            format!(
                "no upload with the key {key} is recorded on this machine; `telemetryctl receipts` lists the last 1,000"
            ),
        ));
    };
    // With --json a receipt whose events are gone is still an answer: it
    // says so (`body_kept` false, no lines).
    if args.json {
        return print_json(&page);
    }
    if !found.body_kept {
        return Err(missing(
            "not_kept",
            format!(
                "the events of {key} are no longer kept on this machine (only the newest batches' are); its receipt is in `telemetryctl receipts`"
            ),
        ));
    }
    if !args.ndjson {
        outln!("# uploaded as {key}:");
    }
    for line in &page.lines {
        outln!("{line}");
    }
    Ok(())
}
