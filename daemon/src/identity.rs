//! The anonymous machine ID.
//!
//! The identity it is derived from: Linux `/etc/machine-id` (then
//! `/var/lib/dbus/machine-id`), macOS `IOPlatformUUID`; otherwise a random
//! identity generated once and kept in the state dir (0600).
//!
//! The ID is `hex(SHA-256("telemetryd/v1\0" ++ identity ++ "\0" ++ product))`:
//! per product, so two products' datasets cannot be joined, and one-way, so
//! nobody can go from the ID back to the machine. After the user asked to
//! forget a product (`telemetryctl forget`), its ID also covers a random
//! salt kept in the store: `... ++ "\0" ++ salt`, a new ID unlinkable to
//! the old one. The raw identity never leaves this module.

use crate::config::IdentitySource;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Error reading or creating the machine identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A configured identity file could not be read or is empty.
    #[error("cannot read machine identity from {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The fallback identity could not be stored in the state dir.
    #[error("cannot create machine identity file {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Holds the raw identity privately and hands out per-product IDs.
pub struct Identity {
    raw: String,
    /// Salts of forgotten products (see the module docs), and when each
    /// was drawn (µs since the epoch).
    salts: std::sync::RwLock<BTreeMap<String, (String, i64)>>,
    /// Each product's ID once computed (a SHA-256 per event cost more than
    /// the rest of its rendering); cleared whenever a salt changes.
    ids: std::sync::RwLock<HashMap<String, Arc<str>>>,
}

/// Products whose IDs are kept computed; more are computed each time
/// (products are checked against the catalogues first, so this is never
/// reached in practice).
const MAX_MEMO: usize = 1024;

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the raw identity, not even in debug logs.
        f.write_str("Identity(..)")
    }
}

const OS_FILES: [&str; 2] = ["/etc/machine-id", "/var/lib/dbus/machine-id"];

