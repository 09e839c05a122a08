//! Wire protocol between telemetry clients (`telemetry-emit`, `telemetryctl`,
//! the `telemetry-client` crate) and `telemetryd`.
//!
//! This crate is data and codec only: serde types, validation and a frame
//! codec. It does no I/O and starts no runtime, so a client can link it
//! without pulling in tokio.
//!
//! # Frames
//!
//! The socket carries a sequence of frames in both directions. Each frame is a
//! 4-byte big-endian length followed by that many bytes of body:
//!
//! ```text
//! +----------------+--------------------------------------------+
//! | length: u32 BE | body: `length` bytes (at most MAX_FRAME_LEN)|
//! +----------------+--------------------------------------------+
//!
//! body = varint(PROTOCOL_VERSION) ++ postcard(Request | Response)
//! ```
//!
//! The body is [postcard](https://postcard.jamesmunns.com/wire-format) — a
//! frozen, documented format: integers are LEB128 varints (signed ones
//! zigzag-encoded first), strings and byte arrays are a varint length then the
//! bytes, `Option` is a `0x00`/`0x01` tag, enums are a varint variant index
//! then the variant's fields in order, structs are their fields in order, maps
//! are a varint count then key/value pairs. A UUID is 16 raw bytes (a byte
//! array, length-prefixed: `0x10` then the bytes).
//!
//! The first value of every body is the protocol version as a varint (today
//! [`PROTOCOL_VERSION`] = 2, one byte `0x02`). A daemon that receives a
//! version it does not read replies with [`ErrorCode::UnsupportedVersion`]
//! and closes the connection; see rule 4 of [Evolution](#evolution). A frame longer than [`MAX_FRAME_LEN`] is rejected before any
//! buffer is allocated for it. (Version 1, used before any release, wrote
//! reply structs without the record length below.)
//!
//! **Records.** Every struct carried in a reply ([`StatusReport`],
//! [`FlushReport`], [`ConsentReport`], [`ProductConsent`], [`EventsPage`],
//! [`ShownEvent`], [`RefusalCount`], [`DestinationStatus`]) is a *record*: a byte string (varint
//! length, then its fields in order), so that it can grow. See
//! [Evolution](#evolution) and [`mod@record`].
//!
//! # Conversation
//!
//! A client connects, writes request frames and reads response frames.
//! Every request gets exactly one response, **in request order**, and a
//! client may write further requests before reading earlier answers
//! (pipelining): the daemon validates each emit and queues it for the
//! store as it arrives, commits whatever has arrived (from every
//! connection) in one transaction, and answers each acknowledged emit only
//! after the commit that stored it. A request other than `Emit` is handled
//! only once every answer before it is written, so it sees their effects.
//!
//! The daemon reads at most 256 requests, or 16,384 events, ahead of the
//! answers it has written on one connection; beyond that it stops reading
//! and the socket's buffers push back on the writer. A pipelining client
//! must therefore read answers while it writes (a window: send, and once
//! `window` requests are unanswered, read one before sending the next);
//! one that writes without ever reading can fill both directions' buffers
//! and stall. Every frame stays under [`MAX_FRAME_LEN`]: a client packing
//! many events per request sums their [`encoded_len`] plus
//! [`EMIT_OVERHEAD`]. `telemetry_client::stream::Stream` does all this.
//!
//! A malformed frame gets a [`Response::Error`] after the answers to the
//! requests before it, and the daemon closes that connection.
//!
//! # Messages
//!
//! Requests ([`Request`], variant index in brackets):
//!
//! - `[0] Emit { events: Vec<WireEvent>, ack: bool }` — store events. With
//!   `ack = true` the reply ([`Response::Ack`]) is sent only after the events
//!   are committed to disk. With `ack = false` the daemon replies
//!   [`Response::Queued`] as soon as it has accepted them; the client may
//!   close without reading it.
//! - `[1] Status` — reply [`Response::Status`].
//! - `[2] Flush` — seal everything pending, upload now, reply
//!   [`Response::Flushed`] with the object keys written (or an error).
//! - `[3] ConsentChanged { product: String, build: String }` — the user's
//!   consent file changed; the daemon applies it and replies
//!   [`Response::ConsentApplied`].
//! - `[4] Show { product: Option<String>, after_seq: i64 }` — stored
//!   events, oldest first, a page at a time; reply [`Response::Events`].
//! - `[5] Purge { product: Option<String> }` — delete events not yet
//!   uploaded; reply [`Response::Purged`].
//! - `[6] Probe` — check every destination without writing; reply
//!   [`Response::Probed`].
//! - `[7] Forget { product: String, build: String }` — delete the
//!   product's local data, send a `telemetry_forget` marker (when `on`)
//!   and switch it to a new anonymous ID; reply [`Response::Forgotten`].
//! - `[8] Receipts { key: Option<String>, after: u64 }` — upload
//!   receipts, or one receipt's events; reply [`Response::Receipts`].
//! - `[9] Stop` — shut down as on SIGTERM (stop taking connections, finish
//!   what is in flight, a last upload, close the store); reply
//!   [`Response::Stopping`] first, or `Supervised` when a service manager
//!   runs the daemon. A daemon before this request answers `Malformed`.
//!
//! Responses ([`Response`]):
//!
//! - `[0] Ack { accepted: u32, duplicates: u32 }`
//! - `[1] Queued { accepted: u32 }`
//! - `[2] Status(StatusReport)`
//! - `[3] Flushed(FlushReport)`
//! - `[4] Error { code: ErrorCode, message: String }`
//! - `[5] ConsentApplied(ConsentReport)`
//! - `[6] Events(EventsPage)`
//! - `[7] Purged { events: u64 }`
//! - `[8] Probed(ProbeReport)`
//! - `[9] Forgotten(ForgetReport)`
//! - `[10] Receipts(ReceiptsPage)`
//! - `[11] Stopping { pid: u32 }`
//!
//! Error codes ([`ErrorCode`]): `[0] Malformed`, `[1] FrameTooLarge`,
//! `[2] UnsupportedVersion`, `[3] Invalid`, `[4] Storage`, `[5] Upload`,
//! `[6] ShuttingDown`, `[7] Internal`, `[8] ConsentOff`,
//! `[9] NotInCatalogue`, `[10] Busy`, `[11] PermissionDenied`,
//! `[12] StoreFull`, `[13] Supervised`, `[14] Unknown` (never sent: what an
//! unknown code reads as; new codes go before it).
//!
//! # Who may ask what
//! Anyone who can open the socket may `Emit` and ask for `Status`.
//! Every other request (`Flush`, `ConsentChanged`, `Show`, `Purge`,
//! `Probe`, `Forget`, `Receipts`, `Stop`) changes or reveals stored data,
//! or stops the daemon: it answers them only for its own uid and root
//! (checked with the peer's credentials, `SO_PEERCRED` / `getpeereid`; on
//! Windows the pipe client's SID).
//!
//! Example: the body of an acked emit of one event `stop` for product `cfdev`,
//! build `1.2.0`, no data:
//!
//! ```text
//! 02                      protocol version 2
//! 00                      Request::Emit
//! 01                      events: 1 element
//!   10 <16 bytes>         id (UUIDv7)
//!   04 73 74 6f 70        event = "stop"
//!   05 63 66 64 65 76     product = "cfdev"
//!   05 31 2e 32 2e 30     build = "1.2.0"
//!   <zigzag varint>       timestamp_us (µs since the Unix epoch, UTC)
//!   00                    data: 0 entries
//! 01                      ack = true
//! ```
//!
//! The frame on the wire is that body prefixed with its length as 4 bytes,
//! big-endian.
//!
//! And a reply that carries a record, `Flushed` with one key `k`, 3 events,
//! 200 bytes:
//!
//! ```text
//! 02                      protocol version 2
//! 03                      Response::Flushed
//! 06                      the FlushReport record: 6 bytes follow
//!   01 01 6b              keys: 1 element, "k"
//!   03                    events = 3
//!   c8 01                 bytes = 200
//! ```
//!
//! # Evolution
//!
//! Binaries of different ages share one daemon (several products, each
//! shipping its own `telemetry-emit`), so both directions must keep
//! working: an older client against a newer daemon and the reverse. The
//! rules, none of which changes [`PROTOCOL_VERSION`]:
//!
//! 1. **Replies grow by appending fields to records.** A reader skips the
//!    bytes of fields it does not know (after the last field it knows, up
//!    to the record's length) and reads fields missing at the end as zero:
//!    `0`, `""`, empty list or map, `None`, `false`, an enum's first
//!    variant. So an added field's zero must mean "not known" (use an
//!    `Option` or a count), and fields are never reordered, retyped or
//!    removed. In JSON a record is an object: unknown keys are ignored, and
//!    added fields default when absent.
//! 2. **Requests grow by new variants.** A new request is appended to
//!    [`Request`]; an older daemon answers it with
//!    [`ErrorCode::Malformed`], which tells the client to fall back. Only a
//!    new request is answered with a new [`Response`] variant, so an older
//!    client never meets one. Fields of existing requests (and
//!    [`WireEvent`]) never change: new ones come with a new variant.
//! 3. **Error codes are open.** New [`ErrorCode`]s take the next index
//!    before [`ErrorCode::Unknown`], which is never sent (so its own index
//!    may move: `Supervised` took its 13); a peer that does not know a code
//!    reads it as [`ErrorCode::Unknown`] (in JSON an unknown name does the
//!    same). The codes that are sent are never renumbered. Other enums ([`Mode`], [`Layer`],
//!    [`EventState`], [`Value`]) are closed: a new value needs a new
//!    request or reply field that older peers do not read.
//! 4. A change these rules cannot express bumps [`PROTOCOL_VERSION`]. A
//!    daemon keeps reading the versions from [`OLDEST_PROTOCOL_VERSION`]
//!    on, and **answers each request in the version it came in**: an older
//!    vendor's shim or `telemetryctl` keeps working against the newer
//!    daemon another vendor's CLI installed (the newest binary serves).
//!    A request in a version it does not read is answered with
//!    [`ErrorCode::UnsupportedVersion`] in the version nearest the
//!    peer's, which a newer client still reads, so it can say the daemon
//!    is older rather than fail to decode. Today every version read has
//!    one layout, so answering in another is writing its number: a bump
//!    that changes the layout must bring an encoder and a decoder for each
//!    older version still read (a compile-time check below stops a bump
//!    that does not).
//!
//! `proto/tests/compat.rs` checks rules 1 and 3 with an older and a newer
//! peer decoding each other, in postcard and JSON, and a status reply
//! frozen as bytes (`proto/tests/vectors/`).
//!
//! # JSON lines
//!
//! The same socket also speaks JSON, one object a line, for clients that
//! would rather not write postcard: `nc -U`, `socat`, shell scripts, and
//! the Go, Node and Python SDKs (`sdk/`). **The connection's first byte
//! decides** for both directions: `{` or ASCII whitespace starts a
//! JSON-lines conversation, anything else binary frames (which start with
//! `0x00`, their length's high byte; frames are far under 16 MiB), so
//! damaged binary input still gets a binary error (see [`json`]). Every
//! reply on a JSON connection comes as a line, including the
//! acknowledgement of an emit and a `busy` refusal (when the client's first
//! byte arrives within 100 ms of connecting, as it does from any client
//! that writes its request at once; a silent one is refused in binary).
//!
//! A line is an object with the protocol version under `"v"` and exactly
//! one other key: the message's variant in snake_case, whose value is the
//! variant's fields as an object (`{}` or `null` for one without fields,
//! the record itself for `status` and the other replies that carry one).
//! Field names and types are those of the Rust types here; an event's
//! `id` is a UUID string, times are integers in µs since the Unix epoch,
//! and `data` values are plain JSON strings, whole numbers (64-bit signed)
//! and booleans. Unknown keys inside a message are ignored; replies grow
//! only by new keys (the evolution rules below hold unchanged).
//!
//! ```text
//! → {"v":2,"emit":{"events":[{"id":"0190f5c2-7b1e-7000-8000-000000000001","event":"stop","product":"cfdev","build":"1.2.0","timestamp_us":1700000000000000,"data":{"plan":"small","count":3,"ok":true}}],"ack":true}}
//! ← {"v":2,"ack":{"accepted":1,"duplicates":0}}
//! → {"v":2,"status":{}}
//! ← {"v":2,"status":{"daemon_version":"0.1.0","uptime_secs":12,...}}
//! → {"v":2,"emit":{"events":[],"ack":maybe}}
//! ← {"v":2,"error":{"code":"malformed","message":"\"emit\": expected ..."}}
//! ```
//!
//! The limits and checks are the binary protocol's: the same event limits
//! ([`Limits`]), a line of at most [`MAX_LINE_LEN`] bytes, the same
//! permission rule, and the same pipelining rule: every request gets exactly
//! one reply, in request order, and a client may write lines ahead. A line
//! that is not a valid message gets an `error` line (`malformed`) and the
//! connection goes on with the next line; a line over the limit or of
//! another protocol version gets its error and the connection is closed,
//! as in binary. Blank lines are skipped; a last line may lack its newline
//! if the client then closes its side. `proto/tests/vectors.rs` (and each
//! SDK's tests) check both encodings against the shared test vectors in
//! `vectors/` at the top of the repository.
//!
//! # JSON
//!
//! Every type here also has a JSON form (serde's, with `snake_case`
//! enum names), which is what `telemetryctl --json` prints: a
//! [`StatusReport`] is printed as `{"daemon_version": "0.1.0", ...,
//! "consent": [{"product": "cfdev", "mode": "on", "layer": "user_file"}],
//! "refusals": [{"product": "cfdev", "code": "not_in_catalogue",
//! "count": 1}], ...}`. Times are integers in µs since the Unix epoch
//! (fields ending in `_us`).

