//! `telemetryctl status [--json]`.

use super::{bytes, count, print_json, when};
use crate::Failure;
use std::path::Path;
use std::time::Duration;
use telemetry_client::Client;

/// Flags of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the status as JSON: the serde form of telemetry-proto's
    /// StatusReport (times in µs since the epoch).
    #[arg(long)]
    pub json: bool,
}

/// Run `status`.
pub fn run(socket: &Path, args: &Args) -> Result<(), Failure> {
    let s = match Client::connect(socket).and_then(|mut c| c.status(Duration::from_secs(5))) {
        Ok(s) => s,
        // Still an error (exit 1, code `unreachable`) for a script asking
        // whether one runs; said as what it is.
        Err(e) => {
            let why = super::no_daemon_needed(&e);
            let mut f = Failure::from(e);
            if let Some(why) = why {
                f.message = why;
            }
            return Err(f);
        }
    };
    if args.json {
        return print_json(&s);
    }
    outln!(
        "telemetryd {} (up {})",
        s.daemon_version,
        humantime::format_duration(Duration::from_secs(s.uptime_secs))
    );
    outln!("socket:       {}", socket.display());
    outln!(
        "destination:  {}{}",
        s.destination,
        own_destination_note(&s)
    );
    outln!(
        "pending:      {} ({}), {}",
        count(s.pending_events, "event", "events"),
        bytes(s.pending_bytes),
        count(s.sealed_batches, "sealed batch", "sealed batches")
    );
    match (&s.last_upload_us, &s.last_upload_key) {
        (Some(t), Some(k)) => outln!(
            "uploaded:     {} since start; last at {} ({k})",
            count(s.uploaded_events, "event", "events"),
            when(*t)
        ),
        _ => outln!("uploaded:     nothing since start"),
    }
    // With several destinations the flat error is one of theirs: say
    // which products it holds back, or one vendor's user reads another's
    // failure as theirs.
    let failing: Vec<String> = s
        .destinations
        .iter()
        .filter(|d| d.last_error.is_some())
        .map(|d| {
            if d.products.is_empty() {
                d.destination.clone()
            } else {
                d.products.join(", ")
            }
        })
        .collect();
    match &s.last_error {
        Some(_) if s.destinations.len() > 1 && failing.len() == s.destinations.len() => {
            outln!("last error:   at every destination (below)");
        }
        Some(_) if s.destinations.len() > 1 && !failing.is_empty() => {
            outln!(
                "last error:   at the destination of {} (below); the others are not held back",
                failing.join("; ")
            );
        }
        Some(e) => {
            outln!("last error:   {e}");
            let next = s.next_attempt_us.map(when).unwrap_or_else(|| "-".into());
            outln!(
                "retrying:     {} in a row; next attempt at {next}",
                count(s.consecutive_failures.into(), "failure", "failures")
            );
        }
        None => outln!("last error:   none"),
    }
    // Each destination on its own: one that fails holds back no other.
    for d in &s.destinations {
        // A product listed here sends there only when it is on: say which
        // are not, so the line does not read as where their events go.
        let products = if d.products.is_empty() {
            "no product now".to_string()
        } else {
            d.products
                .iter()
                .map(|p| match s.consent.iter().find(|c| &c.product == p) {
                    Some(c) if c.mode != telemetry_proto::Mode::On => format!("{p} ({})", c.mode),
                    _ => p.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        outln!(
            "to:           {} ({}) for {products}",
            d.destination,
            d.auth
        );
        let last = d
            .last_upload_us
            .map(|t| format!(", last at {}", when(t)))
            .unwrap_or_default();
        outln!(
            "              {} waiting; {} ({}) uploaded since start in {}{last}",
            count(d.pending_batches, "batch", "batches"),
            count(d.uploaded_events, "event", "events"),
            bytes(d.uploaded_bytes),
            count(d.uploads, "object", "objects"),
        );
        if d.already_there > 0 {
            outln!(
                "              {} already there (a repeated upload; delivered, not duplicated)",
                count(d.already_there, "batch was", "batches were")
            );
        }
        if let Some(e) = &d.last_error {
            let next = d.next_attempt_us.map(when).unwrap_or_else(|| "-".into());
            outln!(
                "              error: {e} ({} in a row; next attempt at {next})",
                count(d.consecutive_failures.into(), "failure", "failures")
            );
        }
        if d.refused_events > 0 {
            outln!(
                "              refused for good: {} dropped (the latest: {})",
                count(d.refused_events, "event", "events"),
                d.refused_why.as_deref().unwrap_or("see the daemon's log")
            );
        }
        for (product, n) in &d.retired {
            outln!(
                "              retired: {product}: the vendor switched it off; nothing more is uploaded for it ({} dropped)",
                count(*n, "event", "events")
            );
        }
    }
    let c = &s.counters;
    outln!(
        "events:       {} received since start: {} stored, {} duplicate, {} refused",
        c.received,
        c.stored,
        c.duplicates,
        c.refused
    );
    if c.spooled > 0 {
        let rest = c.spooled.saturating_sub(c.taken_in);
        outln!(
            "spooled:      {} taken in from the spool ({} new{})",
            count(c.spooled, "event", "events"),
            c.taken_in,
            if rest > 0 {
                format!("; {rest} duplicate or refused")
            } else {
                String::new()
            }
        );
    }
    for (product, n) in &c.spool_full_drops {
        let product = if product.is_empty() {
            "(no product)"
        } else {
            product
        };
        outln!(
            "not spooled:  {} of {product} dropped by clients that could not spool them (their spool was full, or a burst waited past their time budget for a turn at it); {}",
            count(*n, "event", "events"),
            super::why_the_spool_filled(&s)
        );
    }
    if c.store_full_drops > 0 {
        outln!(
            "store full:   {} dropped since start to stay under max_store_bytes (raise it, or check why uploads fail)",
            count(c.store_full_drops, "event", "events")
        );
    }
    for (product, n) in &c.local_full_drops {
        outln!(
            "store full:   {} of {product} kept on this machine only (local) dropped so far to stay under max_store_bytes, oldest first (raise it to keep more)",
            count(*n, "event", "events")
        );
    }
    match s.next_upload_us {
        Some(t) => outln!("next upload:  {} (automatic)", when(t)),
        None => outln!("next upload:  none due (nothing waiting to be uploaded)"),
    }
    for r in &s.refusals {
        let product = if r.product.is_empty() {
            "(no product)"
        } else {
            &r.product
        };
        outln!(
            "refused:      {} for {product}: {} since start{}",
            count(r.count, "request", "requests"),
            r.code,
            super::the_latest(r)
        );
    }
    for (product, n) in &s.dropped {
        outln!(
            "dropped:      {} oldest {product} {}: the store was full (reported with the next upload)",
            n,
            if *n == 1 { "event" } else { "events" }
        );
    }
    for i in &s.incidents {
        outln!("incident:     {i}");
    }
    if s.local_events > 0 {
        outln!(
            "local only:   {} (kept here, never uploaded)",
            count(s.local_events, "event", "events")
        );
    }
    for c in &s.consent {
        outln!(
            "consent:      {}: {} ({})",
            c.product,
            c.mode,
            c.layer.as_str()
        );
        if super::changed_without_a_new_version(c) {
            outln!(
                "              changed without a new catalogue version: {}; kept on this machine until {}'s manifest raises its version and you consent to it",
                c.new_events.join(", "),
                c.product
            );
        } else if !c.new_events.is_empty() {
            outln!(
                "              not consented yet (catalogue version {}, your decision was for {}): {}; kept on this machine until `telemetryctl consent {} on`",
                c.version,
                match c.consented_version {
                    0 => "an earlier one".to_string(),
                    v => format!("version {v}"),
                },
                c.new_events.join(", "),
                c.product
            );
        }
    }
    // The daemon only logs it; its file, as it names it.
    if let Some(w) = telemetry_client::consent::user_file_warning(Path::new(&s.consent_file)) {
        outln!("consent file: {w}");
    }
    // The modes above are the daemon's, which does not see this shell: one
    // with an opt-out variable would read them as what its CLIs do.
    if let Some(var) = telemetry_client::consent::env_opt_out_var() {
        outln!(
            "note:         {var} is set in this shell: CLIs run from it record nothing, whatever the modes above (the daemon's, which does not see it)"
        );
    }
    for c in &s.consent {
        match &c.manifest_error {
            Some(e) => outln!("manifest:     {} DISABLED: {e}", c.product),
            None if !c.manifest.is_empty() => {
                outln!(
                    "manifest:     {} version {}: {}",
                    c.product,
                    c.version,
                    c.manifest
                );
                for w in &c.manifest_warnings {
                    outln!("              warning: {w}");
                }
            }
            None => {}
        }
    }
    Ok(())
}

/// What the daemon's own destination line means when products also send
/// elsewhere (their manifests' `[upload]`): without it a user whose only
/// product goes to its vendor reads the first line as where their events go.
fn own_destination_note(s: &telemetry_proto::StatusReport) -> &'static str {
    let sends_there = |d: &telemetry_proto::DestinationStatus| {
        d.products.iter().any(|p| {
            s.consent
                .iter()
                .any(|c| &c.product == p && c.mode == telemetry_proto::Mode::On)
        })
    };
    let own = s
        .destinations
        .iter()
        .any(|d| d.destination == s.destination && sends_there(d));
    let others = s
        .destinations
        .iter()
        .any(|d| d.destination != s.destination && sends_there(d));
    match (own, others) {
        (false, true) => " (the daemon's own: no product that is on sends there; each goes where its manifest says, below)",
        (true, true) => " (for products whose manifest names no destination; the others below)",
        _ => "",
    }
}
