'use strict';
/**
 * Where things are: the daemon's socket, the state dir, the consent files and
 * the portable spool dir. Pure functions of an environment map, a uid and an
 * OS name, as proto/src/paths.rs computes them (checked against
 * vectors/paths.json).
 * @module
 */

/** File name of the daemon's socket inside its runtime directory. */
const SOCKET_FILE = 'telemetryd.sock';
/** The administrator's consent file when TELEMETRY_SYSTEM_CONSENT_FILE is unset. */
const SYSTEM_CONSENT_FILE = '/etc/telemetry/consent';
/** Most entries a writer leaves in a spool dir before it drops events. */
const MAX_SPOOL_FILES = 1000;
/** Largest drop file (`spoolDropsFile`) a writer appends to; past it, drops are no longer noted. */
const MAX_DROPS_BYTES = 64 * 1024;

/**
 * A variable's value, or undefined when it is unset or empty (empty counts as unset).
 * @param {Record<string, string|undefined>} env
 * @param {string} key
 * @returns {string|undefined}
 */
function nonEmpty(env, key) {
  const v = env ? env[key] : undefined;
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/**
 * Join path parts as Rust's `PathBuf::push` does (no normalisation, so the
 * socket path hashes to the same spool dir as in every other client): an
 * absolute part replaces what came before, else it is appended after one `/`.
 * @param {string} base
 * @param {...string} parts
 * @returns {string}
 */
function joinPath(base, ...parts) {
  let out = base;
  for (const p of parts) {
    if (p.startsWith('/')) out = p;
    else if (out === '' || out.endsWith('/')) out += p;
    else out += '/' + p;
  }
  return out;
}

/**
 * The OS name the defaults depend on: "macos" or "linux" (any other Unix
 * is treated like Linux).
 * @param {string} [platform] a `process.platform` value
 * @returns {"macos"|"linux"}
 */
function osName(platform = process.platform) {
  return platform === 'darwin' ? 'macos' : 'linux';
}

/**
 * The caller's uid, 0 where the platform has none.
 * @returns {number}
 */
function currentUid() {
  return typeof process.getuid === 'function' ? process.getuid() : 0;
}

/**
 * Default socket path (without TELEMETRY_SOCKET): $XDG_RUNTIME_DIR/telemetry/telemetryd.sock;
 * else on macOS $HOME/Library/Application Support/telemetry/telemetryd.sock; else
 * $TMPDIR/telemetry-<uid>/telemetryd.sock (TMPDIR unset: /tmp).
 * @param {Record<string, string|undefined>} env
 * @param {number} uid
 * @param {string} os "macos" or "linux"
 * @returns {string}
 */
function defaultSocketPath(env, uid, os) {
  const runtime = nonEmpty(env, 'XDG_RUNTIME_DIR');
  if (runtime) return joinPath(runtime, 'telemetry', SOCKET_FILE);
  const home = nonEmpty(env, 'HOME');
  if ((os === 'macos' || os === 'darwin') && home) {
    return joinPath(home, 'Library/Application Support/telemetry', SOCKET_FILE);
  }
  const tmp = nonEmpty(env, 'TMPDIR') || '/tmp';
  return joinPath(tmp, `telemetry-${uid}`, SOCKET_FILE);
}

/**
 * Default state dir (without TELEMETRY_STATE_DIR): $XDG_STATE_HOME/telemetry, else
 * $HOME/.local/state/telemetry, else $TMPDIR/telemetry-<uid>/state.
 * @param {Record<string, string|undefined>} env
 * @param {number} uid
 * @returns {string}
 */
function defaultStateDir(env, uid) {
  const xdg = nonEmpty(env, 'XDG_STATE_HOME');
  if (xdg) return joinPath(xdg, 'telemetry');
  const home = nonEmpty(env, 'HOME');
  if (home) return joinPath(home, '.local/state/telemetry');
  return joinPath(nonEmpty(env, 'TMPDIR') || '/tmp', `telemetry-${uid}`, 'state');
}

/**
 * FNV-1a 64 of a path's bytes (UTF-8), as 16 lowercase hex digits.
 * @param {string} path
 * @returns {string}
 */
function socketHash(path) {
  let h = 0xcbf29ce484222325n;
  const prime = 0x100000001b3n;
  const mask = 0xffffffffffffffffn;
  for (const b of Buffer.from(path, 'utf8')) {
    h = ((h ^ BigInt(b)) * prime) & mask;
  }
  return h.toString(16).padStart(16, '0');
}

/**
 * The portable spool dir for events meant for the daemon on `socket`:
 * STATE_DIR/spool/events-<fnv1a64 hex>.d.
 * @param {string} stateDir
 * @param {string} socket
 * @returns {string}
 */
function spoolDirFor(stateDir, socket) {
  return joinPath(stateDir, 'spool', `events-${socketHash(socket)}.d`);
}

/**
 * Where writers note the events they dropped because the spool was full, for
 * the daemon to count (its status: `counters.spool_full_drops`): the spool's
 * path with the extension `drops`, as Rust's `Path::with_extension` makes it,
 * so STATE_DIR/spool/events-<hash>.drops beside the spool dir. One line per
 * dropped event: its product name.
 * @param {string} spool a spool dir (or file)
 * @returns {string}
 */
function spoolDropsFile(spool) {
  const slash = spool.lastIndexOf('/');
  const dir = spool.slice(0, slash + 1);
  let name = spool.slice(slash + 1);
  if (name === '' || name === '.' || name === '..') return spool; // no file name to give an extension
  const dot = name.lastIndexOf('.');
  if (dot > 0) name = name.slice(0, dot);
  return `${dir}${name}.drops`;
}

/**
 * @typedef {object} Paths
 * @property {string} socket the daemon's socket
 * @property {string} stateDir the state directory
 * @property {string} consentFile the user's consent file
 * @property {string} systemConsentFile the administrator's consent file
 * @property {string} spoolDir the portable spool dir for this socket
 */

/**
 * Every location, overrides first (TELEMETRY_SOCKET, TELEMETRY_STATE_DIR,
 * TELEMETRY_CONSENT_FILE, TELEMETRY_SYSTEM_CONSENT_FILE), then the defaults.
 * @param {Record<string, string|undefined>} env
 * @param {number} [uid]
 * @param {string} [os] "macos" or "linux"
 * @returns {Paths}
 */
function resolvePaths(env, uid = currentUid(), os = osName()) {
  const e = env || {};
  const socket = nonEmpty(e, 'TELEMETRY_SOCKET') || defaultSocketPath(e, uid, os);
  const stateDir = nonEmpty(e, 'TELEMETRY_STATE_DIR') || defaultStateDir(e, uid);
  return {
    socket,
    stateDir,
    consentFile: nonEmpty(e, 'TELEMETRY_CONSENT_FILE') || joinPath(stateDir, 'consent'),
    systemConsentFile: nonEmpty(e, 'TELEMETRY_SYSTEM_CONSENT_FILE') || SYSTEM_CONSENT_FILE,
    spoolDir: spoolDirFor(stateDir, socket),
  };
}

module.exports = {
  SOCKET_FILE,
  SYSTEM_CONSENT_FILE,
  MAX_SPOOL_FILES,
  MAX_DROPS_BYTES,
  nonEmpty,
  joinPath,
  osName,
  currentUid,
  defaultSocketPath,
  defaultStateDir,
  socketHash,
  spoolDirFor,
  spoolDropsFile,
  resolvePaths,
};
