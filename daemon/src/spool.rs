//! Ingesting what shims spooled while the daemon was not reachable.
//!
//! The spool (`STATE_DIR/spool/events-<hash of this daemon's socket>.spool`,
//! then the unnamed `events.spool` older shims wrote; format in
//! `telemetry_proto::paths::spool_file`) is renamed to
//! `<name>.spool.ingesting` under the shims' lock, read, stored and then
//! deleted. A crash at any point leaves either the spool or the ingesting
//! file; the next run finishes it, and event ids keep anything stored twice
//! single. Events that are invalid, not catalogued or whose product is now
//! off are dropped (counted in `status` and the log once the file is
//! consumed): consent is applied as it is at
//! ingestion.
//!
//! Beside it, the portable spool directory
//! (`STATE_DIR/spool/events-<hash>.d`, one emit line per file; format in
//! `telemetry_proto::paths::spool_dir_for`), which the Go, Node and Python
//! clients write with their standard libraries: each file is read, its
//! events stored, and then it is removed.

use crate::counters::EventCounters;
use crate::server::Ctx;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use telemetry_proto::{decode_body, ErrorCode, WireEvent, MAX_FRAME_LEN};

/// Most events stored per insert while ingesting.
const CHUNK: usize = 500;

/// The spool's paths and a guard against two ingestions at once.
pub struct SpoolState {
    /// The spool named for this daemon's socket
    /// (`telemetry_proto::paths::spool_file_for`), then the unnamed
    /// `events.spool` older shims wrote.
    pub paths: [PathBuf; 2],
    /// The portable spool directory SDKs write (`paths::spool_dir_for`).
    pub dir: PathBuf,
    every: Duration,
    last_check: std::sync::Mutex<Option<Instant>>,
    busy: std::sync::atomic::AtomicBool,
}

impl SpoolState {
    /// The spool at `path` (`Config::spool_file`), the directory `dir`
    /// (`Config::spool_dir`) and the unnamed file in `state_dir`, looked at no more often than `every` while clients
    /// connect (and always at start).
    pub fn new(path: &Path, dir: &Path, state_dir: &Path, every: Duration) -> SpoolState {
        SpoolState {
            paths: [
                path.to_path_buf(),
                telemetry_proto::paths::spool_file(state_dir),
            ],
            dir: dir.to_path_buf(),
            every,
            last_check: std::sync::Mutex::new(None),
            busy: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether a check is due.
    pub fn due(&self) -> bool {
        let mut last = self.last_check.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < self.every) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

/// Parse a spool file's frames. A torn last frame ends the list (shims cut
/// a failed write back, so this is belt and braces).
pub fn parse(bytes: &[u8]) -> (Vec<WireEvent>, usize) {
    let parsed = parse_keeping_newer(bytes);
    (parsed.events, parsed.bad)
}

/// A spool file's frames, sorted.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// Events this daemon can read.
    pub events: Vec<WireEvent>,
    /// Frames that are damaged.
    pub bad: usize,
    /// Whole frames (length prefix included) of a protocol newer than this
    /// daemon's: a newer shim spooled them while this daemon served, and
    /// they go back to the spool for a newer daemon (never dropped).
    pub newer: Vec<u8>,
}

/// [`parse`], setting aside the frames of a newer protocol.
pub fn parse_keeping_newer(bytes: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    let mut rest = bytes;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > MAX_FRAME_LEN || rest.len() < 4 + len {
            out.bad += 1;
            break;
        }
        let body = &rest[4..4 + len];
        match decode_spooled(body) {
            Ok(ev) => out.events.push(ev),
            Err(telemetry_proto::CodecError::UnsupportedVersion { got })
                if got > telemetry_proto::PROTOCOL_VERSION =>
            {
                out.newer.extend_from_slice(&rest[..4 + len]);
            }
            Err(_) => out.bad += 1,
        }
        rest = &rest[4 + len..];
    }
    out
}

/// One spooled event. A spool frame is a `WireEvent`, whose bytes no
/// protocol version has changed (rule 2 of the protocol's evolution), so
/// frames older shims wrote under an earlier version are taken in too.
fn decode_spooled(body: &[u8]) -> Result<WireEvent, telemetry_proto::CodecError> {
    // Versions below 128 are one varint byte.
    if let Some(&v) = body.first() {
        if v >= 1 && u16::from(v) < telemetry_proto::PROTOCOL_VERSION {
            let mut current = body.to_vec();
            current[0] = telemetry_proto::PROTOCOL_VERSION as u8;
            return decode_body(&current);
        }
    }
    decode_body(body)
}

/// The most a spool file is read: shims stop appending at 1 MiB, so a
/// larger one was not written by them (a link to `/dev/zero`, a file
/// someone filled) and is set aside instead of filling the daemon.
pub(crate) const MAX_SPOOL_FILE: u64 = 8 << 20;

/// How long a purge or a forget waits for a spool intake already running.
/// Well inside `telemetryctl`'s own wait for the answer (30 s for purge).
pub const INTAKE_WAIT: Duration = Duration::from_secs(10);

/// How long the daemon waits for the shims' lock on a spool file: a shim
/// holds it for one append; a stopped one must not hold up intake.
const LOCK_WAIT: Duration = Duration::from_secs(2);

pub(crate) use telemetry_platform::fs::open_plain;

/// The bytes of the plain file at `path`, at most `cap` of them (more is
/// an error).
pub(crate) fn read_plain(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = open_plain(path, std::fs::OpenOptions::new().read(true))?;
    let mut bytes = Vec::new();
    f.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is larger than {cap} bytes", path.display()),
        ));
    }
    Ok(bytes)
}

