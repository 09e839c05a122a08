'use strict';
// The client without a real daemon: validation, consent first, the budget,
// the spool, the consent file, the prompt, autostart, and garbage in.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync, spawn } = require('node:child_process');
const { createClient, uuidv7, LIMITS, parseConsentFile } = require('../index.cjs');
const { tempDir, sdkEnv, fakeServer, waitFor } = require('./helpers.cjs');
const { entryFor } = require('../lib/consent.cjs');
const { checkData } = require('../lib/validate.cjs');

const ACK = '{"v":2,"ack":{"accepted":1,"duplicates":0}}';

/** A test dir whose user file says cfdev on. */
function onDir() {
  const T = tempDir();
  fs.writeFileSync(path.join(T, 'consent'), 'cfdev on\n');
  return T;
}

test('uuidv7: version 7, variant 10, the time in the first 48 bits, fresh each time', () => {
  const before = Date.now();
  const ids = new Set();
  for (let i = 0; i < 1000; i++) {
    const id = uuidv7();
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const ms = parseInt(id.replace(/-/g, '').slice(0, 12), 16);
    assert.ok(ms >= before && ms <= Date.now());
    ids.add(id);
  }
  assert.equal(ids.size, 1000);
});

test('options beat variables, which beat the defaults', () => {
  const env = { HOME: '/h', TELEMETRY_SOCKET: '/env.sock', TELEMETRY_CONSENT_FILE: '/env-consent' };
  assert.deepEqual(createClient({ env }).paths(), {
    socket: '/env.sock',
    stateDir: '/h/.local/state/telemetry',
    consentFile: '/env-consent',
    systemConsentFile: '/etc/telemetry/consent',
    spoolDir: `/h/.local/state/telemetry/spool/events-${require('../index.cjs').socketHash('/env.sock')}.d`,
  });
  const p = createClient({ env, socket: '/o.sock', stateDir: '/st', systemConsentFile: '/sys' }).paths();
  assert.equal(p.socket, '/o.sock');
  assert.equal(p.consentFile, '/env-consent');
  assert.equal(p.systemConsentFile, '/sys');
  assert.match(p.spoolDir, /^\/st\/spool\/events-[0-9a-f]{16}\.d$/);
  assert.equal(createClient({ env: { HOME: '/h' }, stateDir: '/st' }).paths().consentFile, '/st/consent');
  assert.equal(createClient({ env, consentFile: '/c' }).paths().consentFile, '/c');
});

test('local validation refuses precisely, before the socket', async () => {
  const T = tempDir();
  // On: consent comes first, so with it off these would all be `off`.
  fs.writeFileSync(path.join(T, 'consent'), 'cfdev on\n');
  const t = createClient({ product: 'cfdev', build: '1.2.0', env: sdkEnv(T) });
  const cases = [
    [['start_end', { duration_s: 1.5 }], /duration_s.*not a whole number/],
    [['start_end', { duration_s: 2 ** 53 }], /BigInt/],
    [['start_end', { duration_s: 2n ** 63n }], /64-bit/],
    [['start_end', { duration_s: NaN }], /not a whole number/],
    [['start_end', { success: null }], /is a null/],
    [['start_end', { nested: { a: 1 } }], /is an object/],
    [['start_end', { list: [1] }], /is an array/],
    [['Start', {}], /event "Start" is not a valid name/],
    [['start_end', { 'Bad-Key': 1 }], /data key/],
    [['app_created', { buildpack: 'x'.repeat(257) }], /is 257 bytes, more than the maximum of 256$/],
    [['app_created', { buildpack: 'a\nb' }], /has control characters \(printable text only\)$/],
    [['app_created', Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, i]))], /more than 32 entries/],
    [['app_created', 'buildpack=go'], /data must be an object/],
  ];
  for (const [args, re] of cases) {
    const r = await t.emit(...args);
    assert.equal(r.status, 'refused', String(re));
    assert.equal(r.code, 'invalid');
    assert.match(r.message, re);
  }
  const badBuild = await createClient({ product: 'cfdev', build: '/home/alice', env: sdkEnv(T) }).emit('stop');
  assert.match(badBuild.message, /build/);
  assert.equal(fs.existsSync(path.join(T, 'state')), false, 'nothing written');
  // Off first, whatever the event: nothing was going to happen to it.
  fs.writeFileSync(path.join(T, 'consent'), 'cfdev off\n');
  assert.equal((await t.emit('Start', {})).status, 'off');
  assert.equal(LIMITS.maxDataEntries, 32);
  // A key whose value is undefined is left out, as JSON.stringify does.
  assert.deepEqual(checkData({ gone: undefined, n: 1 }), { data: { n: 1 } });
  assert.deepEqual(checkData(new Map([['gone', undefined]])), { data: {} });
  assert.match(checkData({ 'Bad-Key': undefined }).error, /data key/);
});

