//! `ConsentChanged`: apply the user's consent file for one product now.

use crate::catalog::TELEMETRY_OFF;
use crate::record;
use crate::server::Ctx;
use crate::store::{ConsentOutcome, StoreError};
use std::collections::BTreeMap;
use telemetry_proto::{ConsentReport, ErrorCode, ProductConsent, Response, WireEvent};

/// Bring the store in line with the user's decision for `product` if it
/// changed since the store last acted on it. `build` goes into the final
/// `telemetry_off` event when one is recorded.
pub async fn reconcile(
    ctx: &Ctx,
    product: &str,
    build: &str,
) -> Result<ConsentOutcome, StoreError> {
    let decision = ctx.consent.user_decision(product);
    let known = ctx
        .applied
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(product)
        .copied();
    if known == Some(decision) {
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
    let out = ctx.store.apply_consent(product, decision, rec).await?;
    ctx.applied
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(product.to_string(), decision);
    if out.purged > 0 || out.final_event || out.made_local > 0 {
        tracing::info!(
            product,
            mode = %decision,
            purged = out.purged,
            made_local = out.made_local,
            final_event = out.final_event,
            "applied consent change"
        );
    }
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
            })
        }
        Err(e) => Response::Error {
            code: ErrorCode::Storage,
            message: e.to_string(),
        },
    }
}
