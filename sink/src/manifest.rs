//! Product manifests: one TOML file per product (`PRODUCT.toml`), shipped
//! by the product's vendor with their CLI.
//!
//! A manifest is the event catalogue (which events and data keys the
//! product may send, and their types) plus two optional tables:
//! `[upload]`, where the product's batches go and how they authenticate,
//! and `[consent]`, the wording of the consent prompt and the catalogue's
//! version. See `catalog/cfdev.toml` for the format.
//!
//! # Older binaries, newer manifests
//! Keys and tables this version does not know are ignored and reported as
//! [`Manifest::warnings`], so a manifest written for a newer telemetryd
//! still works with an older one. Only what an older binary cannot honour
//! safely makes a manifest invalid: an `auth` mode it does not know (it
//! cannot upload the way the vendor intends), or a type it cannot check.
//!
//! Errors name the file and, where the TOML parser knows it, the line.

use crate::s3::S3Settings;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use telemetry_proto::{Value, WireEvent};

/// The built-in example manifest (the seed product, `cfdev`).
pub const CFDEV: &str = include_str!("../../catalog/cfdev.toml");

/// The event the daemon records when a product is turned off.
pub const TELEMETRY_OFF: &str = "telemetry_off";

/// The event the daemon records (and uploads, under the old anonymous ID)
/// when the user asks for a product's data to be forgotten: the report
/// leaves out every event of that ID, and maintainers delete them.
pub const TELEMETRY_FORGET: &str = "telemetry_forget";

/// The event the daemon adds to a batch to count events it had to drop.
pub const TELEMETRY_DROPPED: &str = "telemetry_dropped";

/// Events only the daemon records: a client that sends one is refused, or
/// it could fake a user's off, a forget (the report would leave out every
/// event of that ID) or a drop count.
pub const DAEMON_EVENTS: [&str; 3] = [TELEMETRY_OFF, TELEMETRY_FORGET, TELEMETRY_DROPPED];

/// Longest accepted consent prompt, in bytes.
pub const MAX_PROMPT_LEN: usize = 4096;

/// A manifest that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read product manifest {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A manifest directory could not be listed.
    #[error("cannot list the product manifest directory {path}: {source}")]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid manifest.
    #[error("product manifest {path}: {message}")]
    Invalid {
        /// The path (or `built-in NAME.toml`).
        path: PathBuf,
        /// What is wrong (names the key, and the line where known).
        message: String,
    },
}

/// Why an event does not fit its product's catalogue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No manifest for the product.
    #[error("no product manifest for product {product:?}; add {product}.toml to {dir}")]
    UnknownProduct {
        /// The product.
        product: String,
        /// Where manifests are looked for.
        dir: String,
    },
    /// The event is not listed.
    #[error("product {product:?} has no event {event:?} in its catalogue ({source_name}){hint}")]
    UnknownEvent {
        /// The product.
        product: String,
        /// The event name.
        event: String,
        /// The manifest's file.
        source_name: String,
        /// The nearest listed name and the names listed ([`hint`]).
        hint: String,
    },
    /// A data key is not listed for the event.
    #[error("event {event:?} has no data key {key:?} in the catalogue ({source_name}){hint}")]
    UnknownKey {
        /// The event.
        event: String,
        /// The key.
        key: String,
        /// The manifest's file.
        source_name: String,
        /// The nearest listed key and the keys listed ([`hint`]).
        hint: String,
    },
    /// A value has the wrong type or is out of range.
    #[error("event {event:?}, data key {key:?}: {expected} (the catalogue {source_name})")]
    BadValue {
        /// The event.
        event: String,
        /// The key.
        key: String,
        /// What the catalogue allows.
        expected: String,
        /// The manifest's file.
        source_name: String,
    },
}

