'use strict';
// Events dropped because the spool is full are noted in the spool's drop file
// (proto/src/paths.rs `spool_drops_file`), which the daemon counts.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const sdk = require('../index.cjs');
const { spool } = require('../lib/spool.cjs');
const { haveDaemon, startDaemon, tempDir, sdkEnv, waitFor } = require('./helpers.cjs');

const ev = {
  id: '0190f5c2-7b1e-7000-8000-000000000001',
  event: 'stop',
  product: 'cfdev',
  build: '1',
  timestamp_us: 1700000000000001,
  data: {},
};

/**
 * Put MAX_SPOOL_FILES entries in `dir`, so that it is full.
 * @param {string} dir
 */
function fillSpool(dir) {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (let i = 0; i < sdk.MAX_SPOOL_FILES; i++) {
    fs.writeFileSync(path.join(dir, `${i.toString(16).padStart(16, '0')}.json`), '');
  }
}

test('spoolDropsFile: the spool path with the extension drops', () => {
  assert.equal(sdk.MAX_DROPS_BYTES, 65536);
  const cases = {
    '/st/spool/events-0123456789abcdef.d': '/st/spool/events-0123456789abcdef.drops',
    '/st/spool/events-0123456789abcdef.spool': '/st/spool/events-0123456789abcdef.drops',
    '/st/spool/plain': '/st/spool/plain.drops',
    '/st/a.b/.hidden': '/st/a.b/.hidden.drops',
    'rel.d': 'rel.drops',
  };
  for (const [spoolPath, want] of Object.entries(cases)) assert.equal(sdk.spoolDropsFile(spoolPath), want, spoolPath);
  assert.equal(
    sdk.spoolDropsFile(sdk.spoolDirFor('/st', '/s.sock')),
    `/st/spool/events-${sdk.socketHash('/s.sock')}.drops`,
  );
});

test('a full spool notes each drop, 0600, and stops noting at MAX_DROPS_BYTES', () => {
  const dir = path.join(tempDir(), 'spool', 'events-0123456789abcdef.d');
  fillSpool(dir);
  const drops = sdk.spoolDropsFile(dir);
  assert.equal(drops, path.join(path.dirname(dir), 'events-0123456789abcdef.drops'));

  assert.equal(spool(dir, [ev]).status, 'dropped');
  assert.equal(spool(dir, [{ ...ev, product: 'other' }]).status, 'dropped');
  assert.equal(fs.readFileSync(drops, 'utf8'), 'cfdev\nother\n');
  assert.equal(fs.statSync(drops).mode & 0o777, 0o600);
  assert.equal(fs.readdirSync(dir).length, sdk.MAX_SPOOL_FILES);

  // Just under the limit: one more line, even if it crosses it.
  const under = `${'x'.repeat(sdk.MAX_DROPS_BYTES - 2)}\n`;
  fs.writeFileSync(drops, under);
  assert.equal(spool(dir, [ev]).status, 'dropped');
  assert.equal(fs.readFileSync(drops, 'utf8'), `${under}cfdev\n`);

  // At or past it: nothing more, and still a drop.
  for (const size of [sdk.MAX_DROPS_BYTES, sdk.MAX_DROPS_BYTES + 5]) {
    fs.writeFileSync(drops, 'y'.repeat(size));
    assert.equal(spool(dir, [ev]).status, 'dropped');
    assert.equal(fs.statSync(drops).size, size, `${size} bytes: appended to`);
  }

  // The drop file cannot be written (a directory in its place): dropped all
  // the same, nothing thrown.
  fs.rmSync(drops);
  fs.mkdirSync(drops);
  assert.equal(spool(dir, [ev]).status, 'dropped');
});

// (Without the daemon binary, daemon.test.cjs fails; this one is skipped.)
test('the daemon counts the drops when it takes in the spool', { skip: !haveDaemon, timeout: 30_000 }, async () => {
  const T = tempDir();
  const env = sdkEnv(T);
  fs.writeFileSync(env.TELEMETRY_CONSENT_FILE, 'cfdev on\n');
  const t = sdk.createClient({ product: 'cfdev', build: '1.2.0', env, timeoutMs: 100 });
  const dir = t.paths().spoolDir;
  fillSpool(dir);
  const drops = path.join(T, 'state', 'spool', `events-${sdk.socketHash(env.TELEMETRY_SOCKET)}.drops`);
  assert.equal(sdk.spoolDropsFile(dir), drops);

  const r = await t.emit('stop');
  assert.equal(r.status, 'dropped', JSON.stringify(r));
  const r2 = await t.emitNoWait('stop');
  assert.equal(r2.status, 'dropped', JSON.stringify(r2));
  assert.equal(fs.readFileSync(drops, 'utf8'), 'cfdev\ncfdev\n');
  assert.equal(fs.statSync(drops).mode & 0o777, 0o600);

  const d = await startDaemon(T);
  try {
    await waitFor(
      async () => JSON.stringify((await d.status())?.counters?.spool_full_drops) === '[["cfdev",2]]',
      15_000,
      'counters.spool_full_drops [["cfdev",2]]',
    );
    await waitFor(() => !fs.existsSync(drops), 5000, 'the drop file removed');
  } finally {
    await d.stop();
  }
});
