//! `Emit`: validate, render and store events.

use crate::cmd::{consent, Answer, Peer};
use crate::counters::EventCounters;
use crate::record;
use crate::refusals::Refusal;
use crate::server::Ctx;
use crate::store::{InsertOutcome, StoreError};
use crate::transport::{write_now, ReplyTo};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use telemetry_proto::consent::Layer;
use telemetry_proto::{validate_event, ErrorCode, Mode, Response, WireEvent};

/// The answer to an emit, still to come: an acknowledged emit's comes
/// after its commit.
pub type Pending<'a> = Pin<Box<dyn Future<Output = Answer> + Send + 'a>>;

/// Take `Emit { events, ack }` as far as the store's queue and return
/// the wait for its answer.
///
/// All events are validated (shape, catalogue, consent) before any is
/// stored, so a request is stored whole or not at all. Emits submitted
/// one after another are queued, and so committed, in that order (but
/// for one its commit sends back to be checked again, see [`Look`]); a
/// pipelining connection submits each as it arrives and the store commits
/// all that are queued in one transaction.
///
/// With `direct`, the thread that commits writes the acknowledgement
/// itself right after the commit: the client is woken one thread handoff
/// sooner than if this task were woken to write it (see [`Direct`]). That
/// is the store thread, or this one when the store is idle and it commits
/// the request itself (see `Store::lead`). Only a
/// request with nothing before it still unanswered may be given one, or
/// its answer could overtake theirs.
pub async fn submit<'a>(
    ctx: &'a Ctx,
    peer: &Peer,
    direct: Option<&Direct>,
    events: Vec<WireEvent>,
    ack: bool,
) -> Pending<'a> {
    let now = |answer: Answer| -> Pending<'a> { Box::pin(std::future::ready(answer)) };
    EventCounters::add(&ctx.counters.received, events.len() as u64);
    // A client that waits for each answer (one acknowledged request at a
    // time, nothing read past it) is checked against the last look at the
    // consent files, which costs no `stat`: the commit confirms it with one
    // look for all the requests it stores (see `Consent::cached_view`),
    // and sends it back to be checked again if the files changed. The
    // request is kept until then. With 8 such clients that is two `stat`s
    // per commit instead of two per event. Sent back, it is stored after
    // anything its connection queued behind it meanwhile (its answer still
    // comes in order); nothing else is kept for a second look.
    let look = if ack && direct.is_some() && !peer.read_ahead && events.len() <= SECOND_LOOK_EVENTS
    {
        Look::Cached
    } else {
        Look::Fresh
    };
    // Room for these events among all waiting for a commit (bounds what
    // pipelining clients together hold in memory); given back at the
    // commit, on the store thread.
    let room = ctx
        .queued_events
        .clone()
        .acquire_many_owned(u32::try_from(events.len()).unwrap_or(u32::MAX))
        .await;
    // Held until the commit (see `Ctx::id_lock`); owned, so the store
    // thread drops it right after the commit, whether or not anyone is
    // still waiting for the answer.
    let ids = ctx.id_lock.clone().read_owned().await;
    let asker = Asker::of(ctx, peer);
    let records = match prepare_with(ctx, &events, look, asker).await {
        Ok(r) => r,
        Err(reply) => {
            if let Some(d) = direct {
                // This task answers it, so nothing after it may be
                // answered from the store thread until it has.
                d.owed();
            }
            return now(Answer::Send(refused(ctx, &Subject::of(&events), reply)));
        }
    };
    // Only what a refusal is counted under is kept while the commit is
    // awaited; the records go to the store.
    let subject = Subject::of(&events);
    let kept = match look {
        Look::Cached => Some(events),
        Look::Fresh => {
            drop(events);
            None
        }
    };
    let n = records.len() as u32;
    if !ack {
        // Counted from the commit's outcome, as for an acknowledged emit:
        // duplicates, and refusals the store makes (consent changed, store
        // full), are not "stored". The room goes with the records: a
        // client that does not wait for commits must not queue more than
        // one that does.
        let counters = ctx.counters.clone();
        let refusals = ctx.refusals.clone();
        let nudger = ctx.uploader.nudger();
        let counted = subject.clone();
        let done = move |outcome: &Result<InsertOutcome, StoreError>| {
            drop((ids, room));
            match outcome {
                Ok(out) => stored(&counters, &nudger, out),
                Err(e) => {
                    if let Response::Error { code, message } = storage(e.clone()) {
                        EventCounters::add(&counters.refused, counted.events as u64);
                        refusals.record(Refusal {
                            product: &counted.product,
                            event: &counted.event,
                            code,
                            message: &message,
                        });
                    }
                }
            }
        };
        return now(Answer::Send(
            match ctx.store.insert_no_wait(records, done).await {
                // Queued: duplicates among them are not known here.
                Ok(()) => Response::Queued { accepted: n },
                Err(e) => refused(ctx, &subject, storage(e)),
            },
        ));
    }
    // Only a connection that has sent before is likely to send again (a
    // shim connects, emits once and leaves): only then may commits wait
    // for it.
    let client = (peer.earlier_requests > 0).then_some(peer.connection);
    let reply_direct = direct;
    // A request with nothing of its connection's before it in the store
    // (what a direct answer requires) may be committed by this thread,
    // unless its client is streaming (see `Store::lead`).
    let alone = direct.is_some() && !peer.read_ahead;
    let direct = direct.cloned();
    if let Some(d) = &direct {
        d.state.unanswered.fetch_add(1, Ordering::AcqRel);
    }
    let (encoding, version) = (peer.encoding, peer.version);
    let counters = ctx.counters.clone();
    let nudger = ctx.uploader.nudger();
    let submitted = ctx
        .store
        .submit_then(client, alone, records, move |outcome| {
            drop((ids, room));
            // Counted before the client can see its answer, so a `status`
            // it asks for next includes these events.
            if let Ok(out) = outcome {
                stored(&counters, &nudger, out);
            }
            let direct = direct?;
            // Sent back to be checked again: the task answers it.
            if let Err(StoreError::ConsentStale) = outcome {
                direct.answered(false, false);
                return None;
            }
            let Ok(frame) = encoding.encode_as(&reply(outcome), version) else {
                direct.answered(false, outcome.is_err());
                return None;
            };
            let written = write_now(&direct.socket, &frame);
            direct.answered(written == frame.len(), outcome.is_err());
            Some(frame[written..].to_vec())
        })
        .await;
    let wait = match submitted {
        Ok(wait) => wait,
        Err(e) => {
            if let Some(d) = reply_direct {
                d.answered(false, false);
            }
            return now(Answer::Send(refused(ctx, &subject, storage(e))));
        }
    };
    Box::pin(async move {
        match wait.await {
            Ok((Err(StoreError::ConsentStale), _)) => match (kept, ctx.me.upgrade()) {
                // On a task of its own: this future is driven by the
                // connection's task, which may be taking the next request
                // meanwhile, and that request may need what the check
                // holds (applying a consent change holds its locks).
                (Some(events), Some(shared)) => {
                    let again = subject.clone();
                    let check = tokio::spawn(async move {
                        check_again(&shared, &again, events, client, asker).await
                    });
                    match check.await {
                        Ok(answer) => answer,
                        Err(_) => Answer::Send(refused(ctx, &subject, storage(StoreError::Closed))),
                    }
                }
                // Only a request checked against the cached look is sent
                // back, and the daemon is running; this cannot be, but
                // must not answer with nothing.
                _ => Answer::Send(refused(ctx, &subject, storage(StoreError::ConsentStale))),
            },
            Ok((outcome, written)) => {
                if let Err(e) = &outcome {
                    count(ctx, &subject, &storage(e.clone()));
                }
                match written {
                    Some(rest) => Answer::Written { rest },
                    None => Answer::Send(reply(&outcome)),
                }
            }
            Err(e) => Answer::Send(refused(ctx, &subject, storage(e))),
        }
    })
}

