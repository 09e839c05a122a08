//! Issue #13 end to end with every part together: the real daemon, shim,
//! `telemetryctl`, `telemetry-broker` and S3 server, one product per auth
//! mode (the daemon's own AWS chain, anonymous, broker) and the broker's
//! answers (429, 400/413, 410, a replay's 412) as the daemon handles them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};
use telemetry_client::event;
use telemetry_proto::{DestinationStatus, StatusReport};
use telemetry_tests::broker::Broker;
use telemetry_tests::*;

const TIMEOUT: Duration = Duration::from_secs(10);
/// The anonymous destination: a bucket whose policy opens `raw/`.
const VENDOR_BUCKET: &str = "vendor-in";
const VENDOR_PREFIX: &str = "raw";
/// The bucket and prefix the broker writes to (its own, not the daemon's).
const BROKER_BUCKET: &str = "broker-bucket";
const BROKER_PREFIX: &str = "brk";

fn today() -> String {
    humantime::format_rfc3339(SystemTime::now()).to_string()[..10].to_string()
}

/// One S3 server with the daemon's bucket, the vendor's open prefix and
/// the broker's bucket.
fn s3_server() -> S3Server {
    let s3 = S3Server::start_with(S3Policy {
        anonymous_put: Some((VENDOR_BUCKET.into(), format!("{VENDOR_PREFIX}/"))),
    });
    s3.create_bucket(VENDOR_BUCKET);
    s3.create_bucket(BROKER_BUCKET);
    s3
}

/// The real broker with its own manifest directory.
struct VendorBroker {
    broker: Broker,
    _manifests: tempfile::TempDir,
}

impl std::ops::Deref for VendorBroker {
    type Target = Broker;
    fn deref(&self) -> &Broker {
        &self.broker
    }
}

impl VendorBroker {
    /// SIGTERM it; its `host:port`, to start it again there.
    fn stop(self) -> String {
        let addr = self.url.trim_start_matches("http://").to_string();
        self.broker.terminate().expect("the broker stops");
        addr
    }
}

/// A broker for `products` writing to [`BROKER_BUCKET`], "today" being
/// today (the daemon dates batches by its own clock), on `listen` (to
/// come back on the same address) or any port, with `extra` settings.
fn broker(s3: &S3Server, products: &[&str], listen: &str, extra: &[(&str, &str)]) -> VendorBroker {
    let dir = tempfile::tempdir().unwrap();
    for p in products {
        std::fs::write(
            dir.path().join(format!("{p}.toml")),
            format!("product = \"{p}\"\n[events.ran]\n"),
        )
        .unwrap();
    }
    let (manifests, today) = (dir.path().display().to_string(), today());
    let mut env = vec![
        ("TELEMETRY_BROKER_MANIFESTS", manifests.as_str()),
        ("TELEMETRY_BROKER_TODAY", today.as_str()),
        ("TELEMETRY_BROKER_LISTEN", listen),
        ("TELEMETRY_S3_BUCKET", BROKER_BUCKET),
        ("TELEMETRY_S3_PREFIX", BROKER_PREFIX),
        // Every refusal, for `broker_answers` (the info lines of a flood are
        // one a minute).
        ("TELEMETRY_LOG", "info,telemetry_broker::server=debug"),
    ];
    env.extend_from_slice(extra);
    VendorBroker {
        broker: Broker::start(s3, &env),
        _manifests: dir,
    }
}

/// The broker's answers to `POST /v1/upload` so far: (granted, refused).
fn broker_answers(b: &VendorBroker) -> (usize, usize) {
    let log = b.log();
    (
        log.matches("granted ").count(),
        log.matches("answered a refusal").count(),
    )
}

