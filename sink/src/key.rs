//! Batch object keys.
//!
//! `{prefix}/v1/product={p}/dt={YYYY-MM-DD}/{machine8}-{first_seq}-{last_seq}.ndjson.zst`:
//! Hive-style partitions that Athena, Trino, Spark and DuckDB read
//! directly. `first_seq..=last_seq` number the batch's events among its
//! product's own (from a start per product; see the daemon's
//! migration 0010), never the store's shared sequence numbers, so a key
//! says nothing about other products. Every part is fixed when the batch is sealed, so a retry
//! writes the same object. The broker builds keys from a client's claimed
//! parts, so [`BatchKey::validate`] is what stands between a hostile
//! caller and the bucket's key space; its keys end in the first digits of
//! the body's SHA-256 (`...-{first_seq}-{last_seq}-{digest}.ndjson.zst`,
//! [`BatchKey::render_with_digest`]), so no caller can take a key another
//! machine's batch needs.

/// Hex digits of the body's SHA-256 in a broker's key
/// ([`BatchKey::render_with_digest`]): 64 bits, so no one can make a body
/// of their own whose hash starts like another's.
pub const DIGEST_CHARS: usize = 16;

/// The parts of a batch's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchKey {
    /// Product name (a catalogue name: `[a-z0-9_]`, starts with a letter).
    pub product: String,
    /// The day the batch was sealed, `YYYY-MM-DD`.
    pub date: String,
    /// The first 8 hex digits of the anonymous machine ID.
    pub machine8: String,
    /// First event sequence number in the batch.
    pub first: i64,
    /// Last event sequence number in the batch.
    pub last: i64,
}

/// Why a key's parts are not acceptable, naming the part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct KeyError {
    /// The part at fault (`product`, `day`, `machine8`, `first_seq`, `last_seq`).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn err(field: &'static str, reason: impl Into<String>) -> KeyError {
    KeyError {
        field,
        reason: reason.into(),
    }
}

