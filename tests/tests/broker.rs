//! `telemetry-broker`: the real binary as a real HTTP server, signing for
//! the real in-process S3 server, driven over real HTTP and through
//! `telemetry_sink::broker::put_via_broker`, the daemon's client.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use telemetry_sink::broker::{hex_sha256, put_via_broker};

/// The daemon's HTTP client: no proxy, the platform's roots.
fn client() -> telemetry_sink::net::HttpClient {
    telemetry_sink::net::http_client(&Default::default()).expect("an HTTP client")
}
use telemetry_sink::put::Delivered;
use telemetry_sink::{BatchKey, UploadError};
use telemetry_tests::broker::{send, Answer, Broker, TODAY};
use telemetry_tests::{wait_for, Fault, S3Server, BUCKET};

fn key(first: i64, last: i64) -> BatchKey {
    BatchKey {
        product: "cfdev".into(),
        date: TODAY.into(),
        machine8: "0123abcd".into(),
        first,
        last,
    }
}

fn request(key: &BatchKey, body: &[u8]) -> serde_json::Value {
    serde_json::to_value(telemetry_sink::broker::UploadRequest::new(key, body)).unwrap()
}

fn ask(s3: &S3Server, broker: &Broker, req: &serde_json::Value) -> Answer {
    let url = format!("{}/v1/upload", broker.url);
    s3.block_on(send(
        "POST",
        &url,
        &[("content-type", "application/json")],
        serde_json::to_vec(req).unwrap(),
    ))
    .expect("POST /v1/upload")
}

/// A broker behind a trusted load balancer (`x-forwarded-for`), so a test
/// can speak from any address, with these per-address and per-network
/// limits.
fn forwarded(s3: &S3Server, per_address: &str, per_network: &str) -> Broker {
    Broker::start(
        s3,
        &[
            ("TELEMETRY_BROKER_CLIENT_IP_HEADER", "x-forwarded-for"),
            ("TELEMETRY_BROKER_PER_ADDRESS", per_address),
            ("TELEMETRY_BROKER_PER_NETWORK", per_network),
        ],
    )
}

/// Ask `broker` (see [`forwarded`]) for the `n`th batch's URL, from `ip`.
fn ask_from(s3: &S3Server, broker: &Broker, n: i64, ip: &str) -> Answer {
    let url = format!("{}/v1/upload", broker.url);
    let body = serde_json::to_vec(&request(&key(n, n), b"body")).unwrap();
    s3.block_on(send(
        "POST",
        &url,
        &[
            ("content-type", "application/json"),
            ("x-forwarded-for", ip),
        ],
        body,
    ))
    .expect("POST /v1/upload")
}

/// PUT `body` to a grant's URL with the granted headers, `edit` applied.
fn put(
    s3: &S3Server,
    grant: &serde_json::Value,
    body: &[u8],
    edit: impl FnOnce(&mut BTreeMap<String, String>),
) -> Answer {
    let mut headers: BTreeMap<String, String> =
        serde_json::from_value(grant["headers"].clone()).expect("grant headers");
    edit(&mut headers);
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    s3.block_on(send(
        "PUT",
        grant["url"].as_str().unwrap(),
        &pairs,
        body.to_vec(),
    ))
    .expect("PUT to the granted URL")
}

fn query_param(url: &str, name: &str) -> String {
    let query = url.split_once('?').expect("URL has a query").1;
    let raw = query
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} missing from {url}"));
    raw.replace("%3B", ";").replace("%3b", ";")
}

/// The key the broker grants for `body` under `k`'s parts.
fn object_key(k: &BatchKey, body: &[u8]) -> String {
    k.render_with_digest("", &hex_sha256(body))
}

#[test]
fn grant_is_write_once_and_bound_to_length_and_checksum() {
    let s3 = S3Server::start();
    let broker = Broker::start(&s3, &[]);
    let k = key(1, 10);
    let body = b"first batch body, compressed bytes in real life".to_vec();
    let answer = ask(&s3, &broker, &request(&k, &body));
    assert_eq!(answer.status, 200, "{}", answer.text());
    let grant = answer.json();
    let url = grant["url"].as_str().unwrap();
    assert_eq!(grant["method"], "PUT");
    let digest = &hex_sha256(&body)[..16];
    assert!(
        url.contains(&format!(
            "/{BUCKET}/v1/product%3Dcfdev/dt%3D{TODAY}/0123abcd-1-10-{digest}.ndjson.zst?"
        )),
        "the key is built from the validated parts and the body's hash: {url}"
    );
    assert_eq!(
        grant["key"],
        object_key(&k, &body),
        "the grant names its key"
    );
    let signed: Vec<String> = query_param(url, "X-Amz-SignedHeaders")
        .split(';')
        .map(str::to_string)
        .collect();
    for h in [
        "content-length",
        "content-type",
        "host",
        "if-none-match",
        "x-amz-checksum-sha256",
    ] {
        assert!(
            signed.contains(&h.to_string()),
            "{h} is not signed: {signed:?}"
        );
    }
    let expires: u64 = query_param(url, "X-Amz-Expires").parse().unwrap();
    assert!(expires <= 600 && expires > 0, "X-Amz-Expires={expires}");
    assert_eq!(grant["headers"]["if-none-match"], "*");

    // Tampering with any signed header breaks the signature.
    let other = vec![b'x'; body.len()];
    let forged = put(&s3, &grant, &other, |h| {
        h.insert(
            "x-amz-checksum-sha256".into(),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
        );
    });
    assert_eq!(forged.status, 403, "{}", forged.text());
    let no_condition = put(&s3, &grant, &body, |h| {
        h.remove("if-none-match");
    });
    assert_eq!(no_condition.status, 403, "{}", no_condition.text());
    let longer = put(&s3, &grant, &[body.clone(), b"!".to_vec()].concat(), |h| {
        h.insert("content-length".into(), (body.len() + 1).to_string());
    });
    assert_eq!(longer.status, 403, "{}", longer.text());
    // A caller's own body served as a web page from the bucket: refused.
    assert_eq!(grant["headers"]["content-type"], "application/zstd");
    let as_html = put(&s3, &grant, &body, |h| {
        h.insert("content-type".into(), "text/html".into());
    });
    assert_eq!(as_html.status, 403, "{}", as_html.text());
    let untyped = put(&s3, &grant, &body, |h| {
        h.remove("content-type");
    });
    assert_eq!(untyped.status, 403, "{}", untyped.text());
    assert!(s3.objects().is_empty(), "no forged request stored anything");

    // The right body is stored as sent.
    let stored = put(&s3, &grant, &body, |_| {});
    assert_eq!(stored.status, 200, "{}", stored.text());
    let objects = s3.objects();
    assert_eq!(objects.get(&object_key(&k, &body)), Some(&body));

    // Replaying the URL, with the same or another body of the same length,
    // cannot overwrite.
    let again = put(&s3, &grant, &body, |_| {});
    assert_eq!(again.status, 412, "{}", again.text());
    // Another body fails its signed checksum (400 BadDigest) before the
    // key's condition is looked at (412); either way nothing is written.
    let replaced = put(&s3, &grant, &other, |_| {});
    assert!(
        matches!(replaced.status, 400 | 412),
        "{} {}",
        replaced.status,
        replaced.text()
    );
    assert_eq!(s3.objects(), objects, "the stored object is unchanged");
}

