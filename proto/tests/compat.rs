//! Peers of different ages: an older and a newer side decode each other's
//! replies (the evolution rules in the crate docs), and a reply frozen as
//! bytes keeps decoding as the types grow.

use serde::{Deserialize, Serialize};
use telemetry_proto::*;

/// `StatusReport` as the first protocol-2 peers knew it (before
/// `refusals` and `next_upload_us` were appended): an older client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
struct OlderStatusReport {
    daemon_version: String,
    uptime_secs: u64,
    destination: String,
    pending_events: u64,
    pending_bytes: u64,
    sealed_batches: u64,
    uploaded_events: u64,
    last_upload_us: Option<i64>,
    last_upload_key: Option<String>,
    last_error: Option<String>,
    next_attempt_us: Option<i64>,
    consecutive_failures: u32,
    local_events: u64,
    consent: Vec<ProductConsent>,
    consent_file: String,
    incidents: Vec<String>,
    dropped: Vec<(String, u64)>,
}
telemetry_proto::record!(OlderStatusReport);

/// The older client's reply enum, as far as `Status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum OlderResponse {
    Ack { accepted: u32, duplicates: u32 },
    Queued { accepted: u32 },
    Status(Box<OlderStatusReport>),
}

fn newer() -> StatusReport {
    StatusReport {
        daemon_version: "9.9.9".into(),
        uptime_secs: 12,
        destination: "outbox:/x".into(),
        pending_events: 3,
        consent: vec![ProductConsent::new(
            "cfdev".into(),
            Mode::On,
            Layer::UserFile,
        )],
        dropped: vec![("cfdev".into(), 2)],
        refusals: vec![RefusalCount {
            product: "cfdev".into(),
            code: ErrorCode::NotInCatalogue,
            count: 4,
            last_event: "app_creatd".into(),
            last_message: "no such event".into(),
        }],
        next_upload_us: Some(1_800_000_000_000_000),
        destinations: vec![telemetry_proto::DestinationStatus {
            destination: "s3://vendor/in".into(),
            auth: "anonymous".into(),
            products: vec!["cfdev".into()],
            pending_batches: 1,
            last_error: Some("down".into()),
            retired: vec![("old".into(), 3)],
            ..Default::default()
        }],
        ..StatusReport::default()
    }
}

fn older() -> OlderStatusReport {
    let n = newer();
    OlderStatusReport {
        daemon_version: n.daemon_version,
        uptime_secs: n.uptime_secs,
        destination: n.destination,
        pending_events: n.pending_events,
        pending_bytes: n.pending_bytes,
        sealed_batches: n.sealed_batches,
        uploaded_events: n.uploaded_events,
        last_upload_us: n.last_upload_us,
        last_upload_key: n.last_upload_key,
        last_error: n.last_error,
        next_attempt_us: n.next_attempt_us,
        consecutive_failures: n.consecutive_failures,
        local_events: n.local_events,
        consent: n.consent,
        consent_file: n.consent_file,
        incidents: n.incidents,
        dropped: n.dropped,
    }
}

#[test]
fn an_older_client_reads_a_newer_daemons_status() {
    let body = encode_body(&Response::Status(Box::new(newer()))).unwrap();
    let got: OlderResponse = decode_body(&body).unwrap();
    assert_eq!(got, OlderResponse::Status(Box::new(older())));
    // And in JSON, the shape `telemetryctl status --json` prints.
    let json = serde_json::to_string(&newer()).unwrap();
    let got: OlderStatusReport = serde_json::from_str(&json).unwrap();
    assert_eq!(got, older());
}

#[test]
fn a_newer_client_reads_an_older_daemons_status() {
    let body = encode_body(&OlderResponse::Status(Box::new(older()))).unwrap();
    let got: Response = decode_body(&body).unwrap();
    let want = StatusReport {
        refusals: vec![],
        next_upload_us: None,
        destinations: vec![],
        ..newer()
    };
    assert_eq!(got, Response::Status(Box::new(want.clone())));
    let json = serde_json::to_string(&older()).unwrap();
    assert_eq!(serde_json::from_str::<StatusReport>(&json).unwrap(), want);
}

