//! `Show`: the stored events, exactly as they will be uploaded.

use crate::server::Ctx;
use telemetry_proto::{ErrorCode, Response};

/// Handle `Show { product, after_seq }`: one page.
pub async fn handle(ctx: &Ctx, product: Option<String>, after_seq: i64) -> Response {
    if after_seq == 0 {
        // Its first page shows what the files decide now (later pages
        // continue that one).
        crate::cmd::consent::reconcile_changed(ctx, crate::cmd::consent::Wait::IfFree).await;
    }
    match ctx.store.show(product, after_seq).await {
        Ok(page) => Response::Events(page),
        Err(e) => Response::Error {
            code: ErrorCode::Storage,
            message: e.to_string(),
        },
    }
}