test('consent off: no connection, no file, at once', async () => {
  const T = tempDir();
  const env = sdkEnv(T);
  const server = await fakeServer(env.TELEMETRY_SOCKET, () => ACK);
  try {
    const t = createClient({ product: 'cfdev', build: '1.2.0', env });
    const started = Date.now();
    assert.deepEqual(await t.emit('stop'), { status: 'off', layer: 'default' });
    assert.deepEqual(await t.emitNoWait('stop'), { status: 'off', layer: 'default' });
    fs.writeFileSync(env.TELEMETRY_CONSENT_FILE, 'cfdev on\n');
    const envOff = createClient({ product: 'cfdev', build: '1', env: { ...env, DO_NOT_TRACK: '1' } });
    assert.deepEqual(await envOff.emit('stop'), { status: 'off', layer: 'environment' });
    assert.deepEqual(await envOff.consent(), { mode: 'off', layer: 'environment', variable: 'DO_NOT_TRACK' });
    // A host's own env object may hold a number or a boolean: set is set.
    for (const value of [1, true]) {
      const c = createClient({ product: 'cfdev', build: '1', env: { ...env, DO_NOT_TRACK: value } });
      assert.deepEqual(await c.emit('stop'), { status: 'off', layer: 'environment' }, `DO_NOT_TRACK: ${value}`);
    }
    fs.writeFileSync(env.TELEMETRY_SYSTEM_CONSENT_FILE, '* off\n');
    assert.deepEqual(await t.emit('stop'), { status: 'off', layer: 'system' });
    fs.writeFileSync(env.TELEMETRY_SYSTEM_CONSENT_FILE, 'cfdev off\n');
    fs.chmodSync(env.TELEMETRY_SYSTEM_CONSENT_FILE, 0o000);
    if (process.getuid && process.getuid() !== 0) {
      assert.deepEqual(await t.emit('stop'), { status: 'off', layer: 'system' }, 'unreadable forces off');
    }
    assert.ok(Date.now() - started < 100, 'returns at once');
    assert.equal(server.seen.connections, 0);
    assert.equal(fs.existsSync(env.TELEMETRY_STATE_DIR), false, 'no spool dir, no state dir');
  } finally {
    await server.close();
  }
});

test('acknowledged and refused replies from a (fake) daemon; BigInt data reaches the wire exactly', async () => {
  const T = onDir();
  const env = sdkEnv(T);
  let next = ACK;
  const server = await fakeServer(env.TELEMETRY_SOCKET, () => next);
  try {
    const t = createClient({ product: 'cfdev', build: '1.2.0', env });
    const r = await t.emit('start_end', { duration_s: 9007199254740993n, success: true, note: 'é "q"' });
    assert.equal(r.status, 'acknowledged');
    assert.equal(r.accepted, 1);
    const line = server.seen.lines.at(-1);
    assert.match(line, /"duration_s":9007199254740993[,}]/);
    const sent = JSON.parse(line);
    assert.equal(sent.v, 2);
    assert.equal(sent.emit.ack, true);
    const ev = sent.emit.events[0];
    assert.equal(ev.id, r.id);
    assert.deepEqual(Object.keys(ev).sort(), ['build', 'data', 'event', 'id', 'product', 'timestamp_us']);
    assert.ok(Number.isInteger(ev.timestamp_us) && Math.abs(ev.timestamp_us / 1000 - Date.now()) < 5000);
    assert.equal(ev.data.note, 'é "q"');

    next = '{"v":2,"error":{"code":"not_in_catalogue","message":"no such event"}}';
    const refused = await t.emit('nope');
    assert.deepEqual(
      { status: refused.status, code: refused.code, message: refused.message },
      { status: 'refused', code: 'not_in_catalogue', message: 'no such event' },
    );
    assert.equal(fs.existsSync(env.TELEMETRY_STATE_DIR), false, 'a final refusal is not spooled');

    next = '{"v":2,"error":{"code":"busy","message":"try again"}}';
    const busy = await t.emit('stop');
    assert.equal(busy.status, 'spooled');
    assert.match(busy.reason, /busy/);

    next = '{"v":2,"error":{"code":"brand_new_code","message":"?"}}';
    assert.equal((await t.emit('stop')).status, 'spooled', 'unknown codes are retried');

    const before = server.seen.lines.length;
    const q = await t.emitNoWait('stop');
    assert.equal(q.status, 'queued');
    await waitFor(() => server.seen.lines.length > before, 2000, 'the no-wait line');
    assert.equal(JSON.parse(server.seen.lines.at(-1)).emit.ack, false);
  } finally {
    await server.close();
  }
});

test('the budget: a socket that never answers → back within budget + slack, spooled', async () => {
  const T = onDir();
  const env = sdkEnv(T);
  const server = await fakeServer(env.TELEMETRY_SOCKET, () => null);
  try {
    const t = createClient({ product: 'cfdev', build: '1.2.0', env, timeoutMs: 100 });
    const started = performance.now();
    const r = await t.emit('app_created', { buildpack: 'go' });
    const took = performance.now() - started;
    assert.equal(r.status, 'spooled');
    assert.ok(took >= 95 && took < 100 + 100, `took ${took} ms`);
    const dir = t.paths().spoolDir;
    assert.equal(path.dirname(r.file), dir);
    assert.equal(path.basename(r.file), `${r.id}.json`);
    const sent = JSON.parse(fs.readFileSync(r.file, 'utf8'));
    assert.equal(sent.emit.ack, false);
    assert.deepEqual(sent.emit.events[0].data, { buildpack: 'go' });
    // A shorter per-call budget wins.
    const s2 = performance.now();
    await t.status({ timeoutMs: 30 });
    assert.ok(performance.now() - s2 < 30 + 60);
  } finally {
    await server.close();
  }
});

const asRoot = process.geteuid && process.geteuid() === 0;
const rootOnly = { skip: !asRoot && 'needs root to give the socket to another user' };

test('a socket another user serves is not sent to: the event is spooled', rootOnly, async () => {
  // Where XDG_RUNTIME_DIR is unset the socket is under /tmp/telemetry-<uid>,
  // which another user could make first: whoever binds a socket owns its
  // file, so a file owned by neither this user nor root is theirs.
  const T = onDir();
  const env = sdkEnv(T);
  const server = await fakeServer(env.TELEMETRY_SOCKET, () => ACK);
  try {
    fs.chownSync(env.TELEMETRY_SOCKET, 65534, 65534);
    const t = createClient({ product: 'cfdev', build: '1.2.0', env, autostart: false });
    const r = await t.emit('app_created', { buildpack: 'go' });
    assert.equal(r.status, 'spooled', JSON.stringify(r));
    assert.match(r.reason, /uid 65534, neither this user/);
    await new Promise((res) => setTimeout(res, 20));
    assert.deepEqual(server.seen.lines, [], 'nothing written to it');
    fs.chownSync(env.TELEMETRY_SOCKET, 0, 0);
    assert.equal((await t.emit('app_created', { buildpack: 'go' })).status, 'acknowledged', "root's is served");
  } finally {
    await server.close();
  }
});

