//! Private files and directories: 0600 and 0700 on Unix. On Windows the
//! modes do not exist: files and directories inherit the ACL of where they
//! are made (`%LOCALAPPDATA%` is the user's own), and a directory cannot be
//! opened to sync a rename (NTFS journals it).

use std::fs::{DirBuilder, OpenOptions};
use std::path::Path;

/// Create `dir` and its missing parents with mode 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(not_a_directory)
}

/// "File exists" for a directory that is a file (or a file in the way of
/// one of its parents) does not say what is wrong: it says so instead.
fn not_a_directory(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "it (or one of its parents) exists and is not a directory",
        )
    } else {
        e
    }
}

/// [`create_private_dir`], each new directory durably: after one is
/// created its parent is synced, so that a power cut cannot take away a
/// directory whose files were synced (their entries live in it, but its
/// own entry lives in its parent). For what must survive power loss (the
/// outbox, the consent file's directory); directories that hold nothing
/// durable (the socket's, the spool's) skip the cost, which is a journal
/// commit per level on a busy disk.
pub fn create_private_dir_durable(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.as_os_str().is_empty() && !cur.is_dir() {
        missing.push(cur);
        match cur.parent() {
            Some(parent) => cur = parent,
            None => break,
        }
    }
    for d in missing.into_iter().rev() {
        #[cfg(unix)]
        let builder = {
            let mut b = DirBuilder::new();
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            b
        };
        // Windows: the directory inherits its parent's ACL.
        #[cfg(not(unix))]
        let builder = DirBuilder::new();
        match builder.create(d) {
            Ok(()) => {}
            // Made by someone else meanwhile: synced below all the same.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(not_a_directory(e)),
        }
        let parent = d.parent().filter(|p| !p.as_os_str().is_empty());
        sync_dir(parent.unwrap_or_else(|| Path::new(".")))?;
    }
    Ok(())
}

/// `options` creating files with mode `mode` (Unix; no-op elsewhere).
pub fn with_mode(options: &mut OpenOptions, mode: u32) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    options
}

/// The most [`read_small_text`] reads: a consent file is a line per
/// product.
pub const MAX_SMALL_TEXT: u64 = 1 << 20;

/// A small text file (a consent file), read whole without asking its
/// size first (a `statx` per file on every shim run) and opened
/// non-blocking: a FIFO put in its place would otherwise block the open,
/// and the caller with it, until something writes to it. A FIFO with no
/// writer reads as empty; one whose writer has written nothing yet is an
/// error. A regular file is read as ever (the flag means nothing to one).
/// More than [`MAX_SMALL_TEXT`] bytes is an error, read no further: a
/// link to `/dev/zero` in a consent file's place must not fill memory.
pub fn read_small_text(path: &Path) -> std::io::Result<String> {
    read_capped(open_nonblocking(path)?, path)
}

/// `path` opened for reading without waiting (on Unix), so a FIFO in its
/// place cannot block the open.
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    options.open(path)
}

/// All of `file` as text, or an error past [`MAX_SMALL_TEXT`] bytes, read
/// no further.
fn read_capped(file: std::fs::File, path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::with_capacity(512);
    // Through `Take`, whose reads do not ask for the size.
    file.take(MAX_SMALL_TEXT + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SMALL_TEXT {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is larger than {MAX_SMALL_TEXT} bytes", path.display()),
        ));
    }
    Ok(text)
}

/// A configuration file (TOML settings), read as [`read_small_text`]
/// reads (opened non-blocking, at most [`MAX_SMALL_TEXT`] bytes), and
/// refused if it is a directory, a FIFO or a socket: those would read as
/// empty (every setting at its default, silently) or hang the reader. A
/// device is read within the cap: `--config /dev/null` is the usual way
/// to say "no file", and `/dev/zero` fails at the cap.
pub fn read_config_text(path: &Path) -> std::io::Result<String> {
    let file = open_nonblocking(path)?;
    let kind = match file.metadata() {
        Ok(m) => Some(m.file_type()),
        Err(e) if cfg!(unix) => return Err(e),
        // Windows: a device (`NUL`) has no file information to give; it is
        // read within the cap below (a directory does not open at all).
        Err(_) => None,
    };
    let is_dir = kind.is_some_and(|k| k.is_dir());
    #[cfg(unix)]
    let pipe_or_socket = kind.is_some_and(|k| {
        use std::os::unix::fs::FileTypeExt;
        k.is_fifo() || k.is_socket()
    });
    #[cfg(not(unix))]
    let pipe_or_socket = false;
    if is_dir || pipe_or_socket {
        let what = if is_dir {
            "a directory"
        } else {
            "a FIFO or a socket"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {what}, not a file; name a TOML file"),
        ));
    }
    read_capped(file, path)
}

