//! Event catalogues: per product, the events and data keys it may send.
//!
//! A catalogue is a TOML file named `PRODUCT.toml` (see `catalog/cfdev.toml`
//! for the format). The daemon loads every `*.toml` in the catalogue
//! directory at start; the `cfdev` example is built in. An event whose
//! product, name, data key or value type is not in the catalogue is rejected
//! with a message that says which and where the catalogue is.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use telemetry_proto::{Value, WireEvent};

/// The built-in example catalogue.
pub const CFDEV: &str = include_str!("../../catalog/cfdev.toml");

/// The event the daemon records when a product is turned off.
pub const TELEMETRY_OFF: &str = "telemetry_off";

/// A catalogue file that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The directory or file could not be read.
    #[error("cannot read event catalogue {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid catalogue.
    #[error("event catalogue {path}: {message}")]
    Invalid {
        /// The path.
        path: PathBuf,
        /// What is wrong (names the key).
        message: String,
    },
}

/// Why an event does not fit its product's catalogue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No catalogue for the product.
    #[error("no event catalogue for product {product:?}; add {product}.toml to {dir}")]
    UnknownProduct {
        /// The product.
        product: String,
        /// Where catalogues are looked for.
        dir: String,
    },
    /// The event is not listed.
    #[error("product {product:?} has no event {event:?} in its catalogue ({source_name})")]
    UnknownEvent {
        /// The product.
        product: String,
        /// The event name.
        event: String,
        /// The catalogue's file.
        source_name: String,
    },
    /// A data key is not listed for the event.
    #[error("event {event:?} has no data key {key:?} in the catalogue ({source_name})")]
    UnknownKey {
        /// The event.
        event: String,
        /// The key.
        key: String,
        /// The catalogue's file.
        source_name: String,
    },
    /// A value has the wrong type or is out of range.
    #[error("event {event:?}, data key {key:?}: {expected}")]
    BadValue {
        /// The event.
        event: String,
        /// The key.
        key: String,
        /// What the catalogue allows.
        expected: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCatalogue {
    product: String,
    #[serde(default)]
    events: BTreeMap<String, FileEvent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEvent {
    #[serde(default)]
    #[allow(dead_code)] // documentation for people reading the file
    description: Option<String>,
    #[serde(default)]
    data: BTreeMap<String, FieldType>,
}

/// The type a data key must have.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum FieldType {
    /// One of a fixed set of strings.
    Enum {
        /// Allowed values.
        values: Vec<String>,
    },
    /// A string of at most `max_len` bytes (default 64).
    String {
        /// Length limit.
        #[serde(default = "default_max_len")]
        max_len: usize,
    },
    /// An integer, optionally bounded.
    Int {
        /// Smallest allowed.
        #[serde(default)]
        min: Option<i64>,
        /// Largest allowed.
        #[serde(default)]
        max: Option<i64>,
    },
    /// A boolean.
    Bool,
}

fn default_max_len() -> usize {
    64
}

/// One product's catalogue.
#[derive(Debug, Clone)]
pub struct Catalogue {
    /// Where it came from (a path, or "built-in").
    pub source_name: String,
    events: BTreeMap<String, BTreeMap<String, FieldType>>,
}

/// All loaded catalogues.
#[derive(Debug, Clone, Default)]
pub struct Catalogues {
    by_product: BTreeMap<String, Catalogue>,
    dir: String,
}

fn parse(
    text: &str,
    path: &Path,
    expect_product: Option<&str>,
) -> Result<(String, Catalogue), CatalogError> {
    let invalid = |message: String| CatalogError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let file: FileCatalogue =
        toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end().to_string()))?;
    let limits = telemetry_proto::Limits::default();
    telemetry_proto::validate_name("product", &file.product, &limits)
        .map_err(|e| invalid(format!("`product`: {e}")))?;
    if let Some(expected) = expect_product {
        if expected != file.product {
            return Err(invalid(format!(
                "`product` is {:?} but the file is named {expected}.toml; they must match",
                file.product
            )));
        }
    }
    let mut events = BTreeMap::new();
    for (name, ev) in file.events {
        telemetry_proto::validate_name("event", &name, &limits)
            .map_err(|e| invalid(format!("`events.{name}`: {e}")))?;
        for (key, ty) in &ev.data {
            telemetry_proto::validate_name("data key", key, &limits)
                .map_err(|e| invalid(format!("`events.{name}.data.{key}`: {e}")))?;
            if let FieldType::Enum { values } = ty {
                if values.is_empty() {
                    return Err(invalid(format!(
                        "`events.{name}.data.{key}`: an enum needs at least one value"
                    )));
                }
            }
        }
        events.insert(name, ev.data);
    }
    Ok((
        file.product,
        Catalogue {
            source_name: path.display().to_string(),
            events,
        },
    ))
}

