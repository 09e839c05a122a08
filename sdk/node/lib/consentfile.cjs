'use strict';
/**
 * Reading the consent files, and writing the user's file as
 * client/src/consent.rs `record_version` does: dir 0700, the file rewritten in
 * canonical form through a temporary file in the same dir (an existing file's
 * mode kept, else 0600), fsync'd, renamed over it.
 *
 * Concurrent writers are serialised with an exclusively created lock file,
 * DIR/.consent.node-lock (Node's standard library has no flock), which the
 * flock-based clients wait for too: see `takeLock`.
 * @module
 */

const fs = require('node:fs');
const nodePath = require('node:path');
const { parseConsentFile, unreadableConsentFile } = require('./consent.cjs');
const { makeDirs } = require('./files.cjs');
const { consentNotBelieved, untrustedDir } = require('./trust.cjs');

/** A lock file older than this belongs to a writer that died, in ms. */
const LOCK_STALE_MS = 10_000;

/** The most a consent file may hold (platform/src/fs.rs MAX_SMALL_TEXT). */
const MAX_SMALL_TEXT = 1 << 20;

/**
 * A consent file's text, read as the daemon and the shim read it
 * (platform/src/fs.rs `read_small_text`): strictly UTF-8 with nothing removed
 * (a byte-order mark stays: parseConsentFile skips one at the start), at most 1 MiB (a link to
 * /dev/zero must not fill memory), opened non-blocking so that a FIFO in its
 * place cannot freeze the host's event loop: with no writer it reads as empty,
 * and one whose writer has sent nothing throws EAGAIN. A file read that is not
 * text (too long, or not UTF-8) throws an error whose `notText` is true (the
 * Rust client's InvalidData).
 * @param {string} path
 * @returns {string}
 */
