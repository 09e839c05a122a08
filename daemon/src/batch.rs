//! Batch objects: their keys (the layout is `telemetry_sink::key`) and
//! body encoding.

use crate::uploader::destination::{DestId, Spec};
use std::sync::Arc;

/// Product → the destination its manifest names, if any.
pub type Route = Arc<dyn Fn(&str) -> Option<Spec> + Send + Sync>;

/// Builds object keys. `machine_id` maps a product to its anonymous ID.
#[derive(Clone)]
pub struct KeyLayout {
    /// Key prefix of the daemon's own destination, without leading or
    /// trailing `/`; empty for none.
    pub prefix: String,
    /// Product → anonymous machine ID (hex).
    pub machine_id: Arc<dyn Fn(&str) -> String + Send + Sync>,
    /// Product → the destination its manifest names, if any (else the
    /// daemon's own).
    pub route: Route,
}

impl KeyLayout {
    /// The object key for a batch of `product` sealed on `date`
    /// (`YYYY-MM-DD`) holding events `first..=last`, and the destination
    /// it is sealed for (its prefix is in the key).
    pub fn key(&self, product: &str, date: &str, first: i64, last: i64) -> (String, DestId) {
        let machine = (self.machine_id)(product);
        let spec = (self.route)(product);
        let prefix = spec.as_ref().map_or(self.prefix.as_str(), Spec::key_prefix);
        let key = telemetry_sink::BatchKey {
            product: product.to_string(),
            date: date.to_string(),
            machine8: machine[..machine.len().min(8)].to_string(),
            first,
            last,
        }
        .render(prefix);
        (key, spec.map(|s| s.to_text()))
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
            route: Arc::new(|p| {
                (p == "vendored").then(|| Spec::Anonymous {
                    bucket: "vendor".into(),
                    prefix: "in".into(),
                    endpoint: None,
                    region: None,
                    path_style: false,
                })
            }),
        };
        assert_eq!(
            layout.key("cfdev", "2026-11-27", 5, 9),
            (
                "raw/cli/v1/product=cfdev/dt=2026-11-27/cfdev012-5-9.ndjson.zst".to_string(),
                None
            )
        );
        let (key, dest) = layout.key("vendored", "2026-11-27", 5, 9);
        assert!(key.starts_with("in/v1/product=vendored/"), "{key}");
        assert!(dest.unwrap().contains(r#""bucket":"vendor""#));
        let bare = KeyLayout {
            prefix: String::new(),
            ..layout
        };
        assert!(bare
            .key("p", "2026-01-01", 1, 1)
            .0
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
