//! JSON lines: the same messages as the binary frames, one JSON object a
//! line, for clients that would rather not write postcard (`nc -U`, shell
//! scripts, the Go, Node and Python SDKs).
//!
//! A connection's first byte chooses its encoding for both directions: `{`
//! or ASCII whitespace starts a JSON-lines conversation; anything else is
//! read as binary frames (a frame starts with its 4-byte big-endian length,
//! whose first byte is `0x00` for every frame under 16 MiB, and frames are
//! capped far below that), so damaged binary input still gets a binary
//! error reply. See the crate docs, [JSON lines](crate#json-lines), for the
//! format and examples.

use crate::codec::{CodecError, FrameCodec};
use crate::{MAX_FRAME_LEN, PROTOCOL_VERSION};
use bytes::{Buf, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value as Json};
use tokio_util::codec::{Decoder, Encoder};

/// Longest JSON line accepted in either direction, newline included.
///
/// JSON spells out what postcard packs (keys, quoted UUIDs, decimal
/// numbers), so the same events take about twice the bytes; a line may be
/// twice [`MAX_FRAME_LEN`]. The limits on events themselves
/// ([`crate::Limits`]) are the same in both encodings.
pub const MAX_LINE_LEN: usize = 2 * MAX_FRAME_LEN;

/// Longest piece of a peer's input quoted back in an error message, so an
/// error line always fits a line.
const MAX_QUOTED: usize = 300;

/// How a connection's messages are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Length-prefixed postcard frames.
    Binary,
    /// One JSON object a line.
    Json,
}

impl Encoding {
    /// The encoding a connection whose first byte is `first` speaks: `{`
    /// or ASCII whitespace starts JSON lines, anything else binary frames
    /// (whose first byte is `0x00`).
    pub fn detect(first: u8) -> Encoding {
        if first == b'{' || first.is_ascii_whitespace() {
            Encoding::Json
        } else {
            Encoding::Binary
        }
    }

    /// `msg` as one message in this encoding (a whole frame, or a line
    /// with its newline).
    pub fn encode<T: Serialize>(self, msg: &T) -> Result<Vec<u8>, CodecError> {
        self.encode_as(msg, PROTOCOL_VERSION)
    }

    /// [`Encoding::encode`] in protocol `version` (a reply in its
    /// request's).
    pub fn encode_as<T: Serialize>(self, msg: &T, version: u16) -> Result<Vec<u8>, CodecError> {
        match self {
            Encoding::Binary => crate::encode_frame_as(msg, version),
            Encoding::Json => encode_line_as(msg, version),
        }
    }
}

/// A `Malformed` error whose message, which may quote the peer's input,
/// is cut to [`MAX_QUOTED`] bytes.
fn malformed(what: impl std::fmt::Display) -> CodecError {
    let mut text = what.to_string();
    if text.len() > MAX_QUOTED {
        let mut cut = MAX_QUOTED;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    CodecError::Malformed(text)
}

/// Encode a [`crate::Request`] or [`crate::Response`] as one JSON line:
/// `{"v":2,"<variant>":<fields>}` and a newline.
pub fn encode_line<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    encode_line_as(msg, PROTOCOL_VERSION)
}

/// [`encode_line`] in protocol `version` (a reply in its request's).
pub fn encode_line_as<T: Serialize>(msg: &T, version: u16) -> Result<Vec<u8>, CodecError> {
    let (name, body) = match serde_json::to_value(msg).map_err(malformed)? {
        // A unit variant (`Status`) is its bare name in serde's form.
        Json::String(name) => (name, Json::Object(Map::new())),
        Json::Object(map) if map.len() == 1 => map.into_iter().next().expect("one entry"),
        other => return Err(malformed(format!("not a message: {other}"))),
    };
    let mut out = format!("{{\"v\":{version},").into_bytes();
    serde_json::to_writer(&mut out, &name).map_err(malformed)?;
    out.push(b':');
    serde_json::to_writer(&mut out, &body).map_err(malformed)?;
    out.extend_from_slice(b"}\n");
    if out.len() > MAX_LINE_LEN {
        return Err(CodecError::FrameTooLarge {
            len: out.len(),
            max: MAX_LINE_LEN,
        });
    }
    Ok(out)
}

/// Decode one JSON line (without or with its newline): check `"v"`, then
/// read the one other key as the message's variant and its value as the
/// fields. A unit variant may be written `{"v":2,"status":{}}` or with
/// `null`.
pub fn decode_line<T: DeserializeOwned>(line: &[u8]) -> Result<T, CodecError> {
    decode_line_versioned(line).map(|(msg, _)| msg)
}

