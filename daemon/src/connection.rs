//! Serving one connection: read requests, keep a window of acknowledged
//! emits waiting for their commit, answer every request in order.
//!
//! # Pipelining
//! A client may write requests without waiting for the answers (the rule
//! is in `telemetry_proto`, "Conversation"). Each emit is validated and
//! queued to the store as it arrives, in order, so all the emits queued
//! when the store thread next commits go into that one transaction, from
//! this connection and every other; each is answered after the commit that
//! stored it, in request order. Up to [`MAX_IN_FLIGHT`] requests or
//! [`MAX_IN_FLIGHT_EVENTS`] events wait for their commit at once; past
//! that the task reads nothing more and the socket's buffer pushes back on
//! the client. Any other request waits until every answer before it is
//! written, so it sees what they stored.
//!
//! A client that waits for each answer before sending again is the same
//! conversation with a window of one.
//!
//! # Answers the store thread writes
//! An acknowledged emit with nothing before it left for this task to
//! answer is answered by the store thread itself, right after its commit
//! (see [`emit::Direct`]), and this task is not woken for it: it notices
//! when it next looks, which the client's next request or hang-up makes
//! it do. A client that waits for each answer thus costs one wakeup of
//! this task per request, not two. The task is called back only when it
//! has work left: a refusal to count, or a frame the socket would not
//! take whole.

use crate::cmd::{self, emit, Answer, Peer};
use crate::refusals::Refusal;
use crate::server::{ActiveGuard, Ctx};
use crate::transport::{self, Conn};
use futures::stream::FuturesOrdered;
use futures::{FutureExt, SinkExt, StreamExt};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use telemetry_proto::{CodecError, Decoded, Encoding, ErrorCode, Request, Response, WireCodec};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::Framed;

/// A reply the peer does not read within this time closes the connection.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests of one connection waiting for their commit at most.
pub const MAX_IN_FLIGHT: usize = 256;

/// Events of one connection waiting for their commit at most (checked
/// before reading the next request, which may add up to a request's limit
/// of 1,000): bounds what one client can hold in the daemon's memory.
pub const MAX_IN_FLIGHT_EVENTS: usize = 16_384;

type Wire = Framed<Conn, WireCodec<Request, Response>>;

/// Answers still to come, in request order, with each request's events.
///
/// Emits answered from the store thread (see [`emit::Direct`]) wait apart,
/// in `direct`: the task is not woken when their answers are written, it
/// only looks whether they were ([`Window::reap_direct`]). While any wait
/// there, `answers` is empty: a request answered by the task moves them
/// into `answers` first, so its answer cannot overtake theirs.
struct Window<'a> {
    answers: FuturesOrdered<emit::Pending<'a>>,
    events: VecDeque<usize>,
    total_events: usize,
    direct: VecDeque<(emit::Pending<'a>, usize)>,
}

