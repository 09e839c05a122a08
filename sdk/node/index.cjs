'use strict';
/**
 * @telemetryd/client: record usage events with the local telemetryd daemon
 * over its Unix socket (JSON lines), consent first, never throwing into the
 * host and never blocking past the call's budget.
 *
 * ```js
 * const { createClient } = require('@telemetryd/client');
 * const t = createClient({ product: 'cfdev', build: '1.2.0' });
 * await t.emit('app_created', { buildpack: 'go' }); // {status: 'acknowledged', ...}
 * ```
 * @module @telemetryd/client
 */

const { DEFAULT_TIMEOUT_MS, createClient, genericPrompt, howToChange } = require('./lib/client.cjs');
const {
  parseKV,
  requests,
  decodeResponse,
  uuidv7,
  PROTOCOL_VERSION,
  MAX_LINE_LEN,
  FINAL_CODES,
} = require('./lib/wire.cjs');
const { resolveConsent, parseConsentFile, renderConsentFile, setEntry } = require('./lib/consent.cjs');
const {
  resolvePaths,
  socketHash,
  spoolDirFor,
  spoolDropsFile,
  MAX_SPOOL_FILES,
  MAX_DROPS_BYTES,
} = require('./lib/paths.cjs');
const { LIMITS } = require('./lib/validate.cjs');

module.exports = {
  DEFAULT_TIMEOUT_MS,
  FINAL_CODES,
  LIMITS,
  MAX_DROPS_BYTES,
  MAX_LINE_LEN,
  MAX_SPOOL_FILES,
  PROTOCOL_VERSION,
  createClient,
  decodeResponse,
  genericPrompt,
  howToChange,
  parseConsentFile,
  parseKV,
  renderConsentFile,
  requests,
  resolveConsent,
  resolvePaths,
  setEntry,
  socketHash,
  spoolDirFor,
  spoolDropsFile,
  uuidv7,
};
