//! The model's rules without FUSE: what a cut keeps and drops.

use super::*;

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn file(m: &mut Model, parent: Ino, n: &str) -> Ino {
    m.create(parent, name(n), Kind::File, 0o644, 0, 0).unwrap()
}

#[test]
fn unsynced_data_and_entries_are_gone_after_a_cut() {
    let mut m = Model::new(0, 0);
    let f = file(&mut m, ROOT, "a");
    m.write(f, 0, b"hello").unwrap();
    m.cut();
    assert_eq!(m.lookup(ROOT, name("a")), Err(Errno::ENOENT));
}

#[test]
fn a_synced_file_in_a_synced_directory_survives() {
    let mut m = Model::new(0, 0);
    let f = file(&mut m, ROOT, "a");
    m.write(f, 0, b"hello").unwrap();
    m.sync_file(f).unwrap();
    m.sync_dir(ROOT).unwrap();
    m.write(f, 5, b" world").unwrap();
    m.cut();
    let f = m.lookup(ROOT, name("a")).unwrap();
    assert_eq!(m.read(f, 0, 100).unwrap(), b"hello");
}

#[test]
fn a_synced_file_whose_entry_was_not_synced_is_gone() {
    let mut m = Model::new(0, 0);
    let f = file(&mut m, ROOT, "a");
    m.write(f, 0, b"hello").unwrap();
    m.sync_file(f).unwrap();
    m.cut();
    assert_eq!(m.lookup(ROOT, name("a")), Err(Errno::ENOENT));
    assert_eq!(m.durable().len(), 1, "the orphan is collected");
}

#[test]
fn an_entry_synced_before_its_data_comes_back_empty() {
    let mut m = Model::new(0, 0);
    let f = file(&mut m, ROOT, "a");
    m.write(f, 0, b"hello").unwrap();
    m.sync_dir(ROOT).unwrap();
    m.cut();
    let f = m.lookup(ROOT, name("a")).unwrap();
    assert_eq!(m.read(f, 0, 100).unwrap(), b"");
}

#[test]
fn a_rename_is_durable_only_with_its_directory() {
    let mut m = Model::new(0, 0);
    let tmp = file(&mut m, ROOT, "x.tmp");
    m.write(tmp, 0, b"new").unwrap();
    m.sync_file(tmp).unwrap();
    m.sync_dir(ROOT).unwrap();
    m.rename(ROOT, name("x.tmp"), ROOT, name("x"), 0).unwrap();
    m.cut();
    assert!(m.lookup(ROOT, name("x")).is_err());
    assert!(m.lookup(ROOT, name("x.tmp")).is_ok());

    m.rename(ROOT, name("x.tmp"), ROOT, name("x"), 0).unwrap();
    m.sync_dir(ROOT).unwrap();
    m.cut();
    let x = m.lookup(ROOT, name("x")).unwrap();
    assert_eq!(m.read(x, 0, 10).unwrap(), b"new");
    assert!(m.lookup(ROOT, name("x.tmp")).is_err());
}

#[test]
fn an_unlink_is_undone_unless_the_directory_is_synced() {
    let mut m = Model::new(0, 0);
    let f = file(&mut m, ROOT, "a");
    m.sync_dir(ROOT).unwrap();
    m.unlink(ROOT, name("a")).unwrap();
    m.cut();
    let f2 = m.lookup(ROOT, name("a")).unwrap();
    assert_eq!(f, f2);
    m.unlink(ROOT, name("a")).unwrap();
    m.sync_dir(ROOT).unwrap();
    m.cut();
    assert!(m.lookup(ROOT, name("a")).is_err());
}

#[test]
fn a_new_directory_needs_its_parent_synced() {
    let mut m = Model::new(0, 0);
    let d = m.create(ROOT, name("d"), Kind::Dir, 0o700, 0, 0).unwrap();
    let f = file(&mut m, d, "f");
    m.sync_file(f).unwrap();
    m.sync_dir(d).unwrap();
    m.cut();
    assert!(
        m.lookup(ROOT, name("d")).is_err(),
        "d's own entry was never synced"
    );

    let d = m.create(ROOT, name("d"), Kind::Dir, 0o700, 0, 0).unwrap();
    let f = file(&mut m, d, "f");
    m.write(f, 0, b"x").unwrap();
    m.sync_file(f).unwrap();
    m.sync_dir(d).unwrap();
    m.sync_dir(ROOT).unwrap();
    m.cut();
    let d = m.lookup(ROOT, name("d")).unwrap();
    let f = m.lookup(d, name("f")).unwrap();
    assert_eq!(m.read(f, 0, 10).unwrap(), b"x");
    assert_eq!(m.node(d).unwrap().attrs.perm, 0o700);
}

