//! `telemetryctl purge [--product P] [--json]`.

use super::{count, payload, print_json};
use crate::Failure;
use std::path::Path;
use std::time::Duration;
use telemetry_client::{Client, ClientError, Request, Response};

/// Flags of `purge`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this product.
    #[arg(long, value_parser = super::product_arg)]
    product: Option<String>,
    /// Print the result as JSON: the serde form of telemetry-proto's
    /// Response::Purged fields ({"events": N}).
    #[arg(long)]
    pub json: bool,
}

/// Run `purge`.
pub fn run(socket: &Path, args: &Args) -> Result<(), Failure> {
    let req = Request::Purge {
        product: args.product.clone(),
    };
    // The reply itself, not just its count, so --json prints whatever it
    // holds.
    let reply = Client::connect(socket)?.request(&req, Duration::from_secs(30))?;
    let Response::Purged { events, .. } = &reply else {
        return Err(ClientError::Unexpected(format!("{reply:?}")).into());
    };
    if let (Some(p), 0) = (&args.product, *events) {
        super::warn_if_unknown(socket, p, "nothing of it was stored here");
    }
    if args.json {
        return print_json(&payload(&reply)?);
    }
    let scope = args
        .product
        .as_deref()
        .map(|p| format!(" of {p}"))
        .unwrap_or_default();
    let verb = if *events == 1 { "was" } else { "were" };
    outln!(
        "deleted {}{scope} that {verb} not uploaded yet",
        count(*events, "stored event", "stored events")
    );
    Ok(())
}
