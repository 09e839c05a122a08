'use strict';
/**
 * The JSON-lines protocol (proto/src/json.rs): one object a line, the protocol
 * version under "v" and exactly one other key naming the message. Encoders for
 * every request, a decoder for every reply, event ids (UUIDv7) and the
 * `KEY=VALUE` helper. No I/O.
 * @module
 */

const crypto = require('node:crypto');
const { I64_MIN, I64_MAX } = require('./validate.cjs');

/** The protocol version written under "v". */
const PROTOCOL_VERSION = 2;
/** Longest line accepted in either direction, newline included. */
const MAX_LINE_LEN = 2 * 64 * 1024;
/** Error codes after which an event is not sent again (and not spooled). */
const FINAL_CODES = Object.freeze([
  'consent_off',
  'invalid',
  'not_in_catalogue',
  'permission_denied',
  'malformed',
  'frame_too_large',
]);
/** The replies this client knows. */
const RESPONSE_KINDS = Object.freeze([
  'ack',
  'queued',
  'status',
  'flushed',
  'error',
  'consent_applied',
  'events',
  'purged',
  'probed',
  'forgotten',
  'receipts',
  'stopping',
]);

/**
 * JSON text of a value, writing BigInt as a plain JSON integer (64-bit data
 * values do not fit a double).
 * @param {unknown} v
 * @returns {string}
 */
function stringify(v) {
  if (v === null || v === undefined) return 'null';
  switch (typeof v) {
    case 'bigint':
      return v.toString();
    case 'number':
      return Number.isFinite(v) ? String(v) : 'null';
    case 'boolean':
      return v ? 'true' : 'false';
    case 'string':
      return JSON.stringify(v);
    case 'object':
      if (Array.isArray(v)) return `[${v.map(stringify).join(',')}]`;
      return `{${Object.entries(v)
        .filter(([, x]) => x !== undefined)
        .map(([k, x]) => `${JSON.stringify(k)}:${stringify(x)}`)
        .join(',')}}`;
    default:
      return 'null';
  }
}

/**
 * One message as a line: {"v":2,"<name>":<fields>} and a newline.
 * @param {string} name the message's variant in snake_case
 * @param {object} fields
 * @returns {string}
 */
function encodeLine(name, fields) {
  return `{"v":${PROTOCOL_VERSION},${JSON.stringify(name)}:${stringify(fields)}}\n`;
}

/**
 * A fresh UUIDv7 as a lowercase hyphenated string: 48-bit Unix time in ms,
 * version 7, variant 10, random rest.
 * @param {number} [ms] the time to embed (default now)
 * @returns {string}
 */
function uuidv7(ms = Date.now()) {
  const b = crypto.randomBytes(16);
  let t = BigInt(Math.max(0, Math.floor(ms)));
  for (let i = 5; i >= 0; i--) {
    b[i] = Number(t & 0xffn);
    t >>= 8n;
  }
  b[6] = 0x70 | (b[6] & 0x0f);
  b[8] = 0x80 | (b[8] & 0x3f);
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * Now, in whole microseconds since the Unix epoch.
 * @returns {number}
 */
function nowMicros() {
  // The wall clock, not timeOrigin + performance.now(): that monotonic sum stops
  // while a laptop sleeps and ignores clock steps, so a long-lived host's events
  // would lag by hours.
  return Date.now() * 1000;
}

/**
 * @typedef {object} WireEvent
 * @property {string} id UUID string
 * @property {string} event
 * @property {string} product
 * @property {string} build
 * @property {number|bigint} timestamp_us
 * @property {Record<string, string|number|bigint|boolean>} data
 */

/**
 * A WireEvent with a fresh id and the current time.
 * @param {string} product
 * @param {string} event
 * @param {string} build
 * @param {Record<string, string|number|bigint|boolean>} data
 * @returns {WireEvent}
 */
function makeEvent(product, event, build, data) {
  const us = nowMicros();
  return { id: uuidv7(Math.floor(us / 1000)), event, product, build, timestamp_us: us, data };
}

/** Encoders for every request, each returning the line with its newline. */
const requests = Object.freeze({
  /**
   * @param {WireEvent[]} events
   * @param {boolean} ack
   */
  emit: (events, ack) => encodeLine('emit', { events, ack: Boolean(ack) }),
  status: () => encodeLine('status', {}),
  flush: () => encodeLine('flush', {}),
  /**
   * @param {string} product
   * @param {string} build
   */
  consentChanged: (product, build) => encodeLine('consent_changed', { product, build }),
  /**
   * @param {string|null} product
   * @param {number} afterSeq
   */
  show: (product, afterSeq) => encodeLine('show', { product: product ?? null, after_seq: afterSeq }),
  /** @param {string|null} product */
  purge: (product) => encodeLine('purge', { product: product ?? null }),
  probe: () => encodeLine('probe', {}),
  /**
   * @param {string} product
   * @param {string} build
   */
  forget: (product, build) => encodeLine('forget', { product, build }),
  /**
   * @param {string|null} key
   * @param {number} after
   */
  receipts: (key, after) => encodeLine('receipts', { key: key ?? null, after }),
  stop: () => encodeLine('stop', {}),
});

/**
 * @typedef {object} Reply
 * @property {string} kind "ack", "queued", "status", "flushed", "error",
 *   "consent_applied", "events", "purged", "probed", "forgotten", "receipts", "stopping",
 *   "unknown" (a newer reply) or "bad" (not a reply)
 * @property {any} body the message's fields (for "error": {code, message})
 * @property {string} [problem] for "bad": what is wrong
 */

/**
 * Decode one reply line (with or without its newline). Never throws.
 * @param {string|Buffer} line
 * @returns {Reply}
 */
function decodeResponse(line) {
  let obj;
  try {
    obj = JSON.parse(String(line));
  } catch (e) {
    return { kind: 'bad', body: null, problem: `not a JSON object: ${e instanceof Error ? e.message : String(e)}` };
  }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    return { kind: 'bad', body: null, problem: 'not a JSON object' };
  }
  if (obj.v !== PROTOCOL_VERSION) {
    return {
      kind: 'bad',
      body: null,
      problem: `protocol version ${JSON.stringify(obj.v)}, expected ${PROTOCOL_VERSION}`,
    };
  }
  const keys = Object.keys(obj).filter((k) => k !== 'v');
  if (keys.length !== 1) {
    return { kind: 'bad', body: null, problem: `expected one message beside "v", found ${JSON.stringify(keys)}` };
  }
  const name = keys[0];
  let body = obj[name];
  if (body === null) body = {};
  if (!RESPONSE_KINDS.includes(name)) return { kind: 'unknown', body, problem: `unknown reply ${name}` };
  if (name === 'error') {
    const code = body && typeof body.code === 'string' ? body.code : 'unknown';
    const message = body && typeof body.message === 'string' ? body.message : '';
    return { kind: 'error', body: { ...body, code, message } };
  }
  return { kind: name, body };
}