test('a pending emit does not keep the process alive past its budget', () => {
  const T = onDir();
  const env = sdkEnv(T);
  const script = `
    const net = require('node:net');
    const { createClient } = require(${JSON.stringify(path.resolve(__dirname, '..', 'index.cjs'))});
    // A server in another process would be better; here one that never answers, unref'd.
    const s = net.createServer(() => {}).listen(${JSON.stringify(env.TELEMETRY_SOCKET)}, () => {
      s.unref();
      createClient({ product: 'cfdev', build: '1', env: ${JSON.stringify(env)}, timeoutMs: 200 }).emit('stop');
    });`;
  const started = Date.now();
  const r = spawnSync(process.execPath, ['-e', script], { timeout: 5000 });
  const took = Date.now() - started;
  assert.equal(r.status, 0, String(r.stderr));
  assert.ok(took < 2000, `exited after ${took} ms`);
  assert.equal(fs.readdirSync(createClient({ env }).paths().spoolDir).length, 1);
});

test("daemon down: spooled in the socket's spool dir; a full spool drops", async () => {
  const T = onDir();
  const env = sdkEnv(T);
  const t = createClient({ product: 'cfdev', build: '1.2.0', env });
  const r = await t.emit('stop');
  assert.equal(r.status, 'spooled');
  assert.match(r.reason, /ENOENT/);
  assert.equal(r.autostart, 'disabled');
  const dir = path.join(T, 'state', 'spool', `events-${require('../index.cjs').socketHash(env.TELEMETRY_SOCKET)}.d`);
  assert.deepEqual(fs.readdirSync(dir), [`${r.id}.json`]);
  assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
  assert.equal(fs.statSync(r.file).mode & 0o777, 0o600);
  const nw = await t.emitNoWait('stop');
  assert.equal(nw.status, 'spooled');
  for (let i = 0; i < 998; i++) fs.writeFileSync(path.join(dir, `x${i}.json`), '');
  const d = await t.emit('stop');
  assert.equal(d.status, 'dropped');
  assert.match(d.reason, /full/);
});

test('autostart: runs TELEMETRY_DAEMON --autostarted --socket S, scrubbed, at most once per 10 s', async () => {
  const T = onDir();
  const fake = path.join(T, 'fake-telemetryd');
  const out = path.join(T, 'started');
  fs.writeFileSync(fake, `#!/bin/sh\n{ echo "$@"; env; } > ${out}.tmp && mv ${out}.tmp ${out}\n`, { mode: 0o755 });
  const env = {
    ...sdkEnv(T),
    TELEMETRY_AUTOSTART: '',
    TELEMETRY_DAEMON: fake,
    AWS_SECRET_ACCESS_KEY: 'x',
    MY_API_KEY: 'k',
    GH_PAT: 'p',
    npm_config__authToken: 'n',
    DATABASE_URL: 'postgres://u:pw@h/db',
  };
  const t = createClient({ product: 'cfdev', build: '1.2.0', env });
  const r = await t.emit('stop');
  assert.equal(r.status, 'spooled');
  assert.equal(r.autostart, 'spawned');
  const text = await waitFor(() => fs.existsSync(out) && fs.readFileSync(out, 'utf8'), 5000, 'the fake daemon');
  assert.equal(text.split('\n')[0], `--autostarted --socket ${env.TELEMETRY_SOCKET}`);
  assert.doesNotMatch(text, /AWS_SECRET_ACCESS_KEY|MY_API_KEY|GH_PAT|authToken|DATABASE_URL/);
  assert.match(text, /AWS_SHARED_CREDENTIALS_FILE=\/dev\/null/);
  assert.ok(fs.existsSync(path.join(T, 'state', 'autostart.stamp')));
  assert.ok(fs.existsSync(path.join(T, 'state', 'telemetryd.log')));
  assert.equal((await t.emit('stop')).autostart, 'recently');
  assert.equal(
    (await createClient({ product: 'cfdev', build: '1', env, autostart: false }).emit('stop')).autostart,
    undefined,
  );
});

test('autostart: one Node client at a time looks at the stamp and writes it', async () => {
  const T = onDir();
  const fake = path.join(T, 'fake-telemetryd');
  const out = path.join(T, 'started');
  fs.writeFileSync(fake, `#!/bin/sh\necho started >> ${out}\n`, { mode: 0o755 });
  const env = { ...sdkEnv(T), TELEMETRY_AUTOSTART: '', TELEMETRY_DAEMON: fake };
  const claim = path.join(T, 'state', 'autostart.node-lock');
  fs.mkdirSync(path.dirname(claim), { recursive: true });
  // Another Node client is between its look at the stamp and its write.
  fs.writeFileSync(claim, '4242\n');
  const t = createClient({ product: 'cfdev', build: '1.2.0', env });
  assert.equal((await t.emit('stop')).autostart, 'recently');
  assert.equal(fs.existsSync(path.join(T, 'state', 'autostart.stamp')), false, 'the stamp is the other one’s to write');
  // One that died mid-step (11 s ago) holds nobody off.
  const old = new Date(Date.now() - 11_000);
  fs.utimesSync(claim, old, old);
  assert.equal((await t.emit('stop')).autostart, 'spawned');
  assert.equal(fs.existsSync(claim), false, 'given back');
  await waitFor(() => fs.existsSync(out), 5000, 'the fake daemon');
});