#![forbid(unsafe_code)]

mod codec;
pub mod consent;
pub mod json;
pub mod paths;
pub mod record;
mod validate;

pub use codec::{
    decode_body, decode_body_versioned, encode_body, encode_body_as, encode_frame, encode_frame_as,
    encoded_len, CodecError, FrameCodec, EMIT_OVERHEAD,
};
pub use consent::{Layer, Mode};
pub use json::{
    decode_line, decode_line_versioned, encode_line, encode_line_as, Decoded, Encoding, WireCodec,
    MAX_LINE_LEN,
};
pub use validate::{
    printable, truncated, validate_build, validate_event, validate_name, Limits, ValidationError,
};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version written as the first varint of every frame body.
pub const PROTOCOL_VERSION: u16 = if cfg!(feature = "future-version") {
    // Only in the test build that plays a newer release (see Cargo.toml).
    3
} else {
    2
};

/// The oldest protocol version still read, and answered in kind (rule 4
/// of [Evolution](#evolution)).
pub const OLDEST_PROTOCOL_VERSION: u16 = 2;

// Answering in an older version writes today's types under its number
// (`encode_body_as`): right only while the versions read share a layout.
// The test build that plays a newer release changes the number alone.
const _: () = assert!(
    OLDEST_PROTOCOL_VERSION == PROTOCOL_VERSION || cfg!(feature = "future-version"),
    "a new PROTOCOL_VERSION needs an encoder and a decoder per older version still read (rule 4), or OLDEST_PROTOCOL_VERSION raised to it"
);