impl<'a> Window<'a> {
    fn new() -> Self {
        Window {
            answers: FuturesOrdered::new(),
            events: VecDeque::new(),
            total_events: 0,
            direct: VecDeque::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.answers.is_empty() && self.direct.is_empty()
    }

    fn has_room(&self) -> bool {
        self.answers.len() + self.direct.len() < MAX_IN_FLIGHT
            && self.total_events < MAX_IN_FLIGHT_EVENTS
    }

    fn push(&mut self, answer: emit::Pending<'a>, events: usize) {
        self.demote_direct();
        self.answers.push_back(answer);
        self.events.push_back(events);
        self.total_events += events;
    }

    fn push_now(&mut self, answer: Answer) {
        self.push(Box::pin(std::future::ready(answer)), 0);
    }

    /// Wait apart for `answer`, which the store thread writes.
    fn push_direct(&mut self, answer: emit::Pending<'a>, events: usize) {
        debug_assert!(self.answers.is_empty());
        self.direct.push_back((answer, events));
        self.total_events += events;
    }

    /// Queue the direct answers with the rest, in order: a later answer
    /// must not overtake what the store thread may have left to write.
    fn demote_direct(&mut self) {
        for (answer, events) in self.direct.drain(..) {
            self.answers.push_back(answer);
            self.events.push_back(events);
        }
    }

    /// The direct answers that have come, in order, without waiting (and
    /// without asking to be woken for them).
    fn reap_direct(&mut self) -> Vec<Answer> {
        let mut ready = Vec::new();
        while let Some((pending, events)) = self.direct.front_mut() {
            let Some(answer) = pending.as_mut().now_or_never() else {
                break;
            };
            self.total_events -= *events;
            self.direct.pop_front();
            ready.push(answer);
        }
        ready
    }

    /// Whether [`Window::next_answers`] has anything to wait for; direct
    /// answers count only when `direct` (the task would not learn of them
    /// otherwise).
    fn waits(&self, direct: bool) -> bool {
        !self.answers.is_empty() || (direct && !self.direct.is_empty())
    }

    /// The next answers in order: as [`Window::next_ready`], or the next
    /// direct answer when `direct`.
    async fn next_answers(&mut self, direct: bool) -> Vec<Answer> {
        if !self.answers.is_empty() || !direct {
            return self.next_ready().await;
        }
        let Some((pending, _)) = self.direct.front_mut() else {
            return Vec::new();
        };
        let answer = pending.as_mut().await;
        if let Some((_, events)) = self.direct.pop_front() {
            self.total_events -= events;
        }
        vec![answer]
    }

    fn took(&mut self) {
        self.total_events -= self.events.pop_front().unwrap_or(0);
    }

    /// The next answer and every one after it that is ready too.
    async fn next_ready(&mut self) -> Vec<Answer> {
        let Some(first) = self.answers.next().await else {
            return Vec::new();
        };
        self.took();
        let mut ready = vec![first];
        while let Some(Some(answer)) = self.answers.next().now_or_never() {
            self.took();
            ready.push(answer);
        }
        ready
    }

    /// Write every answer still to come; false when the peer is gone.
    async fn drain(&mut self, framed: &mut Wire) -> bool {
        self.demote_direct();
        while !self.is_empty() {
            let answers = self.next_ready().await;
            if !send_answers(framed, answers).await {
                return false;
            }
        }
        true
    }
}

fn codec_error_response(e: &CodecError, then: &str) -> Response {
    let code = match e {
        CodecError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
        CodecError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
        CodecError::Malformed(_) | CodecError::Io(_) => ErrorCode::Malformed,
    };
    Response::Error {
        code,
        message: format!("{e}; {then}"),
    }
}

/// Write `answers` in order with one flush; false when the peer did not
/// take them in time or is gone. A peer that stops reading must not pin
/// the task.
async fn send_answers(framed: &mut Wire, answers: Vec<Answer>) -> bool {
    use tokio::io::AsyncWriteExt;
    let send = async {
        for answer in answers {
            match answer {
                Answer::Send(resp) => framed.feed(resp).await?,
                Answer::Written { rest } if rest.is_empty() => {}
                // Written by the store thread all but `rest`; whatever is
                // buffered before it goes first.
                Answer::Written { rest } => {
                    framed.flush().await?;
                    framed.get_mut().write_all(&rest).await?;
                }
            }
        }
        framed.flush().await
    };
    matches!(tokio::time::timeout(SEND_TIMEOUT, send).await, Ok(Ok(())))
}

/// The next request, within `timeout` when one is given.
async fn read_next(
    framed: &mut Wire,
    timeout: Option<Duration>,
) -> Result<Option<Result<Decoded<Request>, CodecError>>, tokio::time::error::Elapsed> {
    match timeout {
        Some(t) => tokio::time::timeout(t, framed.next()).await,
        None => Ok(framed.next().await),
    }
}

/// Serve one connection until it closes, idles out, sends a bad frame or
/// the daemon stops; answers still to come are written first.
pub async fn serve(
    ctx: Arc<Ctx>,
    stream: Conn,
    mut stop: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
    _active: ActiveGuard,
) {
    static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
    let ctx: &Ctx = &ctx;
    let mut peer = Peer {
        identity: transport::peer_identity(&stream),
        connection: CONNECTIONS.fetch_add(1, Ordering::Relaxed),
        earlier_requests: 0,
        encoding: Encoding::Binary,
        version: telemetry_proto::PROTOCOL_VERSION,
        read_ahead: false,
    };
    tracing::debug!(peer = %peer.identity.describe(), "connection");
    let mut framed = Framed::new(stream, WireCodec::<Request, Response>::new());
    // Made at the first acknowledged emit (most connections never send
    // one: status, idle, refused), then kept.
    let mut direct: Option<emit::Direct> = None;
    let mut window = Window::new();
    let mut reading = true;
    // Wait for the direct answer still to come, woken by it: the store
    // thread called (the call comes just before the answer is handed
    // over), or the read timed out and the client must not be timed out
    // before its answer is in.
    let mut await_direct = false;
    loop {
        let reaped = window.reap_direct();
        if !reaped.is_empty() {
            await_direct &= !window.direct.is_empty();
            if !send_answers(&mut framed, reaped).await {
                break;
            }
        }
        if window.is_empty() {
            if let Some(d) = &direct {
                // No commit of this connection's is outstanding.
                d.settled();
            }
        }
        if *stop.borrow() {
            reading = false;
        }
        if !reading && window.is_empty() {
            break;
        }
        let room = window.has_room();
        // Bounds idle clients and slow senders (slowloris) alike: each
        // whole request must arrive within the timeout. Not while answers
        // are due from this task: the client may be waiting for them (a
        // commit held up by the disk is not the client's fault). A direct
        // answer may have been written already; if the timeout comes
        // first, the task waits for it before timing the client out.
        let read_timeout =
            (window.answers.is_empty() && !await_direct).then_some(ctx.connection_timeout);
        // Nothing else will wake the task for a direct answer now.
        let armed = !reading || !room || await_direct;
        let woken = direct.as_ref();
        let next = tokio::select! {
            biased;
            answers = window.next_answers(armed), if window.waits(armed) => {
                await_direct &= !window.direct.is_empty();
                if !send_answers(&mut framed, answers).await {
                    break;
                }
                continue;
            }
            // The store thread calls: the direct answer needs the task.
            _ = async { woken.expect("guarded").called().await },
                if woken.is_some() && !window.direct.is_empty() => {
                await_direct = true;
                continue;
            }
            _ = stop.changed(), if reading => {
                reading = false;
                continue;
            }
            next = read_next(&mut framed, read_timeout), if reading && room => next,
        };
        match next {
            Err(_) if !window.direct.is_empty() => {
                // Answered in the meantime (nearly always long since): the
                // client is timed out. (Answered just now, after a commit
                // that took nearly the whole timeout, it is too: the rare
                // price of not waking the task for each answer.) Otherwise
                // its commit is slower than the timeout; wait for it, and
                // time the client from its answer.
                let reaped = window.reap_direct();
                if window.direct.is_empty() {
                    reading = false;
                } else {
                    await_direct = true;
                }
                if !reaped.is_empty() && !send_answers(&mut framed, reaped).await {
                    break;
                }
            }
            Err(_) | Ok(None) => reading = false,
            Ok(Some(Ok(Decoded::Bad(e)))) => {
                // A JSON line that is not a message: say so (in its turn)
                // and read the next one (lines, unlike frames, resync).
                ctx.activity.touch();
                let reply = codec_error_response(&e, "send the next line");
                if let Response::Error { code, message } = &reply {
                    ctx.refusals.record(Refusal::unread(*code, message));
                }
                peer.earlier_requests += 1;
                window.push_now(Answer::Send(reply));
            }
            Ok(Some(Ok(Decoded::Message(req)))) => {
                ctx.activity.touch();
                peer.encoding = framed.codec().encoding().unwrap_or(Encoding::Binary);
                peer.version = framed.codec().version();
                match req {
                    Request::Emit { events, ack } => {
                        // The store thread may answer only a request with
                        // nothing before it left for the task to answer.
                        let to_store = ack
                            && ctx.direct_replies
                            && window.answers.is_empty()
                            && direct.as_ref().is_none_or(emit::Direct::ready);
                        if to_store && direct.is_none() {
                            direct =
                                transport::second_handle(framed.get_ref()).map(emit::Direct::new);
                        }
                        let n = events.len();
                        let to = direct.as_ref().filter(|_| to_store);
                        peer.read_ahead = !framed.read_buffer().is_empty();
                        let answer = emit::submit(ctx, &peer, to, events, ack).await;
                        if to.is_some() {
                            window.push_direct(answer, n);
                        } else {
                            window.push(answer, n);
                        }
                    }
                    other => {
                        if !window.drain(&mut framed).await {
                            break;
                        }
                        let answer = cmd::dispatch(ctx, &peer, other).await;
                        window.push_now(answer);
                    }
                }
                peer.earlier_requests += 1;
            }
            Ok(Some(Err(e))) => {
                let reply = codec_error_response(&e, "closing the connection");
                // A peer that hung up mid-frame was not refused.
                if let (Response::Error { code, message }, false) =
                    (&reply, matches!(e, CodecError::Io(_)))
                {
                    ctx.refusals.record(Refusal::unread(*code, message));
                }
                if window.drain(&mut framed).await {
                    let _ = tokio::time::timeout(SEND_TIMEOUT, framed.send(reply)).await;
                }
                break;
            }
        }
    }
}

// Its tests need a second handle on a socket, which only Unix has.
#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// Fill `socket`'s send path until it takes nothing more.
    fn fill(socket: &transport::ReplyTo) -> usize {
        let chunk = [7u8; 512];
        let mut total = 0;
        loop {
            let n = transport::write_now(socket, &chunk);
            total += n;
            if n < chunk.len() {
                return total;
            }
        }
    }

