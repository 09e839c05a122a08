//! The client command lines as a calling CLI or a script sees them (issue
//! #12): `telemetry-emit --strict`'s exit codes, messages for bad values,
//! silence without `--strict`, and `telemetryctl`'s JSON shapes and errors.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;
use telemetry_client::{event, Value};
use telemetry_proto::{ConsentReport, EventsPage, FlushReport, ProductConsent, StatusReport};
use telemetry_tests::*;

const T: Duration = Duration::from_secs(10);

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A `--strict` failure: exactly `code`, one line on stderr naming
/// `expect`, nothing on stdout, no usage text. Returns the line.
fn assert_strict(out: &Output, code: i32, expect: &[&str]) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{}", text(out));
    assert!(out.stdout.is_empty(), "{}", text(out));
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(!err.contains("Usage"), "no usage text: {err}");
    for e in expect {
        assert!(err.contains(e), "{e:?} missing: {err}");
    }
    err
}

fn assert_silent_success(out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(0), "{what}: {}", text(out));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{what}: quiet without --strict: {}",
        text(out)
    );
}

fn pending(d: &Daemon) -> u64 {
    d.client().status(T).unwrap().pending_events
}

/// Emit `n` acked `start_end` events straight to the daemon.
fn emit(d: &Daemon, n: usize) {
    let mut c = d.client();
    for i in 0..n {
        let mut data = BTreeMap::new();
        data.insert("duration_s".to_string(), Value::Int(i as i64));
        c.emit(vec![event("cfdev", "start_end", "1.0.0", data)], T)
            .expect("ack");
    }
}

fn stdout_json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {}", text(out)))
}

/// A `--json` failure: exit `exit`, exactly `{"ok": false, "error":
/// {"code", "message"}}` on stdout with `code`, and the message on stderr
/// too. Returns the message.
fn assert_json_error(out: &Output, exit: i32, code: &str) -> String {
    assert_eq!(out.status.code(), Some(exit), "{}", text(out));
    let v = stdout_json(out);
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&v), ["error", "ok"], "{v}");
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(keys(&v["error"]), ["code", "message"], "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    let message = v["error"]["message"].as_str().unwrap().to_string();
    assert!(stderr(out).contains(&message), "{}", text(out));
    message
}

#[test]
fn strict_exits_0_once_acknowledged_also_in_local_mode() {
    let env = DaemonEnv::new(Destination::Outbox);
    let daemon = env.start();
    let out = env.shim(&[], &["--strict", "stop"]);
    assert_silent_success(&out, "acknowledged");
    assert_eq!(pending(&daemon), 1);

    let ctl = env.run("telemetryctl", &["consent", "cfdev", "local"]);
    assert!(ctl.status.success(), "{}", text(&ctl));
    let out = env.shim(&[], &["--strict", "bosh"]);
    assert_silent_success(&out, "acknowledged in local mode");
    // on → local kept the first event home too.
    let st = daemon.client().status(T).unwrap();
    assert_eq!((st.pending_events, st.local_events), (0, 2));
}

#[test]
fn strict_exits_1_when_not_acknowledged_and_says_where_the_event_was_spooled() {
    let env = DaemonEnv::new(Destination::Outbox);
    let spool = env.spool_file();
    let out = env.shim(&[], &["--strict", "stop"]);
    assert_strict(
        &out,
        1,
        &[
            "not acknowledged",
            "spooled to",
            &spool.display().to_string(),
        ],
    );
    assert!(spool.exists());
}

