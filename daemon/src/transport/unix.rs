//! Unix sockets: the listener, the peer's uid and second handles for
//! answers from the store thread.

use super::PeerIdentity;
use std::io::Write;
use std::sync::Arc;

/// One client connection.
pub type Conn = tokio::net::UnixStream;

/// The daemon's listening socket.
pub struct Listener(tokio::net::UnixListener);

impl Listener {
    /// Serve on a bound (or inherited) socket.
    pub fn new(listener: tokio::net::UnixListener) -> Listener {
        Listener(listener)
    }

    /// The next connection.
    pub async fn accept(&self) -> std::io::Result<Conn> {
        self.0.accept().await.map(|(conn, _)| conn)
    }
}

impl From<tokio::net::UnixListener> for Listener {
    fn from(l: tokio::net::UnixListener) -> Listener {
        Listener(l)
    }
}

/// Whether something serves `endpoint` now (a connect succeeds).
pub fn serves(endpoint: &std::path::Path) -> bool {
    std::os::unix::net::UnixStream::connect(endpoint).is_ok()
}

/// The peer's uid, from the socket's credentials.
pub fn peer_identity(conn: &Conn) -> PeerIdentity {
    conn.peer_cred()
        .map_or(PeerIdentity::Unknown, |c| PeerIdentity::Uid(c.uid()))
}

/// The daemon's own effective uid.
pub fn own_identity() -> PeerIdentity {
    PeerIdentity::Uid(telemetry_platform::proc::effective_uid())
}

/// A second handle on a connection's socket (non-blocking), through which
/// the store thread can answer an acknowledged emit itself.
pub type ReplyTo = Arc<std::os::unix::net::UnixStream>;

/// A non-blocking second handle on `conn`'s socket, for answers written
/// from another thread; `None` when the descriptor cannot be duplicated
/// (the connection task then writes every answer itself).
pub fn second_handle(conn: &Conn) -> Option<ReplyTo> {
    use std::os::fd::AsFd;
    let fd = conn.as_fd().try_clone_to_owned().ok()?;
    let socket = std::os::unix::net::UnixStream::from(fd);
    // Shared with the original (one open file description), and already
    // set by tokio; said again because a blocking write on the store
    // thread would stall every client.
    socket.set_nonblocking(true).ok()?;
    Some(Arc::new(socket))
}

/// Write as much of `frame` as the socket takes without waiting; returns
/// how much. A peer that is not reading (its buffer full) or gone gets the
/// rest from its connection task, which waits and times out as usual.
pub fn write_now(socket: &ReplyTo, frame: &[u8]) -> usize {
    let mut written = 0;
    while written < frame.len() {
        match (&**socket).write(&frame[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    written
}

/// The process's soft limit on open files.
pub fn open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    // rlim_t is a u64 on Linux and macOS alike.
    lim.rlim_cur
}