/** The largest count an `ack` carries (a u32 in the protocol). */
const MAX_COUNT = 0xffffffff;

/**
 * The counts of an `ack` reply, read as the Go SDK reads them: `accepted`
 * and `duplicates`, each a whole number from 0 to 2^32-1 (missing or null:
 * 0). Anything else is not an acknowledgement (the event is spooled): a
 * reply that cannot be read must not be taken for a commit.
 * @param {unknown} body
 * @returns {{accepted: number, duplicates: number}|{problem: string}}
 */
function readAck(body) {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return { problem: 'the ack is not an object' };
  const out = { accepted: 0, duplicates: 0 };
  for (const k of /** @type {const} */ (['accepted', 'duplicates'])) {
    const v = /** @type {any} */ (body)[k];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_COUNT) {
      return { problem: `the ack's ${k} is not a whole number from 0 to ${MAX_COUNT}` };
    }
    out[k] = v;
  }
  return out;
}

/**
 * Parse a `KEY=VALUE` string into typed event data as telemetry-emit does
 * (vectors/kv.json): split at the first `=`; `true`/`false` become booleans; a
 * whole decimal number that fits 64 bits becomes an integer (a number when
 * safe, else a BigInt); anything else is text. `KEY:=VALUE` (when the first
 * `:=` comes before any `=`) forces text. Never throws.
 * @param {string} arg
 * @returns {{key: string, value: string|number|bigint|boolean}|{error: string}}
 */
function parseKV(arg) {
  if (typeof arg !== 'string') return { error: `expected a KEY=VALUE string, got ${typeof arg}` };
  const colon = arg.indexOf(':=');
  if (colon >= 0 && !arg.slice(0, colon).includes('=')) {
    return { key: arg.slice(0, colon), value: arg.slice(colon + 2) };
  }
  const eq = arg.indexOf('=');
  if (eq < 0) return { error: `expected KEY=VALUE, got ${JSON.stringify(arg)}` };
  const key = arg.slice(0, eq);
  const v = arg.slice(eq + 1);
  if (v === 'true') return { key, value: true };
  if (v === 'false') return { key, value: false };
  if (/^[+-]?[0-9]+$/.test(v)) {
    const n = BigInt(v.startsWith('+') ? v.slice(1) : v);
    if (n >= I64_MIN && n <= I64_MAX) {
      return {
        key,
        value: n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n,
      };
    }
  }
  return { key, value: v };
}

module.exports = {
  PROTOCOL_VERSION,
  MAX_LINE_LEN,
  FINAL_CODES,
  RESPONSE_KINDS,
  stringify,
  encodeLine,
  uuidv7,
  nowMicros,
  makeEvent,
  requests,
  decodeResponse,
  readAck,
  parseKV,
};
