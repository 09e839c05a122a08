//! Unix sockets.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A connection to the daemon's socket.
pub struct Stream(UnixStream);

/// Before anything is sent: the server must run as this user or root (a
/// socket a service manager made, as the machine-wide daemon's is, is
/// root's: systemd and launchd call `listen`). So another user who made
/// `/tmp/telemetry-<uid>` first (where `XDG_RUNTIME_DIR` is unset), or a
/// link there to a directory of theirs, cannot receive our events; the
/// daemon itself refuses to serve from such a directory. One `getsockopt`.
fn check_server(stream: &UnixStream, path: &Path) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let peer = telemetry_platform::proc::socket_peer_uid(stream.as_fd())?;
    let me = telemetry_platform::proc::effective_uid();
    if peer == me || peer == 0 {
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "the socket {} is served by uid {peer}, neither this user (uid {me}) nor root: not telemetryd's",
            path.display()
        ),
    ))
}

impl Stream {
    /// Connect; a full listen backlog makes this wait until the daemon
    /// accepts, at most `wait` (then `TimedOut`: a stopped daemon, say).
    /// Connecting to a Unix socket never touches the network.
    pub fn connect(path: &Path, wait: Duration) -> std::io::Result<Stream> {
        // A caller's `Duration::MAX` is a long wait, not an overflow.
        let deadline = std::time::Instant::now()
            .checked_add(wait)
            .unwrap_or_else(|| std::time::Instant::now() + Duration::from_secs(86_400));
        let mut pause = Duration::from_millis(1);
        loop {
            match Stream::connect_now(path) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "its listen queue stayed full for {} (is the daemon stopped or overloaded?)",
                                crate::human_duration(wait)
                            ),
                        ));
                    }
                    std::thread::sleep(pause.min(left));
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    /// Connect without ever waiting: when the daemon's listen backlog is
    /// full this fails at once (`WouldBlock`) instead of sleeping.
    pub fn connect_now(path: &Path) -> std::io::Result<Stream> {
        /// The longest socket path: `sun_path` (108 bytes on Linux, 104
        /// on the BSDs and macOS) less its NUL.
        fn max_path_len() -> usize {
            if cfg!(target_os = "linux") {
                107
            } else {
                103
            }
        }
        use socket2::{Domain, SockAddr, Socket, Type};
        let addr = SockAddr::unix(path).map_err(|e| {
            if e.kind() != std::io::ErrorKind::InvalidInput {
                return e;
            }
            // std's "path must be shorter than SUN_LEN" names neither the
            // path's length nor what to do.
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "the path is {} bytes, longer than a Unix socket's path may be here ({} at most); use a shorter one (TELEMETRY_SOCKET or --socket)",
                    path.as_os_str().len(),
                    max_path_len()
                ),
            )
        })?;
        // Non-blocking from the start where the OS allows (one system call
        // instead of three).
        #[cfg(target_os = "linux")]
        let socket = Socket::new(Domain::UNIX, Type::STREAM.nonblocking(), None)?;
        #[cfg(not(target_os = "linux"))]
        let socket = {
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            socket.set_nonblocking(true)?;
            socket
        };
        // A Unix stream connect completes or fails on the spot; it never
        // returns "in progress" like TCP.
        socket.connect(&addr)?;
        let stream = UnixStream::from(std::os::fd::OwnedFd::from(socket));
        check_server(&stream, path)?;
        // Blocking again, for the timeouts (one ioctl).
        stream.set_nonblocking(false)?;
        Ok(Stream(stream))
    }

    /// Write what the socket takes now, without waiting: 0 when it takes
    /// nothing (its buffer is full) or cannot be asked without waiting.
    /// A small frame is written whole, and no write timeout has to be
    /// set for it.
    pub fn write_now(&self, buf: &[u8]) -> std::io::Result<usize> {
        #[cfg(target_os = "linux")]
        {
            let flags = libc::MSG_DONTWAIT | NO_SIGNAL;
            match socket2::SockRef::from(&self.0).send_with_flags(buf, flags) {
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    Ok(0)
                }
                other => other,
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = buf;
            Ok(0)
        }
    }

    /// Bound the next reads.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.0.set_read_timeout(t)
    }

    /// Bound the next writes.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.0.set_write_timeout(t)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