/// Whether this side reads messages written in protocol `version`.
pub fn reads_version(version: u64) -> bool {
    (u64::from(OLDEST_PROTOCOL_VERSION)..=u64::from(PROTOCOL_VERSION)).contains(&version)
}

/// The version to answer a peer that wrote `got` in: `got` itself if this
/// side reads it, else the nearest one this side speaks.
pub fn answer_version(got: u16) -> u16 {
    got.clamp(OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION)
}

/// Largest frame body accepted in either direction, in bytes.
///
/// Small on purpose: events are tiny and a daemon serving many clients must
/// bound what one of them can make it buffer.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// One event as a client sends it.
///
/// The daemon adds what the client must not choose: the anonymous machine
/// ID, the operating system and the architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireEvent {
    /// Made by the sender (UUIDv7); the deduplication key end to end.
    pub id: uuid::Uuid,
    /// Catalogue name, e.g. `app_created`.
    pub event: String,
    /// Product the event belongs to, e.g. `cfdev`.
    pub product: String,
    /// The host CLI's version.
    pub build: String,
    /// When the event happened, in microseconds since the Unix epoch (UTC).
    pub timestamp_us: i64,
    /// Small map of scalar values.
    pub data: BTreeMap<String, Value>,
}

/// A scalar value in an event's `data` map.
///
/// In postcard an enum (variant index, then the value); in JSON the bare
/// scalar (`"small"`, `-3`, `true`), so a JSON client writes `data` as a
/// plain object.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `[0]` UTF-8 text.
    Str(String),
    /// `[1]` signed integer.
    Int(i64),
    /// `[2]` boolean.
    Bool(bool),
}

