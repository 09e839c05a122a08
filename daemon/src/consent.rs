//! The daemon's view of consent (defence in depth: the shim checks first,
//! the daemon checks again and enforces).
//!
//! The files are the source of truth; see `telemetry_proto::consent` for
//! the format and the layers. They are re-read whenever their size, inode
//! or modification time changes, so `telemetryctl consent` takes effect
//! without a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use telemetry_proto::consent::{resolve, ConsentFile};
use telemetry_proto::{Layer, Mode};

/// What the uploader may do with a product's sealed batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Upload everything sealed (consent `on`).
    All,
    /// Upload only the final `telemetry_off` batch (the user turned it off).
    FinalOnly,
    /// Upload nothing (`local`, undecided, or forced off).
    Nothing,
}

use telemetry_platform::fs::Stamp;

/// Event names, shared.
type EventSet = Arc<BTreeSet<String>>;

/// A consented event set as worked out against one load of the product's
/// manifest: a reload (a changed manifest) works it out again.
type Worked = (Arc<crate::catalog::Manifest>, EventSet);

/// The last look at both files.
struct Caches {
    user: Cached,
    system: Cached,
    /// Bumped whenever either file is read again.
    generation: u64,
}

#[derive(Default)]
struct Cached {
    stamp: Stamp,
    file: Option<Arc<ConsentFile>>,
    /// A file that exists but cannot be read counts as this.
    fail_closed: bool,
    /// The file exists but could not be read at the last look.
    unreadable: bool,
}

fn stamp(path: &Path) -> Stamp {
    telemetry_platform::fs::stamp(path)
}

impl Cached {
    /// The file as it is now; `reread` is set when it had to be read again.
    fn refresh(&mut self, path: &Path, reread: &mut bool) -> Option<Arc<ConsentFile>> {
        let now = stamp(path);
        if now != self.stamp || (now.is_some() && self.file.is_none()) {
            *reread = true;
            self.stamp = now;
            // Non-blocking: a FIFO in the file's place must not stall the
            // worker reading it (see `read_small_text`).
            self.unreadable = false;
            self.file = match telemetry_platform::fs::read_small_text(path) {
                Ok(t) => {
                    let file = ConsentFile::parse(&t);
                    if !file.bad_lines.is_empty() {
                        tracing::warn!(
                            path = %path.display(),
                            lines = ?file.bad_lines,
                            products = ?file.unclear_products,
                            "consent file has lines that are not understood; {}",
                            if self.fail_closed {
                                "every product is off"
                            } else {
                                "they decide nothing: nothing new is collected for the products they name, and nothing stored of them is deleted"
                            }
                        );
                    }
                    Some(Arc::new(file))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    self.unreadable = true;
                    tracing::warn!(
                        path = %path.display(),
                        error = %e,
                        "cannot read consent file; until it can be, {}",
                        if self.fail_closed {
                            "every product is off"
                        } else {
                            "every product counts as off and undecided here, and no decision in it is applied (nothing stored is deleted)"
                        }
                    );
                    self.fail_closed
                        .then(|| Arc::new(ConsentFile::unreadable()))
                }
            };
        }
        self.file.clone()
    }
}

/// Both consent files as read at one moment: what one request is checked
/// against (each look at the files costs a `stat` apiece).
pub struct ConsentView {
    user: Option<Arc<ConsentFile>>,
    /// The user's file exists but could not be read.
    user_unreadable: bool,
    system: Option<Arc<ConsentFile>>,
    env_off: bool,
    generation: u64,
}

impl ConsentView {
    /// Which reading of the files this is: it changes whenever either file
    /// is read again (its size, inode or modification time changed), so
    /// two looks with the same generation saw the same files.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the user's file exists but could not be read. Nothing is
    /// collected for the user then (it reads as undecided), but no change
    /// of decision is taken from it either: a file damaged by a bad edit or
    /// a disk error is not the user turning everything off, which would
    /// delete what is stored and tell each vendor so.
    pub fn user_unreadable(&self) -> bool {
        self.user_unreadable
    }

    /// Whether the user's file decides nothing for `product` because of a
    /// line not understood that names it ([`ConsentFile::unclear`]): as
    /// with an unreadable file, nothing is collected, and no change of
    /// decision is taken from it.
    pub fn user_unclear(&self, product: &str) -> bool {
        self.user.as_deref().is_some_and(|f| f.unclear(product))
    }

