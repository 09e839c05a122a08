'use strict';
/**
 * File steps that cannot hold the host: making directories in a bounded
 * number of steps, and opening the state dir's files (the autostart stamp
 * and log, the spool's drop file) so that whatever stands in their place
 * fails at once instead of blocking.
 * @module
 */

const fs = require('node:fs');
const nodePath = require('node:path');

/**
 * An error with a `code`, as the fs module's own.
 * @param {string} code
 * @param {string} message
 * @returns {Error}
 */
function fsError(code, message) {
  return Object.assign(new Error(`${code}: ${message}`), { code });
}

/**
 * `mkdir -p` giving every directory it makes `mode`. Not Node's own
 * `mkdirSync(p, {recursive: true})`: where a mkdir fails with ENOENT under an
 * existing parent (anywhere under /proc) that one retries forever, at full
 * CPU. Here each missing component is made once, by a plain mkdir, from the
 * first existing ancestor down: at most one step per component, and any
 * error but EEXIST (on a directory) fails at once.
 * @param {string} path
 * @param {number} [mode]
 */
function makeDirs(path, mode = 0o700) {
  /** @type {string[]} */
  const missing = [];
  for (let p = nodePath.resolve(path); ; ) {
    /** @type {fs.Stats|undefined} */
    let st;
    try {
      st = fs.statSync(p);
    } catch {
      // missing (or not to be looked at: its mkdir below says why)
    }
    if (st) {
      if (missing.length === 0 && !st.isDirectory()) throw fsError('ENOTDIR', `${p} is not a directory`);
      break;
    }
    missing.push(p);
    const parent = nodePath.dirname(p);
    if (parent === p) break;
    p = parent;
  }
  for (let i = missing.length - 1; i >= 0; i--) {
    try {
      fs.mkdirSync(missing[i], { mode });
    } catch (e) {
      // Made meanwhile by another process: fine, if it is a directory.
      if (/** @type {any} */ (e).code !== 'EEXIST' || !fs.statSync(missing[i]).isDirectory()) throw e;
    }
  }
}

/**
 * Open `path` with `flags` (numeric, from fs.constants) plus O_NONBLOCK, and
 * refuse (closing it) anything but a regular file. A FIFO in its place never
 * holds the host: opened for writing with no reader it fails at once
 * (ENXIO), and one that opens is refused before anything reads or writes it.
 * @param {string} path
 * @param {number} flags
 * @param {number} [mode]
 * @returns {number} the file descriptor
 */
function openRegular(path, flags, mode = 0o600) {
  const fd = fs.openSync(path, flags | (fs.constants.O_NONBLOCK || 0), mode);
  try {
    if (!fs.fstatSync(fd).isFile()) throw fsError('EFTYPE', `${path} is not a regular file`);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  return fd;
}

module.exports = { makeDirs, openRegular };
