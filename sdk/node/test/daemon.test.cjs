'use strict';
// Against the real telemetryd (TELEMETRYD_BIN, default ../../target/debug/telemetryd),
// one daemon per test in a temp dir.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { createClient } = require('../index.cjs');
const { exchange } = require('../lib/transport.cjs');
const { requests } = require('../lib/wire.cjs');
const { haveDaemon, DAEMON, CTL, startDaemon, tempDir, sdkEnv, waitFor } = require('./helpers.cjs');

// No daemon is a failure, not a skip: a suite that passes without its
// daemon proves nothing.
test('the daemon binary is there', () => {
  assert.ok(haveDaemon, `no telemetryd at ${DAEMON}: build it (cargo build --workspace --bins) or set TELEMETRYD_BIN`);
});
const opts = { skip: !haveDaemon, timeout: 30_000 };

/**
 * @param {Record<string, string|undefined>} env
 * @param {object} [more]
 */
const client = (env, more = {}) => createClient({ product: 'cfdev', build: '1.2.0', env, timeoutMs: 2000, ...more });

test('consent off: the daemon sees nothing and no spool dir is made', opts, async () => {
  const d = await startDaemon();
  try {
    const t = client(d.env);
    assert.deepEqual(await t.emit('app_created', { buildpack: 'go' }), { status: 'off', layer: 'default' });
    assert.deepEqual(await t.emitNoWait('stop'), { status: 'off', layer: 'default' });
    const s = await d.status();
    assert.equal(s.pending_events, 0);
    assert.deepEqual(s.refusals, []);
    assert.equal(fs.existsSync(path.join(d.env.TELEMETRY_STATE_DIR, 'spool')), false);
  } finally {
    await d.stop();
  }
});