fn read_nonempty(path: &Path) -> Option<String> {
    // Bounded and non-blocking: a FIFO or /dev/zero named as the identity
    // must neither hang the start nor fill memory.
    let s = telemetry_platform::fs::read_small_text(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// macOS: the hardware `IOPlatformUUID`, read with `ioreg` (no extra
/// crates or unsafe FFI for one string read once at start).
#[cfg(target_os = "macos")]
fn platform_uuid() -> Option<String> {
    let out = std::process::Command::new("/usr/sbin/ioreg")
        .args(["-rd1", "-c", "IOPlatformExpertDevice"])
        .output()
        .ok()?;
    parse_ioreg_uuid(&String::from_utf8_lossy(&out.stdout))
}

/// Windows: the registry's `MachineGuid`
/// (`HKLM\SOFTWARE\Microsoft\Cryptography`), set at installation; hashed
/// like every identity, never sent.
#[cfg(windows)]
fn platform_uuid() -> Option<String> {
    telemetry_platform::windows::machine_guid()
}

/// Elsewhere the OS files above are the identity.
#[cfg(not(any(target_os = "macos", windows)))]
fn platform_uuid() -> Option<String> {
    None
}

/// Find `"IOPlatformUUID" = "…"` in `ioreg` output.
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
fn parse_ioreg_uuid(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.contains("\"IOPlatformUUID\""))?;
    let value = line.split('=').nth(1)?.trim().trim_matches('"');
    (!value.is_empty()).then(|| value.to_string())
}

impl Identity {
    /// Load the identity from `source`; `state_dir` holds the generated
    /// fallback when the OS has none.
    pub fn load(source: &IdentitySource, state_dir: &Path) -> Result<Identity, IdentityError> {
        match source {
            IdentitySource::File(path) => match read_nonempty(path) {
                Some(raw) => Ok(Identity::from_raw(raw)),
                None => Err(IdentityError::Read {
                    path: path.clone(),
                    reason: "missing, unreadable or empty (named by machine_id_file, TELEMETRY_MACHINE_ID_FILE or --machine-id-file; unset, the OS's own identity is used)".into(),
                }),
            },
            IdentitySource::Os => {
                if let Some(raw) = OS_FILES.iter().find_map(|p| read_nonempty(Path::new(p))) {
                    return Ok(Identity::from_raw(raw));
                }
                if let Some(raw) = platform_uuid() {
                    return Ok(Identity::from_raw(raw));
                }
                Self::generated(&state_dir.join("machine-identity"))
            }
        }
    }

    /// An identity from a known string (tests, embedding).
    pub fn from_raw(raw: impl Into<String>) -> Identity {
        Identity {
            raw: raw.into(),
            salts: Default::default(),
            ids: Default::default(),
        }
    }

    /// Use these salts and their times (the store's, at start).
    pub fn set_salts(&self, salts: BTreeMap<String, (String, i64)>) {
        let mut guard = self.salts.write().unwrap_or_else(|p| p.into_inner());
        *guard = salts;
        // Under the salts' lock: no ID computed with the old salt is
        // remembered after this.
        self.forget_ids();
    }

    /// Give `product` a new ID from `salt`, drawn at `since_us` (after the
    /// store recorded it).
    pub fn set_salt(&self, product: &str, salt: String, since_us: i64) {
        let mut guard = self.salts.write().unwrap_or_else(|p| p.into_inner());
        guard.insert(product.to_string(), (salt, since_us));
        self.forget_ids();
    }

    /// When the user last asked to forget `product` (µs since the epoch):
    /// events made before then are not stored (one still in a spool, or
    /// sent as the forget ran).
    pub fn forgotten_since(&self, product: &str) -> Option<i64> {
        self.salts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(product)
            .map(|(_, since)| *since)
    }

    /// A fresh salt: 32 random hex digits.
    pub fn new_salt() -> String {
        uuid::Uuid::new_v4().simple().to_string()
    }

    fn generated(path: &Path) -> Result<Identity, IdentityError> {
        if let Some(raw) = read_nonempty(path) {
            return Ok(Identity::from_raw(raw));
        }
        let raw = uuid::Uuid::new_v4().simple().to_string();
        telemetry_sink::fsutil::write_private_atomic(path, raw.as_bytes()).map_err(|source| {
            IdentityError::Create {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(Identity::from_raw(raw))
    }

    fn forget_ids(&self) {
        self.ids.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The anonymous machine ID for `product`: 64 lowercase hex digits.
    pub fn machine_id(&self, product: &str) -> String {
        self.shared_id(product).to_string()
    }

    /// [`Identity::machine_id`], shared.
    pub fn shared_id(&self, product: &str) -> Arc<str> {
        if let Some(id) = self
            .ids
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(product)
        {
            return id.clone();
        }
        // Computed under the salts' lock, and remembered only if no salt
        // changed meanwhile (a change clears the memo while holding the
        // salts' write lock, which this read lock excludes).
        let salts = self.salts.read().unwrap_or_else(|p| p.into_inner());
        let id: Arc<str> = self
            .compute(product, salts.get(product).map(|s| s.0.as_str()))
            .into();
        let mut ids = self.ids.write().unwrap_or_else(|p| p.into_inner());
        if ids.len() < MAX_MEMO {
            ids.insert(product.to_string(), id.clone());
        }
        id
    }

    fn compute(&self, product: &str, salt: Option<&str>) -> String {
        let mut h = Sha256::new();
        h.update(b"telemetryd/v1\0");
        h.update(self.raw.as_bytes());
        h.update(b"\0");
        h.update(product.as_bytes());
        if let Some(salt) = salt {
            h.update(b"\0");
            h.update(salt.as_bytes());
        }
        let digest = h.finalize();
        let mut out = String::with_capacity(64);
        // Hex by hand: `format!` allocates per byte.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for b in digest {
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0x0f)] as char);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_per_product_stable_and_hide_the_raw_identity() {
        let id = Identity::from_raw("0123456789abcdef0123456789abcdef");
        let a = id.machine_id("cfdev");
        let b = id.machine_id("other");
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(
            a,
            Identity::from_raw("0123456789abcdef0123456789abcdef").machine_id("cfdev")
        );
        assert!(!a.contains("0123456789abcdef"));
        assert!(!format!("{id:?}").contains("0123"));
    }

    #[test]
    fn a_salt_gives_a_product_a_new_id_and_leaves_the_others() {
        let id = Identity::from_raw("0123456789abcdef0123456789abcdef");
        let (a, b) = (id.machine_id("cfdev"), id.machine_id("other"));
        id.set_salt("cfdev", Identity::new_salt(), 5);
        assert_eq!(id.forgotten_since("cfdev"), Some(5));
        assert_eq!(id.forgotten_since("other"), None);
        let a2 = id.machine_id("cfdev");
        assert_ne!(a, a2);
        assert_eq!(a2.len(), 64);
        assert_eq!(id.machine_id("other"), b);
        id.set_salt("cfdev", Identity::new_salt(), 6);
        assert_ne!(id.machine_id("cfdev"), a2, "each forget, a new ID");
    }

    #[test]
    fn ioreg_output_is_parsed() {
        let text = "+-o J316sAP  <class IOPlatformExpertDevice>\n    {\n      \"IOPlatformSerialNumber\" = \"X\"\n      \"IOPlatformUUID\" = \"8A1B2C3D-0000-1111-2222-333344445555\"\n    }\n";
        assert_eq!(
            parse_ioreg_uuid(text).as_deref(),
            Some("8A1B2C3D-0000-1111-2222-333344445555")
        );
        assert_eq!(parse_ioreg_uuid("nothing here"), None);
    }

    #[test]
    fn generated_identity_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("machine-identity");
        let a = Identity::generated(&p).unwrap().machine_id("x");
        let b = Identity::generated(&p).unwrap().machine_id("x");
        assert_eq!(a, b);
    }

    #[test]
    fn missing_identity_file_is_a_clear_error() {
        let err = Identity::load(
            &IdentitySource::File("/nonexistent/id".into()),
            Path::new("/tmp"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/id"), "{err}");
    }
}