#[test]
fn another_body_on_a_fresh_url_is_refused_by_the_store() {
    let s3 = S3Server::start();
    let broker = Broker::start(&s3, &[]);
    let k = key(11, 20);
    let body = b"the batch the broker was told about".to_vec();
    let grant = ask(&s3, &broker, &request(&k, &body)).json();
    let other = vec![b'y'; body.len()];
    let refused = put(&s3, &grant, &other, |_| {});
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("BadDigest"), "{}", refused.text());
    // The test server checks the body before the object becomes visible
    // (as S3 does): nothing was stored, so the key is still free and the
    // announced body goes through the same URL.
    assert!(s3.objects().is_empty(), "{:?}", s3.objects().keys());
    let stored = put(&s3, &grant, &body, |_| {});
    assert_eq!(stored.status, 200, "{}", stored.text());
    assert_eq!(s3.objects().get(&object_key(&k, &body)), Some(&body));
}

#[test]
fn put_via_broker_stores_once_and_a_replay_is_delivered() {
    let s3 = S3Server::start();
    let broker = Broker::start(&s3, &[]);
    let k = key(21, 30);
    let body = b"a batch sent through the daemon's client".to_vec();
    let first = s3
        .block_on(put_via_broker(
            &client(),
            &broker.url,
            &k,
            body.clone(),
            Duration::from_secs(20),
        ))
        .expect("first put");
    assert_eq!(first.delivered, Delivered::Stored);
    assert_eq!(first.key.as_deref(), Some(object_key(&k, &body).as_str()));
    let again = s3
        .block_on(put_via_broker(
            &client(),
            &broker.url,
            &k,
            body.clone(),
            Duration::from_secs(20),
        ))
        .expect("replayed put");
    assert_eq!(
        again.delivered,
        Delivered::AlreadyThere,
        "a replay is delivered, not an error"
    );
    let objects = s3.objects();
    assert_eq!(objects.len(), 1, "no second object: {:?}", objects.keys());
    assert_eq!(objects.get(&object_key(&k, &body)), Some(&body));
}

#[test]
fn a_caller_who_claims_another_machines_parts_cannot_take_its_key() {
    // Anyone may claim any machine8 and sequence numbers. A squatter who
    // guessed a machine's next batch and stored a body of its own under
    // those parts first must not make the machine's own upload meet 412
    // (which the daemon counts as delivered, and drops the batch).
    let s3 = S3Server::start();
    let broker = Broker::start(&s3, &[]);
    let k = key(41, 50);
    let forged = b"made-up events under someone else's machine8".to_vec();
    let grant = ask(&s3, &broker, &request(&k, &forged)).json();
    assert_eq!(put(&s3, &grant, &forged, |_| {}).status, 200);
    let real = b"the machine's own batch".to_vec();
    let delivered = s3
        .block_on(put_via_broker(
            &client(),
            &broker.url,
            &k,
            real.clone(),
            Duration::from_secs(20),
        ))
        .expect("the real batch goes");
    assert_eq!(
        delivered.delivered,
        Delivered::Stored,
        "stored, not taken for already there"
    );
    let objects = s3.objects();
    assert_eq!(objects.get(&object_key(&k, &real)), Some(&real));
    assert_eq!(objects.get(&object_key(&k, &forged)), Some(&forged));
    assert_eq!(delivered.key, Some(object_key(&k, &real)));
}

#[test]
fn an_expired_url_is_refused_and_asked_for_again() {
    let s3 = S3Server::start();
    let broker = Broker::start(&s3, &[("TELEMETRY_BROKER_URL_LIFETIME", "1s")]);
    let k = key(31, 40);
    let body = b"a batch on a slow link".to_vec();
    let asked = SystemTime::now();
    let grant = ask(&s3, &broker, &request(&k, &body)).json();
    let date = query_param(grant["url"].as_str().unwrap(), "X-Amz-Date");
    let lives = query_param(grant["url"].as_str().unwrap(), "X-Amz-Expires");
    let expires = humantime::parse_rfc3339(grant["expires_at"].as_str().unwrap()).unwrap();
    // Signed at a whole second, it lives at least the lifetime from the
    // ask (a second more when the clock was past a whole second), and
    // `expires_at` is the signature's true end.
    assert!(lives == "1" || lives == "2", "{lives}");
    assert!(expires >= asked + Duration::from_secs(1), "{grant}");
    let signed = humantime::parse_rfc3339(&format!(
        "{}-{}-{}T{}:{}:{}Z",
        &date[0..4],
        &date[4..6],
        &date[6..8],
        &date[9..11],
        &date[11..13],
        &date[13..15]
    ))
    .unwrap();
    assert_eq!(
        expires,
        signed + Duration::from_secs(lives.parse().unwrap()),
        "{grant}"
    );
    wait_for("the URL to expire", Duration::from_secs(10), || {
        (SystemTime::now() > expires + Duration::from_secs(1)).then_some(())
    });
    let late = put(&s3, &grant, &body, |_| {});
    assert_eq!(late.status, 403, "{}", late.text());
    assert!(late.text().contains("expired"), "{}", late.text());
    assert!(s3.objects().is_empty());

    // The store holds put_via_broker's first PUT past the URL's life; the
    // client asks the broker again and the second URL works.
    s3.set_fault(Fault::SlowOnce(Duration::from_millis(2500)));
    let delivered = s3
        .block_on(put_via_broker(
            &client(),
            &broker.url,
            &k,
            body.clone(),
            Duration::from_secs(30),
        ))
        .expect("put after asking again");
    assert_eq!(delivered.delivered, Delivered::Stored);
    assert_eq!(s3.objects().get(&object_key(&k, &body)), Some(&body));
    let grants = broker.log().matches("granted cfdev/").count();
    assert_eq!(
        grants,
        3,
        "one grant above, two for put_via_broker:\n{}",
        broker.log()
    );
}

