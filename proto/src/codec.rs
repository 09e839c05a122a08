//! Frame encoding and decoding. Pure functions over bytes plus a
//! `tokio_util` codec; no sockets here.

use crate::{answer_version, MAX_FRAME_LEN, PROTOCOL_VERSION};
use bytes::{Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use std::marker::PhantomData;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec, LengthDelimitedCodecError};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The socket failed.
    #[error("i/o error on the telemetry socket: {0}")]
    Io(#[from] std::io::Error),
    /// The length prefix (or an outgoing body) exceeds [`MAX_FRAME_LEN`].
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Length announced or attempted (0 when the codec did not say).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body starts with a protocol version this side does not speak.
    #[error("unsupported protocol version {got} (this side speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// Version found in the frame.
        got: u16,
    },
    /// The body is not a valid postcard message of the expected type.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Encode `msg` as a frame body: version varint, then postcard.
pub fn encode_body<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    encode_body_as(msg, PROTOCOL_VERSION)
}

/// [`encode_body`] in protocol `version` (a reply in its request's).
pub fn encode_body_as<T: Serialize>(msg: &T, version: u16) -> Result<Vec<u8>, CodecError> {
    let mut out =
        postcard::to_stdvec(&version).map_err(|e| CodecError::Malformed(e.to_string()))?;
    let body = postcard::to_stdvec(msg).map_err(|e| CodecError::Malformed(e.to_string()))?;
    out.extend_from_slice(&body);
    if out.len() > MAX_FRAME_LEN {
        return Err(CodecError::FrameTooLarge {
            len: out.len(),
            max: MAX_FRAME_LEN,
        });
    }
    Ok(out)
}

/// The postcard length of `value`, without encoding it: how a client that
/// packs many events into one request keeps the frame under
/// [`MAX_FRAME_LEN`] (a request body is its events' lengths plus
/// [`EMIT_OVERHEAD`] at most).
pub fn encoded_len<T: Serialize>(value: &T) -> Result<usize, CodecError> {
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .map_err(|e| CodecError::Malformed(e.to_string()))
}

/// What an `Emit` request's body adds to its events' encoded lengths, at
/// most: the version, the variant, the event count (a varint of up to
/// three bytes below 2^21) and the `ack` flag.
pub const EMIT_OVERHEAD: usize = 1 + 1 + 3 + 1;

/// Encode `msg` as a whole frame: 4-byte big-endian length, then the body.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    encode_frame_as(msg, PROTOCOL_VERSION)
}

/// [`encode_frame`] in protocol `version` (a reply in its request's).
pub fn encode_frame_as<T: Serialize>(msg: &T, version: u16) -> Result<Vec<u8>, CodecError> {
    let body = encode_body_as(msg, version)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    // The length fits: encode_body refused anything over MAX_FRAME_LEN.
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Decode a frame body (without its length prefix), checking the version.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    decode_body_versioned(body).map(|(msg, _)| msg)
}

/// [`decode_body`], and the protocol version it was written in (one from
/// [`crate::OLDEST_PROTOCOL_VERSION`] to [`PROTOCOL_VERSION`]).
pub fn decode_body_versioned<T: DeserializeOwned>(body: &[u8]) -> Result<(T, u16), CodecError> {
    if body.len() > MAX_FRAME_LEN {
        return Err(CodecError::FrameTooLarge {
            len: body.len(),
            max: MAX_FRAME_LEN,
        });
    }
    let (version, rest): (u16, &[u8]) = postcard::take_from_bytes(body)
        .map_err(|e| CodecError::Malformed(format!("no protocol version: {e}")))?;
    if !crate::reads_version(u64::from(version)) {
        return Err(CodecError::UnsupportedVersion { got: version });
    }
    let (msg, trailing): (T, &[u8]) =
        postcard::take_from_bytes(rest).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !trailing.is_empty() {
        return Err(CodecError::Malformed(format!(
            "{} trailing bytes after the message",
            trailing.len()
        )));
    }
    Ok((msg, version))
}

