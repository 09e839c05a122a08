//! Networks as users have them (issue #13, item 6): uploads through a
//! real CONNECT proxy, to a TLS endpoint whose certificate only a private
//! CA vouches for, and NO_PROXY. Real parts only: the daemon binary, the
//! S3 server behind a TLS front on 127.0.0.1, and a proxy that really
//! tunnels.
//!
//! Every test sets `NO_PROXY` explicitly: 127.0.0.1 is not exempt from a
//! proxy unless listed (curl's rule), and the tests rely on that.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use telemetry_client::{event, Value};
use telemetry_tests::proxy::ConnectProxy;
use telemetry_tests::tls::{ca_bundle, TlsFront};
use telemetry_tests::*;

const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// A daemon environment uploading to `endpoint` with `extra` variables.
fn env_for(endpoint: &str, extra: &[(&str, &str)]) -> DaemonEnv {
    let mut env = DaemonEnv::new(Destination::S3 {
        endpoint: endpoint.to_string(),
        secret: SECRET_KEY.into(),
    });
    // Fail fast on a refused handshake instead of waiting for backoff.
    env.extra
        .push(("TELEMETRY_S3_TIMEOUT".into(), "10s".into()));
    env.extra
        .extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// Emit `n` acknowledged events; their ids.
fn emit_acked(d: &Daemon, n: usize) -> BTreeSet<String> {
    let mut client = d.client();
    (0..n)
        .map(|i| {
            let mut data = BTreeMap::new();
            data.insert("duration_s".to_string(), Value::Int(i as i64));
            let ev = event("cfdev", "start_end", "1.2.3", data);
            let id = ev.id.hyphenated().to_string();
            assert_eq!(client.emit(vec![ev], ACK_TIMEOUT).unwrap().accepted, 1);
            id
        })
        .collect()
}

/// The ids of every event stored in the bucket.
fn stored_ids(s3: &S3Server) -> BTreeSet<String> {
    decode_objects(&s3.objects())
        .into_iter()
        .map(|(_, v)| v["id"].as_str().unwrap().to_string())
        .collect()
}

fn status_json(env: &DaemonEnv) -> serde_json::Value {
    let out = env.run("telemetryctl", &["status", "--json"]);
    assert!(out.status.success(), "status: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn an_upload_goes_through_the_connect_proxy_to_the_https_endpoint() {
    let s3 = S3Server::start();
    let front = TlsFront::start(&s3.endpoint);
    let proxy = ConnectProxy::start();
    let ca = ca_bundle().display().to_string();
    let env = env_for(
        &front.endpoint,
        &[
            ("HTTPS_PROXY", &proxy.url),
            ("NO_PROXY", ""),
            ("TELEMETRY_CA_BUNDLE", &ca),
        ],
    );
    let daemon = env.start();
    let acked = emit_acked(&daemon, 5);

    // A proxy that refuses the tunnel stops the upload: it really is in
    // the path, not merely configured.
    proxy.set_refuse(true);
    let out = env.run("telemetryctl", &["flush"]);
    assert_eq!(out.status.code(), Some(3), "refused flush: {}", text(&out));
    assert!(stored_ids(&s3).is_empty());
    assert_eq!(front.handshakes(), 0, "nothing reached the endpoint");
    let st = status_json(&env);
    assert_eq!(st["pending_events"], 5, "{st}");
    assert!(st["last_error"].as_str().is_some(), "{st}");

    proxy.set_refuse(false);
    let out = env.run("telemetryctl", &["flush", "--json"]);
    assert!(out.status.success(), "flush: {}", text(&out));
    assert_eq!(stored_ids(&s3), acked);
    let targets = proxy.connect_targets();
    assert!(!targets.is_empty(), "{:?}", proxy.requests());
    assert!(
        targets.iter().all(|t| t == front.authority()),
        "CONNECT only to the endpoint {}: {targets:?}",
        front.authority()
    );
    assert!(front.handshakes() >= 1);
    let st = status_json(&env);
    assert_eq!(st["pending_events"], 0, "{st}");
    assert!(st["last_error"].is_null(), "{st}");
    drop(daemon);
}

#[test]
fn a_self_signed_endpoint_is_refused_without_the_ca_bundle_and_used_with_it() {
    let s3 = S3Server::start();
    let front = TlsFront::start(&s3.endpoint);
    let mut env = env_for(&front.endpoint, &[("NO_PROXY", "")]);
    let daemon = env.start();
    let acked = emit_acked(&daemon, 4);

    let out = env.run("telemetryctl", &["flush"]);
    assert_eq!(out.status.code(), Some(3), "refused flush: {}", text(&out));
    let st = status_json(&env);
    let last = st["last_error"].as_str().unwrap_or_default().to_string();
    assert!(
        last.contains("certificate") && last.contains("UnknownIssuer"),
        "the last error says the certificate is not trusted: {st}"
    );
    assert_eq!(st["pending_events"], 4, "{st}");
    assert!(front.failed_handshakes() >= 1);
    assert_eq!(front.handshakes(), 0);
    assert!(stored_ids(&s3).is_empty(), "nothing stored");
    daemon.terminate().unwrap();

    // Same state dir, the CA now trusted: the kept events go out.
    env.extra.push((
        "TELEMETRY_CA_BUNDLE".into(),
        ca_bundle().display().to_string(),
    ));
    let daemon = env.start();
    let out = env.run("telemetryctl", &["flush", "--json"]);
    assert!(out.status.success(), "flush: {}", text(&out));
    assert_eq!(stored_ids(&s3), acked);
    assert!(front.handshakes() >= 1);
    assert!(status_json(&env)["last_error"].is_null());
    drop(daemon);
}

#[test]
fn no_proxy_covering_the_host_bypasses_the_proxy() {
    let s3 = S3Server::start();
    let front = TlsFront::start(&s3.endpoint);
    let proxy = ConnectProxy::start();
    let ca = ca_bundle().display().to_string();
    let env = env_for(
        &front.endpoint,
        &[
            ("https_proxy", &proxy.url),
            ("NO_PROXY", "example.com, 127.0.0.0/8"),
            ("TELEMETRY_CA_BUNDLE", &ca),
        ],
    );
    let daemon = env.start();
    let acked = emit_acked(&daemon, 3);
    let out = env.run("telemetryctl", &["flush", "--json"]);
    assert!(out.status.success(), "flush: {}", text(&out));
    assert_eq!(stored_ids(&s3), acked);
    assert_eq!(proxy.requests(), Vec::<String>::new(), "proxy bypassed");
    assert!(front.handshakes() >= 1);
    drop(daemon);
}

#[test]
fn a_bad_ca_bundle_or_proxy_url_stops_the_daemon_naming_file_and_variable() {
    let env = DaemonEnv::new(Destination::Outbox);
    let missing = env.root().join("no-such-ca.pem");
    let out = env
        .command("telemetryd")
        .env("TELEMETRY_CA_BUNDLE", &missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&missing.display().to_string())
            && err.contains("environment variable TELEMETRY_CA_BUNDLE"),
        "{err}"
    );

    // A PEM file without a certificate (here: the test key).
    let key = telemetry_tests::tls::certs_dir().join("server.key");
    let out = env
        .command("telemetryd")
        .arg("--ca-bundle")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&key.display().to_string())
            && err.contains("flag --ca-bundle")
            && err.contains("no certificate"),
        "{err}"
    );

    let out = env
        .command("telemetryd")
        .env("HTTPS_PROXY", "http://bad host:3128")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HTTPS_PROXY") && err.contains("bad host"),
        "{err}"
    );
}

