//! Property tests: every message survives encoding, and no input — however
//! malformed, however it is split across reads — makes decoding panic.

use bytes::BytesMut;
use proptest::prelude::*;
use std::collections::BTreeMap;
use telemetry_proto::*;
use tokio_util::codec::{Decoder, Encoder};

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,20}"
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        ".{0,40}".prop_map(Value::Str),
        any::<i64>().prop_map(Value::Int),
        any::<bool>().prop_map(Value::Bool),
    ]
}

fn event() -> impl Strategy<Value = WireEvent> {
    (
        any::<u128>(),
        name(),
        name(),
        "[A-Za-z0-9.+_-]{1,20}",
        any::<i64>(),
        proptest::collection::btree_map(name(), value(), 0..6),
    )
        .prop_map(
            |(id, event, product, build, timestamp_us, data)| WireEvent {
                id: uuid::Uuid::from_u128(id),
                event,
                product,
                build,
                timestamp_us,
                data: data.into_iter().collect::<BTreeMap<_, _>>(),
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (proptest::collection::vec(event(), 0..8), any::<bool>())
            .prop_map(|(events, ack)| Request::Emit { events, ack }),
        Just(Request::Status),
        Just(Request::Flush),
        (name(), "[a-z0-9.]{0,10}")
            .prop_map(|(product, build)| Request::ConsentChanged { product, build }),
        (proptest::option::of(name()), any::<i64>())
            .prop_map(|(product, after_seq)| Request::Show { product, after_seq }),
        proptest::option::of(name()).prop_map(|product| Request::Purge { product }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn requests_round_trip(req in request()) {
        let frame = encode_frame(&req).unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        prop_assert_eq!(len + 4, frame.len());
        let back: Request = decode_body(&frame[4..]).unwrap();
        prop_assert_eq!(back, req);
    }

    #[test]
    fn requests_round_trip_through_the_codec_in_pieces(
        reqs in proptest::collection::vec(request(), 1..5),
        cut in any::<usize>(),
    ) {
        let mut enc = FrameCodec::<Response, Request>::new();
        let mut wire = BytesMut::new();
        for r in &reqs {
            enc.encode(r.clone(), &mut wire).unwrap();
        }
        let mut dec = FrameCodec::<Request, Response>::new();
        let cut = cut % (wire.len() + 1);
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut got = Vec::new();
        while let Some(r) = dec.decode(&mut buf).unwrap() {
            got.push(r);
        }
        buf.extend_from_slice(&wire[cut..]);
        while let Some(r) = dec.decode(&mut buf).unwrap() {
            got.push(r);
        }
        prop_assert_eq!(got, reqs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_body::<Request>(&bytes);
        let _ = decode_body::<Response>(&bytes);
        let mut dec = FrameCodec::<Request, Response>::new();
        let mut buf = BytesMut::from(&bytes[..]);
        // Either frames, an error, or a wait for more: never a panic.
        while let Ok(Some(_)) = dec.decode(&mut buf) {}
    }

    #[test]
    fn validation_never_panics(ev in event()) {
        let _ = validate_event(&ev, &Limits::default());
    }
}