#[test]
fn each_bad_field_is_named() {
    let s3 = S3Server::start();
    let broker = Broker::start(&s3, &[]);
    let good = request(&key(1, 2), b"body");
    let cases: &[(&str, serde_json::Value, u16)] = &[
        ("product", serde_json::json!("nosuchproduct"), 400),
        ("product", serde_json::json!("broken"), 400),
        ("product", serde_json::json!("../etc"), 400),
        ("day", serde_json::json!("2026-10-12"), 400),
        ("day", serde_json::json!("2026-11-29"), 400),
        ("day", serde_json::json!("2026-02-30"), 400),
        ("machine8", serde_json::json!("0123ABCD"), 400),
        ("machine8", serde_json::json!("../../x"), 400),
        ("first_seq", serde_json::json!(0), 400),
        ("last_seq", serde_json::json!(1), 400),
        ("sha256", serde_json::json!("not-hex"), 400),
        (
            "sha256",
            serde_json::json!(hex_sha256(b"x").to_uppercase()),
            400,
        ),
        ("bytes", serde_json::json!(0), 400),
        ("bytes", serde_json::json!(8 * 1024 * 1024 + 1), 413),
        // Logged with a refusal: a daemon's build names only.
        ("builds", serde_json::json!(["<script>"]), 400),
        ("builds", serde_json::json!(["a b\nforged log line"]), 400),
        ("builds", serde_json::json!([""]), 400),
        // Past i64 (JSON reads it as a float): said so, not "required".
        ("last_seq", serde_json::json!(1e20), 400),
    ];
    for (field, value, status) in cases {
        let mut req = good.clone();
        req[*field] = value.clone();
        if *field == "last_seq" {
            req["first_seq"] = serde_json::json!(5);
        }
        let answer = ask(&s3, &broker, &req);
        assert_eq!(answer.status, *status, "{field}={value}: {}", answer.text());
        assert_eq!(
            answer.json()["error"]["field"],
            *field,
            "{field}={value}: {}",
            answer.text()
        );
    }
    // Missing fields, a non-object and an oversized request.
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("day");
    assert_eq!(ask(&s3, &broker, &missing).json()["error"]["field"], "day");
    let answer = ask(&s3, &broker, &serde_json::json!([1, 2]));
    assert_eq!(
        (answer.status, answer.json()["error"]["field"].clone()),
        (400, "body".into())
    );
    let mut huge = good.clone();
    huge["padding"] = serde_json::json!("x".repeat(10_000));
    let answer = ask(&s3, &broker, &huge);
    assert_eq!(
        (answer.status, answer.json()["error"]["field"].clone()),
        (413, "body".into())
    );
    // The broken manifest is named with its line, and disables only itself.
    let log = broker.log();
    assert!(
        log.contains("broken.toml") && log.contains("line 2"),
        "{log}"
    );
    assert_eq!(ask(&s3, &broker, &good).status, 200, "cfdev still works");
    assert!(s3.objects().is_empty(), "a grant alone writes nothing");

    // The client maps 400 and 413 to Rejected, naming the field.
    let big = vec![0u8; 8 * 1024 * 1024 + 1];
    match s3.block_on(put_via_broker(
        &client(),
        &broker.url,
        &key(3, 4),
        big,
        Duration::from_secs(20),
    )) {
        Err(UploadError::Rejected {
            status: 413,
            field: Some(f),
            ..
        }) => assert_eq!(f, "bytes"),
        other => panic!("expected Rejected 413 bytes, got {other:?}"),
    }
    let mut old = key(5, 6);
    old.date = "2020-01-01".into();
    match s3.block_on(put_via_broker(
        &client(),
        &broker.url,
        &old,
        b"x".to_vec(),
        Duration::from_secs(20),
    )) {
        Err(e @ UploadError::Rejected { status: 400, .. }) => {
            assert!(e.is_permanent());
            assert!(e.to_string().contains("field day"), "{e}");
        }
        other => panic!("expected Rejected 400 day, got {other:?}"),
    }
}

#[test]
fn an_ipv6_site_shares_one_allowance_across_its_64s() {
    let s3 = S3Server::start();
    let broker = forwarded(&s3, "1/1h", "3/1h");
    let mut n = 0;
    let mut from = |ip: &str| {
        n += 1;
        ask_from(&s3, &broker, n, ip)
    };
    // Three /64s of one /48, each inside its own limit, use up the site's;
    // a fourth /64 of it is refused. A /64 over its own limit is refused
    // as itself and takes nothing from the site's (checked in that order:
    // otherwise the third /64 would be refused)...
    assert_eq!(from("2001:db8:1:1::1").status, 200);
    let own = from("2001:db8:1:1::2");
    assert_eq!(own.status, 429, "{}", own.text());
    let message = own.json()["error"]["message"].to_string();
    assert!(message.contains("this address"), "{message}");
    for ip in ["2001:db8:1:2::1", "2001:db8:1:3::1"] {
        assert_eq!(from(ip).status, 200, "{ip}");
    }
    let limited = from("2001:db8:1:4::1");
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert!(limited.headers.contains_key("retry-after"));
    // Named as the network's limit, not the address's own: no field.
    assert!(limited.json()["error"].get("field").is_none());
    let message = limited.json()["error"]["message"].to_string();
    assert!(message.contains("network (the IPv6 /48"), "{message}");
    // ...while another site is not, nor IPv4 clients, which are limited per
    // address only.
    assert_eq!(from("2001:db8:2::1").status, 200);
    for ip in ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"] {
        assert_eq!(from(ip).status, 200, "{ip}");
    }
}

/// A request refused because its network's allowance is used up takes
/// nothing from its address's own: once the network refills, that address
/// gets its turn (here its only one an hour).
#[test]
fn a_request_refused_for_its_network_keeps_its_address_allowance() {
    let s3 = S3Server::start();
    // The network gets a token every 2 s: a refill quick to wait for, and
    // far slower than the few requests before the refusal (even on a
    // loaded machine).
    let broker = forwarded(&s3, "1/1h", "2/4s");
    let mut n = 0;
    let mut from = |ip: &str| {
        n += 1;
        ask_from(&s3, &broker, n, ip)
    };
    for ip in ["2001:db8:5:1::1", "2001:db8:5:2::1"] {
        assert_eq!(from(ip).status, 200, "{ip}");
    }
    let third = "2001:db8:5:3::1";
    let refused = from(third);
    assert_eq!(refused.status, 429, "{}", refused.text());
    let message = refused.json()["error"]["message"].to_string();
    assert!(message.contains("network"), "{message}");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let later = from(third);
    assert_eq!(
        later.status,
        200,
        "the network refilled and the address never used its own token: {}",
        later.text()
    );
    let again = from(third);
    assert_eq!(again.status, 429, "{}", again.text());
    let message = again.json()["error"]["message"].to_string();
    assert!(message.contains("this address"), "{message}");
}

