//! Default locations shared by the daemon and its clients, computed from an
//! injected environment so they stay pure and testable.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// File name of the daemon's socket inside its runtime directory.
pub const SOCKET_FILE: &str = "telemetryd.sock";

/// Default socket path: `$XDG_RUNTIME_DIR/telemetry/telemetryd.sock`; else
/// on macOS `~/Library/Application Support/telemetry/telemetryd.sock` (a
/// stable place launchd can own), elsewhere
/// `$TMPDIR/telemetry-<uid>/telemetryd.sock`.
///
/// `env` looks up an environment variable; `uid` is the caller's user id.
pub fn default_socket_path(env: impl Fn(&str) -> Option<OsString>, uid: u32) -> PathBuf {
    if cfg!(windows) {
        return default_pipe_name(env);
    }
    default_socket_path_for(cfg!(target_os = "macos"), env, uid)
}

/// The default named pipe on Windows: `\\.\pipe\telemetryd-<user>`,
/// the user from `USERNAME` (characters other than ASCII letters, digits,
/// `-`, `_` and `.` replaced by `_`; `user` when unset).
pub fn default_pipe_name(env: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let user = non_empty(&env, "USERNAME")
        .map(|u| {
            u.to_string_lossy()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        })
        .unwrap_or_else(|| "user".to_string());
    PathBuf::from(format!(r"\\.\pipe\telemetryd-{user}"))
}

/// The machine-wide daemon's named pipe on Windows (the service
/// `telemetryd install --system` registers serves it; clients use it when
/// `TELEMETRY_SOCKET` names it).
pub const MACHINE_PIPE_NAME: &str = r"\\.\pipe\telemetryd";

/// Whether `path` is [`MACHINE_PIPE_NAME`] (Windows names are not case
/// sensitive): the machine-wide service's, which the service manager
/// starts, never a client, and which takes in no user's spool.
pub fn is_machine_pipe(path: &std::path::Path) -> bool {
    path.to_string_lossy()
        .eq_ignore_ascii_case(MACHINE_PIPE_NAME)
}