/// Take `f`'s lock, waiting at most [`LOCK_WAIT`].
fn lock_within(f: &std::fs::File) -> std::io::Result<()> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "a process held the spool's lock for {LOCK_WAIT:?}; trying again later"
                    ),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// Move `path` (not a spool a shim wrote: a link, a FIFO, too large) out
/// of the way as `<name>.damaged-<unix ms>`, so that it neither holds up
/// every intake nor is read again.
fn set_aside(path: &Path, why: &std::io::Error) {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".damaged-{ms}"));
    match std::fs::rename(path, &aside) {
        Ok(()) => {
            tracing::warn!(path = %path.display(), error = %why, kept = %Path::new(&aside).display(), "the spool is not one shims wrote; set aside")
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %why, rename_error = %e, "the spool is not one shims wrote, and cannot be set aside")
        }
    }
}

/// Append `frames` (whole frames) back to the spool at `path`, under the
/// shims' lock, for a newer daemon. Something in the spool's place that no
/// shim wrote is set aside first, or the file kept for this retry would
/// come back at every pass and the spool never be taken in again.
fn put_back(path: &Path, frames: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let open = || {
        open_plain(
            path,
            telemetry_platform::fs::with_mode(
                std::fs::OpenOptions::new().append(true).create(true),
                0o600,
            ),
        )
    };
    let mut f = match open() {
        Err(e) if not_a_spool(&e) => {
            set_aside(path, &e);
            open()?
        }
        other => other?,
    };
    lock_within(&f)?;
    f.write_all(frames)
}

/// Move the spool at `path` aside (under the shims' lock) and return the
/// file to ingest, if there is anything. A file in the spool's place that
/// no shim wrote (a link, a FIFO) is set aside.
fn take(path: &Path) -> std::io::Result<Option<PathBuf>> {
    let ingesting = path.with_extension("spool.ingesting");
    if ingesting.symlink_metadata().is_ok() {
        return Ok(Some(ingesting)); // left by an earlier run
    }
    let f = match open_plain(path, std::fs::OpenOptions::new().append(true)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if not_a_spool(&e) => {
            set_aside(path, &e);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    lock_within(&f)?;
    std::fs::rename(path, &ingesting)?;
    Ok(Some(ingesting))
}

/// Whether opening or reading a spool failed because the file is not one
/// (a link, a FIFO or device, too large), not for a passing reason.
fn not_a_spool(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENXIO)) {
        return true;
    }
    e.kind() == std::io::ErrorKind::InvalidData
}