/// Most events a request may carry and still be checked against the last
/// look at the consent files (it is kept until its commit, in case it must
/// be checked again): the most one commit led by its reader holds.
const SECOND_LOOK_EVENTS: usize = 64;

/// Which look at the consent files a request is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// One made for it, after it arrived (two `stat`s).
    Fresh,
    /// The last one made, confirmed at its commit (see
    /// `Consent::cached_view`).
    Cached,
}

/// An acknowledged emit its commit sent back because the consent files
/// changed after the look it was checked against: checked again against a
/// look of its own, stored, and answered by its connection's task.
async fn check_again(
    ctx: &Ctx,
    subject: &Subject,
    events: Vec<WireEvent>,
    client: Option<u64>,
    asker: Asker,
) -> Answer {
    let _room = ctx
        .queued_events
        .clone()
        .acquire_many_owned(u32::try_from(events.len()).unwrap_or(u32::MAX))
        .await;
    let _ids = ctx.id_lock.clone().read_owned().await;
    let records = match prepare_with(ctx, &events, Look::Fresh, asker).await {
        Ok(r) => r,
        Err(reply) => return Answer::Send(refused(ctx, subject, reply)),
    };
    drop(events);
    tracing::debug!(
        product = %subject.product,
        "the consent files changed while a request waited for its commit; checked it again"
    );
    // As its client: the commit need not wait for it to come back.
    let outcome = ctx
        .store
        .insert_then(client, false, records, |_| ())
        .await
        .and_then(|(outcome, ())| outcome);
    match &outcome {
        Ok(out) => stored(&ctx.counters, &ctx.uploader.nudger(), out),
        Err(e) => count(ctx, subject, &storage(e.clone())),
    }
    Answer::Send(reply(&outcome))
}

