use super::*;

fn ev(event: &str, data: &[(&str, Value)]) -> WireEvent {
    WireEvent {
        id: uuid_nil(),
        event: event.into(),
        product: "cfdev".into(),
        build: "1".into(),
        timestamp_us: 1_800_000_000_000_000,
        data: data
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

fn uuid_nil() -> uuid::Uuid {
    uuid::Uuid::nil()
}

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    Manifest::parse(text, Path::new("/v/mytool.toml"), Some("mytool"))
}

#[test]
fn builtin_cfdev_has_the_seeds_17_events() {
    let cat = Manifest::builtin_cfdev();
    let names: Vec<&str> = cat.events.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 17, "{names:?}");
    for n in [
        "start_begin",
        "start_end",
        "error",
        "stop",
        "uninstall",
        "app_created",
        "route_created",
        "deployed_service",
        "service_created",
        "user_provided_service_created",
        "app_bound_to_service",
        "app_restage",
        "org_created",
        "space_created",
        "user_created",
        "bosh",
        "telemetry_off",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    assert!(cat.warnings.is_empty(), "{:?}", cat.warnings);
    assert_eq!(cat.upload, None, "cfdev uses the daemon's own destination");
}

#[test]
fn checks_names_keys_types_and_ranges() {
    let cat = Manifest::builtin_cfdev();
    cat.check(&ev("error", &[("kind", Value::Str("timeout".into()))]))
        .unwrap();
    cat.check(&ev("stop", &[])).unwrap();
    let err = cat
        .check(&ev(
            "error",
            &[("kind", Value::Str("/home/alice/x: denied".into()))],
        ))
        .unwrap_err();
    assert!(err.to_string().contains("must be one of"), "{err}");
    assert!(matches!(
        cat.check(&ev("nope", &[])),
        Err(Rejection::UnknownEvent { .. })
    ));
    assert!(matches!(
        cat.check(&ev("stop", &[("path", Value::Str("x".into()))])),
        Err(Rejection::UnknownKey { .. })
    ));
    // A slip of the name is pointed at what was meant, with what is listed.
    let err = cat
        .check(&ev("error", &[("knd", Value::Str("timeout".into()))]))
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("; did you mean \"kind\"?; its data keys: kind"),
        "{err}"
    );
    let err = cat.check(&ev("stpo", &[])).unwrap_err().to_string();
    assert!(
        err.contains("; did you mean \"stop\"?; its events: "),
        "{err}"
    );
    assert!(err.contains(" more"), "17 events, 8 shown: {err}");
    // Nothing near: only the list.
    let err = cat
        .check(&ev("stop", &[("path", Value::Str("x".into()))]))
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("; it lists no data keys") && !err.contains("did you mean"),
        "{err}"
    );
    assert_eq!(super::edit_distance("comand", "command"), 1);
    assert_eq!(super::edit_distance("", "ab"), 2);
    assert_eq!(super::edit_distance("kitten", "sitting"), 3);
    assert_eq!(super::edit_distance("stpo", "stop"), 1);
    assert!(matches!(
        cat.check(&ev("start_end", &[("duration_s", Value::Int(-1))])),
        Err(Rejection::BadValue { .. })
    ));
    assert!(matches!(
        cat.check(&ev("start_end", &[("success", Value::Int(1))])),
        Err(Rejection::BadValue { .. })
    ));
}

#[test]
fn a_string_value_that_is_a_path_is_refused() {
    let m = parse(
        "product = \"mytool\"\n[events.ran]\ndata.tag = { type = \"string\", max_len = 64 }\n",
    )
    .unwrap();
    let tag = |v: &str| m.check(&ev("ran", &[("tag", Value::Str(v.into()))]));
    for path in [
        "/home/alice/project",
        "/tmp/x",
        " /home/alice",
        "~/src/app",
        "~alice/x",
        "~\\src",
        "C:\\Users\\alice",
        "d:/work",
        "\\\\server\\share",
        "file:///home/alice/x",
    ] {
        let err = tag(path).unwrap_err().to_string();
        assert!(err.contains("looks like a file path"), "{path}: {err}");
    }
    for fine in [
        "go",
        "node/20",
        "~1.2",
        "https://example.com",
        "a:b",
        "C:",
        "/",
        "//comment",
        "/help",
        "/quiet",
        "/?",
    ] {
        tag(fine).unwrap_or_else(|e| panic!("{fine}: {e}"));
    }
}

