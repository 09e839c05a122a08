//! The products this daemon knows: their manifests (`PRODUCT.toml`, the
//! format is in `telemetry_sink::manifest`), found on a search path and
//! picked up again when they change. An event whose product, name, data key
//! or value type is not in its manifest is rejected with a message that
//! says which and where the manifest is.
//!
//! # Search path
//! In order, the first directory holding `PRODUCT.toml` wins for that
//! product:
//! 1. the user's directory: `TELEMETRY_CATALOG_DIR` / `--catalog-dir` /
//!    `catalog_dir` if set (it *replaces* this entry), else
//!    `$XDG_CONFIG_HOME/telemetry/catalog/`;
//! 2. `DIR/telemetry/products/` for each `DIR` in `$XDG_DATA_DIRS`
//!    (default `/usr/local/share:/usr/share`), where vendors install the
//!    manifest with their CLI; on macOS also
//!    `/Library/Application Support/telemetry/products/`;
//! 3. the built-in `cfdev` example, unless a file named `cfdev.toml` came
//!    first.
//!
//! The override replaces only the user's directory: a vendor's manifest
//! installed system-wide still applies, and a user can still shadow it.
//!
//! # One bad file disables one product
//! A manifest that cannot be read or parsed is kept as that product's
//! error (named by the file's stem): its events are refused with the error,
//! which names the file and line, and `status` shows it. It still shadows
//! a valid manifest of the same product further down the path — the user
//! put it first to replace that one, so falling back would send what the
//! user meant to change. Every other product carries on.
//!
//! # Reloading
//! Files that appear, change or vanish are picked up without a restart:
//! on access, at most once per `recheck` (a second in the daemon), the
//! directories and their `*.toml` files are stat'ed (inode, size, mtime:
//! as the consent files are) and everything is loaded again if any
//! changed. That costs a few `stat`s per second under load and nothing
//! when idle; no file watcher is needed. Readers hold an `Arc` of one
//! complete load, so a reload never shows them half a search path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use telemetry_proto::WireEvent;
pub use telemetry_sink::manifest::{Manifest, ManifestError as CatalogError, Rejection};

/// The system manifest directories (see
/// [`telemetry_proto::paths::manifest_system_dirs`]), shared with
/// `telemetryctl`, which reads a vendor's question before any daemon runs.
pub use telemetry_proto::paths::manifest_system_dirs as system_dirs;

/// What the registry has for one product.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// A usable manifest.
    Ready(Arc<Manifest>),
    /// The product's first manifest on the path cannot be used.
    Broken {
        /// The file.
        source: String,
        /// Why (names the file and, where known, the line).
        error: String,
    },
    /// No manifest anywhere on the path.
    Unknown,
}

/// Why an event was refused by the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// The event does not fit a usable manifest, or there is none.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The product's manifest is broken: the product is disabled.
    #[error(
        "product {product:?} is disabled because its manifest cannot be used: {error}; {}",
        what_to_do(error)
    )]
    Disabled {
        /// The product.
        product: String,
        /// The manifest's error.
        error: String,
    },
}

/// The advice after a [`CheckError::Disabled`]: a broken file disables its
/// own product only; a directory that cannot be read disables every one
/// after it on the path.
fn what_to_do(error: &str) -> &'static str {
    if error.contains(BLOCKED) {
        "make that directory readable, or take it off the manifest path (every product whose manifest comes after it is disabled until then)"
    } else {
        "fix or remove that file (other products are not affected)"
    }
}

/// How the error of a product disabled by a directory that cannot be read
/// starts.
const BLOCKED: &str = "not used: the manifest directory ";

/// What a reload compares for one path: its [`telemetry_platform::fs::Stamp`]
/// and, on Unix, its inode change time, which also moves when only its mode
/// or owner changes: whether a manifest may be trusted depends on those
/// of the file and of its directory ([`telemetry_platform::fs::untrusted`]),
/// so fixing (or loosening) them must count as a change, as an edit does.
type Stamp = (telemetry_platform::fs::Stamp, i64, i64);