/// [`decode_line`], and the protocol version it was written in.
pub fn decode_line_versioned<T: DeserializeOwned>(line: &[u8]) -> Result<(T, u16), CodecError> {
    if line.len() > MAX_LINE_LEN {
        return Err(CodecError::FrameTooLarge {
            len: line.len(),
            max: MAX_LINE_LEN,
        });
    }
    let mut map: Map<String, Json> = serde_json::from_slice(line.trim_ascii())
        .map_err(|e| malformed(format!("not a JSON object: {e}")))?;
    let version = match map.remove("v") {
        None => {
            return Err(malformed(format!(
                "no \"v\": every line names the protocol version, e.g. {{\"v\":{PROTOCOL_VERSION},\"status\":{{}}}}"
            )))
        }
        Some(v) => match v.as_u64() {
            Some(got) if crate::reads_version(got) => got as u16,
            Some(got) => {
                return Err(CodecError::UnsupportedVersion {
                    got: u16::try_from(got).unwrap_or(u16::MAX),
                })
            }
            None => return Err(malformed(format!("\"v\" must be a whole number, not {v}"))),
        },
    };
    if map.len() != 1 {
        let keys: Vec<&String> = map.keys().collect();
        return Err(malformed(format!(
            "expected one message beside \"v\" (e.g. \"emit\" or \"status\"), found {keys:?}"
        )));
    }
    let (name, body) = map.into_iter().next().expect("one entry");
    // A message without fields may still be sent keys (unknown keys are
    // ignored, as in every message).
    let unit = matches!(&body, Json::Null | Json::Object(_));
    if unit {
        if let Ok(msg) = serde_json::from_value(Json::String(name.clone())) {
            return Ok((msg, version));
        }
    }
    let mut tagged = Map::new();
    tagged.insert(name.clone(), body);
    serde_json::from_value(Json::Object(tagged))
        .map(|msg| (msg, version))
        .map_err(|e| malformed(format!("\"{name}\": {e}")))
}

/// What [`WireCodec`] read.
#[derive(Debug)]
pub enum Decoded<T> {
    /// A message.
    Message(T),
    /// A JSON line that is not a valid message. The line is consumed, so
    /// the connection can go on: answer with an error and read the next.
    Bad(CodecError),
}

/// A `tokio_util` codec for both encodings: the first byte it sees picks
/// one for the connection, and replies are written in it (in binary until
/// something was read).
///
/// Errors it returns end the connection (a frame or line over the limit, a
/// damaged binary frame, an unsupported version); a JSON line that does not
/// decode is [`Decoded::Bad`] instead, since the next line starts cleanly.
pub struct WireCodec<In, Out> {
    encoding: Option<Encoding>,
    frames: FrameCodec<In, Out>,
    /// Bytes of the current line already searched for a newline.
    scanned: usize,
}

impl<In, Out> Default for WireCodec<In, Out> {
    fn default() -> Self {
        Self::new()
    }
}

impl<In, Out> WireCodec<In, Out> {
    /// A codec that learns its encoding from the first byte it reads.
    pub fn new() -> Self {
        WireCodec {
            encoding: None,
            frames: FrameCodec::new(),
            scanned: 0,
        }
    }

    /// A codec fixed to `encoding` (a client, or a reply to a peer whose
    /// first byte was read elsewhere).
    pub fn with_encoding(encoding: Encoding) -> Self {
        WireCodec {
            encoding: Some(encoding),
            ..Self::new()
        }
    }

    /// The connection's encoding, once known.
    pub fn encoding(&self) -> Option<Encoding> {
        self.encoding
    }

    /// The protocol version replies are written in: the last request's
    /// (rule 4 of the crate's Evolution).
    pub fn version(&self) -> u16 {
        self.frames.version()
    }

    /// Write in the version nearest `got` from now on.
    pub fn answer_in(&mut self, got: u16) {
        self.frames.answer_in(got);
    }
}

impl<In: DeserializeOwned, Out> WireCodec<In, Out> {
    fn next_line(
        &mut self,
        src: &mut BytesMut,
        eof: bool,
    ) -> Result<Option<Decoded<In>>, CodecError> {
        loop {
            let newline = src[self.scanned..].iter().position(|&b| b == b'\n');
            let end = match newline {
                Some(i) => self.scanned + i + 1,
                // A last line without its newline, from a peer that closed
                // its side (`printf ... | nc -U`), is still a line.
                None if eof && !src.is_empty() => src.len(),
                None => {
                    if src.len() > MAX_LINE_LEN {
                        return Err(CodecError::FrameTooLarge {
                            len: src.len(),
                            max: MAX_LINE_LEN,
                        });
                    }
                    self.scanned = src.len();
                    return Ok(None);
                }
            };
            self.scanned = 0;
            let line = src.split_to(end);
            if line.trim_ascii().is_empty() {
                continue;
            }
            return match decode_line_versioned(&line) {
                Ok((msg, version)) => {
                    self.frames.answer_in(version);
                    Ok(Some(Decoded::Message(msg)))
                }
                Err(CodecError::UnsupportedVersion { got }) => {
                    self.frames.answer_in(got);
                    Err(CodecError::UnsupportedVersion { got })
                }
                Err(e @ CodecError::FrameTooLarge { .. }) => Err(e),
                Err(e) => Ok(Some(Decoded::Bad(e))),
            };
        }
    }

