//! `Status`: counters from the store and the uploader, all O(1).

use crate::server::Ctx;
use telemetry_proto::{ErrorCode, ProductConsent, Response, StatusReport};

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

/// Handle `Status`.
pub async fn handle(ctx: &Ctx) -> Response {
    let stats = match ctx.store.stats().await {
        Ok(s) => s,
        Err(e) => {
            return Response::Error {
                code: ErrorCode::Storage,
                message: e.to_string(),
            }
        }
    };
    let up = ctx
        .uploader
        .state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
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
        refusals: ctx.refusals.snapshot(),
        next_upload_us: ctx.uploader.next_upload_us(&stats, up.next_attempt_us),
    }))
}
