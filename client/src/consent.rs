//! Consent as the client side sees it: read the layers without contacting
//! the daemon, and record the user's decision.
//!
//! The shim calls [`resolve`] first; when it says `off`, nothing else
//! happens: no socket, no file written, no process started.

use std::path::{Path, PathBuf};
use telemetry_proto::consent::{env_opts_out_os, resolve as combine, ConsentFile, OPT_OUT_VARS};
use telemetry_proto::{paths, Layer, Mode};

/// Where the consent files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentPaths {
    /// The user's file (`TELEMETRY_CONSENT_FILE`, else `STATE_DIR/consent`).
    pub user: PathBuf,
    /// The administrator's file (`TELEMETRY_SYSTEM_CONSENT_FILE`, else
    /// `/etc/telemetry/consent`).
    pub system: PathBuf,
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

impl ConsentPaths {
    /// The paths for this process's environment (the daemon's defaults;
    /// a daemon configured otherwise is detected by `telemetryctl consent`).
    pub fn from_env() -> ConsentPaths {
        let user = env_path("TELEMETRY_CONSENT_FILE").unwrap_or_else(|| {
            let state = env_path("TELEMETRY_STATE_DIR").unwrap_or_else(|| {
                paths::default_state_dir(|k| std::env::var_os(k), crate::current_uid())
            });
            paths::default_consent_file(&state)
        });
        let system = env_path("TELEMETRY_SYSTEM_CONSENT_FILE")
            .unwrap_or_else(|| paths::system_consent_file(|k| std::env::var_os(k)));
        ConsentPaths { user, system }
    }
}

/// Whether this process's environment opts out (`DO_NOT_TRACK`,
/// `TELEMETRY_OPTOUT` set to anything but empty or `0`).
pub fn env_opt_out() -> bool {
    env_opt_out_var().is_some()
}

/// The first opt-out variable set in this process's environment, if any
/// (for messages that name it).
pub fn env_opt_out_var() -> Option<&'static str> {
    OPT_OUT_VARS
        .iter()
        .copied()
        .find(|v| env_opts_out_os(std::env::var_os(v).as_deref()))
}

/// The layer that decided, for people, naming its file or variable: "the
/// system file /etc/telemetry/consent", "the environment variable
/// DO_NOT_TRACK", "the user file ...", "the default: nobody decided yet,
/// so off".
pub fn describe(product: &str, layer: Layer, paths: &ConsentPaths) -> String {
    const NOBODY: &str = "the default: nobody decided yet, so off";
    match layer {
        Layer::System => format!("the system file {}", paths.system.display()),
        Layer::Environment => match env_opt_out_var() {
            Some(var) => format!("the environment variable {var}"),
            // Decided by another process's environment (the daemon's).
            None => format!("the environment ({})", OPT_OUT_VARS.join(" / ")),
        },
        Layer::UserFile => format!("the user file {}", paths.user.display()),
        // Not "nobody decided": the user may well have, in a file this
        // process cannot read.
        Layer::Default => match file_trouble(&paths.user) {
            Some(FileTrouble::Unreadable(why)) => format!(
                "the default, as the user file {} cannot be read ({why}), so off until it can be",
                paths.user.display()
            ),
            // The user may have meant to decide, in a line not understood
            // that names the product (others' lines are no reason here).
            Some(FileTrouble::BadLines(lines)) => {
                let theirs: Vec<String> = lines
                    .iter()
                    .filter(|(_, l)| l.split_whitespace().next() == Some(product))
                    .map(|(n, l)| format!("line {n}: `{l}`"))
                    .collect();
                if theirs.is_empty() {
                    return NOBODY.to_string();
                }
                format!(
                    "the default, as no line of the user file {} that is understood decides it ({}{} not understood), so off",
                    paths.user.display(),
                    theirs.join(", "),
                    if theirs.len() == 1 { " is" } else { " are" }
                )
            }
            None => NOBODY.to_string(),
        },
    }
}

