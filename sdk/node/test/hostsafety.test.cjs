'use strict';
// The host comes first, whatever is in the state dir or passed in: a dir
// under /proc, a FIFO in a file's place, huge or hostile values all end
// within the budget, without throwing.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync, execFileSync } = require('node:child_process');
const { createClient, MAX_SPOOL_FILES, spoolDropsFile } = require('../index.cjs');
const { makeDirs } = require('../lib/files.cjs');
const { tempDir, sdkEnv } = require('./helpers.cjs');

const posix = { skip: process.platform === 'win32' };
const linux = { skip: !fs.existsSync('/proc/self') };

/**
 * Run `body` (an async function body; `sdk` is the package, `T0` the start
 * time) in a child with a deadline: a hang would freeze this runner's event
 * loop, timers and all. Returns what the body returns, and how long it took.
 * @param {string} body
 * @returns {{value: any, ms: number}}
 */
function inChild(body) {
  const script = `const sdk = require(${JSON.stringify(require.resolve('../index.cjs'))});
    (async () => { const T0 = Date.now(); const value = await (async () => { ${body} })();
      process.stdout.write(JSON.stringify({ value, ms: Date.now() - T0 })); })();`;
  const out = spawnSync(process.execPath, ['-e', script], { timeout: 10_000, encoding: 'utf8' });
  assert.equal(out.signal, null, `still running after 10 s: ${out.stderr}`);
  assert.equal(out.status, 0, out.stderr);
  return JSON.parse(out.stdout);
}

