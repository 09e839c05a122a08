//! `telemetryctl forget PRODUCT [--json]`.

use super::{count, print_json};
use crate::Failure;
use std::path::Path;
use std::time::Duration;
use telemetry_client::Client;

/// Flags of `forget`.
#[derive(Debug, clap::Args)]
#[command(after_help = "What happens:\n  \
    1. every event of PRODUCT stored on this machine is deleted (pending, sealed, local-only, withheld, an unsent telemetry_off, what shims spooled) with its upload receipts; events made before it that arrive later are refused;\n  \
    2. if PRODUCT is on, one telemetry_forget event is uploaded under its current anonymous ID: the vendor's report leaves out every event of that ID, and the vendor is asked to delete them;\n  \
    3. PRODUCT gets a new anonymous ID (a new random salt, kept in the state directory's database), unlinkable to the old one while that salt is kept.\n\
    If PRODUCT is off or local nothing can be sent (that is what off means): pass the old ID printed here to the vendor by other means, or forget before turning it off. Nothing here keeps the old ID: note it down.")]
pub struct Args {
    /// The product whose data to forget (e.g. cfdev).
    #[arg(value_parser = super::product_arg)]
    product: String,
    /// The host CLI's version, recorded in the telemetry_forget event.
    #[arg(long, env = "TELEMETRY_BUILD", default_value = "unknown")]
    build: String,
    /// Print the result as JSON: the serde form of telemetry-proto's
    /// ForgetReport ({"product", "purged", "marker", "marker_key",
    /// "old_machine", "new_machine"}).
    #[arg(long)]
    pub json: bool,
}

/// Run `forget`.
pub fn run(socket: &Path, args: &Args) -> Result<(), Failure> {
    // Deleting and sending the marker waits for an upload in flight.
    let r = Client::connect(socket)?.forget(&args.product, &args.build, Duration::from_secs(60))?;
    // A product uninstalled since may still be forgotten; only when nothing
    // of it was stored here either is the name likely a slip.
    if r.purged == 0 {
        super::warn_if_unknown(socket, &args.product, "nothing of it was stored here");
    }
    if args.json {
        return print_json(&r);
    }
    outln!(
        "{}: deleted {} stored on this machine, and its upload receipts",
        r.product,
        count(r.purged, "event", "events")
    );
    match (r.marker, &r.marker_key) {
        (true, Some(key)) => outln!(
            "sent a telemetry_forget request under the old ID {} ({key}): the maintainers' report leaves out every event of that ID",
            r.old_machine
        ),
        (true, None) => outln!(
            "a telemetry_forget request under the old ID {} goes out with the next upload (the destination could not be reached now)",
            r.old_machine
        ),
        (false, _) => outln!(
            "nothing was sent ({} is not on, its vendor retired it, or no manifest here describes it and it never sent anything): to have the vendor delete what was uploaded before, give them this old ID by other means (note it now: nothing here keeps it, and a second forget shows the ID made by this one):\n  {}",
            r.product, r.old_machine
        ),
    }
    outln!("new anonymous ID: {}", r.new_machine);
    Ok(())
}
