//! The systemd units and launchd plists `install` writes.

use super::*;

fn target(system: bool, root: &Path) -> Target {
    Target {
        user: !system,
        system,
        root: Some(root.to_path_buf()),
        bin: None,
        dry_run: false,
    }
}

fn mac_env(k: &str) -> Option<std::ffi::OsString> {
    match k {
        "HOME" => Some("/Users/a".into()),
        "TMPDIR" => Some("/var/folders/x/T".into()),
        _ => None,
    }
}

#[test]
fn launch_agent_gets_real_paths_and_the_clients_default_socket() {
    let bin = Path::new("/opt/homebrew/bin/telemetryd");
    let plan = plan(
        Os::MacOs,
        &target(false, Path::new("/")),
        bin,
        mac_env,
        501,
        None,
    )
    .unwrap();
    assert_eq!(plan.files.len(), 1);
    assert_eq!(
        plan.files[0].path,
        PathBuf::from("/Users/a/Library/LaunchAgents/dev.telemetryd.plist")
    );
    let c = &plan.files[0].contents;
    for placeholder in ["@TELEMETRYD@", "@SOCKET@", "@STATE_DIR@", "@LOG_DIR@"] {
        assert!(!c.contains(placeholder), "{placeholder} left in: {c}");
    }
    assert!(c.contains("<string>/opt/homebrew/bin/telemetryd</string>"));
    // launchd owns the socket where clients look for it by default.
    let socket = telemetry_proto::paths::default_socket_path_for(true, mac_env, 501);
    assert!(
        c.contains(&format!("<string>{}</string>", socket.display())),
        "{c}"
    );
    // ...and its directory exists, since launchd does not create it.
    assert!(plan
        .dirs
        .iter()
        .any(|d| Some(d.path.as_path()) == socket.parent() && d.mode == 0o700));
    assert!(plan.next[0].starts_with("launchctl bootstrap gui/501 "));
}

#[test]
fn launch_daemon_needs_its_accounts_and_gets_the_socket_group() {
    let bin = Path::new("/usr/local/bin/telemetryd");
    let err = plan(
        Os::MacOs,
        &target(true, Path::new("/")),
        bin,
        mac_env,
        0,
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("dscl"), "{err}");
    let plan = plan(
        Os::MacOs,
        &target(true, Path::new("/")),
        bin,
        mac_env,
        0,
        Some((401, 402)),
    )
    .unwrap();
    let c = &plan.files[0].contents;
    assert!(
        c.contains("<key>SockPathGroup</key>\n            <integer>402</integer>"),
        "{c}"
    );
    assert!(c.contains("<string>/var/run/telemetryd.sock</string>"));
    assert_eq!(
        plan.dirs,
        vec![PlannedDir {
            path: PathBuf::from("/var/db/telemetry"),
            mode: 0o700,
            owner: Some((401, 402))
        }]
    );
}

#[test]
fn user_units_go_to_the_config_dir_with_the_real_binary() {
    let env = |k: &str| (k == "HOME").then(|| std::ffi::OsString::from("/home/u"));
    let bin = Path::new("/opt/t/telemetryd");
    let plan = plan(
        Os::Linux,
        &target(false, Path::new("/stage")),
        bin,
        env,
        1000,
        None,
    )
    .unwrap();
    let paths: Vec<_> = plan
        .files
        .iter()
        .map(|f| f.path.display().to_string())
        .collect();
    assert_eq!(
        paths,
        vec![
            "/stage/home/u/.config/systemd/user/telemetryd.socket",
            "/stage/home/u/.config/systemd/user/telemetryd.service"
        ]
    );
    assert!(plan.files[1]
        .contents
        .contains("ExecStart=/opt/t/telemetryd\n"));
    assert!(!plan.files[1].contents.contains(TEMPLATE_BIN));
    assert!(plan
        .next
        .iter()
        .any(|n| n.contains("enable --now telemetryd.socket")));
}

#[test]
fn binaries_in_a_cargo_target_dir_are_recognised() {
    let found = |p: &str| cargo_target_dir(Path::new(p));
    assert_eq!(
        found("/w/p/target/debug/telemetryd"),
        Some(PathBuf::from("/w/p/target"))
    );
    assert_eq!(
        found("/w/p/target/x86_64-unknown-linux-gnu/release/telemetryd"),
        Some(PathBuf::from("/w/p/target"))
    );
    for stable in [
        "/usr/local/bin/telemetryd",
        "/srv/target/telemetryd",
        "/opt/release/telemetryd",
        "/w/target/a/b/debug/telemetryd",
    ] {
        assert_eq!(found(stable), None, "{stable}");
    }
    // CARGO_TARGET_DIR by another name: known by cargo's marker files.
    for marker in ["CACHEDIR.TAG", "debug/.cargo-lock"] {
        let dir = tempfile::tempdir().unwrap();
        let marked = dir.path().join(marker).parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&marked).unwrap();
        std::fs::write(dir.path().join(marker), b"").unwrap();
        let bin = dir.path().join("debug/telemetryd");
        assert_eq!(cargo_target_dir(&bin), Some(marked), "{marker}");
    }
}