function readText(path) {
  const fd = fs.openSync(path, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK || 0));
  try {
    // Small first (a consent file is a few lines), doubled as needed.
    let buf = Buffer.allocUnsafe(4096);
    let len = 0;
    for (;;) {
      if (len === buf.length) {
        const bigger = Buffer.allocUnsafe(Math.min(buf.length * 2, MAX_SMALL_TEXT + 1));
        buf.copy(bigger, 0, 0, len);
        buf = bigger;
      }
      const n = fs.readSync(fd, buf, len, buf.length - len, null);
      if (n === 0) break;
      len += n;
      if (len > MAX_SMALL_TEXT) {
        throw Object.assign(new Error(`${path} is larger than ${MAX_SMALL_TEXT} bytes`), { notText: true });
      }
    }
    try {
      return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(buf.subarray(0, len));
    } catch (e) {
      // Not UTF-8 (the decoder's own error, marked).
      throw Object.assign(/** @type {object} */ (e), { notText: true });
    }
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The decisions that can be read from a consent file that is not text, as the
 * Rust client's `salvage`: its first MAX_SMALL_TEXT bytes, each bad sequence
 * read as U+FFFD, parsed as usual; a line that does not parse is left out.
 * Only what parses is kept, never the bad lines themselves.
 * @param {string} path a regular file (checked by the caller, under the lock)
 * @returns {import('./consent.cjs').ConsentFile}
 */
function salvage(path) {
  try {
    const fd = fs.openSync(path, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK || 0));
    try {
      const buf = Buffer.alloc(MAX_SMALL_TEXT);
      let len = 0;
      while (len < buf.length) {
        const n = fs.readSync(fd, buf, len, buf.length - len, null);
        if (n === 0) break;
        len += n;
      }
      const file = parseConsentFile(new TextDecoder('utf-8', { ignoreBOM: true }).decode(buf.subarray(0, len)));
      file.badLines = [];
      return file;
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return { entries: [], badLines: [] };
  }
}

/**
 * The administrator's file: null when missing; one that exists but cannot be
 * read (or is not UTF-8) forces every product off.
 * @param {string} path
 * @returns {import('./consent.cjs').ConsentFile|null}
 */
function readSystem(path) {
  try {
    return parseConsentFile(readText(path));
  } catch (e) {
    if (e && /** @type {any} */ (e).code === 'ENOENT') return null;
    return unreadableConsentFile();
  }
}

/**
 * The user's file; unreadable counts as missing (undecided, so off), and so
 * does one another user could have written (see consentNotBelieved).
 * @param {string} path
 * @returns {import('./consent.cjs').ConsentFile|null}
 */
function readUser(path) {
  if (consentNotBelieved(path)) return null;
  try {
    return parseConsentFile(readText(path));
  } catch {
    return null;
  }
}

/**
 * The RFC 3339 UTC time with microseconds, as the Rust clients write it
 * (e.g. 2026-11-27T10:00:00.123000Z).
 * @param {Date} [date]
 * @returns {string}
 */
function rfc3339Micros(date = new Date()) {
  return date.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

/**
 * @param {number} ms
 * @returns {Promise<void>}
 */
function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Whether someone holds a `flock` on `path`, from /proc/locks (Linux); null
 * where that cannot be known.
 * @param {string} path
 * @returns {boolean|null}
 */
function flockHeld(path) {
  let st;
  try {
    st = fs.statSync(path, { bigint: true });
  } catch {
    return false;
  }
  let text;
  try {
    text = fs.readFileSync('/proc/locks', 'utf8');
  } catch {
    return null;
  }
  return locksName(text, st.dev, st.ino);
}

/**
 * Whether /proc/locks' `text` lists a lock on the file with device number
 * `dev` and inode `ino`. The same inode on another file system is another
 * file, so the device counts too.
 * @param {string} text
 * @param {bigint} dev
 * @param {bigint} ino
 * @returns {boolean}
 */
function locksName(text, dev, ino) {
  // glibc's encoding of a device number; /proc/locks writes it in hex.
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  // e.g. "1: FLOCK  ADVISORY  WRITE 5749 00:2e:1234 0 EOF": MAJOR:MINOR:INODE.
  return text.split('\n').some((line) => {
    const id = line.split(/\s+/).find((w) => /^[0-9a-f]+:[0-9a-f]+:\d+$/.test(w));
    if (id === undefined) return false;
    const [maj, min, inode] = id.split(':');
    return BigInt(inode) === ino && BigInt(`0x${maj}`) === major && BigInt(`0x${min}`) === minor;
  });
}

/**
 * Whether anything (a dangling link too) is at `p`.
 * @param {string} p
 * @returns {boolean}
 */
function lexists(p) {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** The lock a Node writer holds (client/src/consent.rs NODE_LOCK). */
const NODE_LOCK = '.consent.node-lock';

/**
 * Remove the lock at `lock` if it is still the file `stale` (a stat of it
 * that showed it stale), and nothing else: another writer that saw the same
 * stale lock may have taken it over since, and unlinking by name would remove
 * that writer's fresh lock and let both go ahead. So the lock is first moved
 * aside (a rename takes whatever file is there at that instant, and only one
 * writer gets it), then looked at: the stale file is removed; a live lock
 * taken by mistake is put back (a link, so a lock made meanwhile is not
 * replaced; its owner then finds it is no longer its own and gives up).
 * Returns whether the stale lock was removed.
 * @param {string} lock
 * @param {fs.Stats} stale
 * @param {string} mine this writer's own temporary file, to name the aside one
 * @returns {boolean}
 */
function takeOverStale(lock, stale, mine) {
  const aside = `${mine}.stale`;
  try {
    fs.renameSync(lock, aside);
  } catch {
    return false; // gone meanwhile: someone else took it
  }
  let same = false;
  try {
    const st = fs.statSync(aside);
    same = st.ino === stale.ino && st.dev === stale.dev && st.mtimeMs === stale.mtimeMs;
    if (!same) fs.linkSync(aside, lock);
  } catch {
    // Another lock is there now: the one moved aside has lost it.
  } finally {
    fs.rmSync(aside, { force: true });
  }
  return same;
}

/**
 * Take the consent file's lock in DIR, waiting at most `waitMs`. Returns the
 * lock (release it when done), or null when another writer kept it that long.
 *
 * Node has no `flock`, which the Rust client and the Go and Python SDKs use
 * on DIR/.consent.lock. So a Node writer first makes DIR/.consent.node-lock
 * by exclusive creation (a file holding its pid, hard-linked to that name:
 * against other Node writers; taken over by `takeOverStale` when older than
 * 10 s, from a writer that died), and then waits while /proc/locks shows
 * .consent.lock locked. A
 * flock writer takes its flock and then waits while .consent.node-lock is
 * there (and under 10 s old). In that order two writers can never both go
 * ahead. Where /proc/locks cannot be read (macOS) the second wait is skipped:
 * between a Node writer and a flock writer the exclusion is then best effort.
 * @param {string} dir
 * @param {number} waitMs
 * @returns {Promise<{path: string, release: () => void}|null>}
 */
async function takeLock(dir, waitMs) {
  const lock = nodePath.join(dir, NODE_LOCK);
  const mine = nodePath.join(dir, `${NODE_LOCK}.${process.pid}.${Date.now()}.tmp`);
  const deadline = Date.now() + waitMs;
  // Held open while the lock is ours: an inode with an open descriptor is
  // not freed, so no file made after a takeover can have its number, and
  // comparing numbers below tells the lock from a newer writer's.
  const fd = fs.openSync(mine, 'wx', 0o600);
  let kept = false;
  try {
    fs.writeSync(fd, `${process.pid}\n`);
  } catch (e) {
    fs.closeSync(fd);
    fs.unlinkSync(mine);
    throw e;
  }
  const me = fs.fstatSync(fd);
  // Whether the lock is still ours (another writer may have taken it over
  // as stale): only then may it be touched or removed.
  const ours = () => {
    try {
      const st = fs.statSync(lock);
      return st.ino === me.ino && st.dev === me.dev;
    } catch {
      return false;
    }
  };
  // Others judge a lock's age by its time: kept fresh while it is held.
  const touch = () => {
    const now = new Date();
    fs.futimesSync(fd, now, now);
  };
  try {
    for (;;) {
      touch();
      try {
        fs.linkSync(mine, lock);
        break;
      } catch (e) {
        if (/** @type {any} */ (e).code !== 'EEXIST') throw e;
      }
      let seen;
      try {
        seen = fs.statSync(lock);
      } catch {
        continue; // gone meanwhile: try again at once
      }
      if (Math.abs(Date.now() - seen.mtimeMs) > LOCK_STALE_MS) {
        takeOverStale(lock, seen, mine);
        continue;
      }
      if (Date.now() >= deadline) return null;
      await sleep(5);
    }
    while (flockHeld(nodePath.join(dir, '.consent.lock')) === true) {
      if (Date.now() >= deadline || !ours()) {
        if (ours()) fs.unlinkSync(lock);
        return null;
      }
      touch();
      await sleep(2);
    }
    if (!ours()) return null;
    touch();
    kept = true;
    let released = false;
    return {
      path: lock,
      // Removed only while it is still ours.
      release: () => {
        if (released) return;
        released = true;
        try {
          if (ours()) fs.unlinkSync(lock);
        } catch {
          // gone
        }
        fs.closeSync(fd);
      },
    };
  } finally {
    try {
      fs.unlinkSync(mine);
    } catch {
      // already gone
    }
    if (!kept) fs.closeSync(fd);
  }
}

/**
 * Why nothing may be written at the consent file's path `file`, or null:
 * what stands there must be nothing yet or a regular file, and, for root,
 * root's. A link is refused, not followed: one another user planted (in a
 * directory they may write, or at the end of a chain of links) would lead
 * the writer, root above all, to overwrite whatever it points to. A
 * directory, FIFO, device or socket is refused: a consent file of /dev/null
 * was replaced, /tmp would have been moved aside. As the Rust client.
 * @param {string} file
 * @returns {string|null}
 */
function refuseUnlessAFile(file) {
  let st;
  try {
    st = fs.lstatSync(file);
  } catch (e) {
    if (e && /** @type {any} */ (e).code === 'ENOENT') return null;
    return `cannot use the consent file ${file}: ${e && /** @type {any} */ (e).message}`;
  }
  let what = '';
  if (st.isSymbolicLink()) what = 'a link (name the file itself)';
  else if (st.isDirectory()) what = 'a directory';
  else if (st.isFIFO()) what = 'a FIFO';
  else if (st.isCharacterDevice() || st.isBlockDevice()) what = 'a device';
  else if (st.isSocket()) what = 'a socket';
  else if (!st.isFile()) what = 'not a regular file';
  else if (isRoot() && st.uid !== 0) what = `owned by uid ${st.uid}, and root writes only root's files`;
  if (!what) return null;
  return (
    `${file} is ${what}, not a consent file to write: nothing was written; ` +
    'point TELEMETRY_CONSENT_FILE at a regular file'
  );
}

/** @returns {boolean} */
function isRoot() {
  return typeof process.geteuid === 'function' && process.geteuid() === 0;
}

/**
 * For root: why `dir` is no place to write, or null. Every directory on the
 * way, as named and as resolved, must be root's and writable by nobody else
 * (a sticky one aside, as /tmp): another user who made /tmp/telemetry-0
 * first (root's default with no HOME), or whose home `sudo -E` kept, could
 * otherwise lead root's write anywhere through a link in a directory of
 * theirs. As the Rust client.
 * @param {string} dir
 * @returns {string|null}
 */
function notOnlyRoots(dir) {
  if (!isRoot()) return null;
  const named = nodePath.resolve(dir);
  let resolved;
  try {
    resolved = fs.realpathSync(named);
  } catch (e) {
    return `cannot check ${named}: ${e && /** @type {any} */ (e).message}`;
  }
  for (const start of [named, resolved]) {
    for (let d = start; ; d = nodePath.dirname(d)) {
      let st;
      try {
        st = fs.lstatSync(d);
      } catch (e) {
        return `cannot check ${d}: ${e && /** @type {any} */ (e).message}`;
      }
      let why = '';
      if (st.uid !== 0) why = `is owned by uid ${st.uid}`;
      else if (!st.isSymbolicLink() && st.mode & 0o022 && !(st.mode & 0o1000)) why = 'may be written by other users';
      if (why) {
        return (
          `${d} ${why}: root writes a consent file only where no other user can redirect it; ` +
          'nothing was written; set TELEMETRY_CONSENT_FILE (or HOME) to a place of root\'s'
        );
      }
      if (d === nodePath.dirname(d)) break;
    }
  }
  return null;
}

/**
 * Record `mode` for `product` in the user's consent file.
 * @param {string} file the user's consent file
 * @param {string} product
 * @param {"off"|"local"|"on"} mode
 * @param {number|null} version the manifest version the decision is for, if known
 * @param {number} lockWaitMs how long to wait for another writer
 * @returns {Promise<{ok: true, kept?: string}|{ok: false, reason: string}>}
 *   `kept`: where an unreadable old file was renamed to
 */
async function recordConsent(file, product, mode, version, lockWaitMs) {
  const { setEntry, renderConsentFile } = require('./consent.cjs');
  const dir = nodePath.dirname(file);
  let lock;
  try {
    // For root: before any of it is made, then as made.
    let existing = dir;
    while (!lexists(existing) && nodePath.dirname(existing) !== existing) existing = nodePath.dirname(existing);
    const before = notOnlyRoots(existing);
    if (before) return { ok: false, reason: before };
    makeDirs(dir, 0o700);
    const refused = notOnlyRoots(dir);
    if (refused) return { ok: false, reason: refused };
    // Root's directories were checked just above, more strictly.
    const theirs = isRoot() ? null : untrustedDir(dir);
    if (theirs) {
      return {
        ok: false,
        reason:
          `${theirs}, so a decision written there could be changed by them; ` +
          'set HOME, XDG_STATE_HOME or TELEMETRY_STATE_DIR to a directory of your own',
      };
    }
    lock = await takeLock(dir, lockWaitMs);
  } catch (e) {
    return { ok: false, reason: `cannot use ${dir} for the consent file: ${e && /** @type {any} */ (e).message}` };
  }
  if (lock === null) {
    return { ok: false, reason: `another writer holds the consent file's lock in ${dir}; try again` };
  }
  // Under the lock, so what is looked at is what is written.
  const refused = refuseUnlessAFile(file);
  if (refused) {
    lock.release();
    return { ok: false, reason: refused };
  }
  const tmp = nodePath.join(dir, `.consent.${process.pid}.${Date.now()}.tmp`);
  try {
    let fileMode = 0o600;
    try {
      fileMode = fs.statSync(file).mode & 0o777;
    } catch {
      // a new file
    }
    /** @type {string|undefined} */
    let kept;
    let current = { entries: [], badLines: [] };
    try {
      current = parseConsentFile(readText(file));
    } catch (e) {
      if (!e || /** @type {any} */ (e).code !== 'ENOENT') {
        // Exists but cannot be read: keep it beside the new one, as the
        // Rust client does, rather than lose the other products' lines.
        // What can still be read is kept too: a stray byte must not turn
        // every other product's decision into "undecided", which the daemon
        // would apply as an off (deleting what it stored and telling each
        // vendor). Not UTF-8 or too long: the lines that parse from the
        // first MiB read with the bad bytes replaced (a line with one in its
        // product or mode does not parse). No permission: nothing.
        if (e && /** @type {any} */ (e).notText === true) current = salvage(file);
        const base = `${file}.unreadable-${Date.now()}-${process.pid}`;
        // Never over one kept before in the same millisecond: a rename
        // would replace it.
        kept = base;
        for (let n = 2; lexists(kept); n++) kept = `${base}-${n}`;
        fs.renameSync(file, kept);
        // Its mode (no read permission) is not passed on.
        fileMode = (fileMode | 0o600) & 0o666;
      }
    }
    setEntry(current, product, mode, rfc3339Micros(), version);
    const fd = fs.openSync(tmp, 'wx', fileMode);
    try {
      // The umask may have narrowed it.
      fs.fchmodSync(fd, fileMode);
      fs.writeSync(fd, renderConsentFile(current));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
    // The decision is recorded only once the rename is durable: an "off"
    // the user was told is recorded must survive a power cut (as the Rust
    // writer's). Windows cannot open a directory for this; its renames are
    // journaled.
    if (process.platform !== 'win32') {
      const dfd = fs.openSync(nodePath.dirname(file), 'r');
      try {
        fs.fsyncSync(dfd);
      } catch (e) {
        // A file system that cannot sync a directory (some FUSE, 9p and
        // vboxsf mounts) says EINVAL or ENOTSUP: the rename stands.
        const code = e && /** @type {any} */ (e).code;
        if (code !== 'EINVAL' && code !== 'ENOTSUP') throw e;
      } finally {
        fs.closeSync(dfd);
      }
    }
    return kept === undefined ? { ok: true } : { ok: true, kept };
  } catch (e) {
    try {
      fs.unlinkSync(tmp);
    } catch {
      // not created
    }
    return { ok: false, reason: `cannot write the consent file ${file}: ${e && /** @type {any} */ (e).message}` };
  } finally {
    lock.release();
  }
}

module.exports = {
  LOCK_STALE_MS,
  NODE_LOCK,
  readSystem,
  readUser,
  rfc3339Micros,
  flockHeld,
  locksName,
  takeLock,
  takeOverStale,
  recordConsent,
};
