//! The FUSE glue: each request becomes one call on the model, under the
//! shared lock, for the session's own epoch only (see `state`).
//!
//! # What the kernel does itself
//! - Page cache: no `direct_io` (SQLite maps the `-shm` file shared) and no
//!   writeback cache (not requested in `init`), so every `write(2)` reaches
//!   [`Filesystem::write`] before it returns, and dirty pages of a shared
//!   mapping arrive as writes at `msync`, `fsync` or writeback. What the
//!   kernel caches is therefore never newer than `live`.
//! - Locks: `getlk`/`setlk`/`flock` are not implemented and
//!   `FUSE_POSIX_LOCKS`/`FUSE_FLOCK_LOCKS` are not negotiated, so the kernel
//!   keeps POSIX byte-range locks (SQLite) and `flock` (the daemon's lock
//!   file, the spool) locally on the mount's inodes. Every process using
//!   the file system is on this machine, which is all local locks need; a
//!   cut replaces the mount, and with it every lock, as a reboot does.
//! - Permissions: `default_permissions`, so the kernel checks modes and
//!   `access` is answered only for existence.

use crate::model::{Errno, Ino, Kind, Model, Node, SetAttr};
use crate::state::{Op, Shared, State};
use fuser::{
    FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, KernelConfig, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long the kernel may cache names and attributes. Every change goes
/// through the kernel, so its caches stay right; a cut replaces the mount
/// and its caches with it.
const TTL: Duration = Duration::from_secs(1);

/// One session's view of the shared file system.
pub(crate) struct PowerCutFs {
    shared: Arc<Shared>,
    epoch: u64,
}

impl PowerCutFs {
    pub(crate) fn new(shared: Arc<Shared>, epoch: u64) -> PowerCutFs {
        PowerCutFs { shared, epoch }
    }

    /// Run `f` on the state if this session is still the current one;
    /// `EIO` once the power was cut under it. When `f` cut the power (a
    /// trigger fired), whoever waits for the cut is woken.
    fn with<T>(&self, f: impl FnOnce(&mut State) -> Result<T, Errno>) -> Result<T, Errno> {
        let mut st = self.shared.lock();
        if st.epoch != self.epoch {
            return Err(Errno::EIO);
        }
        let result = f(&mut st);
        let cut = st.epoch != self.epoch;
        drop(st);
        if cut {
            self.shared.notify_cut();
        }
        result
    }
}

fn errno(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.0)
}

fn attr(model: &Model, ino: Ino) -> Result<FileAttr, Errno> {
    let node: &Node = model.node(ino)?;
    let size = node.size();
    Ok(FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: node.attrs.atime,
        mtime: node.attrs.mtime,
        ctime: node.attrs.ctime,
        crtime: node.attrs.ctime,
        kind: file_type(node.kind),
        // At most 0o7777: fits.
        perm: (node.attrs.perm & 0o7777) as u16,
        nlink: model.nlink(ino)?,
        uid: node.attrs.uid,
        gid: node.attrs.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    })
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// Cut the power if `op` fires the trigger; then the operation fails.
fn trigger(st: &mut State, op: Op<'_>) -> Result<(), Errno> {
    if st.fires(op) {
        st.cut();
        return Err(Errno::EIO);
    }
    Ok(())
}

