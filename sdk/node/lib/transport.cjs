'use strict';
/**
 * One request over the daemon's Unix socket within a time budget: connect,
 * write one line, and (unless told not to) read one reply line. A single
 * unref'd timer destroys the socket when the budget runs out, so a pending
 * call never outlives its budget nor keeps the host's process alive past it.
 * @module
 */

const fs = require('node:fs');
const net = require('node:net');
const { MAX_LINE_LEN, decodeResponse } = require('./wire.cjs');

/**
 * Connections one client has open to the daemon at once, at most. Each emit
 * opens one; a CLI that fires thousands at once (`Promise.all`) would
 * otherwise pass the daemon's connection limit (512 by default), be refused
 * `busy`, spool them all and drop them past the spool's 1,000 files. The
 * rest wait their turn, within their own budget.
 */
const MAX_IN_FLIGHT = 16;

/** One client's connection slots (see {@link MAX_IN_FLIGHT}). */
class Slots {
  constructor() {
    this.inFlight = 0;
    /** @type {(() => boolean)[]} */
    this.waiting = [];
  }

  /**
   * Run `connect` now if a slot is free (true), else when one is handed on
   * (false: it waits).
   * @param {() => boolean} connect false when it no longer wants the slot
   * @returns {boolean}
   */
  take(connect) {
    if (this.inFlight < MAX_IN_FLIGHT) {
      this.inFlight++;
      // Not taken after all (a budget of 0): hand it on.
      if (!connect()) this.release();
      return true;
    }
    // Keeps no event loop alive by itself: a slot is only waited for while
    // another exchange holds a connection open.
    this.waiting.push(connect);
    return false;
  }

  /**
   * Hand a slot to the next waiting exchange whose budget has not run
   * out, or free it. (A loop, not a call from each to the next: thousands
   * may have given up waiting.)
   */
  release() {
    for (;;) {
      const next = this.waiting.shift();
      if (!next) {
        this.inFlight--;
        return;
      }
      if (next()) return;
    }
  }
}

/**
 * @typedef {object} Exchange
 * @property {boolean} ok whether the line was written (and, when a reply was
 *   wanted, a reply line read)
 * @property {import('./wire.cjs').Reply} [reply] the decoded reply
 * @property {"connect"|"write"|"read"} [stage] where it failed
 * @property {string} [code] errno-style code (ENOENT, ECONNREFUSED, ETIMEDOUT, ...)
 * @property {string} [message] why, for people
 */

/**
 * Send `line` to the socket at `path` and read one reply line, all within
 * `timeoutMs`. Resolves, never rejects.
 * @param {string} path
 * @param {string} line one request line with its newline
 * @param {number} timeoutMs
 * @param {boolean} [wantReply] false: resolve once the line is written
 * @param {Slots} [slots] the calling client's connection slots
 * @returns {Promise<Exchange>}
 */
