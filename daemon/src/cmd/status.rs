//! `Status`: counters from the store and the uploader, all O(1).

use crate::server::Ctx;
use telemetry_proto::{ErrorCode, ProductConsent, Response, StatusReport};

/// Every product the daemon knows (catalogued, named in a consent file, or
/// acted on before), with its effective consent and the deciding layer.
fn consent_of_known_products(ctx: &Ctx) -> Vec<ProductConsent> {
    let mut products: Vec<String> = ctx.catalogues.products().map(str::to_string).collect();
    products.extend(ctx.products_with_consent_state());
    products.sort();
    products.dedup();
    products
        .into_iter()
        .map(|product| {
            let (mode, layer) = ctx.consent.resolve(&product);
            ProductConsent {
                product,
                mode,
                layer,
            }
        })
        .collect()
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
        consent: consent_of_known_products(ctx),
        consent_file: ctx.consent.user_path().display().to_string(),
        incidents: ctx.incidents.clone(),
        dropped: stats.dropped.clone(),
        refusals: ctx.refusals.snapshot(),
        next_upload_us: ctx.uploader.next_upload_us(&stats, up.next_attempt_us),
    }))
}
