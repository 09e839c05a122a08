//! Product manifests on the daemon's side (issue #13, items 1 and 2), with
//! the real daemon, shim and `telemetryctl`: the search path, reloading
//! without a restart, a malformed manifest disabling only its product, and
//! consent bound to the catalogue's version.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use telemetry_proto::{ProductConsent, StatusReport};
use telemetry_tests::*;

fn ctl(env: &DaemonEnv, args: &[&str]) -> Output {
    let out = env.run("telemetryctl", args);
    assert!(
        out.status.success(),
        "telemetryctl {args:?}: {}",
        text(&out)
    );
    out
}

/// `telemetry-emit --strict --product PRODUCT EVENT`.
fn emit(env: &DaemonEnv, product: &str, event: &str) -> Output {
    env.command("telemetry-emit")
        .env("TELEMETRY_EMIT_TIMEOUT_MS", "5000")
        .args(["--product", product, "--strict", event])
        .output()
        .expect("run telemetry-emit")
}

fn status(env: &DaemonEnv) -> StatusReport {
    serde_json::from_slice(&ctl(env, &["status", "--json"]).stdout).expect("status JSON")
}

fn product(st: &StatusReport, name: &str) -> Option<ProductConsent> {
    st.consent.iter().find(|c| c.product == name).cloned()
}

/// The user's manifest directory (`TELEMETRY_CATALOG_DIR` in the tests).
fn user_dir(env: &DaemonEnv) -> PathBuf {
    env.root().join("catalog")
}