/// Whether `path` names a Windows named pipe (`\\.\pipe\...`).
pub fn is_pipe_name(path: &std::path::Path) -> bool {
    path.to_string_lossy()
        .to_ascii_lowercase()
        .starts_with(r"\\.\pipe\")
}

/// [`default_socket_path`] for a given OS (so installers and tests can
/// compute the macOS path anywhere).
pub fn default_socket_path_for(
    macos: bool,
    env: impl Fn(&str) -> Option<OsString>,
    uid: u32,
) -> PathBuf {
    if let Some(dir) = non_empty(&env, "XDG_RUNTIME_DIR") {
        return PathBuf::from(dir).join("telemetry").join(SOCKET_FILE);
    }
    if macos {
        if let Some(home) = non_empty(&env, "HOME") {
            return PathBuf::from(home)
                .join("Library/Application Support/telemetry")
                .join(SOCKET_FILE);
        }
    }
    let tmp = non_empty(&env, "TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tmp.join(format!("telemetry-{uid}")).join(SOCKET_FILE)
}

/// Default state dir: `$XDG_STATE_HOME/telemetry`, else
/// `$HOME/.local/state/telemetry`, else `/tmp/telemetry-<uid>/state`.
pub fn default_state_dir(env: impl Fn(&str) -> Option<OsString>, uid: u32) -> PathBuf {
    if cfg!(windows) {
        // %LOCALAPPDATA%: the user's own, not roamed between machines.
        if let Some(dir) = non_empty(&env, "LOCALAPPDATA") {
            return PathBuf::from(dir).join("telemetry");
        }
    }
    if let Some(dir) = non_empty(&env, "XDG_STATE_HOME") {
        return PathBuf::from(dir).join("telemetry");
    }
    if let Some(home) = non_empty(&env, "HOME") {
        return PathBuf::from(home).join(".local/state/telemetry");
    }
    std::env::temp_dir()
        .join(format!("telemetry-{uid}"))
        .join("state")
}

/// Default config file: `$XDG_CONFIG_HOME/telemetry/config.toml`, else
/// `$HOME/.config/telemetry/config.toml`.
pub fn default_config_file(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    if cfg!(windows) {
        // %APPDATA%: settings roam with the user.
        if let Some(dir) = non_empty(&env, "APPDATA") {
            return Some(PathBuf::from(dir).join("telemetry").join("config.toml"));
        }
    }
    if let Some(dir) = non_empty(&env, "XDG_CONFIG_HOME") {
        return Some(PathBuf::from(dir).join("telemetry/config.toml"));
    }
    non_empty(&env, "HOME").map(|home| PathBuf::from(home).join(".config/telemetry/config.toml"))
}

/// The user's directory of product manifests when no setting names one:
/// `catalog` beside [`default_config_file`].
pub fn default_catalog_dir(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    default_config_file(env).and_then(|f| f.parent().map(|d| d.join("catalog")))
}

/// `DIR/telemetry/products` under each data directory: `xdg_data_dirs` is
/// `$XDG_DATA_DIRS` (unset or empty: `/usr/local/share:/usr/share`, as the
/// XDG spec says); on macOS `/Library/Application Support/telemetry/products`
/// comes last. On Windows the one directory is
/// `%ProgramData%\telemetry\products` (`program_data`; default
/// `C:\ProgramData`), where only an administrator's installer puts what
/// is trusted: XDG's default would name `C:\usr\share`, a folder any user
/// may create.
pub fn manifest_system_dirs(
    xdg_data_dirs: Option<&str>,
    program_data: Option<&Path>,
) -> Vec<PathBuf> {
    if cfg!(windows) {
        let data = program_data
            .filter(|p| p.is_absolute())
            .map_or_else(|| PathBuf::from(r"C:\ProgramData"), Path::to_path_buf);
        return vec![data.join("telemetry").join("products")];
    }
    let list = xdg_data_dirs
        .filter(|v| !v.trim().is_empty())
        .unwrap_or("/usr/local/share:/usr/share");
    let mut dirs: Vec<PathBuf> = list
        .split(':')
        // Relative entries are invalid per the spec: skip them.
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join("telemetry").join("products"))
        .collect();
    if cfg!(target_os = "macos") {
        dirs.push(PathBuf::from(
            "/Library/Application Support/telemetry/products",
        ));
    }
    dirs
}

fn non_empty(env: &impl Fn(&str) -> Option<OsString>, key: &str) -> Option<OsString> {
    env(key).filter(|v| !v.is_empty())
}

/// The machine-wide consent file an administrator uses to force products
/// off (see [`crate::consent`]); on Windows see [`system_consent_file`].
pub const SYSTEM_CONSENT_FILE: &str = "/etc/telemetry/consent";

/// The machine-wide consent file when `TELEMETRY_SYSTEM_CONSENT_FILE` is
/// unset: [`SYSTEM_CONSENT_FILE`], or on Windows
/// `%ProgramData%\telemetry\consent`, beside the machine's manifests and the
/// service's state (`C:\ProgramData` when the variable is unset, empty or
/// not an absolute path: a machine whose ProgramData is on another drive
/// keeps its administrator's file there, not on `C:`).
pub fn system_consent_file(env: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    system_consent_file_for(cfg!(windows), env)
}

/// [`system_consent_file`] for a given OS (so it is tested everywhere).
pub fn system_consent_file_for(windows: bool, env: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    if !windows {
        return PathBuf::from(SYSTEM_CONSENT_FILE);
    }
    let data = non_empty(&env, "ProgramData")
        .map(PathBuf::from)
        // `Path::is_absolute` is the host's idea; a drive and a backslash
        // (or a UNC path) is Windows'.
        .filter(|p| {
            let s = p.to_string_lossy();
            let b = s.as_bytes();
            s.starts_with(r"\\")
                || (b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'\\')
        })
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"));
    PathBuf::from(format!(r"{}\telemetry\consent", data.display()))
}

/// Where shims before per-socket spools left events while the daemon was
/// not reachable: `STATE_DIR/spool/events.spool` (today's shims write
/// [`spool_file_for`] their socket; daemons take in both). The file is a sequence of frames exactly
/// as on the socket (4-byte big-endian length, then version + postcard),
/// each holding one [`crate::WireEvent`]; appends are whole frames, made
/// under an exclusive `flock`. The daemon renames it to
/// `events.spool.ingesting`, stores what it holds (duplicates are dropped by
/// event id) and deletes it.
pub fn spool_file(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("spool").join("events.spool")
}

/// The spool for events meant for the daemon on `socket`:
/// `STATE_DIR/spool/events-<16 hex>.spool`, named by the FNV-1a 64 hash of
/// the socket path's bytes, so that it does not depend on what either side
/// takes as its default. Each daemon takes in the spool named for its own
/// socket (and the unnamed [`spool_file`] older shims wrote), so an event
/// a shim meant for another daemon (`--socket`) is never delivered by the
/// one that owns the state directory.
pub fn spool_file_for(state_dir: &std::path::Path, socket: &std::path::Path) -> PathBuf {
    state_dir
        .join("spool")
        .join(format!("events-{:016x}.spool", socket_hash(socket)))
}

/// FNV-1a 64 of the socket path's bytes: names the spools meant for the
/// daemon on that socket.
fn socket_hash(socket: &std::path::Path) -> u64 {
    socket
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// The portable spool for events meant for the daemon on `socket`: the
/// directory `STATE_DIR/spool/events-<16 hex>.d`, named by the same hash as
/// [`spool_file_for`], which any language can write with its standard
/// library (no `flock`, no postcard). The daemon takes in both.
///
/// - The directory is created `0700` (and its parents as needed).
/// - Each file holds **one JSON line**: an `emit` request exactly as it
///   would be sent on the socket (`{"v":2,"emit":{"events":[...],"ack":false}}`,
///   see [JSON lines](crate#json-lines)), with the newline.
/// - A writer creates `.<name>.tmp` (mode `0600`, exclusively), writes the
///   line, closes it and renames it to `<name>.json`, where `<name>` is the
///   first event's id (a UUIDv7, so names sort by time). The daemon reads
///   only `*.json` files, so it never sees half a line; it deletes each one
///   once its events are stored (or refused for good), and temporary files
///   left for an hour by a writer that died.
/// - A writer that finds [`MAX_SPOOL_FILES`] entries in the directory drops
///   the event instead (the spool is full).
pub fn spool_dir_for(state_dir: &std::path::Path, socket: &std::path::Path) -> PathBuf {
    state_dir
        .join("spool")
        .join(format!("events-{:016x}.d", socket_hash(socket)))
}

/// Which spool a name in `STATE_DIR/spool` is: the socket hash it was
/// named for (16 hex digits) and whether it is a [`spool_dir_for`]
/// directory (`true`) or a [`spool_file_for`] file; `None` for anything
/// else (the older unnamed `events.spool`, drop files, set-aside files).
pub fn spool_of_name(name: &str) -> Option<(&str, bool)> {
    let rest = name.strip_prefix("events-")?;
    let (hash, is_dir) = match (rest.strip_suffix(".spool"), rest.strip_suffix(".d")) {
        (Some(h), _) => (h, false),
        (_, Some(h)) => (h, true),
        _ => return None,
    };
    (hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some((hash, is_dir))
}

/// Most files a writer leaves in a [`spool_dir_for`] directory.
pub const MAX_SPOOL_FILES: usize = 1000;

/// Largest spool file a shim appends to (about 3,000 events); past it,
/// new events are dropped rather than fill the disk.
pub const MAX_SPOOL_BYTES: u64 = 1024 * 1024;

/// Where writers note events they dropped because the spool was full, so
/// the daemon can count them (`status`: `counters.spool_full_drops`): the
/// spool's path with the extension `drops` — `events-<16 hex>.drops` for
/// both [`spool_file_for`] and [`spool_dir_for`] of one socket.
///
/// A writer appends the event's product name and a newline (one `write`
/// in append mode, no lock) while the file is under [`MAX_DROPS_BYTES`];
/// past that, drops are no longer counted one by one. The daemon renames
/// the file, counts its lines and removes it when it takes in the spool.
pub fn spool_drops_file(spool: &std::path::Path) -> PathBuf {
    spool.with_extension("drops")
}

/// Largest drop file a writer appends to.
pub const MAX_DROPS_BYTES: u64 = 64 * 1024;

/// The user's consent file: `consent` inside the state dir.
pub fn default_consent_file(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("consent")
}

#[cfg(test)]
mod tests {
    /// The names the spool writers make read back as the same socket's,
    /// and nothing else reads as a spool.
    #[test]
    fn spool_names_read_back_as_their_sockets() {
        let state = std::path::Path::new("/s");
        let name = |p: PathBuf| p.file_name().unwrap().to_str().unwrap().to_string();
        let (a, b) = (
            std::path::Path::new("/run/a.sock"),
            std::path::Path::new("/b.sock"),
        );
        let file = name(super::spool_file_for(state, a));
        let dir = name(super::spool_dir_for(state, a));
        let (hash, is_dir) = super::spool_of_name(&file).unwrap();
        assert!(!is_dir);
        assert_eq!(super::spool_of_name(&dir), Some((hash, true)));
        let other = name(super::spool_file_for(state, b));
        assert_ne!(super::spool_of_name(&other).unwrap().0, hash);
        for not in [
            "events.spool",
            "events-0123456789abcdef.drops",
            "events-0123.spool",
            "events-0123456789abcdeg.spool",
            "events-0123456789abcdef.spool.damaged-1",
        ] {
            assert_eq!(super::spool_of_name(not), None, "{not}");
        }
    }

    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn the_system_consent_file_follows_program_data_on_windows() {
        assert_eq!(
            system_consent_file_for(false, env_of(&[("ProgramData", r"D:\Data")])),
            PathBuf::from("/etc/telemetry/consent")
        );
        assert_eq!(
            system_consent_file_for(true, env_of(&[("ProgramData", r"D:\Data")])),
            PathBuf::from(r"D:\Data\telemetry\consent")
        );
        for unusable in [
            &[][..],
            &[("ProgramData", "")],
            &[("ProgramData", r"Data\x")],
        ] {
            assert_eq!(
                system_consent_file_for(true, env_of(unusable)),
                PathBuf::from(r"C:\ProgramData\telemetry\consent"),
                "{unusable:?}"
            );
        }
    }

    #[test]
    fn the_default_pipe_is_named_for_the_user_in_safe_characters() {
        let env = env_of(&[("USERNAME", "Jane Doe")]);
        assert_eq!(
            default_pipe_name(env),
            PathBuf::from(r"\\.\pipe\telemetryd-Jane_Doe")
        );
        assert_eq!(
            default_pipe_name(env_of(&[])),
            PathBuf::from(r"\\.\pipe\telemetryd-user")
        );
        assert!(is_pipe_name(std::path::Path::new(r"\\.\PIPE\x")));
        assert!(!is_pipe_name(std::path::Path::new("/run/x.sock")));
    }

    // The Unix defaults (Windows' pipe and %LOCALAPPDATA% are tested above).
    #[cfg(not(windows))]
    #[test]
    fn xdg_dirs_win_and_empty_values_are_ignored() {
        let env = env_of(&[
            ("XDG_RUNTIME_DIR", "/run/user/7"),
            ("XDG_STATE_HOME", ""),
            ("HOME", "/h"),
        ]);
        assert_eq!(
            default_socket_path(&env, 7),
            PathBuf::from("/run/user/7/telemetry/telemetryd.sock")
        );
        assert_eq!(
            default_state_dir(&env, 7),
            PathBuf::from("/h/.local/state/telemetry")
        );
        assert_eq!(
            default_config_file(&env),
            Some(PathBuf::from("/h/.config/telemetry/config.toml"))
        );
    }

    #[test]
    fn macos_uses_a_stable_directory_under_home() {
        let env = env_of(&[("HOME", "/Users/a"), ("TMPDIR", "/var/folders/x/T")]);
        assert_eq!(
            default_socket_path_for(true, &env, 501),
            PathBuf::from("/Users/a/Library/Application Support/telemetry/telemetryd.sock")
        );
        assert_eq!(
            default_socket_path_for(false, &env, 501),
            PathBuf::from("/var/folders/x/T/telemetry-501/telemetryd.sock")
        );
    }

    #[cfg(not(windows))]
    #[test]
    fn fallbacks_are_per_user() {
        let env = env_of(&[]);
        let sock = default_socket_path(&env, 42);
        assert!(sock.ends_with("telemetry-42/telemetryd.sock"), "{sock:?}");
        assert_eq!(default_config_file(&env), None);
    }
}