/** A test dir whose user file says cfdev on, and a fake daemon. */
function onEnv() {
  const T = tempDir();
  fs.writeFileSync(path.join(T, 'consent'), 'cfdev on\n');
  const fake = path.join(T, 'fake-telemetryd');
  fs.writeFileSync(fake, '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  return { T, env: { ...sdkEnv(T), TELEMETRY_AUTOSTART: '', TELEMETRY_DAEMON: fake } };
}

test('makeDirs: each missing dir made with the mode; existing ones kept; a file in the way fails', posix, () => {
  const T = tempDir();
  const deep = path.join(T, 'a', 'b', 'c');
  makeDirs(deep, 0o700);
  for (const d of ['a', 'a/b', 'a/b/c']) assert.equal(fs.statSync(path.join(T, d)).mode & 0o777, 0o700, d);
  makeDirs(deep, 0o700);
  makeDirs(path.relative(process.cwd(), path.join(T, 'a', 'd')), 0o700);
  assert.ok(fs.statSync(path.join(T, 'a', 'd')).isDirectory(), 'a relative path');
  fs.writeFileSync(path.join(T, 'f'), '');
  assert.throws(() => makeDirs(path.join(T, 'f'), 0o700), /ENOTDIR/);
  assert.throws(() => makeDirs(path.join(T, 'f', 'g'), 0o700), /ENOTDIR/);
});

test('a state dir or consent file under /proc fails at once (Node’s recursive mkdir spins there)', linux, () => {
  const { T, env } = onEnv();
  const r = inChild(`
    const env = ${JSON.stringify({ ...env, TELEMETRY_STATE_DIR: '/proc/self/nope/state' })};
    const c = sdk.createClient({ product: 'cfdev', build: '1', env });
    const emitted = await c.emit('stop');
    const set = await sdk.createClient({ product: 'cfdev', build: '1', env: ${JSON.stringify(env)},
      consentFile: '/proc/telemetry/consent' }).setConsent('on');
    return { emitted, set };`);
  assert.equal(r.value.emitted.status, 'failed', JSON.stringify(r.value));
  assert.match(r.value.emitted.reason, /ENOENT/);
  assert.equal(r.value.emitted.autostart, 'failed');
  assert.equal(r.value.set.status, 'failed', JSON.stringify(r.value));
  assert.ok(r.ms < 1000, `${r.ms} ms`);
  assert.equal(fs.readFileSync(path.join(T, 'consent'), 'utf8'), 'cfdev on\n');
});

/**
 * In one child, for each case: emit with no reader on its FIFO, then with a
 * reader that never reads (its stamp aged, so that autostart tries again).
 * @param {{env: Record<string, string|undefined>, fifo: string, stamp: string}[]} cases
 * @returns {{value: {first: any, second: any, written: number}[], ms: number}}
 */
function emitBesideFifos(cases) {
  return inChild(`
    const fs = require('node:fs');
    const out = [];
    for (const { env, fifo, stamp } of ${JSON.stringify(cases)}) {
      const c = sdk.createClient({ product: 'cfdev', build: '1', env });
      // No reader: opening it for writing fails (ENXIO) instead of waiting.
      const first = await c.emit('stop');
      // A reader: the open succeeds, and the FIFO is refused.
      const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      const old = new Date(Date.now() - 3600_000);
      if (fs.existsSync(stamp)) fs.utimesSync(stamp, old, old);
      const second = await c.emit('stop');
      let written = 0;
      try {
        written = fs.readSync(reader, Buffer.alloc(64));
      } catch (e) {
        if (e.code !== 'EAGAIN') throw e;
      }
      fs.closeSync(reader);
      out.push({ first, second, written });
    }
    return out;`);
}

test('autostart: a FIFO as telemetryd.log or as an old autostart.stamp fails at once', posix, () => {
  const names = ['telemetryd.log', 'autostart.stamp'];
  const cases = names.map((name) => {
    const { T, env } = onEnv();
    const fifo = path.join(T, 'state', name);
    fs.mkdirSync(path.dirname(fifo), { recursive: true });
    execFileSync('mkfifo', [fifo]);
    const old = new Date(Date.now() - 3600_000);
    fs.utimesSync(fifo, old, old);
    return { env, fifo, stamp: path.join(T, 'state', 'autostart.stamp') };
  });
  const r = emitBesideFifos(cases);
  assert.ok(r.ms < 1000, `${r.ms} ms`);
  r.value.forEach(({ first, second, written }, i) => {
    assert.equal(first.status, 'spooled', `${names[i]}: ${JSON.stringify(first)}`);
    assert.equal(first.autostart, 'failed', names[i]);
    assert.equal(second.autostart, 'failed', `${names[i]} with a reader`);
    assert.equal(written, 0, `${names[i]}: something was written into the FIFO`);
    assert.ok(fs.statSync(cases[i].fifo).isFIFO(), `${names[i]} is left alone`);
  });
});

test('a full spool with a FIFO as its drop file drops at once', posix, () => {
  const { T, env } = onEnv();
  env.TELEMETRY_AUTOSTART = '0';
  const dir = createClient({ product: 'cfdev', build: '1', env }).paths().spoolDir;
  fs.mkdirSync(dir, { recursive: true });
  // Full of entries: directories, quicker to make than files.
  for (let i = 0; i < MAX_SPOOL_FILES; i++) fs.mkdirSync(path.join(dir, `${i}`));
  execFileSync('mkfifo', [spoolDropsFile(dir)]);
  const r = emitBesideFifos([{ env, fifo: spoolDropsFile(dir), stamp: path.join(T, 'none') }]);
  assert.ok(r.ms < 1000, `${r.ms} ms`);
  const [{ first, second, written }] = r.value;
  assert.equal(first.status, 'dropped', JSON.stringify(first));
  assert.equal(second.status, 'dropped', JSON.stringify(second));
  assert.equal(written, 0, 'something was written into the FIFO');
});

test('too many data entries are refused before any value is read or any entry copied', async () => {
  const T = tempDir();
  fs.writeFileSync(path.join(T, 'consent'), 'cfdev on\n');
  const t = createClient({ product: 'cfdev', build: '1', env: sdkEnv(T) });
  let reads = 0;
  const data = {};
  // Past twice the limit (keys whose value is undefined do not count, so up
  // to 64 are read).
  for (let i = 0; i < 65; i++) {
    Object.defineProperty(data, `k${i}`, {
      enumerable: true,
      get: () => {
        reads++;
        return 1;
      },
    });
  }
  const r = await t.emit('stop', data);
  assert.equal(r.status, 'refused');
  assert.match(r.message, /lists more than 64 keys: at most 32 entries are sent/);
  assert.equal(reads, 0, 'no getter ran');
  class CountingMap extends Map {
    entries() {
      reads++;
      return super.entries();
    }
  }
  const m = new CountingMap(Array.from({ length: 65 }, (_, i) => [`k${i}`, 1]));
  assert.match((await t.emit('stop', m)).message, /lists more than 64 keys/);
  assert.equal(reads, 0, 'the map was not copied');
  // 32 are fine; 33 own ones are not, whatever is inherited.
  const ok = Object.fromEntries(Array.from({ length: 32 }, (_, i) => [`k${i}`, i]));
  assert.equal((await t.emit('stop', Object.assign(Object.create({ x: 1, y: 2 }), ok))).status, 'spooled');
  assert.match((await t.emit('stop', { ...ok, k32: 1 })).message, /more than 32 entries/);
  // Keys left undefined are left out, as JSON.stringify leaves them, and do
  // not count: `{...flags}` with options unset still sends its 32.
  const unset = Object.fromEntries(Array.from({ length: 32 }, (_, i) => [`u${i}`, undefined]));
  assert.equal((await t.emit('stop', { ...ok, ...unset })).status, 'spooled');
  assert.equal((await t.emit('stop', new Map(Object.entries({ ...ok, ...unset })))).status, 'spooled');
  assert.match((await t.emit('stop', { ...ok, ...unset, u0: 1 })).message, /more than 32 entries/);
});

test('a bad value is described without converting it: no toString, no join, no million digits', async () => {
  const T = tempDir();
  fs.writeFileSync(path.join(T, 'consent'), 'cfdev on\n');
  const t = createClient({ product: 'cfdev', build: '1', env: sdkEnv(T) });
  let conversions = 0;
  const spy = () => {
    conversions++;
    return 'x';
  };
  const array = [1, 2, 3];
  array.toString = spy;
  const cases = [
    [{ toString: spy }, /event an object is not a valid name/],
    [array, /event an array is not a valid name/],
    [Object.assign(() => {}, { toString: spy }), /event a function/],
    [Symbol('s'.repeat(100)), /event a symbol/],
    [42, /event 42 is not/],
  ];
  for (const [event, re] of cases) {
    const r = await t.emit(/** @type {any} */ (event));
    assert.equal(r.status, 'refused');
    assert.match(r.message, re);
  }
  assert.equal(conversions, 0, 'no toString ran');
  const big = await t.emit('stop', { n: 2n ** 4_000_000n });
  assert.match(big.message, /BigInt of more than 80 digits, out of range/);
  assert.ok(big.message.length < 300, `${big.message.length} characters`);
  const long = await t.emit('stop', { s: 'x'.repeat(1 << 20) });
  assert.match(long.message, /more than 1024 bytes/);
  const setMode = await t.setConsent(/** @type {any} */ ({ toString: spy }));
  assert.equal(setMode.status, 'refused');
  assert.equal(conversions, 0, 'no toString ran');
});
