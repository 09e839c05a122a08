//! The stored and uploaded form of an event: one NDJSON line.
//!
//! The line is rendered once, when the event is accepted, and stored as is;
//! uploads and `telemetryctl show` use those exact bytes, so what the user
//! inspects is byte for byte what leaves the machine.

use serde::Serialize;
use std::collections::BTreeMap;
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
}

#[derive(Serialize)]
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

/// Format µs since the epoch as RFC 3339 UTC with microseconds.
pub fn rfc3339_us(us: i64) -> String {
    let t = if us >= 0 {
        UNIX_EPOCH + Duration::from_micros(us as u64)
    } else {
        UNIX_EPOCH
    };
    humantime::format_rfc3339_micros(t).to_string()
}

/// Render `ev` with the daemon-supplied fields into a [`Record`].
///
/// `machine` is the anonymous per-product ID; `os` and `arch` are the
/// daemon's own (`std::env::consts`), never client-supplied.
pub fn render(ev: &WireEvent, machine: &str, os: &str, arch: &str) -> Record {
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
    let line = Line {
        id: ev.id.hyphenated().to_string(),
        event: &ev.event,
        product: &ev.product,
        build: &ev.build,
        timestamp: rfc3339_us(ev.timestamp_us),
        machine,
        os,
        arch,
        data,
    };
    Record {
        id: *ev.id.as_bytes(),
        product: ev.product.clone(),
        // Serializing a struct of strings and scalars cannot fail.
        line: serde_json::to_string(&line).expect("event serializes to JSON"),
        local_only: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