/// A cross-site POST from a web page (`text/plain`, no preflight) is
/// refused before it can spend anyone's allowance.
#[test]
fn a_request_that_is_not_json_is_refused_before_any_limit() {
    let s3 = S3Server::start();
    let broker = forwarded(&s3, "1/1h", "1/1h");
    let url = format!("{}/v1/upload", broker.url);
    let body = serde_json::to_vec(&request(&key(1, 1), b"body")).unwrap();
    for content_type in [
        &["text/plain"][..],
        &["application/x-www-form-urlencoded"],
        &[],
        // Two, one of them JSON: which counts would be the parser's pick.
        &["application/json", "text/plain"],
    ] {
        let mut headers = vec![("x-forwarded-for", "2001:db8:7::1")];
        headers.extend(content_type.iter().map(|t| ("content-type", *t)));
        let refused = s3
            .block_on(send("POST", &url, &headers, body.clone()))
            .expect("POST /v1/upload");
        assert_eq!(refused.status, 415, "{content_type:?}: {}", refused.text());
        assert_eq!(refused.json()["error"]["field"], "content-type");
        assert_eq!(refused.headers["x-content-type-options"], "nosniff");
    }
    // Free for the caller, so not a line each: a flood of them is logged
    // once a minute per network, with a count.
    for _ in 0..20 {
        let headers = [
            ("x-forwarded-for", "2001:db8:7::1"),
            ("content-type", "text/plain"),
        ];
        let refused = s3
            .block_on(send("POST", &url, &headers, body.clone()))
            .expect("POST /v1/upload");
        assert_eq!(refused.status, 415);
    }
    let log = broker.log();
    assert_eq!(
        log.matches("refused: ").count(),
        1,
        "one line for 24 refusals: {log}"
    );
    // The address and its network still have their one request an hour.
    let headers = [
        ("x-forwarded-for", "2001:db8:7::1"),
        ("content-type", "application/json; charset=utf-8"),
    ];
    let granted = s3
        .block_on(send("POST", &url, &headers, body))
        .expect("POST /v1/upload");
    assert_eq!(granted.status, 200, "{}", granted.text());
}

/// The client-address header is believed only from a load balancer's
/// network (`trusted_proxies`): from anyone else it is the client's own
/// claim, and a fresh address per request would escape every limit.
#[test]
fn the_client_address_header_is_believed_only_from_trusted_proxies() {
    let s3 = S3Server::start();
    let ask = |broker: &Broker, n: i64| ask_from(&s3, broker, n, &format!("198.51.100.{n}"));
    // 127.0.0.1 is not a trusted proxy here: every request is the peer's.
    let direct = Broker::start(
        &s3,
        &[
            ("TELEMETRY_BROKER_CLIENT_IP_HEADER", "x-forwarded-for"),
            ("TELEMETRY_BROKER_TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8"),
            ("TELEMETRY_BROKER_PER_ADDRESS", "2/1h"),
        ],
    );
    assert_eq!(ask(&direct, 1).status, 200);
    assert_eq!(ask(&direct, 2).status, 200);
    let limited = ask(&direct, 3);
    assert_eq!(
        limited.status,
        429,
        "another header, the same peer: {}",
        limited.text()
    );
    let log = direct.log();
    assert!(
        log.contains("not in --trusted-proxies"),
        "the operator is told: {log}"
    );
    assert!(!log.contains("TRUSTED_PROXIES is not"), "set here: {log}");
    // By default loopback and private ranges are trusted (a balancer in
    // front of the broker): each forwarded address has its own allowance.
    let behind = forwarded(&s3, "2/1h", "1000/1h");
    for n in 1..=3 {
        assert_eq!(ask(&behind, n).status, 200, "address {n}");
    }
}

/// What one caller may store is capped in bytes per IPv6 network or IPv4
/// address (`bytes_per_network`), whatever machine8 it claims: a grant's
/// URL is signed for exactly its `bytes`. A grant refused for another
/// reason gives its bytes back.
#[test]
fn granted_bytes_are_capped_per_network_whatever_machine_is_claimed() {
    let s3 = S3Server::start();
    let broker = Broker::start(
        &s3,
        &[
            ("TELEMETRY_BROKER_CLIENT_IP_HEADER", "x-forwarded-for"),
            ("TELEMETRY_BROKER_MAX_BYTES", "4096"),
            ("TELEMETRY_BROKER_BYTES_PER_NETWORK", "10KiB/1h"),
        ],
    );
    let url = format!("{}/v1/upload", broker.url);
    let ask = |machine8: &str, day: &str, ip: &str| {
        let k = BatchKey {
            machine8: machine8.into(),
            date: day.into(),
            ..key(1, 1)
        };
        let body = serde_json::to_vec(&request(&k, &[7u8; 4000])).unwrap();
        s3.block_on(send(
            "POST",
            &url,
            &[
                ("content-type", "application/json"),
                ("x-forwarded-for", ip),
            ],
            body,
        ))
        .unwrap()
    };
    assert_eq!(ask("0000000a", TODAY, "198.51.100.9").status, 200);
    // Refused for its day: its 4,000 bytes are given back.
    assert_eq!(ask("0000000b", "2001-01-01", "198.51.100.9").status, 400);
    assert_eq!(ask("0000000c", TODAY, "198.51.100.9").status, 200);
    let over = ask("0000000d", TODAY, "198.51.100.9");
    assert_eq!(over.status, 429, "{}", over.text());
    assert!(over.text().contains("bytes"), "{}", over.text());
    assert!(over.headers.contains_key("retry-after"));
    assert_eq!(
        ask("0000000e", TODAY, "198.51.100.10").status,
        200,
        "another address"
    );
    assert_eq!(ask("0000000f", TODAY, "2001:db8:5::1").status, 200);
    assert_eq!(ask("00000010", TODAY, "2001:db8:5:1::1").status, 200);
    assert_eq!(
        ask("00000011", TODAY, "2001:db8:5:2::1").status,
        429,
        "a third /64 of the same /48"
    );
}

/// A bad range in `trusted_proxies` stops the broker at start, naming the
/// setting.
#[test]
fn a_bad_trusted_proxy_range_is_named_at_start() {
    let said = refused_at_start(&[
        ("TELEMETRY_BROKER_TRUSTED_PROXIES", "10.0.0.0/33".as_ref()),
        (
            "TELEMETRY_BROKER_MANIFESTS",
            std::env::temp_dir().as_os_str(),
        ),
    ]);
    assert!(
        said.contains("TELEMETRY_BROKER_TRUSTED_PROXIES") && said.contains("10.0.0.0/33"),
        "{said}"
    );
}