/// Make a rename in `dir` durable: fsync the directory (Unix; on Windows
/// the file system journals it).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    return match std::fs::File::open(dir)?.sync_all() {
        // A file system that cannot sync a directory (some FUSE, 9p and
        // vboxsf mounts) says so with EINVAL or ENOTSUP: nothing more can be
        // done there, and the rename stands (as PostgreSQL treats it).
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTSUP)) => Ok(()),
        r => r,
    };
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// The permission bits of `path` (Unix), for keeping an existing file's
/// mode when it is rewritten; `None` elsewhere or when it cannot be read.
pub fn mode_of(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    return std::fs::metadata(path)
        .ok()
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Set `file`'s permission bits to `mode` (Unix; no-op elsewhere): the
/// umask may have narrowed what `with_mode` asked for.
pub fn set_mode(file: &std::fs::File, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    return file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode));
    #[cfg(not(unix))]
    {
        let _ = (file, mode);
        Ok(())
    }
}

/// Whether the open `file` is still the file at `path` (not renamed away
/// and replaced); `false` when nothing is at `path`.
pub fn is_same_file(file: &std::fs::File, path: &Path) -> std::io::Result<bool> {
    let Ok(other) = std::fs::File::open(path) else {
        return Ok(false);
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let (a, b) = (file.metadata()?, other.metadata()?);
        Ok(a.dev() == b.dev() && a.ino() == b.ino())
    }
    #[cfg(windows)]
    {
        Ok(crate::windows::file_id(file)? == crate::windows::file_id(&other)?)
    }
}

/// What changes when a file is replaced or rewritten: its identity (inode,
/// or volume and file index on Windows), length and modification time;
/// `None` when it cannot be read. Cheap enough to look at once a second.
pub type Stamp = Option<(u64, u64, std::time::SystemTime)>;

/// The [`Stamp`] of `path`.
pub fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    let modified = meta.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH);
    #[cfg(unix)]
    let id = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(windows)]
    let id = std::fs::File::open(path)
        .ok()
        .and_then(|f| crate::windows::file_id(&f).ok())
        .map_or(0, |(volume, index)| index ^ (u64::from(volume) << 32));
    Some((id, meta.len(), modified))
}

/// Open `path` with `options` never through a link and never waiting on a
/// FIFO (on Unix), and only if it is a plain file: for files in places
/// another program (or user) may have put something else.
pub fn open_plain(path: &Path, options: &mut OpenOptions) -> std::io::Result<std::fs::File> {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(options, libc::O_NOFOLLOW | libc::O_NONBLOCK);
    let f = options.open(path).map_err(|e| {
        // A FIFO opened for writing with no reader fails with ENXIO, "No
        // such device or address", which names neither.
        #[cfg(unix)]
        if e.raw_os_error() == Some(libc::ENXIO) {
            return std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a plain file (a FIFO)", path.display()),
            );
        }
        e
    })?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not a plain file", path.display()),
        ));
    }
    Ok(f)
}

/// Why a file another user could change must not be trusted (`None`: it
/// may be): the file (its target, if a link) or the directory holding it
/// is owned by neither root nor this process's user, or is writable by
/// every user (a directory with the sticky bit set is fine: no one may
/// replace another's file there). Group-writable is allowed: a user's own
/// files are often 0664 under a private group. On Windows: the file or
/// its directory is owned by neither this user, LocalSystem, the
/// administrators nor TrustedInstaller (any user may create folders in
/// `C:\` and `%ProgramData%`, and owns what they create there); the
/// DACL is the installer's to set. Anything that cannot be checked is not
/// trusted.
pub fn untrusted(path: &Path) -> Option<String> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    [("file", Some(path)), ("directory", dir)]
        .into_iter()
        .filter_map(|(what, p)| Some((what, p?)))
        .find_map(|(what, p)| {
            // What cannot be checked is not trusted.
            not_the_users(p)
                .unwrap_or_else(|e| Some(format!("cannot be checked: {e}")))
                .map(|why| format!("the {what} {} {why}", p.display()))
        })
}