/// Clears the intake's busy flag when the intake ends, however it ends
/// (its task cancelled at shutdown, a panic): left set, every later intake
/// would be skipped and every purge would wait for one that never ends.
struct Busy<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Store what the spool holds. Returns the events stored (0 at once if
/// an intake is already running).
pub async fn ingest(ctx: &Ctx) -> u64 {
    let state = &ctx.spool;
    if state.busy.swap(true, Ordering::SeqCst) {
        return 0;
    }
    let _busy = Busy(&state.busy);
    ingest_inner(ctx).await
}

/// [`ingest`], after any intake already running has finished (for at most
/// `wait`): a purge or a forget must see everything spooled before it,
/// not return while another intake is still storing it.
pub async fn ingest_all(ctx: &Ctx, wait: Duration) -> u64 {
    let deadline = Instant::now() + wait;
    while ctx.spool.busy.swap(true, Ordering::SeqCst) {
        if Instant::now() >= deadline {
            tracing::warn!(
                "a spool intake still ran after {wait:?}; going on without waiting for it"
            );
            return 0;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _busy = Busy(&ctx.spool.busy);
    ingest_inner(ctx).await
}

async fn ingest_inner(ctx: &Ctx) -> u64 {
    let mut stored = 0;
    for path in &ctx.spool.paths {
        stored += ingest_file(ctx, path).await;
    }
    stored += ingest_dir(ctx, &ctx.spool.dir).await;
    // Events shims could not spool (it was full): counted for status.
    ctx.counters
        .take_drop_file(&telemetry_proto::paths::spool_drops_file(
            &ctx.spool.paths[0],
        ));
    EventCounters::add(&ctx.counters.taken_in, stored);
    stored
}

/// A refused spooled event, counted once its spool is consumed.
struct Refused {
    product: String,
    event: String,
    code: ErrorCode,
    message: String,
}

/// Why spooled events could not all be stored now.
struct Retry {
    /// Events stored before it stopped.
    stored: u64,
}

async fn ingest_file(ctx: &Ctx, path: &Path) -> u64 {
    // Off the runtime's threads: the shims' lock may be held a moment.
    let p = path.to_path_buf();
    let taken = tokio::task::spawn_blocking(move || {
        let file = take(&p)?;
        file.map(|f| match read_plain(&f, MAX_SPOOL_FILE) {
            Ok(bytes) => Ok((f, bytes)),
            Err(e) => {
                if not_a_spool(&e) {
                    set_aside(&f, &e);
                }
                Err(e)
            }
        })
        .transpose()
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    let (file, bytes) = match taken {
        Ok(Some(t)) => t,
        Ok(None) => return 0,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot take the spool");
            return 0;
        }
    };
    let Parsed { events, bad, newer } = parse_keeping_newer(&bytes);
    // Counted and logged only once the file is consumed: a spool kept for
    // a retry would otherwise count its refusals again each time.
    let mut refused: Vec<Refused> = Vec::new();
    let stored = match store_events(ctx, &events, &mut refused).await {
        Ok(n) => n,
        Err(Retry { stored }) => return stored,
    };
    if !newer.is_empty() {
        // Only once the rest is stored: put back at every retry of a
        // spool kept for one, they would pile up in the spool until the
        // shims found it full. If this fails the file is kept, and the
        // next pass stores its events again as duplicates.
        let p = path.to_path_buf();
        let put = tokio::task::spawn_blocking(move || put_back(&p, &newer))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        if let Err(e) = put {
            tracing::warn!(path = %path.display(), error = %e, "cannot put events of a newer protocol back into the spool; will retry");
            return stored;
        }
        tracing::info!(
            path = %path.display(),
            "left events of a newer protocol in the spool for a newer telemetryd"
        );
    }
    if let Err(e) = std::fs::remove_file(&file) {
        tracing::warn!(path = %file.display(), error = %e, "cannot remove the ingested spool");
    }
    EventCounters::add(&ctx.counters.spooled, events.len() as u64);
    report(ctx, "spool file", stored, &refused, bad);
    stored
}

/// Temporary files a writer of the spool directory left this long ago
/// died before renaming them: removed.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// Spool files read and stored at a time (each at most a line long).
const DIR_CHUNK: usize = 100;

/// Spool directory files taken in by one intake. Writers stop at 1,000
/// (`MaxSpoolFiles` in the SDKs), so more means something else fills the
/// directory: the oldest this many are taken in now and the rest by the
/// next intake, and the listing's memory stays bounded whatever is there.
const DIR_TAKE: usize = 10_000;

/// The oldest (by name) `*.json` files in the spool directory, at most
/// `max`, oldest first, and whether more were left for the next intake.
/// Stale temporary files are removed on the way, and so is any entry that
/// is not a plain file (a link, a directory, a FIFO: no client writes
/// those, and left there they would count against the writers' limit
/// forever; removing a link never follows it).
fn spooled_files(dir: &Path, max: usize) -> std::io::Result<(Vec<PathBuf>, bool)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
        Err(e) => return Err(e),
    };
    // A max-heap: past `max`, the newest name is dropped.
    let mut files = std::collections::BinaryHeap::new();
    let mut more = false;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if !meta.is_file() {
            tracing::warn!(path = %entry.path().display(), "removing an entry of the spool directory that is not a plain file");
            let _ = if meta.is_dir() {
                std::fs::remove_dir_all(entry.path())
            } else {
                std::fs::remove_file(entry.path())
            };
            continue;
        }
        if name.starts_with('.') {
            let stale = meta
                .modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TMP);
            if stale {
                let _ = std::fs::remove_file(entry.path());
            }
            continue;
        }
        if name.ends_with(".json") {
            files.push(entry.path());
            if files.len() > max {
                files.pop();
                more = true;
            }
        }
    }
    Ok((files.into_sorted_vec(), more))
}

