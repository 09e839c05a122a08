//! The shim's fallback when the daemon is not reachable: append the event
//! to the per-user spool file (see `telemetry_proto::paths::spool_file` for
//! the format), for the daemon to pick up when it runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use telemetry_platform::fs::{create_private_dir, open_plain, with_mode};
use telemetry_proto::{encode_frame, paths, WireEvent};

/// What happened to a spooled event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spooled {
    /// Written; the daemon will deliver it.
    Written,
    /// The spool is full; the event was dropped.
    Full,
}

/// The spool file in this environment's state dir for events meant for the
/// daemon on `socket`: only that daemon takes it in (see
/// [`paths::spool_file_for`]), so an event sent with `--socket` to another
/// daemon is never delivered by the default one.
pub fn path_for(socket: &Path) -> PathBuf {
    paths::spool_file_for(&crate::state_dir(), socket)
}

/// Append `ev` to the spool at `path`: one write of one whole frame, under
/// an exclusive lock, to a 0600 file in a 0700 directory. Waits for the
/// lock as long as it takes: for a caller with a timer of its own (the
/// shim); a library call uses [`append_by`].
pub fn append(path: &Path, ev: &WireEvent) -> std::io::Result<Spooled> {
    append_locking(path, ev, |f| f.lock())
}

/// [`append`], giving up with `TimedOut` if the spool stays locked (by a
/// daemon taking it in, or another writer) past `deadline`: the host's
/// budget, not the lock holder, decides how long this takes.
pub fn append_by(path: &Path, ev: &WireEvent, deadline: Instant) -> std::io::Result<Spooled> {
    append_locking(path, ev, |f| loop {
        match f.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the spool stayed locked for the whole time budget",
                    ));
                }
                std::thread::sleep(LOCK_POLL.min(deadline - now));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    })
}

/// How often [`append_by`] looks again at a locked spool: a writer holds
/// it for one write, a daemon's intake for a rename.
const LOCK_POLL: Duration = Duration::from_millis(2);

fn append_locking(
    path: &Path,
    ev: &WireEvent,
    lock: impl Fn(&std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<Spooled> {
    let frame =
        encode_frame(ev).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
        // Not into a directory another user made or can write (the default
        // /tmp/telemetry-UID/state without HOME, made first by someone
        // else): they could read the events.
        // The spool's directory and the state directory holding it, and
        // the one holding that (`/tmp/telemetry-UID`).
        let state = dir.parent().filter(|d| !d.as_os_str().is_empty());
        let untrusted = telemetry_platform::fs::untrusted_dir(dir)
            .or_else(|| state.and_then(telemetry_platform::fs::untrusted_dir));
        if let Some(why) = untrusted {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                why,
            ));
        }
    }
    // The daemon may rename the file between our open and our lock; then
    // we hold a file nobody will read again, so open the path anew.
    for _ in 0..3 {
        // Never through a link, never waiting on a FIFO someone put in its
        // place (the daemon would set either aside, and the host waits).
        let mut f = open_plain(
            path,
            with_mode(std::fs::OpenOptions::new().append(true).create(true), 0o600),
        )?;
        lock(&f)?;
        let same = telemetry_platform::fs::is_same_file(&f, path)?;
        if !same {
            continue;
        }
        let before = f.metadata()?.len();
        if before + frame.len() as u64 > paths::MAX_SPOOL_BYTES {
            note_drop(path, &ev.product);
            return Ok(Spooled::Full);
        }
        if let Err(e) = f.write_all(&frame) {
            // A short write (disk full) must not leave a torn frame that
            // would garble every frame after it: cut back to before it.
            let _ = f.set_len(before);
            return Err(e);
        }
        return Ok(Spooled::Written);
    }
    Err(std::io::Error::other("the spool file kept being replaced"))
}

/// Note one event of `product` dropped because the spool at `spool` is
/// full, for the daemon to count (see [`paths::spool_drops_file`]). Best
/// effort: a drop that cannot be noted is still a drop.
fn note_drop(spool: &Path, product: &str) {
    let path = paths::spool_drops_file(spool);
    let Ok(mut f) = open_plain(
        &path,
        with_mode(std::fs::OpenOptions::new().append(true).create(true), 0o600),
    ) else {
        return;
    };
    if f.metadata()
        .map_or(true, |m| m.len() < paths::MAX_DROPS_BYTES)
    {
        let _ = f.write_all(format!("{product}\n").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_whole_frames_privately_and_stops_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool/events.spool");
        let ev = crate::event("cfdev", "stop", "1", Default::default());
        assert_eq!(append(&path, &ev).unwrap(), Spooled::Written);
        assert_eq!(append(&path, &ev).unwrap(), Spooled::Written);
        let bytes = std::fs::read(&path).unwrap();
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(bytes.len(), 2 * (4 + len));
        let back: WireEvent = telemetry_proto::decode_body(&bytes[4..4 + len]).unwrap();
        assert_eq!(back, ev);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
        }

        std::fs::write(&path, vec![0u8; paths::MAX_SPOOL_BYTES as usize]).unwrap();
        assert_eq!(append(&path, &ev).unwrap(), Spooled::Full);
        assert_eq!(append(&path, &ev).unwrap(), Spooled::Full);
        let drops = paths::spool_drops_file(&path);
        assert_eq!(
            std::fs::read_to_string(&drops).unwrap(),
            "cfdev\ncfdev\n",
            "each drop noted for the daemon to count"
        );
    }

    /// A FIFO or a link someone put in the spool's place is not written
    /// through and not waited on (the open of a FIFO with no reader would
    /// block the host until its budget ends); the daemon sets either aside.
    #[cfg(unix)]
    #[test]
    #[allow(unsafe_code)]
    fn a_fifo_or_a_link_in_the_spools_place_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let ev = crate::event("cfdev", "stop", "1", Default::default());
        let fifo = dir.path().join("fifo.spool");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = Instant::now();
        let err = append(&fifo, &ev).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1), "{err}");
        // (With no reader, a non-blocking open for writing fails with
        // ENXIO; with one, the file type check refuses it.)
        let _ = err;
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        let link = dir.path().join("link.spool");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(append(&link, &ev).is_err());
        assert_eq!(
            std::fs::read(&target).unwrap(),
            b"",
            "written through the link"
        );
    }

    #[test]
    fn a_spool_locked_past_the_deadline_is_given_up_on_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool/events.spool");
        let ev = crate::event("cfdev", "stop", "1", Default::default());
        assert_eq!(append(&path, &ev).unwrap(), Spooled::Written);
        // Another open file description holds the lock, as a daemon taking
        // the spool in or a stuck writer would.
        let holder = std::fs::OpenOptions::new().read(true).open(&path).unwrap();
        holder.lock().unwrap();
        let started = Instant::now();
        let err = append_by(&path, &ev, started + Duration::from_millis(100)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "gave up after {:?}",
            started.elapsed()
        );
        // Once the holder lets go (closes it, as a writer or a daemon
        // does), the same call writes.
        drop(holder);
        let later = Instant::now() + Duration::from_secs(5);
        assert_eq!(append_by(&path, &ev, later).unwrap(), Spooled::Written);
    }
}
