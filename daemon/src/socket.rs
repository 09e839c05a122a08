//! Binding the daemon's Unix socket safely.
//!
//! The parent directory is created 0700 and the socket is made 0600, so only
//! this user can talk to the daemon. An existing socket file is probed: if a
//! live daemon answers, we refuse to start; if nobody does, it is stale and
//! removed. On drop, the socket file is removed only if it is still the one
//! we created (same inode and change time), never another daemon's.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another process is listening on the path.
    #[error("another telemetryd is already listening on {0}; stop it first, or pass --socket with another path")]
    InUse(PathBuf),
    /// Creating the directory, removing a stale socket or binding failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A socket this process bound; removes its file on drop.
pub struct BoundSocket {
    listener: Option<UnixListener>,
    path: PathBuf,
    /// (inode, ctime s, ctime ns): inodes are reused at once, so the
    /// change time tells our file from a later one.
    id: (u64, i64, i64),
}

impl BoundSocket {
    /// Take the listener (for handing to the runtime). Can be called once.
    pub fn take_listener(&mut self) -> Option<UnixListener> {
        self.listener.take()
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| file_id(&m) == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn file_id(m: &std::fs::Metadata) -> (u64, i64, i64) {
    (m.ino(), m.ctime(), m.ctime_nsec())
}

/// Bind `path` as described in the module docs.
pub fn bind(path: &Path) -> Result<BoundSocket, SocketError> {
    let io = |what: &'static str| {
        let path = path.to_path_buf();
        move |source| SocketError::Io { what, path, source }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            crate::fsutil::create_private_dir(dir).map_err(io("create the directory for"))?;
        }
    }
    if std::fs::symlink_metadata(path).is_ok() {
        match UnixStream::connect(path) {
            Ok(_) => return Err(SocketError::InUse(path.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %path.display(), "removing stale socket");
                std::fs::remove_file(path).map_err(io("remove the stale socket"))?;
            }
            Err(source) => {
                return Err(SocketError::Io {
                    what: "probe the existing socket",
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    let listener = UnixListener::bind(path).map_err(io("bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("set permissions on"))?;
    let id = file_id(&std::fs::symlink_metadata(path).map_err(io("stat"))?);
    listener.set_nonblocking(true).map_err(io("configure"))?;
    Ok(BoundSocket {
        listener: Some(listener),
        path: path.to_path_buf(),
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_live_socket_replaces_stale_one_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/d.sock");
        let first = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        assert!(matches!(bind(&path), Err(SocketError::InUse(_))));

        // Simulate a crash: the listener is gone but the file stays.
        let mut crashed = first;
        drop(crashed.take_listener());
        std::mem::forget(crashed);
        let second = bind(&path).unwrap();
        drop(second);
        assert!(!path.exists(), "our own socket is removed on drop");
    }

    #[test]
    fn does_not_remove_a_socket_it_did_not_create() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        let mut ours = bind(&path).unwrap();
        drop(ours.take_listener());
        std::fs::remove_file(&path).unwrap();
        // Take the freed inode first so the other socket surely gets a new
        // one (ctime alone is only as fine as the kernel's coarse clock).
        std::fs::write(dir.path().join("filler"), b"").unwrap();
        let _theirs = UnixListener::bind(&path).unwrap();
        drop(ours);
        assert!(path.exists());
    }
}