    /// The manifest version the user's decision for `product` was given
    /// for, if the file records one.
    pub fn user_version(&self, product: &str) -> Option<u32> {
        self.user
            .as_deref()
            .and_then(|f| f.get(product))
            .and_then(|e| e.version)
    }

    /// The effective mode for `product` and the layer that decided it.
    pub fn resolve(&self, product: &str) -> (Mode, Layer) {
        resolve(
            product,
            self.system.as_deref(),
            self.env_off,
            self.user.as_deref(),
        )
    }

    /// When the user last turned `product` off, in microseconds since the
    /// epoch (`None`: never, or a time that does not parse).
    pub fn last_off_us(&self, product: &str) -> Option<i64> {
        let off = self.user.as_deref()?.get(product)?.last_off.as_deref()?;
        let at = humantime::parse_rfc3339_weak(off).ok()?;
        let us = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_micros();
        i64::try_from(us).ok()
    }

    /// What the user's own file says (undecided = off), and when the user
    /// last turned the product off.
    pub fn user_decision(&self, product: &str) -> (Mode, Option<String>) {
        self.user
            .as_deref()
            .and_then(|f| f.get(product))
            .map_or((Mode::Off, None), |e| (e.mode, e.last_off.clone()))
    }
}

/// Reads and combines the consent layers.
pub struct Consent {
    user_path: PathBuf,
    system_path: PathBuf,
    env_off: bool,
    cache: Mutex<Caches>,
    /// Consented event sets as read from the store, by product and
    /// version (0: a decision without a version), so an emit does not ask
    /// the store thread each time.
    consented: Mutex<BTreeMap<(String, u32), Worked>>,
}

impl Consent {
    /// `env_off`: whether the daemon's own environment opts out.
    pub fn new(user_path: PathBuf, system_path: PathBuf, env_off: bool) -> Consent {
        Consent {
            user_path,
            system_path,
            env_off,
            cache: Mutex::new(Caches {
                user: Cached::default(),
                system: Cached {
                    fail_closed: true,
                    ..Cached::default()
                },
                // 0 is what records checked against a look of their own
                // carry (see `Record::consent_generation`).
                generation: 1,
            }),
            consented: Mutex::new(BTreeMap::new()),
        }
    }

    /// Both files, looked at now.
    pub fn view(&self) -> ConsentView {
        let mut guard = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let c = &mut *guard;
        let mut reread = false;
        let user = c.user.refresh(&self.user_path, &mut reread);
        let system = c.system.refresh(&self.system_path, &mut reread);
        c.generation += u64::from(reread);
        ConsentView {
            user,
            user_unreadable: c.user.unreadable,
            system,
            env_off: self.env_off,
            generation: c.generation,
        }
    }

    /// Both files as the last look saw them, without looking (no `stat`).
    ///
    /// A request checked against it is stored only if the look the
    /// committing thread makes just before its commit has the same
    /// generation (see `Store`'s `consent_look`): that look began after the
    /// request arrived, and saw the same files, so the request was checked
    /// against what the files said after it arrived, as with a look of its
    /// own. Otherwise it is checked again against a fresh look.
    pub fn cached_view(&self) -> ConsentView {
        let guard = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        ConsentView {
            user: guard.user.file.clone(),
            user_unreadable: guard.user.unreadable,
            system: guard.system.file.clone(),
            env_off: self.env_off,
            generation: guard.generation,
        }
    }

    /// Look at both files now; the generation of what was seen.
    pub fn look(&self) -> u64 {
        self.view().generation
    }

    /// [`ConsentView::user_version`], looked at now.
    pub fn user_version(&self, product: &str) -> Option<u32> {
        self.view().user_version(product)
    }

