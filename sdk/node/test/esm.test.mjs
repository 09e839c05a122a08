// The package loads both ways, by path and by its own name, with the same API.
import test from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import * as esm from '../index.mjs';
import * as byName from '@telemetryd/client';
import { createClient, parseKV } from '@telemetryd/client';

const require = createRequire(import.meta.url);

test('import and require give the same functions', () => {
  const cjs = require('../index.cjs');
  const cjsByName = require('@telemetryd/client');
  assert.equal(cjsByName, cjs);
  assert.equal(byName.createClient, cjs.createClient);
  assert.equal(createClient, cjs.createClient);
  assert.deepEqual(Object.keys(esm).sort(), Object.keys(cjs).sort());
  assert.deepEqual(parseKV('count=3'), { key: 'count', value: 3 });
});

test('an ESM host gets an outcome, never an exception', async () => {
  const t = createClient({
    product: 'cfdev',
    build: '1.2.0',
    env: {
      TELEMETRY_SOCKET: '/nonexistent/s.sock',
      TELEMETRY_CONSENT_FILE: '/nonexistent/consent',
      TELEMETRY_SYSTEM_CONSENT_FILE: '/nonexistent/sys',
    },
  });
  assert.deepEqual(await t.emit('app_created', { buildpack: 'go' }), { status: 'off', layer: 'default' });
});