    fn decode_any(
        &mut self,
        src: &mut BytesMut,
        eof: bool,
    ) -> Result<Option<Decoded<In>>, CodecError> {
        let encoding = match self.encoding {
            Some(e) => e,
            None => match src.first() {
                None => return Ok(None),
                Some(&b) => *self.encoding.insert(Encoding::detect(b)),
            },
        };
        match encoding {
            Encoding::Binary if eof => match self.frames.decode_eof(src) {
                Ok(m) => Ok(m.map(Decoded::Message)),
                Err(e) => {
                    src.advance(src.len());
                    Err(e)
                }
            },
            Encoding::Binary => Ok(self.frames.decode(src)?.map(Decoded::Message)),
            Encoding::Json => self.next_line(src, eof),
        }
    }
}

impl<In: DeserializeOwned, Out> Decoder for WireCodec<In, Out> {
    type Item = Decoded<In>;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Decoded<In>>, CodecError> {
        self.decode_any(src, false)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Decoded<In>>, CodecError> {
        self.decode_any(src, true)
    }
}

impl<In, Out: Serialize> Encoder<Out> for WireCodec<In, Out> {
    type Error = CodecError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), CodecError> {
        match self.encoding.unwrap_or(Encoding::Binary) {
            Encoding::Binary => self.frames.encode(item, dst),
            Encoding::Json => {
                dst.extend_from_slice(&encode_line_as(&item, self.frames.version())?);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode_frame;
    use crate::{ErrorCode, Request, Response, Value, WireEvent};
    use std::collections::BTreeMap;

    #[test]
    fn a_request_in_a_version_not_read_is_answered_in_the_nearest_one() {
        use crate::{answer_version, OLDEST_PROTOCOL_VERSION};
        assert_eq!(answer_version(PROTOCOL_VERSION), PROTOCOL_VERSION);
        assert_eq!(
            answer_version(OLDEST_PROTOCOL_VERSION),
            OLDEST_PROTOCOL_VERSION
        );
        assert_eq!(answer_version(u16::MAX), PROTOCOL_VERSION);
        assert_eq!(answer_version(1), OLDEST_PROTOCOL_VERSION);
        // What a codec that refused `input`'s version writes as its answer.
        let answer_to = |input: &[u8]| {
            let mut codec = WireCodec::<Request, Response>::new();
            let mut src = BytesMut::from(input);
            assert!(matches!(
                codec.decode(&mut src),
                Err(CodecError::UnsupportedVersion { .. })
            ));
            let mut out = BytesMut::new();
            codec
                .encode(
                    Response::Error {
                        code: ErrorCode::UnsupportedVersion,
                        message: "x".into(),
                    },
                    &mut out,
                )
                .unwrap();
            out
        };
        for (line, written) in [
            (&b"{\"v\":1,\"status\":{}}\n"[..], OLDEST_PROTOCOL_VERSION),
            (&b"{\"v\":99,\"status\":{}}\n"[..], PROTOCOL_VERSION),
        ] {
            let out = answer_to(line);
            let prefix = format!("{{\"v\":{written},");
            assert!(out.starts_with(prefix.as_bytes()), "{out:?}");
        }
        // The same for binary frames: the body's first varint.
        for (got, written) in [(1u8, OLDEST_PROTOCOL_VERSION), (99, PROTOCOL_VERSION)] {
            let out = answer_to(&[0, 0, 0, 2, got, 0]);
            assert_eq!(out[4], written as u8, "{out:?}");
        }
        assert!(crate::reads_version(u64::from(PROTOCOL_VERSION)));
        assert!(!crate::reads_version(u64::from(PROTOCOL_VERSION) + 1));
    }

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
    fn messages_are_one_object_a_line_with_the_version_first() {
        let line = encode_line(&Request::Emit {
            events: vec![event()],
            ack: true,
        })
        .unwrap();
        let text = String::from_utf8(line.clone()).unwrap();
        assert!(text.starts_with("{\"v\":2,\"emit\":{"), "{text}");
        assert!(text.ends_with("}\n") && text.matches('\n').count() == 1);
        assert!(
            text.contains(r#""data":{"count":-3,"ok":true,"plan":"small"}"#),
            "data is a plain object: {text}"
        );
        assert_eq!(
            decode_line::<Request>(&line).unwrap(),
            Request::Emit {
                events: vec![event()],
                ack: true
            }
        );
        assert_eq!(
            encode_line(&Request::Status).unwrap(),
            b"{\"v\":2,\"status\":{}}\n"
        );
        for unit in [
            &br#"{"v":2,"status":{}}"#[..],
            br#"{"status":null,"v":2}"#,
            br#"{"v":2,"status":{"from_a_newer_client":1}}"#,
        ] {
            assert_eq!(decode_line::<Request>(unit).unwrap(), Request::Status);
        }
        assert_eq!(
            decode_line::<Request>(br#"{"v":2,"purge":{}}"#).unwrap(),
            Request::Purge { product: None }
        );
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let err = |line: &[u8]| decode_line::<Request>(line).unwrap_err().to_string();
        assert!(err(b"{\"status\":{}}").contains("no \"v\""));
        assert!(err(b"hello").contains("not a JSON object"));
        assert!(err(br#"{"v":2}"#).contains("expected one message"));
        assert!(err(br#"{"v":2,"launch":{}}"#).contains("unknown variant"));
        assert!(err(br#"{"v":2,"emit":{"events":[],"ack":"yes"}}"#).contains("\"emit\""));
        assert!(matches!(
            decode_line::<Request>(br#"{"v":9,"status":{}}"#),
            Err(CodecError::UnsupportedVersion { got: 9 })
        ));
        let float = br#"{"v":2,"emit":{"events":[{"id":"01900000-0000-7000-8000-000000000001","event":"e","product":"p","build":"1","timestamp_us":1,"data":{"x":1.5}}],"ack":true}}"#;
        assert!(err(float).contains("whole number"), "{}", err(float));
    }

    #[test]
    fn the_codec_picks_the_encoding_from_the_first_byte_and_survives_a_bad_line() {
        let mut codec = WireCodec::<Request, Response>::new();
        let mut src =
            BytesMut::from(&b"\n{\"v\":2,\"status\":{}}\nnot json\n{\"v\":2,\"flush\":{}}"[..]);
        assert!(matches!(
            codec.decode(&mut src).unwrap(),
            Some(Decoded::Message(Request::Status))
        ));
        assert_eq!(codec.encoding(), Some(Encoding::Json));
        assert!(matches!(
            codec.decode(&mut src).unwrap(),
            Some(Decoded::Bad(_))
        ));
        assert!(codec.decode(&mut src).unwrap().is_none(), "no newline yet");
        assert!(matches!(
            codec.decode_eof(&mut src).unwrap(),
            Some(Decoded::Message(Request::Flush))
        ));
        let mut out = BytesMut::new();
        codec
            .encode(
                Response::Error {
                    code: ErrorCode::Busy,
                    message: "m".into(),
                },
                &mut out,
            )
            .unwrap();
        assert_eq!(
            &out[..],
            b"{\"v\":2,\"error\":{\"code\":\"busy\",\"message\":\"m\"}}\n"
        );

        let mut binary = WireCodec::<Request, Response>::new();
        let mut src = BytesMut::from(&encode_frame(&Request::Status).unwrap()[..]);
        assert!(matches!(
            binary.decode(&mut src).unwrap(),
            Some(Decoded::Message(Request::Status))
        ));
        assert_eq!(binary.encoding(), Some(Encoding::Binary));
    }

    #[test]
    fn a_line_over_the_limit_ends_the_connection() {
        let mut codec = WireCodec::<Request, Response>::new();
        let mut src = BytesMut::from(&vec![b'{'; MAX_LINE_LEN + 1][..]);
        assert!(matches!(
            codec.decode(&mut src),
            Err(CodecError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn only_json_looking_bytes_start_json_so_damaged_frames_get_frame_errors() {
        for b in [b'{', b' ', b'\n', b'\t', b'\r'] {
            assert_eq!(Encoding::detect(b), Encoding::Json, "{b}");
        }
        for b in [0u8, 4, 0xff, b'[', b'x'] {
            assert_eq!(Encoding::detect(b), Encoding::Binary, "{b}");
        }
    }

    #[test]
    fn an_error_quoting_a_huge_input_still_fits_a_line() {
        let name = "x".repeat(100_000);
        let line = format!(r#"{{"v":2,"{name}":{{}}}}"#);
        let err = decode_line::<Request>(line.as_bytes()).unwrap_err();
        let reply = encode_line(&Response::Error {
            code: ErrorCode::Malformed,
            message: err.to_string(),
        })
        .unwrap();
        assert!(reply.len() < 1024, "{}", reply.len());
    }
}
