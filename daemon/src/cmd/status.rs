//! `Status`: counters from the store and the uploader, all O(1).

use crate::server::Ctx;
use crate::store::Stats;
use crate::uploader::destination::{DestId, Spec};
use crate::uploader::UploadState;
use std::collections::BTreeMap;
use telemetry_proto::{DestinationStatus, ErrorCode, ProductConsent, Response, StatusReport};

/// Every product the daemon knows (with a manifest, usable or not, named
/// in a consent file, or acted on before), with its effective consent, the
/// deciding layer and its manifest.
async fn consent_of_known_products(ctx: &Ctx) -> Vec<ProductConsent> {
    let mut products = ctx.catalogues.products();
    products.extend(ctx.products_with_consent_state());
    products.sort();
    products.dedup();
    let mut out = Vec::with_capacity(products.len());
    for product in products {
        out.push(crate::cmd::consent::product_consent(ctx, product).await);
    }
    out
}

/// Every destination with the products whose manifests send there now:
/// the daemon's own first, then each one a manifest names now or a waiting
/// batch was sealed for, or that was uploaded to since start (shared with
/// `probe`, so `doctor` checks what `status` lists).
pub(crate) fn destination_ids(
    ctx: &Ctx,
    stats: &Stats,
    up: &UploadState,
) -> BTreeMap<DestId, Vec<String>> {
    let mut products: BTreeMap<DestId, Vec<String>> = BTreeMap::new();
    products.insert(None, Vec::new());
    for product in ctx.catalogues.products() {
        let dest = ctx
            .catalogues
            .get(&product)
            .and_then(|m| m.upload.as_ref().map(|u| Spec::from_upload(u).to_text()));
        products.entry(dest).or_default().push(product);
    }
    for dest in stats
        .uploadable_by_destination
        .keys()
        .chain(up.destinations.keys())
    {
        products.entry(dest.clone()).or_default();
    }
    products
}

/// Every destination (see [`destination_ids`]) with its progress.
fn destinations(ctx: &Ctx, stats: &Stats, up: &UploadState) -> Vec<DestinationStatus> {
    destination_ids(ctx, stats, up)
        .into_iter()
        .map(|(dest, products)| {
            let (destination, auth) = ctx.uploader.registry.describe(&dest);
            let d = up.destinations.get(&dest).cloned().unwrap_or_default();
            let label = ctx.uploader.registry.receipt_label(&dest);
            let refused = up.refused.iter().find(|r| r.destination == label);
            DestinationStatus {
                retired: up
                    .retired
                    .iter()
                    .filter(|r| r.destination == destination)
                    .map(|r| (r.product.clone(), r.dropped))
                    .collect(),
                destination,
                auth,
                products,
                pending_batches: stats
                    .uploadable_by_destination
                    .get(&dest)
                    .copied()
                    .unwrap_or(0),
                uploaded_events: d.uploaded_events,
                uploaded_bytes: d.uploaded_bytes,
                already_there: d.already_there,
                last_upload_us: d.last_upload_us,
                last_error: d.last_error,
                next_attempt_us: d.next_attempt_us,
                consecutive_failures: d.consecutive_failures,
                uploads: d.uploads,
                refused_events: refused.map_or(0, |r| r.events),
                refused_why: refused.map(|r| r.why.clone()),
            }
        })
        .collect()
}

/// The store's counters and the uploader's progress, as of now (shared
/// with `probe`); the error is the reply to send.
pub(crate) async fn snapshot(ctx: &Ctx) -> Result<(Stats, UploadState), Response> {
    crate::cmd::consent::reconcile_changed(ctx, crate::cmd::consent::Wait::IfFree).await;
    let stats = ctx.store.stats().await.map_err(|e| Response::Error {
        code: ErrorCode::Storage,
        message: e.to_string(),
    })?;
    let up = ctx
        .uploader
        .state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok((stats, up))
}

/// Handle `Status`. Anyone who may connect may ask; a refusal's latest
/// event and message are only for a `trusted` peer (the daemon's user or
/// root): on a machine-wide daemon they may be another account's, and a
/// key's name is a client's choice.
pub async fn handle(ctx: &Ctx, trusted: bool) -> Response {
    let (stats, up) = match snapshot(ctx).await {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    let destinations = destinations(ctx, &stats, &up);
    Response::Status(Box::new(StatusReport {
        daemon_version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: ctx.started.elapsed().as_secs(),
        destination: ctx.destination.clone(),
        pending_events: stats.pending_events,
        pending_bytes: stats.pending_bytes,
        sealed_batches: stats.sealed_batches,
        uploaded_events: up.uploaded_events,
        last_upload_us: up.last_upload_us,
        last_upload_key: up.last_key,
        last_error: up.last_error,
        next_attempt_us: up.next_attempt_us,
        consecutive_failures: up.consecutive_failures,
        local_events: stats.local_events,
        consent: consent_of_known_products(ctx).await,
        consent_file: ctx.consent.user_path().display().to_string(),
        incidents: ctx.incidents.clone(),
        dropped: stats.dropped.clone(),
        refusals: ctx.refusals.snapshot(trusted),
        next_upload_us: next_upload_us(ctx, &stats, up.next_attempt_us),
        destinations,
        counters: ctx
            .counters
            .snapshot(stats.store_full_drops, &stats.local_full_drops),
    }))
}

/// When the next upload is due without anyone asking: the uploader's
/// schedule, or sooner when this daemon exits idle first, since it uploads
/// what may go before it goes (an autostarted one after 5 minutes without
/// a client: an hour's interval otherwise showed a time long after the
/// events had left). This request restarts that clock, so with no other
/// client it goes `idle_exit` from now. Work that waits for a destination
/// in backoff is kept for the next start instead: the retry time stands.
fn next_upload_us(ctx: &Ctx, stats: &Stats, retry_at_us: Option<i64>) -> Option<i64> {
    let due = ctx.uploader.next_upload_us(stats, retry_at_us)?;
    // This request's own connection counts; another one keeps it up.
    let others = ctx.activity.open() > 1;
    match ctx.idle_exit {
        Some(idle) if retry_at_us.is_none() && !others => {
            let exit = crate::config::now_us(&ctx.clock).saturating_add(idle.as_micros() as i64);
            Some(due.min(exit))
        }
        _ => Some(due),
    }
}
