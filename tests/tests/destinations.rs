//! Destinations per product and conditional writes (issue #13, items 3 and
//! 4): the real daemon, real S3 servers on 127.0.0.1, SigV4 verified except
//! where a bucket policy opens a prefix to unsigned writes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use telemetry_client::event;
use telemetry_proto::{DestinationStatus, StatusReport};
use telemetry_tests::*;

const TIMEOUT: Duration = Duration::from_secs(10);

/// The bucket and prefix vendors' manifests send to, open to unsigned puts.
const VENDOR_BUCKET: &str = "vendor-in";
const VENDOR_PREFIX: &str = "raw";

fn open_policy() -> S3Policy {
    S3Policy {
        anonymous_put: Some((VENDOR_BUCKET.into(), format!("{VENDOR_PREFIX}/"))),
    }
}

/// A manifest for `product` (one event, `ran`) uploading anonymously to
/// `endpoint`'s `bucket` under `prefix`.
fn anonymous_manifest(env: &DaemonEnv, product: &str, endpoint: &str, bucket: &str, prefix: &str) {
    let dir = env.root().join("catalog");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{product}.toml")),
        format!(
            "product = \"{product}\"\n[events.ran]\n\n[upload]\nauth = \"anonymous\"\nbucket = \"{bucket}\"\nprefix = \"{prefix}\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n"
        ),
    )
    .unwrap();
}

/// One S3 server holding the daemon's own bucket (signed) and the vendor's,
/// open to unsigned puts under [`VENDOR_PREFIX`]; product `toola`'s manifest
/// sends to the vendor's bucket under `prefix`.
fn toola_at_the_vendor(prefix: &str) -> (S3Server, DaemonEnv) {
    let s3 = S3Server::start_with(open_policy());
    s3.create_bucket(VENDOR_BUCKET);
    let env = DaemonEnv::new(Destination::S3 {
        endpoint: s3.endpoint.clone(),
        secret: SECRET_KEY.into(),
    });
    anonymous_manifest(&env, "toola", &s3.endpoint, VENDOR_BUCKET, prefix);
    (s3, env)
}

fn consent_on(env: &DaemonEnv, products: &[&str]) {
    let text: String = products.iter().map(|p| format!("{p} on\n")).collect();
    std::fs::write(env.root().join("consent"), text).unwrap();
}

fn emit(d: &Daemon, product: &str, name: &str, n: usize) {
    let mut client = d.client();
    for _ in 0..n {
        let ev = event(product, name, "1.0.0", BTreeMap::new());
        let ack = client.emit(vec![ev], TIMEOUT).expect("acked emit");
        assert_eq!(ack.accepted, 1);
    }
}

fn status(d: &Daemon) -> StatusReport {
    d.client().status(TIMEOUT).expect("status")
}

fn dest<'a>(s: &'a StatusReport, product: &str) -> &'a DestinationStatus {
    s.destinations
        .iter()
        .find(|d| d.products.iter().any(|p| p == product))
        .unwrap_or_else(|| panic!("no destination lists {product}: {:#?}", s.destinations))
}

