//! `Probe`: check every destination the daemon uploads to, writing
//! nothing to them (for `telemetryctl doctor`). Like `status`, it first
//! applies a consent change the daemon was not told about, when no upload
//! holds the store ([`crate::cmd::consent::reconcile_changed`]).
//!
//! This handler only orchestrates: which destinations there are (the
//! daemon's own first, then each one a manifest names or a waiting batch
//! was sealed for, as `status` lists them), how each is reached, and where
//! each is configured (for the fixes). The checks are
//! [`telemetry_sink::probe`]'s. Each probe goes through the uploader's own
//! client for the destination, so it takes the uploads' route: the same
//! endpoint, proxy, CA bundle and credentials.
//!
//! Destinations are probed side by side and every network step is
//! bounded ([`telemetry_sink::probe::STEP_TIMEOUT`]), so a probe takes
//! seconds even when every destination hangs.

use crate::server::Ctx;
use crate::uploader::destination::{DestId, Target};
use crate::uploader::UploadState;
use telemetry_proto::{DestinationProbe, ProbeReport, Response};
use telemetry_sink::probe::{self, Probe, S3Target};
use telemetry_sink::s3::Credentials;
use telemetry_sink::Sink;

/// Where the daemon's own S3 destination is set, for the fixes.
const OWN_S3_SETTINGS: &str = "telemetryd's own settings (TELEMETRY_S3_BUCKET, TELEMETRY_S3_ENDPOINT, TELEMETRY_S3_REGION, or the [s3] table of its config file)";

/// Handle `Probe`.
pub async fn handle(ctx: &Ctx) -> Response {
    let (stats, up) = match crate::cmd::status::snapshot(ctx).await {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    let probes = crate::cmd::status::destination_ids(ctx, &stats, &up)
        .into_iter()
        .map(|(id, products)| {
            let waiting = stats.uploadable_by_destination.contains_key(&id);
            probe_one(ctx, &up, id, products, waiting)
        });
    Response::Probed(ProbeReport {
        destinations: futures::future::join_all(probes).await,
    })
}

/// Where a destination is set, for the fixes: the daemon's own settings,
/// or the manifest that names it.
fn configured_in(ctx: &Ctx, id: &DestId, products: &[String]) -> String {
    if id.is_none() {
        return OWN_S3_SETTINGS.to_string();
    }
    // Every manifest that names it: with several products on one broker,
    // the first alone may not be the one whose product it refuses.
    let mut files: Vec<String> = products
        .iter()
        .filter_map(|p| ctx.catalogues.get(p))
        .map(|m| m.source_name.clone())
        .collect();
    files.dedup();
    match files.as_slice() {
        [] => "the manifest that named it when its waiting batches were sealed (no manifest names it now)".to_string(),
        [file] => format!(
            "the [upload] table of {file} (the vendor's manifest: update the CLI that installed it, or tell the vendor)"
        ),
        many => format!(
            "the [upload] tables of {} (the vendors' manifests: update the CLIs that installed them, or tell the vendors)",
            many.join(", ")
        ),
    }
}

/// Probe one destination.
async fn probe_one(
    ctx: &Ctx,
    up: &UploadState,
    id: DestId,
    products: Vec<String>,
    waiting: bool,
) -> DestinationProbe {
    let registry = &ctx.uploader.registry;
    let (destination, auth) = registry.describe(&id);
    // Products whose user said `on`: only their vendors may learn, from a
    // probe, that this machine has the product (an address, a product
    // name in a query). The operator's own destination is always checked.
    // A product its vendor retired is not asked about again: nothing of it
    // is uploaded any more, and `doctor` says so under its drops (asked,
    // the broker's refusal would read as a failure to fix).
    let on: Vec<String> = products
        .iter()
        .filter(|p| ctx.consent.resolve(p).0 == telemetry_proto::Mode::On)
        .filter(|p| !up.retired.iter().any(|r| r.product == **p))
        .cloned()
        .collect();
    let mut report = DestinationProbe {
        destination,
        auth,
        products,
        checks: Vec::new(),
        clock_skew_secs: None,
    };
    if id.is_some() && on.is_empty() && !waiting {
        report.checks.push(telemetry_proto::Check::pass(
            "skipped",
            "not contacted: no product that sends here is on, and nothing waits to go there (a request would tell its vendor this machine has the product)".to_string(),
        ));
        return report;
    }
    let target = match registry.get(&id).await {
        Ok(t) => t,
        Err(e) => {
            report.checks.push(telemetry_proto::Check::fail(
                "destination",
                e.to_string(),
                "the batches sealed for it cannot be uploaded by this telemetryd: upgrade it if a newer one sealed them, or drop them with `telemetryctl purge`".to_string(),
            ));
            return report;
        }
    };
    let configured_in = configured_in(ctx, &id, &report.products);
    let found: Probe = match &*target {
        Target::Sink(Sink::Outbox(dir)) => {
            let dir = dir.clone();
            let check = tokio::task::spawn_blocking(move || probe::probe_outbox(&dir))
                .await
                .unwrap_or_else(|e| {
                    telemetry_proto::Check::fail(
                        "outbox",
                        format!("the check did not finish: {e}"),
                        "see telemetryd's log".to_string(),
                    )
                });
            Probe {
                checks: vec![check],
                clock_skew_secs: None,
            }
        }
        Target::Sink(Sink::S3 { client, bucket, .. }) => {
            let target = S3Target {
                client,
                bucket,
                credentials: if report.auth == "aws" {
                    Credentials::AwsChain
                } else {
                    Credentials::Anonymous
                },
                configured_in: &configured_in,
                uploads_succeeded: up.destinations.get(&id).is_some_and(|d| d.uploads > 0),
            };
            probe::probe_s3(&target, registry.net(), &*ctx.clock).await
        }
        Target::Broker { url, client, .. } => {
            probe::probe_broker(
                client,
                url,
                &on,
                registry.net(),
                &configured_in,
                &*ctx.clock,
            )
            .await
        }
    };
    report.checks = found.checks;
    report.clock_skew_secs = found.clock_skew_secs;
    report
}
