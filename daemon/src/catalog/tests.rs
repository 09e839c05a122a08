use super::*;

fn event(product: &str, name: &str) -> WireEvent {
    WireEvent {
        id: uuid::Uuid::nil(),
        event: name.into(),
        product: product.into(),
        build: "1".into(),
        timestamp_us: 1_800_000_000_000_000,
        data: Default::default(),
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn the_first_directory_wins_and_the_builtin_comes_last() {
    let tmp = tempfile::tempdir().unwrap();
    let (user, system) = (tmp.path().join("user"), tmp.path().join("system"));
    write(&user, "mytool.toml", "product = \"mytool\"\n[events.ran]\n");
    write(
        &system,
        "mytool.toml",
        "product = \"mytool\"\n[events.other]\n",
    );
    write(
        &system,
        "cfdev.toml",
        "product = \"cfdev\"\n[events.only]\n",
    );
    let cats = Catalogues::new(vec![user.clone(), system.clone()], Duration::ZERO);
    assert_eq!(cats.products(), ["cfdev", "mytool"]);
    cats.check(&event("mytool", "ran")).unwrap();
    assert!(cats.check(&event("mytool", "other")).is_err());
    // A file replaces the built-in cfdev.
    let m = cats.check(&event("cfdev", "only")).unwrap();
    assert!(
        std::path::Path::new(&m.source_name).ends_with("system/cfdev.toml"),
        "{}",
        m.source_name
    );
    let err = cats.check(&event("nope", "x")).unwrap_err().to_string();
    assert!(
        err.contains(&user.display().to_string()) && err.contains(&system.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_broken_manifest_disables_only_its_product_and_shadows_later_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let (user, system) = (tmp.path().join("user"), tmp.path().join("system"));
    write(&user, "bad.toml", "product = \"bad\"\n[events.ran\n");
    write(&system, "bad.toml", "product = \"bad\"\n[events.ran]\n");
    write(&system, "good.toml", "product = \"good\"\n[events.ran]\n");
    let cats = Catalogues::new(vec![user.clone(), system], Duration::ZERO);
    cats.check(&event("good", "ran")).unwrap();
    cats.check(&event("cfdev", "stop")).unwrap();
    let err = cats.check(&event("bad", "ran")).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, CheckError::Disabled { .. }), "{err:?}");
    assert!(
        text.contains(&user.join("bad.toml").display().to_string()) && text.contains("line 2"),
        "{text}"
    );
    assert!(cats.get("bad").is_none());
    assert!(matches!(cats.lookup("bad"), Lookup::Broken { .. }));
}

#[test]
fn files_that_appear_change_or_vanish_are_picked_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("user");
    let cats = Catalogues::new(vec![dir.clone()], Duration::ZERO);
    assert!(matches!(cats.lookup("mytool"), Lookup::Unknown));
    // The directory itself appears later.
    write(&dir, "mytool.toml", "product = \"mytool\"\n[events.ran]\n");
    cats.check(&event("mytool", "ran")).unwrap();
    write(
        &dir,
        "mytool.toml",
        "product = \"mytool\"\n[consent]\nversion = 2\n[events.ran]\n[events.added]\n",
    );
    assert_eq!(cats.get("mytool").unwrap().version, 2);
    cats.check(&event("mytool", "added")).unwrap();
    std::fs::remove_file(dir.join("mytool.toml")).unwrap();
    assert!(matches!(cats.lookup("mytool"), Lookup::Unknown));
}

#[test]
fn without_a_recheck_due_the_last_load_is_used() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("user");
    let cats = Catalogues::new(vec![dir.clone()], Duration::from_secs(3600));
    write(&dir, "mytool.toml", "product = \"mytool\"\n[events.ran]\n");
    assert!(matches!(cats.lookup("mytool"), Lookup::Unknown));
}

#[cfg(unix)]
#[test]
fn system_dirs_follow_xdg_data_dirs() {
    let mac = usize::from(cfg!(target_os = "macos"));
    let d = system_dirs(None, None);
    assert_eq!(d[0], Path::new("/usr/local/share/telemetry/products"));
    assert_eq!(d[1], Path::new("/usr/share/telemetry/products"));
    assert_eq!(d.len(), 2 + mac);
    assert_eq!(system_dirs(Some("  "), None).len(), 2 + mac);
    let d = system_dirs(Some("/opt/a:relative:/b"), None);
    assert_eq!(
        d[..2],
        [
            Path::new("/opt/a/telemetry/products"),
            Path::new("/b/telemetry/products")
        ]
    );
    assert_eq!(d.len(), 2 + mac);
}