#[test]
fn strict_exits_2_for_bad_arguments_and_values_with_one_line_and_no_usage() {
    let env = DaemonEnv::new(Destination::Outbox);
    /// Variables, arguments, what the message must name.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a [&'a str]);
    let cases: [Case; 6] = [
        (
            &[],
            &["--strict", "stop", "novalue"],
            &["KEY=VALUE", "novalue"],
        ),
        // A flag after --timeout-ms is not its value (an empty $T).
        (
            &[],
            &["--timeout-ms", "--strict", "stop"],
            &["--timeout-ms"],
        ),
        (
            &[],
            &["--strict", "stop", "k=1", "k:=2"],
            &["\"k\"", "twice", "k:=2"],
        ),
        (&[], &["--strict", "--frob", "stop"], &["--frob", "e.g."]),
        (
            &[],
            &["--strict", "--timeout-ms", "banana", "stop"],
            &[
                "invalid value 'banana' for --timeout-ms",
                "milliseconds, e.g. 100",
            ],
        ),
        (
            &[("TELEMETRY_EMIT_TIMEOUT_MS", "banana")],
            &["--strict", "stop"],
            &["TELEMETRY_EMIT_TIMEOUT_MS=banana", "milliseconds, e.g. 100"],
        ),
    ];
    for (vars, args, expect) in cases {
        let err = assert_strict(&env.shim(vars, args), 2, expect);
        if !vars.is_empty() {
            assert!(!err.contains("--timeout-ms"), "names the variable: {err}");
        }
    }
    // The product is required: a flag or the variable.
    let out = env
        .command("telemetry-emit")
        .env_remove("TELEMETRY_PRODUCT")
        .args(["--strict", "stop"])
        .output()
        .unwrap();
    assert_strict(&out, 2, &["--product", "TELEMETRY_PRODUCT", "e.g."]);
    // A mistake is reported whatever the consent: the arguments are checked
    // before it.
    std::fs::remove_file(env.root().join("consent")).unwrap();
    assert_strict(
        &env.shim(&[], &["--strict", "stop", "novalue"]),
        2,
        &["KEY=VALUE"],
    );
}

#[test]
fn strict_exits_3_when_the_daemon_refuses_and_does_not_spool() {
    let env = DaemonEnv::new(Destination::Outbox);
    let daemon = env.start();
    for (args, expect) in [
        (&["--strict", "no_such_event"][..], "no_such_event"),
        (&["--strict", "stop", "path=/home/alice"][..], "path"),
    ] {
        assert_strict(
            &env.shim(&[], args),
            3,
            &["refused", "not_in_catalogue", expect],
        );
    }
    assert!(!env.spool_file().exists());
    assert_eq!(pending(&daemon), 0);
}

#[test]
fn strict_exits_4_when_consent_is_off_naming_the_layer_that_decided() {
    let env = DaemonEnv::new(Destination::Outbox);
    let user = env.root().join("consent");
    let system = env.root().join("system-consent");
    let user_s = user.display().to_string();
    let system_s = system.display().to_string();

    // Each layer in turn; without --strict the same run is silent.
    let check = |vars: &[(&str, &str)], expect: &[&str]| {
        assert_strict(&env.shim(vars, &["--strict", "stop"]), 4, expect);
        assert_silent_success(&env.shim(vars, &["stop"]), &format!("{expect:?}"));
    };
    check(
        &[("DO_NOT_TRACK", "1")],
        &["off", "environment variable DO_NOT_TRACK"],
    );
    check(
        &[("TELEMETRY_OPTOUT", "yes")],
        &["off", "environment variable TELEMETRY_OPTOUT"],
    );
    std::fs::write(&user, "cfdev off\n").unwrap();
    check(
        &[],
        &["off", "user file", &user_s, "telemetryctl consent cfdev on"],
    );
    std::fs::remove_file(&user).unwrap();
    check(&[], &["off", "default", "telemetryctl consent cfdev on"]);
    std::fs::write(&user, "cfdev on\n").unwrap();
    std::fs::write(&system, "* off\n").unwrap();
    check(&[], &["off", "system file", &system_s]);
    std::fs::remove_file(&system).unwrap();

    // The daemon's own opt-out: its consent_off reply is the same code.
    let daemon = env.start_with(&[("DO_NOT_TRACK", "1")]);
    assert_strict(
        &env.shim(&[], &["--strict", "stop"]),
        4,
        &["consent_off", "environment"],
    );
    assert_eq!(pending(&daemon), 0);
    assert!(!env.spool_file().exists());
}