/// Where the store thread writes an acknowledged emit's answer itself,
/// right after the commit, and how it calls the connection's task back.
///
/// The task is called back only when it has something left to do: the
/// store thread counts the events and nudges the uploader itself, so for
/// an answer written whole the task need not wake at all. It learns of the
/// answer when it next looks (its client, answered, sends again or hangs
/// up, which wakes it anyway). One wakeup fewer per event, on a small VM
/// as dear as the rest of the request.
///
/// Answers to one connection must go out in order and whole. So an emit
/// may be answered this way only while no earlier one is still waiting for
/// the store thread ([`Direct::ready`]): its answer is then written after
/// theirs. Once the task owes an answer (part of a frame, or all of it,
/// that the store thread left to it, or a refusal made before the store),
/// no emit is, until the task has answered everything before.
#[derive(Clone)]
pub struct Direct {
    socket: ReplyTo,
    state: Arc<DirectState>,
}

struct DirectState {
    /// Signalled when the task must look at an answer: a refusal to count,
    /// or a frame (or part) the store thread left for it to write.
    wake: tokio::sync::Notify,
    /// Emits handed to the store with this, not yet answered there.
    unanswered: AtomicUsize,
    /// The task has an answer (or part) to write: left by the store
    /// thread, or a refusal made before the store.
    stalled: AtomicBool,
}

impl Direct {
    /// Answers written to `socket`, a second handle on the connection.
    pub fn new(socket: ReplyTo) -> Direct {
        Direct {
            socket,
            state: Arc::new(DirectState {
                wake: tokio::sync::Notify::new(),
                unanswered: AtomicUsize::new(0),
                stalled: AtomicBool::new(false),
            }),
        }
    }

    /// Whether the next emit may be answered by the store thread: every
    /// earlier one was, whole.
    pub fn ready(&self) -> bool {
        // `unanswered` first: a store thread that left work for the task
        // marks `stalled` before it counts the answer.
        self.state.unanswered.load(Ordering::Acquire) == 0
            && !self.state.stalled.load(Ordering::Acquire)
    }