/// What one spool directory file holds: the events of its `emit` line.
enum SpoolLine {
    Events(Vec<WireEvent>),
    /// Written by a newer client for a newer daemon: left in place.
    Newer,
    /// Could not be read now (out of descriptors, I/O error): left for
    /// the next pass.
    Unreadable(std::io::Error),
    /// Not an emit this daemon can read: removed, counted as damaged.
    Damaged(String),
}

/// Read one spool file: never through a link, never blocking on a FIFO
/// swapped in after the listing, at most a line's worth.
fn read_spool_line(path: &Path) -> SpoolLine {
    use std::io::Read;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        libc::O_NOFOLLOW | libc::O_NONBLOCK,
    );
    let file = match options.open(path) {
        Ok(f) => f,
        // A link swapped in after the listing (ELOOP): not ours to read.
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return SpoolLine::Damaged("a symbolic link".into())
        }
        Err(e) => return SpoolLine::Unreadable(e),
    };
    match file.metadata() {
        Ok(m) if m.is_file() => {}
        Ok(_) => return SpoolLine::Damaged("not a plain file".into()),
        Err(e) => return SpoolLine::Unreadable(e),
    }
    let mut bytes = Vec::new();
    if let Err(e) = file
        .take(telemetry_proto::MAX_LINE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
    {
        return SpoolLine::Unreadable(e);
    }
    decode_spool_line(&bytes)
}

/// The events of a spool file's line. A line an older client wrote under
/// an earlier protocol version is read as today's: an emit and its events
/// never change between versions (rule 2 of the protocol's evolution), as
/// for the spool file's frames.
fn decode_spool_line(bytes: &[u8]) -> SpoolLine {
    use telemetry_proto::{decode_line, CodecError, Request, PROTOCOL_VERSION};
    let decoded = match decode_line::<Request>(bytes) {
        Err(CodecError::UnsupportedVersion { got }) if (1..PROTOCOL_VERSION).contains(&got) => {
            match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes) {
                Ok(mut line) => {
                    line.insert("v".into(), PROTOCOL_VERSION.into());
                    let current = serde_json::to_vec(&line).unwrap_or_default();
                    decode_line::<Request>(&current)
                }
                Err(e) => return SpoolLine::Damaged(e.to_string()),
            }
        }
        other => other,
    };
    match decoded {
        Ok(Request::Emit { events, .. }) => SpoolLine::Events(events),
        Ok(other) => SpoolLine::Damaged(format!("not an emit: {other:?}")),
        Err(CodecError::UnsupportedVersion { got }) if got > PROTOCOL_VERSION => SpoolLine::Newer,
        Err(e) => SpoolLine::Damaged(e.to_string()),
    }
}

/// One chunk of the spool directory, read off the runtime's threads.
struct DirChunk {
    events: Vec<WireEvent>,
    /// Files to remove once their events are stored.
    consumed: Vec<PathBuf>,
    /// Refused for good before storing (too many events in one file).
    refused: Vec<Refused>,
    damaged: usize,
    newer: usize,
    /// A file could not be read now: stop after this chunk, retry later.
    retry: bool,
}

