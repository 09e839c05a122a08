//! Small file-system helpers with the permissions telemetryd promises:
//! directories 0700, files 0600, writes atomic (temp file, fsync, rename).
//! The platform parts are `telemetry_platform::fs`'s.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
pub use telemetry_platform::fs::{
    create_private_dir, create_private_dir_durable, sync_dir, with_mode,
};

/// Write `bytes` to `path` atomically with mode 0600: a reader sees the old
/// file or the whole new one, never a part.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    // The file survives a power cut only if its directory does.
    create_private_dir_durable(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = with_mode(
            OpenOptions::new().write(true).create(true).truncate(true),
            0o600,
        )
        .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