test('setConsent without a daemon: the canonical file, 0600 in 0700, keeps a mode and the off time', async () => {
  const T = tempDir();
  const env = { ...sdkEnv(T), TELEMETRY_CONSENT_FILE: path.join(T, 'cfg', 'dir', 'consent') };
  const t = createClient({ product: 'cfdev', build: '1.2.0', env });
  const off = await t.setConsent('OFF');
  assert.equal(off.status, 'recorded');
  assert.equal(off.daemonNotified, false);
  assert.match(off.daemonError, /ENOENT/);
  const file = env.TELEMETRY_CONSENT_FILE;
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  assert.equal(fs.statSync(path.dirname(file)).mode & 0o777, 0o700);
  const offText = fs.readFileSync(file, 'utf8');
  const offTime = /off=(\S+)/.exec(offText)[1];
  assert.match(offTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
  fs.chmodSync(file, 0o644);
  fs.appendFileSync(file, 'other local 2026-01-01T00:00:00Z #+ version=3\n# a comment\n');
  const on = await createClient({ product: 'cfdev', build: '1.2.0', env }).setConsent('on');
  assert.deepEqual(on.effective, { mode: 'on', layer: 'user_file' });
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  assert.match(lines[0], /^# telemetry consent/);
  assert.equal(lines[1], 'other local 2026-01-01T00:00:00Z #+ version=3');
  assert.match(lines[2], new RegExp(`^cfdev on \\S+ off=${offTime.replace(/\./g, '\\.')}$`));
  assert.equal(lines.length, 4);
  assert.equal(fs.statSync(file).mode & 0o777, 0o644, 'an existing mode is kept');
  assert.deepEqual(await t.consent(), { mode: 'on', layer: 'user_file' });
  assert.deepEqual(fs.readdirSync(path.dirname(file)), ['consent'], 'no lock or temp file left');
  const bad = await t.setConsent('maybe');
  assert.equal(bad.status, 'refused');
});

test('setConsent keeps an unreadable consent file beside the new one and says so', async () => {
  const T = tempDir();
  const env = { ...sdkEnv(T), TELEMETRY_CONSENT_FILE: path.join(T, 'consent') };
  const file = env.TELEMETRY_CONSENT_FILE;
  // Each: the old bytes, and what `other` reads as after (as the Rust
  // writer's test): what can still be read is kept, a line with a bad byte
  // is not, nor anything past the first MiB.
  for (const [old, other] of [
    [Buffer.from('other on 2026-12-01T00:00:00Z\n\xff\nbr\xffken on\n', 'latin1'), 'on'],
    [Buffer.alloc((1 << 20) + 1, '#'), null],
  ]) {
    fs.writeFileSync(file, old);
    const out = await createClient({ product: 'cfdev', build: '1.2.0', env }).setConsent('off');
    assert.equal(out.status, 'recorded');
    const kept = fs.readdirSync(T).filter((n) => n.startsWith('consent.unreadable-'));
    assert.equal(kept.length, 1, String(kept));
    assert.equal(out.kept, path.join(T, kept[0]));
    assert.match(out.warning, /could not be read/);
    assert.deepEqual(fs.readFileSync(out.kept), old);
    const text = fs.readFileSync(file, 'utf8');
    assert.match(text, /\ncfdev off /);
    const parsed = parseConsentFile(text);
    assert.equal(entryFor(parsed, 'cfdev')?.mode, 'off');
    assert.equal(entryFor(parsed, 'other')?.mode ?? null, other, text);
    assert.ok(!text.includes('\ufffd') && !text.includes('ken'), text);
    fs.unlinkSync(out.kept);
  }
});

const posixOnly = { skip: process.platform === 'win32' };
test('setConsent writes only a regular file: no FIFO, device, socket, directory or link', posixOnly, async () => {
  const T = tempDir();
  const fifo = path.join(T, 'fifo');
  spawnSync('mkfifo', [fifo]);
  const sock = path.join(T, 'sock');
  const server = require('node:net').createServer();
  await new Promise((resolve) => server.listen(sock, () => resolve(undefined)));
  const real = path.join(T, 'real');
  fs.writeFileSync(real, 'other on\n');
  try {
    const folder = path.join(T, 'projects');
    fs.mkdirSync(folder);
    const link = path.join(T, 'link');
    fs.symlinkSync(real, link);
    const cases = [
      [fifo, 'a FIFO'],
      ['/dev/null', 'a device'],
      [sock, 'a socket'],
      [folder, 'a directory'],
      [link, 'a link (name the file itself)'],
    ];
    for (const [file, what] of cases) {
      const before = fs.lstatSync(file);
      const env = { ...sdkEnv(T), TELEMETRY_CONSENT_FILE: file };
      const r = await createClient({ product: 'cfdev', build: '1', env }).setConsent('on');
      assert.equal(r.status, 'failed', file);
      assert.ok(r.reason.includes(what) && r.reason.includes('nothing was written'), r.reason);
      const after = fs.lstatSync(file);
      assert.equal(after.ino, before.ino, `${file} was replaced`);
      assert.equal(after.mode, before.mode, file);
    }
  } finally {
    server.close();
  }
  assert.equal(fs.readFileSync(real, 'utf8'), 'other on\n');
});

test('as root: no other user\'s file, nor a directory of theirs on the way', { skip: !asRoot }, async () => {
  const T = tempDir();
  const setTo = (/** @type {string} */ file) =>
    createClient({ product: 'cfdev', build: '1', env: { ...sdkEnv(T), TELEMETRY_CONSENT_FILE: file } }).setConsent(
      'off',
    );
  const theirs = path.join(T, 'theirs');
  fs.writeFileSync(theirs, 'secret\n');
  fs.lchownSync(theirs, 65534, 65534);
  let r = await setTo(theirs);
  assert.equal(r.status, 'failed');
  assert.match(r.reason, /owned by uid 65534/);
  const theirDir = path.join(T, 'their-dir');
  fs.mkdirSync(theirDir);
  fs.lchownSync(theirDir, 65534, 65534);
  const roots = path.join(T, 'roots');
  fs.mkdirSync(roots);
  fs.symlinkSync(roots, path.join(theirDir, 'state'));
  const inTheirs = ['consent', path.join('state', 'consent'), path.join('new', 'consent')];
  for (const file of inTheirs.map((f) => path.join(theirDir, f))) {
    r = await setTo(file);
    assert.equal(r.status, 'failed', file);
    assert.match(r.reason, /is owned by uid 65534/);
  }
  assert.deepEqual(fs.readdirSync(roots), []);
  assert.equal(fs.existsSync(path.join(theirDir, 'new')), false, 'nothing made in their directory');
  const open = path.join(T, 'open');
  fs.mkdirSync(open);
  fs.chmodSync(open, 0o777);
  r = await setTo(path.join(open, 'consent'));
  assert.equal(r.status, 'failed');
  assert.match(r.reason, /may be written by other users/);
  assert.equal(fs.readFileSync(theirs, 'utf8'), 'secret\n');
});

test('setConsent: a held lock makes it fail within the budget; a stale one is taken over', async () => {
  const T = tempDir();
  const env = sdkEnv(T);
  // Another Node writer's.
  const lock = path.join(T, require('../lib/consentfile.cjs').NODE_LOCK);
  fs.writeFileSync(lock, '1\n');
  const t = createClient({ product: 'cfdev', build: '1', env, timeoutMs: 100 });
  const started = Date.now();
  const r = await t.setConsent('on');
  assert.equal(r.status, 'failed');
  assert.match(r.reason, /consent file's lock/);
  // At least a second for another writer, whatever the budget; not much more.
  const waited = Date.now() - started;
  assert.ok(waited >= 900 && waited < 3000, `${waited} ms`);
  assert.equal(fs.existsSync(env.TELEMETRY_CONSENT_FILE), false);
  const old = new Date(Date.now() - 11_000);
  fs.utimesSync(lock, old, old);
  assert.equal((await t.setConsent('on')).status, 'recorded');
  assert.equal(fs.existsSync(lock), false);
});

test('setConsent: the lock file flock users leave is waited for only while flocked, and never removed', async () => {
  const T = tempDir();
  const env = sdkEnv(T);
  const lock = path.join(T, '.consent.lock');
  fs.writeFileSync(lock, '');
  const t = createClient({ product: 'cfdev', build: '1', env, timeoutMs: 100 });
  assert.equal((await t.setConsent('on')).status, 'recorded', 'left behind, not held: not waited for');
  // Removing it while a flock writer held it would let the next one lock a
  // new file beside the held one.
  assert.equal(fs.existsSync(lock), true, 'left in place');
  if (!fs.existsSync('/usr/bin/flock') || !fs.existsSync('/proc/locks')) return;
  fs.writeFileSync(lock, '');
  const holder = spawn('/usr/bin/flock', ['-x', lock, 'sleep', '1.8'], { stdio: 'ignore' });
  const exited = new Promise((resolve) => holder.on('exit', resolve));
  const { flockHeld } = require('../lib/consentfile.cjs');
  await waitFor(() => flockHeld(lock), 5000, 'flock(1) to hold the lock');
  const r = await t.setConsent('off');
  assert.equal(r.status, 'failed', 'held for longer than the budget');
  const started = Date.now();
  const slow = await t.setConsent('off', { timeoutMs: 5000 });
  assert.equal(slow.status, 'recorded');
  assert.ok(Date.now() - started >= 100, 'waited for the holder');
  assert.equal(fs.existsSync(lock), true, 'still left in place');
  await exited;
});

test('flock holders are matched by device and inode, as /proc/locks writes them', () => {
  const { locksName } = require('../lib/consentfile.cjs');
  const locks =
    '1: FLOCK  ADVISORY  WRITE 5749 00:2e:1234 0 EOF\n' +
    '2: POSIX  ADVISORY  READ 77 103:05:99 0 EOF\n' +
    '3: FLOCK  ADVISORY  WRITE 12 fd:00:4242 0 EOF\n';
  // makedev(0, 0x2e), makedev(0x103, 5), makedev(0xfd, 0) as glibc encodes them.
  assert.equal(locksName(locks, 0x2en, 1234n), true);
  assert.equal(locksName(locks, 0x10305n, 99n), true, 'a major past 255');
  assert.equal(locksName(locks, 0xfd00n, 4242n), true);
  assert.equal(locksName(locks, 0x2fn, 1234n), false, 'the same inode on another device');
  assert.equal(locksName(locks, 0x2en, 123n), false, 'another inode');
  assert.equal(locksName(locks, 0x2en, 12345n), false, 'not a prefix match');
  assert.equal(locksName('', 0x2en, 1234n), false);
  // Large minors: glibc puts bits 8 and up of the minor above the major's 12.
  assert.equal(locksName('4: FLOCK ADVISORY WRITE 1 08:1234:7 0 EOF\n', 0x120_0834n, 7n), true);
});

test('a Node writer removes its lock only while it is still its own', async () => {
  const T = tempDir();
  const { takeLock, NODE_LOCK } = require('../lib/consentfile.cjs');
  const held = await takeLock(T, 1000);
  assert.ok(held, 'taken');
  const lock = path.join(T, NODE_LOCK);
  assert.equal(fs.readFileSync(lock, 'utf8'), `${process.pid}\n`);
  // Another writer took it over (as it may once it looks stale).
  fs.unlinkSync(lock);
  fs.writeFileSync(lock, 'other\n');
  held.release();
  assert.equal(fs.readFileSync(lock, 'utf8'), 'other\n', "the other writer's lock is left alone");
  fs.unlinkSync(lock);
  const again = await takeLock(T, 1000);
  assert.ok(again);
  again.release();
  assert.equal(fs.existsSync(lock), false, 'its own lock is removed');
  assert.deepEqual(fs.readdirSync(T), [], 'nothing left behind');
});

test('a stale lock is taken over only while it is still the stale one', () => {
  const T = tempDir();
  const { takeOverStale, NODE_LOCK } = require('../lib/consentfile.cjs');
  const lock = path.join(T, NODE_LOCK);
  const mine = path.join(T, `${NODE_LOCK}.1.2.tmp`);
  fs.writeFileSync(lock, 'dead\n');
  const old = new Date(Date.now() - 11_000);
  fs.utimesSync(lock, old, old);
  const stale = fs.statSync(lock);
  // Another writer saw it stale too and took over first: its fresh lock is
  // at the name now.
  fs.unlinkSync(lock);
  fs.writeFileSync(lock, 'other\n');
  const fresh = fs.statSync(lock);
  assert.equal(takeOverStale(lock, stale, mine), false, 'not the stale lock any more');
  assert.equal(fs.readFileSync(lock, 'utf8'), 'other\n', "the other writer's lock is put back");
  assert.equal(fs.statSync(lock).ino, fresh.ino, 'the very same file');
  assert.deepEqual(fs.readdirSync(T), [NODE_LOCK], 'nothing left aside');
  // Still the stale one: removed.
  fs.utimesSync(lock, old, old);
  assert.equal(takeOverStale(lock, fs.statSync(lock), mine), true);
  assert.deepEqual(fs.readdirSync(T), [], 'removed, nothing left aside');
  // Gone meanwhile: nothing to do.
  assert.equal(takeOverStale(lock, stale, mine), false);
});

test('setConsent from concurrent processes loses no decision', async () => {
  const T = tempDir();
  const env = sdkEnv(T);
  const index = path.resolve(__dirname, '..', 'index.cjs');
  const n = 8;
  const runs = Array.from({ length: n }, (_, i) => {
    const options = JSON.stringify({ product: `p${i}`, build: '1', env, timeoutMs: 3000 });
    const script =
      `require(${JSON.stringify(index)}).createClient(${options}).setConsent('on')` +
      ".then((r) => { if (r.status !== 'recorded') { console.error(r); process.exit(1); } })";
    return new Promise((resolve) => spawn(process.execPath, ['-e', script], { stdio: 'inherit' }).on('exit', resolve));
  });
  assert.deepEqual(await Promise.all(runs), Array(n).fill(0));
  const text = fs.readFileSync(env.TELEMETRY_CONSENT_FILE, 'utf8');
  for (let i = 0; i < n; i++) assert.match(text, new RegExp(`^p${i} on `, 'm'));
});

test('prompt: not a terminal → at once, nothing written; decided or forced off → not asked', async () => {
  const T = tempDir();
  const env = sdkEnv(T);
  const t = createClient({ product: 'cfdev', build: '1', env });
  const started = Date.now();
  assert.deepEqual(await t.prompt(), { status: 'not_a_terminal' });
  assert.deepEqual(await t.prompt('Custom text?'), { status: 'not_a_terminal' });
  assert.ok(Date.now() - started < 100);
  assert.equal(fs.existsSync(env.TELEMETRY_CONSENT_FILE), false);
  assert.deepEqual(
    await createClient({ product: 'cfdev', build: '1', env: { ...env, TELEMETRY_OPTOUT: 'yes' } }).prompt(),
    { status: 'forced_off', layer: 'environment' },
  );
  fs.writeFileSync(env.TELEMETRY_CONSENT_FILE, 'cfdev local\n');
  assert.deepEqual(await t.prompt(), { status: 'already_decided', mode: 'local' });
});

test(
  'prompt on a terminal (script(1)): asks on stderr, "y" records on',
  {},
  async () => {
    const T = tempDir();
    const env = sdkEnv(T);
    const index = path.resolve(__dirname, '..', 'index.cjs');
    const js = path.join(T, 'p.cjs');
    const options = JSON.stringify({ product: 'cfdev', build: '1', env });
    const outFile = JSON.stringify(path.join(T, 'out.json'));
    fs.writeFileSync(
      js,
      `const c = require(${JSON.stringify(index)}).createClient(${options});\n` +
        `c.prompt().then((r) => require('fs').writeFileSync(${outFile}, JSON.stringify(r)));\n`,
    );
    const r = spawnSync('/usr/bin/script', ['-qec', `${process.execPath} ${js}`, '/dev/null'], {
      input: 'Yes\n',
      timeout: 10_000,
    });
    const shown = String(r.stdout);
    assert.match(shown, /cfdev would like to collect anonymous usage telemetry/);
    assert.match(shown, /Enable anonymous telemetry for cfdev\? \[y\/N\] /);
    const out = JSON.parse(fs.readFileSync(path.join(T, 'out.json'), 'utf8'));
    assert.equal(out.status, 'asked');
    assert.equal(out.mode, 'on');
    assert.match(fs.readFileSync(env.TELEMETRY_CONSENT_FILE, 'utf8'), /^cfdev on /m);
  },
);

test('nothing ever throws: every public function with garbage', async () => {
  const sdk = require('../index.cjs');
  const T = tempDir();
  const huge = Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`k${i}`, 'x'.repeat(1000)]));
  const throwing = new Proxy(
    {},
    {
      get() {
        throw new Error('boom');
      },
      ownKeys() {
        throw new Error('boom');
      },
    },
  );
  const weird = [
    undefined,
    null,
    0,
    -1,
    NaN,
    '',
    'x'.repeat(1 << 20),
    {},
    [],
    Symbol('s'),
    () => {},
    10n,
    throwing,
    huge,
  ];
  const clients = [
    sdk.createClient(),
    sdk.createClient(null),
    sdk.createClient(/** @type {any} */ (42)),
    sdk.createClient(throwing),
    sdk.createClient({ product: 'cfdev', build: '1', env: { ...sdkEnv(T), TELEMETRY_SOCKET: 'bad\0path' } }),
    sdk.createClient({ product: 'cfdev', build: '1', socket: path.join(T, 'x'.repeat(200)), env: sdkEnv(T) }),
    sdk.createClient({ product: 'cfdev', build: '1', socket: T, env: sdkEnv(T) }),
    sdk.createClient({ product: 'cfdev', build: '1', env: /** @type {any} */ ('garbage'), timeoutMs: -5 }),
  ];
  fs.writeFileSync(path.join(T, 'consent'), 'cfdev on\n');
  for (const c of clients) {
    for (const a of weird) {
      for (const f of [c.emit, c.emitNoWait, c.setConsent, c.prompt, c.status, c.consent]) {
        let p;
        assert.doesNotThrow(() => {
          p = f(a, a, a);
        });
        const r = await p;
        assert.equal(typeof r, 'object');
        assert.ok(r !== null);
      }
    }
    assert.doesNotThrow(() => c.paths());
  }
  for (const a of weird) {
    assert.doesNotThrow(() => sdk.parseKV(a));
    assert.doesNotThrow(() => sdk.decodeResponse(a));
  }
  // A bad socket path ends as a spool or a clear failure, never an exception.
  const bad = await clients[4].emit('stop');
  assert.ok(['spooled', 'failed'].includes(bad.status), JSON.stringify(bad));
  const long = await clients[5].emit('stop');
  assert.ok(['spooled', 'failed'].includes(long.status), JSON.stringify(long));
  const dir = await clients[6].emit('stop');
  assert.ok(['spooled', 'failed'].includes(dir.status), JSON.stringify(dir));
});