    /// The task owes this connection an answer (a refusal before the
    /// store): later emits wait for it, not for the store thread.
    ///
    /// It also calls the task: the refusal is ready, but it sits behind
    /// any earlier direct answer, and the task only glances at those (the
    /// connection's `Window::reap_direct`) unless called. One the
    /// store thread has written but not yet handed over (it writes, then
    /// returns the outcome) is not ready at that glance; uncalled, the
    /// task would go back to reading, and a client waiting for the refusal
    /// would get it only when its read timed out.
    fn owed(&self) {
        self.state.stalled.store(true, Ordering::Release);
        self.state.wake.notify_one();
    }

    /// The task has answered everything handed to the store with this.
    pub fn settled(&self) {
        self.state.stalled.store(false, Ordering::Release);
    }

    /// Wait until the store thread calls.
    pub async fn called(&self) {
        self.state.wake.notified().await;
    }

    /// The store thread is done with an answer: written `whole`, or not
    /// (the task writes the rest); `refused` tells the task to count it.
    fn answered(&self, whole: bool, refused: bool) {
        if !whole {
            self.state.stalled.store(true, Ordering::Release);
        }
        self.state.unanswered.fetch_sub(1, Ordering::AcqRel);
        if !whole || refused {
            self.state.wake.notify_one();
        }
    }
}

/// What a refusal of a request is counted and logged under: its events,
/// and the first one's product and name (a shim's emit carries one).
#[derive(Clone)]
pub struct Subject {
    events: usize,
    product: String,
    event: String,
}

impl Subject {
    /// The subject of a request carrying `events`.
    pub fn of(events: &[WireEvent]) -> Subject {
        let first = events.first();
        Subject {
            events: events.len(),
            product: first.map_or_else(String::new, |e| e.product.clone()),
            event: first.map_or_else(String::new, |e| e.event.clone()),
        }
    }
}

/// Count a commit's stored events and duplicates; when a batch filled up
/// (or the first event is pending), nudge the uploader to seal and send it.
fn stored(counters: &EventCounters, nudger: &tokio::sync::Notify, out: &InsertOutcome) {
    EventCounters::add(&counters.stored, u64::from(out.accepted));
    EventCounters::add(&counters.duplicates, u64::from(out.duplicates));
    if out.wake_uploader {
        nudger.notify_one();
    }
}

/// Count and log a refusal whose reply is `reply`.
fn count(ctx: &Ctx, subject: &Subject, reply: &Response) {
    if let Response::Error { code, message } = reply {
        EventCounters::add(&ctx.counters.refused, subject.events as u64);
        ctx.refusals.record(Refusal {
            product: &subject.product,
            event: &subject.event,
            code: *code,
            message,
        });
    }
}

/// `reply`, counted as a refusal.
fn refused(ctx: &Ctx, subject: &Subject, reply: Response) -> Response {
    count(ctx, subject, &reply);
    reply
}

/// The reply to an acknowledged emit.
fn reply(outcome: &Result<InsertOutcome, StoreError>) -> Response {
    match outcome {
        Ok(out) => Response::Ack {
            accepted: out.accepted,
            duplicates: out.duplicates,
        },
        Err(e) => storage(e.clone()),
    }
}

/// How far ahead of the daemon's clock an event's timestamp may be: the
/// client stamps it with the same machine's clock moments before, so only a
/// clock stepped back since (the spool keeps events across that) or a
/// client that stamps its own times gets here. A batch is filed under the
/// day it is sealed, which must not come before its events' days (the
/// report reads a period's days, and `report/SCHEMA.md` says so); past
/// this, an event is refused.
const FUTURE_ALLOWANCE_US: i64 = 3_600_000_000;

