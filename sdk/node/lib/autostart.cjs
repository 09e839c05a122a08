'use strict';
/**
 * Starting telemetryd when nothing serves the socket (client/src/autostart.rs):
 * only after a connect failed with ENOENT or ECONNREFUSED, at most once per
 * 10 s per state dir (the mtime of STATE_DIR/autostart.stamp), detached in its
 * own session with stdin /dev/null and output appended to
 * STATE_DIR/telemetryd.log, without cloud credentials in its environment.
 * `TELEMETRY_AUTOSTART=0|false|no|off` turns it off; `TELEMETRY_DAEMON` names
 * the binary, else the client's `daemon` option (the telemetryd a vendor ships
 * with their CLI: where the Rust clients and the Go SDK look beside the running
 * executable, which is node here), else `telemetryd` on PATH.
 * @module
 */

const fs = require('node:fs');
const { isAbsolute } = require('node:path');
const { spawn } = require('node:child_process');
const { joinPath, nonEmpty } = require('./paths.cjs');
const { makeDirs, openRegular } = require('./files.cjs');

/** Least time between two starts from one state dir, in ms. */
const INTERVAL_MS = 10_000;

/**
 * Whether a TELEMETRY_AUTOSTART value turns autostart off.
 * @param {string|undefined} value
 * @returns {boolean}
 */
function disabled(value) {
  return typeof value === 'string' && ['0', 'false', 'no', 'off'].includes(value.trim().toLowerCase());
}

/**
 * Whether an environment variable must not reach the daemon (cloud
 * credentials, secrets, service-manager variables), as Rust's `scrubbed`.
 * @param {string} name
 * @returns {boolean}
 */
function scrubbed(name) {
  const upper = name.toUpperCase();
  if (upper.startsWith('TELEMETRY_')) return false;
  const prefixes = ['AWS_', 'AZURE_', 'GOOGLE_', 'GCLOUD_', 'CLOUDSDK_', 'ALIBABA_CLOUD_', 'OCI_', 'DIGITALOCEAN_'];
  const suffixes = [
    '_TOKEN',
    '_SECRET',
    '_SECRET_KEY',
    '_ACCESS_KEY',
    '_API_KEY',
    '_PASSWORD',
    '_CREDENTIALS',
    '_PAT',
    '_AUTHTOKEN',
  ];
  const names = [
    'DATABASE_URL',
    'SSH_AUTH_SOCK',
    'NOTIFY_SOCKET',
    'LISTEN_PID',
    'LISTEN_FDS',
    'LISTEN_FDNAMES',
    'WATCHDOG_PID',
    'WATCHDOG_USEC',
  ];
  return prefixes.some((p) => upper.startsWith(p)) || suffixes.some((s) => upper.endsWith(s)) || names.includes(upper);
}

/**
 * Whether `p` is a regular file with an execute bit (client/src/autostart.rs is_executable).
 * @param {string} p
 * @returns {boolean}
 */
function isExecutable(p) {
  try {
    const st = fs.statSync(p);
    return st.isFile() && (st.mode & 0o111) !== 0;
  } catch {
    return false;
  }
}

/**
 * The daemon binary: TELEMETRY_DAEMON, else `shipped` (the client's `daemon`
 * option) if it is an absolute path to an executable file, else an executable `telemetryd` on PATH:
 * the order of client/src/autostart.rs, `shipped` standing for "beside the
 * running executable".
 * @param {Record<string, string|undefined>} env
 * @param {string} [shipped]
 * @returns {string|null}
 */
function findDaemon(env, shipped) {
  const named = nonEmpty(env, 'TELEMETRY_DAEMON');
  if (named) return named;
  // Only an absolute path: a relative one would be looked up from the
  // working directory, where a cloned repository could plant a binary.
  if (shipped !== undefined && isAbsolute(shipped) && isExecutable(shipped)) return shipped;
  for (const dir of (env.PATH || '').split(':')) {
    if (!dir) continue;
    const p = joinPath(dir, 'telemetryd');
    if (isExecutable(p)) return p;
  }
  return null;
}

/**
 * Start `telemetryd --autostarted --socket SOCKET` detached, unless disabled,
 * not found or started less than 10 s ago. Never waits for the daemon.
 * @param {string} socket
 * @param {string} stateDir
 * @param {Record<string, string|undefined>} env
 * @param {string} [shipped] the client's `daemon` option
 * @returns {"spawned"|"recently"|"disabled"|"not_found"|"failed"}
 */
