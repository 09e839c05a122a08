//! `Stop`: shut down as on SIGTERM (`telemetryctl stop`), for a daemon no
//! service manager runs: one a CLI started (autostart), or one started by
//! hand. Uninstalling a CLI, or replacing a `telemetryd` that Windows keeps
//! locked while it runs, needs it gone without waiting for its idle exit.

use crate::server::Ctx;
use telemetry_proto::{ErrorCode, Response};

/// Answer, then let the accept loop shut down (the answer is written before
/// the connections are told to finish).
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
