//! The file system itself, with no FUSE in it: two trees of inodes.
//!
//! # The two views
//! `live` is what processes see; every operation changes it. `durable` is
//! what a disk would hold after a power cut, and only the sync operations
//! write it:
//! - [`Model::sync_file`] (`fsync`/`fdatasync` of a file) copies that
//!   inode's data, size and attributes;
//! - [`Model::sync_dir`] (`fsync` of an open directory) copies that
//!   directory's attributes and its entries (name → inode): the creates,
//!   renames and unlinks made in it. An entry made durable this way whose
//!   inode was never synced comes back with the inode's durable data if it
//!   has some, else empty (a new file's metadata is on disk, its data not).
//!
//! A rename between two directories changes two directories; each is made
//! durable by its own sync, as on a real disk (a cut between the two syncs
//! can leave the file under both names).
//!
//! [`Model::cut`] replaces `live` by what is reachable from the root in
//! `durable`. Inodes are never freed before a cut (an unlinked file may
//! still be open, and the tests' data is small), and inode numbers are never
//! reused, so a handle from before a cut can never reach a new file.
//!
//! # Errors
//! Every operation checks its input and answers an errno ([`Errno`]), never
//! panics: the kernel sends whatever processes ask for.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

/// An inode number. The root directory is [`ROOT`].
pub type Ino = u64;

/// The root directory's inode number (FUSE's `FUSE_ROOT_ID`).
pub const ROOT: Ino = 1;

/// Largest file this file system holds: the data lives in memory twice, so
/// a runaway writer gets `EFBIG` instead of exhausting the test machine.
pub const MAX_FILE_SIZE: u64 = 1 << 30;

/// Longest name in a directory, as on ext4.
pub const MAX_NAME_LEN: usize = 255;

/// An error number to answer the kernel with (`libc::E*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// No such file or directory.
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    /// Already exists.
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    /// Not a directory.
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    /// Is a directory.
    pub const EISDIR: Errno = Errno(libc::EISDIR);
    /// Directory not empty.
    pub const ENOTEMPTY: Errno = Errno(libc::ENOTEMPTY);
    /// Invalid argument.
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    /// File too large.
    pub const EFBIG: Errno = Errno(libc::EFBIG);
    /// Name too long.
    pub const ENAMETOOLONG: Errno = Errno(libc::ENAMETOOLONG);
    /// Operation not permitted.
    pub const EPERM: Errno = Errno(libc::EPERM);
    /// Operation not supported.
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
    /// I/O error: what a request to a mount that lost its power gets.
    pub const EIO: Errno = Errno(libc::EIO);
}

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// An inode's metadata (its size is its data's length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attrs {
    /// Permission bits (`0o7777`), without the file type.
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last access.
    pub atime: SystemTime,
    /// Last modification of the data.
    pub mtime: SystemTime,
    /// Last change of the inode.
    pub ctime: SystemTime,
    /// Directory entries naming a file (directories report their own).
    pub nlink: u32,
}

/// One inode: a file's data or a directory's entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// File or directory.
    pub kind: Kind,
    /// Metadata.
    pub attrs: Attrs,
    /// A file's bytes (empty for a directory).
    pub data: Vec<u8>,
    /// A directory's entries (empty for a file).
    pub entries: BTreeMap<OsString, Ino>,
}

impl Node {
    fn new(kind: Kind, perm: u32, uid: u32, gid: u32) -> Node {
        let now = SystemTime::now();
        Node {
            kind,
            attrs: Attrs {
                perm: perm & 0o7777,
                uid,
                gid,
                atime: now,
                mtime: now,
                ctime: now,
                nlink: 1,
            },
            data: Vec::new(),
            entries: BTreeMap::new(),
        }
    }

    /// The size `stat` reports.
    pub fn size(&self) -> u64 {
        match self.kind {
            Kind::File => self.data.len() as u64,
            Kind::Dir => 4096,
        }
    }