/// The plain HTTPS client the broker client uses honours the same proxy,
/// NO_PROXY and CA bundle as the S3 client.
#[test]
fn the_shared_http_client_uses_the_proxy_and_the_ca_bundle() {
    use telemetry_sink::net::{http_client, NetOptions};
    let s3 = S3Server::start();
    let front = TlsFront::start(&s3.endpoint);
    let proxy = ConnectProxy::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url: http::Uri = format!("{}/{BUCKET}", front.endpoint).parse().unwrap();
    let get = |net: &NetOptions| {
        let client = http_client(net).unwrap();
        let req = http::Request::get(url.clone())
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        rt.block_on(client.request(req))
    };
    let proxied = |var: &str| match var {
        "HTTPS_PROXY" => Some(proxy.url.clone().into()),
        "NO_PROXY" => Some("".into()),
        _ => None,
    };
    let ca = ca_bundle();
    let net = NetOptions::from_env(proxied, Some((&ca, "test"))).unwrap();

    // An unsigned request: the S3 server answers it (with an error), which
    // proves the request went proxy → TLS front → S3 and back.
    let resp = get(&net).expect("request through the proxy");
    assert!(resp.status().is_client_error(), "{:?}", resp.status());
    assert_eq!(proxy.connect_targets(), vec![front.authority().to_string()]);
    assert_eq!(front.handshakes(), 1);

    // Without the bundle the endpoint's certificate is refused.
    let untrusted = NetOptions::from_env(proxied, None).unwrap();
    let err = get(&untrusted).unwrap_err();
    let chain = format!("{:?}", err);
    assert!(chain.contains("UnknownIssuer"), "{chain}");
    assert_eq!(front.handshakes(), 1);

    // NO_PROXY covering the host: direct, the proxy sees nothing new.
    let direct = NetOptions::from_env(
        |var: &str| match var {
            "HTTPS_PROXY" => Some(proxy.url.clone().into()),
            "no_proxy" => Some("localhost,127.0.0.1".into()),
            _ => None,
        },
        Some((&ca, "test")),
    )
    .unwrap();
    assert!(get(&direct).unwrap().status().is_client_error());
    assert_eq!(proxy.connect_targets().len(), 2, "{:?}", proxy.requests());
    assert_eq!(front.handshakes(), 2);
}
