//! The daemon's frame decoder on arbitrary bytes, fed in arbitrary pieces:
//! it may return frames, errors or "need more", never panic or allocate
//! past the frame limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use telemetry_proto::{FrameCodec, Request, Response};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| *b as usize) % (data.len() + 1);
    let mut codec = FrameCodec::<Request, Response>::new();
    let mut buf = BytesMut::from(&data[..split]);
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break,
        }
    }
    buf.extend_from_slice(&data[split..]);
    while let Ok(Some(_)) = codec.decode(&mut buf) {}
});