/// What `asker` can do about `product` being off by `layer`, as a clause
/// for the refusal. The user-file layer is the daemon's owner's file: only
/// its owner's `telemetryctl consent` writes it, so another account (a
/// member of a machine-wide daemon's group, whose own file is already on
/// or its shim would not have sent) is told whose decision it is.
fn turn_on_advice(ctx: &Ctx, product: &str, layer: Layer, asker: Asker) -> String {
    match (layer, asker) {
        (Layer::UserFile | Layer::Default, Asker::Other) => format!(
            "; this telemetryd runs as another account and follows its owner's decision \
             ({}), not yours: ask its administrator",
            ctx.consent.user_path().display()
        ),
        _ => telemetry_proto::consent::how_to_turn_on(
            product,
            layer,
            "DO_NOT_TRACK / TELEMETRY_OPTOUT in telemetryd's environment",
        ),
    }
}

/// `us` microseconds as a person reads them ("3 days 2h").
fn human_us(us: i64) -> String {
    let secs = u64::try_from(us / 1_000_000).unwrap_or(0);
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// Who sent a request, for the advice a consent refusal gives.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Asker {
    /// The daemon's own account (or its spool): a `telemetryctl consent`
    /// of theirs writes the file the daemon follows.
    Owner,
    /// Another account (a machine-wide daemon's group member, root): the
    /// daemon does not follow what they write, so `consent on` of theirs
    /// cannot help.
    Other,
}

impl Asker {
    fn of(ctx: &Ctx, peer: &Peer) -> Asker {
        // A peer the OS did not name (a Windows client that exited before
        // its SID was read) gets the owner's advice: the general case.
        if peer.identity == crate::transport::PeerIdentity::Unknown
            || peer.identity.same_account(&ctx.daemon_identity)
        {
            Asker::Owner
        } else {
            Asker::Other
        }
    }
}

/// Validate `events` (shape, catalogue, consent) and render them for the
/// store; the error is the reply to send (not yet counted as a refusal:
/// spool ingestion counts only once a spool is consumed, as it may retry).
/// Shared with spool ingestion, whose files are the daemon's own account's.
pub async fn prepare(
    ctx: &Ctx,
    events: &[WireEvent],
) -> Result<Vec<crate::record::Record>, Response> {
    prepare_with(ctx, events, Look::Fresh, Asker::Owner).await
}

/// The refusal of an event of `product`, which `layer` keeps off.
fn off_reply(ctx: &Ctx, product: &str, layer: telemetry_proto::Layer, asker: Asker) -> Response {
    Response::Error {
        code: ErrorCode::ConsentOff,
        message: format!(
            "telemetry for {product:?} is off (decided by the {}); nothing was recorded{}",
            layer.as_str(),
            turn_on_advice(ctx, product, layer, asker),
        ),
    }
}