/// A daemon env on `s3` (its own destination: [`BUCKET`] under `e2e`,
/// signed) with manifests for `products`: `(name, [upload] table or "")`,
/// consent on for each and cfdev.
fn daemon_env(s3: &S3Server, products: &[(&str, String)]) -> DaemonEnv {
    let mut env = DaemonEnv::new(Destination::S3 {
        endpoint: s3.endpoint.clone(),
        secret: SECRET_KEY.into(),
    });
    let dir = env.root().join("catalog");
    std::fs::create_dir_all(&dir).unwrap();
    let mut consent = String::from("cfdev on\n");
    for (p, upload) in products {
        let text = format!("product = \"{p}\"\n[events.ran]\n{upload}");
        std::fs::write(dir.join(format!("{p}.toml")), text).unwrap();
        consent.push_str(&format!("{p} on\n"));
    }
    std::fs::write(env.root().join("consent"), consent).unwrap();
    env.extra
        .push(("TELEMETRY_RETRY_MIN".into(), "200ms".into()));
    env.extra.push(("TELEMETRY_RETRY_MAX".into(), "1s".into()));
    env
}

fn anonymous_upload(s3: &S3Server) -> String {
    format!(
        "[upload]\nauth = \"anonymous\"\nbucket = \"{VENDOR_BUCKET}\"\nprefix = \"{VENDOR_PREFIX}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n",
        s3.endpoint
    )
}

fn broker_upload(b: &VendorBroker) -> String {
    format!("[upload]\nauth = \"broker\"\nbroker = \"{}\"\n", b.url)
}

/// An event `product`'s manifest has: `stop` for the shipped cfdev,
/// `ran` for the tests' own.
fn event_of(product: &str) -> &'static str {
    if product == "cfdev" {
        "stop"
    } else {
        "ran"
    }
}

/// Emit `n` acked events for `product`; their ids.
fn emit(d: &Daemon, product: &str, n: usize) -> BTreeSet<String> {
    let mut client = d.client();
    let mut ids = BTreeSet::new();
    for _ in 0..n {
        let ev = event(product, event_of(product), "1.0.0", BTreeMap::new());
        ids.insert(ev.id.to_string());
        let ack = client.emit(vec![ev], TIMEOUT).expect("acked emit");
        assert_eq!(ack.accepted, 1, "{product}");
    }
    ids
}

/// One event through the real shim, acknowledged (`--strict` exit 0).
fn shim(env: &DaemonEnv, product: &str) {
    let out = env
        .command("telemetry-emit")
        .env("TELEMETRY_EMIT_TIMEOUT_MS", "5000")
        .args(["--product", product, "--strict", event_of(product)])
        .output()
        .expect("run telemetry-emit");
    assert_eq!(out.status.code(), Some(0), "shim {product}: {}", text(&out));
}