fn read_dir_chunk(paths: &[PathBuf], limits: &telemetry_proto::Limits) -> DirChunk {
    let mut chunk = DirChunk {
        events: Vec::new(),
        consumed: Vec::new(),
        refused: Vec::new(),
        damaged: 0,
        newer: 0,
        retry: false,
    };
    for path in paths {
        match read_spool_line(path) {
            SpoolLine::Events(events) => {
                // The limits of one request hold for one file, too.
                if let Err(e) = limits.check_batch_len(events.len()) {
                    let first = events.first();
                    chunk.refused.push(Refused {
                        product: first.map_or(String::new(), |e| e.product.clone()),
                        event: first.map_or(String::new(), |e| e.event.clone()),
                        code: ErrorCode::Invalid,
                        message: e.to_string(),
                    });
                } else {
                    chunk.events.extend(events);
                }
                chunk.consumed.push(path.clone());
            }
            SpoolLine::Newer => chunk.newer += 1,
            SpoolLine::Unreadable(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read a spool file now; will retry");
                chunk.retry = true;
                break;
            }
            SpoolLine::Damaged(why) => {
                tracing::warn!(path = %path.display(), %why, "removing a damaged spool file");
                chunk.damaged += 1;
                chunk.consumed.push(path.clone());
            }
        }
    }
    chunk
}

/// Take in the portable spool directory (`paths::spool_dir_for`): read
/// each file's emit line, store its events, then remove the file. A crash
/// in between leaves the file, and event ids keep its events single when
/// it is read again. Refusals are counted once their file is removed.
async fn ingest_dir(ctx: &Ctx, dir: &Path) -> u64 {
    let listing = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || spooled_files(&dir, DIR_TAKE)).await
    };
    let files = match listing {
        Ok(Ok((f, more))) => {
            if more {
                tracing::warn!(
                    path = %dir.display(),
                    taken = f.len(),
                    "the spool directory holds more files than one intake takes (clients stop at 1,000); the oldest are taken in now, the rest later"
                );
            }
            f
        }
        Ok(Err(e)) => {
            tracing::warn!(path = %dir.display(), error = %e, "cannot list the spool directory");
            return 0;
        }
        Err(_) => return 0,
    };
    let mut stored = 0;
    let mut refused: Vec<Refused> = Vec::new();
    let mut damaged = 0;
    let mut newer = 0;
    for paths in files.chunks(DIR_CHUNK) {
        let paths = paths.to_vec();
        let limits = ctx.limits;
        let Ok(mut chunk) =
            tokio::task::spawn_blocking(move || read_dir_chunk(&paths, &limits)).await
        else {
            break;
        };
        newer += chunk.newer;
        match store_events(ctx, &chunk.events, &mut chunk.refused).await {
            Ok(n) => stored += n,
            Err(Retry { stored: n }) => {
                stored += n;
                break;
            }
        }
        EventCounters::add(&ctx.counters.spooled, chunk.events.len() as u64);
        for path in &chunk.consumed {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove an ingested spool file");
            }
        }
        refused.append(&mut chunk.refused);
        damaged += chunk.damaged;
        if chunk.retry {
            break;
        }
    }
    if newer > 0 {
        tracing::info!(
            path = %dir.display(),
            files = newer,
            "left spool files of a newer protocol for a newer telemetryd"
        );
    }
    report(ctx, "spool directory", stored, &refused, damaged);
    stored
}

