//! `telemetryctl purge [--product P] [--json]`.

use crate::Failure;
use std::path::Path;
use std::time::Duration;
use telemetry_client::Client;

/// Flags of `purge`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this product.
    #[arg(long)]
    product: Option<String>,
    /// Print the result as JSON: {"purged": N}.
    #[arg(long)]
    json: bool,
}

/// Run `purge`.
pub fn run(socket: &Path, args: &Args) -> Result<(), Failure> {
    let n = Client::connect(socket)?.purge(args.product.as_deref(), Duration::from_secs(30))?;
    if args.json {
        println!("{}", serde_json::json!({ "purged": n }));
    } else {
        let scope = args
            .product
            .as_deref()
            .map(|p| format!(" of {p}"))
            .unwrap_or_default();
        println!("deleted {n} stored event(s){scope} that were not uploaded yet");
    }
    Ok(())
}
