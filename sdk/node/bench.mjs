// Per-event cost of the Node client against a real telemetryd (sync=full, its
// default), in process: acknowledged emits (p50, p99) and no-wait emits (p50).
// Prints one JSON line. Run from sdk/node: `node bench.mjs [N]` (default 2000);
// the daemon is TELEMETRYD_BIN, else ../../target/debug/telemetryd.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { createClient } = require('./index.cjs');
const { startDaemon, waitFor, haveDaemon, DAEMON } = require('./test/helpers.cjs');

const n = Number(process.argv[2]) || 2000;
if (!haveDaemon) {
  console.error(`bench: no telemetryd at ${DAEMON}; set TELEMETRYD_BIN`);
  process.exit(2);
}

/**
 * @param {bigint[]} ns sorted durations in ns
 * @param {number} q quantile in 0..1
 */
const quantileUs = (ns, q) => Number(ns[Math.min(ns.length - 1, Math.floor(q * ns.length))]) / 1000;

const d = await startDaemon();
try {
  const t = createClient({ product: 'cfdev', build: '1.2.0', env: d.env, timeoutMs: 10_000 });
  const on = await t.setConsent('on');
  if (on.status !== 'recorded') throw new Error(`consent: ${JSON.stringify(on)}`);

  const acked = [];
  for (let i = 0; i < n; i++) {
    const start = process.hrtime.bigint();
    const r = await t.emit('app_created', { buildpack: 'go' });
    acked.push(process.hrtime.bigint() - start);
    if (r.status !== 'acknowledged') throw new Error(`emit ${i}: ${JSON.stringify(r)}`);
  }
  const nowait = [];
  for (let i = 0; i < n; i++) {
    const start = process.hrtime.bigint();
    const r = await t.emitNoWait('stop');
    nowait.push(process.hrtime.bigint() - start);
    if (r.status !== 'queued') throw new Error(`emitNoWait ${i}: ${JSON.stringify(r)}`);
  }
  await waitFor(async () => (await d.status()).pending_events >= 2 * n, 30_000, 'the no-wait events to be stored');
  const sort = (/** @type {bigint[]} */ a) => a.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  sort(acked);
  sort(nowait);
  const round = (/** @type {number} */ x) => Math.round(x * 10) / 10;
  console.log(
    JSON.stringify({
      client: 'node',
      events: n,
      acked_p50_us: round(quantileUs(acked, 0.5)),
      acked_p99_us: round(quantileUs(acked, 0.99)),
      nowait_p50_us: round(quantileUs(nowait, 0.5)),
      node: process.version,
    }),
  );
} finally {
  await d.stop();
}
