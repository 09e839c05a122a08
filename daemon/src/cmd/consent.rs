//! `ConsentChanged`: apply the user's consent file for one product now;
//! and what a product's consent covers.
//!
//! # Consent bound to the catalogue version
//! A decision is given for a manifest version (`version=N` in the consent
//! file). The first time the daemon needs it, it records the event names
//! of that version's manifest in the store (after an upgrade the old
//! manifest is gone). With `on`, only those events are uploaded; events a
//! newer version adds are stored as in `local` (kept here, never uploaded)
//! until the user decides again for the newer version. A decision without
//! a version is bound to the catalogue the daemon had when it first acted
//! on that decision. Consent for a version this daemon never saw (and so
//! has no event set for) uploads nothing until the user decides again.

use crate::catalog::{Lookup, Manifest};
use crate::consent::ConsentView;
use crate::record;
use crate::server::Ctx;
use crate::store::{ConsentOutcome, Decision, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use telemetry_proto::{ConsentReport, ErrorCode, Mode, ProductConsent, Response, WireEvent};
use telemetry_sink::manifest::TELEMETRY_OFF;

/// The events of `manifest`'s product that the user's decision allows to
/// be uploaded (see the module docs); recorded in the store the first time.
pub async fn consented_events(
    ctx: &Ctx,
    manifest: &Manifest,
) -> Result<Arc<BTreeSet<String>>, StoreError> {
    consented_events_in(ctx, &ctx.consent.view(), manifest).await
}

/// [`consented_events`] with the consent files as `view` saw them.
pub async fn consented_events_in(
    ctx: &Ctx,
    view: &ConsentView,
    manifest: &Manifest,
) -> Result<Arc<BTreeSet<String>>, StoreError> {
    let product = manifest.product.as_str();
    let version = view.user_version(product);
    let key = version.unwrap_or(0);
    if let Some(set) = ctx.consent.cached_events(product, key) {
        return Ok(set);
    }
    // Only the manifest of the version consented to may define the set.
    let offer = (version.is_none() || version == Some(manifest.version))
        .then(|| manifest.events.keys().cloned().collect());
    match ctx.store.consented_events(product, key, offer).await? {
        Some(events) => {
            let set = Arc::new(events.into_iter().collect::<BTreeSet<_>>());
            ctx.consent.cache_events(product, key, set.clone());
            Ok(set)
        }
        // Not cached: the manifest of that version may appear later.
        None => Ok(Arc::new(BTreeSet::new())),
    }
}

/// `product`'s consent as the daemon sees it, with its manifest: where it
/// is, whether it is usable, its version, the version consented to and,
/// for `on`, the events not yet consented to.
pub async fn product_consent(ctx: &Ctx, product: String) -> ProductConsent {
    let (mode, layer) = ctx.consent.resolve(&product);
    let mut pc = ProductConsent::new(product, mode, layer);
    pc.consented_version = ctx.consent.user_version(&pc.product).unwrap_or(0);
    match ctx.catalogues.lookup(&pc.product) {
        Lookup::Ready(m) => {
            pc.manifest = m.source_name.clone();
            pc.version = m.version;
            // With `local` everything stays here anyway; new events matter
            // only for what `on` uploads.
            if ctx.consent.user_decision(&pc.product).0 == Mode::On {
                match consented_events(ctx, &m).await {
                    Ok(set) => {
                        pc.new_events = m
                            .events
                            .keys()
                            .filter(|e| !set.contains(*e))
                            .cloned()
                            .collect()
                    }
                    Err(e) => {
                        tracing::warn!(product = %pc.product, error = %e, "cannot read the consented event set")
                    }
                }
            }
        }
        Lookup::Broken { source, error } => {
            pc.manifest = source;
            pc.manifest_error = Some(error);
        }
        Lookup::Unknown => {}
    }
    pc
}

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
    reconcile_in(ctx, &ctx.consent.view(), product, build).await
}

/// [`reconcile`] with the consent files as `view` saw them.
pub async fn reconcile_in(
    ctx: &Ctx,
    view: &ConsentView,
    product: &str,
    build: &str,
) -> Result<ConsentOutcome, StoreError> {
    let current = || {
        let (mode, off_marker) = view.user_decision(product);
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
    // Read the file again under the lock, not the view: the wait may have
    // been long (an upload), and the user may have decided again meanwhile
    // (another reconcile may also have applied it already).
    let decision = {
        let (mode, off_marker) = ctx.consent.user_decision(product);
        Decision { mode, off_marker }
    };
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
    // The store forgot the set of a decision without a version.
    ctx.consent.forget_unversioned(product);
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

/// `build`, or `unknown` when it is not a valid build: a build we cannot
/// vouch for is recorded as unknown, not refused, as turning telemetry off
/// (or forgetting) must always work.
pub fn build_or_unknown<'a>(build: &'a str, limits: &telemetry_proto::Limits) -> &'a str {
    let ok = !build.is_empty()
        && build.len() <= limits.max_build_len
        && build
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if ok {
        build
    } else {
        "unknown"
    }
}

/// A request's product name, checked, and its build (or `unknown`); the
/// error is the reply to send (boxed: a `Response` is large).
pub fn product_and_build<'a>(product: &str, build: &'a str) -> Result<&'a str, Box<Response>> {
    let limits = telemetry_proto::Limits::default();
    telemetry_proto::validate_name("product", product, &limits).map_err(|e| {
        Box::new(Response::Error {
            code: ErrorCode::Invalid,
            message: e.to_string(),
        })
    })?;
    Ok(build_or_unknown(build, &limits))
}

/// Handle `ConsentChanged { product, build }`.
pub async fn handle(ctx: &Ctx, product: String, build: String) -> Response {
    let build = match product_and_build(&product, &build) {
        Ok(b) => b,
        Err(reply) => return *reply,
    };
    match reconcile(ctx, &product, build).await {
        Ok(out) => {
            if out.final_event {
                ctx.uploader.nudge();
            }
            Response::ConsentApplied(ConsentReport {
                consent: product_consent(ctx, product).await,
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
