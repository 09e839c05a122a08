'use strict';
/**
 * The client a host CLI creates: every call checks consent from the files and
 * the environment first, never throws, never prints (except the prompt), and
 * resolves within its time budget with an outcome object.
 * @module
 */

const { statSync } = require('node:fs');
const tty = require('node:tty');
const { joinPath, nonEmpty, resolvePaths, spoolDirFor } = require('./paths.cjs');
const { combine, envOptOutVar, entryFor, parseMode, unreadableConsentFile } = require('./consent.cjs');
const { shown, checkName, checkBuild, checkData } = require('./validate.cjs');
const { FINAL_CODES, MAX_LINE_LEN, makeEvent, readAck, requests } = require('./wire.cjs');
const { exchange, errMessage, Slots } = require('./transport.cjs');
const { spoolInTurn } = require('./spool.cjs');
const { autostart } = require('./autostart.cjs');
const { readSystem, readUser, recordConsent } = require('./consentfile.cjs');
const { consentNotBelieved } = require('./trust.cjs');

/** The budget of a call when none is given, in ms. */
const DEFAULT_TIMEOUT_MS = 100;

/**
 * How long past its budget a call may wait for its turn to write the spool,
 * in ms: after that its event is dropped (and noted), so that a burst of
 * calls that gave up on a hung daemon together does not outlive the budget
 * writing their files one after another (see spoolInTurn).
 */
const SPOOL_GRACE_MS = 5;

/** The variable that gives the build when the `build` option is not given (as for telemetry-emit). */
const BUILD_VAR = 'TELEMETRY_BUILD';

/**
 * The generic consent question (telemetryctl's wording).
 * @param {string} product
 * @returns {string}
 */
function genericPrompt(product) {
  return (
    `${product} would like to collect anonymous usage telemetry to learn which features are used.\n` +
    'Each event holds: the event name, a little catalogued data, a UTC timestamp, an anonymous\n' +
    "machine ID (a SHA-256 hash, never your machine's real ID), your OS and the version.\n" +
    'No names, paths, IP addresses or host names are collected.'
  );
}

/**
 * Always shown after the question's text: how to change the answer later.
 * @param {string} product
 * @returns {string}
 */
function howToChange(product) {
  return (
    `Change your mind at any time: \`telemetryctl consent ${product} off\` (or \`local\`: keep it on\n` +
    'this machine only); see exactly what is kept: `telemetryctl show`.'
  );
}

/**
 * Why a path taken from the environment cannot be used, or null. Node
 * decodes the environment as UTF-8 and puts U+FFFD for bytes that are not
 * (`TELEMETRY_STATE_DIR=/tmp/\xff`), so such a path names another file than
 * the user's (the Go and Python SDKs keep the bytes): writing there would
 * make a stray directory and report an event spooled where no daemon looks.
 * @param {string} what
 * @param {string} p
 * @returns {string|null}
 */
function notFromEnv(what, p) {
  if (!p.includes('\uFFFD')) return null;
  return (
    `the ${what} from the environment, ${JSON.stringify(p)}, is not valid UTF-8, ` +
    'which Node cannot read back (U+FFFD stands for the bytes it could not decode)'
  );
}

/** Longest budget honoured, in ms: a day. Node's timers take at most 2^31-1 ms and
 * fire at once (with a warning on stderr) past that. */
const MAX_TIMEOUT_MS = 24 * 3600 * 1000;

/**
 * A positive budget in ms from an option, else the fallback; at most a day.
 * @param {unknown} v
 * @param {number} fallback
 * @returns {number}
 */
function budgetOf(v, fallback) {
  // 0 (or less) means the default, as in the Go and Python SDKs.
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? Math.min(v, MAX_TIMEOUT_MS) : fallback;
}

/**
 * A path's components as Rust's `Path::components` has them on Unix: repeated
 * and trailing separators and any `.` but a leading one do not count;
 * nothing is resolved.
 * @param {string} p
 * @returns {string[]}
 */
function pathComponents(p) {
  /** @type {string[]} */
  const out = p.startsWith('/') ? ['/'] : [];
  p.split('/').forEach((part, i) => {
    if (part === '' || (part === '.' && (i > 0 || out.length > 0))) return;
    out.push(part);
  });
  return out;
}

/**
 * Whether two paths name the same file as telemetryctl compares them: equal
 * component by component (Rust's `Path` equality), else the same file on disk
 * reached another way (a linked directory). A file that cannot be looked at is
 * not taken for the same.
 * @param {string} a
 * @param {string} b
 * @returns {boolean}
 */