test('a budget past what a timer holds is a long wait, not an instant timeout with a warning', async () => {
  const T = onDir();
  const env = sdkEnv(T);
  const server = await fakeServer(env.TELEMETRY_SOCKET, () => ACK);
  /** @type {string[]} */
  const warnings = [];
  const onWarning = (/** @type {Error} */ w) => warnings.push(w.name);
  process.on('warning', onWarning);
  try {
    const t = createClient({ product: 'cfdev', build: '1', env, timeoutMs: 2 ** 31 });
    assert.equal((await t.emit('stop')).status, 'acknowledged');
    assert.equal((await t.emit('stop', {}, { timeoutMs: 1e12 })).status, 'acknowledged');
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(warnings, []);
  } finally {
    process.off('warning', onWarning);
    await server.close();
  }
});

test('half a character (a lone surrogate) is refused locally, precisely, and never sent', async () => {
  const T = onDir();
  const env = sdkEnv(T);
  const server = await fakeServer(env.TELEMETRY_SOCKET, () => ACK);
  try {
    const t = createClient({ product: 'cfdev', build: '1', env });
    const cut = '👍'.slice(0, 1);
    for (const note of [cut, `a${cut}b`, '👍'.slice(1)]) {
      const r = await t.emit('stop', { note });
      assert.equal(r.status, 'refused', note);
      assert.equal(r.code, 'invalid');
      assert.match(r.message, /note.*half of a character/);
    }
    assert.equal(server.seen.lines.length, 0, 'nothing sent');
    assert.equal((await t.emit('stop', { note: '👍 é' })).status, 'acknowledged', 'whole text passes');
  } finally {
    await server.close();
  }
});