    /// The consented event set cached for `product` at `version`, if it
    /// was worked out against this very load of its manifest.
    pub fn cached_events(
        &self,
        product: &str,
        version: u32,
        manifest: &Arc<crate::catalog::Manifest>,
    ) -> Option<Arc<BTreeSet<String>>> {
        self.consented
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(product.to_string(), version))
            .filter(|(m, _)| Arc::ptr_eq(m, manifest))
            .map(|(_, set)| set.clone())
    }

    /// Cache the consented event set for `product` at `version`, worked out
    /// against `manifest`.
    pub fn cache_events(
        &self,
        product: &str,
        version: u32,
        manifest: &Arc<crate::catalog::Manifest>,
        events: Arc<BTreeSet<String>>,
    ) {
        self.consented
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((product.to_string(), version), (manifest.clone(), events));
    }

    /// Forget the cached set of `product`'s decision without a version
    /// (the store forgets it when a new decision is applied).
    pub fn forget_unversioned(&self, product: &str) {
        self.consented
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(product.to_string(), 0));
    }

    /// The user's consent file path.
    pub fn user_path(&self) -> &Path {
        &self.user_path
    }

    /// Effective mode of `product` and the layer that decided it, looked
    /// at now.
    pub fn resolve(&self, product: &str) -> (Mode, Layer) {
        self.view().resolve(product)
    }

    /// What the user's own file says (undecided = off), and when the user
    /// last turned the product off, looked at now. Transitions (purge,
    /// `telemetry_off`) follow this layer only: an administrator's or the
    /// environment's off stops collection and uploads but deletes nothing.
    pub fn user_decision(&self, product: &str) -> (Mode, Option<String>) {
        self.view().user_decision(product)
    }

    /// Products named in either file (not `*`).
    pub fn products(&self) -> Vec<String> {
        let view = self.view();
        let mut out = Vec::new();
        for file in [view.user, view.system].into_iter().flatten() {
            out.extend(
                file.entries
                    .iter()
                    .map(|e| e.product.clone())
                    .filter(|p| p != "*"),
            );
        }
        out.sort();
        out.dedup();
        out
    }

    /// Upload permit for `product`.
    pub fn permit(&self, product: &str) -> Permit {
        match self.resolve(product) {
            (Mode::On, _) => Permit::All,
            (Mode::Off, Layer::UserFile) => Permit::FinalOnly,
            _ => Permit::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rereads_changed_files_and_applies_layers() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("consent");
        let system = dir.path().join("system");
        let c = Consent::new(user.clone(), system.clone(), false);
        assert_eq!(c.resolve("cfdev"), (Mode::Off, Layer::Default));
        assert_eq!(c.permit("cfdev"), Permit::Nothing);
        std::fs::write(&user, "cfdev on\n").unwrap();
        assert_eq!(c.resolve("cfdev"), (Mode::On, Layer::UserFile));
        assert_eq!(c.permit("cfdev"), Permit::All);
        std::fs::write(&user, "cfdev local\n").unwrap();
        assert_eq!(c.resolve("cfdev"), (Mode::Local, Layer::UserFile));
        std::fs::write(&user, "cfdev off\n").unwrap();
        assert_eq!(c.permit("cfdev"), Permit::FinalOnly);
        std::fs::write(&user, "cfdev on\n").unwrap();
        std::fs::write(&system, "* off\n").unwrap();
        assert_eq!(c.resolve("cfdev"), (Mode::Off, Layer::System));
        assert_eq!(c.permit("cfdev"), Permit::Nothing);
        assert_eq!(c.user_decision("cfdev").0, Mode::On);
        assert_eq!(c.products(), vec!["cfdev".to_string()]);

        let env = Consent::new(user.clone(), dir.path().join("none"), true);
        assert_eq!(env.resolve("cfdev"), (Mode::Off, Layer::Environment));

        // A system "file" that cannot be read (here: a directory) fails closed.
        let dir_as_file = dir.path().join("sysdir");
        std::fs::create_dir(&dir_as_file).unwrap();
        let closed = Consent::new(user, dir_as_file, false);
        assert_eq!(closed.resolve("cfdev"), (Mode::Off, Layer::System));
    }

    /// A FIFO in either file's place must not stall the runtime worker
    /// that looks: with no writer it reads as empty (undecided, so off).
    #[cfg(unix)]
    #[test]
    fn a_fifo_in_a_consent_files_place_is_read_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (user, system) = (dir.path().join("consent"), dir.path().join("system"));
        for fifo in [&user, &system] {
            let made = std::process::Command::new("mkfifo")
                .arg(fifo)
                .status()
                .unwrap();
            assert!(made.success());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(Consent::new(user, system, false).resolve("cfdev"));
        });
        let resolved = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading FIFO consent files still blocked after 10 s");
        assert_eq!(resolved, (Mode::Off, Layer::Default));
    }
}