/// Validate and store spooled `events`, noting those refused for good.
/// `Err` when the store cannot take them now: keep their source for a
/// retry (ids keep what was stored meanwhile single).
async fn store_events(
    ctx: &Ctx,
    events: &[WireEvent],
    refused: &mut Vec<Refused>,
) -> Result<u64, Retry> {
    let mut stored = 0u64;
    for chunk in events.chunks(CHUNK) {
        // Until the chunk is committed (see `Ctx::id_lock`).
        let _ids = ctx.id_lock.read().await;
        // Validate one by one, so one bad event does not sink its chunk.
        let mut records = Vec::with_capacity(chunk.len());
        for ev in chunk {
            match crate::cmd::emit::prepare(ctx, std::slice::from_ref(ev)).await {
                Ok(mut r) => records.append(&mut r),
                Err(telemetry_proto::Response::Error {
                    code: telemetry_proto::ErrorCode::Storage,
                    message,
                }) => {
                    // Not the event's fault: keep the file, retry later.
                    tracing::warn!(%message, "cannot take in the spool now; will retry");
                    return Err(Retry { stored });
                }
                Err(telemetry_proto::Response::Error { code, message }) => refused.push(Refused {
                    product: ev.product.clone(),
                    event: ev.event.clone(),
                    code,
                    message,
                }),
                Err(other) => refused.push(Refused {
                    product: ev.product.clone(),
                    event: ev.event.clone(),
                    code: ErrorCode::Internal,
                    message: format!("unexpected answer {other:?}"),
                }),
            }
        }
        if records.is_empty() {
            continue;
        }
        let mut batches = vec![records];
        while let Some(records) = batches.pop() {
            match ctx.store.insert(records.clone()).await {
                Ok(out) => {
                    stored += out.accepted as u64;
                    if out.wake_uploader {
                        ctx.uploader.nudge();
                    }
                }
                // One product's consent changed meanwhile: store the others.
                Err(crate::store::StoreError::ConsentChanged { .. }) if records.len() > 1 => {
                    batches.extend(records.into_iter().map(|r| vec![r]));
                }
                Err(e @ crate::store::StoreError::ConsentChanged { .. }) => {
                    refused.push(Refused {
                        product: records[0].product.clone(),
                        event: String::new(),
                        code: ErrorCode::ConsentOff,
                        message: e.to_string(),
                    });
                }
                Err(e) => {
                    // Keep the file: the next run retries, ids dedup.
                    tracing::warn!(error = %e, "cannot store spooled events; will retry");
                    return Err(Retry { stored });
                }
            }
        }
    }
    Ok(stored)
}

