'use strict';
// A state directory another user made first (the default without HOME,
// /tmp/telemetry-UID/state, left open to all): its consent file is not
// believed, no event is spooled there and no decision recorded.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { createClient } = require('../index.cjs');
const { tempDir, sdkEnv } = require('./helpers.cjs');
const { untrustedDir } = require('../lib/trust.cjs');

const ON = 'cfdev on 2026-12-01T00:00:00Z\n';
const posix = { skip: process.platform === 'win32' && 'no owners or mode bits to check on Windows' };

/**
 * T/telemetry-X/state holding a consent file with `cfdev on`, with `open`
 * (telemetry-X or telemetry-X/state; null: none) open to every user, as
 * another user who made it first would leave it.
 * @param {string|null} open
 */
function squatted(open) {
  const T = tempDir();
  const state = path.join(T, 'telemetry-X', 'state');
  fs.mkdirSync(state, { recursive: true, mode: 0o700 });
  const consent = path.join(state, 'consent');
  fs.writeFileSync(consent, ON, { mode: 0o600 });
  if (open) fs.chmodSync(path.join(T, open), 0o777);
  const env = { ...sdkEnv(T), TELEMETRY_STATE_DIR: state, TELEMETRY_CONSENT_FILE: consent };
  return { T, state, consent, env };
}

/** The files under `dir` but the consent file. */
function filesUnder(/** @type {string} */ dir) {
  /** @type {string[]} */
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else if (e.name !== 'consent') out.push(p);
  }
  return out;
}

/**
 * Run `fn` with the checks that root skips (it has stricter ones) made as for
 * any other user.
 * @param {() => Promise<void>} fn
 */
async function notRoot(fn) {
  const real = process.geteuid;
  if (real && real() === 0) process.geteuid = () => 12345;
  try {
    await fn();
  } finally {
    process.geteuid = real;
  }
}

for (const open of ['telemetry-X', 'telemetry-X/state']) {
  test(`a state directory another user could write (${open} open to all) is not trusted`, posix, () =>
    notRoot(async () => {
      const { T, state, consent, env } = squatted(open);
      const c = createClient({ product: 'cfdev', build: '1', env, autostart: false });
      const st = await c.consent();
      assert.equal(st.mode, 'off');
      assert.equal(st.layer, 'default');
      assert.match(st.error, /not believed/);
      assert.ok(st.error.includes(`the directory ${path.join(T, open)} is writable by every user`), st.error);
      const off = await c.emit('stop');
      assert.equal(off.status, 'off', JSON.stringify(off));
      assert.match(off.reason, /not believed/);

      // With consent from a file of the user's own, the event is not spooled
      // where the other user could read it.
      const own = path.join(T, 'own-consent');
      fs.writeFileSync(own, ON);
      const mine = createClient({
        product: 'cfdev',
        build: '1',
        env: { ...env, TELEMETRY_CONSENT_FILE: own },
        autostart: false,
      });
      for (const r of [await mine.emit('stop'), await mine.emitNoWait('stop')]) {
        assert.equal(r.status, 'failed', JSON.stringify(r));
        assert.match(r.reason, /writable by every user/);
      }
      assert.deepEqual(filesUnder(state), []);

      const set = await c.setConsent('off');
      assert.equal(set.status, 'failed', JSON.stringify(set));
      assert.match(set.reason, /writable by every user/);
      assert.match(set.reason, /TELEMETRY_STATE_DIR/);
      assert.equal(fs.readFileSync(consent, 'utf8'), ON);
    }),
  );
}

test('the same state directory made by the user (0700) is trusted', posix, () =>
  notRoot(async () => {
    const { T, state, env } = squatted(null);
    const c = createClient({ product: 'cfdev', build: '1', env, autostart: false });
    assert.deepEqual(await c.consent(), { mode: 'on', layer: 'user_file' });
    const r = await c.emit('stop');
    assert.equal(r.status, 'spooled', JSON.stringify(r));
    assert.deepEqual(filesUnder(state), [r.file]);
    const set = await c.setConsent('off');
    assert.equal(set.status, 'recorded', JSON.stringify(set));
    assert.deepEqual(await c.consent(), { mode: 'off', layer: 'user_file' });
    // Sticky above (as /tmp) is fine; a sticky directory itself is not.
    fs.chmodSync(T, 0o1777);
    assert.equal(untrustedDir(path.join(T, 'telemetry-X')), null);
    assert.match(String(untrustedDir(T)), /writable by every user/);
  }),
);