#[test]
fn the_warning_says_where_to_copy_the_binary() {
    let bin = Path::new("/w/my project/target/debug/telemetryd");
    let user = target_dir_warning(
        Os::Linux,
        &target(false, Path::new("/")),
        bin,
        Path::new("/w/my project/target"),
    );
    assert!(
        user.contains("ExecStart= would run /w/my project/target/debug/telemetryd"),
        "{user}"
    );
    assert!(
        user.contains("cp '/w/my project/target/debug/telemetryd' ~/.local/bin/telemetryd\n  ~/.local/bin/telemetryd install --user"),
        "{user}"
    );
    let system = target_dir_warning(
        Os::MacOs,
        &target(true, Path::new("/")),
        bin,
        Path::new("/w"),
    );
    assert!(
        system.starts_with("warning: ProgramArguments would run"),
        "{system}"
    );
    assert!(
        system.contains("sudo /usr/local/bin/telemetryd install --system"),
        "{system}"
    );
}

#[test]
fn a_binary_the_system_unit_cannot_see_is_warned_about() {
    let system = target(true, Path::new("/"));
    for bin in [
        "/home/alice/.local/bin/telemetryd",
        "/tmp/bins/telemetryd",
        "/root/telemetryd",
    ] {
        let w = hidden_from_the_system_unit(Os::Linux, &system, Path::new(bin))
            .unwrap_or_else(|| panic!("{bin} not warned about"));
        assert!(w.contains("ProtectHome=yes") && w.contains(bin), "{w}");
        assert!(
            w.contains("sudo /usr/local/bin/telemetryd install --system"),
            "{w}"
        );
    }
    assert_eq!(
        hidden_from_the_system_unit(Os::Linux, &system, Path::new("/usr/local/bin/telemetryd")),
        None
    );
    // The user's unit sees its home; launchd has no such sandbox.
    let user = target(false, Path::new("/"));
    assert_eq!(
        hidden_from_the_system_unit(Os::Linux, &user, Path::new("/home/a/telemetryd")),
        None
    );
    assert_eq!(
        hidden_from_the_system_unit(Os::MacOs, &system, Path::new("/tmp/telemetryd")),
        None
    );
}

#[test]
fn missing_directories_are_listed_parents_first_with_their_modes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = |p: &str| Planned {
        path: d.join(p),
        mode: FILE_MODE,
        contents: String::new(),
    };
    let private = PlannedDir {
        path: d.join("p/q"),
        mode: 0o700,
        owner: Some((1, 2)),
    };
    std::fs::create_dir(d.join("a")).unwrap();
    let got: Vec<_> = dirs_to_create(&[private], &[file("a/b/f1"), file("a/b/f2")])
        .into_iter()
        .map(|d| (d.path, d.mode, d.owner))
        .collect();
    assert_eq!(
        got,
        vec![
            (d.join("p"), 0o700, None),
            (d.join("p/q"), 0o700, Some((1, 2))),
            (d.join("a/b"), 0o755, None),
        ]
    );
}

#[test]
fn system_units_and_sysusers() {
    let bin = Path::new("/usr/bin/telemetryd");
    let plan = plan(
        Os::Linux,
        &target(true, Path::new("/s")),
        bin,
        |_| None,
        0,
        None,
    )
    .unwrap();
    assert_eq!(plan.files.len(), 3);
    assert!(plan
        .files
        .iter()
        .any(|f| f.path.ends_with("etc/sysusers.d/telemetry.conf")));
    assert!(plan
        .files
        .iter()
        .any(|f| f.contents.contains("SocketGroup=telemetry")));
}

/// A binary's path goes into `ExecStart=` as systemd reads it: `%` and `$`
/// doubled, quoted when it holds a space, a quote or a backslash.
#[test]
fn the_binary_path_is_escaped_for_exec_start() {
    assert_eq!(
        systemd_exec_path("/usr/bin/telemetryd"),
        "/usr/bin/telemetryd"
    );
    assert_eq!(systemd_exec_path("/opt/100%/t$x"), "/opt/100%%/t$$x");
    assert_eq!(
        systemd_exec_path("/home/a b/telemetryd"),
        "\"/home/a b/telemetryd\""
    );
    assert_eq!(systemd_exec_path(r#"/x/"q"\y"#), r#""/x/\"q\"\\y""#);
}