function samePath(a, b) {
  const x = pathComponents(a);
  const y = pathComponents(b);
  if (x.length === y.length && x.every((c, i) => c === y[i])) return true;
  try {
    const s = statSync(a, { bigint: true });
    const t = statSync(b, { bigint: true });
    return s.dev === t.dev && s.ino === t.ino;
  } catch {
    return false;
  }
}

/**
 * Read one line from stdin (the answer to the prompt); null when reading failed.
 * @returns {Promise<string|null>}
 */
function readAnswer() {
  return new Promise((resolve) => {
    const input = process.stdin;
    /** @type {Buffer[]} */
    const chunks = [];
    /** @param {string|null} v */
    const done = (v) => {
      input.off('data', onData);
      input.off('end', onEnd);
      input.off('error', onError);
      input.pause();
      resolve(v);
    };
    // Buffers, not setEncoding: the host's stdin is left as it was.
    /** @param {Buffer|string} chunk */
    const onData = (chunk) => {
      chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
      const all = Buffer.concat(chunks);
      const nl = all.indexOf(10);
      if (nl < 0) return;
      done(all.subarray(0, nl).toString('utf8'));
      // What the user typed ahead past the answer is the host's: put back
      // for its next read (stdin is paused, so nothing is lost meanwhile).
      if (nl + 1 < all.length) input.unshift(all.subarray(nl + 1));
    };
    const onEnd = () => done(Buffer.concat(chunks).toString('utf8'));
    const onError = () => done(null);
    try {
      input.on('data', onData);
      input.once('end', onEnd);
      input.once('error', onError);
      input.resume();
    } catch {
      done(null);
    }
  });
}

/**
 * Create a client for one product. Never throws: bad options surface as
 * `refused` outcomes of the calls.
 * @param {import('../index').ClientOptions} [options]
 * @returns {import('../index').Client}
 */
function createClient(options) {
  try {
    return makeClient(options && typeof options === 'object' ? { ...options } : {});
  } catch {
    // Options whose getters throw: a client that refuses every call.
    return makeClient({});
  }
}

/**
 * @param {any} opts a copy of the options
 * @returns {import('../index').Client}
 */
