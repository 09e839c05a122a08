//! Batch objects: their keys (the layout is `telemetry_sink::key`) and
//! body encoding.

use crate::uploader::destination::{DestId, Spec};
use std::sync::Arc;

/// Where a product's batches go, as its manifest says now.
#[derive(Debug, Clone, PartialEq)]
pub enum Routing {
    /// The daemon's own destination (the manifest names none).
    Own,
    /// The destination the manifest names.
    To(Spec),
    /// Not known: the product's manifest is broken or gone. A batch sealed
    /// now (a final `telemetry_off` batch, a forget's marker) is held,
    /// [`UNROUTED`], until the manifest says where it goes: the daemon's
    /// own destination may be another party's bucket.
    Unknown,
}

/// Product → where its batches go now.
pub type Route = Arc<dyn Fn(&str) -> Routing + Send + Sync>;

/// The destination stored with a batch sealed while its product's
/// routing was [`Routing::Unknown`]: never uploaded as it is; the store
/// re-keys it when the manifest is usable again.
pub const UNROUTED: &str = "unrouted";

/// Builds object keys. `machine_id` maps a product to its anonymous ID.
#[derive(Clone)]
pub struct KeyLayout {
    /// Key prefix of the daemon's own destination, without leading or
    /// trailing `/`; empty for none.
    pub prefix: String,
    /// Product → anonymous machine ID (hex).
    pub machine_id: Arc<dyn Fn(&str) -> String + Send + Sync>,
    /// Product → where its batches go.
    pub route: Route,
}

impl KeyLayout {
    /// The object key for a batch of `product` sealed on `date`
    /// (`YYYY-MM-DD`) holding events `first..=last`, and the destination
    /// it is sealed for (its prefix is in the key).
    pub fn key(&self, product: &str, date: &str, first: i64, last: i64) -> (String, DestId) {
        let machine = (self.machine_id)(product);
        let key = telemetry_sink::BatchKey {
            product: product.to_string(),
            date: date.to_string(),
            machine8: machine[..machine.len().min(8)].to_string(),
            first,
            last,
        };
        self.place(&key, &(self.route)(product))
    }

    /// `key` placed for `routing`: its full key and destination. An
    /// unknown routing gets the daemon's own prefix and [`UNROUTED`]; the
    /// key is made again by [`KeyLayout::reroute`] once it is known.
    fn place(&self, key: &telemetry_sink::BatchKey, routing: &Routing) -> (String, DestId) {
        match routing {
            Routing::To(spec) => (key.render(spec.key_prefix()), Some(spec.to_text())),
            Routing::Own => (key.render(&self.prefix), None),
            Routing::Unknown => (key.render(&self.prefix), Some(UNROUTED.to_string())),
        }
    }

    /// The key and destination now for a batch held [`UNROUTED`] under
    /// `key`, or `None` while its product's routing is still unknown (or
    /// the key is not one this layout made).
    pub fn reroute(&self, product: &str, key: &str) -> Option<(String, DestId)> {
        let routing = (self.route)(product);
        if routing == Routing::Unknown {
            return None;
        }
        let (_, parsed) = telemetry_sink::BatchKey::parse(key)?;
        Some(self.place(&parsed, &routing))
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
            route: Arc::new(|p| match p {
                "vendored" => Routing::To(Spec::Anonymous {
                    bucket: "vendor".into(),
                    prefix: "in".into(),
                    endpoint: None,
                    region: None,
                    path_style: false,
                }),
                "broken" => Routing::Unknown,
                _ => Routing::Own,
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
    fn a_batch_sealed_while_its_routing_is_unknown_is_held_then_placed() {
        let routing = Arc::new(std::sync::Mutex::new(Routing::Unknown));
        let r = routing.clone();
        let layout = KeyLayout {
            prefix: "own".into(),
            machine_id: Arc::new(|_| "0123456789".into()),
            route: Arc::new(move |_| r.lock().unwrap().clone()),
        };
        let (held, dest) = layout.key("p", "2026-11-27", 5, 9);
        assert_eq!(dest.as_deref(), Some(UNROUTED));
        assert_eq!(layout.reroute("p", &held), None, "still unknown");
        let vendor = Spec::Broker {
            url: "https://broker.example".into(),
        };
        *routing.lock().unwrap() = Routing::To(vendor.clone());
        assert_eq!(
            layout.reroute("p", &held),
            Some((
                "v1/product=p/dt=2026-11-27/01234567-5-9.ndjson.zst".to_string(),
                Some(vendor.to_text())
            )),
            "the same date, machine and numbers, under the vendor's prefix"
        );
        *routing.lock().unwrap() = Routing::Own;
        assert_eq!(layout.reroute("p", &held), Some((held.clone(), None)));
        assert_eq!(layout.reroute("p", "not/a/key"), None);
    }

    #[test]
    fn compress_round_trips() {
        let body = b"{\"a\":1}\n".repeat(100);
        let z = compress(&body).unwrap();
        assert!(z.len() < body.len());
        assert_eq!(zstd::stream::decode_all(&z[..]).unwrap(), body);
    }
}
