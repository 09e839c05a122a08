//! `ConsentChanged`: apply the user's consent file for one product now.

use crate::record;
use crate::server::Ctx;
use crate::store::{ConsentOutcome, Decision, StoreError};
use std::collections::BTreeMap;
use telemetry_proto::{ConsentReport, ErrorCode, ProductConsent, Response, WireEvent};
use telemetry_sink::manifest::TELEMETRY_OFF;

/// Bring the store in line with the user's decision for `product` if it
/// changed since the store last acted on it. `build` goes into the final
/// `telemetry_off` event when one is recorded.
///
/// Serialized by a lock, and waits for an upload in flight to finish, so a
/// purge never races a batch that is on its way out.
pub async fn reconcile(
    ctx: &Ctx,
    product: &str,
    build: &str,
) -> Result<ConsentOutcome, StoreError> {
    let current = || {
        let (mode, off_marker) = ctx.consent.user_decision(product);
        Decision { mode, off_marker }
    };
    let known = |ctx: &Ctx| {
        ctx.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(product)
            .cloned()
    };
    if known(ctx) == Some(current()) {
        return Ok(ConsentOutcome::default());
    }
    let _serial = ctx.reconcile_lock.lock().await;
    let _no_upload = ctx.uploader.upload_lock.lock().await;
    // Read again under the lock: another reconcile may have done it.
    let decision = current();
    if known(ctx) == Some(decision.clone()) {
        return Ok(ConsentOutcome::default());
    }
    let off_event = WireEvent {
        id: uuid::Uuid::now_v7(),
        event: TELEMETRY_OFF.to_string(),
        product: product.to_string(),
        build: build.to_string(),
        timestamp_us: crate::config::now_us(&ctx.clock),
        data: BTreeMap::new(),
    };
    let machine = ctx.identity.machine_id(product);
    let rec = record::render(
        &off_event,
        &machine,
        std::env::consts::OS,
        std::env::consts::ARCH,
    );
    let previous = known(ctx);
    let out = ctx
        .store
        .apply_consent(product, decision.clone(), rec)
        .await?;
    ctx.applied
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(product.to_string(), decision.clone());
    // Every change is logged, `on` included (it changes nothing stored, so
    // the outcome alone would not show it).
    tracing::info!(
        product,
        mode = %decision.mode,
        previous = %previous.map_or("none".to_string(), |d| d.mode.to_string()),
        purged = out.purged,
        made_local = out.made_local,
        final_event = out.final_event,
        "applied consent change"
    );
    Ok(out)
}

/// Handle `ConsentChanged { product, build }`.
pub async fn handle(ctx: &Ctx, product: String, build: String) -> Response {
    let limits = telemetry_proto::Limits::default();
    if let Err(e) = telemetry_proto::validate_name("product", &product, &limits) {
        return Response::Error {
            code: ErrorCode::Invalid,
            message: e.to_string(),
        };
    }
    // A build we cannot vouch for is recorded as unknown, not refused:
    // turning telemetry off must always work.
    let build_ok = !build.is_empty()
        && build.len() <= limits.max_build_len
        && build
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    let build = if build_ok { build.as_str() } else { "unknown" };
    match reconcile(ctx, &product, build).await {
        Ok(out) => {
            if out.final_event {
                ctx.uploader.nudge();
            }
            let (mode, layer) = ctx.consent.resolve(&product);
            Response::ConsentApplied(ConsentReport {
                consent: ProductConsent {
                    product,
                    mode,
                    layer,
                },
                purged: out.purged,
                final_event: out.final_event,
                file: ctx.consent.user_path().display().to_string(),
            })
        }
        Err(e) => Response::Error {
            code: ErrorCode::Storage,
            message: e.to_string(),
        },
    }
}