/// The broker's stderr when it refuses to start with `env` (and a bucket):
/// exit 1, one `telemetry-broker: error:` line.
fn refused_at_start(env: &[(&str, &std::ffi::OsStr)]) -> String {
    let out = std::process::Command::new(telemetry_tests::bin("telemetry-broker"))
        .env("TELEMETRY_S3_BUCKET", "bucket-b")
        .env("TELEMETRY_BROKER_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("telemetry-broker: error:"), "{said}");
    said
}

/// A mistyped manifest directory stops the broker at start, naming it: it
/// would otherwise serve, look healthy, and refuse every upload.
#[test]
fn a_manifest_directory_that_does_not_exist_is_named_at_start() {
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("prodcuts");
    let said = refused_at_start(&[("TELEMETRY_BROKER_MANIFESTS", missing.as_os_str())]);
    assert!(
        said.contains("TELEMETRY_BROKER_MANIFESTS")
            && said.contains(&missing.display().to_string())
            && said.contains("is not a directory"),
        "{said}"
    );
}

/// A broker without AWS credentials says so in one line: no warnings of
/// the SDK's failed instance-metadata lookups before it, and the chain's
/// one-provider-per-line error folded into that line.
#[test]
fn a_broker_without_credentials_says_so_in_one_line() {
    let home = tempfile::tempdir().unwrap();
    let manifests = home.path().join("products");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("acmecli.toml"),
        "product = \"acmecli\"\n[consent]\nversion = 1\n[events.ran]\ndescription = \"x\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(telemetry_tests::bin("telemetry-broker"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home.path())
        // Nothing listens there: the lookups fail at once, as on a
        // machine outside a cloud.
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1")
        .env("TELEMETRY_BROKER_LISTEN", "127.0.0.1:0")
        .env("TELEMETRY_S3_BUCKET", "bucket-b")
        .env("TELEMETRY_S3_ENDPOINT", "http://127.0.0.1:1")
        .env("TELEMETRY_BROKER_MANIFESTS", &manifests)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(
        said.starts_with("telemetry-broker: error:") && said.contains("no AWS credentials"),
        "{said}"
    );
}

/// A rate window past what a `Duration` holds stops the broker at start,
/// naming the setting: it used to start, grant the first request and
/// panic the worker of the second, which got no answer at all.
#[test]
fn an_absurd_rate_window_is_refused_at_start() {
    let mut child = std::process::Command::new(telemetry_tests::bin("telemetry-broker"))
        .env("TELEMETRY_BROKER_PER_ADDRESS", "1/18446744073709551615s")
        .env("TELEMETRY_BROKER_LISTEN", "127.0.0.1:0")
        .env("TELEMETRY_S3_BUCKET", "bucket-b")
        .env("TELEMETRY_BROKER_MANIFESTS", std::env::temp_dir())
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: without the check the broker starts and serves for good.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the broker started with a rate window of 584 billion years");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut said = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut said).unwrap();
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(
        said.contains("telemetry-broker: error: --per-address / TELEMETRY_BROKER_PER_ADDRESS:")
            && said.contains("at most 1y"),
        "{said}"
    );
}

/// Load balancers that write the client's port, or RFC 7239's `for=`, are
/// understood (the port is not part of what is counted); a last entry that
/// holds no address counts as the load balancer itself.
#[test]
fn the_client_address_header_may_carry_a_port_or_a_forwarded_pair() {
    let s3 = S3Server::start();
    let broker = forwarded(&s3, "1/1h", "100/1h");
    assert_eq!(ask_from(&s3, &broker, 1, "203.0.113.9:5678").status, 200);
    let same = ask_from(&s3, &broker, 2, "203.0.113.9");
    assert_eq!(
        same.status,
        429,
        "one address, whatever its port: {}",
        same.text()
    );
    assert_eq!(ask_from(&s3, &broker, 3, "[2001:db8:8::1]:443").status, 200);
    let same = ask_from(&s3, &broker, 4, "2001:db8:8::2");
    assert_eq!(same.status, 429, "one /64: {}", same.text());
    assert_eq!(
        ask_from(&s3, &broker, 5, "for=198.51.100.7;proto=https").status,
        200
    );
    let same = ask_from(&s3, &broker, 6, "198.51.100.7");
    assert_eq!(
        same.status,
        429,
        "one address, however written: {}",
        same.text()
    );
    // No address: the load balancer's own (here the test's 127.0.0.1), one
    // allowance for all such requests.
    assert_eq!(
        ask_from(&s3, &broker, 7, "203.0.113.10, unknown").status,
        200
    );
    let shared = ask_from(&s3, &broker, 8, "for=_hidden");
    assert_eq!(shared.status, 429, "{}", shared.text());
    // Named once a minute, not once a request (two such requests here).
    assert_eq!(
        broker.log().matches("holds no address").count(),
        1,
        "the log names the header, once: {}",
        broker.log()
    );
}

#[test]
fn behind_a_balancer_that_appends_its_own_address_the_client_is_counted_from_the_end() {
    // Google Cloud's external load balancer writes `<the client's own
    // claim>, <client>, <balancer>`: with --client-ip-hops 2 each client
    // has its allowance, and what it claims first changes nothing.
    let s3 = S3Server::start();
    let broker = Broker::start(
        &s3,
        &[
            ("TELEMETRY_BROKER_CLIENT_IP_HEADER", "x-forwarded-for"),
            ("TELEMETRY_BROKER_CLIENT_IP_HOPS", "2"),
            ("TELEMETRY_BROKER_PER_ADDRESS", "1/1h"),
            ("TELEMETRY_BROKER_PER_NETWORK", "100/1h"),
        ],
    );
    let lb = "34.120.0.10";
    for (n, client) in ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
        .iter()
        .enumerate()
    {
        let a = ask_from(&s3, &broker, n as i64 + 1, &format!("{client}, {lb}"));
        assert_eq!(a.status, 200, "{client}, its own allowance: {}", a.text());
    }
    let again = ask_from(&s3, &broker, 4, &format!("6.6.6.6, 198.51.100.1, {lb}"));
    assert_eq!(
        again.status,
        429,
        "the client's claim is not believed: {}",
        again.text()
    );
    // A balancer that adds a line of its own: the lines are one list.
    let two_lines = |n: i64| {
        s3.block_on(send(
            "POST",
            &format!("{}/v1/upload", broker.url),
            &[
                ("content-type", "application/json"),
                ("x-forwarded-for", "198.51.100.9"),
                ("x-forwarded-for", lb),
            ],
            serde_json::to_vec(&request(&key(n, n), b"body")).unwrap(),
        ))
        .expect("POST /v1/upload")
    };
    assert_eq!(two_lines(10).status, 200, "198.51.100.9's own allowance");
    assert_eq!(two_lines(11).status, 429, "and only its own");
    // A header shorter than the hops holds no client: the balancer's own.
    assert_eq!(ask_from(&s3, &broker, 5, lb).status, 200);
    assert_eq!(ask_from(&s3, &broker, 6, "10.9.9.9").status, 429);
    assert!(broker.log().contains("client-ip-hops"), "{}", broker.log());
    // The default trust list is named at start, with what it allows.
    assert!(
        broker
            .log()
            .contains("--trusted-proxies / TELEMETRY_BROKER_TRUSTED_PROXIES is not"),
        "{}",
        broker.log()
    );
    // Out of range is refused at start, naming the setting.
    let said = refused_at_start(&[
        ("TELEMETRY_BROKER_CLIENT_IP_HOPS", "9".as_ref()),
        (
            "TELEMETRY_BROKER_MANIFESTS",
            std::env::temp_dir().as_os_str(),
        ),
    ]);
    assert!(
        said.contains("TELEMETRY_BROKER_CLIENT_IP_HOPS") && said.contains("between 1 and 8"),
        "{said}"
    );
}

#[test]
fn rate_limits_answer_429_with_retry_after() {
    let s3 = S3Server::start();
    let broker = Broker::start(
        &s3,
        &[
            ("TELEMETRY_BROKER_PER_MACHINE", "2/1h"),
            ("TELEMETRY_BROKER_PER_ADDRESS", "5/1h"),
        ],
    );
    let req = |machine8: &str, first: i64| {
        let mut k = key(first, first);
        k.machine8 = machine8.into();
        request(&k, b"body")
    };
    assert_eq!(ask(&s3, &broker, &req("aaaaaaaa", 1)).status, 200);
    assert_eq!(ask(&s3, &broker, &req("aaaaaaaa", 2)).status, 200);
    let limited = ask(&s3, &broker, &req("aaaaaaaa", 3));
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert_eq!(limited.json()["error"]["field"], "machine8");
    let wait: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1800).contains(&wait), "Retry-After {wait}");
    // Another machine from the same address is not limited by the first...
    assert_eq!(ask(&s3, &broker, &req("bbbbbbbb", 1)).status, 200);
    // ...until the address's own limit (5 per hour: 4 used) runs out.
    assert_eq!(ask(&s3, &broker, &req("cccccccc", 1)).status, 200);
    let limited = ask(&s3, &broker, &req("dddddddd", 1));
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert!(
        limited.json()["error"].get("field").is_none(),
        "{}",
        limited.text()
    );
    assert!(limited.headers.contains_key("retry-after"));

    // The client turns 429 into Throttled with the broker's Retry-After.
    match s3.block_on(put_via_broker(
        &client(),
        &broker.url,
        &key(9, 9),
        b"x".to_vec(),
        Duration::from_secs(20),
    )) {
        Err(UploadError::Throttled { retry_after, .. }) => {
            assert!(
                retry_after >= Duration::from_secs(1) && retry_after <= Duration::from_secs(3600)
            )
        }
        other => panic!("expected Throttled, got {other:?}"),
    }
    // The client's full address nowhere, in any form (followed by a port,
    // at a line's end, inside JSON): only the broker's own start-up line,
    // which names its listening address and the S3 endpoint, may hold it.
    let log = broker.log();
    let about_clients: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("listening on"))
        .collect();
    assert!(
        about_clients.iter().all(|l| !l.contains("127.0.0.1")),
        "full client addresses are not logged: {about_clients:#?}"
    );
    assert!(log.contains("127.0.0.0/24"));
}