/// Sends carry this, so a daemon that closes mid-frame is an error,
/// never a SIGPIPE in a host that restored SIGPIPE's default (many CLIs
/// do, for `cli | head`). std's `UnixStream::write` says `MSG_NOSIGNAL`
/// only from Rust 1.90 on (older ones are within our rust-version).
/// Apple's systems have no such flag; std and socket2 set `SO_NOSIGPIPE`
/// on their sockets there instead.
#[cfg(not(target_vendor = "apple"))]
const NO_SIGNAL: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(target_vendor = "apple")]
const NO_SIGNAL: libc::c_int = 0;

impl Write for Stream {
    // `write_vectored` is deliberately not forwarded: std's `writev` takes
    // no flags (see the test below).
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        socket2::SockRef::from(&self.0).send_with_flags(buf, NO_SIGNAL)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {

    #[test]
    fn a_socket_path_too_long_says_how_long_and_what_to_do() {
        let path = std::path::PathBuf::from(format!("/tmp/{}.sock", "x".repeat(140)));
        let err = Stream::connect(&path, Duration::from_millis(10))
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(
            msg.contains("150 bytes") && msg.contains("TELEMETRY_SOCKET"),
            "{msg}"
        );
    }
    use super::*;

    /// A daemon that takes no connections (stopped with Ctrl-Z, say) and
    /// whose listen queue is full: a connect gives up after its wait with
    /// `TimedOut` instead of sleeping for good; one that accepts again is
    /// reached.
    #[test]
    fn a_full_listen_queue_is_waited_for_within_the_bound() {
        use socket2::{Domain, SockAddr, Socket, Type};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        listener.bind(&SockAddr::unix(&path).unwrap()).unwrap();
        listener.listen(1).unwrap();
        let mut queued = Vec::new();
        while let Ok(s) = Stream::connect_now(&path) {
            queued.push(s);
            assert!(queued.len() < 1000, "the listen queue never filled");
        }
        let t = std::time::Instant::now();
        let err = Stream::connect(&path, Duration::from_millis(200))
            .err()
            .expect("connected to a full queue");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        assert!(t.elapsed() >= Duration::from_millis(200));
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // The client says it did not answer in time, not that it is down.
        let err = crate::Client::connect_within(&path, Duration::from_millis(50))
            .err()
            .expect("connected to a full queue");
        assert!(matches!(err, crate::ClientError::TimedOut { .. }), "{err}");
        // Room again (one queued connection taken): reached at once.
        let _ = listener.accept().unwrap();
        Stream::connect(&path, Duration::from_secs(5)).unwrap();
    }

    /// A host whose SIGPIPE is at its default (the test's child process)
    /// writes more than the socket buffers, and the daemon stops reading
    /// after a few bytes: the write fails, the host lives.
    // Test-only unsafe: fork gives a host process whose SIGPIPE can be
    // reset to its default without touching the test harness's.
    #[allow(unsafe_code)]
    #[test]
    fn a_daemon_closing_mid_frame_is_an_error_not_a_sigpipe() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut stream = Stream::connect(&path, Duration::from_secs(1)).unwrap();
        // Allocated before the fork: the child must not allocate.
        let frame = vec![0u8; 1 << 20];
        // SAFETY: the child makes only system calls (alarm, signal, send,
        // _exit): nothing that could wait on a lock another thread held at
        // fork.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            unsafe {
                // A child that never sees its error is ended, not waited
                // for forever.
                libc::alarm(10);
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                // Until the socket refuses: whatever its buffer's size.
                while stream.write_all(&frame).is_ok() {}
                libc::_exit(0);
            }
        }
        // Only the child writes: the daemon's side sees its end if it dies.
        drop(stream);
        let (mut daemon, _) = listener.accept().unwrap();
        daemon
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut first = [0u8; 16];
        let read = daemon.read_exact(&mut first);
        // Stop taking bytes, the way a closing daemon does (a close with
        // unread bytes would give the writer ECONNRESET, which raises no
        // signal; a stopped reader gives EPIPE, which does).
        let _ = daemon.shutdown(std::net::Shutdown::Read);
        let mut status = 0;
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        drop(daemon);
        read.expect("the child's first bytes");
        assert!(
            !libc::WIFSIGNALED(status),
            "the host was killed by signal {} (13: SIGPIPE, 14: the 10 s alarm)",
            libc::WTERMSIG(status)
        );
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }
}