/// What is wrong with a consent file, for people to hear of: nothing else
/// tells them (a daemon only logs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileTrouble {
    /// It exists but cannot be read (why). The user's then reads as
    /// undecided (off, and no decision in it applied); the administrator's
    /// as everything off.
    Unreadable(String),
    /// Lines not understood, as (1-based number, the line made printable).
    /// In the user's file such a line decides nothing (its product reads
    /// as undecided); any in the administrator's turns everything off.
    BadLines(Vec<(usize, String)>),
}

/// Most lines [`file_trouble`] quotes, and most characters of each.
const MAX_QUOTED_LINES: usize = 5;
const MAX_QUOTED_CHARS: usize = 80;

/// What is wrong with the consent file at `path`, if anything (a missing
/// file is fine).
pub fn file_trouble(path: &Path) -> Option<FileTrouble> {
    if let Some(why) = foreign(path) {
        return Some(FileTrouble::Unreadable(format!(
            "{why}: it is not believed, as someone else could have written it"
        )));
    }
    match telemetry_platform::fs::read_small_text(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(FileTrouble::Unreadable(e.to_string())),
        Ok(text) => {
            let bad = ConsentFile::parse(&text).bad_lines;
            let lines: Vec<&str> = text.lines().collect();
            (!bad.is_empty()).then(|| {
                FileTrouble::BadLines(
                    bad.iter()
                        .take(MAX_QUOTED_LINES)
                        .map(|&n| {
                            let line = lines.get(n - 1).copied().unwrap_or("");
                            (n, telemetry_proto::printable(line, MAX_QUOTED_CHARS))
                        })
                        .collect(),
                )
            })
        }
    }
}

