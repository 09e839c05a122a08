//! Streaming: many acknowledged emits in flight on one connection.
//!
//! [`Client::emit`](crate::Client::emit) waits for each commit before the
//! next request, so a tool that replays a day of events, or forwards
//! many, pays a round trip (and often an fsync) per request. A [`Stream`]
//! packs the events it is given into requests (up to
//! [`StreamOptions::events_per_request`], and always under
//! [`MAX_FRAME_LEN`]), keeps up to [`StreamOptions::window`] requests in
//! flight and reads their acknowledgements as they come. Nothing is
//! weakened: each request is acknowledged only after the daemon has
//! committed it, and the daemon commits whatever has arrived, from every
//! connection, in one transaction.
//!
//! ```no_run
//! use telemetry_client::stream::{Stream, StreamOptions};
//! # fn events() -> Vec<telemetry_client::WireEvent> { Vec::new() }
//! let client = telemetry_client::Client::connect(telemetry_client::default_socket_path())?;
//! let mut stream = Stream::new(client, StreamOptions::default());
//! for event in events() {
//!     stream.push(event)?;
//! }
//! let report = stream.finish()?;
//! println!("{} stored, {} refused", report.accepted, report.refused_events());
//! # Ok::<(), telemetry_client::ClientError>(())
//! ```
//!
//! A refused request (an event not in the catalogue, consent off) does not
//! end the stream: it is listed in the [`StreamReport`] with the position
//! of its first event, and none of its events were stored. A timeout or an
//! I/O error does: events whose request was not acknowledged may or may
//! not have been stored (send them again; the daemon keeps each event ID
//! once).

use crate::{Client, ClientError, ErrorCode, Request, Response, WireEvent, MAX_FRAME_LEN};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use telemetry_proto::{encoded_len, CodecError, EMIT_OVERHEAD};

/// Requests in flight at most: the daemon reads no further ahead than this
/// on one connection (`telemetryd::connection::MAX_IN_FLIGHT`).
pub const MAX_WINDOW: usize = 256;

/// Events in one request at most (the daemon's limit).
pub const MAX_EVENTS_PER_REQUEST: usize = 1000;

/// How a [`Stream`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// Requests sent and not yet acknowledged, at most (1 to
    /// [`MAX_WINDOW`]; 1 is a client that waits for every answer).
    pub window: usize,
    /// Events packed into one request, at most (1 to
    /// [`MAX_EVENTS_PER_REQUEST`]); fewer when the frame would exceed
    /// [`MAX_FRAME_LEN`].
    pub events_per_request: usize,
    /// Bound on each write, and on each wait for an acknowledgement.
    pub timeout: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            window: 16,
            events_per_request: MAX_EVENTS_PER_REQUEST,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A request the daemon refused: none of its events were stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedRequest {
    /// Position of its first event among the events [`Stream::push`]
    /// took (from 0; an event it refused as too large has no position).
    pub first: u64,
    /// Its events.
    pub events: usize,
    /// The daemon's error code.
    pub code: ErrorCode,
    /// The daemon's message.
    pub message: String,
}

/// What happened to the events of a stream, so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamReport {
    /// Requests acknowledged or refused.
    pub requests: u64,
    /// Events newly committed.
    pub accepted: u64,
    /// Events the daemon already had (kept once).
    pub duplicates: u64,
    /// Requests refused, in order.
    pub refused: Vec<RefusedRequest>,
}

impl StreamReport {
    /// Events in refused requests.
    pub fn refused_events(&self) -> u64 {
        self.refused.iter().map(|r| r.events as u64).sum()
    }
}

/// Acknowledged emits over one connection, many in flight.
pub struct Stream {
    client: Client,
    opts: StreamOptions,
    /// Events not yet sent, and their encoded length.
    buffer: Vec<WireEvent>,
    buffered_len: usize,
    /// Events pushed before the buffer's first.
    sent: u64,
    /// Requests in flight: their first event's position and event count.
    in_flight: VecDeque<(u64, usize)>,
    report: StreamReport,
}

