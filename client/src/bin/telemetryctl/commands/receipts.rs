//! `telemetryctl receipts [--json]`.

use super::{bytes, print_json, when};
use crate::Failure;
use std::path::Path;
use std::time::Duration;
use telemetry_client::Client;

/// Flags of `receipts`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Each receipt is one object this machine uploaded: where, its key, the SHA-256 and size of its exact bytes, its events and when. The last 1000 are kept; the newest batches' bodies too (8 MiB in all), so `telemetryctl show --receipt KEY` can print what they held.\n\
                  Check one against the bucket: aws s3api head-object --bucket B --key KEY --checksum-mode ENABLED, or download it and run sha256sum."
)]
pub struct Args {
    /// Print the receipts as JSON: the serde form of telemetry-proto's
    /// ReceiptsPage ({"receipts": [{"seq", "destination", "key", "sha256",
    /// "bytes", "events", "uploaded_us", "body_kept", "already_there"}],
    /// "lines": [], "next_after": null, "max_receipts": N}).
    #[arg(long)]
    pub json: bool,
}

/// Run `receipts`.
pub fn run(socket: &Path, args: &Args) -> Result<(), Failure> {
    let page = Client::connect(socket)?.receipts(None, Duration::from_secs(30))?;
    if args.json {
        return print_json(&page);
    }
    if page.receipts.is_empty() {
        outln!("nothing uploaded yet (or forgotten)");
        return Ok(());
    }
    for r in &page.receipts {
        outln!(
            "{}  {}  {} event{}, {}{}{}",
            when(r.uploaded_us),
            r.destination,
            r.events,
            if r.events == 1 { "" } else { "s" },
            bytes(r.bytes),
            if r.already_there {
                ", already there"
            } else {
                ""
            },
            if r.body_kept {
                ""
            } else {
                ", body no longer kept"
            }
        );
        outln!("    {}", r.key);
        outln!("    sha256 {}", r.sha256);
    }
    Ok(())
}
