//! `telemetryctl doctor` (issue #17): each check failing and passing
//! against real servers: the real daemon, `telemetryctl`, shim, broker, S3
//! server, TLS front and CONNECT proxy on 127.0.0.1. Every run also checks
//! that doctor wrote nothing to any destination.

use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;
use telemetry_client::event;
use telemetry_tests::broker::Broker;
use telemetry_tests::proxy::ConnectProxy;
use telemetry_tests::tls::{ca_bundle, TlsFront};
use telemetry_tests::*;

const TIMEOUT: Duration = Duration::from_secs(10);
/// The vendors' bucket and prefix, open to unsigned puts.
const VENDOR_BUCKET: &str = "vendor-in";
const VENDOR_PREFIX: &str = "raw";

fn open_s3() -> S3Server {
    let s3 = S3Server::start_with(S3Policy {
        anonymous_put: Some((VENDOR_BUCKET.into(), format!("{VENDOR_PREFIX}/"))),
    });
    s3.create_bucket(VENDOR_BUCKET);
    s3
}

/// Write `PRODUCT.toml` with one event `ran` and `upload` (an `[upload]`
/// table, or "") into the daemon's catalogue directory.
fn manifest(env: &DaemonEnv, product: &str, upload: &str) {
    let dir = env.root().join("catalog");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{product}.toml")),
        format!("product = \"{product}\"\n[events.ran]\n{upload}"),
    )
    .unwrap();
}

fn anonymous(endpoint: &str) -> String {
    format!(
        "[upload]\nauth = \"anonymous\"\nbucket = \"{VENDOR_BUCKET}\"\nprefix = \"{VENDOR_PREFIX}\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n"
    )
}

fn brokered(url: &str) -> String {
    format!("[upload]\nauth = \"broker\"\nbroker = \"{url}\"\n")
}

fn consent_on(env: &DaemonEnv, products: &[&str]) {
    let text: String = products.iter().map(|p| format!("{p} on\n")).collect();
    std::fs::write(env.root().join("consent"), text).unwrap();
}

/// Run doctor, human and `--json`; both must agree. The JSON and the
/// checks by name.
fn doctor(env: &DaemonEnv, expect_exit: i32) -> (Value, BTreeMap<String, Value>) {
    // A generous shim budget: a debug build on a loaded 2-core machine
    // must not turn the shim check into a failure here.
    let run = |args: &[&str]| -> Output {
        env.command("telemetryctl")
            .env("TELEMETRY_EMIT_TIMEOUT_MS", "10000")
            .args(args)
            .output()
            .expect("run telemetryctl doctor")
    };
    let human = run(&["doctor"]);
    // Shown when a test fails (the harness captures it otherwise).
    println!("{}", text(&human));
    assert_eq!(human.status.code(), Some(expect_exit), "{}", text(&human));
    let json_out = run(&["doctor", "--json"]);
    assert_eq!(
        json_out.status.code(),
        Some(expect_exit),
        "{}",
        text(&json_out)
    );
    let json: Value = serde_json::from_slice(&json_out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json is one JSON object ({e}): {}",
            text(&json_out)
        )
    });
    let mut checks = BTreeMap::new();
    let stdout = String::from_utf8_lossy(&human.stdout);
    for c in json["checks"].as_array().expect("checks") {
        let name = c["name"].as_str().unwrap().to_string();
        let outcome = c["outcome"].as_str().unwrap();
        let tag = outcome.to_ascii_uppercase();
        // Same outcome in both forms (the shim's time may differ).
        assert!(
            stdout.contains(&format!("{tag} {name}: ")),
            "human output lacks {tag} {name}:\n{stdout}"
        );
        if outcome == "pass" {
            assert_eq!(c["fix"], "", "{c}");
        } else {
            assert!(!c["fix"].as_str().unwrap().is_empty(), "a fix: {c}");
        }
        checks.insert(name, c.clone());
    }
    assert_eq!(
        json["ok"],
        expect_exit == 0,
        "ok is false exactly when a check failed: {json}"
    );
    assert!(stdout.contains(" checks: "), "a summary line: {stdout}");
    if stdout.contains("FAIL ") || stdout.contains("WARN ") {
        assert!(stdout.contains("\n     fix: "), "{stdout}");
    }
    (json, checks)
}