test('setConsent on, then emit: acknowledged and pending; no-wait reaches it; status works', opts, async () => {
  const d = await startDaemon();
  try {
    const t = client(d.env);
    const on = await t.setConsent('on');
    assert.equal(on.status, 'recorded');
    assert.equal(on.daemonNotified, true, JSON.stringify(on));
    assert.equal(on.applied.consent.mode, 'on');
    assert.equal(on.applied.file, d.env.TELEMETRY_CONSENT_FILE);
    assert.match(fs.readFileSync(d.env.TELEMETRY_CONSENT_FILE, 'utf8'), /^cfdev on \S+ #\+ version=1$/m);
    const r = await t.emit('app_created', { buildpack: 'go' });
    assert.deepEqual({ ...r, id: undefined }, { status: 'acknowledged', id: undefined, accepted: 1, duplicates: 0 });
    const r2 = await t.emit('start_end', { duration_s: 42n, success: true });
    assert.equal(r2.status, 'acknowledged');
    const st = await t.status();
    assert.equal(st.status, 'ok');
    assert.equal(st.report.pending_events, 2);
    assert.equal(typeof st.report.daemon_version, 'string');
    assert.deepEqual(
      st.report.consent
        .filter((/** @type {any} */ c) => c.product === 'cfdev')
        .map((/** @type {any} */ c) => [c.mode, c.layer]),
      [['on', 'user_file']],
    );
    assert.equal((await t.emitNoWait('stop')).status, 'queued');
    await waitFor(async () => (await d.status()).pending_events === 3, 5000, 'the no-wait event');
    if (fs.existsSync(CTL)) {
      const shown = execFileSync(CTL, ['--socket', d.socket, 'show'], { env: { ...d.env }, encoding: 'utf8' });
      assert.match(shown, /app_created/);
      assert.match(shown, /"buildpack":"go"/);
    }
  } finally {
    await d.stop();
  }
});

test('refused: an event not in the catalogue → not_in_catalogue, nothing spooled', opts, async () => {
  const d = await startDaemon();
  fs.writeFileSync(d.env.TELEMETRY_CONSENT_FILE, 'cfdev on\n');
  try {
    const t = client(d.env);
    const r = await t.emit('no_such_event');
    assert.equal(r.status, 'refused');
    assert.equal(r.code, 'not_in_catalogue');
    assert.match(r.message, /no_such_event/);
    const bad = await t.emit('start_end', { duration_s: 999999 });
    assert.equal(bad.code, 'not_in_catalogue', JSON.stringify(bad));
    assert.equal(fs.existsSync(path.join(d.env.TELEMETRY_STATE_DIR, 'spool')), false);
    const s = await d.status();
    assert.equal(s.pending_events, 0);
    assert.ok(s.refusals.some((/** @type {any} */ x) => x.code === 'not_in_catalogue' && x.product === 'cfdev'));
  } finally {
    await d.stop();
  }
});

test('daemon down: spooled exactly; a daemon started later takes it in', opts, async () => {
  const T = tempDir();
  const env = sdkEnv(T);
  fs.writeFileSync(env.TELEMETRY_CONSENT_FILE, 'cfdev on\n');
  const t = client(env);
  const r = await t.emit('app_created', { buildpack: 'go' });
  assert.equal(r.status, 'spooled');
  const r2 = await t.emitNoWait('stop');
  assert.equal(r2.status, 'spooled');
  const dir = t.paths().spoolDir;
  assert.deepEqual(fs.readdirSync(dir).sort(), [`${r.id}.json`, `${r2.id}.json`].sort());
  const d = await startDaemon(T);
  try {
    await waitFor(async () => (await d.status()).pending_events === 2, 10_000, 'the spool taken in');
    await waitFor(() => fs.readdirSync(dir).length === 0, 5000, 'the spool files removed');
    // And the socket path works again once the daemon runs.
    const again = await t.emit('stop');
    assert.equal(again.status, 'acknowledged');
  } finally {
    await d.stop();
  }
});

test('setConsent off notifies the daemon (status shows off) and writes the file', opts, async () => {
  const d = await startDaemon();
  try {
    const t = client(d.env);
    assert.equal((await t.setConsent('on')).daemonNotified, true);
    assert.equal((await t.emit('stop')).status, 'acknowledged');
    const off = await t.setConsent('off');
    assert.equal(off.status, 'recorded');
    assert.equal(off.daemonNotified, true);
    assert.equal(off.applied.consent.mode, 'off');
    assert.equal(off.applied.final_event, true);
    assert.match(fs.readFileSync(d.env.TELEMETRY_CONSENT_FILE, 'utf8'), /^cfdev off (\S+) off=\1$/m);
    const s = await t.status();
    const c = s.report.consent.find((/** @type {any} */ x) => x.product === 'cfdev');
    assert.equal(c.mode, 'off');
    assert.deepEqual(await t.emit('stop'), { status: 'off', layer: 'user_file' });
    assert.equal((await t.setConsent('local')).applied.consent.mode, 'local');
    assert.equal((await t.emit('stop')).status, 'acknowledged');
  } finally {
    await d.stop();
  }
});

test('setConsent to another file than the daemon reads: written, but not_applied, naming both', opts, async () => {
  const d = await startDaemon();
  try {
    assert.equal((await client(d.env).setConsent('on')).daemonNotified, true);
    const other = path.join(d.T, 'elsewhere', 'consent');
    const off = await client(d.env, { consentFile: other }).setConsent('off');
    assert.equal(off.status, 'not_applied', JSON.stringify(off));
    assert.equal(off.daemonNotified, false);
    assert.equal(off.file, other);
    assert.equal(off.daemonFile, d.env.TELEMETRY_CONSENT_FILE);
    assert.equal(
      off.message,
      `telemetryd reads consent from ${d.env.TELEMETRY_CONSENT_FILE}, but this program wrote ${other}; ` +
        `set TELEMETRY_CONSENT_FILE=${d.env.TELEMETRY_CONSENT_FILE} (for this program, telemetryctl and ` +
        'telemetry-emit) so they agree, then try again',
    );
    // Written all the same, as telemetryctl does; the daemon keeps on.
    assert.match(fs.readFileSync(other, 'utf8'), /^cfdev off /m);
    const c = (await d.status()).consent.find((/** @type {any} */ x) => x.product === 'cfdev');
    assert.equal(c.mode, 'on');
    // The daemon's own file, spelt with a `.` and a double slash: applied.
    const same = await client(d.env, { consentFile: `${d.T}/.//consent` }).setConsent('off');
    assert.equal(same.status, 'recorded', JSON.stringify(same));
    assert.equal(same.daemonNotified, true);
    // Reached through a linked directory, it is the same file too.
    const link = path.join(d.T, 'linked');
    fs.symlinkSync(d.T, link);
    const linked = await client(d.env, { consentFile: path.join(link, 'consent') }).setConsent('local');
    assert.equal(linked.status, 'recorded', JSON.stringify(linked));
  } finally {
    await d.stop();
  }
});

test('no build given: the daemon stores TELEMETRY_BUILD, else "unknown", as from telemetry-emit', opts, async () => {
  const d = await startDaemon();
  try {
    fs.writeFileSync(d.env.TELEMETRY_CONSENT_FILE, 'cfdev on\n');
    const ids = new Map();
    for (const [vars, want] of [
      [{}, 'unknown'],
      [{ TELEMETRY_BUILD: '2.0.1' }, '2.0.1'],
    ]) {
      const r = await createClient({ product: 'cfdev', env: { ...d.env, ...vars }, timeoutMs: 2000 }).emit('stop');
      assert.equal(r.status, 'acknowledged', JSON.stringify(r));
      ids.set(r.id, want);
    }
    const x = await exchange(d.socket, requests.show('cfdev', 0), 2000, true);
    assert.equal(x.reply && x.reply.kind, 'events', JSON.stringify(x));
    const stored = new Map(
      x.reply.body.events.map((/** @type {any} */ e) => {
        const ev = JSON.parse(e.line);
        return [ev.id, ev.build];
      }),
    );
    for (const [id, want] of ids) assert.equal(stored.get(id), want, id);
  } finally {
    await d.stop();
  }
});

test('600 emits at once, past the daemon\'s connection limit: all acknowledged, none refused busy', opts, async () => {
  const d = await startDaemon();
  try {
    const t = client(d.env, { timeoutMs: 20_000 });
    assert.equal((await t.setConsent('on')).status, 'recorded');
    const outs = await Promise.all(Array.from({ length: 600 }, () => t.emit('stop')));
    const kinds = outs.reduce((/** @type {Record<string, number>} */ n, o) => {
      n[o.status] = (n[o.status] || 0) + 1;
      return n;
    }, {});
    assert.deepEqual(kinds, { acknowledged: 600 });
    const s = await d.status();
    assert.equal(s.pending_events, 600);
    assert.deepEqual(s.refusals, []);
  } finally {
    await d.stop();
  }
});