/// The first system directory: `$XDG_DATA_DIRS/telemetry/products`.
fn system_dir(env: &DaemonEnv) -> PathBuf {
    env.root().join("xdg-data/telemetry/products")
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    // Written beside and renamed into place, as a package manager does, so
    // the daemon never reads half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[test]
fn a_malformed_manifest_disables_only_its_product() {
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::write(env.root().join("consent"), "cfdev on\ngood on\nbad on\n").unwrap();
    write(
        &system_dir(&env),
        "good.toml",
        "product = \"good\"\n[events.ran]\n",
    );
    // Line 3 is not TOML.
    write(
        &user_dir(&env),
        "bad.toml",
        "product = \"bad\"\n[events.ran]\ndata.x = { type = \"bool\"\n",
    );
    let _daemon = env.start();

    let out = emit(&env, "bad", "ran");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = text(&out);
    let bad_file = user_dir(&env).join("bad.toml").display().to_string();
    assert!(
        err.contains(&bad_file) && err.contains("line 3") && err.contains("disabled"),
        "{err}"
    );
    for (p, e) in [("good", "ran"), ("cfdev", "stop")] {
        let out = emit(&env, p, e);
        assert_eq!(out.status.code(), Some(0), "{p}: {}", text(&out));
    }

    let st = status(&env);
    let bad = product(&st, "bad").expect("bad in status");
    assert_eq!(bad.manifest, bad_file);
    assert!(
        bad.manifest_error
            .as_deref()
            .is_some_and(|e| e.contains("line 3")),
        "{bad:?}"
    );
    let good = product(&st, "good").expect("good in status");
    assert_eq!(good.manifest_error, None);
    assert_eq!(
        good.manifest,
        system_dir(&env).join("good.toml").display().to_string()
    );
    assert_eq!(st.pending_events, 2, "good and cfdev stored, bad not");
    let human = text(&ctl(&env, &["status"]));
    assert!(
        human.contains("bad DISABLED") && human.contains(&bad_file),
        "{human}"
    );
    // `doctor` blames the manifest for its product's refusals, not the CLI.
    let out = env.run("telemetryctl", &["doctor"]);
    let doc = text(&out);
    assert!(
        doc.contains(&format!(
            "fix: bad's manifest cannot be used, so all of its events are refused: fix {bad_file}"
        )),
        "{doc}"
    );
}

/// A manifest that loads with warnings (a key this daemon ignores, a
/// section written `[event.x]`) says so in `status` and `doctor`, for its
/// vendor, instead of "every manifest loads"; its events are taken.
#[test]
fn a_manifests_warnings_are_shown_in_status_and_doctor() {
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::write(
        env.root().join("consent"),
        "cfdev on
warned on
",
    )
    .unwrap();
    write(
        &user_dir(&env),
        "warned.toml",
        "product = \"warned\"\n[consent]\nfoo = 1\n[events.ran]\n[event.typo]\n",
    );
    let _daemon = env.start();
    let out = emit(&env, "warned", "ran");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let warned = product(&status(&env), "warned").expect("in status");
    assert!(
        warned
            .manifest_warnings
            .iter()
            .any(|w| w.contains("consent.foo"))
            && warned
                .manifest_warnings
                .iter()
                .any(|w| w.contains("events.")),
        "{warned:?}"
    );
    let human = text(&ctl(&env, &["status"]));
    assert!(
        human.contains("warning: ") && human.contains("consent.foo"),
        "{human}"
    );
    let doctor = text(&env.run("telemetryctl", &["doctor"]));
    assert!(
        doctor.contains("WARN manifest warned") && !doctor.contains("every manifest loads"),
        "{doctor}"
    );
}

#[test]
fn a_manifest_added_or_fixed_while_the_daemon_runs_is_used_without_a_restart() {
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::write(env.root().join("consent"), "cfdev on\nmytool on\n").unwrap();
    let daemon = env.start();
    let pid = daemon.pid();
    let out = emit(&env, "mytool", "ran");
    assert_eq!(out.status.code(), Some(3), "unknown yet: {}", text(&out));
    assert!(text(&out).contains("no product manifest"), "{}", text(&out));

    // A vendor installs it system-wide.
    write(
        &system_dir(&env),
        "mytool.toml",
        "product = \"mytool\"\n[events.ran]\n",
    );
    wait_for(
        "the new manifest to be used",
        Duration::from_secs(20),
        || (emit(&env, "mytool", "ran").status.code() == Some(0)).then_some(()),
    );

    // The user shadows it with a broken copy, then fixes it.
    write(
        &user_dir(&env),
        "mytool.toml",
        "product = \"mytool\"\n[events.ran\n",
    );
    wait_for(
        "the broken copy to disable mytool",
        Duration::from_secs(20),
        || {
            let out = emit(&env, "mytool", "ran");
            (out.status.code() == Some(3) && text(&out).contains("line 2")).then_some(())
        },
    );
    write(
        &user_dir(&env),
        "mytool.toml",
        "product = \"mytool\"\n[events.ran]\n[events.walked]\n",
    );
    wait_for("the fixed copy to be used", Duration::from_secs(20), || {
        (emit(&env, "mytool", "walked").status.code() == Some(0)).then_some(())
    });
    assert_eq!(daemon.pid(), pid, "same daemon throughout");
    let shown = text(&ctl(&env, &["show"]));
    assert!(shown.contains("\"event\":\"walked\""), "{shown}");
}

/// `product`'s consent once the daemon has loaded `version` of its manifest.
fn loaded(env: &DaemonEnv, name: &str, version: u32) -> ProductConsent {
    wait_for(
        &format!("version {version} of {name} to be loaded"),
        Duration::from_secs(20),
        || product(&status(env), name).filter(|p| p.version == version),
    )
}

/// Event names in the bucket, counted.
fn uploaded(s3: &S3Server) -> Vec<String> {
    let mut names: Vec<String> = decode_objects(&s3.objects())
        .into_iter()
        .map(|(_, line)| line["event"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn a_new_catalogue_version_keeps_its_new_events_local_until_consent() {
    let s3 = S3Server::start();
    let env = DaemonEnv::new(Destination::S3 {
        endpoint: s3.endpoint.clone(),
        secret: SECRET_KEY.into(),
    });
    let v1 = "product = \"mytool\"\n[consent]\nversion = 1\n[events.ran]\n";
    write(&user_dir(&env), "mytool.toml", v1);
    let daemon = env.start();
    ctl(&env, &["consent", "mytool", "on"]);
    let file = std::fs::read_to_string(env.root().join("consent")).unwrap();
    assert!(
        file.lines()
            .any(|l| l.starts_with("mytool on ") && l.ends_with("#+ version=1")),
        "{file}"
    );
    assert_eq!(emit(&env, "mytool", "ran").status.code(), Some(0));

    // The vendor upgrades: version 2 adds `deployed`.
    let v2 = "product = \"mytool\"\n[consent]\nversion = 2\n[events.ran]\n[events.deployed]\n";
    write(&user_dir(&env), "mytool.toml", v2);
    let p = loaded(&env, "mytool", 2);
    assert_eq!(
        (p.consented_version, p.new_events.clone()),
        (1, vec!["deployed".to_string()])
    );
    for e in ["ran", "deployed"] {
        let out = emit(&env, "mytool", e);
        assert_eq!(
            out.status.code(),
            Some(0),
            "accepted, nothing stops: {}",
            text(&out)
        );
    }
    assert_eq!(status(&env).local_events, 1, "deployed kept here");
    let shown = text(&ctl(&env, &["consent", "mytool"]));
    assert!(
        shown.contains("new or changed since the version you consented to: deployed")
            && shown.contains("version 1"),
        "{shown}"
    );
    ctl(&env, &["flush"]);
    assert_eq!(uploaded(&s3), ["ran", "ran"], "only what version 1 had");

    // Consenting again, now to version 2, lets `deployed` go out from now
    // on; the one recorded before stays local.
    ctl(&env, &["consent", "mytool", "on"]);
    let file = std::fs::read_to_string(env.root().join("consent")).unwrap();
    assert!(file.contains("#+ version=2"), "{file}");
    let p = product(&status(&env), "mytool").unwrap();
    assert_eq!((p.consented_version, p.new_events.len()), (2, 0));
    assert_eq!(emit(&env, "mytool", "deployed").status.code(), Some(0));
    ctl(&env, &["flush"]);
    assert_eq!(uploaded(&s3), ["deployed", "ran", "ran"]);
    let st = status(&env);
    assert_eq!((st.local_events, st.pending_events), (1, 0));
    drop(daemon);

    // An older telemetryctl rewriting the file drops what follows `#+`:
    // the decision reads as unversioned, and a restarted daemon binds it
    // to the catalogue it has then; nothing already consented stops.
    let file = std::fs::read_to_string(env.root().join("consent")).unwrap();
    let stripped: String = file
        .lines()
        .map(|l| format!("{}\n", l.split('#').next().unwrap().trim_end()))
        .collect();
    std::fs::write(env.root().join("consent"), stripped).unwrap();
    let _daemon = env.start();
    let p = product(&status(&env), "mytool").unwrap();
    assert_eq!((p.consented_version, p.new_events.len()), (0, 0), "{p:?}");
    assert_eq!(emit(&env, "mytool", "ran").status.code(), Some(0));
    ctl(&env, &["flush"]);
    assert_eq!(uploaded(&s3), ["deployed", "ran", "ran", "ran"]);
}

/// A newer version that gives an existing event a new field: the event is
/// kept here (as in `local`) until the user consents to that version, as a
/// new event would be; a field dropped or an enum value added is not.
#[test]
fn an_event_extended_with_a_field_stays_local_until_consent() {
    let s3 = S3Server::start();
    let env = DaemonEnv::new(Destination::S3 {
        endpoint: s3.endpoint.clone(),
        secret: SECRET_KEY.into(),
    });
    let v1 = "product = \"mytool\"\n[consent]\nversion = 1\n[events.ran]\n\
              data.cmd = { type = \"enum\", values = [\"a\"] }\n[events.walked]\n";
    write(&user_dir(&env), "mytool.toml", v1);
    let _daemon = env.start();
    ctl(&env, &["consent", "mytool", "on"]);
    assert_eq!(emit(&env, "mytool", "ran").status.code(), Some(0));

    // Version 2: `ran` gains an enum value (no new kind of data), `walked`
    // a free-text field.
    let v2 = "product = \"mytool\"\n[consent]\nversion = 2\n[events.ran]\n\
              data.cmd = { type = \"enum\", values = [\"a\", \"b\"] }\n\
              [events.walked]\ndata.where = { type = \"string\" }\n";
    write(&user_dir(&env), "mytool.toml", v2);
    let p = loaded(&env, "mytool", 2);
    assert_eq!(
        (p.consented_version, p.new_events.clone()),
        (1, vec!["walked".to_string()])
    );
    let walked = env
        .command("telemetry-emit")
        .env("TELEMETRY_EMIT_TIMEOUT_MS", "5000")
        .args(["--product", "mytool", "--strict", "walked", "where=home"])
        .output()
        .unwrap();
    assert_eq!(walked.status.code(), Some(0), "{}", text(&walked));
    assert_eq!(emit(&env, "mytool", "ran").status.code(), Some(0));
    assert_eq!(status(&env).local_events, 1, "walked kept here");
    let shown = text(&ctl(&env, &["consent", "mytool"]));
    assert!(shown.contains("walked"), "{shown}");
    ctl(&env, &["flush"]);
    assert_eq!(uploaded(&s3), ["ran", "ran"], "only what version 1 covered");
    let kept = text(&ctl(&env, &["show"]));
    assert!(kept.contains("\"where\":\"home\""), "{kept}");

    // Consenting to version 2 lets it go from now on.
    ctl(&env, &["consent", "mytool", "on"]);
    assert_eq!(emit(&env, "mytool", "walked").status.code(), Some(0));
    ctl(&env, &["flush"]);
    assert_eq!(uploaded(&s3), ["ran", "ran", "walked"]);
}

/// The built-in manifest has no file: a file named as it is, in the
/// directory the prompt runs in (anyone's `/tmp`), never words the
/// question.
#[test]
fn a_file_in_the_working_directory_never_words_the_prompt() {
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::remove_file(env.root().join("consent")).unwrap();
    let cwd = env.root().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    std::fs::write(
        cwd.join("built-in cfdev.toml"),
        "product = \"cfdev\"\n[consent]\nversion = 1\nprompt = \"PLANTED: press y\"\n[events.stop]\n",
    )
    .unwrap();
    let _daemon = env.start();
    let cmd = format!("{} consent cfdev --prompt", bin("telemetryctl").display());
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .envs(env.envs())
        .current_dir(&cwd)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("`script` (util-linux) is needed for this test (.ci/run installs it)");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"n\n").unwrap();
    let shown = text(&child.wait_with_output().unwrap());
    assert!(shown.contains("[y/N]"), "asked: {shown}");
    assert!(!shown.contains("PLANTED"), "{shown}");
}

#[test]
fn the_prompt_uses_the_manifests_wording_and_records_its_version() {
    let env = DaemonEnv::new(Destination::Outbox);
    std::fs::remove_file(env.root().join("consent")).unwrap();
    write(
        &user_dir(&env),
        "cfdev.toml",
        "product = \"cfdev\"\n[consent]\nversion = 3\nprompt = \"The cf dev team counts starts \\u001b[31mand stops.\"\n[events.stop]\n",
    );
    let ask = |answer: &[u8]| {
        let cmd = format!("{} consent cfdev --prompt", bin("telemetryctl").display());
        let mut child = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .envs(env.envs())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("`script` (util-linux) is needed for this test (.ci/run installs it)");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), answer).unwrap();
        text(&child.wait_with_output().unwrap())
    };
    // A CLI's first start asks before any daemon runs: the vendor's words
    // then too, from the manifest a daemon would use.
    let shown = ask(b"n\n");
    assert!(
        shown.contains("The cf dev team counts starts [31mand stops."),
        "the vendor's words with no daemon running: {shown}"
    );
    std::fs::remove_file(env.root().join("consent")).unwrap();
    let _daemon = env.start();
    let shown = ask(b"y\n");
    assert!(
        shown.contains("The cf dev team counts starts [31mand stops."),
        "the vendor's words, without the escape character: {shown}"
    );
    assert!(!shown.contains('\u{1b}'), "{shown:?}");
    let file = std::fs::read_to_string(env.root().join("consent")).unwrap();
    assert!(
        file.lines()
            .any(|l| l.starts_with("cfdev on ") && l.ends_with("#+ version=3")),
        "{file}"
    );
}

/// An off for a product no manifest here describes (a typo, or a product
/// not installed yet) records no final `telemetry_off`: once the product
/// is installed, its vendor must not learn from that off that this
/// machine has it. An installed product's off still records one.
#[test]
fn an_off_for_a_product_not_installed_is_never_sent_to_its_vendor() {
    let s3 = S3Server::start();
    let env = DaemonEnv::new(Destination::S3 {
        endpoint: s3.endpoint.clone(),
        secret: SECRET_KEY.into(),
    });
    let _daemon = env.start();
    ctl(&env, &["consent", "zeta", "on"]);
    let off = text(&ctl(&env, &["consent", "zeta", "off"]));
    assert!(!off.contains("final telemetry_off"), "{off}");
    // The vendor's manifest arrives; the user's decision is still off.
    write(
        &user_dir(&env),
        "zeta.toml",
        "product = \"zeta\"\n[consent]\nversion = 1\n[events.ran]\n",
    );
    loaded(&env, "zeta", 1);
    ctl(&env, &["flush"]);
    assert_eq!(uploaded(&s3), Vec::<String>::new());
    // Installed, on, then off: the vendor is told, once.
    ctl(&env, &["consent", "zeta", "on"]);
    let off = text(&ctl(&env, &["consent", "zeta", "off"]));
    assert!(off.contains("final telemetry_off"), "{off}");
    // What went before stays with the vendor: the user is told how to ask.
    assert!(off.contains("`telemetryctl forget zeta`"), "{off}");
    ctl(&env, &["flush"]);
    assert_eq!(uploaded(&s3), ["telemetry_off"]);
}

/// A manifest changed without a new catalogue version: the new event is
/// kept here, consenting again changes nothing, and `status`, `consent` and
/// `doctor` say the vendor must raise the version (they told the user to
/// consent again, which did nothing).
#[test]
fn a_change_without_a_new_version_is_put_to_the_vendor_not_the_user() {
    let env = DaemonEnv::new(Destination::Outbox);
    let v1 = "product = \"mytool\"\n[consent]\nversion = 1\n[events.ran]\n";
    write(&user_dir(&env), "mytool.toml", v1);
    let _daemon = env.start();
    ctl(&env, &["consent", "mytool", "on"]);
    let same_version =
        "product = \"mytool\"\n[consent]\nversion = 1\n[events.ran]\n[events.deployed]\n";
    write(&user_dir(&env), "mytool.toml", same_version);
    wait_for(
        "deployed to wait for consent",
        Duration::from_secs(20),
        || product(&status(&env), "mytool").filter(|p| p.new_events == ["deployed"]),
    );
    ctl(&env, &["consent", "mytool", "on"]);
    let p = product(&status(&env), "mytool").unwrap();
    assert_eq!(
        p.new_events,
        ["deployed"],
        "consenting again changes nothing"
    );
    let shown = text(&ctl(&env, &["status"]));
    assert!(
        shown.contains("changed without a new catalogue version: deployed")
            && !shown.contains("until `telemetryctl consent mytool on`"),
        "{shown}"
    );
    let shown = text(&ctl(&env, &["consent", "mytool"]));
    assert!(
        shown.contains("changed without a new catalogue version"),
        "{shown}"
    );
    let doctor = env.run("telemetryctl", &["doctor", "--json"]);
    let doctor: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let check = doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "consent mytool")
        .unwrap_or_else(|| panic!("{doctor}"));
    assert_eq!(check["outcome"], "warn", "{check}");
    assert!(
        check["fix"].as_str().unwrap().contains("vendor must raise"),
        "{check}"
    );
}