/// [`untrusted`] for a directory: it, or the directory holding it, belongs
/// to another user or is writable by every user (the directory itself not
/// even sticky: there another user may still create the files this user
/// has not made yet). A state directory such as the default
/// `/tmp/telemetry-UID/state` (no `HOME`) that another user made first
/// would let them plant the files the daemon runs (a newer binary's
/// record), decides by (the consent file) and reads (the spool). One that
/// does not exist yet is judged by the nearest directory above it that
/// does, where it would be made (another user's `/tmp/telemetry-UID`).
/// Two `stat`s when it exists.
pub fn untrusted_dir(dir: &Path) -> Option<String> {
    let said = |p: &Path, why: String| format!("the directory {} {why}", p.display());
    let cannot = |e: std::io::Error| format!("cannot be checked: {e}");
    let above = |p: &Path| -> Option<String> {
        not_the_users(p)
            .unwrap_or_else(|e| Some(cannot(e)))
            .map(|why| said(p, why))
    };
    match dir_itself(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let nearest = dir.ancestors().skip(1).map(dot).find(|a| a.exists())?;
            above(nearest)
        }
        Err(e) => Some(said(dir, cannot(e))),
        Ok(Some(why)) => Some(said(dir, why)),
        Ok(None) => above(dot(dir.parent()?)),
    }
}

/// [`untrusted`] for a file that may not exist (`None` then: nothing in it
/// to believe): the file belongs to another user or every user may write
/// it, or its directory is [`untrusted_dir`]. Three `stat`s.
pub fn untrusted_file(path: &Path) -> Option<String> {
    match not_the_users(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(format!(
            "the file {} cannot be checked: {e}",
            path.display()
        )),
        Ok(Some(why)) => Some(format!("the file {} {why}", path.display())),
        Ok(None) => untrusted_dir(dot(path.parent()?)),
    }
}

/// The empty parent of a relative path of one component is the working
/// directory.
fn dot(p: &Path) -> &Path {
    if p.as_os_str().is_empty() {
        Path::new(".")
    } else {
        p
    }
}

/// Why another user could change the directory `dir` or create files in
/// it: it belongs to neither root nor this user, or every user may write
/// it, sticky or not.
#[cfg(unix)]
fn dir_itself(dir: &Path) -> std::io::Result<Option<String>> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir)?;
    let me = crate::proc::effective_uid();
    Ok(if m.uid() != 0 && m.uid() != me {
        Some(format!(
            "belongs to uid {}, neither root nor this process's user (uid {me}), so another user could change it",
            m.uid()
        ))
    } else if m.mode() & 0o002 != 0 {
        Some("is writable by every user".to_string())
    } else {
        None
    })
}

/// Windows has no mode bits: the owner check is the check.
#[cfg(not(unix))]
fn dir_itself(dir: &Path) -> std::io::Result<Option<String>> {
    std::fs::metadata(dir)?;
    not_the_users(dir)
}

/// Why another user could change `p` (its target, if a link), as the end
/// of a sentence naming it; `None` if no one else could.
#[cfg(unix)]
fn not_the_users(p: &Path) -> std::io::Result<Option<String>> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p)?;
    let me = crate::proc::effective_uid();
    let sticky_dir = m.is_dir() && m.mode() & 0o1000 != 0;
    Ok(if m.uid() != 0 && m.uid() != me {
        Some(format!(
            "belongs to uid {}, neither root nor this process's user (uid {me}), so another user could change it",
            m.uid()
        ))
    } else if m.mode() & 0o002 != 0 && !sticky_dir {
        Some("is writable by every user".to_string())
    } else {
        None
    })
}

/// Why another user could change `p`, on Windows: its owner (who may set
/// its DACL, whatever the DACL says) is none of the trusted ones.
#[cfg(windows)]
fn not_the_users(p: &Path) -> std::io::Result<Option<String>> {
    let owner = crate::windows::security::path_owner(p)?;
    Ok((!crate::windows::trusted_owner(&owner)).then(|| {
        format!("belongs to {owner}, neither this user, LocalSystem, the administrators nor TrustedInstaller, so another user could change it")
    }))
}