impl Catalogues {
    /// The built-in catalogues, then every `*.toml` in `dir` (a missing
    /// directory is fine; a file there replaces a built-in of the same
    /// product).
    pub fn load(dir: &Path) -> Result<Catalogues, CatalogError> {
        let mut cats = Catalogues {
            by_product: BTreeMap::new(),
            dir: dir.display().to_string(),
        };
        let (product, cat) = parse(CFDEV, Path::new("built-in cfdev.toml"), Some("cfdev"))?;
        cats.by_product.insert(product, cat);
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(cats),
            Err(source) => {
                return Err(CatalogError::Read {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|source| CatalogError::Read {
                path: path.clone(),
                source,
            })?;
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (product, cat) = parse(&text, &path, Some(&stem))?;
            cats.by_product.insert(product, cat);
        }
        Ok(cats)
    }

    /// Product names with a catalogue.
    pub fn products(&self) -> impl Iterator<Item = &str> {
        self.by_product.keys().map(String::as_str)
    }

    /// A product's catalogue.
    pub fn get(&self, product: &str) -> Option<&Catalogue> {
        self.by_product.get(product)
    }

    /// Check an event against its product's catalogue.
    pub fn check(&self, ev: &WireEvent) -> Result<(), Rejection> {
        let cat = self
            .by_product
            .get(&ev.product)
            .ok_or_else(|| Rejection::UnknownProduct {
                product: ev.product.clone(),
                dir: self.dir.clone(),
            })?;
        let fields = cat
            .events
            .get(&ev.event)
            .ok_or_else(|| Rejection::UnknownEvent {
                product: ev.product.clone(),
                event: ev.event.clone(),
                source_name: cat.source_name.clone(),
            })?;
        for (key, value) in &ev.data {
            let ty = fields.get(key).ok_or_else(|| Rejection::UnknownKey {
                event: ev.event.clone(),
                key: key.clone(),
                source_name: cat.source_name.clone(),
            })?;
            let bad = |expected: String| Rejection::BadValue {
                event: ev.event.clone(),
                key: key.clone(),
                expected,
            };
            match (ty, value) {
                (FieldType::Enum { values }, Value::Str(s)) if values.contains(s) => {}
                (FieldType::Enum { values }, _) => {
                    return Err(bad(format!("must be one of {}", values.join(", "))))
                }
                (FieldType::String { max_len }, Value::Str(s)) if s.len() <= *max_len => {}
                (FieldType::String { max_len }, _) => {
                    return Err(bad(format!("must be text of at most {max_len} bytes")))
                }
                (FieldType::Int { min, max }, Value::Int(i))
                    if min.is_none_or(|m| *i >= m) && max.is_none_or(|m| *i <= m) => {}
                (FieldType::Int { min, max }, _) => {
                    let range = match (min, max) {
                        (Some(a), Some(b)) => format!(" from {a} to {b}"),
                        (Some(a), None) => format!(" ≥ {a}"),
                        (None, Some(b)) => format!(" ≤ {b}"),
                        (None, None) => String::new(),
                    };
                    return Err(bad(format!("must be an integer{range}")));
                }
                (FieldType::Bool, Value::Bool(_)) => {}
                (FieldType::Bool, _) => return Err(bad("must be true or false".into())),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &[(&str, Value)]) -> WireEvent {
        WireEvent {
            id: uuid::Uuid::nil(),
            event: event.into(),
            product: "cfdev".into(),
            build: "1".into(),
            timestamp_us: 1_800_000_000_000_000,
            data: data
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    #[test]
    fn builtin_cfdev_has_the_seeds_17_events() {
        let cats = Catalogues::load(Path::new("/nonexistent")).unwrap();
        let cat = cats.get("cfdev").unwrap();
        let names: Vec<&str> = cat.events.keys().map(String::as_str).collect();
        assert_eq!(names.len(), 17, "{names:?}");
        for n in [
            "start_begin",
            "start_end",
            "error",
            "stop",
            "uninstall",
            "app_created",
            "route_created",
            "deployed_service",
            "service_created",
            "user_provided_service_created",
            "app_bound_to_service",
            "app_restage",
            "org_created",
            "space_created",
            "user_created",
            "bosh",
            "telemetry_off",
        ] {
            assert!(names.contains(&n), "{n} missing");
        }
    }

    #[test]
    fn checks_names_keys_types_and_ranges() {
        let cats = Catalogues::load(Path::new("/nonexistent")).unwrap();
        cats.check(&ev("error", &[("kind", Value::Str("timeout".into()))]))
            .unwrap();
        cats.check(&ev("stop", &[])).unwrap();
        let err = cats
            .check(&ev(
                "error",
                &[("kind", Value::Str("/home/alice/x: denied".into()))],
            ))
            .unwrap_err();
        assert!(err.to_string().contains("must be one of"), "{err}");
        assert!(matches!(
            cats.check(&ev("nope", &[])),
            Err(Rejection::UnknownEvent { .. })
        ));
        assert!(matches!(
            cats.check(&ev("stop", &[("path", Value::Str("x".into()))])),
            Err(Rejection::UnknownKey { .. })
        ));
        assert!(matches!(
            cats.check(&ev("start_end", &[("duration_s", Value::Int(-1))])),
            Err(Rejection::BadValue { .. })
        ));
        assert!(matches!(
            cats.check(&ev("start_end", &[("success", Value::Int(1))])),
            Err(Rejection::BadValue { .. })
        ));
        let mut other = ev("stop", &[]);
        other.product = "other".into();
        let err = cats.check(&other).unwrap_err().to_string();
        assert!(err.contains("/nonexistent"), "{err}");
    }

    #[test]
    fn directory_catalogues_load_and_bad_ones_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mytool.toml"),
            "product = \"mytool\"\n[events.ran]\ndata.flag = { type = \"bool\" }\ndata.name = { type = \"string\", max_len = 3 }\n",
        )
        .unwrap();
        let cats = Catalogues::load(dir.path()).unwrap();
        let mut e = ev("ran", &[("name", Value::Str("abcd".into()))]);
        e.product = "mytool".into();
        assert!(cats.check(&e).is_err());
        e.data.insert("name".into(), Value::Str("abc".into()));
        cats.check(&e).unwrap();

        std::fs::write(dir.path().join("bad.toml"), "product = \"other\"\n").unwrap();
        let err = Catalogues::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("product"), "{err}");
        std::fs::write(
            dir.path().join("bad.toml"),
            "product = \"bad\"\n[events.x]\ndata.k = { type = \"float\" }\n",
        )
        .unwrap();
        let err = Catalogues::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("float"), "{err}");
    }
}