#[cfg(unix)]
fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    // One `stat` for both (this runs under the catalogue's lock).
    match std::fs::metadata(path) {
        Ok(m) => (
            Some((
                m.ino(),
                m.len(),
                m.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH),
            )),
            m.ctime(),
            m.ctime_nsec(),
        ),
        Err(_) => (None, 0, 0),
    }
}

/// Windows has no inode change time: an ACL fixed there counts once the
/// file is touched.
#[cfg(not(unix))]
fn stamp(path: &Path) -> Stamp {
    (telemetry_platform::fs::stamp(path), 0, 0)
}

/// The stamps of every directory on the path and every `*.toml` in them:
/// any file added, removed, replaced or rewritten changes this, and so
/// does a change of mode or owner that makes a manifest trusted or not.
fn scan(dirs: &[PathBuf]) -> Vec<(PathBuf, Stamp)> {
    let mut out = Vec::new();
    for dir in dirs {
        out.push((dir.clone(), stamp(dir)));
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|f| {
            let s = stamp(&f);
            (f, s)
        }));
    }
    out
}

/// One complete load of the search path.
#[derive(Debug, Default)]
struct Loaded {
    by_product: BTreeMap<String, Lookup>,
    scanned: Vec<(PathBuf, Stamp)>,
}

impl Loaded {
    fn load(dirs: &[PathBuf]) -> Loaded {
        // Scan before loading: a file changed in between is then seen as
        // changed at the next check and loaded again, never missed.
        let scanned = scan(dirs);
        let mut by_product = BTreeMap::new();
        // A directory that exists but cannot be read may hold a manifest
        // meant to replace a later one (a different destination, fewer
        // events): nothing after it on the path is used, each product
        // saying why, rather than a copy its owner replaced.
        let mut blocked: Option<String> = None;
        for dir in dirs {
            let results = match telemetry_sink::manifest::load_dir(dir) {
                Ok(r) => r,
                // One that cannot even be looked at (a parent this user may
                // not enter, as another user's entry in XDG_DATA_DIRS) is
                // not known to exist: skipped, as a missing one is.
                Err(e) if std::fs::symlink_metadata(dir).is_err() => {
                    tracing::warn!(dir = %dir.display(), error = %e, "skipping a product manifest directory that cannot be looked at");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "a product manifest directory cannot be read; the manifests after it on the path are not used");
                    blocked.get_or_insert_with(|| {
                        format!(
                            "{BLOCKED}{} earlier on the path cannot be read ({e}), and a manifest there may replace this one",
                            dir.display()
                        )
                    });
                    continue;
                }
            };
            for result in results {
                // A manifest decides where a product's data goes: one that
                // another user could have written is not used (and, broken,
                // it still shadows later copies rather than let them in).
                let result = result.and_then(|m| {
                    let why = blocked.clone().or_else(|| {
                        telemetry_platform::fs::untrusted(Path::new(&m.source_name))
                            .map(|why| format!("not used: {why}"))
                    });
                    match why {
                        None => Ok(m),
                        Some(message) => Err(CatalogError::Invalid {
                            path: PathBuf::from(&m.source_name),
                            message,
                        }),
                    }
                });
                let (product, entry) = match result {
                    Ok(m) => {
                        for warning in &m.warnings {
                            tracing::warn!(manifest = %m.source_name, "{warning}");
                        }
                        (m.product.clone(), Lookup::Ready(Arc::new(m)))
                    }
                    Err(e) => {
                        let path = match &e {
                            CatalogError::Read { path, .. }
                            | CatalogError::ReadDir { path, .. }
                            | CatalogError::Invalid { path, .. } => path.clone(),
                        };
                        tracing::warn!(error = %e, "product manifest disabled");
                        let stem = path
                            .file_stem()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        let entry = Lookup::Broken {
                            source: path.display().to_string(),
                            error: e.to_string(),
                        };
                        (stem, entry)
                    }
                };
                match by_product.entry(product) {
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(entry);
                    }
                    // Said once per load: a user's stale copy overriding
                    // an upgraded vendor manifest is otherwise invisible.
                    std::collections::btree_map::Entry::Occupied(o) => tracing::info!(
                        product = %o.key(),
                        used = %source_of(o.get()),
                        shadowed = %source_of(&entry),
                        "a product manifest earlier on the path shadows this one"
                    ),
                }
            }
        }
        let cfdev = Manifest::builtin_cfdev();
        let builtin = match blocked {
            None => Lookup::Ready(Arc::new(cfdev.clone())),
            Some(error) => Lookup::Broken {
                source: cfdev.source_name.clone(),
                error,
            },
        };
        by_product.entry(cfdev.product.clone()).or_insert(builtin);
        Loaded {
            by_product,
            scanned,
        }
    }
}