fn flush(env: &DaemonEnv) -> std::process::Output {
    env.run("telemetryctl", &["flush"])
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

/// Ids per product in `bucket`, each key checked against the documented
/// layout `{prefix}/v1/product={p}/dt={day}/{machine8}-{first}-{last}.ndjson.zst`,
/// or in the broker's bucket `...-{last}-{digest}.ndjson.zst`, the digest
/// being the first 16 hex digits of the object's SHA-256.
fn ids_in(s3: &S3Server, bucket: &str, prefix: &str) -> BTreeMap<String, BTreeSet<String>> {
    let objects = s3.objects_in(bucket);
    for (key, body) in &objects {
        let file = key.rsplit('/').next().unwrap_or_default();
        let parts: Vec<&str> = file.trim_end_matches(".ndjson.zst").split('-').collect();
        let digest = (parts.len() == 4).then(|| parts[3]);
        if bucket == BROKER_BUCKET {
            let sha = telemetry_sink::broker::hex_sha256(body);
            assert_eq!(digest, Some(&sha[..16]), "{key}: the body's digest");
        } else {
            assert_eq!(digest, None, "{key}: no digest outside a broker's bucket");
        }
    }
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (key, line) in decode_objects(&objects) {
        let product = line["product"].as_str().unwrap().to_string();
        let start = format!("{prefix}/v1/product={product}/dt={}/", today());
        let file = key
            .strip_prefix(&start)
            .unwrap_or_else(|| panic!("{key} does not start with {start}"));
        let parts: Vec<&str> = file
            .strip_suffix(".ndjson.zst")
            .unwrap_or_else(|| panic!("{key}: not .ndjson.zst"))
            .split('-')
            .collect();
        let digest = usize::from(bucket == BROKER_BUCKET);
        assert_eq!(parts.len(), 3 + digest, "{key}");
        assert!(
            parts[0].len() == 8 && parts[0].chars().all(|c| c.is_ascii_hexdigit()),
            "{key}: machine8"
        );
        let (first, last): (i64, i64) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
        assert!(first <= last, "{key}");
        assert!(!key.contains(RAW_IDENTITY));
        if let Some(id) = line["id"].as_str() {
            out.entry(product).or_default().insert(id.to_string());
        }
    }
    out
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

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

#[test]
fn three_products_three_auth_modes_one_daemon_and_a_broker_outage() {
    let s3 = s3_server();
    let b = broker(&s3, &["toolc"], "127.0.0.1:0", &[]);
    let env = daemon_env(
        &s3,
        &[
            ("toolb", anonymous_upload(&s3)),
            ("toolc", broker_upload(&b)),
        ],
    );
    let d = env.start();
    let mut want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in ["cfdev", "toolb", "toolc"] {
        want.insert(p.into(), emit(&d, p, 3));
        shim(&env, p);
    }
    let out = flush(&env);
    assert!(out.status.success(), "{}", text(&out));

    // Each product in its own bucket only, every event there (3 with
    // known ids + 1 from the shim), keys in the documented layout.
    let own = ids_in(&s3, BUCKET, "e2e");
    let vendor = ids_in(&s3, VENDOR_BUCKET, VENDOR_PREFIX);
    let brokered = ids_in(&s3, BROKER_BUCKET, BROKER_PREFIX);
    for (got, product) in [(&own, "cfdev"), (&vendor, "toolb"), (&brokered, "toolc")] {
        assert_eq!(got.keys().collect::<Vec<_>>(), [product], "{got:?}");
        assert_eq!(got[product].len(), 4, "{product}: {got:?}");
        assert!(got[product].is_superset(&want[product]), "{product}");
    }
    assert_eq!(broker_answers(&b), (1, 0), "{}", b.log());
    // Each receipt names the key its object has in its bucket (the
    // broker's own, which ends in the body's hash), with its bytes' hash.
    let receipts = env.run("telemetryctl", &["receipts", "--json"]);
    let receipts: serde_json::Value = serde_json::from_slice(&receipts.stdout).unwrap();
    let list = receipts["receipts"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{receipts}");
    for r in list {
        let key = r["key"].as_str().unwrap();
        let body = [BUCKET, VENDOR_BUCKET, BROKER_BUCKET]
            .iter()
            .find_map(|b| s3.objects_in(b).remove(key))
            .unwrap_or_else(|| panic!("no object {key} in any bucket: {receipts}"));
        assert_eq!(
            r["sha256"],
            telemetry_sink::broker::hex_sha256(&body),
            "{key}"
        );
    }

    // Status lists the three destinations with their auth modes.
    let json = env.run("telemetryctl", &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let modes: BTreeSet<&str> = v["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["auth"].as_str().unwrap())
        .collect();
    assert_eq!(modes, BTreeSet::from(["anonymous", "aws", "broker"]), "{v}");
    let s = status(&d);
    assert_eq!(s.destinations.len(), 3);
    for (p, auth) in [
        ("cfdev", "aws"),
        ("toolb", "anonymous"),
        ("toolc", "broker"),
    ] {
        let x = dest(&s, p);
        assert_eq!((x.auth.as_str(), x.uploaded_events), (auth, 4), "{x:?}");
        assert!(x.last_error.is_none(), "{x:?}");
    }
    assert_eq!(dest(&s, "toolc").destination, b.url);

    // The broker goes away: the other two still deliver.
    let listen = b.stop();
    for p in ["cfdev", "toolb", "toolc"] {
        want.get_mut(p).unwrap().extend(emit(&d, p, 2));
    }
    let out = flush(&env);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains(&listen),
        "names the broker: {}",
        text(&out)
    );
    assert_eq!(ids_in(&s3, BUCKET, "e2e")["cfdev"].len(), 6);
    assert_eq!(ids_in(&s3, VENDOR_BUCKET, VENDOR_PREFIX)["toolb"].len(), 6);
    assert_eq!(ids_in(&s3, BROKER_BUCKET, BROKER_PREFIX)["toolc"].len(), 4);
    let s = status(&d);
    let c = dest(&s, "toolc");
    assert!(
        c.last_error.is_some() && c.next_attempt_us.is_some(),
        "{c:?}"
    );
    assert_eq!(c.pending_batches, 1);
    assert!(dest(&s, "cfdev").last_error.is_none());
    assert!(dest(&s, "toolb").last_error.is_none());
    assert_eq!(s.pending_events, 2, "only toolc's wait");

    // Back on the same address: what waited goes, to the broker's bucket.
    let b = broker(&s3, &["toolc"], &listen, &[]);
    let out = flush(&env);
    assert!(out.status.success(), "{}", text(&out));
    let brokered = ids_in(&s3, BROKER_BUCKET, BROKER_PREFIX);
    assert_eq!(brokered["toolc"].len(), 6);
    assert!(brokered["toolc"].is_superset(&want["toolc"]));
    assert_eq!(broker_answers(&b), (1, 0));
    let s = status(&d);
    assert!(s.destinations.iter().all(|d| d.last_error.is_none()));
    assert_eq!(s.pending_events, 0);
    assert!(!d.log().contains(RAW_IDENTITY));
}

#[test]
fn the_brokers_429_makes_the_daemon_wait_for_retry_after() {
    let s3 = s3_server();
    // One request per (product, machine8) every 8 s.
    let b = broker(
        &s3,
        &["toolc"],
        "127.0.0.1:0",
        &[("TELEMETRY_BROKER_PER_MACHINE", "1/8s")],
    );
    let mut env = daemon_env(&s3, &[("toolc", broker_upload(&b))]);
    // Uploads on their own every second, retries after 200 ms..1 s: only
    // Retry-After keeps the daemon away for longer.
    env.extra
        .push(("TELEMETRY_UPLOAD_INTERVAL".into(), "1s".into()));
    let d = env.start();
    let mut want = emit(&d, "toolc", 2);
    assert!(flush(&env).status.success());
    want.extend(emit(&d, "toolc", 3));
    let out = flush(&env);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("retry in"), "{}", text(&out));

    let s = status(&d);
    let c = dest(&s, "toolc");
    let error = c.last_error.clone().unwrap_or_default();
    assert!(error.contains("asked to retry in"), "{c:?}");
    let next = c.next_attempt_us.expect("a next attempt");
    let away = Duration::from_micros((next - now_us()).max(0) as u64);
    assert!(
        away >= Duration::from_secs(4) && away <= Duration::from_secs(9),
        "next attempt {away:?} away, not Retry-After: {c:?}"
    );
    assert_eq!(c.pending_batches, 1);

    // Until then the daemon leaves the broker alone (with its 1 s retry
    // cap it would have asked about 5 times).
    let (granted, refused) = broker_answers(&b);
    assert!(refused >= 1);
    let quiet_until = Instant::now() + away - Duration::from_secs(1);
    while Instant::now() < quiet_until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(broker_answers(&b), (granted, refused), "{}", b.log());

    // Then it comes back by itself and delivers.
    wait_for("the throttled batch", Duration::from_secs(20), || {
        (ids_in(&s3, BROKER_BUCKET, BROKER_PREFIX)
            .get("toolc")
            .map_or(0, BTreeSet::len)
            == 5)
            .then_some(())
    });
    assert_eq!(ids_in(&s3, BROKER_BUCKET, BROKER_PREFIX)["toolc"], want);
    let (_, refused_after) = broker_answers(&b);
    assert!(refused_after <= refused + 1, "{}", b.log());
    wait_for("the error to clear", TIMEOUT, || {
        dest(&status(&d), "toolc")
            .last_error
            .is_none()
            .then_some(())
    });
}

#[test]
fn the_brokers_400_and_413_are_shown_and_the_events_kept() {
    let s3 = s3_server();
    // One broker caps batches at 16 bytes (413, bytes); the other has no
    // manifest for the product (400, product).
    let small = broker(
        &s3,
        &["toolc"],
        "127.0.0.1:0",
        &[("TELEMETRY_BROKER_MAX_BYTES", "16")],
    );
    let other = broker(&s3, &["elsewhere"], "127.0.0.1:0", &[]);
    let env = daemon_env(
        &s3,
        &[
            ("toolc", broker_upload(&small)),
            ("toold", broker_upload(&other)),
        ],
    );
    let d = env.start();
    let mut want = emit(&d, "toolc", 3);
    want.extend(emit(&d, "toold", 2));
    let out = flush(&env);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    let s = status(&d);
    let (c, e) = (dest(&s, "toolc"), dest(&s, "toold"));
    let (ce, ee) = (c.last_error.clone().unwrap(), e.last_error.clone().unwrap());
    assert!(
        ce.contains("HTTP 413") && ce.contains("field bytes"),
        "{ce}"
    );
    assert!(
        ee.contains("HTTP 400") && ee.contains("field product"),
        "{ee}"
    );
    assert_eq!((c.pending_batches, e.pending_batches), (1, 1));
    assert_eq!(s.pending_events, 5, "kept, not dropped");
    let log = d.log();
    assert!(
        log.contains("HTTP 413") && log.contains("field bytes"),
        "{log}"
    );
    assert!(
        log.contains("HTTP 400") && log.contains("field product"),
        "{log}"
    );
    assert!(s3.objects_in(BROKER_BUCKET).is_empty());

    // The vendor fixes both brokers: the kept batches go as they were.
    let (a1, a2) = (small.stop(), other.stop());
    let _small = broker(&s3, &["toolc"], &a1, &[]);
    let _other = broker(&s3, &["toold"], &a2, &[]);
    let out = flush(&env);
    assert!(out.status.success(), "{}", text(&out));
    let got = ids_in(&s3, BROKER_BUCKET, BROKER_PREFIX);
    let all: BTreeSet<String> = got.values().flatten().cloned().collect();
    assert_eq!(all, want);
    assert_eq!(status(&d).pending_events, 0);
}

/// A batch or a product its broker refuses does not hold back the
/// batches behind it at the same broker: those go, the refused ones are
/// kept and offered again at the next drain, and a refused product costs
/// one request per drain, not one per batch.
#[test]
fn a_refused_batch_or_product_does_not_hold_back_the_ones_behind_it() {
    let s3 = s3_server();
    // One broker for both products: it caps batches at 2,000 bytes and
    // has no manifest for toold.
    let b = broker(
        &s3,
        &["toolc"],
        "127.0.0.1:0",
        &[("TELEMETRY_BROKER_MAX_BYTES", "2000")],
    );
    let mut env = daemon_env(
        &s3,
        &[("toolc", broker_upload(&b)), ("toold", broker_upload(&b))],
    );
    // Refused batches are offered again at the slow cap (`retry_max`):
    // far off here, so only the flushes drain and the broker's count of
    // refusals below is theirs alone.
    env.extra.retain(|(k, _)| k != "TELEMETRY_RETRY_MAX");
    env.extra.push(("TELEMETRY_RETRY_MAX".into(), "10m".into()));
    let d = env.start();
    // The oldest batches are the refused ones: a big toolc batch (413,
    // bytes; 200 random ids do not compress under 2,000 bytes), then two
    // toold batches (400, product).
    let mut kept = emit(&d, "toolc", 200);
    assert_eq!(flush(&env).status.code(), Some(3));
    for _ in 0..2 {
        kept.extend(emit(&d, "toold", 1));
        assert_eq!(flush(&env).status.code(), Some(3));
    }
    let refused_before = broker_answers(&b).1;
    let small = emit(&d, "toolc", 2);
    let out = flush(&env);
    assert_eq!(
        out.status.code(),
        Some(3),
        "refusals remain: {}",
        text(&out)
    );

    let got = ids_in(&s3, BROKER_BUCKET, BROKER_PREFIX);
    assert_eq!(got.get("toolc"), Some(&small), "the batch behind went");
    assert!(!got.contains_key("toold"));
    assert_eq!(
        broker_answers(&b).1 - refused_before,
        2,
        "the big batch and toold's first batch asked once each; toold's second passed over"
    );
    let s = status(&d);
    assert_eq!(s.pending_events, kept.len() as u64, "kept, not dropped");
    let e = dest(&s, "toolc").last_error.clone().unwrap_or_default();
    assert!(e.contains("HTTP 413") || e.contains("HTTP 400"), "{e:?}");
    assert!(
        d.log().contains("the batches behind it go on"),
        "{}",
        d.log()
    );
}

#[test]
fn the_brokers_410_retires_one_product_and_the_others_go_on() {
    let s3 = s3_server();
    let b = broker(
        &s3,
        &["toolc"],
        "127.0.0.1:0",
        &[("TELEMETRY_BROKER_RETIRED", "toolc")],
    );
    let env = daemon_env(&s3, &[("toolc", broker_upload(&b))]);
    let d = env.start();
    emit(&d, "toolc", 3);
    let mut own = emit(&d, "cfdev", 2);
    let out = flush(&env);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ids_in(&s3, BUCKET, "e2e")["cfdev"], own);
    assert!(s3.objects_in(BROKER_BUCKET).is_empty());
    assert_eq!(broker_answers(&b), (0, 1));

    let s = status(&d);
    let c = dest(&s, "toolc");
    assert_eq!(c.retired, [("toolc".to_string(), 3)], "{c:?}");
    assert_eq!((c.pending_batches, c.last_error.as_deref()), (0, None));
    assert_eq!(s.pending_events, 0, "what was pending for it is dropped");
    assert!(d.log().contains("retired"), "{}", d.log());
    let human = env.run("telemetryctl", &["status"]);
    assert!(text(&human).contains("retired"), "{}", text(&human));
    let doctor = env.run("telemetryctl", &["doctor"]);
    assert!(
        text(&doctor).contains("WARN drops") && text(&doctor).contains("retired toolc"),
        "{}",
        text(&doctor)
    );
    // Not also a failure to fix at the broker: it is not asked about a
    // product it retired.
    assert!(
        !text(&doctor).contains("does not accept toolc"),
        "{}",
        text(&doctor)
    );

    // Later events for it are taken, then dropped and counted, never
    // uploaded, also after a restart; cfdev's still go.
    let mut d = d;
    for restart in [false, true] {
        if restart {
            d.terminate().expect("clean stop");
            d = env.start();
        }
        let mut client = d.client();
        for _ in 0..2 {
            let ev = event("toolc", "ran", "1.0.0", BTreeMap::new());
            client.emit(vec![ev], TIMEOUT).expect("taken");
        }
        own.extend(emit(&d, "cfdev", 1));
        let out = flush(&env);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_eq!(ids_in(&s3, BUCKET, "e2e")["cfdev"], own);
    assert_eq!(
        broker_answers(&b),
        (0, 1),
        "no request for a retired product"
    );
    let s = status(&d);
    assert_eq!(s.pending_events, 0);
    assert_eq!(dest(&s, "toolc").retired, [("toolc".to_string(), 7)]);
    assert!(s3.objects_in(BROKER_BUCKET).is_empty());
    // Forgetting it records no marker that could never go out: the user
    // is given the old ID instead.
    let out = env.run("telemetryctl", &["forget", "toolc", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["marker"], false, "{r}");
    assert_eq!(status(&d).pending_events, 0);
}

/// A retired build (`PRODUCT@BUILD`) drops only the batches that hold
/// nothing else, counted: the product is not retired, and its batches of a
/// live build (the machine upgraded) are uploaded.
#[test]
fn a_retired_build_drops_its_batch_and_the_products_next_build_goes_on() {
    let s3 = s3_server();
    let b = broker(
        &s3,
        &["toolc"],
        "127.0.0.1:0",
        &[("TELEMETRY_BROKER_RETIRED", "toolc@1.0.0")],
    );
    let env = daemon_env(&s3, &[("toolc", broker_upload(&b))]);
    let d = env.start();
    emit(&d, "toolc", 3);
    let out = flush(&env);
    assert!(out.status.success(), "{}", text(&out));
    assert!(s3.objects_in(BROKER_BUCKET).is_empty());
    assert_eq!(broker_answers(&b), (0, 1));
    let s = status(&d);
    assert!(dest(&s, "toolc").retired.is_empty(), "{s:?}");
    assert_eq!(s.pending_events, 0, "the retired build's batch is dropped");
    // Counted as the destination's refusal, not as drops of a full store
    // (which status, doctor and the published report would call them).
    assert!(s.dropped.is_empty(), "{:?}", s.dropped);
    assert_eq!(dest(&s, "toolc").refused_events, 3, "{s:?}");
    let why = dest(&s, "toolc").refused_why.clone().unwrap_or_default();
    assert!(why.contains("410") || why.contains("retired"), "{why}");
    let human = env.run("telemetryctl", &["status"]);
    assert!(
        text(&human).contains("refused for good: 3 events dropped")
            && !text(&human).contains("the store was full"),
        "{}",
        text(&human)
    );

    let mut client = d.client();
    let mut live = BTreeSet::new();
    for _ in 0..2 {
        let ev = event("toolc", "ran", "2.0.0", BTreeMap::new());
        live.insert(ev.id.to_string());
        client.emit(vec![ev], TIMEOUT).expect("acked");
    }
    let out = flush(&env);
    assert!(out.status.success(), "{}", text(&out));
    // The live build's events, and no `telemetry_dropped` line: the vendor
    // refused the retired build's events, no full store dropped them.
    let lines = decode_objects(&s3.objects_in(BROKER_BUCKET));
    let uploaded: BTreeSet<String> = lines
        .iter()
        .map(|(_, v)| v["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(uploaded, live, "{lines:?}");
    assert_eq!(broker_answers(&b), (1, 1), "{}", b.log());
    assert!(status(&d).dropped.is_empty());
    let doctor = env.run("telemetryctl", &["doctor"]);
    assert!(
        !text(&doctor).contains("retired toolc"),
        "{}",
        text(&doctor)
    );
    // A forget made with the retired build still reaches the vendor: the
    // marker is the user's request, not the build's behaviour.
    let out = env.run(
        "telemetryctl",
        &["forget", "toolc", "--build", "1.0.0", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["marker"], true, "{r}");
    assert!(r["marker_key"].is_string(), "sent at once: {r}");
    let lines = decode_objects(&s3.objects_in(BROKER_BUCKET));
    assert!(
        lines.iter().any(|(_, v)| v["event"] == "telemetry_forget"),
        "{lines:?}"
    );
}

/// Two products on one broker, one of which it has no manifest for:
/// `doctor`'s fix names both manifests that name the broker, not the first
/// product's alone (which would blame a file that is fine).
#[test]
fn doctor_names_every_manifest_that_names_a_broker() {
    let s3 = s3_server();
    let b = broker(&s3, &["toolc"], "127.0.0.1:0", &[]);
    let env = daemon_env(
        &s3,
        &[("toolc", broker_upload(&b)), ("toold", broker_upload(&b))],
    );
    let _d = env.start();
    let doctor = text(&env.run("telemetryctl", &["doctor"]));
    let catalog = env.root().join("catalog");
    assert!(doctor.contains("does not accept toold"), "{doctor}");
    for file in ["toolc.toml", "toold.toml"] {
        assert!(
            doctor.contains(&catalog.join(file).display().to_string()),
            "{file}: {doctor}"
        );
    }
}

/// A destination that asked to wait (`429` with `Retry-After`) is not
/// contacted again because the daemon stops: its events stay for the next
/// start.
#[test]
fn a_throttled_destination_is_not_asked_again_on_shutdown() {
    let s3 = s3_server();
    let b = broker(
        &s3,
        &["toolc"],
        "127.0.0.1:0",
        &[("TELEMETRY_BROKER_PER_ADDRESS", "1/1h")],
    );
    let env = daemon_env(&s3, &[("toolc", broker_upload(&b))]);
    let d = env.start();
    emit(&d, "toolc", 1);
    assert!(flush(&env).status.success());
    emit(&d, "toolc", 2);
    let out = flush(&env);
    assert!(!out.status.success(), "throttled: {}", text(&out));
    assert_eq!(broker_answers(&b), (1, 1), "{}", b.log());
    let s = status(&d);
    assert!(dest(&s, "toolc").next_attempt_us.is_some(), "backing off");
    d.terminate().expect("clean stop");
    assert_eq!(
        broker_answers(&b),
        (1, 1),
        "asked again on the way out: {}",
        b.log()
    );
    // Kept, and sent by the next start once allowed (not tested here: an
    // hour), so nothing was lost by not asking.
    let d = env.start();
    assert_eq!(status(&d).pending_events, 2);
}

#[test]
fn a_batch_replayed_through_the_broker_gets_412_and_counts_as_delivered() {
    let s3 = s3_server();
    let b = broker(&s3, &["toolc"], "127.0.0.1:0", &[]);
    let env = daemon_env(&s3, &[("toolc", broker_upload(&b))]);
    let d = env.start();
    let want = emit(&d, "toolc", 3);
    // The state as a crash would leave it: committed, not uploaded.
    d.kill9();
    let snapshot = env.root().join("state-snapshot");
    copy_dir(&env.state, &snapshot);

    let d = env.start();
    let out = flush(&env);
    assert!(out.status.success(), "{}", text(&out));
    let first = s3.objects_in(BROKER_BUCKET);
    assert_eq!(first.len(), 1);
    d.kill9();

    // As if the answer had been lost: the same batch goes again.
    std::fs::remove_dir_all(&env.state).unwrap();
    copy_dir(&snapshot, &env.state);
    let d = env.start();
    let out = env.run("telemetryctl", &["flush", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["events"], 3, "delivered: {report}");
    assert_eq!(s3.objects_in(BROKER_BUCKET), first, "no second object");
    assert_eq!(ids_in(&s3, BROKER_BUCKET, BROKER_PREFIX)["toolc"], want);
    assert_eq!(broker_answers(&b), (2, 0), "granted twice: {}", b.log());
    let s = status(&d);
    let c = dest(&s, "toolc");
    assert_eq!((c.already_there, c.uploaded_events), (1, 3), "{c:?}");
    assert!(c.last_error.is_none());
    assert_eq!(s.pending_events, 0);
    assert!(d.log().contains("already_there=true"), "{}", d.log());
}

/// A batch the broker refuses for its day, once that day is over 60 days
/// old (a machine offline past the vendor's window), is dropped instead of
/// holding back every batch behind it, and shown per destination as
/// refused for good (the broker that refused it logged it).
#[test]
fn a_batch_refused_for_a_day_long_past_is_dropped_shown_and_the_next_goes() {
    let s3 = s3_server();
    let b = broker(&s3, &["toolc"], "127.0.0.1:0", &[]);
    let env = daemon_env(&s3, &[("toolc", broker_upload(&b))]);
    let d = env.start();
    emit(&d, "toolc", 3);
    // Its upload fails: the batch stays sealed.
    s3.set_fault(Fault::Status(500, "InternalError"));
    assert!(!flush(&env).status.success());
    d.kill9();
    // As a machine offline for 90 days holds it: sealed on a day long past.
    let old = humantime::format_rfc3339(SystemTime::now() - Duration::from_secs(90 * 86_400))
        .to_string()[..10]
        .to_string();
    let db = rusqlite::Connection::open(env.state.join("events.sqlite3")).unwrap();
    let changed = db
        .execute(
            "UPDATE batches SET key = substr(key, 1, instr(key, '/dt=') + 3) || ?1
                                   || substr(key, instr(key, '/dt=') + 14)",
            [&old],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);
    s3.set_fault(Fault::None);

    let d = env.start();
    let out = flush(&env);
    assert!(out.status.success(), "{}", text(&out));
    assert!(s3.objects_in(BROKER_BUCKET).is_empty());
    // Shown as the destination's refusal, with its reason; not counted as
    // a full store's drops (the broker that refused it logged it).
    let s = status(&d);
    assert!(s.dropped.is_empty(), "{:?}", s.dropped);
    assert_eq!(dest(&s, "toolc").refused_events, 3, "{s:?}");
    let why = dest(&s, "toolc").refused_why.clone().unwrap_or_default();
    assert!(why.contains("day"), "{why}");
    assert!(
        d.log().contains("refuses this batch for good"),
        "{}",
        d.log()
    );
    // The next batch goes, with no `telemetry_dropped` line.
    emit(&d, "toolc", 1);
    let out = flush(&env);
    assert!(out.status.success(), "{}", text(&out));
    let lines = decode_objects(&s3.objects_in(BROKER_BUCKET));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_ne!(lines[0].1["event"], "telemetry_dropped");
    // Still shown after a restart (an autostarted daemon idles out within
    // minutes): the store keeps it.
    assert!(d.terminate().unwrap().success());
    let d = env.start();
    let s = status(&d);
    assert_eq!(dest(&s, "toolc").refused_events, 3, "{s:?}");
    drop(d);
}