test('a FIFO in a consent file’s place does not hold the host', { skip: process.platform === 'win32' }, () => {
  const { execFileSync } = require('node:child_process');
  const dir = tempDir();
  const consentFile = path.join(dir, 'consent');
  const systemConsentFile = path.join(dir, 'system-consent');
  for (const p of [consentFile, systemConsentFile]) execFileSync('mkfifo', [p]);
  // In a child with a deadline: a blocking read would freeze this runner's
  // event loop, timers and all.
  const consent = () => {
    const script = `require(${JSON.stringify(require.resolve('../index.cjs'))})
      .createClient({ product: 'cfdev', env: {}, consentFile: ${JSON.stringify(consentFile)},
        systemConsentFile: ${JSON.stringify(systemConsentFile)} })
      .consent().then((r) => process.stdout.write(JSON.stringify(r)));`;
    const out = spawnSync(process.execPath, ['-e', script], { timeout: 10_000, encoding: 'utf8' });
    assert.equal(out.signal, null, 'consent() still blocked on a FIFO after 10 s');
    return JSON.parse(out.stdout);
  };
  assert.deepEqual(consent(), { mode: 'off', layer: 'default' }, 'no writer: empty files');
  // A writer that never writes (read-write, so this open does not wait).
  const w = fs.openSync(systemConsentFile, fs.constants.O_RDWR);
  try {
    assert.deepEqual(consent(), { mode: 'off', layer: 'system' }, 'a silent writer: fail closed');
  } finally {
    fs.closeSync(w);
  }
});

