//! `POST /v1/upload`: check a request field by field, then presign.
//!
//! The order matters for what an abuser learns and what each check costs:
//! the address's rate limit first (before parsing), then its IPv6 /48's
//! (an address over its own limit takes nothing from its neighbours'), then the shape of each
//! field, the retired list (410 even for a product whose manifest was
//! removed), the product's manifest, the day window, the size cap, and
//! only for a request that passes all of them the per-machine limit, so
//! invalid requests cannot use up a real machine's allowance.

use crate::{Broker, Refusal};
use std::time::{Duration, Instant, SystemTime};
use telemetry_sink::broker::{Grant, UploadRequest, MAX_BUILDS, MAX_BUILD_BYTES};

/// Parse and check the JSON body, returning the validated request.
pub fn parse(body: &[u8]) -> Result<UploadRequest, Refusal> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Refusal::bad("body", format!("not JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| Refusal::bad("body", "expected a JSON object".into()))?;
    let text = |field: &'static str| -> Result<String, Refusal> {
        obj.get(field)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| Refusal::bad(field, "required, as a string".into()))
    };
    let int = |field: &'static str| -> Result<i64, Refusal> {
        match obj.get(field) {
            None => Err(Refusal::bad(field, "required, as an integer".into())),
            Some(v) => v.as_i64().ok_or_else(|| {
                Refusal::bad(
                    field,
                    format!("must be an integer from {} to {}", i64::MIN, i64::MAX),
                )
            }),
        }
    };
    let product = text("product")?;
    let day = text("day")?;
    let machine8 = text("machine8")?;
    let first_seq = int("first_seq")?;
    let last_seq = int("last_seq")?;
    let bytes = obj
        .get("bytes")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| Refusal::bad("bytes", "required, as a non-negative integer".into()))?;
    let builds = match obj.get("builds") {
        None => Vec::new(),
        Some(v) => v
            .as_array()
            .filter(|a| a.len() <= MAX_BUILDS)
            .and_then(|a| {
                a.iter()
                    .map(|b| {
                        // A daemon's build names only: they are compared
                        // with the retired list and logged with a refusal.
                        b.as_str()
                            .filter(|s| {
                                !s.is_empty()
                                    && s.len() <= MAX_BUILD_BYTES
                                    && s.bytes().all(|c| {
                                        c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'+' | b'-')
                                    })
                            })
                            .map(str::to_string)
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| {
                Refusal::bad(
                    "builds",
                    format!(
                        "expected at most {MAX_BUILDS} build names (letters, digits, '.', '_', '+', '-') of at most {MAX_BUILD_BYTES} bytes"
                    ),
                )
            })?,
    };
    // Unknown fields are ignored: a newer daemon may send more.
    Ok(UploadRequest {
        product,
        day,
        machine8,
        first_seq,
        last_seq,
        bytes,
        sha256: text("sha256")?,
        builds,
    })
}

/// Decide on a parsed request from `now`'s point of view.
pub async fn grant(
    broker: &Broker,
    req: UploadRequest,
    now: SystemTime,
    clock: Instant,
) -> Result<Grant, Refusal> {
    let s = &broker.settings;
    let key = req.parts();
    key.validate()
        .map_err(|e| Refusal::bad(e.field, e.reason))?;
    if s.retired.iter().any(|r| r == &req.product) {
        return Err(Refusal::gone(
            "product",
            format!(
                "product {:?} is retired by its vendor; stop uploading it",
                req.product
            ),
        ));
    }
    // A 410 naming `builds` drops that batch on the machine (not the
    // product: its later batches, of a live build, still come), so it is
    // answered only when every build in the batch is retired: a batch from
    // a machine that upgraded mid-batch still goes through (the report can
    // filter the old build's events).
    let retired_build = |b: &String| s.retired.contains(&format!("{}@{b}", req.product));
    if !req.builds.is_empty() && req.builds.iter().all(retired_build) {
        return Err(Refusal::gone(
            "builds",
            format!(
                "build(s) {:?} of product {:?} are retired by their vendor",
                req.builds, req.product
            ),
        ));
    }
    if !broker.products.contains(&req.product) {
        return Err(Refusal::bad(
            "product",
            format!(
                "product {:?} is not accepted by this broker (no manifest for it)",
                req.product
            ),
        ));
    }
    let today = s.today.unwrap_or_else(|| day_number(now));
    // `validate` above checked the date; refused here too, so no bad date
    // can reach the arithmetic below.
    let Some(day) = date_to_days(&req.day) else {
        return Err(Refusal::bad("day", "not a date (YYYY-MM-DD)".into()));
    };
    // Batches sealed while a machine was offline (an autostarted daemon
    // runs only when its CLI does) arrive late, so the window reaches far
    // back; ahead only a day, for clocks and time zones. A batch refused
    // here is refused on every retry and blocks the batches behind it.
    if day > today + 1 || today - day > i64::from(s.day_window) {
        return Err(Refusal::bad(
            "day",
            format!(
                "{} is not within the {} days up to today ({}) or tomorrow",
                req.day,
                s.day_window,
                days_to_date(today)
            ),
        ));
    }
    if req.bytes == 0 {
        return Err(Refusal::bad("bytes", "a batch is never empty".into()));
    }
    if req.bytes > s.max_bytes {
        return Err(Refusal::too_large(
            "bytes",
            format!(
                "{} bytes is over this broker's cap of {} bytes",
                req.bytes, s.max_bytes
            ),
        ));
    }
    let sha = telemetry_sink::broker::parse_hex_sha256(&req.sha256)
        .ok_or_else(|| Refusal::bad("sha256", "expected 64 lowercase hex digits".into()))?;
    let machine = (req.product.clone(), req.machine8.clone());
    broker
        .per_machine
        .check(&machine, clock)
        .map_err(|wait| Refusal::throttled(crate::Limit::Machine, wait))?;
    // The body's hash is in the key: the parts are only claimed, and a
    // caller who guessed another machine's next ones must not be able to
    // take its key (see `render_with_digest`).
    let object = key.render_with_digest(&broker.presigner.settings().prefix, &req.sha256);
    let signed = broker
        .presigner
        .put(
            &object,
            req.bytes,
            &telemetry_sink::broker::base64_encode(&sha),
            s.url_lifetime,
            now,
        )
        .await
        .map_err(|e| {
            // Not the machine's doing: its retry must not find its
            // allowance spent.
            broker.per_machine.give_back(&machine);
            Refusal::internal(e)
        })?;
    Ok(Grant {
        url: signed.url,
        method: "PUT".into(),
        headers: signed.headers,
        expires_at: humantime::format_rfc3339_seconds(signed.expires_at).to_string(),
        key: Some(object),
    })
}

/// Days since 1970-01-01 of the UTC day `t` falls in.
pub fn day_number(t: SystemTime) -> i64 {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    (secs / 86_400) as i64
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (Howard Hinnant's
/// `days_from_civil`).
pub fn date_to_days(s: &str) -> Option<i64> {
    if !telemetry_sink::key::is_date(s) {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (
        s[0..4].parse().ok()?,
        s[5..7].parse().ok()?,
        s[8..10].parse().ok()?,
    );
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// The `YYYY-MM-DD` date of a day number (`civil_from_days`).
pub fn days_to_date(z: i64) -> String {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(date_to_days("1970-01-01"), Some(0));
        assert_eq!(date_to_days("2000-03-01"), Some(11_017));
        for d in [-1000, 0, 59, 60, 11_016, 20_000, 20_513] {
            assert_eq!(date_to_days(&days_to_date(d)), Some(d));
        }
        assert_eq!(days_to_date(20_513), "2026-03-01");
        assert_eq!(date_to_days("2026-02-30"), None);
    }

    #[test]
    fn base64_and_hex() {
        use telemetry_sink::broker::{base64_encode, parse_hex_sha256};
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        let sha =
            parse_hex_sha256("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
                .unwrap();
        assert_eq!(
            base64_encode(&sha),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
        assert!(parse_hex_sha256(&"A".repeat(64)).is_none());
        assert!(parse_hex_sha256("ab").is_none());
    }

    #[test]
    fn fields_are_named() {
        let field = |json: &str| parse(json.as_bytes()).unwrap_err().field;
        assert_eq!(field("[]"), Some("body"));
        assert_eq!(field("{"), Some("body"));
        assert_eq!(field(r#"{"product":1}"#), Some("product"));
        assert_eq!(
            field(r#"{"bytes":1,"product":"p","day":"d","machine8":"m","first_seq":"1"}"#),
            Some("first_seq")
        );
    }
}