/// A sentence on the trouble with the user's consent file `path`, with
/// what to do; `None` when there is none.
pub fn user_file_warning(path: &Path) -> Option<String> {
    let file = path.display();
    Some(match file_trouble(path)? {
        FileTrouble::Unreadable(why) => format!(
            "the consent file {file} cannot be read ({why}): every product counts as off and undecided until it can be, and nothing stored is deleted meanwhile; fix it, or record a decision (`telemetryctl consent PRODUCT on|off|local`), which keeps the file aside and writes a new one with the decisions that can still be read from it"
        ),
        FileTrouble::BadLines(lines) => format!(
            "{} of the consent file {file} {} not understood and decide nothing (nothing new is collected for a product named there, and nothing stored of it is deleted, until it is decided again): {}; `telemetryctl consent PRODUCT on|off|local` rewrites the file",
            if lines.len() == 1 { "a line" } else { "lines" },
            if lines.len() == 1 { "is" } else { "are" },
            lines
                .iter()
                .map(|(n, l)| format!("line {n}: `{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// What a user can do about an `off` decided by `layer`, as a clause to
/// append to a message ("; turn it on with ...").
pub fn how_to_turn_on(product: &str, layer: Layer) -> String {
    telemetry_proto::consent::how_to_turn_on(
        product,
        layer,
        env_opt_out_var().unwrap_or("DO_NOT_TRACK / TELEMETRY_OPTOUT"),
    )
}

/// The user's file; unreadable counts as missing (undecided, so off), and
/// so does one another user could have written (see [`foreign`]).
fn read_user(path: &Path) -> Option<ConsentFile> {
    if foreign(path).is_some() {
        return None;
    }
    telemetry_platform::fs::read_small_text(path)
        .ok()
        .map(|t| ConsentFile::parse(&t))
}

/// Why the user's consent file at `path` (which exists) must not be
/// believed: it, or the directory holding it, belongs to another user or
/// is writable by every user. Another user who made the default state
/// directory first (`/tmp/telemetry-UID/state`, without `HOME`) could
/// otherwise opt this user in.
fn foreign(path: &Path) -> Option<String> {
    // Three `stat`s on the shim's every run.
    telemetry_platform::fs::untrusted_file(path)
}

/// The administrator's file: missing is fine, but one that exists and
/// cannot be read forces everything off (fail closed).
fn read_system(path: &Path) -> Option<ConsentFile> {
    match telemetry_platform::fs::read_small_text(path) {
        Ok(t) => Some(ConsentFile::parse(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => Some(ConsentFile::unreadable()),
    }
}

/// The effective mode of `product` and which layer decided it.
pub fn resolve(product: &str, paths: &ConsentPaths) -> (Mode, Layer) {
    let system = read_system(&paths.system);
    let user = read_user(&paths.user);
    combine(product, system.as_ref(), env_opt_out(), user.as_ref())
}

/// Whether any product may be collected here by this user's clients: one
/// their file has `on` or `local` that no layer above keeps off. When none
/// may, no daemon is needed, and its absence is no fault (`status` and
/// `doctor` say so rather than urge the user to start it).
///
/// This process's own environment is left out: an opt-out variable set
/// here stops the clients run with it, not those run from another shell,
/// which a daemon would serve.
pub fn any_product_collected(paths: &ConsentPaths) -> bool {
    let system = read_system(&paths.system);
    let user = read_user(&paths.user);
    user.as_ref().is_some_and(|u| {
        u.entries
            .iter()
            .any(|e| combine(&e.product, system.as_ref(), false, Some(u)).0 != Mode::Off)
    })
}

/// The user's own recorded decision for `product`, if any.
pub fn user_decision(product: &str, paths: &ConsentPaths) -> Option<Mode> {
    read_user(&paths.user).and_then(|f| f.get(product).map(|e| e.mode))
}

/// Whether the consent file a running daemon names (`daemon`) is the one
/// this process wrote (`written`): the same path, or the same file reached
/// another way (a link in either path, say a linked state directory). A
/// file that cannot be looked at is not taken for the same.
pub fn same_file(daemon: &Path, written: &Path) -> bool {
    if daemon == written {
        return true;
    }
    match (std::fs::metadata(daemon), std::fs::metadata(written)) {
        #[cfg(unix)]
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt;
            (a.dev(), a.ino()) == (b.dev(), b.ino())
        }
        // Windows has no stable file id in std: resolve both paths.
        #[cfg(not(unix))]
        (Ok(_), Ok(_)) => matches!(
            (std::fs::canonicalize(daemon), std::fs::canonicalize(written)),
            (Ok(a), Ok(b)) if a == b
        ),
        _ => false,
    }
}

/// The parsed user file (empty if missing).
pub fn user_file(paths: &ConsentPaths) -> ConsentFile {
    read_user(&paths.user).unwrap_or_default()
}

/// The parsed system file (empty if missing).
pub fn system_file(paths: &ConsentPaths) -> ConsentFile {
    read_system(&paths.system).unwrap_or_default()
}

/// The decisions that can be read from a consent file that is not text:
/// its first [`telemetry_platform::fs::MAX_SMALL_TEXT`] bytes, each bad
/// sequence read as U+FFFD, parsed as usual; a line that does not parse is
/// left out. Only what parses is kept, never the bad lines themselves.
fn salvage(path: &Path) -> ConsentFile {
    use std::io::Read;
    let mut bytes = Vec::new();
    // A regular file (checked by the caller, under the lock).
    let read = std::fs::File::open(path).and_then(|f| {
        f.take(telemetry_platform::fs::MAX_SMALL_TEXT)
            .read_to_end(&mut bytes)
    });
    match read {
        Ok(_) => {
            let mut file = ConsentFile::parse(&String::from_utf8_lossy(&bytes));
            file.bad_lines.clear();
            file
        }
        Err(_) => ConsentFile::default(),
    }
}

/// Record `mode` for `product` in the user's file, atomically, 0600 in a
/// 0700 directory. Concurrent callers are serialized with a lock file
/// beside it, so no decision (least of all an `off`) is lost. The file is
/// rewritten in its canonical form (comments are not kept).
///
/// A file that exists but cannot be read (not UTF-8, over 1 MiB, no
/// permission) is kept: renamed beside itself to
/// `<name>.unreadable-<unix ms>-<pid>` before the new one is written, so the
/// decision is still recorded and the other products' lines are not lost.
/// Returns where it was kept, if it was.
pub fn record(product: &str, mode: Mode, paths: &ConsentPaths) -> std::io::Result<Option<PathBuf>> {
    record_version(product, mode, None, paths)
}

/// [`record`], noting that the decision was given for version `version`
/// of the product's manifest (`None`: unknown, e.g. no daemon to ask).
pub fn record_version(
    product: &str,
    mode: Mode,
    version: Option<u32>,
    paths: &ConsentPaths,
) -> std::io::Result<Option<PathBuf>> {
    use std::io::Write;
    use telemetry_platform::fs::{create_private_dir_durable, mode_of, set_mode, with_mode};
    let dir = paths
        .user
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    if is_root() {
        // Before any of it is made, then as made.
        let existing = dir.ancestors().find(|d| d.symlink_metadata().is_ok());
        only_roots_directories(existing.unwrap_or(Path::new("/")))?;
        create_private_dir_durable(dir)?;
        only_roots_directories(dir)?;
    } else {
        create_private_dir_durable(dir)?;
        if let Some(why) = telemetry_platform::fs::untrusted_dir(dir) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{why}, so a decision written there could be changed by them; set HOME, XDG_STATE_HOME or TELEMETRY_STATE_DIR to a directory of your own"),
            ));
        }
    }
    // A plain file only: a FIFO in its place would block the open.
    let lock = telemetry_platform::fs::open_plain(
        &dir.join(".consent.lock"),
        with_mode(
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true),
            0o600,
        ),
    )?;
    // Held until `lock` is dropped at the end of this function.
    lock.lock()?;
    // A Node writer (Node has no flock) holds NODE_LOCK instead: it makes
    // that file, then waits for this flock to be free. Taking the flock and
    // then looking for its file, in the opposite order, means two writers
    // can never both go ahead.
    while node_lock_held(dir) {
        lock.unlock()?;
        std::thread::sleep(std::time::Duration::from_millis(2));
        lock.lock()?;
    }
    // Under the lock, so what is looked at is what is written.
    refuse_unless_a_file(&paths.user)?;
    let user = &paths.user;
    // Keep an existing file's mode: a machine-wide file (read by a daemon
    // running as another user) is made 0644 once by the administrator.
    let file_mode = mode_of(user).unwrap_or(0o600);
    let (mut file, kept) = match telemetry_platform::fs::read_small_text(user) {
        Ok(t) => (ConsentFile::parse(&t), None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (ConsentFile::default(), None),
        Err(e) => {
            // What can still be read is kept: a stray byte must not turn
            // every other product's decision into "undecided", which the
            // daemon would apply as an off (deleting what it stored and
            // telling each vendor). Not UTF-8 or too long: the lines that
            // parse from the first MiB read with the bad bytes replaced
            // (a line with one in its product or mode does not parse). No
            // permission: nothing.
            let salvaged = if e.kind() == std::io::ErrorKind::InvalidData {
                salvage(user)
            } else {
                ConsentFile::default()
            };
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let name = user.file_name().unwrap_or_default().to_string_lossy();
            let base = format!("{name}.unreadable-{ms}-{}", std::process::id());
            // Never over one kept before in the same millisecond: a rename
            // would replace it.
            let mut aside = dir.join(&base);
            let mut n = 2;
            while aside.symlink_metadata().is_ok() {
                aside = dir.join(format!("{base}-{n}"));
                n += 1;
            }
            std::fs::rename(user, &aside)?;
            (salvaged, Some(aside))
        }
    };
    let now = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    file.set_version(product, mode, Some(now), version);
    // A file kept because it had no read permission must not pass that on:
    // the new one is readable and writable by its owner, whatever else it
    // had.
    let mode = match kept {
        Some(_) => (file_mode | 0o600) & 0o666,
        None => file_mode,
    };
    let tmp = dir.join(format!(".consent.{}.tmp", std::process::id()));
    // A new file only: one left by a writer that died is removed first
    // (removing a link removes the link), and whatever another user put in
    // its place, a link to their file say, is never opened and truncated.
    let create = || {
        with_mode(
            std::fs::OpenOptions::new().write(true).create_new(true),
            mode,
        )
        .open(&tmp)
    };
    let mut f = match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp)?;
            create()?
        }
        other => other?,
    };
    // The umask may have narrowed it.
    set_mode(&f, mode)?;
    f.write_all(file.render().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, user)?;
    // The decision is recorded only once the rename is durable: an `off`
    // acknowledged to the user must survive a power cut.
    telemetry_platform::fs::sync_dir(dir)?;
    Ok(kept)
}

/// An error, with nothing written, unless what stands at the consent
/// file's `path` is nothing yet or a regular file, and, for root, root's.
/// - A link is refused, not followed: a link another user planted (in a
///   directory they may write, or at the end of a chain of links) would
///   lead the writer, root above all, to overwrite whatever it points to;
///   replacing it instead left the file it pointed to with the old
///   decision. The message says to name the file itself.
/// - A directory, a FIFO, a device or a socket is refused:
///   `TELEMETRY_CONSENT_FILE=/dev/null` (as `--config /dev/null` means
///   none) was replaced by a regular file, for the whole machine as root,
///   and `/tmp` would have been moved aside.
///
/// The SDKs do the same.
fn refuse_unless_a_file(path: &Path) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let t = meta.file_type();
    let what = if t.is_symlink() {
        "a link (name the file itself)".to_string()
    } else if t.is_dir() {
        "a directory".to_string()
    } else if !t.is_file() {
        special_kind(&meta).to_string()
    } else {
        match owner_if_not_roots(&meta) {
            Some(uid) => format!("owned by uid {uid}, and root writes only root's files"),
            None => return Ok(()),
        }
    };
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!(
            "{} is {what}, not a consent file to write: nothing was written; point TELEMETRY_CONSENT_FILE at a regular file",
            path.display()
        ),
    ))
}