#[test]
fn without_strict_the_shim_is_silent_and_a_bad_timeout_does_not_cost_the_event() {
    let mut env = DaemonEnv::new(Destination::Outbox);
    // Should the default budget (100 ms) run out on a loaded machine, the
    // event is spooled: let the daemon take it in soon.
    env.extra
        .push(("TELEMETRY_SPOOL_CHECK_INTERVAL".into(), "100ms".into()));
    let daemon = env.start();

    // A bad variable or flag value: the default budget, the event sent.
    let out = env.shim(&[("TELEMETRY_EMIT_TIMEOUT_MS", "banana")], &["stop"]);
    assert_silent_success(&out, "bad variable");
    wait_for("the event despite the bad variable", T, || {
        (pending(&daemon) == 1).then_some(())
    });
    let mut cmd = env.command("telemetry-emit");
    let out = cmd
        .args(["--product", "cfdev", "--timeout-ms", "banana", "stop"])
        .output()
        .unwrap();
    assert_silent_success(&out, "bad flag value");
    wait_for("the event despite the bad flag value", T, || {
        (pending(&daemon) == 2).then_some(())
    });
    // One that looks like a flag is a bad value too, not a broken command
    // line that loses the event.
    let out = env
        .command("telemetry-emit")
        .args(["--product", "cfdev", "--timeout-ms", "-1", "stop"])
        .output()
        .unwrap();
    assert_silent_success(&out, "a negative flag value");
    wait_for("the event despite the negative flag value", T, || {
        (pending(&daemon) == 3).then_some(())
    });
    // With --strict, the bad value is reported before anything is sent.
    let out = env.shim(
        &[("TELEMETRY_EMIT_TIMEOUT_MS", "banana")],
        &["--strict", "stop"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(pending(&daemon), 3, "nothing sent");

    // Whatever else goes wrong, nothing is printed into the host's output.
    let no_product = env
        .command("telemetry-emit")
        .env_remove("TELEMETRY_PRODUCT")
        .arg("stop")
        .output()
        .unwrap();
    assert_silent_success(&no_product, "no product");
    for args in [
        &["--frob", "stop"][..],
        &[][..],
        &["stop", "novalue"][..],
        &["no_such_event"][..],
        // The host's own words passed on after the event: no help text.
        &["stop", "-h"][..],
        &["stop", "k=v", "--version"][..],
    ] {
        assert_silent_success(&env.shim(&[], args), &format!("{args:?}"));
    }
    drop(daemon);
    assert_silent_success(&env.shim(&[], &["stop"]), "no daemon");
}

/// A `TELEMETRY_*` variable exported empty (as CI systems and wrapper
/// scripts do) counts as unset in the shim, the daemon and `telemetryctl`:
/// clap alone took it as an empty value, so the shim refused its event
/// ("build \"\" is not valid") and the others blamed a flag nobody typed.
#[test]
fn an_empty_variable_counts_as_unset() {
    let env = DaemonEnv::new(Destination::Outbox);
    let daemon = env.start_with(&[("TELEMETRY_SYNC", ""), ("TELEMETRY_BATCH_MAX_EVENTS", "")]);
    let out = env.shim(
        &[("TELEMETRY_BUILD", ""), ("TELEMETRY_EMIT_NO_WAIT", "")],
        &["--strict", "stop"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(pending(&daemon), 1);
    let out = env
        .command("telemetryctl")
        .env("TELEMETRY_SOCKET", "")
        .args(["status"])
        .output()
        .unwrap();
    let said = text(&out);
    assert!(!said.contains("--socket"), "{said}");
}

/// A host that closed the shim's stderr gets the documented exit code, not
/// a panic's 101.
#[test]
fn a_strict_shim_with_a_broken_stderr_exits_with_its_code() {
    let env = DaemonEnv::new(Destination::Outbox);
    for (args, code) in [
        (&["--strict", "--frob", "stop"][..], 2),
        (&["--strict", "--product", "cfdev", "stop", "-h"][..], 2),
        // No daemon: spooled, not acknowledged.
        (&["--strict", "--product", "cfdev", "stop"][..], 1),
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = env
            .command("telemetry-emit")
            .args(args)
            .stderr(writer)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn the_shims_help_shows_the_exit_codes_and_that_the_product_is_required() {
    let env = DaemonEnv::new(Destination::Outbox);
    let out = env.run("telemetry-emit", &["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Usage: telemetry-emit [OPTIONS] --product <P> <EVENT>"),
        "{help}"
    );
    assert!(help.contains("TELEMETRY_PRODUCT"), "{help}");
    assert!(help.contains("TELEMETRY_EMIT_TIMEOUT_MS"), "{help}");
    for (code, words) in [
        ("0", "acknowledged"),
        ("1", "not acknowledged"),
        ("2", "bad arguments"),
        ("3", "refused by the daemon"),
        ("4", "consent is off"),
    ] {
        assert!(
            help.lines()
                .any(|l| l.starts_with(&format!("  {code}  ")) && l.contains(words)),
            "exit code {code}: {help}"
        );
    }
}

#[test]
fn telemetryctl_names_a_bad_duration_and_shows_a_valid_one() {
    let env = DaemonEnv::new(Destination::Outbox);
    let expect = "invalid value 'banana' for --timeout: expected a duration such as 30s, 2m or 1h";
    let out = env.run("telemetryctl", &["flush", "--timeout", "banana"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(expect), "{}", text(&out));
    assert!(!text(&out).contains("expected number"), "{}", text(&out));
    let out = env.run("telemetryctl", &["flush", "--timeout", "banana", "--json"]);
    assert_eq!(assert_json_error(&out, 2, "usage"), expect);
}

/// A product name no product can have is a usage error for every verb
/// that takes one (it found nothing and read as "nothing stored"); a valid
/// name the daemon has no manifest for, when nothing of it is stored, gets
/// the warning `consent` gives; a misspelt verb or flag gets clap's tip.
#[test]
fn telemetryctl_checks_product_names_and_suggests_what_was_meant() {
    let env = DaemonEnv::new(Destination::Outbox);
    let _daemon = env.start();
    let long_key = "k".repeat(2000);
    let invalid = "product \"CFDev\" is not a valid name";
    for (args, expect) in [
        (&["show", "--product", "CFDev"][..], invalid),
        (&["purge", "--product", "CFDev"][..], invalid),
        (&["forget", "CFDev"][..], invalid),
        (
            &["show", "--receipt", long_key.as_str()][..],
            "an object key has at most 1024 bytes, this one 2000",
        ),
    ] {
        let out = env.run("telemetryctl", args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(stderr(&out).contains(expect), "{args:?}: {}", text(&out));
    }
    for args in [
        &["show", "--product", "cfdve"][..],
        &["purge", "--product", "cfdve"][..],
    ] {
        let out = env.run("telemetryctl", args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            stderr(&out).contains("no manifest for product \"cfdve\" (products with one: cfdev"),
            "{args:?}: {}",
            text(&out)
        );
    }
    let out = env.run("telemetryctl", &["show", "--product", "cfdev"]);
    assert!(!stderr(&out).contains("warning"), "{}", text(&out));
    // Forgetting a slip warns, and leaves no trace `status` would list
    // for good (it was "consent: cfdve: off (default)").
    let out = env.run("telemetryctl", &["forget", "cfdve"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains("no manifest for product \"cfdve\""),
        "{}",
        text(&out)
    );
    let out = env.run("telemetryctl", &["status"]);
    assert!(!text(&out).contains("cfdve"), "{}", text(&out));
    let out = env.run("telemetryctl", &["stauts"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("tip: some similar subcommands exist"),
        "{}",
        text(&out)
    );
    let out = env.run("telemetryctl", &["show", "--prodcut", "cfdev"]);
    assert!(
        stderr(&out).contains("tip: a similar argument exists: '--product'"),
        "{}",
        text(&out)
    );
}

/// A flush that outlasts `--timeout` says the upload goes on in the
/// daemon and where to see how it ends (exit 1: no answer in time).
#[test]
fn a_flush_that_times_out_says_the_upload_goes_on() {
    // An endpoint that takes connections (the kernel's backlog) and never
    // answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let env = DaemonEnv::new(Destination::S3 {
        endpoint: format!("http://{}", silent.local_addr().unwrap()),
        secret: SECRET_KEY.into(),
    });
    let daemon = env.start();
    daemon
        .client()
        .emit(vec![event("cfdev", "stop", "1.0.0", BTreeMap::new())], T)
        .expect("acked");
    let out = env.run("telemetryctl", &["flush", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = stderr(&out);
    assert!(
        said.contains("did not answer within") && said.contains("goes on in the daemon"),
        "{said}"
    );
    // A script tells a slow daemon from one that is not there.
    let out = env.run("telemetryctl", &["flush", "--timeout", "1s", "--json"]);
    let message = assert_json_error(&out, 1, "timeout");
    assert!(message.contains("did not answer within"), "{message}");
}

/// `telemetryd --check-config` says what a start would use and exits
/// without binding or writing anything: 0 when usable, 1 naming a bad
/// setting's variable, 3 naming a broken manifest's file.
#[test]
fn check_config_prints_the_settings_and_names_what_is_wrong() {
    let env = DaemonEnv::new(Destination::Outbox);
    let check = |extra: &[(&str, &str)]| {
        env.command("telemetryd")
            .envs(extra.iter().copied())
            .arg("--check-config")
            .output()
            .unwrap()
    };
    let out = check(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("configuration OK"), "{said}");
    assert!(said.contains(&env.socket.display().to_string()), "{said}");
    assert!(said.contains("manifest cfdev:"), "{said}");
    assert!(!env.socket.exists(), "nothing bound");
    assert!(
        !env.root().join("state").join("events.sqlite3").exists(),
        "no store made"
    );

    let out = check(&[("TELEMETRY_UPLOAD_INTERVAL", "soon")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("TELEMETRY_UPLOAD_INTERVAL"),
        "{}",
        text(&out)
    );

    let catalog = env.root().join("catalog");
    std::fs::create_dir_all(&catalog).unwrap();
    // A misspelt table: usable, with a warning, unless --strict.
    std::fs::write(
        catalog.join("toolw.toml"),
        "product = \"toolw\"\n[events.ran]\n[event.login]\n",
    )
    .unwrap();
    let out = check(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.contains("manifest toolw:")
            && said.contains("warning:")
            && said.contains("configuration OK (1 manifest warning above)"),
        "{said}"
    );
    let out = env
        .command("telemetryd")
        .args(["--check-config", "--strict"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.contains("manifests FAIL --strict (1 manifest warning above)"),
        "{said}"
    );
    // --strict means nothing alone: a usage error, not a daemon started.
    let out = env.command("telemetryd").arg("--strict").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    std::fs::remove_file(catalog.join("toolw.toml")).unwrap();

    std::fs::write(
        catalog.join("toolx.toml"),
        "product = \"toolx\"\nnot toml [\n",
    )
    .unwrap();
    let out = check(&[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.contains("manifest toolx: DISABLED")
            && said.contains("toolx.toml")
            && said.contains("settings OK; a product manifest is broken"),
        "{said}"
    );
}

#[test]
fn with_json_every_failure_is_one_error_object_on_stdout() {
    let s3 = S3Server::start();
    let env = DaemonEnv::new(Destination::S3 {
        endpoint: s3.endpoint.clone(),
        secret: SECRET_KEY.into(),
    });
    let socket = env.socket.display().to_string();
    // No daemon: unreachable, exit 1.
    for args in [
        &["status", "--json"][..],
        &["flush", "--json"][..],
        &["show", "--json"][..],
        &["purge", "--json"][..],
    ] {
        let out = env.run("telemetryctl", args);
        let message = assert_json_error(&out, 1, "unreachable");
        assert!(message.contains(&socket), "{args:?}: {message}");
    }
    // Usage, exit 2.
    for args in [
        &["consent", "Not-A-Name!", "on", "--json"][..],
        &["consent", "cfdev", "maybe", "--json"][..],
        &["frobnicate", "--json"][..],
    ] {
        assert_json_error(&env.run("telemetryctl", args), 2, "usage");
    }
    // A consent file that cannot be written, exit 1.
    let blocker = env.root().join("a-file");
    std::fs::write(&blocker, "").unwrap();
    let unwritable: PathBuf = blocker.join("consent");
    let out = env
        .command("telemetryctl")
        .env("TELEMETRY_CONSENT_FILE", &unwritable)
        .args(["consent", "cfdev", "on", "--json"])
        .output()
        .unwrap();
    let message = assert_json_error(&out, 1, "consent_file");
    assert!(
        message.contains(&unwritable.display().to_string()),
        "{message}"
    );
    // Refused by the daemon, exit 3: its error code, in snake_case.
    let daemon = env.start();
    emit(&daemon, 1);
    s3.set_fault(Fault::Status(403, "AccessDenied"));
    let out = env.run("telemetryctl", &["flush", "--json"]);
    assert_json_error(&out, 3, "upload");
}

#[test]
fn json_outputs_are_the_serde_form_of_the_protocols_types_with_one_spelling() {
    let env = DaemonEnv::new(Destination::Outbox);
    let daemon = env.start();
    emit(&daemon, 2);
    let json = |args: &[&str]| {
        let out = env.run("telemetryctl", args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        stdout_json(&out)
    };

    let status: StatusReport = serde_json::from_value(json(&["status", "--json"])).unwrap();
    assert_eq!(status.pending_events, 2);
    let show: EventsPage = serde_json::from_value(json(&["show", "--json"])).unwrap();
    assert_eq!(show.events.len(), 2);
    assert_eq!(show.next_after_seq, None);
    let line: serde_json::Value = serde_json::from_str(&show.events[0].line).unwrap();
    assert_eq!(line["event"], "start_end");
    let flush: FlushReport = serde_json::from_value(json(&["flush", "--json"])).unwrap();
    assert_eq!((flush.events, flush.keys.len()), (2, 1));
    emit(&daemon, 3);
    assert_eq!(
        json(&["purge", "--json"]),
        serde_json::json!({ "events": 3 })
    );

    // Consent: the same shape and spelling from the daemon (status) and
    // from the files (consent), "user_file" everywhere.
    let from_status = json(&["status", "--json"])["consent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["product"] == "cfdev")
        .cloned()
        .unwrap();
    assert_eq!(from_status["layer"], "user_file");
    let one = json(&["consent", "cfdev", "--json"]);
    assert_eq!(one, from_status);

    let _: ProductConsent = serde_json::from_value(one).unwrap();
    let all: Vec<ProductConsent> = serde_json::from_value(json(&["consent", "--json"])).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        serde_json::to_value(&all[0]).unwrap(),
        from_status,
        "one spelling"
    );

    let changed = json(&["consent", "cfdev", "local", "--json"]);
    assert_eq!(changed["daemon_notified"], true, "{changed}");
    let report: ConsentReport = serde_json::from_value(changed).unwrap();
    assert_eq!(
        serde_json::to_value(&report.consent).unwrap(),
        serde_json::json!({"product": "cfdev", "mode": "local", "layer": "user_file",
            "manifest": "built-in cfdev.toml", "manifest_error": null, "version": 1,
            "consented_version": 1, "new_events": [], "manifest_warnings": []})
    );
    // A user whose clients read another consent file than the daemon's (a
    // machine-wide daemon follows its owner's) is not shown the version
    // the daemon's file consented to as theirs.
    let theirs = env.root().join("another-users-consent");
    std::fs::write(&theirs, "cfdev on 2026-12-01T00:00:00Z\n").unwrap();
    let out = env
        .command("telemetryctl")
        .env("TELEMETRY_CONSENT_FILE", &theirs)
        .args(["consent", "cfdev", "--json"])
        .output()
        .unwrap();
    let other = stdout_json(&out);
    assert_eq!(
        (other["mode"].as_str(), other["layer"].as_str()),
        (Some("on"), Some("user_file")),
        "{other}"
    );
    assert_eq!(other["consented_version"], 0, "{other}");
    // Turned off with the daemon down: the same shape, made from the files.
    drop(daemon);
    let changed = json(&["consent", "cfdev", "off", "--json"]);
    assert_eq!(changed["daemon_notified"], false, "{changed}");
    let report: ConsentReport = serde_json::from_value(changed).unwrap();
    assert_eq!(
        report.file,
        env.root().join("consent").display().to_string()
    );
    assert_eq!(report.consent.layer, telemetry_proto::Layer::UserFile);
}

#[test]
fn human_output_counts_agree_with_their_number() {
    let env = DaemonEnv::new(Destination::Outbox);
    let daemon = env.start();
    let run = |args: &[&str]| {
        let out = env.run("telemetryctl", args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    emit(&daemon, 1);
    let status = run(&["status"]);
    assert!(
        status.contains("pending:      1 event (") && status.contains("0 sealed batches"),
        "{status}"
    );
    let flush = run(&["flush"]);
    assert!(flush.contains("uploaded 1 event in 1 object,"), "{flush}");
    let status = run(&["status"]);
    assert!(
        status.contains("uploaded:     1 event since start"),
        "{status}"
    );
    emit(&daemon, 1);
    let purge = run(&["purge"]);
    assert!(
        purge.contains("deleted 1 stored event that was not uploaded yet"),
        "{purge}"
    );
    emit(&daemon, 2);
    let purge = run(&["purge"]);
    assert!(
        purge.contains("deleted 2 stored events that were not uploaded yet"),
        "{purge}"
    );
    for out in [status, flush, purge] {
        assert!(!out.contains("(s)") && !out.contains(" 1 events"), "{out}");
    }
}

/// Issue #17: `TELEMETRY_LOG_FORMAT=json` makes every line of the daemon's
/// log one JSON object for a log collector; a value that is not a format
/// is a warning, and the daemon runs on with text.
#[test]
fn telemetry_log_format_json_gives_one_object_per_line_and_a_bad_value_only_warns() {
    let env = DaemonEnv::new(Destination::Outbox);
    let d = env.start_with(&[("TELEMETRY_LOG_FORMAT", "json"), ("TELEMETRY_LOG", "debug")]);
    emit(&d, 2);
    assert_eq!(pending(&d), 2);
    let log = d.log();
    d.terminate().unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 2, "{log}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string() && v["fields"].is_object(),
            "{line}"
        );
    }

    // The first daemon sealed its events on the way out; this one still
    // takes events.
    let d = env.start_with(&[("TELEMETRY_LOG_FORMAT", "xml")]);
    emit(&d, 1);
    assert_eq!(pending(&d), 1);
    let log = d.log();
    d.terminate().unwrap();
    assert!(
        log.contains(
            "TELEMETRY_LOG_FORMAT=\"xml\" is not a log format (text or json); logging as text"
        ),
        "{log}"
    );
    let warning = log
        .lines()
        .find(|l| l.contains("is not a log format"))
        .unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(warning).is_err(),
        "text, not JSON: {warning}"
    );

    // A filter that does not parse: a warning naming it, and the default.
    let d = env.start_with(&[("TELEMETRY_LOG", "telemetryd=[")]);
    emit(&d, 1);
    let log = d.log();
    d.terminate().unwrap();
    assert!(
        log.contains("TELEMETRY_LOG=\"telemetryd=[\"") && log.contains("is not a log filter"),
        "{log}"
    );
    assert!(
        log.contains("telemetryd listening"),
        "info still logged: {log}"
    );
}

/// The commands that print and exit end as any Unix tool does when their
/// reader has gone (`telemetryd --check-config | head -1`), and telemetryctl
/// says it cannot write its output to a full disk: neither panics (101).
#[cfg(unix)]
#[test]
fn printing_commands_end_cleanly_on_a_closed_pipe_or_a_full_disk() {
    use std::os::unix::process::ExitStatusExt;
    let env = DaemonEnv::new(Destination::Outbox);
    for args in [&["--check-config"][..], &["install", "--user", "--dry-run"]] {
        // A pipe whose reader is closed before the command starts.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = env
            .command("telemetryd")
            .args(args)
            .stdout(writer)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {:?}: {err}",
            out.status
        );
    }
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = env
        .command("telemetryctl")
        .args(["consent"])
        .stdout(full)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write the output"), "{err}");
    // Completions and man pages too (clap_complete panics on a failed
    // write: they are rendered in memory first).
    for (binary, args, code) in [
        ("telemetryctl", &["completions", "bash"][..], 1),
        ("telemetryd", &["--generate-docs", "zsh"][..], 2),
        ("telemetry-emit", &["--generate-docs", "man"][..], 2),
        ("telemetryd", &["--check-config"][..], 1),
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = env
            .command(binary)
            .args(args)
            .stdout(full)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{binary} {args:?}: {err}");
        assert_eq!(out.status.code(), Some(code), "{binary} {args:?}: {err}");
        assert!(err.contains("No space left"), "{binary} {args:?}: {err}");
    }
}

/// A reader that goes away (`telemetryctl show | head -1`) ends telemetryctl
/// as it ends any Unix tool, not with a panic and exit 101.
#[cfg(unix)]
#[test]
fn telemetryctl_ends_quietly_when_its_reader_goes_away() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let env = DaemonEnv::new(Destination::Outbox);
    let d = env.start();
    // Well over a pipe's 64 KiB of output.
    emit(&d, 600);
    let mut child = env
        .command("telemetryctl")
        .args(["show", "--ndjson"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    out.read_exact(&mut first).unwrap();
    drop(out);
    let result = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        result.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {err}",
        result.status
    );
}

/// The machine-wide daemon takes in no user's spool, so a shim that finds
/// it down keeps nothing there (the event would never be delivered) and
/// says so, rather than "spooled for delivery".
#[test]
fn nothing_is_spooled_for_the_machine_wide_daemon_that_never_reads_it() {
    if !cfg!(target_os = "linux") || std::path::Path::new("/run/telemetry/telemetryd.sock").exists()
    {
        eprintln!("SKIPPED: needs Linux with no machine-wide daemon running");
        return;
    }
    let env = DaemonEnv::new(Destination::Outbox);
    let socket = "/run/telemetry/telemetryd.sock";
    let out = env.shim(
        &[("TELEMETRY_SOCKET", socket), ("TELEMETRY_AUTOSTART", "0")],
        &["--strict", "stop"],
    );
    assert_strict(&out, 1, &["not recorded", "not kept"]);
    let spool = telemetry_proto::paths::spool_file_for(&env.state, std::path::Path::new(socket));
    assert!(!spool.exists(), "{}", spool.display());
    assert!(!stderr(&out).contains("for delivery"));
}
