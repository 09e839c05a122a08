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
        Ok(None) => Response::Error {
            code: ErrorCode::Invalid,
            message: "no receipt has that key (receipts are kept for the last uploads only; `telemetryctl receipts` lists them)".into(),
        },
        Err(e) => Response::Error {
            code: ErrorCode::Storage,
            message: e.to_string(),
        },
    }
}