/// On Windows XDG's default would name `C:\usr\share`, which any user may
/// create: the one system directory is under `%ProgramData%`.
#[cfg(windows)]
#[test]
fn the_windows_system_dir_is_under_program_data() {
    let d = system_dirs(Some("/usr/local/share:/usr/share"), None);
    assert_eq!(d, [Path::new(r"C:\ProgramData\telemetry\products")]);
    let d = system_dirs(None, Some(Path::new(r"D:\Data")));
    assert_eq!(d, [Path::new(r"D:\Data\telemetry\products")]);
    let d = system_dirs(None, Some(Path::new(r"relative")));
    assert_eq!(d, [Path::new(r"C:\ProgramData\telemetry\products")]);
}

/// A FIFO or a link to an endless file in a manifest's place makes that
/// product's manifest broken, at once: the catalogue (read under a lock
/// every worker needs) is neither stalled nor filled.
#[cfg(unix)]
#[test]
fn a_fifo_or_an_endless_file_as_a_manifest_disables_only_its_product() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("catalog");
    write(&dir, "good.toml", "product = \"good\"\n[events.ran]\n");
    let made = std::process::Command::new("mkfifo")
        .arg(dir.join("fifo.toml"))
        .status()
        .unwrap();
    assert!(made.success());
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.toml")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let cats = Catalogues::new(vec![dir], Duration::ZERO);
        let _ = tx.send((
            cats.check(&event("good", "ran")).is_ok(),
            cats.lookup("fifo"),
            cats.lookup("zero"),
        ));
    });
    let (good, fifo, zero) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("loading the catalogue still blocked after 10 s");
    assert!(good);
    match &fifo {
        Lookup::Broken { error, .. } => assert!(error.contains("a FIFO"), "{error}"),
        other => panic!("{other:?}"),
    }
    match zero {
        Lookup::Broken { error, .. } => assert!(error.contains("larger than"), "{error}"),
        other => panic!("{other:?}"),
    }
}

/// A manifest every user may rewrite decides nothing: its product is
/// disabled, naming why, and a later copy on the path is not used instead.
#[cfg(unix)]
#[test]
fn a_manifest_another_user_could_write_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let (user, system) = (tmp.path().join("user"), tmp.path().join("system"));
    write(&user, "mytool.toml", "product = \"mytool\"\n[events.ran]\n");
    write(
        &system,
        "mytool.toml",
        "product = \"mytool\"\n[events.ran]\n",
    );
    write(&system, "good.toml", "product = \"good\"\n[events.ran]\n");
    let open = user.join("mytool.toml");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
    let cats = Catalogues::new(vec![user, system], Duration::ZERO);
    cats.check(&event("good", "ran")).unwrap();
    match cats.lookup("mytool") {
        Lookup::Broken { source, error } => {
            assert_eq!(source, open.display().to_string());
            assert!(error.contains("writable by every user"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(cats.check(&event("mytool", "ran")).is_err());
    // Its mode fixed (nothing else changed): used at the next look, as an
    // edit would be, without a restart.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    cats.check(&event("mytool", "ran"))
        .expect("the fixed manifest is used");
    // Its directory made writable by everyone: disabled again.
    let dir = open.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(
        cats.check(&event("mytool", "ran")).is_err(),
        "its directory is writable by everyone"
    );
}

/// A manifest directory that exists but cannot be read (here a file in its
/// place; for root, permissions never stop a read) may hold a manifest
/// meant to replace a later one: nothing after it on the path is used, the
/// built-in `cfdev` included, each saying why.
#[test]
fn nothing_after_an_unreadable_manifest_directory_is_used() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, later) = (tmp.path().join("first"), tmp.path().join("later"));
    std::fs::write(&first, "not a directory").unwrap();
    write(&later, "good.toml", "product = \"good\"\n[events.ran]\n");
    let cats = Catalogues::new(vec![first.clone(), later], Duration::ZERO);
    for product in ["good", "cfdev"] {
        match cats.lookup(product) {
            Lookup::Broken { error, .. } => assert!(
                error.contains(&first.display().to_string()) && error.contains("cannot be read"),
                "{error}"
            ),
            other => panic!("{product}: {other:?}"),
        }
    }
    let refused = cats.check(&event("good", "ran")).unwrap_err().to_string();
    assert!(
        refused.contains("make that directory readable")
            && !refused.contains("other products are not affected"),
        "{refused}"
    );
}

/// One that cannot even be looked at (here a path through a file; for an
/// ordinary user, one under a parent they may not enter) is not known to
/// exist: skipped as a missing one, so it blocks nothing after it.
#[test]
fn a_manifest_directory_that_cannot_be_looked_at_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, "not a directory").unwrap();
    let later = tmp.path().join("later");
    write(&later, "good.toml", "product = \"good\"\n[events.ran]\n");
    let cats = Catalogues::new(vec![file.join("products"), later], Duration::ZERO);
    assert!(cats.check(&event("good", "ran")).is_ok());
    assert!(!matches!(cats.lookup("cfdev"), Lookup::Broken { .. }));
}