test('a budget of 0 or less means the default, as in the Go and Python SDKs', () => {
  for (const timeoutMs of [0, -5]) {
    assert.equal(createClient({ product: 'cfdev', build: '1', timeoutMs }).timeoutMs, 100, String(timeoutMs));
  }
  assert.equal(createClient({ product: 'cfdev', build: '1', timeoutMs: 250 }).timeoutMs, 250);
});

test('autostart: the daemon is given the paths this client used, options included', async () => {
  const T = onDir();
  const fake = path.join(T, 'fake-telemetryd');
  const out = path.join(T, 'started');
  fs.writeFileSync(fake, `#!/bin/sh\nenv > ${out}.tmp && mv ${out}.tmp ${out}\n`, { mode: 0o755 });
  const env = { ...sdkEnv(T), TELEMETRY_AUTOSTART: '', TELEMETRY_DAEMON: fake };
  const stateDir = path.join(T, 'other-state');
  const t = createClient({ product: 'cfdev', build: '1', env, stateDir });
  assert.equal((await t.emit('stop')).autostart, 'spawned');
  const text = await waitFor(() => fs.existsSync(out) && fs.readFileSync(out, 'utf8'), 5000, 'the fake daemon');
  // Where the event was spooled, so the daemon takes it in.
  assert.match(text, new RegExp(`^TELEMETRY_STATE_DIR=${stateDir}$`, 'm'));
  assert.match(text, new RegExp(`^TELEMETRY_CONSENT_FILE=${path.join(T, 'consent')}$`, 'm'));
});

