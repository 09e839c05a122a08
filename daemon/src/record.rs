//! The stored and uploaded form of an event: one NDJSON line.
//!
//! The line is rendered once, when the event is accepted, and stored as is;
//! uploads and `telemetryctl show` use those exact bytes, so what the user
//! inspects is byte for byte what leaves the machine.

use std::time::{Duration, UNIX_EPOCH};
use telemetry_proto::{Value, WireEvent};

/// An event ready for the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The sender's event id (dedup key).
    pub id: [u8; 16],
    /// Product name (batches are per product).
    pub product: String,
    /// The NDJSON line, without the trailing newline.
    pub line: String,
    /// Recorded in `local` mode: kept on this machine, never uploaded.
    pub local_only: bool,
    /// 0 when the event was checked against a look at the consent files
    /// made after it arrived; otherwise the generation of the earlier look
    /// it was checked against (see `Consent::cached_view`), which the
    /// thread that commits must confirm before storing it.
    pub consent_generation: u64,
}

/// An RFC 3339 UTC time with microseconds (times before the epoch clamp
/// to it).
pub fn rfc3339_us(us: i64) -> String {
    humantime::format_rfc3339_micros(time_of(us)).to_string()
}

fn time_of(us: i64) -> std::time::SystemTime {
    if us >= 0 {
        UNIX_EPOCH + Duration::from_micros(us as u64)
    } else {
        UNIX_EPOCH
    }
}

/// `value` as a JSON string.
fn push_str(out: &mut Vec<u8>, value: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Render `ev` as its NDJSON line, with the anonymous machine ID and the
/// platform the daemon adds. Written straight into one buffer: this runs
/// for every event, and building a map of JSON values first cost as much
/// as the rest of the line (the test below holds it to the serde form).
pub fn render(ev: &WireEvent, machine: &str, os: &str, arch: &str) -> Record {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(256);
    let mut uuid = uuid::Uuid::encode_buffer();
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(ev.id.hyphenated().encode_lower(&mut uuid).as_bytes());
    out.extend_from_slice(b"\",\"event\":");
    push_str(&mut out, &ev.event);
    out.extend_from_slice(b",\"product\":");
    push_str(&mut out, &ev.product);
    out.extend_from_slice(b",\"build\":");
    push_str(&mut out, &ev.build);
    out.extend_from_slice(b",\"timestamp\":\"");
    let _ = write!(
        out,
        "{}",
        humantime::format_rfc3339_micros(time_of(ev.timestamp_us))
    );
    out.extend_from_slice(b"\",\"machine\":");
    push_str(&mut out, machine);
    out.extend_from_slice(b",\"os\":");
    push_str(&mut out, os);
    out.extend_from_slice(b",\"arch\":");
    push_str(&mut out, arch);
    out.extend_from_slice(b",\"data\":{");
    // The map is ordered by key, as the serde form wrote it.
    for (i, (k, v)) in ev.data.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_str(&mut out, k);
        out.push(b':');
        match v {
            Value::Str(s) => push_str(&mut out, s),
            Value::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        }
    }
    out.extend_from_slice(b"}}");
    Record {
        id: *ev.id.as_bytes(),
        product: ev.product.clone(),
        // Only JSON text and ASCII were written.
        line: String::from_utf8(out).expect("a JSON line is UTF-8"),
        local_only: false,
        consent_generation: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The form `render` had before it wrote the line by hand: its oracle.
    fn render_with_serde(ev: &WireEvent, machine: &str, os: &str, arch: &str) -> String {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            id: String,
            event: &'a str,
            product: &'a str,
            build: &'a str,
            timestamp: String,
            machine: &'a str,
            os: &'a str,
            arch: &'a str,
            data: BTreeMap<&'a str, serde_json::Value>,
        }
        let data = ev
            .data
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::Str(s) => serde_json::Value::from(s.as_str()),
                    Value::Int(i) => serde_json::Value::from(*i),
                    Value::Bool(b) => serde_json::Value::from(*b),
                };
                (k.as_str(), v)
            })
            .collect();
        serde_json::to_string(&Line {
            id: ev.id.hyphenated().to_string(),
            event: &ev.event,
            product: &ev.product,
            build: &ev.build,
            timestamp: rfc3339_us(ev.timestamp_us),
            machine,
            os,
            arch,
            data,
        })
        .unwrap()
    }

    #[test]
    fn the_line_is_byte_for_byte_the_serde_form() {
        let odd = [
            "",
            "plain",
            "quote\" back\\slash",
            "tab\tnl\ncr\r",
            "\u{1}\u{1f}\u{7f}",
            "é✓😀",
            "</script>",
        ];
        let mut n = 0u64;
        for s in odd {
            for ts in [
                i64::MIN,
                -1,
                0,
                1,
                1_764_201_600_123_456,
                253_402_300_799_999_999,
            ] {
                let mut data = BTreeMap::new();
                data.insert(format!("k{s}"), Value::Str(s.to_string()));
                data.insert("a".to_string(), Value::Int(ts));
                data.insert("z".to_string(), Value::Bool(ts % 2 == 0));
                data.insert("m".to_string(), Value::Int(i64::MIN));
                n += 1;
                let ev = WireEvent {
                    id: uuid::Uuid::from_u128(u128::from(n) * 0x0123_4567_89ab_cdef_0123_4567),
                    event: format!("e{s}"),
                    product: s.to_string(),
                    build: s.to_string(),
                    timestamp_us: ts,
                    data,
                };
                assert_eq!(
                    render(&ev, s, "linux", s).line,
                    render_with_serde(&ev, s, "linux", s),
                    "{s:?} at {ts}"
                );
            }
        }
        let bare = WireEvent {
            id: uuid::Uuid::nil(),
            event: "x".into(),
            product: "p".into(),
            build: "b".into(),
            timestamp_us: 0,
            data: BTreeMap::new(),
        };
        assert_eq!(
            render(&bare, "m", "o", "a").line,
            render_with_serde(&bare, "m", "o", "a")
        );
    }

    #[test]
    fn renders_all_fields_in_order() {
        let mut data = BTreeMap::new();
        data.insert("kind".to_string(), Value::Str("timeout".into()));
        data.insert("n".to_string(), Value::Int(3));
        let ev = WireEvent {
            id: uuid::Uuid::from_u128(1),
            event: "error".into(),
            product: "cfdev".into(),
            build: "1.0.0".into(),
            timestamp_us: 1_764_201_600_000_001,
            data,
        };
        let r = render(&ev, "ab", "linux", "x86_64");
        assert_eq!(
            r.line,
            r#"{"id":"00000000-0000-0000-0000-000000000001","event":"error","product":"cfdev","build":"1.0.0","timestamp":"2025-11-27T00:00:00.000001Z","machine":"ab","os":"linux","arch":"x86_64","data":{"kind":"timeout","n":3}}"#
        );
    }
}
