'use strict';
/**
 * The portable spool (proto/src/paths.rs `spool_dir_for`, vectors/paths.json
 * "spool"): events for a daemon that could not be reached, one emit line per
 * file in STATE_DIR/spool/events-<hash>.d, which the daemon takes in when it
 * runs. Written with `.<id>.tmp` (0600, exclusive) then renamed to `<id>.json`,
 * so the daemon never sees half a line. Events dropped because the spool is
 * full are noted in its drop file (`spoolDropsFile`) for the daemon to count.
 * @module
 */

const fs = require('node:fs');
const { MAX_SPOOL_FILES, MAX_DROPS_BYTES, joinPath, spoolDropsFile } = require('./paths.cjs');
const { requests } = require('./wire.cjs');
const { errMessage } = require('./transport.cjs');
const { makeDirs, openRegular } = require('./files.cjs');

/**
 * @typedef {object} SpoolResult
 * @property {"spooled"|"dropped"|"failed"} status
 * @property {string} [file] the file written
 * @property {string} [reason] why not
 */

/**
 * Spool `events` (at least one) into `dir`.
 * @param {string} dir the spool dir for the socket
 * @param {import('./wire.cjs').WireEvent[]} events
 * @returns {SpoolResult}
 */
function spool(dir, events) {
  try {
    makeDirs(dir, 0o700);
    const entries = fs.readdirSync(dir);
    if (entries.length >= MAX_SPOOL_FILES) {
      noteDrop(dir, events);
      return { status: 'dropped', reason: `the spool ${dir} is full (${entries.length} files)` };
    }
    const id = events[0].id;
    const tmp = joinPath(dir, `.${id}.tmp`);
    const file = joinPath(dir, `${id}.json`);
    const fd = fs.openSync(tmp, 'wx', 0o600);
    try {
      fs.writeSync(fd, requests.emit(events, false));
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
    return { status: 'spooled', file };
  } catch (e) {
    return { status: 'failed', reason: `cannot spool into ${dir}: ${errMessage(e)}` };
  }
}

/**
 * Note `events`, dropped because the spool `dir` is full, for the daemon to
 * count: each one's product name and a newline, in one append (no lock) to
 * the drop file, created 0600, while it is under MAX_DROPS_BYTES. Best
 * effort: a drop that cannot be noted is still a drop, so errors are ignored.
 * @param {string} dir the spool dir
 * @param {import('./wire.cjs').WireEvent[]} events
 */
function noteDrop(dir, events) {
  try {
    const { O_WRONLY, O_APPEND, O_CREAT } = fs.constants;
    // Non-blocking, and only a regular file: a FIFO there must not hold the host.
    const fd = openRegular(spoolDropsFile(dir), O_WRONLY | O_APPEND | O_CREAT, 0o600);
    try {
      if (fs.fstatSync(fd).size < MAX_DROPS_BYTES) {
        fs.writeSync(fd, events.map((e) => `${e.product}\n`).join(''));
      }
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // Ignored: the event is dropped either way.
  }
}

module.exports = { spool, noteDrop };
