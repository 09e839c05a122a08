//! `Stop`: shut down as on SIGTERM (`telemetryctl stop`), for a daemon no
//! service manager runs: one a CLI started (autostart), or one started by
//! hand. Uninstalling a CLI, or replacing a `telemetryd` that Windows keeps
//! locked while it runs, needs it gone without waiting for its idle exit.

use crate::server::Ctx;
use telemetry_proto::{ErrorCode, Response};

/// Ask the accept loop to shut down, and answer. The loop may tell the
/// connections to finish before this answer is queued; it still goes out,
/// as a connection writes every answer queued before it closes.
pub fn handle(ctx: &Ctx) -> Response {
    if let Some(how) = &ctx.supervisor {
        return Response::Error {
            code: ErrorCode::Supervised,
            message: format!(
                "not stopped: {how} (stopped here, it would be started again at the next connection)"
            ),
        };
    }
    ctx.stop.notify_one();
    Response::Stopping {
        pid: std::process::id(),
    }
}
