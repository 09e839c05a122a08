//! # telemetry-client
//!
//! A small, blocking client for `telemetryd`, used by the `telemetry-emit`
//! shim, `telemetryctl` and Rust CLIs that want to emit in-process.
//!
//! It is deliberately synchronous and runtime-free: a CLI pays only for a
//! `connect`, one write and (with an ack) one read, each bounded by a
//! deadline, so telemetry can never hang the host program.
//!
//! A CLI records events with [`record_event`], which checks consent first
//! (the files and `DO_NOT_TRACK`, without contacting the daemon) and does
//! nothing at all when it is off:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let acked = telemetry_client::record_event(
//!     "cfdev", "start_begin", "0.9.1", Default::default(), Duration::from_millis(100),
//! );
//! // Never let telemetry fail the CLI: ignore the result.
//! let _ = acked;
//! ```
//!
//! [`Client`] is the raw protocol, for tools like `telemetryctl`: it does
//! not check consent (the daemon still enforces the consent files).

// Unsafe only where a detached daemon is started (between fork and exec)
// and for the user's id.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod autostart;
pub mod cli;
pub mod consent;
pub mod spool;
pub mod stream;
pub mod transport;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use telemetry_proto::{decode_body, encode_frame, paths, CodecError};
pub use telemetry_proto::{
    ConsentReport, ErrorCode, EventState, EventsPage, FlushReport, Layer, Mode, ProductConsent,
    Request, Response, ShownEvent, StatusReport, Value, WireEvent, MAX_FRAME_LEN,
};

/// A wait as people read it in a message: `60 ms`, `2.5 s` (a `Duration`'s
/// debug form says `59.901843ms`).
pub fn human_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", (d.as_secs_f64() * 1000.0).round() as u64)
    } else if d < Duration::from_secs(60) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} s", d.as_secs_f64().round() as u64)
    }
}

/// What to try when the socket cannot be reached: starting the daemon,
/// unless it is there but refused (not ours, or not ours to open).
fn unreachable_hint(e: &std::io::Error, path: &Path) -> &'static str {
    // The system refused this user the socket: a machine-wide daemon's,
    // open to the members of its group only.
    if is_not_open_to_this_user(e, path) {
        return " (the socket is not open to this user: a machine-wide telemetryd lets in the members of its group, `telemetry`; ask the administrator to add you: usermod -aG telemetry USER, then log in again)";
    }
    // The system refused another socket: its directory or the socket is
    // another user's.
    if e.kind() == std::io::ErrorKind::PermissionDenied && e.raw_os_error().is_some() {
        return " (the socket or its directory is not open to this user: another user's, or set TELEMETRY_SOCKET to your own)";
    }
    // There, but every connection taken (a full listen backlog, every pipe
    // instance busy): starting another would not help.
    if matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ) || (cfg!(windows) && e.raw_os_error() == Some(231))
    {
        return " (it is busy: every connection is taken for now)";
    }
    // The machine-wide Windows service's pipe: the service manager starts
    // it, never a client.
    if telemetry_proto::paths::is_machine_pipe(path) {
        return " (the machine-wide service is not running: an administrator starts it with `sc.exe start telemetryd`)";
    }
    // Refused by our own checks, or a path no daemon could be listening
    // on: the error says what to do instead.
    if matches!(
        e.kind(),
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::InvalidInput
    ) {
        ""
    } else {
        NOT_RUNNING_HINT
    }
}

/// How an error reply is introduced: the daemon refused the request, or
/// (an upload, a store) failed at it, which is not a refusal of anything
/// the client sent.
fn refused_what(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Upload => "telemetryd could not upload",
        ErrorCode::Storage => "telemetryd could not use its store",
        _ => "telemetryd refused the request",
    }
}

/// What a failed connection adds when nothing serves (see
/// [`ClientError::without_start_advice`]).
const NOT_RUNNING_HINT: &str = " (is it running? start it with `telemetryctl start`, or as a service: `telemetryd install --user`)";

/// Whether a daemon on `socket` takes in what this user's clients spool
/// for it: not the machine-wide one (the Linux socket under
/// [`MACHINE_WIDE_SOCKET_DIR`], the Windows service's pipe), which runs as
/// a user of its own and never reads users' state dirs.
pub fn spool_is_taken_in(socket: &Path) -> bool {
    !(telemetry_proto::paths::is_machine_pipe(socket) || is_machine_wide_socket(socket))
}

/// Whether `path` is under [`MACHINE_WIDE_SOCKET_DIR`], on Linux.
fn is_machine_wide_socket(path: &Path) -> bool {
    cfg!(target_os = "linux") && path.starts_with(MACHINE_WIDE_SOCKET_DIR)
}

