//! `ConsentChanged`: apply the user's consent file for one product now;
//! and what a product's consent covers.
//!
//! # Consent bound to the catalogue version
//! A decision is given for a manifest version (`version=N` in the consent
//! file). The first time the daemon needs it, it records the events of
//! that version's manifest in the store, each with its fields (after an
//! upgrade the old manifest is gone). With `on`, only those events are
//! uploaded, and only while each still has no field the user was not shown
//! (see [`covers`]); events a newer version adds, or extends with a field,
//! a field of another type or a longer string, are stored as in `local`
//! (kept here, never uploaded) until the user decides again for the newer
//! version. (A set recorded by a daemon before fields were recorded holds
//! names only, and covers its events whatever their fields.) A decision without
//! a version is bound to the catalogue the daemon had when it first acted
//! on that decision. Consent for a version this daemon never saw (and so
//! has no event set for) uploads nothing until the user decides again.

use crate::catalog::{Lookup, Manifest};
use crate::consent::ConsentView;
use crate::record;
use crate::server::Ctx;
use crate::store::{Announce, ConsentOutcome, Decision, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use telemetry_proto::{ConsentReport, ErrorCode, Mode, ProductConsent, Response, WireEvent};
use telemetry_sink::manifest::FieldType;
use telemetry_sink::manifest::TELEMETRY_OFF;

/// The events of `manifest`'s product that the user's decision allows to
/// be uploaded (see the module docs); recorded in the store the first time.
pub async fn consented_events(
    ctx: &Ctx,
    manifest: &Arc<Manifest>,
) -> Result<Arc<BTreeSet<String>>, StoreError> {
    consented_events_in(ctx, &ctx.consent.view(), manifest).await
}

/// [`consented_events`] with the consent files as `view` saw them.
pub async fn consented_events_in(
    ctx: &Ctx,
    view: &ConsentView,
    manifest: &Arc<Manifest>,
) -> Result<Arc<BTreeSet<String>>, StoreError> {
    let product = manifest.product.as_str();
    let version = view.user_version(product);
    let key = version.unwrap_or(0);
    if let Some(set) = ctx.consent.cached_events(product, key, manifest) {
        return Ok(set);
    }
    // Only the manifest of the version consented to may define the set.
    let offer = (version.is_none() || version == Some(manifest.version)).then(|| {
        manifest
            .events
            .iter()
            .map(|(name, fields)| (name.clone(), Some(definition(fields))))
            .collect()
    });
    match ctx.store.consented_events(product, key, offer).await? {
        Some(recorded) => {
            let set = Arc::new(covered(&recorded, manifest));
            ctx.consent
                .cache_events(product, key, manifest, set.clone());
            Ok(set)
        }
        // Not cached: the manifest of that version may appear later.
        None => Ok(Arc::new(BTreeSet::new())),
    }
}

/// An event's fields as recorded with the consent: `name=kind` joined by
/// commas in name order, a string's kind with its length limit
/// (`where=string:64`). Field and event names are lowercase letters,
/// digits and `_` (the manifest checks), so the text needs no escaping.
fn definition(fields: &BTreeMap<String, FieldType>) -> String {
    let kind = |t: &FieldType| match t {
        FieldType::Enum { .. } => "enum".to_string(),
        FieldType::String { max_len } => format!("string:{max_len}"),
        FieldType::Int { .. } => "int".to_string(),
        FieldType::Bool => "bool".to_string(),
    };
    fields
        .iter()
        .map(|(name, t)| format!("{name}={}", kind(t)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether an event recorded as `consented` (a [`definition`]) covers the
/// event as `fields` now defines it: every field is one the user was shown,
/// of the same kind, and a string no longer than it was. New values of an
/// enum, other bounds of an integer and fields dropped stay covered: they
/// send no new kind of data.
fn covers(consented: &str, fields: &BTreeMap<String, FieldType>) -> bool {
    let shown: BTreeMap<&str, &str> = consented
        .split(',')
        .filter_map(|f| f.split_once('='))
        .collect();
    fields.iter().all(|(name, t)| {
        let Some(kind) = shown.get(name.as_str()) else {
            return false;
        };
        match t {
            FieldType::Enum { .. } => *kind == "enum",
            FieldType::Int { .. } => *kind == "int",
            FieldType::Bool => *kind == "bool",
            FieldType::String { max_len } => kind
                .strip_prefix("string:")
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|shown| *max_len <= shown),
        }
    })
}

/// The events of `manifest` that a recorded set covers (see
/// [`crate::store::ConsentedSet`]).
fn covered(recorded: &crate::store::ConsentedSet, manifest: &Manifest) -> BTreeSet<String> {
    recorded
        .iter()
        .filter_map(|(name, consented)| {
            let now = manifest.events.get(name)?;
            consented
                .as_deref()
                .is_none_or(|def| covers(def, now))
                .then(|| name.clone())
        })
        .collect()
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
            // A vendor's words (a key it wrote), shown to the user: on one
            // line, escapes written out.
            pc.manifest_warnings = m
                .warnings
                .iter()
                .map(|w| telemetry_sink::untrusted(w, telemetry_sink::MAX_UNTRUSTED_CHARS))
                .collect();
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

/// When [`reconcile_changed`] may wait for the locks a change takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Wait (at start, and for `flush`, which waits for uploads anyway).
    Yes,
    /// Only if no upload or other change holds them now; else the change
    /// is left to the next request that looks (`status`, `show`,
    /// `doctor`, which must answer within their clients' seconds while an
    /// upload to a slow destination may take a minute).
    IfFree,
}

/// Apply every product's changed decision: at start (made while no daemon
/// ran), and before a `status`, `doctor`, `show` or `flush` (made while
/// this daemon was not told: the file edited by hand, an older
/// `telemetryctl` it could not read). Otherwise an `off` purged and sent
/// its `telemetry_off` only at that product's next event, which its shims,
/// checking the file first, never send. Cheap when nothing changed: one
/// look at the files and a comparison per product.
pub async fn reconcile_changed(ctx: &Ctx, wait: Wait) {
    let view = ctx.consent.view();
    for product in ctx.products_with_consent_state() {
        match reconcile_waiting(ctx, &view, &product, "unknown", wait).await {
            Ok(out) if out.final_event => ctx.uploader.nudge(),
            Ok(_) => {}
            Err(e) => tracing::error!(product, error = %e, "cannot apply consent change"),
        }
    }
}

/// [`reconcile`] with the consent files as `view` saw them.
pub async fn reconcile_in(
    ctx: &Ctx,
    view: &ConsentView,
    product: &str,
    build: &str,
) -> Result<ConsentOutcome, StoreError> {
    reconcile_waiting(ctx, view, product, build, Wait::Yes).await
}

/// [`reconcile_in`], waiting for its locks or not.
async fn reconcile_waiting(
    ctx: &Ctx,
    view: &ConsentView,
    product: &str,
    build: &str,
    wait: Wait,
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
    // Never applied is undecided (nothing of it can be stored): applying
    // that would only record a product named by a slip (`forget acmee`),
    // which `status` would then list for good.
    if known(ctx).unwrap_or_default() == current() {
        return Ok(ConsentOutcome::default());
    }
    // A user file that cannot be read, or whose line for the product is
    // not understood, decides nothing (see `ConsentView::user_unreadable`,
    // `user_unclear`): what was applied stays applied. Looked at only on a
    // change: every emit passes the check above.
    if view.user_unreadable() || view.user_unclear(product) {
        return Ok(ConsentOutcome::default());
    }
    let (_serial, _no_upload) = match wait {
        Wait::Yes => (
            ctx.reconcile_lock.lock().await,
            ctx.uploader.upload_lock.lock().await,
        ),
        Wait::IfFree => match (
            ctx.reconcile_lock.try_lock(),
            ctx.uploader.upload_lock.try_lock(),
        ) {
            (Ok(serial), Ok(no_upload)) => (serial, no_upload),
            _ => return Ok(ConsentOutcome::default()),
        },
    };
    // Read the file again under the lock, not the view: the wait may have
    // been long (an upload), and the user may have decided again meanwhile
    // (another reconcile may also have applied it already).
    let now = ctx.consent.view();
    if now.user_unreadable() || now.user_unclear(product) {
        return Ok(ConsentOutcome::default());
    }
    let decision = {
        let (mode, off_marker) = now.user_decision(product);
        Decision { mode, off_marker }
    };
    if known(ctx).unwrap_or_default() == decision {
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
    let rec = record::render(
        &off_event,
        &ctx.identity.machine_id(product),
        std::env::consts::OS,
        std::env::consts::ARCH,
    );
    let announce = announce(ctx, product);
    let previous = known(ctx);
    let out = ctx
        .store
        .apply_consent(product, decision.clone(), rec, announce)
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

/// Whether a final event of `product` (an off's, a forget's marker) is
/// recorded whatever it sent before: only when a manifest here describes
/// it. For a slip of the name, or a product not installed yet, it must not
/// tell the vendor, once installed, that this machine has it; one
/// uninstalled after it sent batches is still told (the store knows which).
pub(crate) fn announce(ctx: &Ctx, product: &str) -> Announce {
    match ctx.catalogues.lookup(product) {
        Lookup::Unknown => Announce::IfKnown,
        Lookup::Ready(_) | Lookup::Broken { .. } => Announce::Installed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(events: &str) -> Manifest {
        let text = format!("product = \"p\"\n{events}");
        Manifest::parse(&text, std::path::Path::new("p.toml"), Some("p")).unwrap()
    }

    /// What version 1 defined, recorded as the daemon records it.
    fn recorded(m: &Manifest) -> crate::store::ConsentedSet {
        m.events
            .iter()
            .map(|(name, fields)| (name.clone(), Some(definition(fields))))
            .collect()
    }

    #[test]
    fn an_event_given_a_field_the_user_was_not_shown_is_no_longer_consented_to() {
        let v1 = manifest(
            "[events.ran]\ndata.cmd = { type = \"enum\", values = [\"a\"] }\n\
             data.n = { type = \"int\" }\n\
             data.tag = { type = \"string\", max_len = 16 }\n\
             [events.walked]\n[events.gone]\n",
        );
        let set1 = recorded(&v1);
        let defs: Vec<(&str, &str)> = set1
            .iter()
            .map(|(n, f)| (n.as_str(), f.as_deref().unwrap()))
            .collect();
        assert_eq!(
            defs,
            [
                ("gone", ""),
                ("ran", "cmd=enum,n=int,tag=string:16"),
                ("walked", "")
            ]
        );
        let set = |m: &Manifest| covered(&set1, m).into_iter().collect::<Vec<_>>();
        assert_eq!(set(&v1), ["gone", "ran", "walked"]);
        // Same kinds of data: a new enum value, other integer bounds, a
        // shorter string, a field dropped; `gone` is gone; `new` is new.
        let same = manifest(
            "[events.ran]\ndata.cmd = { type = \"enum\", values = [\"a\", \"b\"] }\n\
             data.n = { type = \"int\", min = 0, max = 9 }\n\
             data.tag = { type = \"string\", max_len = 8 }\n\
             [events.walked]\n[events.new]\n",
        );
        assert_eq!(set(&same), ["ran", "walked"]);
        // New kinds of data: a field added, a field retyped, a longer
        // string. Only the event that changed is left out.
        for (changed, expect, why) in [
            (
                "[events.ran]\ndata.cmd = { type = \"enum\", values = [\"a\"] }\n\
                 [events.walked]\ndata.where = { type = \"string\" }\n",
                "ran",
                "a field added",
            ),
            (
                "[events.ran]\ndata.cmd = { type = \"string\" }\n[events.walked]\n",
                "walked",
                "an enum made free text",
            ),
            (
                "[events.ran]\ndata.n = { type = \"bool\" }\n[events.walked]\n",
                "walked",
                "an integer made a boolean",
            ),
            (
                "[events.ran]\ndata.tag = { type = \"string\", max_len = 17 }\n[events.walked]\n",
                "walked",
                "a longer string",
            ),
        ] {
            assert_eq!(set(&manifest(changed)), [expect], "{why}");
        }
        // A set recorded before fields were: names only, any fields.
        let old: crate::store::ConsentedSet = vec![("ran".into(), None), ("walked".into(), None)];
        let changed = manifest("[events.ran]\ndata.x = { type = \"bool\" }\n[events.walked]\n");
        assert_eq!(covered(&old, &changed).len(), 2);
    }
}
