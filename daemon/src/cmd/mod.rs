//! One handler per request. Each takes the shared [`Ctx`](crate::server::Ctx)
//! and returns the response to send; none of them can fail the connection.

pub mod consent;
pub mod emit;
pub mod flush;
pub mod purge;
pub mod show;
pub mod status;

use crate::server::Ctx;
use telemetry_proto::{Request, Response};

/// Route a decoded request to its handler.
pub async fn dispatch(ctx: &Ctx, req: Request) -> Response {
    match req {
        Request::Emit { events, ack } => emit::handle(ctx, events, ack).await,
        Request::Status => status::handle(ctx).await,
        Request::Flush => flush::handle(ctx).await,
        Request::ConsentChanged { product, build } => consent::handle(ctx, product, build).await,
        Request::Show { product, after_seq } => show::handle(ctx, product, after_seq).await,
        Request::Purge { product } => purge::handle(ctx, product).await,
    }
}