function autostart(socket, stateDir, env, shipped) {
  let logFd = -1;
  /** @type {string|null} */
  let claim = null;
  try {
    if (disabled(env.TELEMETRY_AUTOSTART)) return 'disabled';
    const daemon = findDaemon(env, shipped);
    if (!daemon) return 'not_found';
    makeDirs(stateDir, 0o700);
    const stamp = joinPath(stateDir, 'autostart.stamp');
    // Looking at the stamp and writing it are one step for all Node clients
    // (the Go and Python ones flock the stamp; Node has no flock): without
    // this, fifty hosts starting at once would each find the stamp old.
    const claimPath = joinPath(stateDir, 'autostart.node-lock');
    for (let tries = 0; claim === null; tries++) {
      try {
        fs.writeFileSync(claimPath, `${process.pid}\n`, { mode: 0o600, flag: 'wx' });
        claim = claimPath;
      } catch (e) {
        if (/** @type {any} */ (e).code !== 'EEXIST' || tries >= 3) throw e;
        let age;
        try {
          age = Math.abs(Date.now() - fs.statSync(claimPath).mtimeMs);
        } catch {
          continue; // given back meanwhile: claim it now
        }
        // Another is starting it now, unless that one died mid-step: then
        // remove its claim and make ours by exclusive creation, as above.
        if (age < INTERVAL_MS) return 'recently';
        try {
          fs.unlinkSync(claimPath);
        } catch {
          // another took it over first
        }
      }
    }
    const now = Date.now();
    try {
      const last = fs.statSync(stamp).mtimeMs;
      // A stamp in the future (clock set back) does not hold anyone off.
      if (last <= now && now - last < INTERVAL_MS) return 'recently';
    } catch {
      // no stamp yet
    }
    // The stamp and the log are opened non-blocking and must be regular
    // files: a FIFO in their place fails at once instead of holding the host.
    const { O_WRONLY, O_APPEND, O_CREAT } = fs.constants;
    const stampFd = openRegular(stamp, O_WRONLY | O_CREAT, 0o600);
    try {
      fs.ftruncateSync(stampFd, 0);
      fs.writeSync(stampFd, `${now}\n`);
      const time = new Date(now);
      fs.futimesSync(stampFd, time, time);
    } finally {
      fs.closeSync(stampFd);
    }
    logFd = openRegular(joinPath(stateDir, 'telemetryd.log'), O_WRONLY | O_APPEND | O_CREAT, 0o600);
    /** @type {Record<string, string>} */
    const childEnv = {};
    for (const [k, v] of Object.entries(env)) {
      if (typeof v === 'string' && !scrubbed(k)) childEnv[k] = v;
    }
    // As the Rust clients do: point the AWS SDK away from any credentials.
    childEnv.AWS_SHARED_CREDENTIALS_FILE = '/dev/null';
    childEnv.AWS_CONFIG_FILE = '/dev/null';
    childEnv.AWS_EC2_METADATA_DISABLED = 'true';
    const args = ['--autostarted', '--socket', socket];
    // On Unix `sh` starts the daemon in the background and exits at once:
    // the daemon is adopted by init, in the session `sh` leads, so the host
    // keeps no child for the daemon's whole life, as with the Go and Python
    // SDKs and the Rust clients' double fork (Node reaps `sh`). Not where
    // this process is init (a container's entrypoint: the daemon would be
    // adopted by it, never reaped) or there is no /bin/sh, nor on Windows:
    // there the daemon is started directly.
    const viaSh = process.platform !== 'win32' && process.pid !== 1 && isExecutable('/bin/sh');
    const [file, argv] = viaSh ? ['/bin/sh', ['-c', 'exec "$@" &', 'sh', daemon, ...args]] : [daemon, args];
    const child = spawn(file, argv, {
      detached: true,
      stdio: ['ignore', logFd, logFd],
      env: childEnv,
    });
    child.on('error', () => {});
    child.unref();
    return child.pid === undefined ? 'failed' : 'spawned';
  } catch {
    return 'failed';
  } finally {
    if (claim !== null) {
      try {
        fs.unlinkSync(claim);
      } catch {
        // taken over
      }
    }
    if (logFd >= 0) {
      try {
        fs.closeSync(logFd);
      } catch {
        // already closed
      }
    }
  }
}

module.exports = { INTERVAL_MS, disabled, scrubbed, findDaemon, autostart };
