//! What the daemon does with a decoded request before it touches the store:
//! event validation, the event catalogue, and rendering the stored line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemetry_proto::{decode_body, validate_event, Limits, Request};
use telemetryd::catalog::Catalogues;

fuzz_target!(|data: &[u8]| {
    let Ok(Request::Emit { events, .. }) = decode_body::<Request>(data) else {
        return;
    };
    let catalogues = Catalogues::load(std::path::Path::new("/nonexistent")).unwrap();
    let limits = Limits::default();
    let _ = limits.check_batch_len(events.len());
    for ev in &events {
        if validate_event(ev, &limits).is_ok() && catalogues.check(ev).is_ok() {
            let line = telemetryd::record::render(ev, "0123abcd", "linux", "x86_64").line;
            assert!(!line.contains('\n'), "a stored line is one line");
        }
    }
});
