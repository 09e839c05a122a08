//! Where every event went since the daemon started: received, stored,
//! duplicates, refused, spooled and taken in, and the events shims had to
//! drop because the spool was full (which they note in the spool's drop
//! file, `telemetry_proto::paths::spool_drops_file`). Upload counts are
//! the uploader's, per destination; store-full drops are the store's.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use telemetry_proto::{validate_name, Limits};

/// Distinct product names counted apart in the drop files; the rest go
/// under `*` (names come from files any local process can write).
const MAX_PRODUCTS: usize = 64;

/// The counters.
#[derive(Default)]
pub struct EventCounters {
    /// Events in emit requests.
    pub received: AtomicU64,
    /// Events newly stored from emit requests.
    pub stored: AtomicU64,
    /// Events already stored (sent twice).
    pub duplicates: AtomicU64,
    /// Events refused.
    pub refused: AtomicU64,
    /// Events read from consumed spools.
    pub spooled: AtomicU64,
    /// Spooled events newly stored.
    pub taken_in: AtomicU64,
    spool_full: Mutex<BTreeMap<String, u64>>,
}

impl EventCounters {
    /// Add `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Full-spool drops per product, largest first.
    pub fn spool_full_drops(&self) -> Vec<(String, u64)> {
        largest_first(&self.spool_full.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The status form.
    pub fn snapshot(
        &self,
        store_full_drops: u64,
        local_full_drops: &BTreeMap<String, u64>,
    ) -> telemetry_proto::Counters {
        let get = |c: &AtomicU64| c.load(Relaxed);
        telemetry_proto::Counters {
            received: get(&self.received),
            stored: get(&self.stored),
            duplicates: get(&self.duplicates),
            refused: get(&self.refused),
            spooled: get(&self.spooled),
            taken_in: get(&self.taken_in),
            spool_full_drops: self.spool_full_drops(),
            store_full_drops,
            local_full_drops: largest_first(local_full_drops),
        }
    }

    /// Count and remove the drop file at `path` (one product name per
    /// dropped event); returns the events it counted. Renamed first, so a
    /// shim appending meanwhile starts a new file rather than losing its
    /// line to the removal.
    pub fn take_drop_file(&self, path: &Path) -> u64 {
        let taking = path.with_extension("drops.counting");
        // One a crash left between the rename and the removal: counted
        // first, or the rename below would replace it uncounted.
        let mut counted = if taking.exists() {
            self.count_file(&taking)
        } else {
            0
        };
        match std::fs::rename(path, &taking) {
            Ok(()) => counted += self.count_file(&taking),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot take the spool's drop file");
            }
        }
        if counted > 0 {
            tracing::warn!(
                events = counted,
                path = %path.display(),
                "clients dropped events they could not spool (their spool was full, or a burst waited past their time budget for a turn at it) while the daemon did not answer them"
            );
        }
        counted
    }

    /// Count and remove the drop file being taken.
    fn count_file(&self, taking: &Path) -> u64 {
        // As the spool: never through a link or a FIFO, never unbounded.
        let text = match crate::spool::read_plain(taking, crate::spool::MAX_SPOOL_FILE) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path = %taking.display(), error = %e, "cannot read the spool's drop file");
                return 0;
            }
        };
        let counted = self.count_drops(&text);
        if let Err(e) = std::fs::remove_file(taking) {
            tracing::warn!(path = %taking.display(), error = %e, "cannot remove the spool's drop file");
        }
        counted
    }

    /// Count the lines of a drop file.
    fn count_drops(&self, text: &[u8]) -> u64 {
        let limits = Limits::default();
        let mut map = self.spool_full.lock().unwrap_or_else(|p| p.into_inner());
        let mut counted = 0;
        for line in text.split(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(line);
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            // A name that is not a product name is counted, unnamed.
            let mut name = if validate_name("product", line, &limits).is_ok() {
                line.to_string()
            } else {
                String::new()
            };
            if !map.contains_key(&name) && map.len() >= MAX_PRODUCTS {
                name = "*".to_string();
            }
            *map.entry(name).or_default() += 1;
            counted += 1;
        }
        counted
    }
}

/// Counts per product, largest first (then by name).
fn largest_first(map: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_file_is_counted_per_product_once_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events-0123.drops");
        std::fs::write(&path, "cfdev\ncfdev\nother\nbad name!\n\n").unwrap();
        let c = EventCounters::default();
        assert_eq!(c.take_drop_file(&path), 4);
        assert!(!path.exists());
        assert_eq!(c.take_drop_file(&path), 0, "counted once");
        assert_eq!(
            c.spool_full_drops(),
            vec![
                ("cfdev".to_string(), 2),
                (String::new(), 1),
                ("other".to_string(), 1)
            ]
        );
        std::fs::write(&path, "cfdev\n").unwrap();
        c.take_drop_file(&path);
        assert_eq!(
            c.snapshot(0, &BTreeMap::new()).spool_full_drops[0],
            ("cfdev".to_string(), 3)
        );
        // A file a crash left mid-count is counted too, not replaced.
        std::fs::write(path.with_extension("drops.counting"), "cfdev\n").unwrap();
        std::fs::write(&path, "cfdev\n").unwrap();
        assert_eq!(c.take_drop_file(&path), 2);
        assert!(!path.with_extension("drops.counting").exists());
    }

    #[test]
    fn product_names_are_bounded() {
        let c = EventCounters::default();
        let text: String = (0..100).map(|i| format!("p{i}\n")).collect();
        assert_eq!(c.count_drops(text.as_bytes()), 100);
        let drops = c.spool_full_drops();
        assert_eq!(drops.len(), MAX_PRODUCTS + 1);
        assert_eq!(drops[0], ("*".to_string(), 100 - MAX_PRODUCTS as u64));
    }
}