#[test]
fn truncation_is_durable_only_with_an_fsync() {
    let mut m = Model::new(0, 0);
    let f = file(&mut m, ROOT, "a");
    m.write(f, 0, b"0123456789").unwrap();
    m.sync_file(f).unwrap();
    m.sync_dir(ROOT).unwrap();
    let shrink = SetAttr {
        size: Some(3),
        ..SetAttr::default()
    };
    m.setattr(f, &shrink).unwrap();
    assert_eq!(m.node(f).unwrap().size(), 3);
    m.cut();
    assert_eq!(m.node(f).unwrap().size(), 10);
    m.setattr(f, &shrink).unwrap();
    m.sync_file(f).unwrap();
    m.cut();
    assert_eq!(m.read(f, 0, 100).unwrap(), b"012");
}

#[test]
fn rename_flags_are_done_right_or_refused() {
    let mut m = Model::new(0, 0);
    let a = file(&mut m, ROOT, "a");
    let b = file(&mut m, ROOT, "b");
    assert_eq!(
        m.rename(ROOT, name("a"), ROOT, name("b"), RENAME_NOREPLACE),
        Err(Errno::EEXIST)
    );
    m.rename(ROOT, name("a"), ROOT, name("b"), RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(m.lookup(ROOT, name("a")), Ok(b));
    assert_eq!(m.lookup(ROOT, name("b")), Ok(a));
    assert_eq!(
        m.rename(ROOT, name("a"), ROOT, name("c"), RENAME_EXCHANGE),
        Err(Errno::ENOENT)
    );
    assert_eq!(
        m.rename(ROOT, name("a"), ROOT, name("b"), 4),
        Err(Errno::EINVAL),
        "RENAME_WHITEOUT is refused"
    );
    let d = m.create(ROOT, name("d"), Kind::Dir, 0o755, 0, 0).unwrap();
    assert_eq!(
        m.rename(ROOT, name("d"), d, name("inside"), 0),
        Err(Errno::EINVAL),
        "a directory cannot move into itself"
    );
    assert_eq!(
        m.rename(ROOT, name("a"), ROOT, name("d"), 0),
        Err(Errno::EISDIR)
    );
    m.rename(ROOT, name("a"), ROOT, name("b"), 0).unwrap();
    assert_eq!(m.lookup(ROOT, name("b")), Ok(b));
    assert_eq!(m.nlink(a).unwrap(), 0, "the replaced file has no name left");
}

#[test]
fn bad_input_gets_an_errno() {
    let mut m = Model::new(0, 0);
    let f = file(&mut m, ROOT, "a");
    assert_eq!(m.write(f, u64::MAX, b"x"), Err(Errno::EFBIG));
    assert_eq!(m.write(f, MAX_FILE_SIZE, b"x"), Err(Errno::EFBIG));
    assert_eq!(m.read(f, u64::MAX, u32::MAX).unwrap(), b"");
    assert_eq!(m.write(ROOT, 0, b"x"), Err(Errno::EISDIR));
    assert_eq!(m.lookup(f, name("x")), Err(Errno::ENOTDIR));
    assert_eq!(m.lookup(999, name("x")), Err(Errno::ENOENT));
    let long = "x".repeat(MAX_NAME_LEN + 1);
    assert_eq!(
        m.create(ROOT, name(&long), Kind::File, 0o644, 0, 0),
        Err(Errno::ENAMETOOLONG)
    );
    assert_eq!(m.fallocate(f, 0, 10, 0x02), Err(Errno::EOPNOTSUPP));
    assert_eq!(m.fallocate(f, u64::MAX, 10, 0), Err(Errno::EFBIG));
    let d = m.create(ROOT, name("d"), Kind::Dir, 0o755, 0, 0).unwrap();
    file(&mut m, d, "inner");
    assert_eq!(m.rmdir(ROOT, name("d")), Err(Errno::ENOTEMPTY));
    assert_eq!(m.unlink(ROOT, name("d")), Err(Errno::EISDIR));
    assert_eq!(m.rmdir(ROOT, name("a")), Err(Errno::ENOTDIR));
}

#[test]
fn hard_links_count_and_survive_as_synced() {
    let mut m = Model::new(0, 0);
    let f = file(&mut m, ROOT, "a");
    m.link(f, ROOT, name("b")).unwrap();
    assert_eq!(m.nlink(f).unwrap(), 2);
    m.sync_dir(ROOT).unwrap();
    m.unlink(ROOT, name("a")).unwrap();
    m.cut();
    assert_eq!(m.nlink(f).unwrap(), 2);
    assert_eq!(m.link(ROOT, ROOT, name("c")), Err(Errno::EPERM));
}
