//! `telemetryd --check-config`: what a start (or a reload) with these
//! flags, variables and config file would use, and whether every product
//! manifest on the search path is usable, without binding, opening the
//! store or changing anything. An operator runs it before `systemctl
//! reload` or a restart, as `nginx -t` or Vector's `validate`.

use crate::catalog::{Catalogues, Lookup};
use crate::config::{Config, SyncMode};
use std::time::Duration;

/// The report: one line per setting and per manifest, and whether every
/// manifest is usable (the configuration itself is, or `load` had failed).
pub struct Checked {
    /// What to print, in order.
    pub lines: Vec<String>,
    /// No manifest on the search path is broken.
    pub manifests_ok: bool,
    /// Warnings the usable manifests have (a key the daemon ignores, a
    /// limit the protocol would refuse at every emit): a vendor's CI fails
    /// on them with `--strict`.
    pub manifest_warnings: usize,
    /// A setting a start would fail on though it parsed (the machine
    /// identity file cannot be read).
    pub setting_error: Option<String>,
}

/// Describe `config` and load the manifests it names.
pub fn check(config: &Config) -> Checked {
    let mut lines = Vec::new();
    let mut line = |k: &str, v: String| lines.push(format!("{k:<22} {v}"));
    let secs = |d: Duration| humantime::format_duration(d).to_string();
    line("socket", config.socket_path.display().to_string());
    line("state_dir", config.state_dir.display().to_string());
    line("destination", config.destination());
    line("upload_interval", secs(config.upload_interval));
    line("batch_max_events", config.batch_max_events.to_string());
    line("batch_max_bytes", config.batch_max_bytes.to_string());
    line("max_store_bytes", config.max_store_bytes.to_string());
    line(
        "retry",
        format!("{} to {}", secs(config.retry_min), secs(config.retry_max)),
    );
    line("s3_timeout", secs(config.s3_timeout));
    line(
        "sync",
        match config.sync {
            SyncMode::Full => "full".into(),
            SyncMode::Normal => "normal".into(),
        },
    );
    line("max_connections", config.max_connections.to_string());
    line("idle_exit", config.idle_exit.map_or("off".into(), secs));
    line("consent_file", config.consent_file.display().to_string());
    line(
        "system_consent_file",
        config.system_consent_file.display().to_string(),
    );
    let dirs: Vec<_> = std::iter::once(config.catalog_dir.clone())
        .chain(config.manifest_system_dirs.iter().cloned())
        .collect();
    line(
        "manifest_dirs",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    let catalogues = Catalogues::new(dirs, Duration::MAX);
    let mut manifests_ok = true;
    let mut manifest_warnings = 0;
    for product in catalogues.products() {
        match catalogues.lookup(&product) {
            Lookup::Ready(m) => {
                manifest_warnings += m.warnings.len();
                lines.push(format!(
                    "manifest {product}: {} (catalogue version {}){}",
                    m.source_name,
                    m.version,
                    m.warnings
                        .iter()
                        .map(|w| format!("; warning: {w}"))
                        .collect::<String>()
                ))
            }
            Lookup::Broken { error, .. } => {
                manifests_ok = false;
                lines.push(format!("manifest {product}: DISABLED: {error}"));
            }
            Lookup::Unknown => {}
        }
    }
    // Read as a start reads it, so a start does not fail on what the
    // check passed.
    let setting_error = state_dir_problem(&config.state_dir).or_else(|| match &config.identity {
        crate::config::IdentitySource::File(_) => {
            crate::identity::Identity::load(&config.identity, &config.state_dir)
                .err()
                .map(|e| e.to_string())
        }
        crate::config::IdentitySource::Os => None,
    });
    Checked {
        lines,
        manifests_ok,
        manifest_warnings,
        setting_error,
    }
}

/// Why a start could not use `dir` as its state directory, as it would
/// say it: another user could change it, or it (or, if missing, the
/// nearest directory above it, where it would be made) is not a directory
/// this user may write.
fn state_dir_problem(dir: &std::path::Path) -> Option<String> {
    const SET: &str = "state_dir / TELEMETRY_STATE_DIR / --state-dir";
    // Root checking a service's directory (systemd's DynamicUser= owns
    // /var/lib/telemetry) is not its owner; one open to all is wrong for
    // anyone.
    #[cfg(unix)]
    let root = telemetry_platform::proc::effective_uid() == 0;
    #[cfg(not(unix))]
    let root = false;
    let why = telemetry_platform::fs::untrusted_dir(dir)
        .filter(|why| !root || why.contains("writable by every user"));
    if let Some(why) = why {
        return Some(format!(
            "the state directory {}: {why}; a start refuses it ({SET})",
            dir.display()
        ));
    }
    let existing = dir
        .ancestors()
        .map(|a| {
            if a.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.exists())?;
    if !existing.is_dir() {
        return Some(format!(
            "the state directory {}: {} is not a directory ({SET})",
            dir.display(),
            existing.display()
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
            return Some(format!(
                "the state directory {}: {} cannot be written by this user ({}); choose one it can ({SET})",
                dir.display(),
                existing.display(),
                std::io::Error::last_os_error()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_and_manifests_are_listed_and_a_broken_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = dir.path().join("catalog");
        std::fs::create_dir_all(&catalog).unwrap();
        std::fs::write(
            catalog.join("good.toml"),
            "product = \"good\"\n[events.ran]\n",
        )
        .unwrap();
        let mut config = Config::with_paths(dir.path().join("s.sock"), dir.path().join("state"));
        config.catalog_dir = catalog.clone();
        config.manifest_system_dirs = Vec::new();
        let c = check(&config);
        let text = c.lines.join("\n");
        assert!(c.manifests_ok, "{text}");
        assert_eq!(c.manifest_warnings, 0, "{text}");
        assert!(
            text.contains("s.sock") && text.contains("manifest good:"),
            "{text}"
        );
        assert!(text.contains("sync "), "{text}");
        assert!(c.setting_error.is_none());
        // A state directory a start cannot use fails the check too.
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let mut other = Config::with_paths(dir.path().join("s.sock"), file.join("state"));
        other.catalog_dir = catalog.clone();
        other.manifest_system_dirs = Vec::new();
        let err = check(&other).setting_error.unwrap();
        assert!(err.to_lowercase().contains("not a directory"), "{err}");
        other.state_dir = file.clone();
        let err = check(&other).setting_error.unwrap();
        assert!(err.contains("is not a directory (state_dir"), "{err}");
        #[cfg(unix)]
        {
            let open = dir.path().join("open");
            std::fs::create_dir_all(open.join("state")).unwrap();
            std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                .unwrap();
            other.state_dir = open.join("state");
            let err = check(&other).setting_error.unwrap();
            assert!(err.contains("writable by every user"), "{err}");
        }
        config.identity = crate::config::IdentitySource::File(dir.path().to_path_buf());
        let err = check(&config).setting_error.unwrap();
        assert!(err.contains("TELEMETRY_MACHINE_ID_FILE"), "{err}");
        config.identity = crate::config::IdentitySource::Os;

        std::fs::write(catalog.join("bad.toml"), "product = \"bad\"\nnot toml [\n").unwrap();
        let c = check(&config);
        let text = c.lines.join("\n");
        assert!(!c.manifests_ok, "{text}");
        assert!(
            text.contains("manifest bad: DISABLED") && text.contains("bad.toml"),
            "{text}"
        );
    }
}