function makeClient(opts) {
  const product = opts.product;
  const timeoutMs = budgetOf(opts.timeoutMs, DEFAULT_TIMEOUT_MS);
  // Emits past 16 at once wait their turn (within their budget) rather
  // than open connections past the daemon's limit.
  const slots = new Slots();

  /** @returns {Record<string, string|undefined>} */
  const env = () => (opts.env && typeof opts.env === 'object' ? opts.env : process.env);

  // As telemetry-emit: an explicit build, else a non-empty TELEMETRY_BUILD
  // (read once, here), else "unknown". An explicit one is checked as given.
  const buildGiven = opts.build !== undefined && opts.build !== null && opts.build !== '';
  const buildFromEnv = buildGiven ? undefined : nonEmpty(env(), BUILD_VAR);
  const build = buildGiven ? opts.build : buildFromEnv !== undefined ? buildFromEnv : 'unknown';

  /**
   * Why the build is not valid (naming TELEMETRY_BUILD when it came from there), or null.
   * @returns {string|null}
   */
  const badBuild = () => {
    const bad = checkBuild(build);
    return bad && buildFromEnv !== undefined ? `${bad} (from ${BUILD_VAR})` : bad;
  };

  /** @returns {import('./paths.cjs').Paths} */
  const paths = () => {
    const p = resolvePaths(env());
    const str = (/** @type {unknown} */ v) => (typeof v === 'string' && v !== '' ? v : undefined);
    p.socket = str(opts.socket) || p.socket;
    p.stateDir = str(opts.stateDir) || p.stateDir;
    // An option beats its variable, which beats what is derived from the state dir.
    p.consentFile =
      str(opts.consentFile) || nonEmpty(env(), 'TELEMETRY_CONSENT_FILE') || joinPath(p.stateDir, 'consent');
    p.systemConsentFile = str(opts.systemConsentFile) || p.systemConsentFile;
    p.spoolDir = spoolDirFor(p.stateDir, p.socket);
    return p;
  };

  /**
   * Why each path that came from the environment cannot be used (see
   * notFromEnv); an option is used as given.
   * @param {import('./paths.cjs').Paths} p
   */
  const unusable = (p) => {
    const str = (/** @type {unknown} */ v) => typeof v === 'string' && v !== '';
    return {
      socket: str(opts.socket) ? null : notFromEnv('socket', p.socket),
      stateDir: str(opts.stateDir) ? null : notFromEnv('state dir', p.stateDir),
      consentFile: str(opts.consentFile) ? null : notFromEnv('consent file', p.consentFile),
      systemConsentFile: str(opts.systemConsentFile) ? null : notFromEnv('system consent file', p.systemConsentFile),
    };
  };

  /** @param {import('./paths.cjs').Paths} p */
  const decide = (p) =>
    combine(
      String(product),
      // Fail closed: the administrator's file is not known to be missing.
      unusable(p).systemConsentFile ? unreadableConsentFile() : readSystem(p.systemConsentFile),
      envOptOutVar(env()) !== null,
      readUser(p.consentFile),
    );

  /**
   * @param {unknown} e
   * @returns {{status: "failed", reason: string}}
   */
  const failed = (e) => ({ status: 'failed', reason: `unexpected: ${errMessage(e)}` });

  /**
   * Emit one event, with or without waiting for the daemon's acknowledgement.
   * @param {unknown} event
   * @param {unknown} data
   * @param {boolean} ack
   * @param {unknown} callOpts
   * @returns {Promise<import('../index').EmitOutcome>}
   */
  async function send(event, data, ack, callOpts) {
    try {
      // From the call's start: reading the consent files (a FIFO, a slow
      // mount) is spent from the same budget, as in the Rust client.
      const started = Date.now();
      const budget = budgetOf(callOpts && /** @type {any} */ (callOpts).timeoutMs, timeoutMs);
      const left = () => Math.max(0, budget - (Date.now() - started));
      // Consent first, as the other SDKs: with it off, even a bad event is
      // `off` (nothing was going to happen to it).
      // But a product name that is not one first: nobody can have consented
      // for it, and `off` would pass the host's typo off as the user's no.
      const badProduct = checkName('product', product);
      if (badProduct) return { status: 'refused', code: 'invalid', message: badProduct };
      const p = paths();
      const decision = decide(p);
      if (decision.mode === 'off') {
        const why = consentNotBelieved(p.consentFile);
        return why ? { status: 'off', layer: decision.layer, reason: why } : { status: 'off', layer: decision.layer };
      }
      const bad = checkName('event', event) || badBuild();
      if (bad) return { status: 'refused', code: 'invalid', message: bad };
      const checked = checkData(data);
      if ('error' in checked) return { status: 'refused', code: 'invalid', message: checked.error };
      const ev = makeEvent(
        /** @type {string} */ (product),
        /** @type {string} */ (event),
        /** @type {string} */ (build),
        checked.data,
      );
      const line = requests.emit([ev], ack);
      if (Buffer.byteLength(line) > MAX_LINE_LEN) {
        return {
          status: 'refused',
          code: 'frame_too_large',
          message: `the event is over ${MAX_LINE_LEN} bytes`,
          id: ev.id,
        };
      }
      const fromEnv = unusable(p);
      if (fromEnv.socket) return { status: 'failed', id: ev.id, reason: `${fromEnv.socket}: not sent, nor spooled` };
      const x = await exchange(p.socket, line, left(), ack, slots);
      let why;
      let nothingServes = false;
      if (x.ok && !ack) return { status: 'queued', id: ev.id };
      if (x.ok && x.reply) {
        const r = x.reply;
        const a = r.kind === 'ack' ? readAck(r.body) : null;
        if (a && !('problem' in a)) {
          return { status: 'acknowledged', id: ev.id, accepted: a.accepted, duplicates: a.duplicates };
        }
        if (r.kind === 'error' && FINAL_CODES.includes(r.body.code)) {
          return { status: 'refused', code: r.body.code, message: r.body.message, id: ev.id };
        }
        why =
          a && 'problem' in a
            ? `cannot read telemetryd's reply: ${a.problem}`
            : r.kind === 'error'
              ? `telemetryd: ${r.body.code}: ${r.body.message}`
              : `unexpected reply (${r.kind})`;
      } else {
        why = x.message || 'no reply';
        nothingServes = x.stage === 'connect' && (x.code === 'ENOENT' || x.code === 'ECONNREFUSED');
      }
      // Not in a directory nobody reads (nor start a daemon with it).
      if (fromEnv.stateDir) return { status: 'failed', id: ev.id, reason: `${why}; ${fromEnv.stateDir}: not spooled` };
      const s = await spoolInTurn(p.spoolDir, [ev], started + budget + SPOOL_GRACE_MS, p.stateDir);
      /** @type {any} */
      const out =
        s.status === 'spooled'
          ? { status: 'spooled', id: ev.id, file: s.file, reason: why }
          : { status: s.status, id: ev.id, reason: `${why}; ${s.reason}` };
      // Not once the budget is spent: the host comes first (the next call
      // starts it).
      if (nothingServes && opts.autostart !== false && left() > 0) {
        // With this client's paths (options may have set them), so the
        // daemon takes in the spool and reads the consent files this client
        // used, as the Go SDK does.
        out.autostart = autostart(
          p.socket,
          p.stateDir,
          {
            ...env(),
            TELEMETRY_STATE_DIR: p.stateDir,
            TELEMETRY_CONSENT_FILE: p.consentFile,
            TELEMETRY_SYSTEM_CONSENT_FILE: p.systemConsentFile,
          },
          typeof opts.daemon === 'string' && opts.daemon !== '' ? opts.daemon : undefined,
        );
      }
      return out;
    } catch (e) {
      return failed(e);
    }
  }

  /**
   * Ask the daemon for its status within `budget`.
   * @param {number} budget
   * @returns {Promise<import('../index').StatusOutcome>}
   */
  async function askStatus(budget) {
    const x = await exchange(paths().socket, requests.status(), budget, true);
    if (!x.ok || !x.reply) return { status: 'failed', reason: x.message || 'no reply', code: x.code };
    if (x.reply.kind === 'status') return { status: 'ok', report: x.reply.body };
    if (x.reply.kind === 'error') return { status: 'refused', code: x.reply.body.code, message: x.reply.body.message };
    return { status: 'failed', reason: `unexpected reply (${x.reply.kind})` };
  }

  /**
   * Record a decision and tell the daemon, within `budget`.
   * @param {unknown} modeArg
   * @param {number} budget
   * @returns {Promise<import('../index').SetConsentOutcome>}
   */
  async function recordAndNotify(modeArg, budget) {
    const start = Date.now();
    const mode = parseMode(modeArg);
    if (mode === null) {
      return {
        status: 'refused',
        code: 'invalid',
        message: `mode ${shown(modeArg)} is not on, off or local`,
      };
    }
    const bad = checkName('product', product);
    if (bad) return { status: 'refused', code: 'invalid', message: bad };
    const p = paths();
    const badFile = unusable(p).consentFile;
    if (badFile) return { status: 'failed', reason: `${badFile}: nothing written` };
    // The decision is for the catalogue as it is now: its version comes from
    // the daemon, which reads the manifests (none known without a daemon).
    /** @type {number|null} */
    let version = null;
    if (mode !== 'off') {
      const s = await askStatus(Math.max(1, Math.floor(budget / 2)));
      if (s.status === 'ok' && s.report && Array.isArray(s.report.consent)) {
        const pc = s.report.consent.find((/** @type {any} */ c) => c && c.product === product && !c.manifest_error);
        const v = pc ? pc.version : undefined;
        if (typeof v === 'number' && Number.isInteger(v) && v > 0) version = v;
      }
    }
    const remaining = () => Math.max(0, budget - (Date.now() - start));
    const written = await recordConsent(
      p.consentFile,
      /** @type {string} */ (product),
      mode,
      version,
      // A decision must not be lost to a short budget: wait at least a second
      // for another writer to finish (as the Go SDK does; the Rust client
      // waits as long as it takes).
      Math.max(remaining(), 1000),
    );
    if (!written.ok) return { status: 'failed', reason: written.reason };
    const buildForDaemon = checkBuild(build) ? 'unknown' : /** @type {string} */ (build);
    /** @type {any} */
    const out = { status: 'recorded', mode, file: p.consentFile, daemonNotified: false };
    if (written.kept !== undefined) {
      out.kept = written.kept;
      out.warning =
        `${p.consentFile} could not be read, so it was kept as ${written.kept} ` +
        'and a new one holds this decision';
    }
    const x = await exchange(
      p.socket,
      requests.consentChanged(/** @type {string} */ (product), buildForDaemon),
      Math.max(remaining(), 1),
      true,
    );
    if (x.ok && x.reply && x.reply.kind === 'consent_applied') {
      const daemonFile = x.reply.body && x.reply.body.file;
      if (typeof daemonFile === 'string' && daemonFile !== '' && !samePath(daemonFile, p.consentFile)) {
        // Written, but the running daemon reads another file: it keeps the
        // decision it had (an off is not applied), as telemetryctl fails.
        out.status = 'not_applied';
        out.daemonFile = daemonFile;
        out.message =
          `telemetryd reads consent from ${daemonFile}, but this program wrote ${p.consentFile}; ` +
          `set TELEMETRY_CONSENT_FILE=${daemonFile} (for this program, telemetryctl and telemetry-emit) ` +
          'so they agree, then try again';
        out.applied = x.reply.body;
      } else {
        out.daemonNotified = true;
        out.applied = x.reply.body;
      }
    } else if (x.ok && x.reply && x.reply.kind === 'error') {
      out.daemonError = `${x.reply.body.code}: ${x.reply.body.message}`;
    } else {
      out.daemonError = x.message || `unexpected reply (${x.reply && x.reply.kind})`;
    }
    out.effective = decide(p);
    return out;
  }

  return Object.freeze({
    product,
    build,
    timeoutMs,
    paths() {
      try {
        return paths();
      } catch {
        return null;
      }
    },
    emit: (/** @type {unknown} */ event, /** @type {unknown} */ data, /** @type {unknown} */ o) =>
      send(event, data, true, o),
    emitNoWait: (/** @type {unknown} */ event, /** @type {unknown} */ data, /** @type {unknown} */ o) =>
      send(event, data, false, o),
    /** @returns {Promise<import('../index').ConsentOutcome>} */
    async consent() {
      try {
        const bad = checkName('product', product);
        if (bad) return { mode: 'off', layer: 'default', error: bad };
        const p = paths();
        const d = decide(p);
        /** @type {any} */
        const out = { mode: d.mode, layer: d.layer };
        if (d.layer === 'environment') out.variable = envOptOutVar(env());
        const why = consentNotBelieved(p.consentFile);
        if (why) out.error = why;
        return out;
      } catch (e) {
        return { mode: 'off', layer: 'default', error: errMessage(e) };
      }
    },
    /** @returns {Promise<import('../index').SetConsentOutcome>} */
    async setConsent(/** @type {unknown} */ mode, /** @type {unknown} */ o) {
      try {
        return await recordAndNotify(mode, budgetOf(o && /** @type {any} */ (o).timeoutMs, timeoutMs));
      } catch (e) {
        return failed(e);
      }
    },
    /** @returns {Promise<import('../index').PromptOutcome>} */
    async prompt(/** @type {unknown} */ text, /** @type {unknown} */ o) {
      try {
        const bad = checkName('product', product);
        if (bad) return { status: 'refused', code: 'invalid', message: bad };
        const p = paths();
        const mine = entryFor(readUser(p.consentFile), /** @type {string} */ (product));
        if (mine) return { status: 'already_decided', mode: mine.mode };
        const d = decide(p);
        if (d.layer === 'system' || d.layer === 'environment') return { status: 'forced_off', layer: d.layer };
        // The question goes to stderr and the answer comes from stdin.
        if (!tty.isatty(0) || !tty.isatty(2)) return { status: 'not_a_terminal' };
        const question =
          typeof text === 'string' && text.trim() !== '' ? text : genericPrompt(/** @type {string} */ (product));
        process.stderr.write(
          `${question.trimEnd()}\n${howToChange(/** @type {string} */ (product))}\n\n` +
            `Enable anonymous telemetry for ${product}? [y/N] `,
        );
        const answer = await readAnswer();
        if (answer === null) return { status: 'no_answer' };
        // Enter, or end of input, means the default: No.
        const yes = ['y', 'yes'].includes(answer.trim().toLowerCase());
        const mode = yes ? 'on' : 'off';
        const recorded = await recordAndNotify(mode, budgetOf(o && /** @type {any} */ (o).timeoutMs, timeoutMs));
        return { status: 'asked', mode, recorded };
      } catch (e) {
        return failed(e);
      }
    },
    /** @returns {Promise<import('../index').StatusOutcome>} */
    async status(/** @type {unknown} */ o) {
      try {
        return await askStatus(budgetOf(o && /** @type {any} */ (o).timeoutMs, timeoutMs));
      } catch (e) {
        return failed(e);
      }
    },
  });
}

module.exports = { DEFAULT_TIMEOUT_MS, createClient, genericPrompt, howToChange };