// Postcard keeps the enum (variant index, then the value); JSON and other
// human-readable formats write the bare scalar, and read one back by its
// JSON type.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Value")]
enum TaggedValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self, s.is_human_readable()) {
            (Value::Str(v), true) => s.serialize_str(v),
            (Value::Int(v), true) => s.serialize_i64(*v),
            (Value::Bool(v), true) => s.serialize_bool(*v),
            (v, false) => match v.clone() {
                Value::Str(v) => TaggedValue::Str(v),
                Value::Int(v) => TaggedValue::Int(v),
                Value::Bool(v) => TaggedValue::Bool(v),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return Ok(match TaggedValue::deserialize(d)? {
                TaggedValue::Str(v) => Value::Str(v),
                TaggedValue::Int(v) => Value::Int(v),
                TaggedValue::Bool(v) => Value::Bool(v),
            });
        }
        struct Scalar;
        impl serde::de::Visitor<'_> for Scalar {
            type Value = Value;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a data value: a string, a whole number (64-bit) or a boolean")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Str(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
                Ok(Value::Str(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
                i64::try_from(v).map(Value::Int).map_err(|_| {
                    E::custom(format!(
                        "{v} is out of range: whole numbers are 64-bit signed"
                    ))
                })
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
        }
        d.deserialize_any(Scalar)
    }
}

/// A request from a client to the daemon. (JSON: the variant's snake_case
/// name as the key; see [JSON lines](#json-lines).)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// `[0]` Store events; see the crate docs for `ack`.
    Emit {
        /// Events to store, at most [`Limits::max_events_per_emit`].
        events: Vec<WireEvent>,
        /// Reply only after the events are committed.
        ack: bool,
    },
    /// `[1]` Ask for a [`StatusReport`].
    Status,
    /// `[2]` Seal and upload everything pending now.
    Flush,
    /// `[3]` The user's consent file changed for `product`: apply it now
    /// (purge on `off`, record the final `telemetry_off` event). The file is
    /// the source of truth; this only asks the daemon to read it.
    ConsentChanged {
        /// The product whose consent changed.
        product: String,
        /// The host CLI's version, for the `telemetry_off` event.
        build: String,
    },
    /// `[4]` List stored events, oldest first, one page at a time.
    Show {
        /// Only this product, or all.
        product: Option<String>,
        /// Start after this sequence number (0 for the beginning).
        after_seq: i64,
    },
    /// `[5]` Delete stored events that are not yet uploaded.
    Purge {
        /// Only this product, or all.
        product: Option<String>,
    },
    /// `[6]` Check that each destination can be reached and would accept a
    /// batch, writing nothing (`telemetryctl doctor`).
    Probe,
    /// `[7]` Forget `product` on this machine: delete its stored events,
    /// record a `telemetry_forget` marker under its current anonymous ID
    /// (only when it is `on`), then give it a new ID.
    Forget {
        /// The product.
        product: String,
        /// The host CLI's version, for the marker event.
        build: String,
    },
    /// `[8]` Upload receipts, oldest first, a page at a time; with `key`,
    /// the events of that receipt's batch instead (while its body is
    /// kept), from line `after` on.
    Receipts {
        /// The receipt whose events to list; `None` lists receipts.
        key: Option<String>,
        /// Start after this receipt sequence number, or (with `key`) at
        /// this line index; 0 for the beginning.
        after: u64,
    },
    /// `[9]` Shut down as on SIGTERM: stop taking connections, finish what
    /// is in flight, make a last upload, close the store. Answered
    /// [`Response::Stopping`] before that begins, or [`ErrorCode::Supervised`]
    /// when a service manager runs the daemon (it would start it again).
    Stop,
}