/// Where the machine-wide daemon's socket is on Linux (its systemd socket
/// unit, open to the `telemetry` group).
pub const MACHINE_WIDE_SOCKET_DIR: &str = "/run/telemetry";

/// Whether the system refused this user the machine-wide socket (EACCES on
/// connect to a socket under [`MACHINE_WIDE_SOCKET_DIR`], on Linux), as
/// opposed to a refusal of the client's own (another user's daemon) or a
/// directory another user made first, where no group helps.
pub fn is_not_open_to_this_user(e: &std::io::Error, path: &Path) -> bool {
    e.kind() == std::io::ErrorKind::PermissionDenied
        && e.raw_os_error().is_some()
        && is_machine_wide_socket(path)
}

/// Why a request to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing is listening on the socket (or it cannot be opened).
    #[error("telemetryd is not reachable at {path}: {source}{}", unreachable_hint(.source, .path))]
    Unreachable {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon did not answer in time.
    #[error("telemetryd at {path} did not answer within {}", human_duration(*.after))]
    TimedOut {
        /// The socket path.
        path: PathBuf,
        /// The time budget.
        after: Duration,
    },
    /// Reading or writing the socket failed.
    #[error("i/o error talking to telemetryd at {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A request could not be encoded.
    #[error("protocol error talking to telemetryd: {0}")]
    Protocol(#[from] CodecError),
    /// The daemon's reply could not be read: most likely a daemon of
    /// another release.
    #[error(
        "telemetryd at {path} sent a reply this client cannot read: {source}; is it of \
         another release? compare `telemetryd --version` with this client's, and restart \
         the daemon after an upgrade"
    )]
    Reply {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: CodecError,
    },
    /// The daemon answered with an error.
    #[error("{} ({code}): {message}", refused_what(*code))]
    Refused {
        /// The daemon's error code.
        code: ErrorCode,
        /// The daemon's message.
        message: String,
    },
    /// The daemon answered with a response of the wrong kind.
    #[error("unexpected reply from telemetryd: {0}")]
    Unexpected(String),
    /// An earlier call on this connection timed out or failed, so replies
    /// can no longer be matched to requests.
    #[error("this connection to telemetryd at {0} failed earlier; connect again")]
    Broken(PathBuf),
}

impl ClientError {
    /// The error as a client that has just started the daemon itself says
    /// it: without "is it running? start it", which would contradict that.
    pub fn without_start_advice(&self) -> String {
        match self {
            ClientError::Unreachable { path, source }
                if unreachable_hint(source, path) == NOT_RUNNING_HINT =>
            {
                format!(
                    "telemetryd is not reachable at {}: {source}",
                    path.display()
                )
            }
            other => other.to_string(),
        }
    }
}

/// Result of an acknowledged emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// Events newly committed.
    pub accepted: u32,
    /// Events the daemon already had (kept once).
    pub duplicates: u32,
}

/// The socket path the daemon uses by default for this user
/// (`$XDG_RUNTIME_DIR/telemetry/telemetryd.sock` or a per-user temp dir),
/// overridden by `TELEMETRY_SOCKET`.
pub fn default_socket_path() -> PathBuf {
    if let Some(p) = std::env::var_os("TELEMETRY_SOCKET").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    telemetry_proto::paths::default_socket_path(|k| std::env::var_os(k), current_uid())
}

/// The state dir as the daemon resolves it from the environment:
/// `TELEMETRY_STATE_DIR`, else `$XDG_STATE_HOME/telemetry`, else
/// `~/.local/state/telemetry`.
pub fn state_dir() -> PathBuf {
    std::env::var_os("TELEMETRY_STATE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            telemetry_proto::paths::default_state_dir(|k| std::env::var_os(k), current_uid())
        })
}

/// The current user's id. (Windows has no uid: its default paths do not
/// use one.)
#[cfg(not(unix))]
pub(crate) fn current_uid() -> u32 {
    0
}

/// The current user's id: the real uid, as the daemon takes it for its
/// own default paths. (One system call; the shim asks up to twice a run.)
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Build an event with a fresh UUIDv7 id and the current time.
pub fn event(product: &str, name: &str, build: &str, data: BTreeMap<String, Value>) -> WireEvent {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    WireEvent {
        id: uuid::Uuid::now_v7(),
        event: name.to_string(),
        product: product.to_string(),
        build: build.to_string(),
        timestamp_us: now,
        data,
    }
}

/// A connection to the daemon. One request at a time.
///
/// After a timeout or an I/O error the connection is out of step (a late
/// reply may still arrive), so every later call fails with
/// [`ClientError::Broken`]: connect again.
pub struct Client {
    stream: transport::Stream,
    path: PathBuf,
    /// Replies to no-ack emits not read yet; read and dropped before the
    /// next request so replies stay matched to requests.
    unread: usize,
    /// Bytes read from the socket and not yet taken: the start of the
    /// next reply. (A read asks for more than the 4-byte length, so that a
    /// small reply arrives in one read, not two.)
    pending: Vec<u8>,
    broken: bool,
}

