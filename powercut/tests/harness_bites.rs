//! Proof that the harness bites: through the real kernel and FUSE, what
//! was not fsynced is gone after a cut, and what was is kept.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;
use telemetry_powercut::{should_run, PowerCut, Trigger};

fn write_synced(path: &Path, bytes: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

fn read(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

#[test]
fn a_write_without_fsync_is_lost_and_with_fsync_kept() {
    if !should_run("a_write_without_fsync_is_lost_and_with_fsync_kept") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mnt = PowerCut::mount(p).unwrap();

    write_synced(&p.join("synced"), b"kept");
    std::fs::write(p.join("unsynced"), b"lost").unwrap();
    sync_dir(p);
    // Appended after the fsync: lost, while the synced part stays.
    OpenOptions::new()
        .append(true)
        .open(p.join("synced"))
        .unwrap()
        .write_all(b" and more")
        .unwrap();
    assert_eq!(read(&p.join("synced")).unwrap(), b"kept and more");

    let mnt = mnt.remount().unwrap();
    assert_eq!(read(&p.join("synced")).unwrap(), b"kept");
    assert_eq!(
        read(&p.join("unsynced")).unwrap(),
        b"",
        "the entry was synced with its directory, the data never was"
    );
    assert_eq!(mnt.stats().cuts, 1);
}

#[test]
fn creates_renames_and_unlinks_need_the_directory_synced() {
    if !should_run("creates_renames_and_unlinks_need_the_directory_synced") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mut mnt = PowerCut::mount(p).unwrap();

    // Data synced, directory entry not: gone, as on a real disk.
    write_synced(&p.join("orphan"), b"data");
    std::fs::create_dir(p.join("sub")).unwrap();
    write_synced(&p.join("sub/f"), b"in sub");
    sync_dir(&p.join("sub"));
    mnt = mnt.remount().unwrap();
    assert_eq!(read(&p.join("orphan")), None);
    assert!(!p.join("sub").exists(), "sub's own entry was never synced");

    // A create kept with its directory.
    write_synced(&p.join("tmp"), b"new");
    sync_dir(p);
    // A rename not synced is undone.
    std::fs::rename(p.join("tmp"), p.join("final")).unwrap();
    mnt = mnt.remount().unwrap();
    assert_eq!(read(&p.join("tmp")).unwrap(), b"new");
    assert_eq!(read(&p.join("final")), None);

    // A rename synced is kept.
    std::fs::rename(p.join("tmp"), p.join("final")).unwrap();
    sync_dir(p);
    mnt = mnt.remount().unwrap();
    assert_eq!(read(&p.join("final")).unwrap(), b"new");
    assert_eq!(read(&p.join("tmp")), None);

    // An unlink not synced is undone; synced, kept.
    std::fs::remove_file(p.join("final")).unwrap();
    mnt = mnt.remount().unwrap();
    assert_eq!(read(&p.join("final")).unwrap(), b"new");
    std::fs::remove_file(p.join("final")).unwrap();
    sync_dir(p);
    mnt = mnt.remount().unwrap();
    assert_eq!(read(&p.join("final")), None);

    // A directory tree synced from the bottom up survives whole.
    std::fs::create_dir_all(p.join("a/b")).unwrap();
    write_synced(&p.join("a/b/f"), b"deep");
    sync_dir(&p.join("a/b"));
    sync_dir(&p.join("a"));
    sync_dir(p);
    let mnt = mnt.remount().unwrap();
    assert_eq!(read(&p.join("a/b/f")).unwrap(), b"deep");
    assert_eq!(mnt.stats().cuts, 6);
}

#[test]
fn a_cut_ends_the_old_mount_for_everyone() {
    if !should_run("a_cut_ends_the_old_mount_for_everyone") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mut mnt = PowerCut::mount(p).unwrap();
    write_synced(&p.join("f"), b"durable");
    sync_dir(p);
    let mut open = OpenOptions::new()
        .read(true)
        .write(true)
        .open(p.join("f"))
        .unwrap();
    open.write_all(b"DURABLE-but-not-synced").unwrap();
    mnt.cut().unwrap();
    // A file opened before the cut is dead: neither the kernel's cache
    // nor the old session answers for it.
    let mut buf = Vec::new();
    assert!(open.read_to_end(&mut buf).is_err() || buf.is_empty());
    assert!(open.write_all(b"x").is_err());
    assert!(open.sync_all().is_err());
    let _mnt = mnt.remount().unwrap();
    assert_eq!(read(&p.join("f")).unwrap(), b"durable");
}

#[test]
fn a_rename_trigger_kills_the_victim_and_the_rename_never_happens() {
    if !should_run("a_rename_trigger_kills_the_victim_and_the_rename_never_happens") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mnt = PowerCut::mount(p).unwrap();
    let mut victim = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    mnt.set_victims(&[victim.id()]);
    write_synced(&p.join("batch.tmp"), b"batch");
    sync_dir(p);
    mnt.cut_when(Trigger::Rename {
        to_suffix: ".zst".into(),
        nth: 1,
    });
    let renamed = std::fs::rename(p.join("batch.tmp"), p.join("batch.zst"));
    assert!(renamed.is_err(), "the rename the power was cut at failed");
    assert!(mnt.wait_cut(Duration::from_secs(10)));
    let status = victim.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the victim was killed"
    );
    let _mnt = mnt.remount().unwrap();
    assert_eq!(read(&p.join("batch.tmp")).unwrap(), b"batch");
    assert_eq!(read(&p.join("batch.zst")), None);
}
