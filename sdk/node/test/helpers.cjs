'use strict';
// Shared by the tests: the vectors, a real telemetryd in a temp dir, polling.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { exchange } = require('../lib/transport.cjs');
const { requests } = require('../lib/wire.cjs');

const SDK_DIR = path.resolve(__dirname, '..');
const REPO = path.resolve(SDK_DIR, '..', '..');
const VECTORS = path.join(REPO, 'vectors');
const DAEMON = process.env.TELEMETRYD_BIN || path.join(REPO, 'target', 'debug', 'telemetryd');
const CTL = process.env.TELEMETRYCTL_BIN || path.join(path.dirname(DAEMON), 'telemetryctl');

/**
 * A JSON file of the shared vectors, integers beyond 2^53 read as BigInt.
 * @param {string} name
 */
function vector(name) {
  return parseJSONBig(fs.readFileSync(path.join(VECTORS, name), 'utf8'));
}

/**
 * JSON.parse, but integers that are not safe as doubles become BigInt.
 * (Node 20's JSON.parse has no access to the source text.)
 * @param {string} text
 */
function parseJSONBig(text) {
  let i = 0;
  const ws = () => {
    while (/\s/.test(text[i] || '')) i++;
  };
  const value = () => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const o = {};
      ws();
      if (text[i] === '}') return (i++, o);
      for (;;) {
        ws();
        const k = string();
        ws();
        i++; // :
        o[k] = value();
        ws();
        if (text[i++] === '}') return o;
      }
    }
    if (c === '[') {
      i++;
      const a = [];
      ws();
      if (text[i] === ']') return (i++, a);
      for (;;) {
        a.push(value());
        ws();
        if (text[i++] === ']') return a;
      }
    }
    if (c === '"') return string();
    const m = /^(?:true|false|null|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/.exec(text.slice(i, i + 400));
    if (!m) throw new SyntaxError(`bad JSON at ${i}`);
    i += m[0].length;
    if (/^-?\d+$/.test(m[0])) {
      const n = BigInt(m[0]);
      return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
    }
    return JSON.parse(m[0]);
  };
  const string = () => {
    const start = i;
    i++;
    while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++;
    return JSON.parse(text.slice(start, i));
  };
  const v = value();
  return v;
}

/** Whether the daemon binary is there (the daemon tests skip without it). */
const haveDaemon = fs.existsSync(DAEMON);

/**
 * A temp dir for one test.
 * @param {string} [prefix]
 */
function tempDir(prefix = 'tdnode-') {
  // Short: socket paths are limited to 107 bytes.
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(d);
  return d;
}
/** @type {string[]} */
const made = [];
process.on('exit', () => {
  if (process.env.KEEP_TEST_DIRS) return;
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

/**
 * The SDK's environment for a test dir T (never the real user's files).
 * @param {string} T
 */
function sdkEnv(T) {
  return {
    TELEMETRY_SOCKET: path.join(T, 's.sock'),
    TELEMETRY_STATE_DIR: path.join(T, 'state'),
    TELEMETRY_CONSENT_FILE: path.join(T, 'consent'),
    TELEMETRY_SYSTEM_CONSENT_FILE: path.join(T, 'system-consent'),
    TELEMETRY_AUTOSTART: '0',
    HOME: path.join(T, 'home'),
    PATH: process.env.PATH,
  };
}

/**
 * Poll `fn` until it returns something truthy, or fail after `ms`.
 * @template T
 * @param {() => Promise<T>|T} fn
 * @param {number} ms
 * @param {string} what
 * @returns {Promise<T>}
 */
async function waitFor(fn, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Ask the daemon on `socket` for its status report (null when it does not answer).
 * @param {string} socket
 */
async function rawStatus(socket) {
  const x = await exchange(socket, requests.status(), 2000, true);
  return x.ok && x.reply && x.reply.kind === 'status' ? x.reply.body : null;
}

/**
 * Start telemetryd in T (a fresh temp dir unless given), wait until it answers.
 * @param {string} [T]
 */
async function startDaemon(T = tempDir()) {
  for (const d of ['home', 'empty', 'catalog']) fs.mkdirSync(path.join(T, d), { recursive: true });
  if (!fs.existsSync(path.join(T, 'machine-id'))) {
    fs.writeFileSync(path.join(T, 'machine-id'), '0123456789abcdef0123456789abcdef\n');
  }
  const env = sdkEnv(T);
  const log = fs.openSync(path.join(T, 'daemon.log'), 'a');
  const child = spawn(
    DAEMON,
    [
      '--socket',
      env.TELEMETRY_SOCKET,
      '--state-dir',
      env.TELEMETRY_STATE_DIR,
      '--consent-file',
      env.TELEMETRY_CONSENT_FILE,
      '--system-consent-file',
      env.TELEMETRY_SYSTEM_CONSENT_FILE,
      '--machine-id-file',
      path.join(T, 'machine-id'),
      '--catalog-dir',
      path.join(T, 'catalog'),
      '--upload-interval',
      '1h',
      '--spool-check-interval',
      '1s',
    ],
    {
      env: {
        PATH: process.env.PATH,
        HOME: env.HOME,
        XDG_DATA_DIRS: path.join(T, 'empty'),
        TELEMETRY_AUTOSTART: '0',
      },
      stdio: ['ignore', log, log],
    },
  );
  fs.closeSync(log);
  const exited = new Promise((r) => child.once('exit', r));
  await waitFor(() => rawStatus(env.TELEMETRY_SOCKET), 10_000, `telemetryd in ${T} to answer`);
  return {
    T,
    env,
    socket: env.TELEMETRY_SOCKET,
    status: () => rawStatus(env.TELEMETRY_SOCKET),
    async stop() {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

module.exports = {
  SDK_DIR,
  REPO,
  DAEMON,
  CTL,
  haveDaemon,
  vector,
  parseJSONBig,
  tempDir,
  sdkEnv,
  waitFor,
  rawStatus,
  startDaemon,
};

/**
 * A fake daemon on `socket`: `reply(line)` gives the reply line to send (or
 * null to never answer). Records connections and lines.
 * @param {string} socket
 * @param {(line: string) => string|null} reply
 */
async function fakeServer(socket, reply) {
  const net = require('node:net');
  const seen = { connections: 0, lines: /** @type {string[]} */ ([]) };
  /** @type {Set<import('node:net').Socket>} */
  const open = new Set();
  const server = net.createServer((c) => {
    seen.connections++;
    open.add(c);
    c.on('close', () => open.delete(c));
    c.on('error', () => {});
    let buf = '';
    c.setEncoding('utf8');
    c.on('data', (d) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        seen.lines.push(line);
        const r = reply(line);
        if (r !== null) c.write(r + '\n');
      }
    });
  });
  await new Promise((r) => server.listen(socket, () => r(undefined)));
  return {
    seen,
    close: () =>
      new Promise((r) => {
        for (const c of open) c.destroy();
        server.close(() => r(undefined));
      }),
  };
}

module.exports.fakeServer = fakeServer;