    /// The link count `stat` reports: for a directory 2 plus its
    /// subdirectories, computed by the caller from the tree.
    fn file_nlink(&self) -> u32 {
        self.attrs.nlink
    }
}

/// One view of the whole file system.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    nodes: HashMap<Ino, Node>,
}

impl Tree {
    /// The inode `ino`, if this view has it.
    pub fn get(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    /// The number of inodes in this view.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether this view has no inodes (never: the root is always there).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// Which attributes a `setattr` changes.
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    /// New permission bits.
    pub perm: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size: truncate or extend with zeros.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SystemTime>,
    /// New modification time.
    pub mtime: Option<SystemTime>,
}

/// `renameat2` flags this file system honours.
pub const RENAME_NOREPLACE: u32 = 1;
/// Swap the two names.
pub const RENAME_EXCHANGE: u32 = 2;

/// `fallocate` mode: keep the size (only reserve space).
const FALLOC_FL_KEEP_SIZE: i32 = 1;

/// The file system: `live` and `durable` (see the module docs).
#[derive(Debug)]
pub struct Model {
    live: Tree,
    durable: Tree,
    next_ino: Ino,
}

impl Model {
    /// An empty file system whose root (mode 0755, owned by `uid`/`gid`) is
    /// durable from the start, like a freshly made disk.
    pub fn new(uid: u32, gid: u32) -> Model {
        let mut live = Tree::default();
        live.nodes
            .insert(ROOT, Node::new(Kind::Dir, 0o755, uid, gid));
        Model {
            durable: live.clone(),
            live,
            next_ino: ROOT + 1,
        }
    }

    /// What processes see.
    pub fn live(&self) -> &Tree {
        &self.live
    }

    /// What survives a power cut.
    pub fn durable(&self) -> &Tree {
        &self.durable
    }