#[test]
fn bad_manifests_name_the_file_the_key_and_the_line() {
    let err = parse("product = \"other\"\n").unwrap_err().to_string();
    assert!(
        err.contains("/v/mytool.toml") && err.contains("product"),
        "{err}"
    );
    let err = parse("product = \"mytool\"\n[events.x]\ndata.k = { type = \"float\" }\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("float") && err.contains("line 3"), "{err}");
    let err =
        parse("product = \"mytool\"\n\n[events.x]\ndata.k = { type = \"enum\", values = [] }\n")
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("at least one value") && err.contains("line 4"),
        "{err}"
    );
    let err = parse("product = \"mytool\"\n[events.\"Bad Name\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("events.Bad Name"), "{err}");
    // On one line: the parser's caret drawing, flattened, read as
    // "| 6 | data.size = ... | ^^^^^".
    let err = parse("product = \"mytool\"\n[events.x]\ndata.size = { tpye = \"int\" }\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "line 3, column 13: missing field `type` (in `data.size = { tpye = \"int\" }`)"
        ),
        "{err}"
    );
    assert!(
        !err.contains('\n') && !err.contains('^') && !err.contains(" | "),
        "{err}"
    );
    // The whole document's error points at no line; one at the very end
    // quotes none.
    let err = parse("# a comment\n[events.x]\n").unwrap_err().to_string();
    assert!(
        err.contains("missing field `product`") && !err.contains("(in `"),
        "{err}"
    );
    let err = parse("product = \"mytool\"\nx = \"\"\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line ") && !err.contains("(in ``)"), "{err}");
}

/// What the protocol's limits refuse at every emit is warned about when the
/// manifest is read (the vendor learns it from `--check-config`, not from
/// every user's refusals), as are a manifest with no events and `[event.x]`
/// for `[events.x]`. Warnings, not errors: a manifest an older daemon took
/// keeps its product working.
#[test]
fn what_the_limits_refuse_and_an_empty_catalogue_are_warned_about() {
    let warned = |text: &str, what: &[&str]| {
        let m = parse(text).unwrap();
        assert!(
            m.warnings
                .iter()
                .any(|w| what.iter().all(|x| w.contains(x))),
            "{what:?}: {:?}",
            m.warnings
        );
    };
    warned(
        "product = \"mytool\"\n[events.x]\ndata.note = { type = \"string\", max_len = 100000 }\n",
        &[
            "`events.x.data.note`",
            "max_len 100000",
            "at most 256 bytes",
        ],
    );
    let keys: String = (0..33)
        .map(|i| format!("data.k{i} = {{ type = \"bool\" }}\n"))
        .collect();
    warned(
        &format!("product = \"mytool\"\n[events.x]\n{keys}"),
        &["`events.x`", "33 data keys", "at most 32"],
    );
    warned(
        "product = \"mytool\"\n[events.x]\ndata.t = { type = \"enum\", values = [\"a\", \"a\"] }\n",
        &["listed twice"],
    );
    warned(
        "product = \"mytool\"\n[events.x]\ndata.t = { type = \"enum\", values = [\"a\\u0007\"] }\n",
        &["can never be sent"],
    );
    warned(
        "product = \"mytool\"\n[event.x]\n",
        &["`event`", "did you mean `[events.NAME]`"],
    );
    warned("product = \"mytool\"\n", &["no events"]);
    // At the limits: nothing to say.
    let keys: String = (0..32)
        .map(|i| format!("data.k{i} = {{ type = \"bool\" }}\n"))
        .collect();
    let m = parse(&format!(
        "product = \"mytool\"\n[events.x]\ndata.s = {{ type = \"string\", max_len = 256 }}\n[events.y]\n{keys}"
    ))
    .unwrap();
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
}

#[test]
fn unknown_keys_and_tables_are_warnings_not_errors() {
    let m = parse(
        "product = \"mytool\"\nfuture = 1\n[telemetry_v9]\nx = 2\n[upload]\nauth = \"broker\"\nbroker = \"https://b.example\"\nsigning = \"v5\"\n[consent]\nversion = 3\nprompt = \"Help us?\"\nstyle = \"bold\"\n[events.ran]\nsince = \"2.0\"\ndata.flag = { type = \"bool\" }\n",
    )
    .unwrap();
    assert_eq!(m.version, 3);
    assert_eq!(m.prompt.as_deref(), Some("Help us?"));
    assert_eq!(m.warnings.len(), 5, "{:?}", m.warnings);
    for key in [
        "future",
        "telemetry_v9",
        "upload.signing",
        "consent.style",
        "events.ran.since",
    ] {
        assert!(
            m.warnings.iter().any(|w| w.contains(&format!("`{key}"))),
            "{key} not warned about: {:?}",
            m.warnings
        );
    }
}