    #[tokio::test]
    async fn an_answer_the_socket_would_not_take_is_finished_by_the_task() {
        let (daemon_side, peer) = tokio::net::UnixStream::pair().unwrap();
        let second = transport::second_handle(&daemon_side).expect("dup");
        let filler = fill(&second);
        let frame = telemetry_proto::encode_frame(&Response::Ack {
            accepted: 1,
            duplicates: 0,
        })
        .unwrap();
        assert_eq!(
            transport::write_now(&second, &frame),
            0,
            "a full socket takes nothing at once"
        );
        use std::io::Read;
        let mut peer = peer.into_std().unwrap();
        peer.set_nonblocking(false).unwrap();
        let len = filler + frame.len();
        let reader = std::thread::spawn(move || {
            // Start reading only once the task is waiting to write.
            std::thread::sleep(Duration::from_millis(50));
            let mut got = vec![0u8; len];
            peer.read_exact(&mut got).unwrap();
            got
        });
        let mut framed = Framed::new(daemon_side, WireCodec::<Request, Response>::new());
        let rest = frame.clone();
        assert!(
            send_answers(&mut framed, vec![Answer::Written { rest }]).await,
            "written once the peer reads"
        );
        let got = reader.join().unwrap();
        assert!(got[..filler].iter().all(|&b| b == 7));
        assert_eq!(&got[filler..], &frame[..], "the answer follows, whole");
    }
}