/// The file a lookup came from.
fn source_of(l: &Lookup) -> String {
    match l {
        Lookup::Ready(m) => m.source_name.clone(),
        Lookup::Broken { source, .. } => source.clone(),
        Lookup::Unknown => String::new(),
    }
}

struct State {
    loaded: Arc<Loaded>,
    checked: Instant,
}

/// The manifests on the search path, reloaded when the files change.
/// Shared by every handler (interior locking; cheap to read).
pub struct Catalogues {
    dirs: Vec<PathBuf>,
    recheck: Duration,
    state: Mutex<State>,
}

impl std::fmt::Debug for Catalogues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalogues")
            .field("dirs", &self.dirs)
            .field("recheck", &self.recheck)
            .finish_non_exhaustive()
    }
}

impl Catalogues {
    /// Load every manifest on `dirs` (in search order; see the module
    /// docs), then look for changes at most once per `recheck`. Never
    /// fails: bad files and directories are per-product errors and logged.
    pub fn new(dirs: Vec<PathBuf>, recheck: Duration) -> Catalogues {
        let loaded = Loaded::load(&dirs);
        tracing::info!(
            dirs = %describe(&dirs),
            products = loaded.by_product.len(),
            "loaded product manifests"
        );
        Catalogues {
            dirs,
            recheck,
            state: Mutex::new(State {
                loaded: Arc::new(loaded),
                checked: Instant::now(),
            }),
        }
    }

    /// The search path, in order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The current load, reloaded first if it is due for a check and a
    /// file changed.
    fn current(&self) -> Arc<Loaded> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= self.recheck {
            state.checked = Instant::now();
            if scan(&self.dirs) != state.loaded.scanned {
                let loaded = Loaded::load(&self.dirs);
                tracing::info!(
                    products = loaded.by_product.len(),
                    "product manifests changed on disk; reloaded"
                );
                state.loaded = Arc::new(loaded);
            }
        }
        state.loaded.clone()
    }

    /// Product names with a manifest, usable or not.
    pub fn products(&self) -> Vec<String> {
        self.current().by_product.keys().cloned().collect()
    }

    /// What the registry has for `product`.
    pub fn lookup(&self, product: &str) -> Lookup {
        self.current()
            .by_product
            .get(product)
            .cloned()
            .unwrap_or(Lookup::Unknown)
    }

    /// A product's usable manifest (`None` if it has none, or a broken
    /// one: see [`Catalogues::lookup`]).
    pub fn get(&self, product: &str) -> Option<Arc<Manifest>> {
        match self.lookup(product) {
            Lookup::Ready(m) => Some(m),
            Lookup::Broken { .. } | Lookup::Unknown => None,
        }
    }

    /// Check an event against its product's catalogue; returns the
    /// manifest it was checked against.
    pub fn check(&self, ev: &WireEvent) -> Result<Arc<Manifest>, CheckError> {
        match self.lookup(&ev.product) {
            Lookup::Ready(m) => {
                m.check(ev)?;
                Ok(m)
            }
            Lookup::Broken { error, .. } => Err(CheckError::Disabled {
                product: ev.product.clone(),
                error,
            }),
            Lookup::Unknown => Err(Rejection::UnknownProduct {
                product: ev.product.clone(),
                dir: describe(&self.dirs),
            }
            .into()),
        }
    }
}

/// The search path for messages: where to add a manifest, then the rest.
fn describe(dirs: &[PathBuf]) -> String {
    match dirs.split_first() {
        None => "a product manifest directory".to_string(),
        Some((first, [])) => first.display().to_string(),
        Some((first, rest)) => format!(
            "{} (also searched: {})",
            first.display(),
            rest.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests;