#[test]
fn an_error_code_from_a_newer_daemon_reads_as_unknown() {
    // `Response::Error` (variant 4) with code 200, which no one knows yet.
    let mut body = vec![PROTOCOL_VERSION as u8, 0x04, 0xc8, 0x01];
    body.extend_from_slice(b"\x02hi");
    let got: Response = decode_body(&body).unwrap();
    assert_eq!(
        got,
        Response::Error {
            code: ErrorCode::Unknown,
            message: "hi".into()
        }
    );
    let got: ErrorCode = serde_json::from_str(r#""some_new_code""#).unwrap();
    assert_eq!(got, ErrorCode::Unknown);
    assert_eq!(
        serde_json::to_string(&ErrorCode::NotInCatalogue).unwrap(),
        r#""not_in_catalogue""#,
        "JSON spells codes as Display does"
    );
    for code in [ErrorCode::Busy, ErrorCode::StoreFull, ErrorCode::ConsentOff] {
        assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{code}\""));
    }
}

/// A status reply as protocol-2 daemons wrote it when this test was made,
/// frozen: however `StatusReport` grows, these bytes must keep decoding to
/// the same values (a reordered, retyped or removed field fails here).
const FROZEN_STATUS: &str = include_str!("vectors/status-reply.hex");

#[test]
fn a_frozen_status_reply_still_decodes() {
    let hex: String = FROZEN_STATUS.split_whitespace().collect();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let got: Response = decode_body(&bytes).unwrap();
    let Response::Status(got) = got else {
        panic!("not a status reply: {got:?}");
    };
    // Frozen before destinations and a refusal's last event and message
    // were added: they read as none.
    let mut want = StatusReport {
        destinations: vec![],
        ..newer()
    };
    for r in &mut want.refusals {
        r.last_event.clear();
        r.last_message.clear();
    }
    assert_eq!(got.daemon_version, want.daemon_version);
    assert_eq!(got.uptime_secs, want.uptime_secs);
    assert_eq!(got.destination, want.destination);
    assert_eq!(got.pending_events, want.pending_events);
    assert_eq!(got.consent, want.consent);
    assert_eq!(got.dropped, want.dropped);
    assert_eq!(got.refusals, want.refusals);
    assert_eq!(got.next_upload_us, want.next_upload_us);
}

/// `ProductConsent` before the manifest fields were appended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
struct OlderProductConsent {
    product: String,
    mode: Mode,
    layer: Layer,
}
telemetry_proto::record!(OlderProductConsent);

#[test]
fn product_consent_grows_both_ways() {
    let newer = ProductConsent {
        manifest: "/usr/share/telemetry/products/cfdev.toml".into(),
        manifest_error: Some("line 3: bad".into()),
        version: 3,
        consented_version: 2,
        new_events: vec!["deployed".into()],
        ..ProductConsent::new("cfdev".into(), Mode::On, Layer::UserFile)
    };
    let older = OlderProductConsent {
        product: "cfdev".into(),
        mode: Mode::On,
        layer: Layer::UserFile,
    };
    let bytes = postcard::to_allocvec(&newer).unwrap();
    assert_eq!(
        postcard::from_bytes::<OlderProductConsent>(&bytes).unwrap(),
        older
    );
    let bytes = postcard::to_allocvec(&older).unwrap();
    assert_eq!(
        postcard::from_bytes::<ProductConsent>(&bytes).unwrap(),
        ProductConsent::new("cfdev".into(), Mode::On, Layer::UserFile)
    );
    let json = serde_json::to_string(&older).unwrap();
    assert_eq!(
        serde_json::from_str::<ProductConsent>(&json).unwrap(),
        ProductConsent::new("cfdev".into(), Mode::On, Layer::UserFile)
    );
    let json = serde_json::to_string(&newer).unwrap();
    assert_eq!(
        serde_json::from_str::<OlderProductConsent>(&json).unwrap(),
        older
    );
}