/// The daemon's reply to one [`Request`]. (JSON: the variant's snake_case
/// name as the key.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// `[0]` The events are committed to disk.
    Ack {
        /// Events newly stored.
        accepted: u32,
        /// Events whose id was already stored (kept once).
        duplicates: u32,
    },
    /// `[1]` The events were accepted but not yet committed (`ack = false`).
    Queued {
        /// Events handed to the store.
        accepted: u32,
    },
    /// `[2]` Reply to [`Request::Status`]. (Boxed only to keep the enum
    /// small in memory; the wire format is the report itself.)
    Status(Box<StatusReport>),
    /// `[3]` Reply to [`Request::Flush`].
    Flushed(FlushReport),
    /// `[4]` The request failed; nothing it asked for happened unless the
    /// message says otherwise.
    Error {
        /// Machine-readable kind.
        code: ErrorCode,
        /// What failed and what to do, for people.
        message: String,
    },
    /// `[5]` Reply to [`Request::ConsentChanged`].
    ConsentApplied(ConsentReport),
    /// `[6]` Reply to [`Request::Show`].
    Events(EventsPage),
    /// `[7]` Reply to [`Request::Purge`].
    Purged {
        /// Events deleted.
        events: u64,
    },
    /// `[8]` Reply to [`Request::Probe`].
    Probed(ProbeReport),
    /// `[9]` Reply to [`Request::Forget`]. (Boxed, like `Status`, to
    /// keep the enum small; the wire format is the report itself.)
    Forgotten(Box<ForgetReport>),
    /// `[10]` Reply to [`Request::Receipts`].
    Receipts(ReceiptsPage),
    /// `[11]` Reply to [`Request::Stop`]: the daemon is shutting down.
    Stopping {
        /// Its process ID, to wait for.
        pid: u32,
    },
}

/// A product's consent as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct ProductConsent {
    /// Product name.
    pub product: String,
    /// Effective mode.
    pub mode: Mode,
    /// The layer that decided it.
    pub layer: Layer,
    /// The product's manifest file (or `built-in NAME.toml`); empty when
    /// the daemon has none for it.
    #[serde(default)]
    pub manifest: String,
    /// Why the product's manifest could not be used (names the file and
    /// line): its events are refused until it is fixed.
    #[serde(default)]
    pub manifest_error: Option<String>,
    /// The manifest's catalogue version (`consent.version`); 0 when unknown.
    #[serde(default)]
    pub version: u32,
    /// The manifest version the user's decision was given for; 0 when the
    /// decision records none (given before versions, or undecided).
    #[serde(default)]
    pub consented_version: u32,
    /// Events the manifest has that the user has not consented to upload
    /// (added by a newer version, or given a new kind of field by it): they
    /// are kept on this machine, as in `local`, until the user decides again.
    #[serde(default)]
    pub new_events: Vec<String>,
    /// What the usable manifest has that this daemon ignores or that its
    /// events cannot meet (an unknown key, a `max_len` over the protocol's
    /// limit, `[event.x]` for `[events.x]`): for its vendor.
    #[serde(default)]
    pub manifest_warnings: Vec<String>,
}
record!(ProductConsent);

impl ProductConsent {
    /// A product's consent with nothing known about its manifest.
    pub fn new(product: String, mode: Mode, layer: Layer) -> ProductConsent {
        ProductConsent {
            product,
            mode,
            layer,
            manifest: String::new(),
            manifest_error: None,
            version: 0,
            consented_version: 0,
            new_events: Vec::new(),
            manifest_warnings: Vec::new(),
        }
    }
}

/// Reply to [`Request::ConsentChanged`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct ConsentReport {
    /// The product's consent now.
    pub consent: ProductConsent,
    /// Events deleted because the product was turned off.
    pub purged: u64,
    /// Whether a final `telemetry_off` event was recorded for upload.
    pub final_event: bool,
    /// The consent file the daemon reads (a client that wrote another one
    /// is told so).
    pub file: String,
}
record!(ConsentReport);