/// [`prepare`], checking consent against `look`, for `asker`.
async fn prepare_with(
    ctx: &Ctx,
    events: &[WireEvent],
    look: Look,
    asker: Asker,
) -> Result<Vec<crate::record::Record>, Response> {
    if let Err(e) = ctx.limits.check_batch_len(events.len()) {
        return Err(invalid(e.to_string()));
    }
    let mut manifests = BTreeMap::new();
    let now = crate::config::now_us(&ctx.clock);
    // "event \"ran\"", or with its place in a request of several.
    let which = |i: usize, ev: &WireEvent| {
        let name = telemetry_proto::truncated(&ev.event);
        if events.len() == 1 {
            format!("event {name:?}")
        } else {
            format!("event #{} of {} ({name:?})", i + 1, events.len())
        }
    };
    for (i, ev) in events.iter().enumerate() {
        if let Err(e) = validate_event(ev, &ctx.limits) {
            return Err(invalid(format!("{}: {e}", which(i, ev))));
        }
        let ahead = ev.timestamp_us.saturating_sub(now);
        if ahead > FUTURE_ALLOWANCE_US {
            return Err(invalid(format!(
                "{} is stamped {} after this machine's clock (more than an hour): its batch would be filed under a day before the event's own, where no report of its period reads it; check the clock of whatever made it",
                which(i, ev),
                human_us(ahead),
            )));
        }
        if telemetry_sink::manifest::DAEMON_EVENTS.contains(&ev.event.as_str()) {
            return Err(invalid(format!(
                "{} is recorded by telemetryd itself (at an off, a forget or a drop); a client \
                 may not send it",
                which(i, ev)
            )));
        }
        // A broken manifest refuses its product's events with the same
        // code as an unknown one: older clients know it.
        match ctx.catalogues.check(ev) {
            Ok(m) => {
                manifests.insert(ev.product.as_str(), m);
            }
            Err(e) => {
                // A product with no manifest that the user turned off is
                // refused as off: that no is the reason, and "add its
                // manifest" would be advice to undo it (a spooled event of
                // a product the user then turned off and never installed).
                // Undecided, or off for everyone (`* off`, DO_NOT_TRACK),
                // the manifest is the news (a misspelt product name); a
                // broken manifest or an unlisted event is too.
                let no_manifest = matches!(
                    e,
                    crate::catalog::CheckError::Rejected(
                        telemetry_sink::manifest::Rejection::UnknownProduct { .. }
                    )
                );
                let (mode, layer) = ctx.consent.view().resolve(&ev.product);
                if no_manifest && mode == Mode::Off && layer == telemetry_proto::Layer::UserFile {
                    return Err(off_reply(ctx, &ev.product, layer, asker));
                }
                let reply = Response::Error {
                    code: ErrorCode::NotInCatalogue,
                    message: if events.len() == 1 {
                        e.to_string()
                    } else {
                        format!("event #{} of {}: {e}", i + 1, events.len())
                    },
                };
                return Err(reply);
            }
        }
    }
    // Each product's ID and forget time, looked up once per request (a
    // request usually carries one product).
    let mut ids: Vec<(&str, std::sync::Arc<str>, Option<i64>)> = Vec::new();
    for ev in events {
        if !ids.iter().any(|(p, _, _)| *p == ev.product) {
            ids.push((
                &ev.product,
                ctx.identity.shared_id(&ev.product),
                ctx.identity.forgotten_since(&ev.product),
            ));
        }
    }
    let id_of = |product: &str| {
        ids.iter()
            .find(|(p, _, _)| *p == product)
            .map(|(_, id, since)| (id.clone(), *since))
            .expect("every product of the request was looked up")
    };
    // Made before the user asked to forget the product (spooled, or sent
    // as the forget ran): forgotten too.
    for ev in events {
        if let (_, Some(since)) = id_of(&ev.product) {
            if ev.timestamp_us < since {
                return Err(Response::Error {
                    code: ErrorCode::Invalid,
                    message: format!(
                        "event {} of {:?} was made before the user asked to forget {:?}'s data; not stored",
                        ev.event, ev.product, ev.product
                    ),
                });
            }
        }
    }
    // Consent, per product in the request: apply a changed decision first
    // (an `off` purges before anything new could be stored), then refuse
    // `off` products and mark `local` ones.
    // The files are looked at once for the whole request, or not at all
    // (`Look::Cached`).
    let mut look = look;
    let (view, modes) = 'look: loop {
        let view = match look {
            Look::Fresh => ctx.consent.view(),
            Look::Cached => ctx.consent.cached_view(),
        };
        let mut modes: BTreeMap<&str, Mode> = BTreeMap::new();
        for ev in events {
            if modes.contains_key(ev.product.as_str()) {
                continue;
            }
            if let Err(e) = consent::reconcile_in(ctx, &view, &ev.product, &ev.build).await {
                return Err(storage(e));
            }
            let (mode, layer) = view.resolve(&ev.product);
            if mode == Mode::Off {
                // A refusal needs a look made after the request arrived
                // (the user may have just said yes).
                if look == Look::Cached {
                    look = Look::Fresh;
                    continue 'look;
                }
                return Err(off_reply(ctx, &ev.product, layer, asker));
            }
            modes.insert(&ev.product, mode);
        }
        break (view, modes);
    };
    // Made before the user's last off (spooled while the daemon was down,
    // through an off and an on it never saw): that off took it, as it
    // took what was stored then.
    for product in modes.keys() {
        let Some(off_us) = view.last_off_us(product) else {
            continue;
        };
        if let Some(ev) = events
            .iter()
            .find(|ev| ev.product == *product && ev.timestamp_us < off_us)
        {
            return Err(invalid(format!(
                "event {} of {:?} was made before the user last turned {:?} off, which took it; not stored (if this machine's clock was set back since, that is why)",
                ev.event, ev.product, ev.product
            )));
        }
    }
    // Records checked against a look of their own need no confirming.
    let generation = match look {
        Look::Fresh => 0,
        Look::Cached => view.generation(),
    };
    // With `on`, events outside the consented event set (added by a newer
    // manifest version) are kept as in `local` until the user consents to
    // that version.
    let mut consented = BTreeMap::new();
    for (product, mode) in &modes {
        if let (Mode::On, Some(m)) = (mode, manifests.get(product)) {
            let set = consent::consented_events_in(ctx, &view, m)
                .await
                .map_err(storage)?;
            consented.insert(*product, set);
        }
    }
    Ok(events
        .iter()
        .map(|ev| {
            let (machine, _) = id_of(&ev.product);
            let mut rec =
                record::render(ev, &machine, std::env::consts::OS, std::env::consts::ARCH);
            let product = ev.product.as_str();
            rec.local_only = match modes.get(product) {
                Some(Mode::On) => !consented
                    .get(product)
                    .is_some_and(|set| set.contains(&ev.event)),
                _ => true,
            };
            rec.consent_generation = generation;
            rec
        })
        .collect())
}

