'use strict';
// Every case of the shared vectors (../../vectors/*.json).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { vector, tempDir } = require('./helpers.cjs');
const sdk = require('../index.cjs');
const { spool } = require('../lib/spool.cjs');

test('consent.json: every case resolves to its mode and layer', () => {
  const v = vector('consent.json');
  assert.ok(v.cases.length >= 30);
  for (const c of v.cases) {
    const got = sdk.resolveConsent(c.product, { system: c.system, env: c.env, user: c.user });
    assert.deepEqual(got, { mode: c.mode, layer: c.layer }, c.name);
  }
});

test('kv.json: every case parses to its key and typed value', () => {
  const v = vector('kv.json');
  for (const c of v.cases) {
    const got = sdk.parseKV(c.arg);
    if (c.error) {
      assert.equal(typeof got.error, 'string', `${JSON.stringify(c.arg)} should be an error`);
      continue;
    }
    assert.deepEqual(got, { key: c.key, value: c.value }, c.arg);
  }
});

test('paths.json: every case gives the socket, state dir, consent file and spool dir', () => {
  const v = vector('paths.json');
  for (const c of v.cases) {
    const p = sdk.resolvePaths(c.env, c.uid, c.os);
    assert.equal(p.socket, c.socket, c.name);
    assert.equal(p.stateDir, c.state_dir, c.name);
    assert.equal(p.consentFile, c.consent_file, c.name);
    assert.equal(p.spoolDir, c.spool_dir, c.name);
  }
  // The overrides come first.
  const p = sdk.resolvePaths(
    { TELEMETRY_SOCKET: '/s', TELEMETRY_STATE_DIR: '/st', TELEMETRY_SYSTEM_CONSENT_FILE: '/sys', HOME: '/h' },
    1,
    'linux',
  );
  assert.deepEqual(p, {
    socket: '/s',
    stateDir: '/st',
    consentFile: '/st/consent',
    systemConsentFile: '/sys',
    spoolDir: `/st/spool/events-${sdk.socketHash('/s')}.d`,
  });
  assert.equal(sdk.resolvePaths({ HOME: '/h' }, 1, 'linux').systemConsentFile, '/etc/telemetry/consent');
});

test('paths.json spool: the file is the example line, named by the id, 0600 in a 0700 dir', () => {
  const v = vector('paths.json');
  const line = JSON.parse(v.spool.example_line);
  const ev = line.emit.events[0];
  assert.deepEqual(JSON.parse(sdk.requests.emit([ev], false)), line);
  const dir = path.join(tempDir(), 'state', 'spool', 'events-x.d');
  const r = spool(dir, [ev]);
  assert.equal(r.status, 'spooled');
  assert.equal(path.basename(r.file), v.spool.example_file);
  const text = fs.readFileSync(r.file, 'utf8');
  assert.ok(text.endsWith('}\n') && text.indexOf('\n') === text.length - 1);
  assert.deepEqual(JSON.parse(text), line);
  assert.equal(fs.statSync(r.file).mode & 0o777, 0o600);
  assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
  assert.deepEqual(fs.readdirSync(dir), [v.spool.example_file]);
  // Full at max_files entries: dropped, nothing written.
  for (let i = 1; i < v.spool.max_files; i++) fs.writeFileSync(path.join(dir, `f${i}.json`), '');
  const full = spool(dir, [{ ...ev, id: '0190f5c2-7b1e-7000-8000-0000000000ff' }]);
  assert.equal(full.status, 'dropped');
  assert.equal(fs.readdirSync(dir).length, v.spool.max_files);
});

test('protocol.json: every request encodes to an equal object', () => {
  const v = vector('protocol.json');
  assert.equal(v.protocol_version, sdk.PROTOCOL_VERSION);
  assert.equal(v.max_line_len, sdk.MAX_LINE_LEN);
  const build = {
    emit: (/** @type {any} */ f) => sdk.requests.emit(f.events, f.ack),
    status: () => sdk.requests.status(),
    flush: () => sdk.requests.flush(),
    consent_changed: (/** @type {any} */ f) => sdk.requests.consentChanged(f.product, f.build),
    show: (/** @type {any} */ f) => sdk.requests.show(f.product, f.after_seq),
    purge: (/** @type {any} */ f) => sdk.requests.purge(f.product),
    probe: () => sdk.requests.probe(),
    forget: (/** @type {any} */ f) => sdk.requests.forget(f.product, f.build),
    receipts: (/** @type {any} */ f) => sdk.requests.receipts(f.key, f.after),
    stop: () => sdk.requests.stop(),
  };
  let n = 0;
  for (const m of v.messages.filter((/** @type {any} */ m) => m.kind === 'request')) {
    const want = JSON.parse(m.json);
    const name = Object.keys(want).find((k) => k !== 'v');
    const line = build[/** @type {keyof typeof build} */ (name)](want[name]);
    assert.ok(line.endsWith('\n'), m.name);
    assert.deepEqual(JSON.parse(line), want, m.name);
    n++;
  }
  assert.equal(n, 13);
});

test('protocol.json: every response decodes', () => {
  const v = vector('protocol.json');
  let n = 0;
  for (const m of v.messages.filter((/** @type {any} */ m) => m.kind === 'response')) {
    const obj = JSON.parse(m.json);
    const name = Object.keys(obj).find((k) => k !== 'v');
    const r = sdk.decodeResponse(m.json);
    assert.equal(r.kind, name, m.name);
    assert.deepEqual(r.body, obj[name], m.name);
    n++;
  }
  assert.equal(n, 13);
  assert.equal(sdk.decodeResponse('"x"').kind, 'bad');
  const busy = sdk.decodeResponse('{"v":2,"error":{"code":"busy","message":"m"}}\n');
  assert.deepEqual(busy, { kind: 'error', body: { code: 'busy', message: 'm' } });
  assert.equal(
    sdk.decodeResponse('{"v":2,"error":{"code":"from_the_future","message":"m","extra":1}}').body.code,
    'from_the_future',
  );
  assert.equal(sdk.decodeResponse('{"v":2,"launched":{}}').kind, 'unknown');
  assert.equal(sdk.decodeResponse('{"v":3,"ack":{}}').kind, 'bad');
  assert.equal(sdk.decodeResponse('{"v":2}').kind, 'bad');
  assert.equal(sdk.decodeResponse('[1]').kind, 'bad');
  // Unknown fields of a record do not break it.
  const s = sdk.decodeResponse('{"v":2,"status":{"pending_events":3,"from_the_future":{"x":[1]}}}');
  assert.equal(s.body.pending_events, 3);
});

test('consent-files.json: each pair of files reads and resolves to its mode and layer', async () => {
  const v = vector('consent-files.json');
  assert.ok(v.cases.length >= 9);
  for (const c of v.cases) {
    const dir = tempDir();
    const consentFile = path.join(dir, 'consent');
    const systemConsentFile = path.join(dir, 'system-consent');
    for (const [file, at] of [
      [c.user, consentFile],
      [c.system, systemConsentFile],
    ]) {
      if (file) fs.writeFileSync(at, Buffer.concat([Buffer.from(file.hex, 'hex'), Buffer.alloc(file.pad || 0, '#')]));
    }
    const client = sdk.createClient({ product: 'cfdev', env: {}, consentFile, systemConsentFile });
    assert.deepEqual(await client.consent(), { mode: c.mode, layer: c.layer }, c.name);
  }
});
