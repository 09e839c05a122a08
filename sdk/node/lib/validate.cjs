'use strict';
/**
 * The cheap checks the daemon makes on every event (proto/src/validate.rs),
 * run before anything is sent so that a host's mistake is reported precisely.
 * The catalogue (which events, keys and values a product allows) is checked by
 * the daemon only.
 * @module
 */

/** The protocol's limits (proto/src/validate.rs `Limits::default`). */
const LIMITS = Object.freeze({
  maxNameLen: 64,
  maxBuildLen: 64,
  maxDataEntries: 32,
  maxStringLen: 256,
  maxEventsPerEmit: 1000,
});

/** What data may hold, for messages. */
const ONLY = 'data holds strings, 64-bit integers and booleans only';

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

/**
 * Whether `value` is a valid product, event or data-key name: 1-64 characters
 * from a-z, 0-9 and _, starting with a letter.
 * @param {unknown} value
 * @returns {boolean}
 */
function isValidName(value) {
  return typeof value === 'string' && value.length <= LIMITS.maxNameLen && /^[a-z][a-z0-9_]*$/.test(value);
}

/**
 * A value shortened for a message (at most 80 characters).
 * @param {unknown} v
 * @returns {string}
 */
function shown(v) {
  let s;
  if (typeof v === 'string') s = v;
  else if (typeof v === 'bigint') s = `${v}n`;
  else {
    try {
      s = String(v);
    } catch {
      s = Object.prototype.toString.call(v);
    }
  }
  return JSON.stringify(s.length > 80 ? s.slice(0, 80) : s);
}

/**
 * Check a name; a message naming the field, or null when it is valid.
 * @param {string} field "product", "event" or "data key"
 * @param {unknown} value
 * @returns {string|null}
 */
function checkName(field, value) {
  if (isValidName(value)) return null;
  return (
    `${field} ${shown(value)} is not a valid name: ` +
    `use 1-${LIMITS.maxNameLen} characters from a-z, 0-9 and _, starting with a letter`
  );
}

/**
 * Check a build string; a message, or null when it is valid.
 * @param {unknown} value
 * @returns {string|null}
 */
function checkBuild(value) {
  if (
    typeof value === 'string' &&
    value.length >= 1 &&
    value.length <= LIMITS.maxBuildLen &&
    /^[A-Za-z0-9._+-]+$/.test(value)
  ) {
    return null;
  }
  return `build ${shown(value)} is not valid: use 1-${LIMITS.maxBuildLen} characters from A-Z, a-z, 0-9 and . _ + -`;
}

/**
 * Whether a string has a control character (Unicode category Cc, as Rust's char::is_control).
 * @param {string} s
 * @returns {boolean}
 */
function hasControl(s) {
  // eslint-disable-next-line no-control-regex
  return /[\u0000-\u001f\u007f-\u009f]/.test(s);
}

/**
 * Whether a string has a lone UTF-16 surrogate (what cutting an emoji in two leaves):
 * no UTF-8 encodes it, so the daemon would refuse the line as malformed.
 * @param {string} s
 * @returns {boolean}
 */
function hasLoneSurrogate(s) {
  return /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);
}

/**
 * Check and normalise event data: a plain object (or Map) of name → string |
 * integer (a safe-integer number or a BigInt within 64 bits) | boolean.
 * Returns the data with integers outside the safe range kept as BigInt, or an
 * error message.
 * @param {unknown} data
 * @returns {{data: Record<string, string|number|bigint|boolean>}|{error: string}}
 */
function checkData(data) {
  if (data === undefined || data === null) return { data: {} };
  let pairs;
  if (data instanceof Map) pairs = [...data.entries()];
  else if (typeof data === 'object' && !Array.isArray(data)) pairs = Object.entries(data);
  else return { error: `data must be an object of name → string, integer or boolean, not ${shown(data)}` };
  if (pairs.length > LIMITS.maxDataEntries) {
    return { error: `data has ${pairs.length} entries, more than the maximum of ${LIMITS.maxDataEntries}` };
  }
  /** @type {Record<string, string|number|bigint|boolean>} */
  const out = {};
  for (const [key, value] of pairs) {
    const bad = checkName('data key', key);
    if (bad) return { error: bad };
    if (typeof value === 'string') {
      const len = Buffer.byteLength(value, 'utf8');
      if (hasLoneSurrogate(value)) {
        return {
          error: `data value for ${shown(key)} is not whole text: it has half of a character (a lone surrogate)`,
        };
      }
      if (len > LIMITS.maxStringLen || hasControl(value)) {
        return {
          error:
            `data value for ${shown(key)} is ${len} bytes or has control characters ` +
            `(maximum ${LIMITS.maxStringLen} bytes, printable text only)`,
        };
      }
      out[key] = value;
    } else if (typeof value === 'boolean') {
      out[key] = value;
    } else if (typeof value === 'number') {
      if (!Number.isInteger(value)) {
        return {
          error: `data value for ${shown(key)} is ${value}, not a whole number: ${ONLY}`,
        };
      }
      if (!Number.isSafeInteger(value)) {
        return {
          error:
            `data value for ${shown(key)} is ${value}, beyond the exactly representable integers (±2^53-1): ` +
            'pass a BigInt for larger 64-bit values',
        };
      }
      out[key] = value;
    } else if (typeof value === 'bigint') {
      if (value < I64_MIN || value > I64_MAX) {
        return { error: `data value for ${shown(key)} is ${value}, out of range: integers are 64-bit signed` };
      }
      out[key] = value;
    } else {
      return {
        error: `data value for ${shown(key)} is a ${value === null ? 'null' : typeof value}: ${ONLY}`,
      };
    }
  }
  return { data: out };
}

module.exports = { LIMITS, I64_MIN, I64_MAX, isValidName, checkName, checkBuild, checkData, hasControl };
