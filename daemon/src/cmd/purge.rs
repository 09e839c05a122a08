//! `Purge`: delete stored events that are not uploaded yet.

use crate::server::Ctx;
use telemetry_proto::{ErrorCode, Response};

/// Handle `Purge { product }`.
pub async fn handle(ctx: &Ctx, product: Option<String>) -> Response {
    // What shims spooled is stored data too: taken in first, so that it is
    // purged with the rest rather than stored (and uploaded) after it.
    crate::spool::ingest_all(ctx, crate::spool::INTAKE_WAIT).await;
    // Not while a batch is on its way out: the count must be true.
    let _no_upload = ctx.uploader.upload_lock.lock().await;
    match ctx.store.purge(product.clone()).await {
        Ok(events) => {
            tracing::info!(
                product = product.as_deref().unwrap_or("*"),
                events,
                "purged"
            );
            Response::Purged { events }
        }
        Err(e) => Response::Error {
            code: ErrorCode::Storage,
            message: e.to_string(),
        },
    }
}
