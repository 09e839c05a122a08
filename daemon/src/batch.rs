//! Batch objects: their keys (the layout is `telemetry_sink::key`) and
//! body encoding.

use std::sync::Arc;

/// Builds object keys. `machine_id` maps a product to its anonymous ID.
#[derive(Clone)]
pub struct KeyLayout {
    /// Key prefix without leading/trailing `/`; empty for none.
    pub prefix: String,
    /// Product → anonymous machine ID (hex).
    pub machine_id: Arc<dyn Fn(&str) -> String + Send + Sync>,
}

impl KeyLayout {
    /// The object key for a batch of `product` sealed on `date`
    /// (`YYYY-MM-DD`) holding events `first..=last`.
    pub fn key(&self, product: &str, date: &str, first: i64, last: i64) -> String {
        let machine = (self.machine_id)(product);
        telemetry_sink::BatchKey {
            product: product.to_string(),
            date: date.to_string(),
            machine8: machine[..machine.len().min(8)].to_string(),
            first,
            last,
        }
        .render(&self.prefix)
    }
}

/// zstd level: level 3 is zstd's default, a good ratio for repetitive
/// JSON at a small CPU cost.
const ZSTD_LEVEL: i32 = 3;

/// Compress an NDJSON body.
pub fn compress(ndjson: &[u8]) -> std::io::Result<Vec<u8>> {
    zstd::stream::encode_all(ndjson, ZSTD_LEVEL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout() {
        let layout = KeyLayout {
            prefix: "raw/cli".into(),
            machine_id: Arc::new(|p| format!("{p}0123456789")),
        };
        assert_eq!(
            layout.key("cfdev", "2026-11-27", 5, 9),
            "raw/cli/v1/product=cfdev/dt=2026-11-27/cfdev012-5-9.ndjson.zst"
        );
        let bare = KeyLayout {
            prefix: String::new(),
            ..layout
        };
        assert!(bare
            .key("p", "2026-01-01", 1, 1)
            .starts_with("v1/product=p/"));
    }

    #[test]
    fn compress_round_trips() {
        let body = b"{\"a\":1}\n".repeat(100);
        let z = compress(&body).unwrap();
        assert!(z.len() < body.len());
        assert_eq!(zstd::stream::decode_all(&z[..]).unwrap(), body);
    }
}