/// The type a data key must have.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawFieldType")]
pub enum FieldType {
    /// One of a fixed set of strings.
    Enum {
        /// Allowed values.
        values: Vec<String>,
    },
    /// A string of at most `max_len` bytes (default 64).
    String {
        /// Length limit.
        max_len: usize,
    },
    /// An integer, optionally bounded.
    Int {
        /// Smallest allowed.
        min: Option<i64>,
        /// Largest allowed.
        max: Option<i64>,
        /// Where the report's distribution cuts (`bins = [0, 10, 60]`:
        /// strictly ascending edges); without them the report derives its
        /// bins from `min` and `max` (see telemetry-report's `data`).
        bins: Option<Vec<i64>>,
    },
    /// A boolean.
    Bool,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum RawFieldType {
    Enum {
        values: Vec<String>,
    },
    String {
        #[serde(default = "default_max_len")]
        max_len: usize,
    },
    Int {
        #[serde(default)]
        min: Option<i64>,
        #[serde(default)]
        max: Option<i64>,
        #[serde(default)]
        bins: Option<Vec<i64>>,
    },
    Bool,
}

fn default_max_len() -> usize {
    64
}

impl TryFrom<RawFieldType> for FieldType {
    type Error = String;
    fn try_from(raw: RawFieldType) -> Result<Self, String> {
        Ok(match raw {
            RawFieldType::Enum { values } if values.is_empty() => {
                return Err("an enum needs at least one value".into())
            }
            RawFieldType::Enum { values } => FieldType::Enum { values },
            RawFieldType::String { max_len } => FieldType::String { max_len },
            RawFieldType::Int {
                min: Some(a),
                max: Some(b),
                ..
            } if a > b => return Err(format!("int range is empty: min {a} > max {b}")),
            RawFieldType::Int {
                bins: Some(bins), ..
            } if bins.is_empty() || bins.windows(2).any(|w| w[0] >= w[1]) => {
                return Err(format!(
                    "bins {bins:?} must be at least one edge, strictly ascending"
                ))
            }
            RawFieldType::Int { min, max, bins } => FieldType::Int { min, max, bins },
            RawFieldType::Bool => FieldType::Bool,
        })
    }
}

/// Keys of a data field's table that its `type` does not take (`max_length`
/// for `max_len`, `minimum` on an int, `values` on a string), one warning
/// each. Field tables are read through their `type` tag, which hides their
/// keys from the unknown-key report, and a slip there leaves the field
/// without the limit its vendor meant. `text` has parsed already.
fn field_key_warnings(text: &str) -> Vec<String> {
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let Some(events) = doc.get("events").and_then(toml::Value::as_table) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (event, ev) in events {
        let Some(data) = ev.get("data").and_then(toml::Value::as_table) else {
            continue;
        };
        for (key, field) in data {
            let Some(field) = field.as_table() else {
                continue;
            };
            let kind = field
                .get("type")
                .and_then(toml::Value::as_str)
                .unwrap_or("");
            let takes: &[&str] = match kind {
                "enum" => &["values"],
                "string" => &["max_len"],
                "int" => &["min", "max", "bins"],
                "bool" => &[],
                // An unknown type is an error of its own.
                _ => continue,
            };
            for k in field
                .keys()
                .filter(|k| *k != "type" && !takes.contains(&k.as_str()))
            {
                let keys = match takes {
                    [] => "no other key".to_string(),
                    many => format!(
                        "only {}",
                        many.iter()
                            .map(|t| format!("`{t}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                out.push(format!(
                    "`events.{event}.data.{key}.{k}` ignored: {} {kind} field takes {keys} beside `type` (a limit meant by it is not applied)",
                    if kind.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
                ));
            }
        }
    }
    out
}

/// Whether a string value is a file path, which a catalogue's string may
/// not carry whatever its author meant (a path names its user, and their
/// projects): absolute with a directory in it (`/home/a`, not `/help` or
/// `/`), a drive's (`C:\x`, `d:/x`), a share's (`\\server\x`), from a
/// home (`~/x`, `~alice\x`; a lone `~1.2` is a version range), or a
/// `file:` URL.
fn looks_like_a_path(s: &str) -> bool {
    let s = s.trim();
    let b = s.as_bytes();
    let sep = |c: u8| c == b'/' || c == b'\\';
    // `/a/b`, `\a\b`: a directory and something in it (`//x` is not).
    let rooted = b.first().is_some_and(|&c| sep(c))
        && b.get(1).is_some_and(|&c| !sep(c))
        && b[1..]
            .iter()
            .position(|&c| sep(c))
            .is_some_and(|i| i + 2 < b.len());
    let unc = s.starts_with("\\\\") && s.len() > 2;
    let drive = b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && sep(b[2]);
    let home = b.first() == Some(&b'~') && b.iter().any(|&c| sep(c));
    let url = s.len() >= 5 && s[..5].eq_ignore_ascii_case("file:");
    rooted || unc || drive || home || url
}

/// What of a type the protocol's limits refuse at every emit, if anything.
fn beyond_the_limits(ty: &FieldType, limits: &telemetry_proto::Limits) -> Option<String> {
    let max = limits.max_string_len;
    match ty {
        FieldType::String { max_len } if *max_len > max => Some(format!(
            "max_len {max_len}, but a string value has at most {max} bytes (longer ones are refused)"
        )),
        FieldType::Enum { values } => {
            let mut seen = std::collections::BTreeSet::new();
            for v in values {
                if v.len() > max || v.chars().any(char::is_control) {
                    return Some(format!(
                        "enum value {v:?} can never be sent (a value is at most {max} bytes of printable text)"
                    ));
                }
                if !seen.insert(v) {
                    return Some(format!("enum value {v:?} is listed twice"));
                }
            }
            None
        }
        _ => None,
    }
}

/// Where a product's batches go and how they authenticate, as its vendor's
/// manifest says. The AWS credential chain is deliberately not a choice
/// here: on an end user's machine it would sign with that user's own AWS
/// identity and show it to the vendor. It is for the operator's own
/// configuration only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upload {
    /// Unsigned `PutObject` to a bucket whose policy allows anonymous
    /// writes under the prefix.
    Anonymous(S3Settings),
    /// Ask the vendor's broker (`telemetry-broker`) for a presigned PUT.
    /// Which bucket it writes to is the broker's business.
    Broker {
        /// The broker's base URL (`https://...`).
        url: String,
    },
}

#[derive(Deserialize)]
#[serde(try_from = "RawUpload")]
struct UploadTable(Upload);

#[derive(Deserialize)]
struct RawUpload {
    auth: String,
    bucket: Option<String>,
    prefix: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    broker: Option<String>,
}

impl TryFrom<RawUpload> for UploadTable {
    type Error = String;
    fn try_from(raw: RawUpload) -> Result<Self, String> {
        let s3_only = |mode: &str| -> Result<(), String> {
            for (key, set) in [
                ("bucket", raw.bucket.is_some()),
                ("prefix", raw.prefix.is_some()),
                ("endpoint", raw.endpoint.is_some()),
                ("region", raw.region.is_some()),
                ("path_style", raw.path_style.is_some()),
            ] {
                if set {
                    return Err(format!(
                        "`upload.{key}` does not apply with auth = \"{mode}\": the broker owns its bucket"
                    ));
                }
            }
            Ok(())
        };
        match raw.auth.as_str() {
            "anonymous" => {
                if raw.broker.is_some() {
                    return Err("`upload.broker` applies only with auth = \"broker\"".into());
                }
                let bucket = raw
                    .bucket
                    .ok_or("`upload.bucket` is required with auth = \"anonymous\"")?;
                let bucket = crate::s3::parse_bucket(&bucket)
                    .map_err(|e| format!("`upload.bucket`: {e}"))?;
                let endpoint = raw
                    .endpoint
                    .map(|e| crate::s3::parse_secure_endpoint(&e))
                    .transpose()
                    .map_err(|e| format!("`upload.endpoint`: {e}"))?;
                Ok(UploadTable(Upload::Anonymous(S3Settings {
                    bucket,
                    prefix: raw.prefix.unwrap_or_default().trim_matches('/').to_string(),
                    path_style: raw.path_style.unwrap_or(endpoint.is_some()),
                    endpoint,
                    region: raw.region.filter(|r| !r.is_empty()),
                })))
            }
            "broker" => {
                s3_only("broker")?;
                let url = raw
                    .broker
                    .ok_or("`upload.broker` (the broker's URL) is required with auth = \"broker\"")?;
                let url = crate::s3::parse_secure_endpoint(&url)
                    .map_err(|e| format!("`upload.broker`: {e}"))?;
                Ok(UploadTable(Upload::Broker { url }))
            }
            "aws" => Err(
                "`upload.auth = \"aws\"` is not allowed in a product manifest: it would sign uploads with the end user's own AWS identity. Use \"broker\" or \"anonymous\"; the AWS chain is set in the daemon's own configuration ([s3] or TELEMETRY_S3_*)"
                    .into(),
            ),
            other => Err(format!(
                "`upload.auth = {other:?}` is not a mode this telemetryd knows (anonymous, broker); the manifest may need a newer telemetryd"
            )),
        }
    }
}

#[derive(Deserialize, Default)]
struct ConsentTable {
    #[serde(default = "one")]
    version: u32,
    prompt: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
struct RawManifest {
    product: String,
    #[serde(default)]
    events: BTreeMap<String, RawEvent>,
    upload: Option<UploadTable>,
    consent: Option<ConsentTable>,
}

#[derive(Deserialize)]
struct RawEvent {
    // `description` is documentation for people reading the file; it is
    // accepted and not kept.
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    data: BTreeMap<String, FieldType>,
}

/// One product's manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The product's name.
    pub product: String,
    /// Where it came from (a path, or `built-in NAME.toml`).
    pub source_name: String,
    /// The catalogue's version (`consent.version`, default 1): consent is
    /// given for a version, and events a newer version adds wait for it.
    pub version: u32,
    /// The consent prompt's wording (`consent.prompt`), if the vendor gave
    /// one.
    pub prompt: Option<String>,
    /// Where batches go; `None` means the daemon's own destination.
    pub upload: Option<Upload>,
    /// Event name → data key → type.
    pub events: BTreeMap<String, BTreeMap<String, FieldType>>,
    /// Keys and tables this version ignored (the manifest may be newer).
    pub warnings: Vec<String>,
}

/// A TOML error on one line: "line L, column C: MESSAGE (in `THE LINE`)".
/// The parser's own text draws a caret under the column on lines of its
/// own, which a one-line message (a refusal, `status`, a check) garbles.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end().replace('\n', " ");
    // An empty span at the start is the whole document's (a missing
    // top-level key): no line to point at.
    let Some(at) = e
        .span()
        .filter(|s| !(s.start == 0 && s.is_empty()))
        .map(|s| s.start.min(text.len()))
    else {
        return message;
    };
    // A span inside a character would panic the slice: say less instead.
    let Some(before) = text.get(..at) else {
        return message;
    };
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[start..at].chars().count() + 1;
    let source = text[start..].lines().next().unwrap_or_default().trim();
    if source.is_empty() {
        // At the end of the text (an unterminated string, say).
        return format!("line {line}, column {column}: {message}");
    }
    format!(
        "line {line}, column {column}: {message} (in `{}`)",
        telemetry_proto::printable(source, 120)
    )
}

impl Manifest {
    /// Parse a manifest's text. `source` names it in messages;
    /// `expect_product` is the file's stem, which must match `product`.
    pub fn parse(
        text: &str,
        source: &Path,
        expect_product: Option<&str>,
    ) -> Result<Manifest, ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            path: source.to_path_buf(),
            message,
        };
        let mut ignored = Vec::new();
        let de = toml::Deserializer::new(text);
        let raw: RawManifest = serde_ignored::deserialize(de, |path| {
            // `?` marks an `Option` in serde_ignored's paths; the file
            // has no such level.
            ignored.push(path.to_string().replace(".?", "").replace("?.", ""))
        })
        .map_err(|e| invalid(toml_error(text, &e)))?;
        let limits = telemetry_proto::Limits::default();
        telemetry_proto::validate_name("product", &raw.product, &limits)
            .map_err(|e| invalid(format!("`product`: {e}")))?;
        if let Some(expected) = expect_product {
            if expected != raw.product {
                return Err(invalid(format!(
                    "`product` is {:?} but the file is named {expected}.toml; they must match",
                    raw.product
                )));
            }
        }
        // What the protocol's limits refuse at every emit is said when the
        // manifest is read (the vendor learns it from `--check-config`, not
        // from users' refusals); warnings, not errors: a manifest an older
        // daemon took must not disable its product after an upgrade.
        let mut limit_warnings = field_key_warnings(text);
        let mut events = BTreeMap::new();
        for (name, ev) in raw.events {
            telemetry_proto::validate_name("event", &name, &limits)
                .map_err(|e| invalid(format!("`events.{name}`: {e}")))?;
            if ev.data.len() > limits.max_data_entries {
                limit_warnings.push(format!(
                    "`events.{name}`: {} data keys, but an event carries at most {}",
                    ev.data.len(),
                    limits.max_data_entries
                ));
            }
            for (key, ty) in &ev.data {
                telemetry_proto::validate_name("data key", key, &limits)
                    .map_err(|e| invalid(format!("`events.{name}.data.{key}`: {e}")))?;
                if let Some(w) = beyond_the_limits(ty, &limits) {
                    limit_warnings.push(format!("`events.{name}.data.{key}`: {w}"));
                }
            }
            events.insert(name, ev.data);
        }
        let mut warnings: Vec<String> = ignored
            .into_iter()
            .map(|key| match key.split('.').next() {
                // A slip of `[events.NAME]`: say so, as its events would
                // all be refused as not in the catalogue.
                Some("event" | "Events" | "evets" | "evnets") => {
                    format!("unknown key `{key}` ignored: did you mean `[events.NAME]`?")
                }
                _ => format!("unknown key `{key}` ignored (written for a newer telemetryd?)"),
            })
            .collect();
        warnings.append(&mut limit_warnings);
        if events.is_empty() {
            warnings.push(format!(
                "no events: every event of {} is refused until the manifest lists them (`[events.NAME]`)",
                raw.product
            ));
        }
        let consent = raw.consent.unwrap_or(ConsentTable {
            version: 1,
            prompt: None,
        });
        if consent.version == 0 {
            return Err(invalid("`consent.version`: must be at least 1".to_string()));
        }
        if consent
            .prompt
            .as_ref()
            .is_some_and(|p| p.len() > MAX_PROMPT_LEN)
        {
            return Err(invalid(format!(
                "`consent.prompt`: longer than {MAX_PROMPT_LEN} bytes"
            )));
        }
        Ok(Manifest {
            product: raw.product,
            source_name: source.display().to_string(),
            version: consent.version,
            prompt: consent.prompt,
            upload: raw.upload.map(|u| u.0),
            events,
            warnings,
        })
    }

    /// The built-in `cfdev` manifest.
    pub fn builtin_cfdev() -> Manifest {
        Manifest::parse(CFDEV, Path::new("built-in cfdev.toml"), Some("cfdev"))
            .expect("the built-in cfdev manifest is valid (tested)")
    }

    /// Read and parse `path`; its stem must be the product's name.
    ///
    /// Read as config files are (`read_config_text`): at most 1 MiB,
    /// opened non-blocking, and never a FIFO, a socket or a directory, so
    /// one of those or a link to `/dev/zero` in a manifest's place makes
    /// that one product's manifest broken, saying what it is, instead of
    /// stalling or filling the daemon that reads the catalogue.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = telemetry_platform::fs::read_config_text(path).map_err(|source| {
            ManifestError::Read {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Manifest::parse(&text, path, Some(&stem))
    }

    /// Check an event against this catalogue.
    pub fn check(&self, ev: &WireEvent) -> Result<(), Rejection> {
        let fields = self
            .events
            .get(&ev.event)
            .ok_or_else(|| Rejection::UnknownEvent {
                product: ev.product.clone(),
                event: ev.event.clone(),
                source_name: self.source_name.clone(),
                hint: hint(&ev.event, self.events.keys(), "events"),
            })?;
        for (key, value) in &ev.data {
            let ty = fields.get(key).ok_or_else(|| Rejection::UnknownKey {
                event: ev.event.clone(),
                key: key.clone(),
                source_name: self.source_name.clone(),
                hint: hint(key, fields.keys(), "data keys"),
            })?;
            let bad = |expected: String| Rejection::BadValue {
                event: ev.event.clone(),
                key: key.clone(),
                expected,
                source_name: self.source_name.clone(),
            };
            match (ty, value) {
                (FieldType::Enum { values }, Value::Str(s)) if values.contains(s) => {}
                (FieldType::Enum { values }, _) => {
                    return Err(bad(format!("must be one of {}", values.join(", "))))
                }
                (FieldType::String { .. }, Value::Str(s)) if looks_like_a_path(s) => {
                    return Err(bad(
                        "looks like a file path (/dir/file, ~/x, C:\\x, \\\\server\\x or file:); telemetry never carries paths, which name users and their files".into(),
                    ))
                }
                (FieldType::String { max_len }, Value::Str(s)) if s.len() <= *max_len => {}
                (FieldType::String { max_len }, _) => {
                    return Err(bad(format!("must be text of at most {max_len} bytes")))
                }
                (FieldType::Int { min, max, .. }, Value::Int(i))
                    if min.is_none_or(|m| *i >= m) && max.is_none_or(|m| *i <= m) => {}
                (FieldType::Int { min, max, .. }, _) => {
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

/// Every `*.toml` in `dir`, sorted by path, each parsed or with its error.
/// A missing directory holds no manifests; an unreadable one is an error.
pub fn load_dir(dir: &Path) -> Result<Vec<Result<Manifest, ManifestError>>, ManifestError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ManifestError::ReadDir {
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
    Ok(paths.iter().map(|p| Manifest::load(p)).collect())
}

/// What a refusal of an unlisted `name` adds, for the CLI author who
/// misspelt it: the listed name nearest to it, when one is a slip away
/// (a letter or two), and the first names listed. The refusal is answered
/// to the emitting client and shown by `status`, so it stays short.
fn hint<'a>(name: &str, listed: impl Iterator<Item = &'a String>, what: &str) -> String {
    const SHOWN: usize = 8;
    let listed: Vec<&String> = listed.collect();
    if listed.is_empty() {
        return format!("; it lists no {what}");
    }
    // A slip: at most a third of the name's letters, and at least one.
    // Names whose length differs by more cannot be one, and are skipped
    // unmeasured: any local client can have this run, on manifests of
    // thousands of names.
    let len = name.chars().count();
    let slip = (len / 3).max(1);
    let near = listed
        .iter()
        .filter(|l| l.chars().count().abs_diff(len) <= slip)
        .map(|l| (edit_distance(name, l), *l))
        .filter(|(d, _)| *d <= slip)
        .min_by_key(|(d, _)| *d)
        .map(|(_, l)| format!("; did you mean {l:?}?"))
        .unwrap_or_default();
    let mut names: Vec<String> = listed.iter().take(SHOWN).map(|l| l.to_string()).collect();
    if listed.len() > SHOWN {
        names.push(format!("and {} more", listed.len() - SHOWN));
    }
    format!("{near}; its {what}: {}", names.join(", "))
}

/// Edit distance in characters, a swap of two neighbours counting as one
/// edit (optimal string alignment: `stpo` is one slip from `stop`). Names
/// are at most 64 bytes, so the table is small.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests;