impl Stream {
    /// Stream over `client`, with `opts` clamped to the protocol's limits.
    pub fn new(client: Client, opts: StreamOptions) -> Stream {
        let opts = StreamOptions {
            window: opts.window.clamp(1, MAX_WINDOW),
            events_per_request: opts.events_per_request.clamp(1, MAX_EVENTS_PER_REQUEST),
            timeout: opts
                .timeout
                .clamp(Duration::from_millis(1), crate::MAX_TIMEOUT),
        };
        Stream {
            client,
            opts,
            buffer: Vec::new(),
            buffered_len: 0,
            sent: 0,
            in_flight: VecDeque::new(),
            report: StreamReport::default(),
        }
    }

    /// Add one event. It is sent once a request's worth is buffered (or
    /// the next would not fit in a frame); this waits for an
    /// acknowledgement only when the window is full.
    ///
    /// An event too large for any frame is refused here
    /// ([`ClientError::Protocol`]) and the stream goes on.
    pub fn push(&mut self, event: WireEvent) -> Result<(), ClientError> {
        let len = encoded_len(&event)?;
        if len + EMIT_OVERHEAD > MAX_FRAME_LEN {
            return Err(CodecError::FrameTooLarge {
                len: len + EMIT_OVERHEAD,
                max: MAX_FRAME_LEN,
            }
            .into());
        }
        if self.buffered_len + len + EMIT_OVERHEAD > MAX_FRAME_LEN {
            self.send_buffered()?;
        }
        self.buffer.push(event);
        self.buffered_len += len;
        if self.buffer.len() >= self.opts.events_per_request {
            self.send_buffered()?;
        }
        Ok(())
    }

    /// Send what is buffered as one request, waiting for an
    /// acknowledgement first when the window is full.
    pub fn send_buffered(&mut self) -> Result<(), ClientError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        // Replies to no-ack emits made on this client before come first.
        while self.client.unread > 0 {
            let deadline = Instant::now() + self.opts.timeout;
            match self.client.recv(deadline, self.opts.timeout) {
                Ok(_) | Err(ClientError::Refused { .. }) => self.client.unread -= 1,
                Err(e) => return Err(e),
            }
        }
        while self.in_flight.len() >= self.opts.window {
            self.read_one()?;
        }
        let events = std::mem::take(&mut self.buffer);
        let n = events.len();
        self.buffered_len = 0;
        self.client
            .send(&Request::Emit { events, ack: true }, self.opts.timeout)?;
        self.in_flight.push_back((self.sent, n));
        self.sent += n as u64;
        Ok(())
    }

    /// Read the oldest request's answer into the report.
    fn read_one(&mut self) -> Result<(), ClientError> {
        let Some(&(first, events)) = self.in_flight.front() else {
            return Ok(());
        };
        let deadline = Instant::now() + self.opts.timeout;
        let answer = self.client.recv(deadline, self.opts.timeout);
        // Its fate is known now, unless the read failed: then it stays
        // counted in flight (stored or not, nobody can say).
        if matches!(answer, Ok(_) | Err(ClientError::Refused { .. })) {
            self.in_flight.pop_front();
        }
        match answer {
            Ok(Response::Ack {
                accepted,
                duplicates,
            }) => {
                self.report.accepted += u64::from(accepted);
                self.report.duplicates += u64::from(duplicates);
            }
            Err(ClientError::Refused { code, message }) => {
                self.report.refused.push(RefusedRequest {
                    first,
                    events,
                    code,
                    message,
                })
            }
            Ok(other) => {
                self.client.broken = true;
                return Err(ClientError::Unexpected(format!("{other:?}")));
            }
            Err(e) => return Err(e),
        }
        self.report.requests += 1;
        Ok(())
    }

    /// Send what is buffered and wait until every request is answered:
    /// then every event pushed so far is committed or listed as refused.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.send_buffered()?;
        while !self.in_flight.is_empty() {
            self.read_one()?;
        }
        Ok(())
    }

    /// [`Stream::flush`], then the report.
    pub fn finish(mut self) -> Result<StreamReport, ClientError> {
        self.flush()?;
        Ok(self.report)
    }

    /// What is known so far (requests still in flight are not in it).
    pub fn report(&self) -> &StreamReport {
        &self.report
    }

    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Events pushed and not yet sent.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}