/// The check `name`; panics listing them all when it is missing.
fn check<'a>(checks: &'a BTreeMap<String, Value>, name: &str) -> &'a Value {
    checks
        .get(name)
        .unwrap_or_else(|| panic!("no check {name:?} in {:#?}", checks.keys()))
}

fn outcome(checks: &BTreeMap<String, Value>, name: &str) -> String {
    check(checks, name)["outcome"].as_str().unwrap().to_string()
}

/// The checks whose name starts with `prefix`, as `name → outcome`.
fn outcomes(checks: &BTreeMap<String, Value>, prefix: &str) -> BTreeMap<String, String> {
    checks
        .iter()
        .filter(|(n, _)| n.starts_with(prefix))
        .map(|(n, c)| {
            (
                n[prefix.len()..].to_string(),
                c["outcome"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn without_a_daemon_the_socket_check_fails_and_doctor_exits_1() {
    let env = DaemonEnv::new(Destination::Outbox);
    let (json, checks) = doctor(&env, 1);
    assert_eq!(json["checks"][0]["name"], "socket", "socket first: {json}");
    assert_eq!(outcome(&checks, "socket"), "fail");
    let socket = check(&checks, "socket");
    assert!(
        socket["detail"]
            .as_str()
            .unwrap()
            .contains(&env.socket.display().to_string()),
        "{socket}"
    );
    assert!(
        socket["fix"]
            .as_str()
            .unwrap()
            .contains("telemetryctl start"),
        "{socket}"
    );
    assert!(json["destinations"].is_null(), "{json}");
    // The shim needs no daemon: it is still measured.
    assert!(
        check(&checks, "shim")["detail"]
            .as_str()
            .unwrap()
            .contains(" ms"),
        "{checks:#?}"
    );
}

/// Before the user turns any product on nothing is collected and no
/// daemon is needed: doctor passes the socket check and status says why
/// none runs, rather than urging the user to start a collector for
/// nothing (status still exits 1, code unreachable, for scripts).
#[test]
fn without_a_daemon_and_nothing_on_no_daemon_is_needed() {
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::write(env.root().join("consent"), "cfdev off\n").unwrap();
    let (_, checks) = doctor(&env, 0);
    assert_eq!(outcome(&checks, "socket"), "pass");
    let detail = check(&checks, "socket")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("none is needed"), "{detail}");
    let out = env.run("telemetryctl", &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("none is needed"), "{}", text(&out));
    // One product on: a daemon is needed again.
    std::fs::write(env.root().join("consent"), "cfdev local\n").unwrap();
    let (_, checks) = doctor(&env, 1);
    assert_eq!(outcome(&checks, "socket"), "fail");
    assert!(!text(&env.run("telemetryctl", &["status"])).contains("needed"));
    // An opt-out in doctor's own shell stops only the clients run with it:
    // CLIs run from elsewhere still need the daemon.
    let out = env
        .command("telemetryctl")
        .env("DO_NOT_TRACK", "1")
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!text(&out).contains("none is needed"), "{}", text(&out));
}

/// Events spooled for another socket (a CLI run with another
/// `TELEMETRY_SOCKET` or `XDG_RUNTIME_DIR`) wait where no daemon on this
/// one takes them in: doctor says where, and how to have them taken in or
/// drop them. This socket's own spool is not reported.
#[test]
fn events_spooled_for_another_socket_are_reported() {
    let env = DaemonEnv::new(Destination::Outbox);
    let (_, checks) = doctor(&env, 1);
    assert_eq!(outcome(&checks, "spool"), "pass");
    std::fs::create_dir_all(env.spool_file().parent().unwrap()).unwrap();
    std::fs::write(env.spool_file(), b"frames").unwrap();
    let other = telemetry_proto::paths::spool_file_for(
        &env.state,
        std::path::Path::new("/elsewhere/telemetryd.sock"),
    );
    std::fs::write(&other, b"frames of another socket").unwrap();
    let (_, checks) = doctor(&env, 1);
    let spool = check(&checks, "spool");
    assert_eq!(spool["outcome"], "warn", "{spool}");
    let detail = spool["detail"].as_str().unwrap();
    assert!(
        detail.contains(&other.display().to_string()) && detail.contains("24 bytes"),
        "{detail}"
    );
    assert!(spool["fix"].as_str().unwrap().contains("delete"), "{spool}");
}

#[test]
fn healthy_destinations_pass_and_broken_ones_fail_with_their_fix() {
    let s3 = open_s3();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("brk.toml"),
        "product = \"brk\"\n[events.ran]\n",
    )
    .unwrap();
    let manifests = dir.path().display().to_string();
    let broker = Broker::start(&s3, &[("TELEMETRY_BROKER_MANIFESTS", manifests.as_str())]);
    // An address nothing listens on, for as long as the test runs.
    let refusing = RefusingPort::new();
    let dead = refusing.endpoint();

    let env = DaemonEnv::new(Destination::S3 {
        endpoint: s3.endpoint.clone(),
        secret: SECRET_KEY.into(),
    });
    manifest(&env, "anon", &anonymous(&s3.endpoint));
    manifest(&env, "dead", &anonymous(&dead));
    // Undecided, with a destination of its own: never contacted.
    manifest(
        &env,
        "gone",
        &anonymous(&dead).replace(
            &format!("prefix = \"{VENDOR_PREFIX}\""),
            "prefix = \"undecided\"",
        ),
    );
    manifest(&env, "brk", &brokered(&broker.url));
    // The same broker by name: a destination of its own, which has no
    // manifest for this product.
    let by_name = broker.url.replace("127.0.0.1", "localhost");
    manifest(&env, "unserved", &brokered(&by_name));
    manifest(&env, "nobroker", &brokered(&dead));
    let broken = env.root().join("catalog/broken.toml");
    std::fs::write(&broken, "product = \"broken\"\n[events.x\n").unwrap();
    // `gone` is left undecided.
    consent_on(
        &env,
        &[
            "cfdev", "anon", "dead", "brk", "unserved", "nobroker", "broken",
        ],
    );
    let d = env.start();

    // A refused event: not in cfdev's catalogue.
    let refused = d.client().emit(
        vec![event("cfdev", "no_such_event", "1.0.0", BTreeMap::new())],
        TIMEOUT,
    );
    assert!(refused.is_err(), "{refused:?}");

    let (json, checks) = doctor(&env, 3);
    assert_eq!(outcome(&checks, "socket"), "pass");

    // The daemon's own bucket, signed with the AWS chain.
    let own = "destination s3://telemetry-test/e2e: ";
    assert_eq!(
        outcomes(&checks, own),
        map(&[
            ("dns", "pass"),
            ("connect", "pass"),
            ("credentials", "pass"),
            ("bucket", "pass"),
            ("clock", "pass"),
        ]),
        "{checks:#?}"
    );
    // Against the real server's Date header.
    let probes = json["destinations"]["destinations"].as_array().unwrap();
    assert_eq!(
        probes[0]["destination"], "s3://telemetry-test/e2e",
        "own first"
    );
    let skew = probes[0]["clock_skew_secs"].as_i64().expect("a skew");
    assert!(skew.abs() <= 2, "{skew}");

    // A vendor's write-only bucket: HeadBucket is refused, which passes.
    let anon = format!(
        "destination s3://{VENDOR_BUCKET}/{VENDOR_PREFIX} at {}: ",
        s3.endpoint
    );
    assert_eq!(
        outcomes(&checks, &anon),
        map(&[
            ("dns", "pass"),
            ("connect", "pass"),
            ("credentials", "pass"),
            ("bucket", "pass"),
            ("clock", "pass"),
        ]),
        "{checks:#?}"
    );

    // An endpoint nothing listens on: the checks stop at connect.
    let gone = format!("destination s3://{VENDOR_BUCKET}/{VENDOR_PREFIX} at {dead}: ");
    assert_eq!(
        outcomes(&checks, &gone),
        map(&[("dns", "pass"), ("connect", "fail")]),
        "{checks:#?}"
    );
    let connect = check(&checks, &format!("{gone}connect"));
    // The undecided product's vendor is not told it is installed here.
    let skipped = format!("destination s3://{VENDOR_BUCKET}/undecided at {dead}: ");
    assert_eq!(
        outcomes(&checks, &skipped),
        map(&[("skipped", "pass")]),
        "{checks:#?}"
    );
    assert!(check(&checks, &format!("{skipped}skipped"))["detail"]
        .as_str()
        .unwrap()
        .contains("not contacted"));
    assert!(
        connect["fix"]
            .as_str()
            .unwrap()
            .contains("listening at 127.0.0.1:"),
        "{connect}"
    );

    // The broker: up, and it accepts brk.
    let brk = format!("destination {}: ", broker.url);
    assert_eq!(
        outcomes(&checks, &brk),
        map(&[
            ("dns", "pass"),
            ("connect", "pass"),
            ("broker", "pass"),
            ("clock", "pass"),
        ]),
        "{checks:#?}"
    );
    assert!(
        check(&checks, &format!("{brk}broker"))["detail"]
            .as_str()
            .unwrap()
            .contains("accepts brk"),
        "{checks:#?}"
    );
    // Reached by name (DNS resolves localhost), but it has no manifest
    // for `unserved`.
    let unserved = format!("destination {by_name}: ");
    assert_eq!(outcome(&checks, &format!("{unserved}dns")), "pass");
    let b = check(&checks, &format!("{unserved}broker"));
    assert_eq!(b["outcome"], "fail", "{b}");
    assert!(b["detail"].as_str().unwrap().contains("unserved"), "{b}");
    // A broker URL nothing listens on.
    assert_eq!(
        outcomes(&checks, &format!("destination {dead}: ")),
        map(&[("dns", "pass"), ("connect", "fail")]),
        "{checks:#?}"
    );

    // The broken manifest, named.
    let m = check(&checks, "manifest broken");
    assert_eq!(m["outcome"], "fail", "{m}");
    assert!(
        m["detail"].as_str().unwrap().contains("broken.toml"),
        "names the file: {m}"
    );
    // Consent: decided products pass, and so does the undecided one (off
    // is no fault: the user is not pressed to opt in), saying how to decide.
    assert_eq!(outcome(&checks, "consent cfdev"), "pass");
    assert!(check(&checks, "consent cfdev")["detail"]
        .as_str()
        .unwrap()
        .contains("user file"));
    let undecided = check(&checks, "consent gone");
    assert_eq!(undecided["outcome"], "pass", "{undecided}");
    assert!(undecided["detail"]
        .as_str()
        .unwrap()
        .contains("undecided: off by default"));

    // The refused event.
    let r = check(&checks, "refusals cfdev");
    assert_eq!(r["outcome"], "warn", "{r}");
    assert!(
        r["detail"].as_str().unwrap().contains("not_in_catalogue")
            && r["detail"]
                .as_str()
                .unwrap()
                .contains("the latest: product \"cfdev\" has no event"),
        "{r}"
    );
    assert!(r["fix"].as_str().unwrap().contains("manifest"), "{r}");
    assert_eq!(outcome(&checks, "drops"), "pass");

    // Nothing was written anywhere.
    assert!(s3.objects().is_empty());
    assert!(s3.objects_in(VENDOR_BUCKET).is_empty());
    assert!(!broker.log().contains("granted "), "{}", broker.log());
    drop(d);
}

#[test]
fn a_missing_bucket_and_missing_or_wrong_credentials_fail_with_their_fix() {
    let s3 = S3Server::start();
    let mut env = DaemonEnv::new(Destination::S3 {
        endpoint: s3.endpoint.clone(),
        secret: SECRET_KEY.into(),
    });
    env.extra
        .push(("TELEMETRY_S3_BUCKET".into(), "no-such-bucket".into()));
    let d = env.start();
    let (_, checks) = doctor(&env, 3);
    let own = "destination s3://no-such-bucket/e2e: ";
    assert_eq!(
        outcomes(&checks, own),
        map(&[
            ("dns", "pass"),
            ("connect", "pass"),
            ("credentials", "pass"),
            ("bucket", "fail"),
            ("clock", "pass"),
        ]),
        "{checks:#?}"
    );
    let bucket = check(&checks, &format!("{own}bucket"));
    assert!(
        bucket["fix"]
            .as_str()
            .unwrap()
            .contains("create the bucket no-such-bucket"),
        "{bucket}"
    );
    assert!(
        bucket["fix"]
            .as_str()
            .unwrap()
            .contains("TELEMETRY_S3_BUCKET"),
        "names the setting: {bucket}"
    );
    d.terminate().unwrap();

    // The same store, but nothing in the AWS chain.
    let mut env = DaemonEnv::new(Destination::S3 {
        endpoint: s3.endpoint.clone(),
        secret: SECRET_KEY.into(),
    });
    env.extra.extend([
        ("AWS_ACCESS_KEY_ID".into(), String::new()),
        ("AWS_SECRET_ACCESS_KEY".into(), String::new()),
    ]);
    let d = env.start();
    let (_, checks) = doctor(&env, 3);
    let own = "destination s3://telemetry-test/e2e: ";
    assert_eq!(
        outcomes(&checks, own),
        map(&[
            ("dns", "pass"),
            ("connect", "pass"),
            ("credentials", "fail"),
            ("clock", "pass"),
        ]),
        "{checks:#?}"
    );
    let creds = check(&checks, &format!("{own}credentials"));
    assert!(
        creds["fix"].as_str().unwrap().contains("AWS_ACCESS_KEY_ID"),
        "{creds}"
    );
    assert!(
        !creds["detail"].as_str().unwrap().contains('\n'),
        "one line: {creds}"
    );
    d.terminate().unwrap();

    // Credentials the store does not accept: HeadBucket is refused.
    let env = DaemonEnv::new(Destination::S3 {
        endpoint: s3.endpoint.clone(),
        secret: "not-the-secret".into(),
    });
    let d = env.start();
    let (json, checks) = doctor(&env, 3);
    let bucket = check(&checks, &format!("{own}bucket"));
    assert_eq!(bucket["outcome"], "fail", "{bucket}");
    assert!(
        bucket["detail"].as_str().unwrap().contains("lack access"),
        "{bucket}"
    );
    assert!(
        !json.to_string().contains("not-the-secret"),
        "no secret in the output"
    );
    assert!(s3.objects().is_empty(), "nothing written");
    drop(d);
}

#[test]
fn a_store_that_never_answers_fails_connect_within_the_step_timeout() {
    let s3 = S3Server::start();
    let env = DaemonEnv::new(Destination::S3 {
        endpoint: s3.endpoint.clone(),
        secret: SECRET_KEY.into(),
    });
    let d = env.start();
    s3.set_fault(Fault::Hang);
    let started = std::time::Instant::now();
    let (_, checks) = doctor(&env, 3);
    // Two runs (human and JSON), each bounded by the 5 s step timeout.
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    let own = "destination s3://telemetry-test/e2e: ";
    assert_eq!(
        outcomes(&checks, own),
        map(&[("dns", "pass"), ("connect", "fail")]),
        "{checks:#?}"
    );
    let connect = check(&checks, &format!("{own}connect"));
    assert!(
        connect["detail"].as_str().unwrap().contains("within 5 s"),
        "{connect}"
    );
    drop(d);
}

#[test]
fn tls_fails_without_the_ca_bundle_and_passes_with_it_through_a_proxy() {
    let s3 = open_s3();
    let front = TlsFront::start(&s3.endpoint);
    let proxy = ConnectProxy::start();
    let mut env = DaemonEnv::new(Destination::Outbox);
    manifest(&env, "anon", &anonymous(&front.endpoint));
    consent_on(&env, &["cfdev", "anon"]);
    let vendor = format!(
        "destination s3://{VENDOR_BUCKET}/{VENDOR_PREFIX} at {}: ",
        front.endpoint
    );

    // No CA bundle: the self-signed store is not trusted.
    let d = env.start();
    let (_, checks) = doctor(&env, 3);
    let outbox = format!(
        "destination outbox:{}: outbox",
        env.state.join("outbox").display()
    );
    assert_eq!(outcome(&checks, &outbox), "pass", "{checks:#?}");
    assert_eq!(
        outcomes(&checks, &vendor),
        map(&[("dns", "pass"), ("connect", "pass"), ("tls", "fail")]),
        "{checks:#?}"
    );
    let tls = check(&checks, &format!("{vendor}tls"));
    assert!(
        tls["fix"].as_str().unwrap().contains("TELEMETRY_CA_BUNDLE"),
        "{tls}"
    );
    assert!(
        tls["detail"].as_str().unwrap().contains("certificate"),
        "{tls}"
    );
    d.terminate().unwrap();

    // With the CA, through the proxy: every check passes, and the proxy
    // saw the tunnel.
    let ca = ca_bundle().display().to_string();
    env.extra.extend([
        ("TELEMETRY_CA_BUNDLE".to_string(), ca),
        ("HTTPS_PROXY".to_string(), proxy.url.clone()),
    ]);
    let d = env.start();
    let (_, checks) = doctor(&env, 0);
    assert_eq!(
        outcomes(&checks, &vendor),
        map(&[
            ("dns", "pass"),
            ("connect", "pass"),
            ("tls", "pass"),
            ("credentials", "pass"),
            ("bucket", "pass"),
            ("clock", "pass"),
        ]),
        "{checks:#?}"
    );
    let dns = check(&checks, &format!("{vendor}dns"));
    assert!(dns["detail"].as_str().unwrap().contains("proxy"), "{dns}");
    assert!(
        check(&checks, &format!("{vendor}connect"))["detail"]
            .as_str()
            .unwrap()
            .contains(&proxy.url),
        "{checks:#?}"
    );
    assert!(
        proxy
            .connect_targets()
            .contains(&front.authority().to_string()),
        "{:?}",
        proxy.requests()
    );

    // The proxy refuses tunnels: connect fails and names it.
    proxy.set_refuse(true);
    let (_, checks) = doctor(&env, 3);
    assert_eq!(
        outcomes(&checks, &vendor),
        map(&[("dns", "pass"), ("connect", "fail")]),
        "{checks:#?}"
    );
    let connect = check(&checks, &format!("{vendor}connect"));
    assert!(
        connect["fix"].as_str().unwrap().contains("HTTPS_PROXY"),
        "{connect}"
    );
    assert!(s3.objects_in(VENDOR_BUCKET).is_empty(), "nothing written");
    assert!(
        std::fs::read_dir(env.state.join("outbox")).map_or(true, |mut d| d.next().is_none()),
        "nothing left in the outbox"
    );
    drop(d);
}

/// For people, `doctor` prints each check as it is made: what it found
/// before the destinations' probe is on the screen while the probe waits
/// on a destination that never answers.
#[test]
fn checks_are_printed_as_they_are_made() {
    use std::io::{BufRead, BufReader};
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let env = DaemonEnv::new(Destination::S3 {
        endpoint: format!("http://{}", silent.local_addr().unwrap()),
        secret: SECRET_KEY.into(),
    });
    let _daemon = env.start();
    let mut child = env
        .command("telemetryctl")
        .arg("doctor")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Read on a thread: the first line must come well before the probe
    // of the silent destination gives up (its step timeout is 5 s), not
    // with the rest at the end.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // The reader keeps the pipe open after the first line: doctor ends
    // when its stdout is closed (as `head` would), and the lines after the
    // first would otherwise find it closed, or not, by timing.
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        lines.for_each(drop);
    });
    let first = rx
        .recv_timeout(Duration::from_secs(2))
        .expect("the first check printed within 2 s, while the probe waits")
        .expect("a line")
        .unwrap();
    assert!(first.starts_with("PASS socket"), "{first}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "printed while the probe still waits"
    );
    let _ = child.kill();
    let _ = child.wait();
}