/// Where a shown event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventState {
    /// `[0]` Sealed into a batch: goes out with the next upload.
    Sealed,
    /// `[1]` Waiting to be sealed into a batch.
    Pending,
    /// `[2]` Kept on this machine only (recorded in `local` mode).
    LocalOnly,
    /// `[3]` Recorded while allowed, but uploading it is not allowed now
    /// (an administrator's or the environment's off, or its product's
    /// manifest is gone or broken): kept, not sent.
    Withheld,
}

/// One stored event, exactly as it will be uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct ShownEvent {
    /// Store sequence number (a counter line carries its batch's last
    /// event's, so it is not unique: see `counter`).
    pub seq: i64,
    /// Where it stands.
    pub state: EventState,
    /// The object key it will be uploaded under, once sealed.
    pub batch_key: Option<String>,
    /// The NDJSON line, byte for byte (without the newline).
    pub line: String,
    /// This is no stored event but the `telemetry_dropped` line a sealed
    /// batch carries after its events (the count of events a full store
    /// dropped), shown because it is uploaded too.
    #[serde(default)]
    pub counter: bool,
}
record!(ShownEvent);

/// One page of [`Request::Show`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct EventsPage {
    /// Events in sequence order.
    pub events: Vec<ShownEvent>,
    /// Pass as `after_seq` for the next page; `None` when this was the last.
    pub next_after_seq: Option<i64>,
}
record!(EventsPage);

/// Kinds of [`Response::Error`]. (JSON: the snake_case names its
/// `Display` prints, e.g. `"not_in_catalogue"`.)
///
/// Open: new codes are inserted before `Unknown` (which is never sent, so
/// its index may move), and a peer that does not know a code reads it as
/// [`ErrorCode::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// `[0]` The frame could not be decoded.
    Malformed,
    /// `[1]` The frame body is longer than [`MAX_FRAME_LEN`].
    FrameTooLarge,
    /// `[2]` The frame's protocol version is not supported.
    UnsupportedVersion,
    /// `[3]` An event failed validation.
    Invalid,
    /// `[4]` The store could not commit (disk full, I/O error).
    Storage,
    /// `[5]` An upload failed (for `Flush`).
    Upload,
    /// `[6]` The daemon is shutting down.
    ShuttingDown,
    /// `[7]` Anything else.
    Internal,
    /// `[8]` The product's consent is `off`: nothing is recorded.
    ConsentOff,
    /// `[9]` The event, a data key or a value is not in the product's
    /// catalogue.
    NotInCatalogue,
    /// `[10]` The daemon has as many connections as it serves at once; try
    /// again shortly.
    Busy,
    /// `[11]` This peer may not make this request (show, purge, flush and
    /// consent are for the daemon's own user and root).
    PermissionDenied,
    /// `[12]` The store is at `max_store_bytes` and nothing older can make
    /// room; the events were not stored.
    StoreFull,
    /// `[13]` A service manager (systemd, launchd, Windows' service control
    /// manager) runs this daemon, so `Stop` is refused: it would be started
    /// again at the next connection. The message says how to stop it there.
    Supervised,
    /// `[14]` A code this side does not know (sent by a newer peer). Never
    /// sent, so its index may move: new codes go before it.
    #[serde(other)]
    Unknown,
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Invalid => "invalid",
            ErrorCode::Storage => "storage",
            ErrorCode::Upload => "upload",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
            ErrorCode::ConsentOff => "consent_off",
            ErrorCode::NotInCatalogue => "not_in_catalogue",
            ErrorCode::Busy => "busy",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::StoreFull => "store_full",
            ErrorCode::Unknown => "unknown",
            ErrorCode::Supervised => "supervised",
        };
        f.write_str(s)
    }
}

/// What `telemetryctl status` shows.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct StatusReport {
    /// The daemon's version (`CARGO_PKG_VERSION`).
    pub daemon_version: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// Where batches go: `s3://bucket/prefix` or `outbox:/path`. Never
    /// contains credentials.
    pub destination: String,
    /// Events stored and not yet uploaded (including sealed ones).
    pub pending_events: u64,
    /// Bytes of NDJSON those events render to.
    pub pending_bytes: u64,
    /// Batches sealed and waiting for upload.
    pub sealed_batches: u64,
    /// Events uploaded since the daemon started.
    pub uploaded_events: u64,
    /// Time of the last successful upload (µs since the epoch).
    pub last_upload_us: Option<i64>,
    /// Key of the last object written.
    pub last_upload_key: Option<String>,
    /// The last upload error, if the last attempt failed.
    pub last_error: Option<String>,
    /// When the next upload attempt is due (µs since the epoch).
    pub next_attempt_us: Option<i64>,
    /// Consecutive failed upload attempts.
    pub consecutive_failures: u32,
    /// Events kept on this machine only (`local` mode).
    pub local_events: u64,
    /// Consent of every known product (catalogued or in the consent
    /// files), as the daemon sees it (its own environment, not the caller's).
    pub consent: Vec<ProductConsent>,
    /// The user consent file the daemon reads.
    pub consent_file: String,
    /// Problems recovered from since start (e.g. a damaged database moved
    /// aside).
    pub incidents: Vec<String>,
    /// Events dropped to stay under the size limit, per product, not yet
    /// reported upstream (they go out as a `telemetry_dropped` count).
    pub dropped: Vec<(String, u64)>,
    /// Requests refused since the daemon started (an emit, however many
    /// events it carries, or one spooled event counts once; `busy` and
    /// `malformed` count connections), by product and reason, largest first.
    #[serde(default)]
    pub refusals: Vec<RefusalCount>,
    /// When the next upload is due without anyone asking (µs since the
    /// epoch): the retry time after a failure, else when the oldest
    /// uploadable event reaches the upload interval, or when a daemon with
    /// an idle exit would exit (and upload first) if no other client came,
    /// whichever is sooner; `None` when nothing is waiting to be uploaded.
    #[serde(default)]
    pub next_upload_us: Option<i64>,
    /// Every destination batches go to (the daemon's own first, then those
    /// products' manifests name), each with its own progress and errors.
    /// The flat fields above sum them up for older readers.
    #[serde(default)]
    pub destinations: Vec<DestinationStatus>,
    /// What happened to events since the daemon started.
    #[serde(default)]
    pub counters: Counters,
}