/// Count the refusals of a consumed spool and log what it held.
fn report(ctx: &Ctx, what: &str, stored: u64, refused: &[Refused], bad: usize) {
    let mut by_code: BTreeMap<ErrorCode, u64> = BTreeMap::new();
    // Counted as requests refused `malformed` (each a frame of the spool
    // file or a file of the spool directory, as a request would have been),
    // so that `status` and `doctor` show what was lost, not only the log.
    let damaged = format!(
        "a damaged {what} entry could not be read and was dropped with its events (the daemon's log says why)"
    );
    for _ in 0..bad {
        ctx.refusals.record(crate::refusals::Refusal::unread(
            ErrorCode::Malformed,
            &damaged,
        ));
    }
    // Not in `refused`, which with `received` counts emit requests: the
    // spool's own line says how many of its events were not new (the
    // per-product refusal counts below include them).
    for r in refused {
        ctx.refusals.record(crate::refusals::Refusal {
            product: &r.product,
            event: &r.event,
            code: r.code,
            message: &r.message,
        });
        *by_code.entry(r.code).or_default() += 1;
    }
    if stored > 0 || !refused.is_empty() || bad > 0 {
        let reasons = by_code
            .iter()
            .map(|(code, n)| format!("{code}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        tracing::info!(
            stored,
            refused = refused.len(),
            damaged = bad,
            "ingested the {what}{}",
            if reasons.is_empty() {
                String::new()
            } else {
                format!("; refused: {reasons}")
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_frames_and_stops_at_a_torn_one() {
        let ev = WireEvent {
            id: uuid::Uuid::nil(),
            event: "stop".into(),
            product: "cfdev".into(),
            build: "1".into(),
            timestamp_us: 1_800_000_000_000_000,
            data: Default::default(),
        };
        let frame = telemetry_proto::encode_frame(&ev).unwrap();
        let mut bytes = [frame.clone(), frame.clone()].concat();
        bytes.extend_from_slice(&frame[..frame.len() - 3]);
        let (events, bad) = parse(&bytes);
        assert_eq!((events.len(), bad), (2, 1));
        assert_eq!(events[0], ev);
    }

    #[test]
    fn frames_an_older_shim_wrote_under_protocol_1_are_taken_in() {
        let ev = WireEvent {
            id: uuid::Uuid::from_u128(7),
            event: "stop".into(),
            product: "cfdev".into(),
            build: "1".into(),
            timestamp_us: 1_800_000_000_000_000,
            data: Default::default(),
        };
        let mut frame = telemetry_proto::encode_frame(&ev).unwrap();
        assert_eq!(frame[4], 2);
        frame[4] = 1;
        assert_eq!(parse(&frame), (vec![ev], 0));
        frame[4] = 0;
        assert_eq!(parse(&frame).1, 1, "version 0 is damaged");
        frame[4] = 9;
        let parsed = parse_keeping_newer(&frame);
        assert_eq!((parsed.events.len(), parsed.bad), (0, 0));
        assert_eq!(parsed.newer, frame, "a newer version is kept whole");
    }

    #[test]
    fn spool_lines_of_older_versions_are_read_and_newer_ones_left() {
        let ev = WireEvent {
            id: uuid::Uuid::from_u128(9),
            event: "stop".into(),
            product: "cfdev".into(),
            build: "1".into(),
            timestamp_us: 1_800_000_000_000_000,
            data: Default::default(),
        };
        let line = String::from_utf8(
            telemetry_proto::encode_line(&telemetry_proto::Request::Emit {
                events: vec![ev.clone()],
                ack: false,
            })
            .unwrap(),
        )
        .unwrap();
        assert!(
            matches!(decode_spool_line(line.as_bytes()), SpoolLine::Events(e) if e == vec![ev.clone()])
        );
        let older = line.replacen("\"v\":2", "\"v\":1", 1);
        assert!(
            matches!(decode_spool_line(older.as_bytes()), SpoolLine::Events(e) if e == vec![ev])
        );
        let newer = line.replacen("\"v\":2", "\"v\":3", 1);
        assert!(matches!(
            decode_spool_line(newer.as_bytes()),
            SpoolLine::Newer
        ));
        assert!(matches!(
            decode_spool_line(b"{\"v\":2,\"status\":{}}"),
            SpoolLine::Damaged(_)
        ));
        assert!(matches!(
            decode_spool_line(b"{\"v\":2,\"emit\":"),
            SpoolLine::Damaged(_)
        ));
    }

    #[cfg(unix)]
    #[test]
    fn entries_that_are_not_plain_files_are_removed_and_links_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.json");
        std::fs::write(&outside, "secret").unwrap();
        let spool = dir.path().join("spool.d");
        std::fs::create_dir(&spool).unwrap();
        std::os::unix::fs::symlink(&outside, spool.join("a.json")).unwrap();
        std::fs::create_dir(spool.join("b.json")).unwrap();
        std::fs::write(spool.join("c.json"), "x").unwrap();
        std::fs::write(spool.join(".d.tmp"), "partial").unwrap();
        let files = spooled_files(&spool, DIR_TAKE).unwrap();
        assert_eq!(files, (vec![spool.join("c.json")], false));
        assert!(!spool.join("a.json").exists() && !spool.join("b.json").exists());
        assert!(outside.exists(), "the link's target is untouched");
        assert!(
            spool.join(".d.tmp").exists(),
            "a fresh temporary file is a writer's"
        );
    }

    /// One intake lists at most its share of the directory, the oldest
    /// names, and says more are left.
    #[test]
    fn one_intake_takes_the_oldest_files_up_to_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        for n in [5, 1, 4, 2, 3] {
            std::fs::write(dir.path().join(format!("{n}.json")), "x").unwrap();
        }
        let (files, more) = spooled_files(dir.path(), 3).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["1.json", "2.json", "3.json"]);
        assert!(more);
        let (files, more) = spooled_files(dir.path(), 5).unwrap();
        assert_eq!((files.len(), more), (5, false));
    }

    /// Frames put back for a newer daemon go into a plain file even when
    /// something else stands in the spool's place (a FIFO, a link): that
    /// is set aside first, untouched, instead of failing the put-back at
    /// every pass.
    #[cfg(unix)]
    #[test]
    fn put_back_sets_aside_what_is_not_a_spool_and_writes_a_plain_one() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "theirs").unwrap();
        let fifo = dir.path().join("fifo.spool");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let link = dir.path().join("link.spool");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        for path in [&fifo, &link] {
            put_back(path, b"frames").unwrap();
            let meta = std::fs::symlink_metadata(path).unwrap();
            assert!(meta.is_file(), "{}", path.display());
            assert_eq!(std::fs::read(path).unwrap(), b"frames");
            let name = path.file_name().unwrap().to_str().unwrap();
            let aside = std::fs::read_dir(dir.path())
                .unwrap()
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with(&format!("{name}.damaged-")))
                })
                .count();
            assert_eq!(aside, 1, "{name} set aside");
        }
        assert_eq!(
            std::fs::read(&outside).unwrap(),
            b"theirs",
            "not written through"
        );
    }
}
