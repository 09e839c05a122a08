//! One handler per request. Each takes the shared [`Ctx`](crate::server::Ctx)
//! and returns the response to send; none of them can fail the connection.

pub mod emit;
pub mod flush;
pub mod status;

use crate::server::Ctx;
use telemetry_proto::{Request, Response};

/// Route a decoded request to its handler.
pub async fn dispatch(ctx: &Ctx, req: Request) -> Response {
    match req {
        Request::Emit { events, ack } => emit::handle(ctx, events, ack).await,
        Request::Status => status::handle(ctx).await,
        Request::Flush => flush::handle(ctx).await,
    }
}
