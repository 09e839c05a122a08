//! The messages of `vectors/protocol.json` (shared by the example that
//! writes it and the test that checks it).

use std::collections::BTreeMap;
use telemetry_proto::*;

fn event(n: u128, name: &str, data: &[(&str, Value)]) -> WireEvent {
    WireEvent {
        id: uuid::Uuid::from_u128(0x0190_f5c2_7b1e_7000_8000_0000_0000_0000 | n),
        event: name.into(),
        product: "cfdev".into(),
        build: "1.2.0".into(),
        timestamp_us: 1_700_000_000_000_000 + n as i64,
        data: data
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// Every request, named.
pub fn requests() -> Vec<(&'static str, Request)> {
    vec![
        (
            "emit_ack_with_data",
            Request::Emit {
                events: vec![event(
                    1,
                    "app_created",
                    &[
                        ("buildpack", Value::Str("go".into())),
                        ("count", Value::Int(-3)),
                        ("ok", Value::Bool(true)),
                        ("note", Value::Str("quote \" and é".into())),
                    ],
                )],
                ack: true,
            },
        ),
        (
            "emit_no_wait_two_events",
            Request::Emit {
                events: vec![event(2, "start_begin", &[]), event(3, "stop", &[])],
                ack: false,
            },
        ),
        ("status", Request::Status),
        ("flush", Request::Flush),
        (
            "consent_changed",
            Request::ConsentChanged {
                product: "cfdev".into(),
                build: "1.2.0".into(),
            },
        ),
        (
            "show_product",
            Request::Show {
                product: Some("cfdev".into()),
                after_seq: 10,
            },
        ),
        (
            "show_all",
            Request::Show {
                product: None,
                after_seq: 0,
            },
        ),
        ("purge_all", Request::Purge { product: None }),
        ("probe", Request::Probe),
        (
            "forget",
            Request::Forget {
                product: "cfdev".into(),
                build: "1.2.0".into(),
            },
        ),
        (
            "receipts",
            Request::Receipts {
                key: None,
                after: 0,
            },
        ),
        (
            "receipt_events",
            Request::Receipts {
                key: Some("v1/product=cfdev/k.ndjson.zst".into()),
                after: 0,
            },
        ),
        ("stop", Request::Stop),
    ]
}

/// Every response, named.
pub fn responses() -> Vec<(&'static str, Response)> {
    let mut consent = ProductConsent::new("cfdev".into(), Mode::On, Layer::UserFile);
    consent.manifest = "built-in cfdev.toml".into();
    consent.version = 2;
    consent.consented_version = 1;
    consent.new_events = vec!["service_bound".into()];
    let status = StatusReport {
        daemon_version: "0.1.0".into(),
        uptime_secs: 12,
        destination: "outbox:/var/lib/telemetry/outbox".into(),
        pending_events: 3,
        pending_bytes: 600,
        sealed_batches: 1,
        uploaded_events: 40,
        last_upload_us: Some(1_700_000_000_000_000),
        last_upload_key: Some("v1/product=cfdev/k.ndjson.zst".into()),
        last_error: None,
        next_attempt_us: None,
        consecutive_failures: 0,
        local_events: 0,
        consent: vec![consent.clone()],
        consent_file: "/home/u/.local/state/telemetry/consent".into(),
        incidents: vec![],
        dropped: vec![("cfdev".into(), 2)],
        refusals: vec![RefusalCount {
            product: "cfdev".into(),
            code: ErrorCode::NotInCatalogue,
            count: 1,
            last_event: "app_creatd".into(),
            last_message: "product \"cfdev\" has no event \"app_creatd\" in its catalogue (built-in cfdev.toml)".into(),
        }],
        next_upload_us: Some(1_700_003_600_000_000),
        destinations: vec![DestinationStatus {
            destination: "outbox:/var/lib/telemetry/outbox".into(),
            auth: "outbox".into(),
            products: vec!["cfdev".into()],
            pending_batches: 1,
            uploaded_events: 40,
            uploaded_bytes: 900,
            uploads: 2,
            ..Default::default()
        }],
        counters: Counters {
            received: 45,
            stored: 43,
            duplicates: 1,
            refused: 1,
            spooled: 2,
            taken_in: 2,
            spool_full_drops: vec![("cfdev".into(), 4)],
            store_full_drops: 2,
            local_full_drops: vec![("cfdev".into(), 1)],
        },
    };
    vec![
        (
            "ack",
            Response::Ack {
                accepted: 1,
                duplicates: 0,
            },
        ),
        ("queued", Response::Queued { accepted: 2 }),
        ("status", Response::Status(Box::new(status))),
        (
            "flushed",
            Response::Flushed(FlushReport {
                keys: vec!["v1/product=cfdev/k.ndjson.zst".into()],
                events: 3,
                bytes: 200,
            }),
        ),
        (
            "error_busy",
            Response::Error {
                code: ErrorCode::Busy,
                message: "telemetryd is serving its maximum of 512 connections; try again shortly"
                    .into(),
            },
        ),
        (
            "error_consent_off",
            Response::Error {
                code: ErrorCode::ConsentOff,
                message: "consent for cfdev is off".into(),
            },
        ),
        (
            "consent_applied",
            Response::ConsentApplied(ConsentReport {
                consent,
                purged: 0,
                final_event: false,
                file: "/home/u/.local/state/telemetry/consent".into(),
            }),
        ),
        (
            "events",
            Response::Events(EventsPage {
                events: vec![ShownEvent {
                    seq: 1,
                    state: EventState::Pending,
                    batch_key: None,
                    line: "{\"event\":\"stop\"}".into(),
                    counter: false,
                }],
                next_after_seq: None,
            }),
        ),
        ("purged", Response::Purged { events: 3 }),
        (
            "probed",
            Response::Probed(ProbeReport {
                destinations: vec![DestinationProbe {
                    destination: "https://telemetry.example.com/".into(),
                    auth: "broker".into(),
                    products: vec!["cfdev".into()],
                    checks: vec![
                        Check {
                            name: "dns".into(),
                            outcome: CheckOutcome::Pass,
                            detail: "telemetry.example.com resolves".into(),
                            fix: String::new(),
                        },
                        Check {
                            name: "clock".into(),
                            outcome: CheckOutcome::Warn,
                            detail: "this machine's clock is 400 s behind".into(),
                            fix: "synchronise the clock (timedatectl set-ntp true)".into(),
                        },
                    ],
                    clock_skew_secs: Some(400),
                }],
            }),
        ),
        (
            "forgotten",
            Response::Forgotten(Box::new(ForgetReport {
                product: "cfdev".into(),
                purged: 3,
                marker: true,
                marker_key: Some("v1/product=cfdev/k.ndjson.zst".into()),
                old_machine: "ab".repeat(32),
                new_machine: "cd".repeat(32),
            })),
        ),
        (
            "receipts",
            Response::Receipts(ReceiptsPage {
                receipts: vec![Receipt {
                    seq: 1,
                    destination: "outbox:/var/lib/telemetry/outbox".into(),
                    key: "v1/product=cfdev/k.ndjson.zst".into(),
                    sha256: "0f".repeat(32),
                    bytes: 200,
                    events: 3,
                    uploaded_us: 1_700_000_000_000_000,
                    body_kept: true,
                    already_there: false,
                }],
                lines: vec![],
                next_after: None,
                max_receipts: 1000,
            }),
        ),
        ("stopping", Response::Stopping { pid: 4242 }),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn entry<T: serde::Serialize>(kind: &str, name: &str, msg: &T) -> serde_json::Value {
    let line = encode_line(msg).expect("encodes");
    serde_json::json!({
        "name": name,
        "kind": kind,
        "json": String::from_utf8(line).expect("utf-8").trim_end(),
        "binary": hex(&encode_frame(msg).expect("encodes")),
    })
}

/// The file's text.
pub fn render() -> String {
    let mut messages = Vec::new();
    for (name, req) in requests() {
        messages.push(entry("request", name, &req));
    }
    for (name, resp) in responses() {
        messages.push(entry("response", name, &resp));
    }
    let doc = serde_json::json!({
        "about": "Every request and response of the telemetryd protocol in both encodings: `json` is the JSON line (without its newline), `binary` the whole frame in hex (4-byte big-endian length, version varint, postcard). Written by `cargo run -p telemetry-proto --example vectors`; see proto/src/lib.rs.",
        "protocol_version": PROTOCOL_VERSION,
        "max_frame_len": MAX_FRAME_LEN,
        "max_line_len": MAX_LINE_LEN,
        "messages": messages,
    });
    let mut text = serde_json::to_string_pretty(&doc).expect("renders");
    text.push('\n');
    text
}