/// Elsewhere nothing is known to check.
#[cfg(not(any(unix, windows)))]
fn not_the_users(_: &Path) -> std::io::Result<Option<String>> {
    Ok(None)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_directory_every_user_may_write_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let mine = root.path().join("telemetry-1000");
        let state = mine.join("state");
        assert_eq!(
            untrusted_dir(&state),
            None,
            "not there yet, above it the user's"
        );
        // Not there yet, but above it a directory open to all: where it
        // would be made is not this user's alone.
        create_private_dir(&mine).unwrap();
        std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(untrusted_dir(&state).is_some());
        std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o700)).unwrap();
        create_private_dir(&state).unwrap();
        assert_eq!(untrusted_dir(&state), None);
        // Made open to all (as another user who got there first would).
        std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o777)).unwrap();
        let why = untrusted_dir(&state).expect("its parent is open to all");
        assert!(
            why.contains("telemetry-1000") && why.contains("writable by every user"),
            "{why}"
        );
        std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(untrusted_dir(&state).is_some());
        // Sticky is not enough for the directory itself: another user may
        // still create the files not made yet. Its parent may be (as /tmp).
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(untrusted_dir(&state).is_some());
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(untrusted_dir(&state), None);
    }

    #[test]
    fn a_file_in_a_directorys_place_is_called_that() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state");
        std::fs::write(&file, "").unwrap();
        for made in [create_private_dir(&file), create_private_dir_durable(&file)] {
            let err = made.unwrap_err().to_string();
            assert!(err.contains("is not a directory"), "{err}");
        }
        create_private_dir(&dir.path().join("a/b")).unwrap();
        create_private_dir(&dir.path().join("a/b")).unwrap();
    }

    #[test]
    fn a_config_file_is_never_a_directory_or_a_fifo_and_at_most_a_mebibyte() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "sync = \"full\"\n").unwrap();
        assert_eq!(read_config_text(&file).unwrap(), "sync = \"full\"\n");
        let err = read_config_text(dir.path()).unwrap_err().to_string();
        assert!(err.contains("a directory"), "{err}");
        // A FIFO with no writer: refused at once, not read as empty.
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_config_text(&fifo).unwrap_err().to_string();
        assert!(err.contains("a FIFO"), "{err}");
        // Devices are read within the cap: /dev/null is "no settings".
        assert_eq!(read_config_text(Path::new("/dev/null")).unwrap(), "");
        let err = read_config_text(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than"), "{err}");
        std::fs::write(&file, vec![b'#'; MAX_SMALL_TEXT as usize + 1]).unwrap();
        let err = read_config_text(&file).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
    }

    #[test]
    fn files_another_user_could_change_are_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "x").unwrap();
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(dir.path(), 0o755);
        mode(&file, 0o664);
        assert_eq!(untrusted(&file), None, "group-writable is fine");
        mode(&file, 0o666);
        assert!(untrusted(&file).unwrap().contains("writable by every user"));
        mode(&file, 0o644);
        mode(dir.path(), 0o777);
        assert!(untrusted(&file).unwrap().contains("directory"));
        mode(dir.path(), 0o1777);
        assert_eq!(untrusted(&file), None, "a sticky directory (/tmp)");
        mode(dir.path(), 0o755);
        if crate::proc::effective_uid() == 0 {
            // Only root can give a file away.
            std::os::unix::fs::chown(&file, Some(12_345), None).unwrap();
            let why = untrusted(&file).unwrap();
            assert!(why.contains("uid 12345"), "{why}");
        }
    }

    #[test]
    fn an_endless_file_in_a_small_files_place_is_refused_after_the_limit() {
        let err = read_small_text(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        assert!(read_small_text(Path::new("/dev/null")).unwrap().is_empty());
    }
}

#[cfg(all(test, windows))]
mod windows_tests {
    use super::*;

    /// Owned by this user: trusted; anything unreadable is not. (Wine
    /// stores no owners of files it did not make itself, so giving one
    /// away is not tested here; `trusted_owner` decides from the SID.)
    #[test]
    fn a_file_is_trusted_by_its_owner_and_nothing_unreadable_is() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "x").unwrap();
        assert_eq!(untrusted(&file), None);
        let why = untrusted(&dir.path().join("missing.toml")).unwrap();
        assert!(why.contains("cannot be checked"), "{why}");
        use crate::windows::{trusted_owner, ADMINISTRATORS_SID, TRUSTED_INSTALLER_SID};
        for sid in [
            crate::LOCAL_SYSTEM_SID,
            ADMINISTRATORS_SID,
            TRUSTED_INSTALLER_SID,
        ] {
            assert!(trusted_owner(sid), "{sid}");
        }
        assert!(!trusted_owner("S-1-5-21-1-2-3-1001"));
        assert!(!trusted_owner("S-1-5-32-545"), "the Users group");
    }
}