#[test]
fn retired_products_and_builds_are_gone() {
    let s3 = S3Server::start();
    let broker = Broker::start(&s3, &[("TELEMETRY_BROKER_RETIRED", "cfdev@0.9.0,oldcli")]);
    let mut req = request(&key(1, 2), b"body");
    assert_eq!(ask(&s3, &broker, &req).status, 200);
    // A batch that also holds a live build (an upgrade mid-batch) goes
    // through: a 410 would drop it on that machine.
    req["builds"] = serde_json::json!(["1.0.0", "0.9.0"]);
    assert_eq!(ask(&s3, &broker, &req).status, 200);
    req["builds"] = serde_json::json!(["0.9.0"]);
    let gone = ask(&s3, &broker, &req);
    assert_eq!(
        (gone.status, gone.json()["error"]["field"].clone()),
        (410, "builds".into())
    );
    // The daemon's client drops that batch alone, not the product.
    let mut k = key(1, 2);
    k.product = "cfdev".into();
    let request =
        telemetry_sink::broker::UploadRequest::new(&k, b"x").with_builds(vec!["0.9.0".into()]);
    match s3.block_on(telemetry_sink::broker::put_request_via_broker(
        &client(),
        &broker.url,
        request,
        b"x".to_vec(),
        Duration::from_secs(20),
    )) {
        Err(UploadError::Rejected {
            status: 410, field, ..
        }) => {
            assert_eq!(field.as_deref(), Some("builds"))
        }
        other => panic!("expected a 410 rejection of the batch, got {other:?}"),
    }
    let mut k = key(1, 2);
    k.product = "oldcli".into();
    match s3.block_on(put_via_broker(
        &client(),
        &broker.url,
        &k,
        b"x".to_vec(),
        Duration::from_secs(20),
    )) {
        Err(UploadError::Retired { product, .. }) => assert_eq!(product, "oldcli"),
        other => panic!("expected Retired, got {other:?}"),
    }
}

/// Asking whether the broker serves a product is limited (no naming
/// products at any speed), on an allowance of its own: any web page can
/// make its visitors' browsers send this GET, and must not use up their
/// uploads. The plain probe a load balancer makes is never limited.
#[test]
fn healthz_about_a_product_is_rate_limited_on_its_own_allowance_the_plain_probe_is_not() {
    let s3 = S3Server::start();
    let broker = forwarded(&s3, "3/1h", "1000/1h");
    let get = |query: &str, ip: &str| {
        s3.block_on(send(
            "GET",
            &format!("{}/healthz{query}", broker.url),
            &[("x-forwarded-for", ip)],
            Vec::new(),
        ))
        .unwrap()
    };
    let first = get("?product=cfdev", "198.51.100.7");
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["serves"], true);
    assert_eq!(
        get("?product=other", "198.51.100.7").json()["serves"],
        false
    );
    assert_eq!(get("?product=third", "198.51.100.7").status, 200);
    let limited = get("?product=fourth", "198.51.100.7");
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert!(
        limited.text().contains("product questions"),
        "{}",
        limited.text()
    );
    assert!(limited.headers.contains_key("retry-after"));
    for n in 1..=3 {
        assert_eq!(
            ask_from(&s3, &broker, n, "198.51.100.7").status,
            200,
            "upload {n}: the probes spent none of the uploads' allowance"
        );
    }
    for _ in 0..10 {
        assert_eq!(get("", "198.51.100.7").status, 200);
    }
    assert_eq!(
        get("?product=cfdev", "198.51.100.8").status,
        200,
        "another address"
    );
}