function exchange(path, line, timeoutMs, wantReply = true, slots = new Slots()) {
  return new Promise((resolve) => {
    let done = false;
    let holdsSlot = false;
    let waitedForSlot = false;
    // A slot is waited for half the budget at most, keeping the rest to
    // spool in: in a burst against a hung daemon every waiter gives up at
    // once, and their files are written one after another.
    const slotWaitMs = Math.max(0, timeoutMs) / 2;
    const busy = () => `this client's ${MAX_IN_FLIGHT} connections to telemetryd were busy for ${slotWaitMs} ms`;
    const expires = Date.now() + Math.max(0, timeoutMs);
    // A slot handed on at the very end of the wait, before its timer has
    // fired, is passed on too: it would only connect to be cut off.
    const slotExpires = Date.now() + slotWaitMs;
    let stage = /** @type {"connect"|"write"|"read"} */ ('connect');
    /** @type {net.Socket|null} */
    let sock = null;
    /** @type {Buffer[]} */
    const chunks = [];
    let buffered = 0;
    /** @param {Exchange} result */
    const finish = (result) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (sock) sock.destroy();
      if (holdsSlot) slots.release();
      resolve(result);
    };
    const onTimeout = () => {
      finish({
        ok: false,
        stage,
        code: 'ETIMEDOUT',
        message: waitedForSlot && !holdsSlot
          ? busy()
          : `telemetryd at ${path} did not ${stage === 'read' ? 'reply' : stage} within ${timeoutMs} ms`,
      });
    };
    /**
     * The one timer, set to fire at `at` (Date.now() based).
     * @param {number} at
     * @returns {NodeJS.Timeout}
     */
    const timerAt = (at) => {
      const t = setTimeout(onTimeout, Math.max(0, at - Date.now()));
      t.unref();
      return t;
    };
    let timer = timerAt(expires);
    // Given a slot (at once, or handed on by `release`): connect; false
    // when the budget ran out while it waited (the slot goes on).
    const connect = () => {
      if (done) return false;
      if (Date.now() >= (waitedForSlot ? slotExpires : expires)) {
        finish({
          ok: false,
          stage,
          code: 'ETIMEDOUT',
          message: waitedForSlot ? busy() : `telemetryd at ${path} did not connect within ${timeoutMs} ms`,
        });
        return false;
      }
      holdsSlot = true;
      if (waitedForSlot) {
        // Handed on within the wait: the rest of the budget is its own.
        clearTimeout(timer);
        timer = timerAt(expires);
      }
      try {
        sock = net.createConnection({ path });
      } catch (e) {
        finish({ ok: false, stage, code: errCode(e), message: errMessage(e) });
        return true;
      }
      sock.on('error', (e) => {
        finish({ ok: false, stage, code: errCode(e), message: `${stage} ${path}: ${errMessage(e)}` });
      });
      sock.on('close', () => {
        finish({
          ok: false,
          stage,
          code: 'ECONNRESET',
          message: `telemetryd at ${path} closed the connection without a reply`,
        });
      });
      sock.on('connect', () => {
        const stranger = servedByStranger(path);
        if (stranger) {
          finish({ ok: false, stage, code: 'EACCES', message: stranger });
          return;
        }
        stage = 'write';
        /** @type {net.Socket} */ (sock).write(line, (err) => {
          if (err) return; // reported by 'error'
          stage = 'read';
          if (!wantReply) finish({ ok: true });
        });
      });
      sock.on('data', (chunk) => {
        const nl = chunk.indexOf(10);
        if (nl < 0) {
          chunks.push(chunk);
          buffered += chunk.length;
          if (buffered > MAX_LINE_LEN) {
            finish({ ok: false, stage: 'read', code: 'EMSGSIZE', message: `reply longer than ${MAX_LINE_LEN} bytes` });
          }
          return;
        }
        chunks.push(chunk.subarray(0, nl));
        finish({ ok: true, reply: decodeResponse(Buffer.concat(chunks).toString('utf8')) });
      });
      return true;
    };
    waitedForSlot = !slots.take(connect);
    if (waitedForSlot) {
      clearTimeout(timer);
      timer = timerAt(slotExpires);
    }
  });
}

/**
 * Why the socket at `path` must not be written to, or null. Node cannot
 * read a connected socket's peer, so the socket file's owner stands in for
 * it: whoever binds a socket owns its file. One owned by neither this user
 * nor root was made by another user (who made /tmp/telemetry-<uid> first),
 * and would receive this user's events. Checked after connecting, so a file
 * swapped in before the connect is seen; a link in the socket's place is
 * the link's owner's. (Windows has no uids: not checked.)
 * @param {string} path
 * @returns {string|null}
 */
function servedByStranger(path) {
  if (typeof process.geteuid !== 'function') return null;
  let st;
  try {
    st = fs.lstatSync(path);
  } catch (e) {
    return `cannot check who serves ${path}: ${errMessage(e)}`;
  }
  const me = process.geteuid();
  if (st.uid === me || st.uid === 0) return null;
  return `${path} belongs to uid ${st.uid}, neither this user (${me}) nor root: not sending to it`;
}

/**
 * @param {unknown} e
 * @returns {string}
 */
function errCode(e) {
  return e && typeof e === 'object' && 'code' in e && typeof e.code === 'string' ? e.code : 'EIO';
}

/**
 * @param {unknown} e
 * @returns {string}
 */
function errMessage(e) {
  return e && typeof e === 'object' && 'message' in e ? String(e.message) : String(e);
}

module.exports = { exchange, errCode, errMessage, Slots };