    /// The live inode `ino`.
    pub fn node(&self, ino: Ino) -> Result<&Node, Errno> {
        self.live.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: Ino) -> Result<&mut Node, Errno> {
        self.live.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn dir(&self, ino: Ino) -> Result<&Node, Errno> {
        let node = self.node(ino)?;
        match node.kind {
            Kind::Dir => Ok(node),
            Kind::File => Err(Errno::ENOTDIR),
        }
    }

    fn file_mut(&mut self, ino: Ino) -> Result<&mut Node, Errno> {
        let node = self.node_mut(ino)?;
        match node.kind {
            Kind::File => Ok(node),
            Kind::Dir => Err(Errno::EISDIR),
        }
    }

    /// The link count `stat` reports for the live inode `ino`.
    pub fn nlink(&self, ino: Ino) -> Result<u32, Errno> {
        let node = self.node(ino)?;
        Ok(match node.kind {
            Kind::File => node.file_nlink(),
            Kind::Dir => {
                let subdirs = node
                    .entries
                    .values()
                    .filter(|c| self.live.nodes.get(c).is_some_and(|n| n.kind == Kind::Dir))
                    .count();
                2 + u32::try_from(subdirs).unwrap_or(u32::MAX - 2)
            }
        })
    }

    /// The entry `name` in the directory `parent`.
    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Ino, Errno> {
        check_name(name)?;
        self.dir(parent)?
            .entries
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    /// A name the live inode `ino` has in some directory, for the cut
    /// triggers; `None` once it has none (unlinked).
    pub fn name_of(&self, ino: Ino) -> Option<OsString> {
        self.live.nodes.values().find_map(|n| {
            n.entries
                .iter()
                .find(|(_, &c)| c == ino)
                .map(|(name, _)| name.clone())
        })
    }

    /// Create `name` in `parent` (a file or a directory with `perm`);
    /// `EEXIST` if the name is taken.
    pub fn create(
        &mut self,
        parent: Ino,
        name: &OsStr,
        kind: Kind,
        perm: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Ino, Errno> {
        check_name(name)?;
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.live.nodes.insert(ino, Node::new(kind, perm, uid, gid));
        let dir = self.node_mut(parent)?;
        dir.entries.insert(name.to_os_string(), ino);
        touch_dir(dir);
        Ok(ino)
    }

    /// Add the name `newname` in `newparent` for the file `ino` (a hard
    /// link); directories cannot be linked (`EPERM`).
    pub fn link(&mut self, ino: Ino, newparent: Ino, newname: &OsStr) -> Result<(), Errno> {
        check_name(newname)?;
        if self.node(ino)?.kind == Kind::Dir {
            return Err(Errno::EPERM);
        }
        if self.dir(newparent)?.entries.contains_key(newname) {
            return Err(Errno::EEXIST);
        }
        let node = self.node_mut(ino)?;
        node.attrs.nlink = node.attrs.nlink.saturating_add(1);
        node.attrs.ctime = SystemTime::now();
        let dir = self.node_mut(newparent)?;
        dir.entries.insert(newname.to_os_string(), ino);
        touch_dir(dir);
        Ok(())
    }

    /// Remove the name `name` of a file from `parent`; the inode lives on
    /// while it is open (and until the next cut).
    pub fn unlink(&mut self, parent: Ino, name: &OsStr) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        if self.node(ino)?.kind == Kind::Dir {
            return Err(Errno::EISDIR);
        }
        self.drop_entry(parent, name, ino)
    }

    /// Remove the empty directory `name` from `parent`.
    pub fn rmdir(&mut self, parent: Ino, name: &OsStr) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        let node = self.node(ino)?;
        if node.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        if !node.entries.is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        self.drop_entry(parent, name, ino)
    }

    fn drop_entry(&mut self, parent: Ino, name: &OsStr, ino: Ino) -> Result<(), Errno> {
        let dir = self.node_mut(parent)?;
        dir.entries.remove(name);
        touch_dir(dir);
        let node = self.node_mut(ino)?;
        node.attrs.nlink = node.attrs.nlink.saturating_sub(1);
        node.attrs.ctime = SystemTime::now();
        Ok(())
    }

    /// The directory holding the live directory `ino` (`None` for the root
    /// or an orphan).
    fn parent_of_dir(&self, ino: Ino) -> Option<Ino> {
        self.live.nodes.iter().find_map(|(&p, n)| {
            (n.kind == Kind::Dir && n.entries.values().any(|&c| c == ino)).then_some(p)
        })
    }

    /// Whether the directory `ancestor` is `dir` or holds it at some depth.
    fn is_ancestor(&self, ancestor: Ino, mut dir: Ino) -> bool {
        // Bounded by the number of inodes, in case of a cycle (there is
        // none: renames into a descendant are refused).
        for _ in 0..=self.live.nodes.len() {
            if dir == ancestor {
                return true;
            }
            match self.parent_of_dir(dir) {
                Some(p) => dir = p,
                None => return false,
            }
        }
        false
    }

    /// `renameat2(parent/name, newparent/newname, flags)`: replace an
    /// existing target (a file by a file, an empty directory by a
    /// directory), or with [`RENAME_NOREPLACE`] refuse to (`EEXIST`), or
    /// with [`RENAME_EXCHANGE`] swap the two. Other flags: `EINVAL`.
    pub fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        newparent: Ino,
        newname: &OsStr,
        flags: u32,
    ) -> Result<(), Errno> {
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || flags == RENAME_NOREPLACE | RENAME_EXCHANGE
        {
            return Err(Errno::EINVAL);
        }
        check_name(newname)?;
        let src = self.lookup(parent, name)?;
        self.dir(newparent)?;
        let dst = self.node(newparent)?.entries.get(newname).copied();
        let src_kind = self.node(src)?.kind;
        if src_kind == Kind::Dir && self.is_ancestor(src, newparent) {
            return Err(Errno::EINVAL);
        }
        if flags & RENAME_EXCHANGE != 0 {
            let dst = dst.ok_or(Errno::ENOENT)?;
            if self.node(dst)?.kind == Kind::Dir && self.is_ancestor(dst, parent) {
                return Err(Errno::EINVAL);
            }
            self.node_mut(parent)?
                .entries
                .insert(name.to_os_string(), dst);
            self.node_mut(newparent)?
                .entries
                .insert(newname.to_os_string(), src);
            touch_dir(self.node_mut(parent)?);
            touch_dir(self.node_mut(newparent)?);
            return Ok(());
        }
        if let Some(dst) = dst {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(Errno::EEXIST);
            }
            if dst == src {
                // Two names of one file: POSIX says do nothing.
                return Ok(());
            }
            let target = self.node(dst)?;
            match (src_kind, target.kind) {
                (Kind::Dir, Kind::File) => return Err(Errno::ENOTDIR),
                (Kind::File, Kind::Dir) => return Err(Errno::EISDIR),
                (Kind::Dir, Kind::Dir) if !target.entries.is_empty() => {
                    return Err(Errno::ENOTEMPTY)
                }
                _ => {}
            }
            let target = self.node_mut(dst)?;
            target.attrs.nlink = target.attrs.nlink.saturating_sub(1);
            target.attrs.ctime = SystemTime::now();
        }
        self.node_mut(parent)?.entries.remove(name);
        touch_dir(self.node_mut(parent)?);
        self.node_mut(newparent)?
            .entries
            .insert(newname.to_os_string(), src);
        touch_dir(self.node_mut(newparent)?);
        self.node_mut(src)?.attrs.ctime = SystemTime::now();
        Ok(())
    }