/// Event counts since the daemon started, in [`StatusReport::counters`]:
/// where every event that reached this machine's daemon went.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Counters {
    /// Events clients sent in emit requests (however they were answered).
    pub received: u64,
    /// Events newly stored from emit requests; for emits without an
    /// acknowledgement, the events queued (duplicates among them, or a
    /// commit that fails later, are not known there).
    pub stored: u64,
    /// Events whose id was already stored (sent twice: kept once).
    pub duplicates: u64,
    /// Events of emit requests refused (see [`StatusReport::refusals`] for
    /// why, which counts spooled events refused at intake too).
    pub refused: u64,
    /// Events read from the spools shims wrote while the daemon was not
    /// reachable.
    pub spooled: u64,
    /// Of those, events newly stored (the rest were duplicates, or refused
    /// by the catalogue or consent at intake).
    pub taken_in: u64,
    /// Events shims dropped because the spool was full (reported by the
    /// shims in the spool's drop file, per product).
    pub spool_full_drops: Vec<(String, u64)>,
    /// Events dropped to stay under `max_store_bytes` since start.
    pub store_full_drops: u64,
    /// Events kept on this machine only (`local`) dropped to stay under
    /// `max_store_bytes`, per product, largest first: kept across restarts
    /// (unlike the rest of `Counters`; a purge or forget clears its
    /// product's), and not in `store_full_drops`, which counts what would
    /// have been uploaded. Never counted upstream, as nothing of a `local`
    /// product leaves, so said here, or they would go unseen.
    #[serde(default)]
    pub local_full_drops: Vec<(String, u64)>,
}
record!(Counters);

/// One destination in [`StatusReport::destinations`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct DestinationStatus {
    /// How it is named: `s3://bucket/prefix`, `outbox:/path` or a broker's
    /// URL. Never contains credentials.
    pub destination: String,
    /// How uploads authenticate: `aws` (the operator's AWS chain),
    /// `anonymous`, `broker` or `outbox`.
    pub auth: String,
    /// Products whose manifests send their batches here now.
    pub products: Vec<String>,
    /// Sealed batches waiting to go here that consent allows to upload.
    pub pending_batches: u64,
    /// Events uploaded here since the daemon started.
    pub uploaded_events: u64,
    /// Compressed bytes uploaded here since the daemon started.
    pub uploaded_bytes: u64,
    /// Batches found already there since start (a replay after a lost
    /// answer; counted as delivered).
    pub already_there: u64,
    /// Time of the last successful upload here (µs since the epoch).
    pub last_upload_us: Option<i64>,
    /// The last error here, if the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt here is due after a failure (µs).
    pub next_attempt_us: Option<i64>,
    /// Consecutive failed attempts here.
    pub consecutive_failures: u32,
    /// Products this destination said are retired (HTTP 410), with the
    /// events dropped for them: nothing more is uploaded for them.
    pub retired: Vec<(String, u64)>,
    /// Batches delivered here since the daemon started, one object each
    /// (`already_there` of them were there already).
    #[serde(default)]
    pub uploads: u64,
    /// Events of batches this destination refused for good (every build in
    /// them retired by the vendor, or their day past its window), kept
    /// across restarts: dropped here, and not counted as the store's drops.
    #[serde(default)]
    pub refused_events: u64,
    /// Why the latest such batch was refused (the destination's words,
    /// made safe to print).
    #[serde(default)]
    pub refused_why: Option<String>,
}
record!(DestinationStatus);

/// How many requests the daemon refused for one product and reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct RefusalCount {
    /// The product named by the refused events; empty when the request was
    /// refused before it was read (`busy`, `malformed`).
    pub product: String,
    /// Why: the code of the error reply (`not_in_catalogue`,
    /// `consent_off`, `invalid`, `store_full`, `storage`, `busy`,
    /// `malformed`, ...).
    pub code: ErrorCode,
    /// Refused requests since the daemon started.
    pub count: u64,
    /// The event of the latest of them ("" when it named none).
    #[serde(default)]
    pub last_event: String,
    /// The message the latest of them was answered with (what `--strict`
    /// prints), on one line with control characters escaped, cut after
    /// [`REFUSAL_MESSAGE_MAX`] of its characters; "" from a daemon before
    /// this field.
    #[serde(default)]
    pub last_message: String,
}
record!(RefusalCount);

