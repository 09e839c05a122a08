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
    every: Duration,
    last_check: std::sync::Mutex<Option<Instant>>,
    busy: std::sync::atomic::AtomicBool,
}

impl SpoolState {
    /// The spool at `path` (`Config::spool_file`) and the unnamed one in
    /// `state_dir`, looked at no more often than `every` while clients
    /// connect (and always at start).
    pub fn new(path: &Path, state_dir: &Path, every: Duration) -> SpoolState {
        SpoolState {
            paths: [
                path.to_path_buf(),
                telemetry_proto::paths::spool_file(state_dir),
            ],
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

/// Append `frames` (whole frames) back to the spool at `path`, under the
/// shims' lock, for a newer daemon.
fn put_back(path: &Path, frames: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    f.lock()?;
    f.write_all(frames)
}

/// Move the spool at `path` aside (under the shims' lock) and return the
/// file to ingest, if there is anything.
fn take(path: &Path) -> std::io::Result<Option<PathBuf>> {
    let ingesting = path.with_extension("spool.ingesting");
    if ingesting.exists() {
        return Ok(Some(ingesting)); // left by an earlier run
    }
    let f = match std::fs::OpenOptions::new().append(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    f.lock()?;
    std::fs::rename(path, &ingesting)?;
    Ok(Some(ingesting))
}

/// Store what the spool holds. Returns the events stored.
pub async fn ingest(ctx: &Ctx) -> u64 {
    let state = &ctx.spool;
    if state.busy.swap(true, Ordering::SeqCst) {
        return 0;
    }
    let stored = ingest_inner(ctx).await;
    state.busy.store(false, Ordering::SeqCst);
    stored
}

async fn ingest_inner(ctx: &Ctx) -> u64 {
    let mut stored = 0;
    for path in &ctx.spool.paths {
        stored += ingest_file(ctx, path).await;
    }
    stored
}

/// A refused spooled event, counted once its spool is consumed.
struct Refused {
    product: String,
    event: String,
    code: ErrorCode,
    message: String,
}

async fn ingest_file(ctx: &Ctx, path: &Path) -> u64 {
    let file = match take(path) {
        Ok(Some(f)) => f,
        Ok(None) => return 0,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot take the spool");
            return 0;
        }
    };
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(path = %file.display(), error = %e, "cannot read the spool");
            return 0;
        }
    };
    let Parsed { events, bad, newer } = parse_keeping_newer(&bytes);
    if !newer.is_empty() {
        // First: should a failure below keep the ingesting file for a
        // retry, they are put back again, and event ids keep them single.
        if let Err(e) = put_back(path, &newer) {
            tracing::warn!(path = %path.display(), error = %e, "cannot put events of a newer protocol back into the spool; will retry");
            return 0;
        }
        tracing::info!(
            path = %path.display(),
            "left events of a newer protocol in the spool for a newer telemetryd"
        );
    }
    let mut stored = 0u64;
    // Counted and logged only once the file is consumed: a spool kept for
    // a retry would otherwise count its refusals again each time.
    let mut refused: Vec<Refused> = Vec::new();
    for chunk in events.chunks(CHUNK) {
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
                    return stored;
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
                    return stored;
                }
            }
        }
    }
    if let Err(e) = std::fs::remove_file(&file) {
        tracing::warn!(path = %file.display(), error = %e, "cannot remove the ingested spool");
    }
    let mut by_code: BTreeMap<ErrorCode, u64> = BTreeMap::new();
    for r in &refused {
        ctx.refusals.record(crate::refusals::Refusal {
            product: &r.product,
            event: &r.event,
            code: r.code,
            message: &r.message,
        });
        *by_code.entry(r.code).or_default() += 1;
    }
    if stored > 0 || !refused.is_empty() || bad > 0 {
        let total = refused.len();
        let reasons = by_code
            .iter()
            .map(|(code, n)| format!("{code}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        tracing::info!(
            stored,
            refused = total,
            damaged = bad,
            "ingested the spool{}",
            if reasons.is_empty() {
                String::new()
            } else {
                format!("; refused: {reasons}")
            }
        );
    }
    stored
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
}