    /// Write `data` at `offset` of the file `ino`, extending it with zeros
    /// as needed.
    pub fn write(&mut self, ino: Ino, offset: u64, data: &[u8]) -> Result<usize, Errno> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(Errno::EFBIG)?;
        let node = self.file_mut(ino)?;
        // Both fit in usize: they are at most MAX_FILE_SIZE.
        let (offset, end) = (offset as usize, end as usize);
        if node.data.len() < end {
            node.data.resize(end, 0);
        }
        node.data[offset..end].copy_from_slice(data);
        let now = SystemTime::now();
        node.attrs.mtime = now;
        node.attrs.ctime = now;
        Ok(data.len())
    }

    /// Up to `size` bytes of the file `ino` from `offset` (fewer at the end).
    pub fn read(&self, ino: Ino, offset: u64, size: u32) -> Result<&[u8], Errno> {
        let node = self.node(ino)?;
        if node.kind == Kind::Dir {
            return Err(Errno::EISDIR);
        }
        let len = node.data.len() as u64;
        let start = offset.min(len) as usize;
        let end = offset.saturating_add(u64::from(size)).min(len) as usize;
        Ok(&node.data[start..end])
    }

    /// Change the attributes `set` names (a size only for files).
    pub fn setattr(&mut self, ino: Ino, set: &SetAttr) -> Result<(), Errno> {
        if let Some(size) = set.size {
            if size > MAX_FILE_SIZE {
                return Err(Errno::EFBIG);
            }
            let node = self.file_mut(ino)?;
            // At most MAX_FILE_SIZE: fits in usize.
            node.data.resize(size as usize, 0);
            node.attrs.mtime = SystemTime::now();
        }
        let node = self.node_mut(ino)?;
        if let Some(perm) = set.perm {
            node.attrs.perm = perm & 0o7777;
        }
        if let Some(uid) = set.uid {
            node.attrs.uid = uid;
        }
        if let Some(gid) = set.gid {
            node.attrs.gid = gid;
        }
        if let Some(t) = set.atime {
            node.attrs.atime = t;
        }
        if let Some(t) = set.mtime {
            node.attrs.mtime = t;
        }
        node.attrs.ctime = SystemTime::now();
        Ok(())
    }

    /// `fallocate(mode, offset, len)`: mode 0 extends the file with zeros
    /// to `offset + len`; `FALLOC_FL_KEEP_SIZE` reserves nothing (memory is
    /// not reserved ahead); hole punching and the rest are `EOPNOTSUPP`, so
    /// that callers fall back (glibc's `posix_fallocate` writes zeros).
    pub fn fallocate(&mut self, ino: Ino, offset: u64, len: u64, mode: i32) -> Result<(), Errno> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(Errno::EFBIG)?;
        match mode {
            0 => {
                let node = self.file_mut(ino)?;
                if (node.data.len() as u64) < end {
                    node.data.resize(end as usize, 0);
                    node.attrs.ctime = SystemTime::now();
                }
                Ok(())
            }
            FALLOC_FL_KEEP_SIZE => self.file_mut(ino).map(|_| ()),
            _ => Err(Errno::EOPNOTSUPP),
        }
    }

    /// `fsync`/`fdatasync` of the file `ino`: its data, size and
    /// attributes become durable (its names do not: see [`Model::sync_dir`]).
    pub fn sync_file(&mut self, ino: Ino) -> Result<(), Errno> {
        let node = self.node(ino)?;
        if node.kind == Kind::Dir {
            return self.sync_dir(ino);
        }
        let mut copy = node.clone();
        // The link count is the durable tree's own: recomputed at a cut.
        if let Some(old) = self.durable.nodes.get(&ino) {
            copy.attrs.nlink = old.attrs.nlink;
        }
        self.durable.nodes.insert(ino, copy);
        Ok(())
    }

    /// `fsync` of the directory `ino`: its attributes and entries become
    /// durable; an entry's inode that has no durable version yet gets an
    /// empty one with its live attributes (file: no data; directory: no
    /// entries).
    pub fn sync_dir(&mut self, ino: Ino) -> Result<(), Errno> {
        let dir = self.dir(ino)?.clone();
        for &child in dir.entries.values() {
            if self.durable.nodes.contains_key(&child) {
                continue;
            }
            let Some(live) = self.live.nodes.get(&child) else {
                continue;
            };
            let mut skeleton = Node::new(live.kind, 0, 0, 0);
            skeleton.attrs = live.attrs.clone();
            self.durable.nodes.insert(child, skeleton);
        }
        self.durable.nodes.insert(ino, dir);
        Ok(())
    }

    /// The power cut: everything not made durable is gone. `live` becomes
    /// the durable inodes reachable from the root (unreachable ones are
    /// dropped from both views), with link counts recounted.
    pub fn cut(&mut self) {
        let mut reachable = HashSet::new();
        let mut stack = vec![ROOT];
        let mut links: HashMap<Ino, u32> = HashMap::new();
        while let Some(ino) = stack.pop() {
            if !reachable.insert(ino) {
                continue;
            }
            if let Some(node) = self.durable.nodes.get(&ino) {
                for &child in node.entries.values() {
                    *links.entry(child).or_default() += 1;
                    stack.push(child);
                }
            }
        }
        self.durable.nodes.retain(|ino, _| reachable.contains(ino));
        for (ino, node) in self.durable.nodes.iter_mut() {
            if node.kind == Kind::File {
                node.attrs.nlink = links.get(ino).copied().unwrap_or(0);
            }
        }
        self.live = self.durable.clone();
    }
}

/// A directory's entries changed: its times move.
fn touch_dir(dir: &mut Node) {
    let now = SystemTime::now();
    dir.attrs.mtime = now;
    dir.attrs.ctime = now;
}

/// `EINVAL` for names the kernel would never send (empty, `.`, `..`, with
/// a slash or NUL), `ENAMETOOLONG` past [`MAX_NAME_LEN`].
fn check_name(name: &OsStr) -> Result<(), Errno> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = name.as_bytes();
    if bytes.len() > MAX_NAME_LEN {
        return Err(Errno::ENAMETOOLONG);
    }
    if bytes.is_empty()
        || bytes == b"."
        || bytes == b".."
        || bytes.contains(&b'/')
        || bytes.contains(&0)
    {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
