//! Checks every event must pass before a daemon stores it. Clients run the
//! same checks to fail early; the daemon never trusts that they did.

use crate::{Value, WireEvent};

/// Size and shape limits for events. The defaults are the protocol's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest event name, product name or data key, in bytes.
    pub max_name_len: usize,
    /// Longest `build` string, in bytes.
    pub max_build_len: usize,
    /// Most entries in an event's `data` map.
    pub max_data_entries: usize,
    /// Longest string value in `data`, in bytes.
    pub max_string_len: usize,
    /// Most events in one `Emit` request.
    pub max_events_per_emit: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_name_len: 64,
            max_build_len: 64,
            max_data_entries: 32,
            max_string_len: 256,
            max_events_per_emit: 1000,
        }
    }
}

/// Earliest accepted timestamp: 2000-01-01T00:00:00Z, in µs.
const MIN_TIMESTAMP_US: i64 = 946_684_800_000_000;
/// Latest accepted timestamp: 9999-12-31T23:59:59Z, in µs (RFC 3339 years
/// have four digits).
const MAX_TIMESTAMP_US: i64 = 253_402_300_799_000_000;

/// Why an event was rejected. Each variant names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A name (event, product or data key) is empty, too long or uses
    /// characters outside `[a-z0-9_]` / does not start with a letter.
    #[error("{field} {value:?} is not a valid name: use 1-{max} characters from a-z, 0-9 and _, starting with a letter")]
    BadName {
        /// Which field.
        field: &'static str,
        /// The value (truncated to 80 bytes).
        value: String,
        /// The length limit.
        max: usize,
    },
    /// `build` is empty, too long or has characters outside
    /// `[A-Za-z0-9._+-]`.
    #[error("build {value:?} is not valid: use 1-{max} characters from A-Z, a-z, 0-9 and . _ + -")]
    BadBuild {
        /// The value (truncated to 80 bytes).
        value: String,
        /// The length limit.
        max: usize,
    },
    /// The event id is not a random UUID: a time-and-MAC one (version 1)
    /// would put the machine's network address in every stored line.
    #[error("id {0} is not a random UUID (version 7, or 4, RFC 4122 variant); a version 1 id would carry the machine's network address")]
    BadId(uuid::Uuid),
    /// The timestamp is before 2000 or after 9999.
    #[error("timestamp {0} µs is outside 2000-01-01..9999-12-31")]
    BadTimestamp(i64),
    /// Too many data entries.
    #[error("data has {got} entries, more than the maximum of {max}")]
    TooManyEntries {
        /// Entries sent.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// A string value is too long or contains control characters.
    #[error("data value for {key:?} {}", bad_string_why(*.len, *.max))]
    BadString {
        /// The data key.
        key: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Too many events in one request.
    #[error("{got} events in one request, more than the maximum of {max}")]
    TooManyEvents {
        /// Events sent.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// An `Emit` with no events.
    #[error("an emit request must carry at least one event")]
    NoEvents,
}

/// What is wrong with a string value of `len` bytes under a limit of `max`
/// (a value within it was refused for its characters).
fn bad_string_why(len: usize, max: usize) -> String {
    if len > max {
        format!("is {len} bytes, more than the maximum of {max}")
    } else {
        "has control characters (printable text only)".to_string()
    }
}

/// `s` cut to at most 80 bytes (at a character boundary), for messages:
/// an error reply quoting a client's whole 64 KiB name would not fit in a
/// reply frame.
pub fn truncated(s: &str) -> String {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// `text` made safe to print in a terminal or a log line, at most `max`
/// characters (then `…`): every control character (an escape sequence
/// could clear a screen and print a made-up status line) and Unicode's
/// bidirectional controls (not control characters to Rust, they still
/// reorder what a terminal shows after them: "Trojan Source",
/// CVE-2021-42574) written as its escape.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        let bidi = matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Check a name (event, product, data key) against the protocol's charset.
pub fn validate_name(
    field: &'static str,
    value: &str,
    limits: &Limits,
) -> Result<(), ValidationError> {
    let mut bytes = value.bytes();
    let ok = value.len() <= limits.max_name_len
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::BadName {
            field,
            value: truncated(value),
            max: limits.max_name_len,
        })
    }
}

/// Check a `build` (the host program's version): 1 to `max_build_len`
/// bytes of ASCII letters, digits, `.`, `_`, `+` and `-`.
pub fn validate_build(value: &str, limits: &Limits) -> Result<(), ValidationError> {
    let ok = !value.is_empty()
        && value.len() <= limits.max_build_len
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::BadBuild {
            value: truncated(value),
            max: limits.max_build_len,
        })
    }
}

