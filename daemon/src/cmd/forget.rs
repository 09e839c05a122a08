//! `Forget`: the user asked for a product's data to be forgotten. Its
//! stored events go; when it is `on`, a `telemetry_forget` marker goes out
//! under the current anonymous ID, telling the vendor to delete every
//! event of that ID (the report leaves them out); then the product gets a
//! new ID, unlinkable to the old one. With `local` or `off`, or for a
//! product its vendor retired, nothing is ever sent, so the old ID is only
//! returned, for the user to pass on by other means.

use crate::identity::Identity;
use crate::record;
use crate::server::Ctx;
use std::collections::BTreeMap;
use telemetry_proto::{ErrorCode, ForgetReport, Mode, Response, WireEvent};

/// Longest `forget` waits for the marker's upload before answering.
const MARKER_UPLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The event name of the marker.
pub use telemetry_sink::manifest::TELEMETRY_FORGET;

/// Handle `Forget { product, build }`.
pub async fn handle(ctx: &Ctx, product: String, build: String) -> Response {
    let build = match crate::cmd::consent::product_and_build(&product, &build) {
        Ok(b) => b,
        Err(reply) => return *reply,
    };
    // What shims spooled is the product's local data too: taken in first,
    // so that it is deleted with the rest (and anything spooled later was
    // made before the new ID exists: refused, see `emit::prepare`).
    crate::spool::ingest_all(ctx, crate::spool::INTAKE_WAIT).await;
    // The mode the store acts on must be the user's current one.
    if let Err(e) = crate::cmd::consent::reconcile(ctx, &product, build).await {
        return storage(e);
    }
    let (report, marker) = {
        // No line rendered with the old ID is stored after the switch.
        let _ids = ctx.id_lock.write().await;
        let _serial = ctx.reconcile_lock.lock().await;
        // No batch of this product is on its way out while it is deleted.
        let _no_upload = ctx.uploader.upload_lock.lock().await;
        let (mode, _) = ctx.consent.resolve(&product);
        // A product its vendor retired uploads nothing, not even this.
        let retired = ctx.uploader.is_retired(&product);
        let old = ctx.identity.machine_id(&product);
        let marker = (mode == Mode::On && !retired).then(|| {
            let ev = WireEvent {
                id: uuid::Uuid::now_v7(),
                event: TELEMETRY_FORGET.to_string(),
                product: product.clone(),
                build: build.to_string(),
                timestamp_us: crate::config::now_us(&ctx.clock),
                data: BTreeMap::new(),
            };
            record::render(&ev, &old, std::env::consts::OS, std::env::consts::ARCH)
        });
        // As for an off (a slip of the name sends nothing).
        let announce = crate::cmd::consent::announce(ctx, &product);
        let salt = Identity::new_salt();
        let out = match ctx
            .store
            .forget(product.clone(), marker, announce, salt.clone())
            .await
        {
            Ok(out) => out,
            Err(e) => return storage(e),
        };
        // After the commit: the marker's line and key carry the old ID,
        // everything from now on the new one.
        ctx.identity.set_salt(&product, salt, out.since_us);
        tracing::info!(
            product,
            purged = out.purged,
            marker = out.marker,
            "forgot the product's data and switched it to a new anonymous ID"
        );
        let report = ForgetReport {
            product: product.clone(),
            purged: out.purged,
            marker: out.marker,
            marker_key: None,
            new_machine: ctx.identity.machine_id(&product),
            old_machine: old,
        };
        (report, out.marker)
    };
    let mut report = report;
    if marker {
        // Send it now; if that fails it goes with the next upload.
        // Bounded: the user gets the answer (and the old ID) even when a
        // destination hangs; the marker then goes with a later upload.
        match tokio::time::timeout(MARKER_UPLOAD_WAIT, ctx.uploader.flush()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(product, error = %e, "the forget marker waits for the next upload")
            }
            Err(_) => tracing::warn!(
                product,
                "the upload did not finish in time; the forget marker goes with it or the next one"
            ),
        }
        // Its key is read from its receipt, not from the flush's report:
        // an upload cycle that was already starting when the forget
        // committed may have sent the marker before the flush ran (and a
        // flush that failed elsewhere may have sent it all the same). The
        // forget deleted the product's receipts, so the only one under
        // the old ID is the marker's.
        let machine8 = report.old_machine[..8].to_string();
        match ctx.store.receipt_key_with(product.clone(), machine8).await {
            Ok(key) => report.marker_key = key,
            Err(e) => {
                tracing::warn!(product, error = %e, "cannot read the forget marker's receipt")
            }
        }
    }
    Response::Forgotten(Box::new(report))
}

fn storage(e: crate::store::StoreError) -> Response {
    Response::Error {
        code: ErrorCode::Storage,
        message: e.to_string(),
    }
}