/// A typed `tokio_util` codec: decodes frames into `In`, encodes `Out`.
///
/// The daemon uses `FrameCodec<Request, Response>`, an async client the
/// reverse. The length limit is enforced by `LengthDelimitedCodec` before it
/// reserves any buffer for the body.
pub struct FrameCodec<In, Out> {
    inner: LengthDelimitedCodec,
    /// True while the inner codec waits for a length prefix; it consumes the
    /// prefix before the body arrives, so only then can we peek at it.
    at_head: bool,
    /// The version messages are written in: the last one read's (a reply
    /// in its request's), [`PROTOCOL_VERSION`] until one is read.
    version: u16,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        Self::new()
    }
}

impl<In, Out> FrameCodec<In, Out> {
    /// A codec with the protocol's framing and [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .big_endian()
            .max_frame_length(MAX_FRAME_LEN)
            .new_codec();
        Self {
            inner,
            at_head: true,
            version: PROTOCOL_VERSION,
            _types: PhantomData,
        }
    }

    /// The version this codec writes in: the last message read's.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Write in the version nearest `got` from now on (a message read
    /// elsewhere, or one in a version this side does not read).
    pub fn answer_in(&mut self, got: u16) {
        self.version = answer_version(got);
    }
}

fn map_io(err: std::io::Error) -> CodecError {
    let too_long = err
        .get_ref()
        .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>());
    if too_long {
        CodecError::FrameTooLarge {
            len: 0,
            max: MAX_FRAME_LEN,
        }
    } else {
        CodecError::Io(err)
    }
}

impl<In: DeserializeOwned, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
        // Report the announced length of an oversized frame, which the inner
        // codec's error does not carry.
        let had_head = self.at_head && src.len() >= 4;
        if had_head {
            let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
            if len > MAX_FRAME_LEN {
                return Err(CodecError::FrameTooLarge {
                    len,
                    max: MAX_FRAME_LEN,
                });
            }
        }
        match self.inner.decode(src).map_err(map_io)? {
            Some(body) => {
                self.at_head = true;
                match decode_body_versioned(&body) {
                    Ok((msg, version)) => {
                        self.version = version;
                        Ok(Some(msg))
                    }
                    Err(e) => {
                        if let CodecError::UnsupportedVersion { got } = e {
                            self.answer_in(got);
                        }
                        Err(e)
                    }
                }
            }
            None => {
                if had_head {
                    self.at_head = false;
                }
                Ok(None)
            }
        }
    }
}