/// ...counted per IPv6 network: a /48 holds 65,536 /64s, so counting per
/// address would let one network name products at any speed.
#[test]
fn healthz_about_a_product_is_counted_per_ipv6_network() {
    let s3 = S3Server::start();
    let broker = forwarded(&s3, "2/1h", "1000/1h");
    let get = |ip: &str| {
        s3.block_on(send(
            "GET",
            &format!("{}/healthz?product=cfdev", broker.url),
            &[("x-forwarded-for", ip)],
            Vec::new(),
        ))
        .unwrap()
    };
    assert_eq!(get("2001:db8:1::1").status, 200);
    assert_eq!(get("2001:db8:1:2::1").status, 200);
    let limited = get("2001:db8:1:3::1");
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert!(limited.headers.contains_key("retry-after"));
    assert_eq!(get("2001:db8:2::1").status, 200, "another network");
}

/// A request head over the broker's small buffer, or with too many
/// headers, is refused (431) before it costs more memory; a normal one on
/// the same broker is served.
#[test]
fn an_oversized_request_head_is_refused() {
    let s3 = S3Server::start();
    let broker = Broker::start(&s3, &[]);
    let url = format!("{}/healthz", broker.url);
    let big = "x".repeat(20 * 1024);
    let answer = s3.block_on(send("GET", &url, &[("x-big", big.as_str())], Vec::new()));
    assert_eq!(answer.map(|a| a.status).ok(), Some(431));
    let names: Vec<String> = (0..40).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let answer = s3.block_on(send("GET", &url, &many, Vec::new()));
    assert_eq!(answer.map(|a| a.status).ok(), Some(431));
    let ok = s3.block_on(send("GET", &url, &[], Vec::new())).unwrap();
    assert_eq!(ok.status, 200);
}

#[test]
fn healthz_and_clean_exit_on_sigterm() {
    let s3 = S3Server::start();
    let broker = Broker::start(&s3, &[]);
    let healthz = || {
        s3.block_on(send(
            "GET",
            &format!("{}/healthz", broker.url),
            &[],
            Vec::new(),
        ))
        .unwrap()
    };
    let health = healthz();
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(
        health.json()["products"],
        1,
        "cfdev only; broken.toml is not counted"
    );
    let wrong = s3
        .block_on(send(
            "GET",
            &format!("{}/v1/upload", broker.url),
            &[],
            Vec::new(),
        ))
        .unwrap();
    assert_eq!(wrong.status, 405);
    // SIGHUP (sent to reload, as to the daemon) does not end it: it says
    // to restart instead, and serves on.
    // SAFETY: kill(2) on the broker this test started.
    assert_eq!(
        unsafe { libc::kill(broker.pid() as libc::pid_t, libc::SIGHUP) },
        0
    );
    telemetry_tests::wait_for("the SIGHUP explained", Duration::from_secs(10), || {
        broker.log().contains("does not reload").then_some(())
    });
    assert_eq!(healthz().status, 200);
    let status = broker.terminate().expect("broker exits on SIGTERM");
    assert!(status.success(), "exit status {status}");
}

/// `GET /healthz` on a raw connection: the first bytes of the answer, or
/// nothing when the broker closed it.
fn health(c: &mut std::net::TcpStream) -> String {
    use std::io::{Read, Write};
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n");
    let mut got = vec![0u8; 512];
    let n = c.read(&mut got).unwrap_or(0);
    String::from_utf8_lossy(&got[..n]).into_owned()
}

/// A kept-alive connection lives `max_connection_age` at most: the answer
/// after it closes the connection, so a client that pings now and then
/// cannot keep its place for good.
#[test]
fn a_connection_is_kept_alive_only_so_long() {
    let s3 = S3Server::start();
    // Long enough that the first answer comes well within it.
    let broker = Broker::start(&s3, &[("TELEMETRY_BROKER_MAX_CONNECTION_AGE", "2s")]);
    let addr = broker.url.trim_start_matches("http://").to_string();
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    let young = health(&mut c);
    assert!(
        young.starts_with("HTTP/1.1 200")
            && !young.to_ascii_lowercase().contains("connection: close"),
        "{young}"
    );
    std::thread::sleep(Duration::from_millis(2_100));
    let old = health(&mut c);
    assert!(
        old.starts_with("HTTP/1.1 200") && old.to_ascii_lowercase().contains("connection: close"),
        "answered, then closed: {old}"
    );
    assert_eq!(health(&mut c), "", "closed");
}

/// One host cannot hold every connection: past its cap a connection from
/// that address is closed at accept, and a closed one makes room again.
#[test]
fn one_address_cannot_hold_every_connection() {
    let s3 = S3Server::start();
    let broker = Broker::start(
        &s3,
        &[("TELEMETRY_BROKER_MAX_CONNECTIONS_PER_ADDRESS", "2")],
    );
    let addr = broker.url.trim_start_matches("http://").to_string();
    let mut first = std::net::TcpStream::connect(&addr).unwrap();
    assert!(
        health(&mut first).starts_with("HTTP/1.1 200"),
        "first is served"
    );
    let _second = std::net::TcpStream::connect(&addr).unwrap();
    // Accepted in order: once the third is answered or closed, the second
    // holds its place.
    let mut third = std::net::TcpStream::connect(&addr).unwrap();
    assert_eq!(health(&mut third), "", "a third from one address is closed");
    drop(first);
    wait_for("a place given back", Duration::from_secs(10), || {
        let mut again = std::net::TcpStream::connect(&addr).ok()?;
        health(&mut again).starts_with("HTTP/1.1 200").then_some(())
    });
    assert!(broker.log().contains("connections from one address"));
}

/// Under an open-file limit too low for `--max-connections` the broker
/// says so at start and serves what the limit leaves room for (the limit
/// less 64 kept back for its own files and its requests to S3), closing
/// connections past that at accept instead of failing to accept at all.
#[test]
fn max_connections_is_held_to_what_the_open_file_limit_allows() {
    let s3 = S3Server::start();
    let broker = Broker::start_with_fd_limit(
        &s3,
        &[
            ("TELEMETRY_BROKER_MAX_CONNECTIONS", "1000"),
            ("TELEMETRY_BROKER_MAX_CONNECTIONS_PER_ADDRESS", "1000"),
        ],
        Some(200),
    );
    let log = broker.log();
    assert!(
        log.contains("--max-connections 1000 is over what the open-file limit (200) leaves room for; serving 136 at once"),
        "{log}"
    );
    let addr = broker.url.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for i in 0..136 {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        // One request in every tenth: the others are accepted and idle.
        if i % 10 == 0 {
            assert!(health(&mut c).starts_with("HTTP/1.1 200"), "connection {i}");
        }
        held.push(c);
    }
    let mut over = std::net::TcpStream::connect(&addr).unwrap();
    assert_eq!(health(&mut over), "", "the 137th is closed at accept");
    assert!(
        broker.log().contains("over 136 connections"),
        "{}",
        broker.log()
    );
    held.truncate(100);
    wait_for("room again", Duration::from_secs(10), || {
        let mut again = std::net::TcpStream::connect(&addr).ok()?;
        health(&mut again).starts_with("HTTP/1.1 200").then_some(())
    });
}