/// Check one event's shape and sizes. The event catalogue (which names and
/// keys a product allows) is checked by the daemon on top of this.
pub fn validate_event(ev: &WireEvent, limits: &Limits) -> Result<(), ValidationError> {
    if !matches!(ev.id.get_version_num(), 4 | 7) || ev.id.get_variant() != uuid::Variant::RFC4122 {
        return Err(ValidationError::BadId(ev.id));
    }
    validate_name("event", &ev.event, limits)?;
    validate_name("product", &ev.product, limits)?;
    validate_build(&ev.build, limits)?;
    if !(MIN_TIMESTAMP_US..=MAX_TIMESTAMP_US).contains(&ev.timestamp_us) {
        return Err(ValidationError::BadTimestamp(ev.timestamp_us));
    }
    if ev.data.len() > limits.max_data_entries {
        return Err(ValidationError::TooManyEntries {
            got: ev.data.len(),
            max: limits.max_data_entries,
        });
    }
    for (key, value) in &ev.data {
        validate_name("data key", key, limits)?;
        if let Value::Str(s) = value {
            if s.len() > limits.max_string_len || s.chars().any(char::is_control) {
                return Err(ValidationError::BadString {
                    key: key.clone(),
                    len: s.len(),
                    max: limits.max_string_len,
                });
            }
        }
    }
    Ok(())
}

impl Limits {
    /// Check the number of events in one `Emit`.
    pub fn check_batch_len(&self, n: usize) -> Result<(), ValidationError> {
        if n == 0 {
            Err(ValidationError::NoEvents)
        } else if n > self.max_events_per_emit {
            Err(ValidationError::TooManyEvents {
                got: n,
                max: self.max_events_per_emit,
            })
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ok_event() -> WireEvent {
        WireEvent {
            id: uuid::Uuid::now_v7(),
            event: "app_created".into(),
            product: "cfdev".into(),
            build: "0.0.1+g1234-rc.1".into(),
            timestamp_us: 1_800_000_000_000_000,
            data: BTreeMap::new(),
        }
    }

    #[test]
    fn only_random_ids_are_accepted() {
        let mut ev = ok_event();
        ev.id = uuid::Uuid::new_v4();
        validate_event(&ev, &Limits::default()).unwrap();
        // Version 1: a time and the machine's MAC address.
        for id in [
            "c232ab00-9414-11ec-b3c8-9f68deced846",
            "00000000-0000-0000-0000-000000000000",
            "0190f5c2-7b1e-7000-c000-000000000001", // v7 nibble, Microsoft variant
        ] {
            ev.id = id.parse().unwrap();
            let err = validate_event(&ev, &Limits::default()).unwrap_err();
            assert!(matches!(err, ValidationError::BadId(_)), "{id}: {err}");
        }
    }

    #[test]
    fn accepts_a_normal_event() {
        validate_event(&ok_event(), &Limits::default()).unwrap();
    }

    #[test]
    fn rejects_bad_names() {
        let l = Limits::default();
        for bad in ["", "App", "1st", "a-b", "a b", "é", &"a".repeat(65)] {
            let mut ev = ok_event();
            ev.event = bad.to_string();
            assert!(
                matches!(
                    validate_event(&ev, &l),
                    Err(ValidationError::BadName { field: "event", .. })
                ),
                "{bad:?} accepted"
            );
        }
        let mut ev = ok_event();
        ev.event = "a".repeat(64);
        validate_event(&ev, &l).unwrap();
    }

    #[test]
    fn rejects_paths_in_build_and_control_chars_in_values() {
        let l = Limits::default();
        let mut ev = ok_event();
        ev.build = "/home/alice/bin".into();
        assert!(matches!(
            validate_event(&ev, &l),
            Err(ValidationError::BadBuild { .. })
        ));

        // Each says which of its two faults it has.
        let mut ev = ok_event();
        ev.data.insert("kind".into(), Value::Str("a\nb".into()));
        let e = validate_event(&ev, &l).unwrap_err();
        assert!(matches!(e, ValidationError::BadString { .. }));
        assert_eq!(
            e.to_string(),
            "data value for \"kind\" has control characters (printable text only)"
        );

        let mut ev = ok_event();
        ev.data.insert("kind".into(), Value::Str("x".repeat(257)));
        let e = validate_event(&ev, &l).unwrap_err();
        assert!(matches!(e, ValidationError::BadString { .. }));
        assert_eq!(
            e.to_string(),
            "data value for \"kind\" is 257 bytes, more than the maximum of 256"
        );
    }

    #[test]
    fn rejects_out_of_range_timestamps_and_too_many_entries() {
        let l = Limits::default();
        let mut ev = ok_event();
        ev.timestamp_us = 0;
        assert!(matches!(
            validate_event(&ev, &l),
            Err(ValidationError::BadTimestamp(0))
        ));
        let mut ev = ok_event();
        for i in 0..33 {
            ev.data.insert(format!("k{i}"), Value::Int(i));
        }
        assert!(matches!(
            validate_event(&ev, &l),
            Err(ValidationError::TooManyEntries { got: 33, .. })
        ));
    }

    #[test]
    fn batch_len_limits() {
        let l = Limits::default();
        assert_eq!(l.check_batch_len(0), Err(ValidationError::NoEvents));
        assert!(l.check_batch_len(1000).is_ok());
        assert!(l.check_batch_len(1001).is_err());
    }
}
