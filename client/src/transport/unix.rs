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
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        // A Unix stream connect completes or fails on the spot; it never
        // returns "in progress" like TCP.
        socket.connect(&addr)?;
        socket.set_nonblocking(false)?;
        Ok(Stream(UnixStream::from(std::os::fd::OwnedFd::from(socket))))
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