/// Longest [`RefusalCount::last_message`], in characters.
pub const REFUSAL_MESSAGE_MAX: usize = 300;

record!(StatusReport);

/// Reply to [`Request::Flush`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct FlushReport {
    /// Object keys written by this flush, in upload order.
    pub keys: Vec<String>,
    /// Events those objects hold.
    pub events: u64,
    /// Compressed bytes uploaded.
    pub bytes: u64,
}
record!(FlushReport);

/// How one doctor check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckOutcome {
    /// `[0]` Fine.
    Pass,
    /// `[1]` Works, but something needs attention.
    Warn,
    /// `[2]` Broken: uploads (or whatever the check names) will fail.
    Fail,
}

/// One check, with what to do when it did not pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Check {
    /// What was checked, e.g. `dns`, `tls`, `credentials`, `clock`.
    pub name: String,
    /// How it came out.
    pub outcome: CheckOutcome,
    /// What was found.
    pub detail: String,
    /// What to do about it; empty when it passed.
    pub fix: String,
}
record!(Check);

impl Check {
    /// A passed check.
    pub fn pass(name: impl Into<String>, detail: String) -> Check {
        Check {
            name: name.into(),
            outcome: CheckOutcome::Pass,
            detail,
            fix: String::new(),
        }
    }

    /// A warning, with what to do.
    pub fn warn(name: impl Into<String>, detail: String, fix: String) -> Check {
        Check {
            name: name.into(),
            outcome: CheckOutcome::Warn,
            detail,
            fix,
        }
    }

    /// A failure, with what to do.
    pub fn fail(name: impl Into<String>, detail: String, fix: String) -> Check {
        Check {
            name: name.into(),
            outcome: CheckOutcome::Fail,
            detail,
            fix,
        }
    }
}

/// One destination's checks in a [`ProbeReport`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct DestinationProbe {
    /// As [`DestinationStatus::destination`] names it.
    pub destination: String,
    /// As [`DestinationStatus::auth`].
    pub auth: String,
    /// Products that send their batches here.
    pub products: Vec<String>,
    /// The checks, in the order they were made (a failed one may end the
    /// list: no TLS check after DNS failed).
    pub checks: Vec<Check>,
    /// The destination's clock minus ours, in seconds (from its `Date`
    /// header), when it answered.
    pub clock_skew_secs: Option<i64>,
}
record!(DestinationProbe);

/// Reply to [`Request::Probe`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct ProbeReport {
    /// Every destination the daemon uploads to, its own first.
    pub destinations: Vec<DestinationProbe>,
}
record!(ProbeReport);

/// Reply to [`Request::Forget`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct ForgetReport {
    /// The product.
    pub product: String,
    /// Stored events deleted (not yet uploaded, local-only and withheld).
    pub purged: u64,
    /// Whether a `telemetry_forget` marker was recorded for upload under
    /// the old ID (only when the product is `on` and not retired by its
    /// vendor).
    pub marker: bool,
    /// The object key the marker was uploaded under, when the upload
    /// right after succeeded (else it goes with the next upload).
    pub marker_key: Option<String>,
    /// The anonymous ID the product had (64 hex digits): when no marker
    /// could be sent, the user passes it to the vendor by other means.
    pub old_machine: String,
    /// The product's new anonymous ID.
    pub new_machine: String,
}
record!(ForgetReport);

/// One uploaded object, as kept by the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Receipt {
    /// Receipt sequence number (pass as `after` for the next page).
    pub seq: u64,
    /// Where it went, as [`DestinationStatus::destination`] names it.
    pub destination: String,
    /// The object key.
    pub key: String,
    /// SHA-256 of the object's bytes (the compressed body), lowercase hex.
    pub sha256: String,
    /// The object's size in bytes.
    pub bytes: u64,
    /// Events in it.
    pub events: u64,
    /// When it was uploaded (µs since the epoch).
    pub uploaded_us: i64,
    /// Whether the body is still kept, so its events can be listed.
    pub body_kept: bool,
    /// Whether the destination already had it (a replay): no new object
    /// was written.
    pub already_there: bool,
}
record!(Receipt);

/// Reply to [`Request::Receipts`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct ReceiptsPage {
    /// Receipts in sequence order (without `key`), or the one asked for.
    pub receipts: Vec<Receipt>,
    /// With `key`: the batch's NDJSON lines, from the line asked for.
    pub lines: Vec<String>,
    /// Pass as `after` for the next page; `None` when this was the last.
    pub next_after: Option<u64>,
    /// Most receipts kept (older ones are dropped).
    pub max_receipts: u64,
}
record!(ReceiptsPage);