/// Lines of every object, with the product each names.
fn products_in(objects: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    decode_objects(objects)
        .into_iter()
        .map(|(_, v)| v["product"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn three_products_three_destinations_one_down_while_the_others_deliver() {
    // The operator's own bucket (AWS chain, signed) and a vendor's
    // anonymous prefix on one server; a second vendor on a server that is
    // down.
    let s3 = S3Server::start_with(open_policy());
    s3.create_bucket(VENDOR_BUCKET);
    let down = S3Server::start_with(open_policy());
    down.create_bucket(VENDOR_BUCKET);
    down.set_fault(Fault::Down);

    let env = DaemonEnv::new(Destination::S3 {
        endpoint: s3.endpoint.clone(),
        secret: SECRET_KEY.into(),
    });
    anonymous_manifest(&env, "toola", &s3.endpoint, VENDOR_BUCKET, VENDOR_PREFIX);
    anonymous_manifest(&env, "toolb", &down.endpoint, VENDOR_BUCKET, VENDOR_PREFIX);
    consent_on(&env, &["cfdev", "toola", "toolb"]);
    let d = env.start();
    emit(&d, "cfdev", "stop", 2);
    emit(&d, "toola", "ran", 3);
    emit(&d, "toolb", "ran", 4);

    let out = env.run("telemetryctl", &["flush"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a destination is down: {}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("s3://{VENDOR_BUCKET}")) && err.contains("stay queued"),
        "{err}"
    );

    // The two that are up delivered, each to its own place.
    let own = s3.objects();
    assert_eq!(own.len(), 1, "{:?}", own.keys());
    assert!(own.keys().all(|k| k.starts_with("e2e/v1/product=cfdev/")));
    assert_eq!(products_in(&own), ["cfdev", "cfdev"]);
    let vendor = s3.objects_in(VENDOR_BUCKET);
    assert_eq!(vendor.len(), 1, "{:?}", vendor.keys());
    assert!(vendor
        .keys()
        .all(|k| k.starts_with("raw/v1/product=toola/")));
    assert_eq!(products_in(&vendor), ["toola"; 3]);

    // Status lists each destination with its own progress and error.
    let s = status(&d);
    let (a, b, c) = (dest(&s, "cfdev"), dest(&s, "toola"), dest(&s, "toolb"));
    assert_eq!(a.auth, "aws");
    assert_eq!(a.destination, "s3://telemetry-test/e2e");
    assert_eq!((a.uploaded_events, a.pending_batches), (2, 0));
    assert!(a.last_upload_us.is_some() && a.last_error.is_none());
    assert_eq!(b.auth, "anonymous");
    assert_eq!((b.uploaded_events, b.pending_batches), (3, 0));
    assert!(b.uploaded_bytes > 0 && b.last_error.is_none());
    assert_eq!(c.auth, "anonymous");
    assert_eq!((c.uploaded_events, c.pending_batches), (0, 1));
    assert!(c.last_error.is_some() && c.next_attempt_us.is_some());
    // At least the flush's failure; a background retry may have come since.
    assert!(c.consecutive_failures >= 1, "{c:?}");
    assert_ne!(b.destination, c.destination, "told apart by endpoint");
    assert_eq!(s.pending_events, 4, "only toolb's events wait");

    // More events for the healthy products go out on their own schedule
    // while toolb's destination is still backing off.
    emit(&d, "toola", "ran", 1);
    let out = env.run("telemetryctl", &["flush"]);
    assert!(!out.status.success());
    assert_eq!(s3.objects_in(VENDOR_BUCKET).len(), 2);

    // The human status names every destination.
    let out = env.run("telemetryctl", &["status"]);
    let human = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "to:           s3://telemetry-test/e2e (aws) for cfdev",
        "(anonymous) for toola",
        "(anonymous) for toolb",
        "error: ",
        // The flat error names whose destination failed.
        "last error:   at the destination of toolb (below)",
        // The daemon's own is not every product's.
        "destination:  s3://telemetry-test/e2e (for products whose manifest names no destination; the others below)",
    ] {
        assert!(human.contains(needle), "{needle:?} in:\n{human}");
    }
    let json = env.run("telemetryctl", &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["destinations"].as_array().unwrap().len(), 3, "{v}");

    // The destination comes back: its batch goes where it was sealed for.
    down.set_fault(Fault::None);
    let out = env.run("telemetryctl", &["flush"]);
    assert!(out.status.success(), "{}", text(&out));
    let late = down.objects_in(VENDOR_BUCKET);
    assert_eq!(products_in(&late), ["toolb"; 4]);
    let s = status(&d);
    assert!(s.destinations.iter().all(|d| d.last_error.is_none()));
    assert_eq!(s.pending_events, 0);
    assert!(
        !d.log().contains(RAW_IDENTITY),
        "the raw identity never appears"
    );
    // A product that is not on sends nowhere: its mode is beside its name.
    let out = env.run("telemetryctl", &["consent", "toola", "local"]);
    assert!(out.status.success(), "{}", text(&out));
    let human = text(&env.run("telemetryctl", &["status"]));
    assert!(human.contains("(anonymous) for toola (local)"), "{human}");
    assert!(human.contains("(aws) for cfdev\n"), "on: no mode: {human}");
    // With every product that is on sending to its vendor, the daemon's own
    // destination is said to be nobody's.
    let out = env.run("telemetryctl", &["consent", "cfdev", "off"]);
    assert!(out.status.success(), "{}", text(&out));
    let human = text(&env.run("telemetryctl", &["status"]));
    assert!(
        human.contains("destination:  s3://telemetry-test/e2e (the daemon's own: no product that is on sends there; each goes where its manifest says, below)"),
        "{human}"
    );
}

#[test]
fn a_manifest_destination_is_never_signed_with_the_operators_credentials() {
    // The daemon holds valid AWS credentials for its own bucket; a
    // manifest naming a prefix that is not open to unsigned writes must
    // fail there rather than be signed with them.
    let (s3, env) = toola_at_the_vendor("closed");
    consent_on(&env, &["toola"]);
    let d = env.start();
    emit(&d, "toola", "ran", 1);
    let out = env.run("telemetryctl", &["flush"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AccessDenied"), "{err}");
    assert!(s3.objects_in(VENDOR_BUCKET).is_empty());
    let s = status(&d);
    let t = dest(&s, "toola");
    assert!(
        t.last_error.as_deref().unwrap().contains("permanent"),
        "{t:?}"
    );
    assert_eq!(t.pending_batches, 1, "kept, never dropped");
}

/// Whether the daemon's status shows `product`'s manifest as broken.
fn manifest_broken(d: &Daemon, product: &str) -> bool {
    status(d)
        .consent
        .iter()
        .find(|c| c.product == product)
        .is_some_and(|c| c.manifest_error.is_some())
}

#[test]
fn a_final_batch_sealed_while_the_manifest_is_broken_goes_to_the_vendor_once_it_is_fixed() {
    let (s3, env) = toola_at_the_vendor(VENDOR_PREFIX);
    consent_on(&env, &["toola"]);
    let d = env.start();
    emit(&d, "toola", "ran", 2);

    // The vendor's manifest breaks (a bad upgrade), then the user turns
    // the product off: its final telemetry_off event is recorded at once.
    let manifest = env.root().join("catalog").join("toola.toml");
    let good = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, "product = \"toola\"\n[events.ran\n").unwrap();
    wait_for("the broken manifest", TIMEOUT, || {
        manifest_broken(&d, "toola").then_some(())
    });
    let out = env.run("telemetryctl", &["consent", "toola", "off"]);
    assert!(out.status.success(), "{}", text(&out));
    env.run("telemetryctl", &["flush"]);
    assert!(
        s3.objects().is_empty(),
        "not to the daemon's own bucket: {:?}",
        s3.objects().keys()
    );
    assert!(s3.objects_in(VENDOR_BUCKET).is_empty());

    // Fixed: the final batch goes to the vendor, under the vendor's prefix.
    std::fs::write(&manifest, good).unwrap();
    wait_for("the fixed manifest", TIMEOUT, || {
        (!manifest_broken(&d, "toola")).then_some(())
    });
    let out = env.run("telemetryctl", &["flush"]);
    assert!(out.status.success(), "{}", text(&out));
    let vendor = s3.objects_in(VENDOR_BUCKET);
    assert_eq!(vendor.len(), 1, "{:?}", vendor.keys());
    assert!(vendor
        .keys()
        .all(|k| k.starts_with("raw/v1/product=toola/")));
    let events: Vec<String> = decode_objects(&vendor)
        .into_iter()
        .map(|(_, v)| v["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events, ["telemetry_off"]);
    assert!(s3.objects().is_empty(), "{:?}", s3.objects().keys());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_replayed_batch_gets_412_is_counted_delivered_and_makes_no_second_object() {
    let s3 = S3Server::start();
    let env = DaemonEnv::new(Destination::S3 {
        endpoint: s3.endpoint.clone(),
        secret: SECRET_KEY.into(),
    });
    let d = env.start();
    emit(&d, "cfdev", "stop", 3);
    // The state as a crash would leave it: events committed, not uploaded.
    d.kill9();
    let snapshot = env.root().join("state-snapshot");
    copy_dir(&env.state, &snapshot);

    let d = env.start();
    let out = env.run("telemetryctl", &["flush"]);
    assert!(out.status.success(), "{}", text(&out));
    let first = s3.objects();
    assert_eq!(first.len(), 1);
    d.kill9();

    // Back to before the upload, as if its answer had been lost: the same
    // batch goes again, to the same key with the same bytes.
    std::fs::remove_dir_all(&env.state).unwrap();
    copy_dir(&snapshot, &env.state);
    let d = env.start();
    let before = s3.requests.load(std::sync::atomic::Ordering::SeqCst);
    let out = env.run("telemetryctl", &["flush", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(s3.requests.load(std::sync::atomic::Ordering::SeqCst) > before);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["events"], 3, "delivered: {report}");
    assert_eq!(s3.objects(), first, "no second object, bytes unchanged");
    let s = status(&d);
    assert_eq!(s.pending_events, 0);
    let own = dest(&s, "cfdev");
    assert_eq!((own.already_there, own.uploaded_events), (1, 3));
    assert!(own.last_error.is_none());
    assert!(d.log().contains("already_there=true"), "{}", d.log());
}

/// The S3 error code and HTTP status of a failed SDK call.
fn code_of<E: aws_sdk_s3::error::ProvideErrorMetadata>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> (Option<String>, Option<u16>) {
    (
        e.as_service_error()
            .and_then(|s| s.code())
            .map(str::to_string),
        e.raw_response().map(|r| r.status().as_u16()),
    )
}

#[test]
fn the_test_server_checks_a_put_before_it_is_stored() {
    let s3 = S3Server::start();
    let client = s3.client();
    let key = "k/wrong-md5";
    // Content-MD5 of the empty body, sent with a non-empty one.
    let err = s3
        .block_on(
            client
                .put_object()
                .bucket(BUCKET)
                .key(key)
                .content_md5("1B2M2Y8AsgTpgAmY7PhCfg==")
                .body(b"not empty".to_vec().into())
                .send(),
        )
        .unwrap_err();
    assert_eq!(code_of(&err).0.as_deref(), Some("BadDigest"));
    let err = s3
        .block_on(
            client
                .put_object()
                .bucket(BUCKET)
                .key("k/wrong-crc")
                .checksum_crc32("AAAAAA==")
                .body(b"some bytes".to_vec().into())
                .send(),
        )
        .unwrap_err();
    assert_eq!(code_of(&err).0.as_deref(), Some("BadDigest"));
    assert!(s3.objects().is_empty(), "a refused body is never stored");

    // A right Content-MD5 is accepted.
    s3.block_on(
        client
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .content_md5("1B2M2Y8AsgTpgAmY7PhCfg==")
            .body(Vec::new().into())
            .send(),
    )
    .expect("matching Content-MD5");
    assert_eq!(s3.objects().get(key).map(Vec::len), Some(0));
}

#[test]
fn the_test_server_honours_if_none_match_atomically() {
    let s3 = S3Server::start();
    let client = s3.client();
    let put = |key: &'static str, body: Vec<u8>| {
        let client = client.clone();
        async move {
            client
                .put_object()
                .bucket(BUCKET)
                .key(key)
                .if_none_match("*")
                .body(body.into())
                .send()
                .await
        }
    };
    s3.block_on(put("once", b"first".to_vec()))
        .expect("first put");
    let err = s3.block_on(put("once", b"second".to_vec())).unwrap_err();
    assert_eq!(
        code_of(&err),
        (Some("PreconditionFailed".into()), Some(412))
    );
    assert_eq!(
        s3.objects()["once"],
        b"first",
        "the object was not replaced"
    );

    // Sixteen writers race for one key with different bodies: one wins,
    // every other is told 412 or 409, and the stored bytes are the winner's.
    let results = s3.block_on(futures_join(
        (0..16u8).map(|i| put("raced", vec![i; 4096])).collect(),
    ));
    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one writer wins");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        let (code, status) = code_of(r);
        assert!(
            matches!(status, Some(409) | Some(412)),
            "{code:?} {status:?}"
        );
    }
    assert_eq!(s3.objects()["raced"], vec![winners[0] as u8; 4096]);
}

/// Run futures at once on the current runtime and collect their outputs.
async fn futures_join<F: std::future::Future + Send + 'static>(futs: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("put task"));
    }
    out
}

#[test]
fn the_test_servers_policy_opens_one_prefix_to_unsigned_puts_only() {
    let s3 = S3Server::start_with(open_policy());
    s3.create_bucket(VENDOR_BUCKET);
    let settings = |bucket: &str| telemetry_sink::S3Settings {
        bucket: bucket.into(),
        prefix: String::new(),
        endpoint: Some(s3.endpoint.clone()),
        region: Some("us-east-1".into()),
        path_style: true,
    };
    let anon = s3.block_on(telemetry_sink::s3::client(
        &settings(VENDOR_BUCKET),
        telemetry_sink::s3::Credentials::Anonymous,
        TIMEOUT,
        &telemetry_sink::net::NetOptions::default(),
    ));
    let put = |bucket: &str, key: &str| {
        s3.block_on(
            anon.put_object()
                .bucket(bucket)
                .key(key)
                .body(b"x".to_vec().into())
                .send(),
        )
        .map(|_| ())
        .map_err(|e| code_of(&e).0)
    };
    put(VENDOR_BUCKET, "raw/a").expect("unsigned put under the open prefix");
    for (bucket, key) in [(VENDOR_BUCKET, "elsewhere/a"), (BUCKET, "raw/a")] {
        let err = put(bucket, key).unwrap_err();
        assert_eq!(err.as_deref(), Some("AccessDenied"), "{bucket}/{key}");
    }
    let err = s3
        .block_on(anon.get_object().bucket(VENDOR_BUCKET).key("raw/a").send())
        .unwrap_err();
    assert_eq!(
        code_of(&err).0.as_deref(),
        Some("AccessDenied"),
        "reads stay signed"
    );
    assert_eq!(s3.objects_in(VENDOR_BUCKET)["raw/a"], b"x");
}

#[test]
fn a_broken_manifests_events_wait_and_never_go_to_the_daemons_own_destination() {
    // Accepted while the vendor's manifest was valid; then the manifest
    // breaks (a half-written upgrade). Its destination is unknown, and the
    // daemon's own bucket is another party's: the events wait.
    let (s3, env) = toola_at_the_vendor(VENDOR_PREFIX);
    consent_on(&env, &["cfdev", "toola"]);
    let d = env.start();
    emit(&d, "cfdev", "stop", 1);
    emit(&d, "toola", "ran", 3);
    let manifest = env.root().join("catalog/toola.toml");
    let good = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, "product = \"toola\"\n[events.ran\n").unwrap();
    // Reloads are seen within a second.
    std::thread::sleep(Duration::from_millis(1500));

    let out = env.run("telemetryctl", &["flush"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        products_in(&s3.objects()),
        ["cfdev"],
        "nothing of toola in the daemon's own bucket"
    );
    assert!(s3.objects_in(VENDOR_BUCKET).is_empty());
    assert_eq!(status(&d).pending_events, 3, "toola's events wait");

    std::fs::write(&manifest, good).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let out = env.run("telemetryctl", &["flush"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(products_in(&s3.objects_in(VENDOR_BUCKET)), ["toola"; 3]);
    assert_eq!(products_in(&s3.objects()), ["cfdev"]);
}
