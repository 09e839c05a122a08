//! `Emit`: validate, render and store events.

use crate::cmd::{consent, Peer};
use crate::record;
use crate::server::Ctx;
use std::collections::BTreeMap;
use telemetry_proto::{validate_event, ErrorCode, Mode, Response, WireEvent};

/// Handle `Emit { events, ack }`.
///
/// All events are validated (shape, catalogue, consent) before any is
/// stored, so a request is stored whole or not at all.
pub async fn handle(ctx: &Ctx, peer: Peer, events: Vec<WireEvent>, ack: bool) -> Response {
    let records = match prepare(ctx, &events).await {
        Ok(r) => r,
        Err(reply) => return reply,
    };
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
    // Only a connection that has sent before is likely to send again (a
    // shim connects, emits once and leaves): only then may commits wait
    // for it.
    let stored = if peer.earlier_requests > 0 {
        ctx.store.insert_from(peer.connection, records).await
    } else {
        ctx.store.insert(records).await
    };
    match stored {
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

/// Validate `events` (shape, catalogue, consent) and render them for the
/// store; the error is the reply to send. Shared with spool ingestion.
pub async fn prepare(
    ctx: &Ctx,
    events: &[WireEvent],
) -> Result<Vec<crate::record::Record>, Response> {
    if let Err(e) = ctx.limits.check_batch_len(events.len()) {
        return Err(invalid(e.to_string()));
    }
    for (i, ev) in events.iter().enumerate() {
        if let Err(e) = validate_event(ev, &ctx.limits) {
            return Err(invalid(format!("event #{i} ({:?}): {e}", ev.event)));
        }
        if let Err(e) = ctx.catalogues.check(ev) {
            return Err(Response::Error {
                code: ErrorCode::NotInCatalogue,
                message: format!("event #{i}: {e}"),
            });
        }
    }
    // Consent, per product in the request: apply a changed decision first
    // (an `off` purges before anything new could be stored), then refuse
    // `off` products and mark `local` ones.
    let mut modes: BTreeMap<&str, Mode> = BTreeMap::new();
    for ev in events {
        if modes.contains_key(ev.product.as_str()) {
            continue;
        }
        if let Err(e) = consent::reconcile(ctx, &ev.product, &ev.build).await {
            return Err(storage(e));
        }
        let (mode, layer) = ctx.consent.resolve(&ev.product);
        if mode == Mode::Off {
            return Err(Response::Error {
                code: ErrorCode::ConsentOff,
                message: format!(
                    "telemetry for {:?} is off (decided by the {}); nothing was recorded. Turn it on with `telemetryctl consent {} on`",
                    ev.product,
                    layer.as_str(),
                    ev.product
                ),
            });
        }
        modes.insert(&ev.product, mode);
    }
    Ok(events
        .iter()
        .map(|ev| {
            let machine = ctx.identity.machine_id(&ev.product);
            let mut rec =
                record::render(ev, &machine, std::env::consts::OS, std::env::consts::ARCH);
            rec.local_only = modes.get(ev.product.as_str()) == Some(&Mode::Local);
            rec
        })
        .collect())
}

fn invalid(message: String) -> Response {
    Response::Error {
        code: ErrorCode::Invalid,
        message,
    }
}

/// The reply for a store failure.
pub fn storage(e: crate::store::StoreError) -> Response {
    if let crate::store::StoreError::ConsentChanged { .. } = e {
        return Response::Error {
            code: ErrorCode::ConsentOff,
            message: e.to_string(),
        };
    }
    Response::Error {
        code: ErrorCode::Storage,
        message: format!("{e}; the events were not stored"),
    }
}
