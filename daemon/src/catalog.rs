//! The products this daemon knows: their manifests (`PRODUCT.toml`, the
//! format is in `telemetry_sink::manifest`), loaded from the catalogue
//! directory at start; the `cfdev` example is built in. An event whose
//! product, name, data key or value type is not in its manifest is rejected
//! with a message that says which and where the manifest is.

use std::collections::BTreeMap;
use std::path::Path;
use telemetry_proto::WireEvent;
pub use telemetry_sink::manifest::{Manifest, ManifestError as CatalogError, Rejection};

/// All loaded manifests.
#[derive(Debug, Clone, Default)]
pub struct Catalogues {
    by_product: BTreeMap<String, Manifest>,
    dir: String,
}

impl Catalogues {
    /// The built-in manifests, then every `*.toml` in `dir` (a missing
    /// directory is fine; a file there replaces a built-in of the same
    /// product).
    pub fn load(dir: &Path) -> Result<Catalogues, CatalogError> {
        let mut cats = Catalogues {
            by_product: BTreeMap::new(),
            dir: dir.display().to_string(),
        };
        let cfdev = Manifest::builtin_cfdev();
        cats.by_product.insert(cfdev.product.clone(), cfdev);
        for manifest in telemetry_sink::manifest::load_dir(dir)? {
            let manifest = manifest?;
            for warning in &manifest.warnings {
                tracing::warn!(manifest = %manifest.source_name, "{warning}");
            }
            cats.by_product.insert(manifest.product.clone(), manifest);
        }
        Ok(cats)
    }

    /// Product names with a manifest.
    pub fn products(&self) -> impl Iterator<Item = &str> {
        self.by_product.keys().map(String::as_str)
    }

    /// A product's manifest.
    pub fn get(&self, product: &str) -> Option<&Manifest> {
        self.by_product.get(product)
    }

    /// Check an event against its product's catalogue.
    pub fn check(&self, ev: &WireEvent) -> Result<(), Rejection> {
        self.by_product
            .get(&ev.product)
            .ok_or_else(|| Rejection::UnknownProduct {
                product: ev.product.clone(),
                dir: self.dir.clone(),
            })?
            .check(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_manifests_join_the_builtin_and_unknown_products_name_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mytool.toml"),
            "product = \"mytool\"\n[events.ran]\n",
        )
        .unwrap();
        let cats = Catalogues::load(dir.path()).unwrap();
        assert_eq!(cats.products().collect::<Vec<_>>(), ["cfdev", "mytool"]);
        let mut e = WireEvent {
            id: uuid::Uuid::nil(),
            event: "ran".into(),
            product: "mytool".into(),
            build: "1".into(),
            timestamp_us: 1_800_000_000_000_000,
            data: Default::default(),
        };
        cats.check(&e).unwrap();
        e.product = "other".into();
        let err = cats.check(&e).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        std::fs::write(dir.path().join("bad.toml"), "product = \"other\"\n").unwrap();
        let err = Catalogues::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("product"), "{err}");
    }
}