/// Whether `s` is a `YYYY-MM-DD` date that exists.
pub fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| {
        b[r.clone()]
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| b[r].iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let (Some(y), Some(m), Some(d)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

impl BatchKey {
    /// Check every part: names and numbers only, so a key built from them
    /// can hold no `/`, `..` or other surprise.
    pub fn validate(&self) -> Result<(), KeyError> {
        telemetry_proto::validate_name(
            "product",
            &self.product,
            &telemetry_proto::Limits::default(),
        )
        .map_err(|e| err("product", e.to_string()))?;
        if !is_date(&self.date) {
            return Err(err("day", "expected a date as YYYY-MM-DD"));
        }
        if self.machine8.len() != 8
            || !self
                .machine8
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(err("machine8", "expected 8 lowercase hex digits"));
        }
        if self.first < 1 {
            return Err(err("first_seq", "expected a sequence number of at least 1"));
        }
        if self.last < self.first {
            return Err(err("last_seq", "must not be below first_seq"));
        }
        Ok(())
    }

    /// The key under `prefix` (no leading or trailing `/`; empty for none).
    pub fn render(&self, prefix: &str) -> String {
        self.under(
            prefix,
            format!(
                "v1/product={}/dt={}/{}-{}-{}.ndjson.zst",
                self.product, self.date, self.machine8, self.first, self.last
            ),
        )
    }

    /// The key a broker grants for a body whose SHA-256 is `sha256` (64
    /// lowercase hex digits, as validated): the parts, then the first
    /// [`DIGEST_CHARS`] digits of the body's hash. The parts are whatever
    /// a caller claims, so without the hash anyone who guessed a
    /// machine's next parts could take its key first, and the machine's
    /// own upload would then meet `412` and count as already there. With
    /// it, a key can only ever hold that body (the signed checksum makes
    /// the store refuse any other), so `412` again means "this very batch
    /// is there".
    pub fn render_with_digest(&self, prefix: &str, sha256: &str) -> String {
        let digest = sha256.get(..DIGEST_CHARS).unwrap_or(sha256);
        self.under(
            prefix,
            format!(
                "v1/product={}/dt={}/{}-{}-{}-{digest}.ndjson.zst",
                self.product, self.date, self.machine8, self.first, self.last
            ),
        )
    }

    fn under(&self, prefix: &str, tail: String) -> String {
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            tail
        } else {
            format!("{prefix}/{tail}")
        }
    }

    /// Parse a key made by [`BatchKey::render`]: the prefix (possibly
    /// empty) and the parts. `None` for anything else.
    pub fn parse(key: &str) -> Option<(String, BatchKey)> {
        let (prefix, rest) = match key.rfind("v1/product=") {
            Some(0) => ("", key),
            Some(i) if key[..i].ends_with('/') => (&key[..i - 1], &key[i..]),
            _ => return None,
        };
        let rest = rest.strip_prefix("v1/product=")?;
        let (product, rest) = rest.split_once("/dt=")?;
        let (date, file) = rest.split_once('/')?;
        let stem = file.strip_suffix(".ndjson.zst")?;
        let mut parts = stem.splitn(3, '-');
        let machine8 = parts.next()?.to_string();
        let first = parts.next()?.parse().ok()?;
        let last = parts.next()?.parse().ok()?;
        let k = BatchKey {
            product: product.to_string(),
            date: date.to_string(),
            machine8,
            first,
            last,
        };
        k.validate().ok()?;
        Some((prefix.to_string(), k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k() -> BatchKey {
        BatchKey {
            product: "cfdev".into(),
            date: "2026-11-27".into(),
            machine8: "0123abcd".into(),
            first: 5,
            last: 9,
        }
    }

    #[test]
    fn renders_and_parses_back() {
        let key = k().render("raw/cli/");
        assert_eq!(
            key,
            "raw/cli/v1/product=cfdev/dt=2026-11-27/0123abcd-5-9.ndjson.zst"
        );
        assert_eq!(BatchKey::parse(&key), Some(("raw/cli".into(), k())));
        let bare = k().render("");
        assert!(bare.starts_with("v1/product=cfdev/"));
        assert_eq!(BatchKey::parse(&bare), Some((String::new(), k())));
        assert_eq!(
            BatchKey::parse("v1/product=cfdev/dt=2026-11-27/x.json"),
            None
        );
        assert_eq!(
            BatchKey::parse("xv1/product=cfdev/dt=2026-11-27/0123abcd-5-9.ndjson.zst"),
            None
        );
    }

    #[test]
    fn a_broker_key_carries_the_start_of_the_body_hash() {
        let sha = "0123456789abcdef".repeat(4);
        assert_eq!(
            k().render_with_digest("raw/", &sha),
            "raw/v1/product=cfdev/dt=2026-11-27/0123abcd-5-9-0123456789abcdef.ndjson.zst"
        );
        let other = "f".repeat(64);
        assert_ne!(
            k().render_with_digest("", &sha),
            k().render_with_digest("", &other)
        );
    }

    #[test]
    fn validation_names_the_part() {
        let bad = |f: fn(&mut BatchKey)| {
            let mut key = k();
            f(&mut key);
            key.validate().unwrap_err().field
        };
        assert_eq!(bad(|k| k.product = "../x".into()), "product");
        assert_eq!(bad(|k| k.date = "2026-02-30".into()), "day");
        assert_eq!(bad(|k| k.date = "2026-1-01".into()), "day");
        assert_eq!(bad(|k| k.machine8 = "0123ABCD".into()), "machine8");
        assert_eq!(bad(|k| k.machine8 = "0123abc".into()), "machine8");
        assert_eq!(bad(|k| k.first = 0), "first_seq");
        assert_eq!(bad(|k| k.last = 4), "last_seq");
        k().validate().unwrap();
        assert!(is_date("2024-02-29") && !is_date("2023-02-29"));
    }
}
