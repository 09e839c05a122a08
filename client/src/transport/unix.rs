//! Unix sockets.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A connection to the daemon's socket.
pub struct Stream(UnixStream);

impl Stream {
    /// Connect; a full listen backlog makes this wait until the daemon
    /// accepts. Connecting to a Unix socket never touches the network.
    pub fn connect(path: &Path) -> std::io::Result<Stream> {
        UnixStream::connect(path).map(Stream)
    }

    /// Connect without ever waiting: when the daemon's listen backlog is
    /// full this fails at once (`WouldBlock`) instead of sleeping.
    pub fn connect_now(path: &Path) -> std::io::Result<Stream> {
        use socket2::{Domain, SockAddr, Socket, Type};
        let addr = SockAddr::unix(path)?;
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
            let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
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

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