impl fuser::Filesystem for PowerCutFs {
    fn init(&mut self, _req: &Request, _config: &mut KernelConfig) -> std::io::Result<()> {
        // Nothing to negotiate: the defaults ask for neither the writeback
        // cache nor remote locks (see the module docs).
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.with(|st| {
            let ino = st.model.lookup(parent.0, name)?;
            attr(&st.model, ino)
        }) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.with(|st| attr(&st.model, ino.0)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            perm: mode,
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        match self.with(|st| {
            st.model.setattr(ino.0, &set)?;
            attr(&st.model, ino.0)
        }) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // Regular files only: nothing here needs devices, FIFOs or sockets
        // (the daemon's socket is not on this file system).
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            reply.error(fuser::Errno::EPERM);
            return;
        }
        match self.with(|st| {
            let ino = st.model.create(
                parent.0,
                name,
                Kind::File,
                mode & !umask,
                req.uid(),
                req.gid(),
            )?;
            attr(&st.model, ino)
        }) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.with(|st| {
            let ino = st.model.create(
                parent.0,
                name,
                Kind::Dir,
                mode & !umask,
                req.uid(),
                req.gid(),
            )?;
            attr(&st.model, ino)
        }) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.with(|st| {
            trigger(st, Op::Unlink(name))?;
            st.model.unlink(parent.0, name)
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.with(|st| st.model.rmdir(parent.0, name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.with(|st| {
            trigger(st, Op::Rename(newname))?;
            st.model
                .rename(parent.0, name, newparent.0, newname, flags.bits())
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.with(|st| {
            st.model.link(ino.0, newparent.0, newname)?;
            attr(&st.model, ino.0)
        }) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Stateless I/O: the inode is the handle. O_TRUNC arrives as a
        // setattr of the size, O_APPEND is resolved by the kernel.
        match self.with(|st| st.model.node(ino.0).map(|_| ())) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        match self.with(|st| st.model.read(ino.0, offset, size).map(<[u8]>::to_vec)) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.with(|st| {
            trigger(st, Op::Write)?;
            st.stats.writes += 1;
            st.model.write(ino.0, offset, data)
        }) {
            // At most the request's length, which the kernel sent as u32.
            Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable.
        match self.with(|st| st.model.node(ino.0).map(|_| ())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // fdatasync keeps the attributes too: stricter than a disk would
        // need to be, and the size (which fdatasync must keep) is data here.
        match self.with(|st| {
            let name = st.name_of(ino.0);
            trigger(st, Op::Fsync(&name))?;
            st.stats.fsyncs += 1;
            st.model.sync_file(ino.0)
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|st| st.model.node(ino.0).map(|n| n.kind)) {
            Ok(Kind::Dir) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(Kind::File) => reply.error(fuser::Errno::ENOTDIR),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = self.with(|st| {
            let dir = st.model.node(ino.0)?;
            if dir.kind != Kind::Dir {
                return Err(Errno::ENOTDIR);
            }
            let mut out = vec![
                (ino.0, Kind::Dir, OsStr::new(".").to_os_string()),
                (ino.0, Kind::Dir, OsStr::new("..").to_os_string()),
            ];
            for (name, &child) in &dir.entries {
                let kind = st.model.node(child).map_or(Kind::File, |n| n.kind);
                out.push((child, kind, name.clone()));
            }
            Ok(out)
        });
        match entries {
            Ok(entries) => {
                // The offset of an entry is its index + 1: the kernel asks
                // again from the last offset it got.
                let skip = usize::try_from(offset).unwrap_or(usize::MAX);
                for (i, (child, kind, name)) in entries.iter().enumerate().skip(skip) {
                    if reply.add(INodeNo(*child), (i + 1) as u64, file_type(*kind), name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.with(|st| {
            let name = st.name_of(ino.0);
            trigger(st, Op::SyncDir(&name))?;
            st.stats.dir_syncs += 1;
            st.model.sync_dir(ino.0)
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // A roomy disk: SQLite and the daemon only look at it for space.
        reply.statfs(1 << 20, 1 << 19, 1 << 19, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.with(|st| st.model.node(ino.0).map(|_| ())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.with(|st| {
            let ino = match st.model.create(
                parent.0,
                name,
                Kind::File,
                mode & !umask,
                req.uid(),
                req.gid(),
            ) {
                Ok(ino) => ino,
                // Made by someone else since the kernel looked: open it,
                // unless the caller wanted it new.
                Err(Errno::EEXIST) if flags & libc::O_EXCL == 0 => {
                    st.model.lookup(parent.0, name)?
                }
                Err(e) => return Err(e),
            };
            attr(&st.model, ino)
        }) {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.with(|st| st.model.fallocate(ino.0, offset, length, mode)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }
}