fn invalid(message: String) -> Response {
    Response::Error {
        code: ErrorCode::Invalid,
        message,
    }
}

/// The reply for a store failure.
pub fn storage(e: crate::store::StoreError) -> Response {
    if let crate::store::StoreError::ConsentChanged { .. } = e {
        return Response::Error {
            code: ErrorCode::ConsentOff,
            message: e.to_string(),
        };
    }
    let (code, then) = match e {
        // Not "not stored" alone: the shim and the SDKs spool it, and it
        // is offered again, which the user would not expect from that.
        crate::store::StoreError::Full { .. } => (
            ErrorCode::StoreFull,
            "not stored now (a client that spools it, as the shim and the SDKs do, offers it again later)",
        ),
        _ => (ErrorCode::Storage, "the events were not stored"),
    };
    Response::Error {
        code,
        message: format!("{e}; {then}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal made before the store calls the task, which would
    /// otherwise read on while the refusal waits behind an earlier direct
    /// answer (see [`Direct::owed`]).
    #[cfg(unix)]
    #[tokio::test]
    async fn a_refusal_owed_by_the_task_calls_the_task() {
        let (daemon_side, _peer) = tokio::net::UnixStream::pair().unwrap();
        let direct = Direct::new(crate::transport::second_handle(&daemon_side).expect("dup"));
        direct.owed();
        assert!(!direct.ready(), "later emits wait for the task");
        tokio::time::timeout(std::time::Duration::from_secs(5), direct.called())
            .await
            .expect("the task is called for the refusal it owes");
    }

    #[test]
    fn a_full_store_is_store_full_and_a_consent_change_is_consent_off() {
        let code = |e| match storage(e) {
            Response::Error { code, .. } => code,
            other => panic!("{other:?}"),
        };
        assert_eq!(code(StoreError::Full { limit: 1 }), ErrorCode::StoreFull);
        assert_eq!(
            code(StoreError::ConsentChanged {
                product: "p".into()
            }),
            ErrorCode::ConsentOff
        );
        assert_eq!(code(StoreError::Closed), ErrorCode::Storage);
    }
}
