//! One file per `telemetryctl` verb.

pub mod completions;
pub mod consent;
pub mod doctor;
pub mod flush;
pub mod forget;
pub mod purge;
pub mod receipts;
pub mod show;
pub mod start;
pub mod status;
pub mod stop;

use crate::Failure;

/// clap's parser for a `PRODUCT` argument: a name a product can have, else
/// a usage error saying why (a misspelt case or a stray word would be sent
/// to the daemon, find nothing, and read as "nothing stored").
pub fn product_arg(value: &str) -> Result<String, String> {
    telemetry_proto::validate_name("product", value, &telemetry_proto::Limits::default())
        .map(|()| value.to_string())
        .map_err(|e| format!("{e}; e.g. cfdev"))
}

/// After a command about `product` found nothing of it: warn when the
/// daemon has no manifest for it, as the name is then most likely a slip.
pub fn warn_if_unknown(socket: &std::path::Path, product: &str, found: &str) {
    if let Some(w) = consent::unknown_product(product, &consent::daemon_view(socket)) {
        eprintln!("telemetryctl: warning: {w}; {found}");
    }
}

/// Format µs since the epoch as RFC 3339 (seconds precision).
pub fn when(us: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Format a byte count for people.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// "; the latest: MESSAGE" for a refusal count, as `status` and `doctor`
/// end its line; where the daemon sent no message (it predates the field,
/// or the asker is not its user), where to find out why.
pub fn the_latest(r: &telemetry_proto::RefusalCount) -> String {
    if r.last_message.is_empty() {
        " (the daemon's log names the first of each kind and why; `telemetry-emit --strict` prints the reason for one event)".to_string()
    } else {
        format!("; the latest: {}", r.last_message)
    }
}

/// Why clients could not spool events, for the `spool_full_drops` lines
/// of `status` and `doctor` (a full spool, or a burst whose events waited
/// past the client's budget for a turn at it: the drop file does not say
/// which): with `busy` refusals since start, the daemon was up but at its
/// connection limit (a CLI sending many events at once, each on a
/// connection of its own, as an SDK's concurrent emits do); else it did
/// not answer in time.
pub fn why_the_spool_filled(s: &telemetry_proto::StatusReport) -> String {
    let busy: u64 = s
        .refusals
        .iter()
        .filter(|r| r.code == telemetry_proto::ErrorCode::Busy)
        .map(|r| r.count)
        .sum();
    if busy > 0 {
        format!(
            "the daemon was at its connection limit ({} refused `busy` since start): a CLI sent more events at once than it serves connections; send them in one request or a few at a time (or raise max_connections)",
            busy
        )
    } else {
        "the daemon did not answer them in time (not running, or stopped): run it as a service (`telemetryd install --user`) or let clients start it (TELEMETRY_AUTOSTART)".to_string()
    }
}

/// Whether `c`'s events waiting for consent came from a manifest changed
/// without a new catalogue version: the decision is already for that
/// version, so consenting again records nothing new (a version's set of
/// events is kept as first recorded); only the vendor raising the version
/// lets the user agree to them.
pub fn changed_without_a_new_version(c: &telemetry_proto::ProductConsent) -> bool {
    !c.new_events.is_empty() && c.consented_version != 0 && c.consented_version == c.version
}

/// `n` and the noun for it: "1 event", "2 events", "0 events".
pub fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Print `value` as `--json` output: its serde form, as the protocol's
/// own type defines it, so every output has one shape and spelling.
pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::internal(format!("cannot render the reply as JSON: {e}")))?;
    outln!("{text}");
    Ok(())
}

/// The serde form of a reply's payload: the fields of a struct variant
/// (`Purged { events }` → `{"events": N}`) or the value of a newtype one,
/// without the variant's name. Whatever fields a newer protocol adds are
/// printed too.
pub fn payload(reply: &telemetry_client::Response) -> Result<serde_json::Value, Failure> {
    let value = serde_json::to_value(reply)
        .map_err(|e| Failure::internal(format!("cannot render the reply as JSON: {e}")))?;
    Ok(match value {
        // Externally tagged: {"Variant": payload}.
        serde_json::Value::Object(map) if map.len() == 1 => {
            map.into_iter().next().map(|(_, v)| v).unwrap_or_default()
        }
        other => other,
    })
}

/// When `e` says no daemon answers where none is needed, what to say
/// instead of an error: nothing serves the socket, and no
/// product is on for this user, so nothing is collected. This process's own
/// environment is left out (see `any_product_collected`). Before the user
/// turns a product on, "start it" would urge them to run a collector for
/// nothing.
pub fn no_daemon_needed(e: &telemetry_client::ClientError) -> Option<String> {
    // Only where nothing owns the socket, as for an autostart: a refusal, a
    // busy daemon or a timeout is news whatever the consent.
    let telemetry_client::ClientError::Unreachable { path, .. } = e else {
        return None;
    };
    let paths = telemetry_client::consent::ConsentPaths::from_env();
    let nothing_on = telemetry_client::autostart::nothing_serves(e)
        && !telemetry_client::consent::any_product_collected(&paths);
    nothing_on.then(|| {
        // A file that cannot be read says nothing is on, but the user's
        // decisions may be in it: said, with what to do.
        let trouble = telemetry_client::consent::user_file_warning(&paths.user)
            .map(|w| format!("; but {w}"))
            .unwrap_or_default();
        format!(
            "no telemetryd answers at {}, and none is needed: no product is on for this user, so nothing is collected{trouble}",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemetry_client::Response;

    #[test]
    fn counts_agree_with_their_number() {
        assert_eq!(count(0, "event", "events"), "0 events");
        assert_eq!(count(1, "event", "events"), "1 event");
        assert_eq!(count(2, "batch", "batches"), "2 batches");
    }

    #[test]
    fn a_full_spool_is_blamed_on_busy_refusals_when_there_were_any() {
        let mut s = telemetry_proto::StatusReport::default();
        assert!(why_the_spool_filled(&s).contains("did not answer them in time"));
        s.refusals.push(telemetry_proto::RefusalCount {
            product: String::new(),
            code: telemetry_proto::ErrorCode::Busy,
            count: 1792,
            last_event: String::new(),
            last_message: String::new(),
        });
        let why = why_the_spool_filled(&s);
        assert!(
            why.contains("connection limit (1792 refused `busy`") && why.contains("at once"),
            "{why}"
        );
    }

    #[test]
    fn a_payload_is_the_variants_fields_without_its_name() {
        let purged = payload(&Response::Purged { events: 3 }).unwrap();
        assert_eq!(purged, serde_json::json!({"events": 3}));
    }
}