const RULE = 'use 1-64 characters from a-z, 0-9 and _, starting with a letter';

test('a product name that is not one is refused (invalid, naming it and the rule), not "off (default)"', async () => {
  const T = onDir();
  const env = sdkEnv(T);
  const server = await fakeServer(env.TELEMETRY_SOCKET, () => ACK);
  try {
    for (const product of ['ACME', '', 'my-cli', undefined, 42]) {
      const t = createClient({ product: /** @type {any} */ (product), build: '1', env });
      const shown = typeof product === 'string' ? JSON.stringify(product) : String(product);
      const want = {
        status: 'refused',
        code: 'invalid',
        message: `product ${shown} is not a valid name: ${RULE}`,
      };
      assert.deepEqual(await t.emit('stop'), want, String(product));
      assert.deepEqual(await t.emitNoWait('stop'), want, String(product));
      assert.deepEqual(await t.setConsent('on'), want, String(product));
    }
    // An invalid mode is refused the same way (as in the Python SDK).
    const bogus = await createClient({ product: 'cfdev', build: '1', env }).setConsent('bogus');
    assert.deepEqual(bogus, { status: 'refused', code: 'invalid', message: 'mode "bogus" is not on, off or local' });
    assert.equal(server.seen.connections, 0);
    assert.deepEqual(fs.readdirSync(T).sort(), ['consent', 's.sock'], 'nothing written');
  } finally {
    await server.close();
  }
});

test('no build: TELEMETRY_BUILD when not empty, else "unknown" (as telemetry-emit); invalid ones refused', async () => {
  const T = onDir();
  const env = sdkEnv(T);
  const server = await fakeServer(env.TELEMETRY_SOCKET, () => ACK);
  try {
    const cases = [
      [{}, {}, 'unknown'],
      [{ build: '' }, {}, 'unknown'],
      [{}, { TELEMETRY_BUILD: '' }, 'unknown'],
      [{}, { TELEMETRY_BUILD: '2.0.1' }, '2.0.1'],
      [{ build: null }, { TELEMETRY_BUILD: '2.0.1' }, '2.0.1'],
      [{ build: '1.2.0' }, { TELEMETRY_BUILD: '2.0.1' }, '1.2.0'],
    ];
    for (const [options, vars, want] of cases) {
      const t = createClient({ product: 'cfdev', ...options, env: { ...env, ...vars } });
      const what = JSON.stringify([options, vars]);
      assert.equal(t.build, want, what);
      const r = await t.emit('stop');
      assert.equal(r.status, 'acknowledged', `${what}: ${JSON.stringify(r)}`);
      assert.equal(JSON.parse(server.seen.lines.at(-1)).emit.events[0].build, want, what);
    }
    const explicit = await createClient({ product: 'cfdev', build: '/home/alice', env }).emit('stop');
    assert.equal(explicit.status, 'refused');
    assert.match(explicit.message, /^build "\/home\/alice" is not valid/);
    const withVar = { ...env, TELEMETRY_BUILD: '1.0 beta' };
    const fromVar = await createClient({ product: 'cfdev', env: withVar }).emit('stop');
    assert.equal(fromVar.status, 'refused');
    assert.match(fromVar.message, /^build "1\.0 beta" is not valid.*\(from TELEMETRY_BUILD\)$/);
  } finally {
    await server.close();
  }
});

test('autostart: the `daemon` option (the shipped telemetryd): after TELEMETRY_DAEMON, before PATH', async () => {
  const T = onDir();
  const out = path.join(T, 'started');
  /** @param {string} name */
  const fake = (name) => {
    const p = path.join(T, name, 'telemetryd');
    fs.mkdirSync(path.dirname(p), { recursive: true });
    // Shell builtins only: PATH holds just the fake `onpath`.
    fs.writeFileSync(p, `#!/bin/sh\necho ${name} "$@" > ${out}\n`, { mode: 0o755 });
    return p;
  };
  const shipped = fake('shipped');
  const named = fake('named');
  fake('onpath');
  const base = { ...sdkEnv(T), TELEMETRY_AUTOSTART: '', PATH: path.join(T, 'onpath') };
  /**
   * Emit with nothing serving, in a fresh state dir; which fake was started.
   * @param {Record<string, string>} env
   * @param {string} daemon
   */
  const started = async (env, daemon) => {
    fs.rmSync(out, { force: true });
    fs.rmSync(path.join(T, 'state'), { recursive: true, force: true });
    const r = await createClient({ product: 'cfdev', build: '1', env, daemon }).emit('stop');
    assert.equal(r.status, 'spooled');
    assert.equal(r.autostart, 'spawned');
    const done = () => fs.existsSync(out) && fs.readFileSync(out, 'utf8');
    const text = await waitFor(() => (done() || '').endsWith('\n') && done(), 5000, 'a fake daemon');
    return String(text).trim();
  };
  assert.equal(await started(base, shipped), `shipped --autostarted --socket ${base.TELEMETRY_SOCKET}`);
  assert.match(await started({ ...base, TELEMETRY_DAEMON: named }, shipped), /^named /);
  // Not an executable file: PATH, as the Rust clients treat one beside them.
  fs.chmodSync(shipped, 0o644);
  assert.match(await started(base, shipped), /^onpath /);
  assert.match(await started(base, path.join(T, 'shipped')), /^onpath /, 'a directory');
  assert.match(await started(base, path.join(T, 'missing')), /^onpath /);
  // A relative path would be looked up from the working directory, where a
  // cloned repository could plant one: never used.
  fs.chmodSync(shipped, 0o755);
  const cwd = process.cwd();
  process.chdir(T);
  try {
    assert.match(await started(base, path.join('shipped', 'telemetryd')), /^onpath /, 'a relative path');
  } finally {
    process.chdir(cwd);
  }
  assert.match(await started(base, shipped), /^shipped /, 'the same file, named absolutely');
});
