'use strict';
/**
 * Whether a file or directory could be another local user's to change (as
 * platform/src/fs.rs `untrusted` and `untrusted_dir`): a state directory such
 * as the default /tmp/telemetry-UID/state (no HOME) that another user made
 * first would let them plant the consent file this user's clients decide by
 * and read the events spooled there. POSIX only: on Windows nothing is checked
 * (as before).
 * @module
 */

const fs = require('node:fs');
const nodePath = require('node:path');

/** @returns {boolean} whether there are owners and mode bits to check */
function checkable() {
  return process.platform !== 'win32' && typeof process.geteuid === 'function';
}

/**
 * The directory holding `p`, as Rust's Path::parent has it: none for "/" and
 * for a relative path of one component.
 * @param {string} p
 * @returns {string|null}
 */
function parentOf(p) {
  const c = nodePath.normalize(p).replace(/(.)\/+$/, '$1');
  const d = nodePath.dirname(c);
  return d === c || !c.includes('/') ? null : d;
}

/**
 * Why another user could change `p` (its target, if a link), as the end of a
 * sentence naming it; null if no one else could: it belongs to neither root
 * nor this process's user, or every user may write it (a sticky directory
 * aside, as /tmp). Throws when it cannot be looked at.
 * @param {string} p
 * @returns {string|null}
 */
function notTheUsers(p) {
  const st = fs.statSync(p);
  const me = /** @type {() => number} */ (process.geteuid)();
  const stickyDir = st.isDirectory() && (st.mode & 0o1000) !== 0;
  if (st.uid !== 0 && st.uid !== me) {
    const who = `neither root nor this process's user (uid ${me})`;
    return `belongs to uid ${st.uid}, ${who}, so another user could change it`;
  }
  if (st.mode & 0o002 && !stickyDir) return 'is writable by every user';
  return null;
}

/**
 * notTheUsers as a clause naming `p` as `what`; what cannot be checked is not
 * trusted.
 * @param {string} what "file" or "directory"
 * @param {string} p
 * @returns {string|null}
 */
function checked(what, p) {
  let why;
  try {
    why = notTheUsers(p);
  } catch (e) {
    why = `cannot be checked: ${e && /** @type {any} */ (e).message}`;
  }
  return why ? `the ${what} ${p} ${why}` : null;
}

/**
 * Why another user could have written the file at `path`: it, or the
 * directory holding it, fails notTheUsers; null when neither does.
 * @param {string} path
 * @returns {string|null}
 */
function untrusted(path) {
  if (!checkable()) return null;
  const dir = parentOf(path);
  return checked('file', path) || (dir === null ? null : checked('directory', dir));
}

/**
 * untrusted for a directory (null when it does not exist yet: it is then made
 * by this user): it belongs to another user or is writable by every user,
 * sticky or not (another user could still create the files this user has not
 * made yet), or the directory holding it fails notTheUsers.
 * @param {string} dir
 * @returns {string|null}
 */
function untrustedDir(dir) {
  if (!checkable()) return null;
  let st;
  try {
    st = fs.statSync(dir);
  } catch {
    return null;
  }
  let why;
  try {
    why = notTheUsers(dir) || (st.mode & 0o002 ? 'is writable by every user' : null);
  } catch (e) {
    why = `cannot be checked: ${e && /** @type {any} */ (e).message}`;
  }
  if (why) return `the directory ${dir} ${why}`;
  const parent = parentOf(dir);
  return parent === null ? null : checked('directory', parent);
}

/**
 * Why the user's consent file at `path` must not be believed, as a sentence
 * naming it: it exists, and it or the directory holding it could be another
 * user's (untrusted, untrustedDir); null when it may be believed or is
 * missing. Another user who made the default state directory first could
 * otherwise opt this user in. As the Rust client's consent::foreign.
 * @param {string} path
 * @returns {string|null}
 */
function consentNotBelieved(path) {
  if (!checkable()) return null;
  try {
    fs.lstatSync(path);
  } catch {
    return null;
  }
  const dir = parentOf(path);
  const why = untrusted(path) || (dir === null ? null : untrustedDir(dir));
  if (!why) return null;
  return `the consent file ${path} cannot be read (${why}: it is not believed, as someone else could have written it)`;
}

/**
 * Why events must not be spooled into the spool directory `dir` (made): it,
 * the directory holding it (STATE_DIR/spool) or the state directory `state`
 * (null: not checked) could be another user's (untrustedDir), who could read
 * the events or swap the directories; null when none could.
 * @param {string} dir
 * @param {string|null} [state]
 * @returns {string|null}
 */
function untrustedSpool(dir, state = null) {
  for (const d of [dir, parentOf(dir), state]) {
    const why = d === null ? null : untrustedDir(d);
    if (why) return `${why}, so another user could read the events spooled there`;
  }
  return null;
}

module.exports = { consentNotBelieved, untrusted, untrustedDir, untrustedSpool };
