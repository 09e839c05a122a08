//! `Emit`: validate, render and store events.

use crate::record;
use crate::server::Ctx;
use telemetry_proto::{validate_event, ErrorCode, Response, WireEvent};

/// Handle `Emit { events, ack }`.
///
/// All events are validated before any is stored, so a request is stored
/// whole or not at all.
pub async fn handle(ctx: &Ctx, events: Vec<WireEvent>, ack: bool) -> Response {
    if let Err(e) = ctx.limits.check_batch_len(events.len()) {
        return invalid(e.to_string());
    }
    for (i, ev) in events.iter().enumerate() {
        if let Err(e) = validate_event(ev, &ctx.limits) {
            return invalid(format!("event #{i} ({:?}): {e}", ev.event));
        }
    }
    let records: Vec<_> = events
        .iter()
        .map(|ev| {
            let machine = ctx.identity.machine_id(&ev.product);
            record::render(ev, &machine, std::env::consts::OS, std::env::consts::ARCH)
        })
        .collect();
    let n = records.len() as u32;
    if !ack {
        return match ctx.store.insert_no_wait(records).await {
            Ok(()) => {
                // Without the commit result we cannot know whether a batch
                // filled up; let the uploader look.
                ctx.uploader.nudge();
                Response::Queued { accepted: n }
            }
            Err(e) => storage(e),
        };
    }
    match ctx.store.insert(records).await {
        Ok(out) => {
            if out.wake_uploader {
                ctx.uploader.nudge();
            }
            Response::Ack {
                accepted: out.accepted,
                duplicates: out.duplicates,
            }
        }
        Err(e) => storage(e),
    }
}

fn invalid(message: String) -> Response {
    Response::Error {
        code: ErrorCode::Invalid,
        message,
    }
}

fn storage(e: crate::store::StoreError) -> Response {
    Response::Error {
        code: ErrorCode::Storage,
        message: format!("{e}; the events were not stored"),
    }
}