/// What a file that is neither regular, a directory nor a link is.
fn special_kind(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO";
        } else if t.is_char_device() || t.is_block_device() {
            return "a device";
        } else if t.is_socket() {
            return "a socket";
        }
    }
    let _ = meta;
    "not a regular file"
}

/// The owner of `meta`'s file when this process is root and it is not
/// root's (`None` for anyone else, or where there are no uids).
fn owner_if_not_roots(meta: &std::fs::Metadata) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if telemetry_platform::proc::effective_uid() == 0 && meta.uid() != 0 {
            return Some(meta.uid());
        }
    }
    let _ = meta;
    None
}

/// Whether this process runs as root (never on Windows, which has no uids).
fn is_root() -> bool {
    #[cfg(unix)]
    return telemetry_platform::proc::effective_uid() == 0;
    #[cfg(not(unix))]
    return false;
}

/// For root: an error unless every directory on the way to `dir`, as named
/// and as resolved, is root's and writable by nobody else (a sticky one
/// aside, as `/tmp`). Another user who made `/tmp/telemetry-0` first (root's
/// default with no `HOME`), or whose home `sudo -E` kept, could otherwise
/// lead root's write anywhere through a link in a directory of theirs.
fn only_roots_directories(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let resolved = std::fs::canonicalize(dir)?;
        let named = std::path::absolute(dir)?;
        for d in named.ancestors().chain(resolved.ancestors()) {
            let m = std::fs::symlink_metadata(d)?;
            let sticky = m.is_dir() && m.mode() & 0o1000 != 0;
            let why = if m.uid() != 0 {
                format!("is owned by uid {}", m.uid())
            } else if m.mode() & 0o022 != 0 && !sticky && !m.file_type().is_symlink() {
                "may be written by other users".to_string()
            } else {
                continue;
            };
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} {why}: root writes a consent file only where no other user can redirect it; nothing was written; set TELEMETRY_CONSENT_FILE (or HOME) to a place of root's",
                    d.display()
                ),
            ));
        }
    }
    let _ = dir;
    Ok(())
}

