//! `Receipts`: what this machine uploaded (key, destination, SHA-256, size,
//! events, time), kept by the store; with a key, that batch's lines while
//! its body is kept.

use crate::server::Ctx;
use telemetry_proto::{ErrorCode, Response};

/// Handle `Receipts { key, after }`.
pub async fn handle(ctx: &Ctx, key: Option<String>, after: u64) -> Response {
    let page = match key {
        None => ctx.store.receipts(after).await.map(Some),
        Some(key) => ctx.store.receipt_lines(key.clone(), after).await,
    };
    match page {
        Ok(Some(page)) => Response::Receipts(page),
        // No receipt has that key: an empty page, not an error (the request
        // was valid; `telemetryctl show --receipt` says `not_found`).
        Ok(None) => Response::Receipts(telemetry_proto::ReceiptsPage {
            receipts: Vec::new(),
            lines: Vec::new(),
            next_after: None,
            max_receipts: crate::store::MAX_RECEIPTS,
        }),
        Err(e) => Response::Error {
            code: ErrorCode::Storage,
            message: e.to_string(),
        },
    }
}