#[test]
fn a_data_fields_keys_its_type_does_not_take_are_warned_about() {
    // Read through their `type` tag, a field's keys are hidden from the
    // unknown-key report: a slip there left the field without its limit.
    // Every key each type takes (fine, s, e, b) is no warning: the lists
    // the check keeps are the parser's.
    let m = parse(
        "product = \"mytool\"\n[events.ran]\ndata.lang = { type = \"string\", max_length = 8 }\ndata.jobs = { type = \"int\", minimum = 1, max = 64 }\ndata.kind = { type = \"enum\", values = [\"a\"], max_len = 3 }\ndata.ok = { type = \"bool\", values = [\"x\"] }\ndata.fine = { type = \"int\", min = 0, max = 9, bins = [0, 5] }\ndata.s = { type = \"string\", max_len = 8 }\ndata.e = { type = \"enum\", values = [\"a\"] }\ndata.b = { type = \"bool\" }\n",
    )
    .unwrap();
    for key in [
        "events.ran.data.lang.max_length",
        "events.ran.data.jobs.minimum",
        "events.ran.data.kind.max_len",
        "events.ran.data.ok.values",
    ] {
        assert!(
            m.warnings.iter().any(|w| w.contains(&format!("`{key}`"))),
            "{key} not warned about: {:?}",
            m.warnings
        );
    }
    assert_eq!(m.warnings.len(), 4, "{:?}", m.warnings);
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("takes only `max_len`")),
        "{:?}",
        m.warnings
    );
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("an int field takes only `min`, `max`, `bins`")),
        "{:?}",
        m.warnings
    );
    // The limit meant is not applied (the warning says so): the default.
    assert_eq!(m.events["ran"]["lang"], FieldType::String { max_len: 64 });
}

#[test]
fn upload_modes() {
    let m = parse(
        "product = \"mytool\"\n[upload]\nauth = \"anonymous\"\nbucket = \"vendor-telemetry\"\nprefix = \"/raw/\"\nendpoint = \"https://s3.example.com/\"\n",
    )
    .unwrap();
    assert_eq!(
        m.upload,
        Some(Upload::Anonymous(S3Settings {
            bucket: "vendor-telemetry".into(),
            prefix: "raw".into(),
            endpoint: Some("https://s3.example.com".into()),
            region: None,
            path_style: true,
        }))
    );
    let m = parse(
        "product = \"mytool\"\n[upload]\nauth = \"broker\"\nbroker = \"https://t.example.com\"\n",
    )
    .unwrap();
    assert_eq!(
        m.upload,
        Some(Upload::Broker {
            url: "https://t.example.com".into()
        })
    );
    for (text, needle) in [
        (
            "auth = \"aws\"\nbucket = \"b-b-b\"",
            "end user's own AWS identity",
        ),
        ("auth = \"quantum\"", "newer telemetryd"),
        ("auth = \"broker\"", "broker's URL"),
        (
            "auth = \"broker\"\nbroker = \"https://x\"\nbucket = \"b-b-b\"",
            "upload.bucket",
        ),
        ("auth = \"anonymous\"", "upload.bucket"),
        // In clear, anyone on the user's network could read the batches or
        // answer for the store (a broker's 410 retires the product).
        (
            "auth = \"broker\"\nbroker = \"http://b.example\"",
            "upload.broker",
        ),
        (
            "auth = \"broker\"\nbroker = \"http://127.0.0.1.example\"",
            "plain http",
        ),
        (
            "auth = \"anonymous\"\nbucket = \"b-b-b\"\nendpoint = \"http://s3.example.com:80/\"",
            "upload.endpoint",
        ),
        ("auth = \"anonymous\"\nbucket = \"B\"", "bucket name"),
        ("bucket = \"b-b-b\"", "auth"),
    ] {
        let err = parse(&format!("product = \"mytool\"\n[upload]\n{text}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(needle) && err.contains("line"),
            "{text}: {err}"
        );
    }
}

/// Plain http is taken only to this machine (test servers, a local
/// gateway); the host is read from the URL, not matched as text.
#[test]
fn plain_http_is_accepted_only_to_this_machine() {
    for url in [
        "http://127.0.0.1:9000",
        "http://127.0.0.2/",
        "http://localhost:9000/path",
        "http://[::1]:9000",
        "http://user@127.0.0.1:1",
        "https://b.example",
    ] {
        assert!(
            crate::s3::parse_secure_endpoint(url).is_ok(),
            "{url} refused"
        );
    }
    for url in [
        "http://b.example",
        "http://localhost.example:9000",
        "http://127.0.0.1@b.example/",
        "http://[2001:db8::1]:80",
        "http://10.0.0.1",
    ] {
        let err = crate::s3::parse_secure_endpoint(url).unwrap_err();
        assert!(err.contains("plain http"), "{url}: {err}");
    }
}

#[test]
fn load_dir_keeps_good_and_bad_apart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mytool.toml"),
        "product = \"mytool\"\n[events.ran]\ndata.name = { type = \"string\", max_len = 3 }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "product = \"bad\"\n[events.x\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
    let all = load_dir(dir.path()).unwrap();
    assert_eq!(all.len(), 2);
    let err = all[0].as_ref().unwrap_err().to_string();
    assert!(err.contains("bad.toml") && err.contains("line 2"), "{err}");
    let m = all[1].as_ref().unwrap();
    let mut e = ev("ran", &[("name", Value::Str("abcd".into()))]);
    e.product = "mytool".into();
    assert!(m.check(&e).is_err());
    e.data.insert("name".into(), Value::Str("abc".into()));
    m.check(&e).unwrap();
    assert!(load_dir(&dir.path().join("missing")).unwrap().is_empty());
}