/// A client that sends its headers and then stalls in the body gets 408
/// once the body timeout (10 s) runs out, not a connection held for good;
/// and the same address is served at once after it.
#[test]
fn a_body_that_stalls_gets_408() {
    use std::io::{Read, Write};
    use std::time::Instant;
    let s3 = S3Server::start();
    let broker = Broker::start(&s3, &[]);
    let addr = broker.url.trim_start_matches("http://").to_string();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(
        b"POST /v1/upload HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n\
          Content-Length: 200\r\n\r\n{\"product\":",
    )
    .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let mut got = vec![0u8; 1024];
    let n = slow.read(&mut got).unwrap_or(0);
    let answer = String::from_utf8_lossy(&got[..n]).into_owned();
    let waited = started.elapsed();
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "{answer:?} after {waited:?}"
    );
    assert!(
        answer.contains("body"),
        "the answer names the field: {answer}"
    );
    assert!(
        waited >= Duration::from_secs(8) && waited < Duration::from_secs(25),
        "answered after {waited:?}, not after the body timeout"
    );
    let mut next = std::net::TcpStream::connect(&addr).unwrap();
    assert!(health(&mut next).starts_with("HTTP/1.1 200"));
}

/// A client that pipelines requests and never reads its answers does not
/// keep its connection (and its address's place) for good: once the
/// broker's writes make no progress for `send_timeout`, it closes it.
#[test]
fn a_client_that_never_reads_loses_its_connection() {
    use std::io::{ErrorKind, Write};
    use std::time::Instant;
    let s3 = S3Server::start();
    let broker = Broker::start(
        &s3,
        &[
            ("TELEMETRY_BROKER_MAX_CONNECTIONS_PER_ADDRESS", "1"),
            ("TELEMETRY_BROKER_SEND_TIMEOUT", "3s"),
        ],
    );
    let addr = broker.url.trim_start_matches("http://").to_string();
    // Requests until the socket has taken nothing for 200 ms: the
    // broker's answers fill both sides' buffers, and it stops reading.
    let mut stuck = std::net::TcpStream::connect(&addr).unwrap();
    stuck.set_nonblocking(true).unwrap();
    let requests = b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n".repeat(256);
    let started = Instant::now();
    let mut blocked_since: Option<Instant> = None;
    let mut sent = 0usize;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the broker kept reading {sent} bytes of requests"
        );
        match stuck.write(&requests) {
            Ok(n) => {
                sent += n;
                blocked_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if blocked_since.get_or_insert_with(Instant::now).elapsed()
                    > Duration::from_millis(200)
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("the connection ended while it was still read: {e}"),
        }
    }
    // It holds its address's one place for now...
    let mut other = std::net::TcpStream::connect(&addr).unwrap();
    assert_eq!(
        health(&mut other),
        "",
        "the stuck connection holds the place"
    );
    // ...and loses it once the broker has waited send_timeout for it.
    wait_for(
        "the stuck connection to be closed",
        Duration::from_secs(20),
        || {
            let mut again = std::net::TcpStream::connect(&addr).ok()?;
            health(&mut again).starts_with("HTTP/1.1 200").then_some(())
        },
    );
    assert!(
        broker.log().contains("read nothing for 3s"),
        "the log names why:\n{}",
        broker.log()
    );
    // Reset, not closed: the answers it never read are not kept queued.
    stuck.set_nonblocking(false).unwrap();
    stuck
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut sink = Vec::new();
    let end = std::io::Read::read_to_end(&mut stuck, &mut sink).map(|_| sink.len());
    assert_eq!(
        end.expect_err("a reset, not an end after the queued answers")
            .kind(),
        ErrorKind::ConnectionReset
    );
}

/// The broker's sockets on `port` in `state` (a /proc/net/tcp state: 01
/// established, 04 FIN-WAIT-1).
#[cfg(target_os = "linux")]
fn broker_sockets(port: u16, state: &str) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&format!(":{port:04X}")) && f[3] == state
        })
        .count()
}

/// A client that never reads the answers to a few pipelined requests (a
/// receive buffer of 4 KiB: more than it takes, few enough that the
/// broker's writes never wait, so no send deadline fires) is closed by
/// hyper's idle timeout, and the kernel then drops what it never read
/// after `send_timeout` (TCP_USER_TIMEOUT, set at that close): its
/// connection does not stay in FIN-WAIT-1 holding those answers (a hostile
/// review found 59 from one address, 52 MB).
#[cfg(target_os = "linux")]
#[test]
fn answers_a_client_never_reads_do_not_outlive_its_connection() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::time::Instant;
    let s3 = S3Server::start();
    let broker = Broker::start(&s3, &[("TELEMETRY_BROKER_SEND_TIMEOUT", "1s")]);
    let addr = broker.url.trim_start_matches("http://").to_string();
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let mut stuck = std::net::TcpStream::connect(&addr).unwrap();
    let small: libc::c_int = 4096;
    // SAFETY: a valid socket and an int-sized option value.
    let set = unsafe {
        libc::setsockopt(
            stuck.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0);
    wait_for(
        "the broker to accept the connection",
        Duration::from_secs(5),
        || (broker_sockets(port, "01") == 1).then_some(()),
    );
    // About 10 KiB of answers: the client takes 4-8 KiB, the broker's
    // socket the rest.
    stuck
        .write_all(&b"GET /nope HTTP/1.1\r\nHost: b\r\n\r\n".repeat(40))
        .unwrap();
    let sent = Instant::now();
    // hyper's 10 s idle timeout closes it; the kernel drops the rest
    // send_timeout later.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        broker_sockets(port, "01"),
        1,
        "kept open until the idle timeout: nothing waited on a write"
    );
    wait_for(
        "the broker to hold nothing of the connection",
        Duration::from_secs(25),
        || (broker_sockets(port, "01") + broker_sockets(port, "04") == 0).then_some(()),
    );
    assert!(
        sent.elapsed() >= Duration::from_secs(9),
        "gone only after the idle timeout: {:?}",
        sent.elapsed()
    );
    drop(stuck);
}
