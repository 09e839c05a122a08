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
const { untrustedSpool } = require('./trust.cjs');

/**
 * @typedef {object} SpoolResult
 * @property {"spooled"|"dropped"|"failed"} status
 * @property {string} [file] the file written
 * @property {string} [reason] why not
 */

/**
 * Spool `events` (at least one) into `dir`, counting its entries first.
 * @param {string} dir the spool dir for the socket
 * @param {import('./wire.cjs').WireEvent[]} events
 * @returns {SpoolResult}
 */
function spool(dir, events) {
  return write(dir, events, null);
}

/**
 * @param {string} dir
 * @param {import('./wire.cjs').WireEvent[]} events
 * @param {Gate|null} gate the dir's gate, when its count may be trusted
 * @param {string|null} [state] the state dir holding the spool, checked too (see untrustedSpool)
 * @returns {SpoolResult}
 */
function write(dir, events, gate, state = null) {
  try {
    makeDirs(dir, 0o700);
    // Not into a directory another user made or can write (the default
    // /tmp/telemetry-UID/state without HOME, made first by someone else):
    // they could read the events. Failed, not dropped: nothing is noted there.
    const theirs = untrustedSpool(dir, state);
    if (theirs) return { status: 'failed', reason: `cannot spool into ${dir}: ${theirs}` };
    let n;
    if (gate && Date.now() - gate.counted <= RECOUNT_MS) {
      n = gate.n;
    } else {
      n = fs.readdirSync(dir).length;
      if (gate) Object.assign(gate, { n, counted: Date.now() });
    }
    if (n >= MAX_SPOOL_FILES) {
      noteDrop(dir, events);
      return { status: 'dropped', reason: `the spool ${dir} is full (${n} files)` };
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
    if (gate) gate.n++;
    return { status: 'spooled', file };
  } catch (e) {
    return { status: 'failed', reason: `cannot spool into ${dir}: ${errMessage(e)}` };
  }
}

/**
 * How long the calls that waited for their turn trust a count of the spool's
 * entries, in ms: in a burst, reading 1,000 names before every write would
 * cost more than the write. A call that finds the spool free counts again.
 */
const RECOUNT_MS = 100;

/**
 * @typedef {object} Job
 * @property {import('./wire.cjs').WireEvent[]} events
 * @property {number} until Date.now() past which it is dropped, not written
 * @property {string|null} state the state dir holding the spool
 * @property {(r: SpoolResult) => void} resolve
 */

/**
 * @typedef {object} Gate the writes waiting for one spool dir, while one is
 *   under way; and its count of entries (see RECOUNT_MS)
 * @property {Job[]} queue
 * @property {number} n
 * @property {number} counted
 */

/** @type {Map<string, Gate>} */
const gates = new Map();

/**
 * Spool `events` into `dir` in turn with this process's other calls: at once
 * when none is under way, else a few writes per turn of the event loop, so that
 * a burst of calls that gave up on a hung daemon together does not block the
 * host's event loop while each writes its file (500 at once held it 0.2 s),
 * and a call still waiting at `until` drops its events (noted in the drop
 * file, all such at once) rather than outlive its budget.
 * @param {string} dir
 * @param {import('./wire.cjs').WireEvent[]} events
 * @param {number} until
 * @param {string|null} [state] the state dir holding the spool, checked too
 * @returns {Promise<SpoolResult>}
 */
function spoolInTurn(dir, events, until, state = null) {
  const gate = gates.get(dir);
  if (gate) return new Promise((resolve) => gate.queue.push({ events, until, state, resolve }));
  const fresh = { queue: [], n: 0, counted: -Infinity };
  gates.set(dir, fresh);
  const r = write(dir, events, fresh, state);
  setImmediate(nextInTurn, dir, fresh);
  return Promise.resolve(r);
}

/**
 * Write the next waiting job of `dir`, after dropping those past their time.
 * @param {string} dir
 * @param {Gate} gate
 */
function nextInTurn(dir, gate) {
  const now = Date.now();
  const late = gate.queue.filter((j) => now > j.until);
  if (late.length > 0) {
    gate.queue = gate.queue.filter((j) => now <= j.until);
    noteDrop(dir, late.flatMap((j) => j.events));
    const reason = `the spool ${dir} was busy with this program's other events past the budget`;
    for (const j of late) j.resolve({ status: 'dropped', reason });
  }
  // A few writes per turn, for a millisecond or two at most.
  while (gate.queue.length > 0 && Date.now() - now < TURN_MS) {
    const job = /** @type {Job} */ (gate.queue.shift());
    job.resolve(write(dir, job.events, gate, job.state));
  }
  if (gate.queue.length === 0) {
    gates.delete(dir);
    return;
  }
  setImmediate(nextInTurn, dir, gate);
}

/** How long one turn of the event loop writes spool files, in ms, at most (and at least one). */
const TURN_MS = 2;

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
    if (untrustedSpool(dir)) return;
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

module.exports = { spool, spoolInTurn, noteDrop };