/// How much one read asks for beyond what the frame needs: a whole small
/// reply (an acknowledgement is 8 bytes).
const READ_AHEAD: usize = 256;

/// Longest timeout a call honours: a caller may pass `Duration::MAX` for
/// "no limit", and a deadline that far off is past what an `Instant` can
/// hold (adding it would panic in the host).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// How long [`Client::connect`] waits for a daemon whose listen queue is
/// full before it gives up: a daemon that is stopped (Ctrl-Z) must not
/// hang `telemetryctl status` for good.
pub const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// The most [`Client::pending`] keeps allocated between replies.
const MAX_KEPT_BUFFER: usize = 64 * 1024;

impl Client {
    /// Connect to the daemon's socket. Connecting to a Unix socket does not
    /// touch the network and returns at once when nobody listens; when the
    /// daemon's listen queue is full (it is stopped, or swamped) this waits
    /// for it at most [`CONNECT_WAIT`], then fails with
    /// [`ClientError::TimedOut`] (Linux; macOS refuses such a connect at
    /// once, and Windows waits for a free pipe instance).
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        Client::connect_within(path, CONNECT_WAIT)
    }

    /// [`Client::connect`] waiting at most `wait` for a full listen queue
    /// (or, on Windows, a busy pipe).
    pub fn connect_within(path: impl AsRef<Path>, wait: Duration) -> Result<Client, ClientError> {
        let path = path.as_ref().to_path_buf();
        let wait = wait.min(MAX_TIMEOUT);
        match transport::Stream::connect(&path, wait) {
            Ok(stream) => Ok(Client::over(stream, path)),
            // Running, but taking no connections (stopped, or swamped):
            // not "is it running?".
            Err(source) if source.kind() == std::io::ErrorKind::TimedOut => {
                Err(ClientError::TimedOut { path, after: wait })
            }
            Err(source) => Err(ClientError::Unreachable { path, source }),
        }
    }

    fn over(stream: transport::Stream, path: PathBuf) -> Client {
        Client {
            stream,
            path,
            unread: 0,
            pending: Vec::new(),
            broken: false,
        }
    }

    /// [`Client::connect`] that never waits: when the daemon's listen
    /// backlog is full, a blocking connect to a Unix socket sleeps until
    /// the daemon accepts; this one fails at once (`WouldBlock`) instead,
    /// so a caller with a time budget can fall back (the shim spools).
    pub fn connect_now(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let path = path.as_ref().to_path_buf();
        match transport::Stream::connect_now(&path) {
            Ok(stream) => Ok(Client::over(stream, path)),
            Err(source) => Err(ClientError::Unreachable { path, source }),
        }
    }

    /// [`Client::connect_now`], but on Windows waiting up to `wait` for a
    /// pipe instance when every one is busy. A named pipe has no backlog:
    /// between taking a connection and offering the next instance the
    /// daemon is briefly "busy" to everyone, so shims started together
    /// (`make -j`) would spool far below its connection limit. A Unix
    /// socket's backlog already holds them; a full one fails at once.
    pub fn connect_briefly(path: impl AsRef<Path>, wait: Duration) -> Result<Client, ClientError> {
        #[cfg(windows)]
        {
            let path = path.as_ref().to_path_buf();
            match transport::Stream::connect(&path, wait) {
                Ok(stream) => Ok(Client::over(stream, path)),
                Err(source) => Err(ClientError::Unreachable { path, source }),
            }
        }
        #[cfg(not(windows))]
        {
            let _ = wait;
            Client::connect_now(path)
        }
    }

    fn io(&self, source: std::io::Error, deadline_budget: Duration) -> ClientError {
        match source.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                ClientError::TimedOut {
                    path: self.path.clone(),
                    after: deadline_budget,
                }
            }
            _ => ClientError::Io {
                path: self.path.clone(),
                source,
            },
        }
    }

    /// Write one request frame within `timeout`.
    fn send(&mut self, req: &Request, timeout: Duration) -> Result<(), ClientError> {
        let timeout = timeout.min(MAX_TIMEOUT);
        if self.broken {
            return Err(ClientError::Broken(self.path.clone()));
        }
        let frame = encode_frame(req)?;
        let t = timeout.max(Duration::from_millis(1));
        // What the socket takes at once needs no timeout (a small frame:
        // all of it); the rest is written with one.
        let result = self
            .stream
            .write_now(&frame)
            .and_then(|n| match &frame[n..] {
                [] => Ok(()),
                rest => self
                    .stream
                    .set_write_timeout(Some(t))
                    .and_then(|_| self.stream.write_all(rest)),
            })
            .map_err(|e| self.io(e, timeout));
        self.broken |= result.is_err();
        result
    }

    /// Read one response frame, all of it before `deadline`. Any failure
    /// but an error reply breaks the connection.
    fn recv(&mut self, deadline: Instant, budget: Duration) -> Result<Response, ClientError> {
        let result = self.recv_frame(deadline, budget);
        if !matches!(result, Ok(_) | Err(ClientError::Refused { .. })) {
            self.broken = true;
        }
        result
    }

    fn recv_frame(&mut self, deadline: Instant, budget: Duration) -> Result<Response, ClientError> {
        self.fill_by(4, deadline, budget)?;
        let len = u32::from_be_bytes(self.pending[..4].try_into().expect("4 bytes")) as usize;
        // Check before reading on: never trust a length from the wire.
        if len > MAX_FRAME_LEN {
            return Err(ClientError::Reply {
                path: self.path.clone(),
                source: CodecError::FrameTooLarge {
                    len,
                    max: MAX_FRAME_LEN,
                },
            });
        }
        self.fill_by(4 + len, deadline, budget)?;
        let decoded = decode_body::<Response>(&self.pending[4..4 + len]);
        // The frame is taken whatever it held; what follows it stays.
        self.pending.drain(..4 + len);
        if self.pending.capacity() > MAX_KEPT_BUFFER {
            // After a large reply (a page of `show`): not kept for the
            // connection's life.
            self.pending.shrink_to(READ_AHEAD);
        }
        let decoded = decoded.map_err(|source| ClientError::Reply {
            path: self.path.clone(),
            source,
        })?;
        match decoded {
            // A daemon of an older release (it answers in its own version,
            // which this client reads): say what to do, not only why.
            Response::Error {
                code: ErrorCode::UnsupportedVersion,
                message,
            } => Err(ClientError::Refused {
                code: ErrorCode::UnsupportedVersion,
                message: format!(
                    "{message}; that telemetryd is older than this client (protocol {}): stop it with \
                     `telemetryctl stop`, then run this release's `telemetryctl start` (the newer \
                     binary then keeps serving), or upgrade the CLI that installed the older one",
                    telemetry_proto::PROTOCOL_VERSION
                ),
            }),
            Response::Error { code, message } => Err(ClientError::Refused { code, message }),
            other => Ok(other),
        }
    }

    /// Read until [`Client::pending`] holds at least `want` bytes, all
    /// before `deadline`.
    fn fill_by(
        &mut self,
        want: usize,
        deadline: Instant,
        budget: Duration,
    ) -> Result<(), ClientError> {
        let mut filled = self.pending.len();
        if filled >= want {
            return Ok(());
        }
        // Room for the frame (the length was checked), or for a whole
        // small reply when only its length is wanted.
        self.pending.resize(want.max(filled + READ_AHEAD), 0);
        let result = loop {
            if filled >= want {
                break Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(ClientError::TimedOut {
                    path: self.path.clone(),
                    after: budget,
                });
            }
            if let Err(e) = self.stream.set_read_timeout(Some(left)) {
                break Err(self.io(e, budget));
            }
            match self.stream.read(&mut self.pending[filled..]) {
                Ok(0) => {
                    break Err(ClientError::Io {
                        path: self.path.clone(),
                        source: std::io::ErrorKind::UnexpectedEof.into(),
                    })
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(self.io(e, budget)),
            }
        };
        self.pending.truncate(filled);
        result
    }

    /// Send `req` and wait for its response, all within `timeout`. An
    /// error response becomes [`ClientError::Refused`].
    pub fn request(&mut self, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
        let timeout = timeout.min(MAX_TIMEOUT);
        let deadline = Instant::now() + timeout;
        self.send(req, timeout)?;
        while self.unread > 0 {
            // Replies come in request order: drop the no-ack ones first
            // (an error reply to one of them does not fail this request).
            match self.recv(deadline, timeout) {
                Ok(_) | Err(ClientError::Refused { .. }) => self.unread -= 1,
                Err(e) => return Err(e),
            }
        }
        self.recv(deadline, timeout)
    }

    /// Emit events and wait until the daemon has committed them.
    pub fn emit(
        &mut self,
        events: Vec<WireEvent>,
        timeout: Duration,
    ) -> Result<Acked, ClientError> {
        match self.request(&Request::Emit { events, ack: true }, timeout)? {
            Response::Ack {
                accepted,
                duplicates,
            } => Ok(Acked {
                accepted,
                duplicates,
            }),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Emit events without waiting for the commit: returns once the frame
    /// is written. The daemon's reply is not read.
    pub fn emit_no_ack(
        &mut self,
        events: Vec<WireEvent>,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        self.send(&Request::Emit { events, ack: false }, timeout)?;
        self.unread += 1;
        Ok(())
    }

    /// Ask for the daemon's status.
    pub fn status(&mut self, timeout: Duration) -> Result<StatusReport, ClientError> {
        match self.request(&Request::Status, timeout)? {
            Response::Status(s) => Ok(*s),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Tell the daemon the user's consent file changed for `product`.
    pub fn consent_changed(
        &mut self,
        product: &str,
        build: &str,
        timeout: Duration,
    ) -> Result<ConsentReport, ClientError> {
        let req = Request::ConsentChanged {
            product: product.to_string(),
            build: build.to_string(),
        };
        match self.request(&req, timeout)? {
            Response::ConsentApplied(r) => Ok(r),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Every stored event (of `product`, or all), oldest first, fetched a
    /// page at a time and returned as one page (the last page's other
    /// fields, all pages' events).
    pub fn show(
        &mut self,
        product: Option<&str>,
        timeout: Duration,
    ) -> Result<EventsPage, ClientError> {
        let mut events = Vec::new();
        let mut after_seq = 0;
        loop {
            let req = Request::Show {
                product: product.map(str::to_string),
                after_seq,
            };
            match self.request(&req, timeout)? {
                Response::Events(mut page) => {
                    events.append(&mut page.events);
                    match page.next_after_seq {
                        Some(next) => after_seq = next,
                        None => {
                            page.events = events;
                            return Ok(page);
                        }
                    }
                }
                other => return Err(ClientError::Unexpected(format!("{other:?}"))),
            }
        }
    }

    /// Delete stored events not yet uploaded; returns how many.
    pub fn purge(&mut self, product: Option<&str>, timeout: Duration) -> Result<u64, ClientError> {
        let req = Request::Purge {
            product: product.map(str::to_string),
        };
        match self.request(&req, timeout)? {
            Response::Purged { events } => Ok(events),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Seal and upload everything pending now; waits for the upload.
    pub fn flush(&mut self, timeout: Duration) -> Result<FlushReport, ClientError> {
        match self.request(&Request::Flush, timeout)? {
            Response::Flushed(r) => Ok(r),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Check every destination without writing (the daemon makes the
    /// requests, with its own configuration and credentials).
    pub fn probe(
        &mut self,
        timeout: Duration,
    ) -> Result<telemetry_proto::ProbeReport, ClientError> {
        match self.request(&Request::Probe, timeout)? {
            Response::Probed(r) => Ok(r),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Ask the daemon to shut down (as on SIGTERM: it finishes what is in
    /// flight and makes a last upload first); its process ID on success.
    /// Refused `Supervised` when a service manager runs it.
    pub fn stop(&mut self, timeout: Duration) -> Result<u32, ClientError> {
        match self.request(&Request::Stop, timeout)? {
            Response::Stopping { pid } => Ok(pid),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Forget `product`'s data on this machine and give it a new ID.
    pub fn forget(
        &mut self,
        product: &str,
        build: &str,
        timeout: Duration,
    ) -> Result<telemetry_proto::ForgetReport, ClientError> {
        let req = Request::Forget {
            product: product.to_string(),
            build: build.to_string(),
        };
        match self.request(&req, timeout)? {
            Response::Forgotten(r) => Ok(*r),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Every upload receipt (without `key`), or the receipt for `key` with
    /// its batch's lines while its body is kept, fetched a page at a time
    /// and returned as one page.
    pub fn receipts(
        &mut self,
        key: Option<&str>,
        timeout: Duration,
    ) -> Result<telemetry_proto::ReceiptsPage, ClientError> {
        let mut all = telemetry_proto::ReceiptsPage::default();
        let mut after = 0;
        loop {
            let req = Request::Receipts {
                key: key.map(str::to_string),
                after,
            };
            match self.request(&req, timeout)? {
                Response::Receipts(mut page) => {
                    if key.is_none() || all.receipts.is_empty() {
                        all.receipts.append(&mut page.receipts);
                    }
                    all.lines.append(&mut page.lines);
                    all.max_receipts = page.max_receipts;
                    match page.next_after {
                        Some(next) => after = next,
                        None => return Ok(all),
                    }
                }
                other => return Err(ClientError::Unexpected(format!("{other:?}"))),
            }
        }
    }
}

/// Whether the daemon refused for good: spooling the event would only get
/// it refused again (consent off, invalid, not catalogued, not allowed, or
/// a message this daemon cannot read). Every other failure (not running,
/// busy, shutting down, a storage error, no answer in time, a code this
/// client does not know) is worth spooling: if the daemon did store it
/// after all, the event id keeps it single.
pub fn refused_for_good(err: &ClientError) -> bool {
    matches!(
        err,
        ClientError::Refused {
            code: ErrorCode::ConsentOff
                | ErrorCode::Invalid
                | ErrorCode::NotInCatalogue
                | ErrorCode::PermissionDenied
                | ErrorCode::Malformed
                | ErrorCode::FrameTooLarge,
            ..
        }
    )
}

/// Where [`record_event_with`] finds the daemon and the consent files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// The consent files.
    pub consent: consent::ConsentPaths,
    /// The state dir, where the spool is.
    pub state_dir: PathBuf,
    /// Start a daemon when nothing serves the socket (see [`autostart`]).
    /// The daemon started uses this process's environment for its paths
    /// (`TELEMETRY_STATE_DIR` and the rest), not the fields above: turn it
    /// off for an endpoint that differs from the environment's.
    pub autostart: bool,
}

impl Endpoint {
    /// What this process's environment says, as the shim reads it
    /// (`TELEMETRY_SOCKET`, `TELEMETRY_STATE_DIR`, the consent variables;
    /// autostart unless `TELEMETRY_AUTOSTART` says no).
    pub fn from_env() -> Endpoint {
        Endpoint {
            socket: default_socket_path(),
            consent: consent::ConsentPaths::from_env(),
            state_dir: state_dir(),
            autostart: true,
        }
    }
}

/// Record one event the way a CLI should, with [`Endpoint::from_env`]: see
/// [`record_event_with`].
pub fn record_event(
    product: &str,
    name: &str,
    build: &str,
    data: BTreeMap<String, Value>,
    timeout: Duration,
) -> Result<Option<Acked>, ClientError> {
    record_event_with(&Endpoint::from_env(), product, name, build, data, timeout)
}

/// Record one event: check consent first (from the files and the
/// environment, without contacting the daemon; `off` returns `Ok(None)`
/// having connected to nothing, written nothing and started nothing),
/// then emit and wait for the acknowledgement.
///
/// `timeout` bounds the whole call: the connect never waits (a full
/// listen backlog fails at once), the exchange gets most of the budget and
/// the rest is kept for the spool. When the event is not acknowledged and
/// the daemon did not refuse it for good ([`refused_for_good`]), it is
/// spooled for the daemon to take in, a daemon is started if nothing
/// serves the socket (and `endpoint.autostart`), and the error is still
/// returned: the event is not acknowledged yet, but it is not lost, so do
/// not send it again. Never panics; ignore the result if telemetry must
/// not matter to the CLI.
pub fn record_event_with(
    endpoint: &Endpoint,
    product: &str,
    name: &str,
    build: &str,
    data: BTreeMap<String, Value>,
    timeout: Duration,
) -> Result<Option<Acked>, ClientError> {
    // The budget counts from the call, the consent files' reads included.
    let deadline = Instant::now() + timeout.min(MAX_TIMEOUT);
    if consent::resolve(product, &endpoint.consent).0 == Mode::Off {
        return Ok(None);
    }
    let ev = event(product, name, build, data);
    // Checked here first, so a mistake in the calling CLI is reported
    // precisely and never spooled.
    if let Err(e) = telemetry_proto::validate_event(&ev, &telemetry_proto::Limits::default()) {
        return Err(ClientError::Refused {
            code: ErrorCode::Invalid,
            message: e.to_string(),
        });
    }
    let socket_budget = deadline
        .saturating_duration_since(Instant::now())
        .mul_f64(0.6)
        .max(Duration::from_millis(1));
    let sent = Client::connect_briefly(&endpoint.socket, socket_budget / 4)
        .and_then(|mut c| c.emit(vec![ev.clone()], socket_budget));
    match sent {
        Ok(acked) => Ok(Some(acked)),
        Err(e) if refused_for_good(&e) => Err(e),
        Err(e) => {
            // Best effort, like the shim: the error is what the caller
            // needs to know. Not for a machine-wide daemon, which takes
            // in no user's spool: kept there, the event would never go.
            if spool_is_taken_in(&endpoint.socket) {
                let path = paths::spool_file_for(&endpoint.state_dir, &endpoint.socket);
                let _ = spool::append_by(&path, &ev, deadline);
            }
            // Not once the budget is spent: the host has waited enough.
            if endpoint.autostart && autostart::nothing_serves(&e) && Instant::now() < deadline {
                let _ = autostart::start(&endpoint.socket);
            }
            Err(e)
        }
    }
}

/// Parse a `KEY=VALUE` argument: `true`/`false` become booleans, whole
/// numbers integers, anything else a string. `KEY:=VALUE` forces a string.
pub fn parse_kv(arg: &str) -> Result<(String, Value), String> {
    if let Some((k, v)) = arg.split_once(":=") {
        if !k.contains('=') {
            return Ok((k.to_string(), Value::Str(v.to_string())));
        }
    }
    let (k, v) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {arg:?}"))?;
    let value = match v {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => match v.parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Str(v.to_string()),
        },
    };
    Ok((k.to_string(), value))
}

#[cfg(test)]
mod tests {

    #[test]
    fn no_spool_is_kept_for_a_machine_wide_daemon() {
        assert!(!spool_is_taken_in(Path::new(r"\\.\pipe\telemetryd")));
        assert!(!spool_is_taken_in(Path::new(r"\\.\PIPE\TELEMETRYD")));
        assert!(spool_is_taken_in(Path::new(r"\\.\pipe\telemetryd-alice")));
        assert_eq!(
            spool_is_taken_in(Path::new("/run/telemetry/telemetryd.sock")),
            !cfg!(target_os = "linux")
        );
        assert!(spool_is_taken_in(Path::new(
            "/run/user/1000/telemetry/telemetryd.sock"
        )));
    }

    /// Only the machine-wide socket's refusal points at its group: a
    /// directory another user made first is no group's to open. (Unix: the
    /// error is EACCES; Windows numbers its errors otherwise.)
    #[cfg(unix)]
    #[test]
    fn a_refused_socket_names_the_group_only_for_the_machine_wide_one() {
        let eacces = || std::io::Error::from_raw_os_error(libc::EACCES);
        let unreachable = |path: &str| {
            ClientError::Unreachable {
                path: PathBuf::from(path),
                source: eacces(),
            }
            .to_string()
        };
        let machine_wide = unreachable("/run/telemetry/telemetryd.sock");
        assert_eq!(
            machine_wide.contains("usermod -aG telemetry"),
            cfg!(target_os = "linux"),
            "{machine_wide}"
        );
        let other = unreachable("/tmp/telemetry-1000/telemetryd.sock");
        assert!(
            !other.contains("usermod") && other.contains("not open to this user"),
            "{other}"
        );
        assert!(!is_not_open_to_this_user(
            &std::io::Error::new(std::io::ErrorKind::PermissionDenied, "served by uid 7"),
            Path::new("/run/telemetry/telemetryd.sock")
        ));
    }

    #[test]
    fn waits_read_as_people_write_them() {
        assert_eq!(human_duration(Duration::from_micros(59_901)), "60 ms");
        assert_eq!(human_duration(Duration::from_millis(2_500)), "2.5 s");
        assert_eq!(human_duration(Duration::from_secs(120)), "120 s");
    }
    use super::*;

    #[test]
    fn kv_parsing() {
        assert_eq!(parse_kv("a=1").unwrap(), ("a".into(), Value::Int(1)));
        assert_eq!(parse_kv("a=true").unwrap(), ("a".into(), Value::Bool(true)));
        assert_eq!(
            parse_kv("a=x=y").unwrap(),
            ("a".into(), Value::Str("x=y".into()))
        );
        assert_eq!(
            parse_kv("a:=1").unwrap(),
            ("a".into(), Value::Str("1".into()))
        );
        assert!(parse_kv("novalue").is_err());
    }

    #[test]
    fn unreachable_names_the_path() {
        let err = Client::connect("/nonexistent/telemetry.sock")
            .err()
            .unwrap();
        assert!(matches!(err, ClientError::Unreachable { .. }));
        assert!(err.to_string().contains("/nonexistent/telemetry.sock"));
    }

    #[cfg(unix)]
    #[test]
    fn connect_now_fails_at_once_when_the_backlog_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        // A backlog of one fills after a connection or two, whatever the
        // open-file limit.
        let listener =
            socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        listener
            .bind(&socket2::SockAddr::unix(&path).unwrap())
            .unwrap();
        listener.listen(1).unwrap();
        let mut held = Vec::new();
        let err = loop {
            match Client::connect_now(&path) {
                Ok(c) => held.push(c),
                Err(e) => break e,
            }
            assert!(held.len() < 100, "the backlog never filled");
        };
        // A blocking connect would sleep here until the listener accepted
        // (never); this one reports the full backlog instead.
        let t = std::time::Instant::now();
        let again = Client::connect_now(&path).err().expect("still full");
        assert!(t.elapsed() < Duration::from_secs(1));
        for e in [err, again] {
            match e {
                // Linux says EAGAIN; other systems refuse the connection.
                ClientError::Unreachable { source, .. } => assert!(
                    matches!(
                        source.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::ConnectionRefused
                    ),
                    "{source}"
                ),
                other => panic!("unexpected {other}"),
            }
        }
        assert!(
            Client::connect_now("/nonexistent/telemetry.sock").is_err(),
            "nobody listening"
        );
    }

    /// A server that takes one connection, reads one request frame and
    /// answers with `reply`'s bytes.
    #[cfg(unix)]
    fn answer_once(
        listener: std::os::unix::net::UnixListener,
        reply: Vec<u8>,
    ) -> std::thread::JoinHandle<()> {
        use std::io::{Read, Write};
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut len = [0u8; 4];
            s.read_exact(&mut len).unwrap();
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            s.read_exact(&mut body).unwrap();
            s.write_all(&reply).unwrap();
        })
    }

    /// `Duration::MAX` means "no limit" to many callers: honoured as a
    /// long timeout, not a panic on a deadline past what an `Instant` holds.
    #[cfg(unix)]
    #[test]
    fn the_longest_timeout_is_a_long_wait_not_a_panic() {
        use std::os::unix::net::UnixListener;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let ack = encode_frame(&Response::Ack {
            accepted: 1,
            duplicates: 0,
        })
        .unwrap();
        let server = answer_once(UnixListener::bind(&path).unwrap(), ack);
        let mut c = Client::connect(&path).unwrap();
        let ev = event("cfdev", "start", "1.0.0", BTreeMap::new());
        let acked = c.emit(vec![ev], Duration::MAX).unwrap();
        assert_eq!(acked.accepted, 1);
        server.join().unwrap();
    }

    /// A reply of another protocol version names the socket and says what
    /// to do, and the connection is not used again.
    #[cfg(unix)]
    #[test]
    fn a_reply_of_another_version_names_the_socket_and_the_fix() {
        use std::os::unix::net::UnixListener;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        // Version 99 (one varint byte), then a body.
        let server = answer_once(UnixListener::bind(&path).unwrap(), vec![0, 0, 0, 2, 99, 0]);
        let mut c = Client::connect(&path).unwrap();
        let err = c.status(Duration::from_secs(10)).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ClientError::Reply { .. }), "{err:?}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("version 99"), "{text}");
        assert!(text.contains("telemetryd --version"), "{text}");
        assert!(matches!(
            c.status(Duration::from_secs(1)),
            Err(ClientError::Broken(_))
        ));
        server.join().unwrap();
    }

    /// Replies are read ahead (a whole small reply in one read), and what
    /// is read past a reply is the next one's: replies to no-ack emits and
    /// the acknowledgement in one read, a reply split across reads, a
    /// large one, an error reply between them.
    #[cfg(unix)]
    #[test]
    fn replies_read_ahead_stay_matched_to_requests() {
        use std::os::unix::net::UnixListener;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let big = "x".repeat(60_000);
        let replies = [
            Response::Queued { accepted: 1 },
            Response::Error {
                code: ErrorCode::Busy,
                message: "busy".into(),
            },
            Response::Ack {
                accepted: 1,
                duplicates: 0,
            },
            Response::Error {
                code: ErrorCode::Invalid,
                message: big.clone(),
            },
            Response::Ack {
                accepted: 2,
                duplicates: 1,
            },
        ]
        .map(|r| encode_frame(&r).unwrap());
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let request = |s: &mut std::os::unix::net::UnixStream| {
                let mut len = [0u8; 4];
                s.read_exact(&mut len).unwrap();
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                s.read_exact(&mut body).unwrap();
            };
            // Two no-ack emits, then an acked one: three replies at once.
            for _ in 0..3 {
                request(&mut s);
            }
            s.write_all(&replies[..3].concat()).unwrap();
            // The large reply split mid-length and mid-body, with the
            // start of the next reply (before its request: the client
            // must keep it for that request).
            request(&mut s);
            let (large, last) = (&replies[3], &replies[4]);
            let ahead = [&large[..], &last[..3]].concat();
            for part in [&ahead[..2], &ahead[2..30_000], &ahead[30_000..]] {
                s.write_all(part).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            request(&mut s);
            s.write_all(&last[3..]).unwrap();
        });
        let t = Duration::from_secs(10);
        let ev = || vec![event("p", "e", "1", BTreeMap::new())];
        let mut c = Client::connect(&path).unwrap();
        c.emit_no_ack(ev(), t).unwrap();
        c.emit_no_ack(ev(), t).unwrap();
        assert_eq!(
            c.emit(ev(), t).unwrap(),
            Acked {
                accepted: 1,
                duplicates: 0
            }
        );
        match c.emit(ev(), t) {
            Err(ClientError::Refused { code, message }) => {
                assert_eq!(code, ErrorCode::Invalid);
                assert_eq!(message, big);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.emit(ev(), t).unwrap(),
            Acked {
                accepted: 2,
                duplicates: 1
            }
        );
        assert!(c.pending.capacity() <= MAX_KEPT_BUFFER, "not kept");
        server.join().unwrap();
    }

    #[test]
    fn events_get_v7_ids() {
        let e = event("p", "e", "1", BTreeMap::new());
        assert_eq!(e.id.get_version_num(), 7);
        assert!(e.timestamp_us > 1_700_000_000_000_000);
    }
}
