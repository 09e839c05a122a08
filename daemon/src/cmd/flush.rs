//! `Flush`: seal everything and upload now, to every destination at once;
//! one that fails is reported by name and does not stop the others.

use crate::server::Ctx;
use crate::uploader::CycleError;
use telemetry_proto::{ErrorCode, Response};

/// Handle `Flush`: waits for the upload and reports the keys written.
pub async fn handle(ctx: &Ctx) -> Response {
    crate::cmd::consent::reconcile_changed(ctx, crate::cmd::consent::Wait::Yes).await;
    match ctx.uploader.flush().await {
        Ok(report) => Response::Flushed(report),
        Err(e) => {
            let code = match e.error {
                CycleError::Store(_) => ErrorCode::Storage,
                CycleError::Upload(_) | CycleError::Destinations(_) => ErrorCode::Upload,
                CycleError::ShuttingDown => ErrorCode::ShuttingDown,
            };
            Response::Error {
                code,
                message: format!("{e}; the events stay queued and will be retried"),
            }
        }
    }
}