impl<In, Out: Serialize> Encoder<Out> for FrameCodec<In, Out> {
    type Error = CodecError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), CodecError> {
        let body = encode_body_as(&item, self.version)?;
        self.inner.encode(Bytes::from(body), dst).map_err(map_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, Request, Response, Value, WireEvent};
    use std::collections::BTreeMap;

    fn event() -> WireEvent {
        let mut data = BTreeMap::new();
        data.insert("plan".to_string(), Value::Str("small".into()));
        data.insert("count".to_string(), Value::Int(-3));
        data.insert("ok".to_string(), Value::Bool(true));
        WireEvent {
            id: uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
            event: "stop".into(),
            product: "cfdev".into(),
            build: "1.2.0".into(),
            timestamp_us: 1_700_000_000_000_000,
            data,
        }
    }

    #[test]
    fn an_emit_body_is_its_events_lengths_plus_at_most_the_overhead() {
        for n in [0usize, 1, 127, 128, 1000, 20_000] {
            let events = vec![event(); n];
            let sum: usize = events.iter().map(|e| encoded_len(e).unwrap()).sum();
            let body = encode_body(&Request::Emit { events, ack: true });
            match body {
                Ok(body) => {
                    assert!(body.len() > sum, "{n}");
                    assert!(
                        body.len() <= sum + EMIT_OVERHEAD,
                        "{n}: {} > {sum}+",
                        body.len()
                    );
                }
                Err(CodecError::FrameTooLarge { len, .. }) => {
                    assert!(len > sum && len <= sum + EMIT_OVERHEAD, "{n}")
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn request_round_trips_through_frame() {
        let req = Request::Emit {
            events: vec![event()],
            ack: true,
        };
        let frame = encode_frame(&req).unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        let back: Request = decode_body(&frame[4..]).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn documented_example_bytes_match() {
        let mut ev = event();
        ev.data.clear();
        let body = encode_body(&Request::Emit {
            events: vec![ev.clone()],
            ack: true,
        })
        .unwrap();
        // version, Emit, 1 event, uuid length 16 then its bytes.
        assert_eq!(&body[..4], &[0x02, 0x00, 0x01, 0x10]);
        assert_eq!(&body[4..20], ev.id.as_bytes());
        assert_eq!(&body[20..25], b"\x04stop");
        assert_eq!(&body[25..31], b"\x05cfdev");
        assert_eq!(&body[31..37], b"\x051.2.0");
        // data: 0 entries, then ack = true, at the very end.
        assert_eq!(&body[body.len() - 2..], &[0x00, 0x01]);
    }

    #[test]
    fn documented_record_example_bytes_match() {
        let body = encode_body(&Response::Flushed(crate::FlushReport {
            keys: vec!["k".into()],
            events: 3,
            bytes: 200,
        }))
        .unwrap();
        assert_eq!(body, [0x02, 0x03, 0x06, 0x01, 0x01, b'k', 0x03, 0xc8, 0x01]);
    }

    #[test]
    fn wrong_version_is_reported() {
        let mut body = encode_body(&Request::Status).unwrap();
        body[0] = 0x09;
        match decode_body::<Request>(&body) {
            Err(CodecError::UnsupportedVersion { got: 9 }) => {}
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
    }

    #[test]
    fn trailing_bytes_and_garbage_are_malformed() {
        let mut body = encode_body(&Request::Status).unwrap();
        body.push(0);
        assert!(matches!(
            decode_body::<Request>(&body),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            decode_body::<Request>(&[0x02, 0x7f]),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            decode_body::<Request>(&[]),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn codec_rejects_oversized_length_before_reading_body() {
        let mut codec = FrameCodec::<Request, Response>::new();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&u32::MAX.to_be_bytes());
        match codec.decode(&mut buf) {
            Err(CodecError::FrameTooLarge { len, max }) => {
                assert_eq!(len, u32::MAX as usize);
                assert_eq!(max, MAX_FRAME_LEN);
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
    }

    #[test]
    fn codec_accepts_frame_at_the_limit_and_waits_for_partial_frames() {
        let mut codec = FrameCodec::<Response, Response>::new();
        let msg = Response::Error {
            code: ErrorCode::Internal,
            message: String::new(),
        };
        let overhead = encode_body(&msg).unwrap().len();
        let big = Response::Error {
            code: ErrorCode::Internal,
            // A length varint of 3 bytes replaces the 1-byte empty length.
            message: "x".repeat(MAX_FRAME_LEN - overhead - 2),
        };
        let mut buf = BytesMut::new();
        codec.encode(big.clone(), &mut buf).unwrap();
        assert_eq!(buf.len(), 4 + MAX_FRAME_LEN);
        let mut partial = buf.split_to(buf.len() - 1);
        assert!(codec.decode(&mut partial).unwrap().is_none());
        partial.unsplit(buf);
        assert_eq!(codec.decode(&mut partial).unwrap(), Some(big));

        let too_big = Response::Error {
            code: ErrorCode::Internal,
            message: "x".repeat(MAX_FRAME_LEN),
        };
        assert!(matches!(
            codec.encode(too_big, &mut BytesMut::new()),
            Err(CodecError::FrameTooLarge { .. })
        ));
    }
}