/// The lock a Node writer of the consent file holds (the Node SDK's
/// `takeLock`): a file made by exclusive creation, holding its pid.
pub const NODE_LOCK: &str = ".consent.node-lock";

/// A Node writer's lock older than this belongs to one that died.
const NODE_LOCK_STALE: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether a live Node writer holds `dir`'s [`NODE_LOCK`]: it exists and
/// was made within [`NODE_LOCK_STALE`] (either way, for a clock that moved).
fn node_lock_held(dir: &Path) -> bool {
    let Ok(made) = std::fs::metadata(dir.join(NODE_LOCK)).and_then(|m| m.modified()) else {
        return false;
    };
    let age = match std::time::SystemTime::now().duration_since(made) {
        Ok(age) => age,
        Err(ahead) => ahead.duration(),
    };
    age < NODE_LOCK_STALE
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// A flock writer waits while a live Node writer holds its lock, and
    /// ignores one left by a writer that died.
    #[test]
    fn a_node_writers_lock_is_waited_for_unless_stale() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ConsentPaths {
            user: dir.path().join("consent"),
            system: dir.path().join("none"),
        };
        let node_lock = dir.path().join(NODE_LOCK);
        std::fs::write(&node_lock, "4242\n").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = paths.clone();
        std::thread::spawn(move || {
            let _ = tx.send(record_version("cfdev", Mode::Off, None, &p).is_ok());
        });
        let wait = std::time::Duration::from_millis(300);
        assert!(
            rx.recv_timeout(wait).is_err(),
            "went ahead while a Node writer held its lock"
        );
        std::fs::remove_file(&node_lock).unwrap();
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(10)),
            Ok(true)
        );
        assert_eq!(user_decision("cfdev", &paths), Some(Mode::Off));
        // Left by a writer that died 11 s ago: not waited for.
        std::fs::write(&node_lock, "4242\n").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(11);
        std::fs::File::options()
            .write(true)
            .open(&node_lock)
            .unwrap()
            .set_modified(old)
            .unwrap();
        record_version("cfdev", Mode::On, None, &paths).unwrap();
        assert_eq!(user_decision("cfdev", &paths), Some(Mode::On));
    }

    /// A file that cannot be read is kept, byte for byte, beside the new
    /// one, which holds the decision.
    #[test]
    fn an_unreadable_file_is_kept_aside_and_the_decision_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ConsentPaths {
            user: dir.path().join("consent"),
            system: dir.path().join("none"),
        };
        // Each: the old bytes, their mode, and what `other` reads as after.
        for (old, mode, other) in [
            (
                b"other on 2026-12-01T00:00:00Z\n\xff\nbr\xffken on\n".to_vec(),
                0o600,
                Some(Mode::On),
            ),
            (
                vec![b'#'; (telemetry_platform::fs::MAX_SMALL_TEXT + 1) as usize],
                0o644,
                None,
            ),
        ] {
            std::fs::write(&paths.user, &old).unwrap();
            std::fs::set_permissions(
                &paths.user,
                std::os::unix::fs::PermissionsExt::from_mode(mode),
            )
            .unwrap();
            let kept = record("cfdev", Mode::Off, &paths)
                .unwrap()
                .expect("the unreadable file is kept");
            assert_eq!(kept.parent(), Some(dir.path()));
            assert!(kept
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("consent.unreadable-"));
            assert_eq!(std::fs::read(&kept).unwrap(), old);
            assert_eq!(user_decision("cfdev", &paths), Some(Mode::Off));
            // What could be read is kept; the line with a bad byte is not.
            assert_eq!(user_decision("other", &paths), other);
            let text = std::fs::read_to_string(&paths.user).unwrap();
            assert!(
                !text.contains('\u{fffd}') && !text.contains("ken"),
                "{text}"
            );
            assert_eq!(telemetry_platform::fs::mode_of(&paths.user), Some(mode));
            std::fs::remove_file(&kept).unwrap();
        }
        // A readable one is rewritten in place, nothing kept.
        assert_eq!(record("other", Mode::On, &paths).unwrap(), None);
        assert_eq!(user_decision("cfdev", &paths), Some(Mode::Off));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "the file and its lock"
        );
    }

    /// A directory, device, FIFO, socket or link in the consent file's place
    /// is refused and left as it was (a directory was moved aside: `/tmp`,
    /// as root; a link is not followed, whoever planted it).
    #[test]
    fn only_a_regular_file_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let paths = |user: PathBuf| ConsentPaths {
            user,
            system: dir.path().join("none"),
        };
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let sock = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let folder = dir.path().join("projects");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("work"), "mine").unwrap();
        let real = dir.path().join("real");
        std::fs::write(&real, "other on\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        for (path, what) in [
            (PathBuf::from("/dev/null"), "a device"),
            (fifo, "a FIFO"),
            (sock, "a socket"),
            (folder.clone(), "a directory"),
            (link, "a link (name the file itself)"),
        ] {
            let before = std::fs::symlink_metadata(&path).unwrap();
            let err = record("cfdev", Mode::Off, &paths(path.clone())).unwrap_err();
            assert!(
                err.to_string().contains(what) && err.to_string().contains("nothing was written"),
                "{err}"
            );
            let after = std::fs::symlink_metadata(&path).unwrap();
            assert_eq!(before.file_type(), after.file_type());
            use std::os::unix::fs::MetadataExt;
            assert_eq!(
                before.ino(),
                after.ino(),
                "{} left as it was",
                path.display()
            );
        }
        assert_eq!(std::fs::read(folder.join("work")).unwrap(), b"mine");
        assert_eq!(std::fs::read(&real).unwrap(), b"other on\n");
        // A regular file is written.
        record("cfdev", Mode::On, &paths(real.clone())).unwrap();
        assert_eq!(user_decision("cfdev", &paths(real)), Some(Mode::On));
    }

    /// Root writes only its own file, in directories only root may change,
    /// and never opens a temp file another user put in place.
    #[test]
    fn root_writes_no_other_users_file_nor_in_their_directories() {
        if telemetry_platform::proc::effective_uid() != 0 {
            eprintln!("SKIPPED: needs root to own files as another user (CI runs as root)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let paths = |user: PathBuf| ConsentPaths {
            user,
            system: dir.path().join("none"),
        };
        // lchown: a link itself, not what it points to.
        let chown =
            |p: &Path, uid: u32| std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
        let theirs = dir.path().join("theirs");
        std::fs::write(&theirs, "secret\n").unwrap();
        chown(&theirs, 65534);
        let err = record("cfdev", Mode::Off, &paths(theirs.clone())).unwrap_err();
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        // A directory of theirs on the way, named or reached through a
        // link (root's /tmp/telemetry-0 made first by another user).
        let their_dir = dir.path().join("their-dir");
        std::fs::create_dir(&their_dir).unwrap();
        chown(&their_dir, 65534);
        let err = record("cfdev", Mode::Off, &paths(their_dir.join("consent"))).unwrap_err();
        assert!(err.to_string().contains("is owned by uid 65534"), "{err}");
        let roots = dir.path().join("roots");
        std::fs::create_dir(&roots).unwrap();
        std::os::unix::fs::symlink(&roots, their_dir.join("state")).unwrap();
        let err = record("cfdev", Mode::Off, &paths(their_dir.join("state/consent"))).unwrap_err();
        assert!(err.to_string().contains("is owned by uid 65534"), "{err}");
        let err = record("cfdev", Mode::Off, &paths(their_dir.join("new/consent"))).unwrap_err();
        assert!(err.to_string().contains("is owned by uid 65534"), "{err}");
        assert!(
            !their_dir.join("new").exists(),
            "nothing made in their directory"
        );
        assert!(
            std::fs::read_dir(&roots).unwrap().next().is_none(),
            "nothing written there"
        );
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let err = record("cfdev", Mode::Off, &paths(open.join("consent"))).unwrap_err();
        assert!(
            err.to_string().contains("may be written by other users"),
            "{err}"
        );
        assert_eq!(std::fs::read(&theirs).unwrap(), b"secret\n");
        // A link in the temp file's place is removed, not followed.
        let file = dir.path().join("consent2");
        let tmp = dir
            .path()
            .join(format!(".consent.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&theirs, &tmp).unwrap();
        record("cfdev", Mode::Off, &paths(file.clone())).unwrap();
        assert_eq!(std::fs::read(&theirs).unwrap(), b"secret\n");
        assert_eq!(user_decision("cfdev", &paths(file)), Some(Mode::Off));
        assert!(tmp.symlink_metadata().is_err());
    }

    #[test]
    fn a_fifo_in_a_consent_files_place_reads_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("consent");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let paths = ConsentPaths {
            user: fifo,
            system: dir.path().join("none"),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(resolve("cfdev", &paths));
        });
        // With no writer it reads as empty: undecided, so off. (A blocking
        // open would wait here for a writer that never comes.)
        let (mode, _) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO consent file still blocked after 10 s");
        assert_eq!(mode, Mode::Off);
    }
}
