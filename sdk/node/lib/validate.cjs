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

/** BigInts from here on (in size) are not printed. */
const BIG_SHOWN = 10n ** 80n;

/**
 * A BigInt's digits, unless it has more than 80 (printing 4 million bits
 * takes a third of a second).
 * @param {bigint} v
 * @returns {string}
 */
function bigText(v) {
  if (v > -BIG_SHOWN && v < BIG_SHOWN) return String(v);
  return `${v < 0n ? 'a negative' : 'a'} BigInt of more than 80 digits`;
}

/**
 * A value for a message, in bounded time: a string quoted and cut to 80
 * characters; a number, boolean, null or undefined as itself; anything else
 * by its kind only, never converted to a string (a 20-million-element array
 * would be joined, a host's toString run).
 * @param {unknown} v
 * @returns {string}
 */
function shown(v) {
  if (typeof v === 'string') return JSON.stringify(v.length > 80 ? v.slice(0, 80) : v);
  if (typeof v === 'bigint') return v > -BIG_SHOWN && v < BIG_SHOWN ? `${v}n` : bigText(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === undefined || v === null) return String(v);
  if (typeof v === 'symbol') return 'a symbol';
  if (typeof v === 'function') return 'a function';
  try {
    if (Array.isArray(v)) return 'an array';
  } catch {
    // a revoked proxy
  }
  return 'an object';
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
  const tooMany = { error: `data has more than ${LIMITS.maxDataEntries} entries, the maximum` };
  // Keys whose value is undefined are left out (below) and do not count, so
  // up to this many are listed and read; past it the data is refused before
  // any value is read or anything copied.
  const listed = 2 * LIMITS.maxDataEntries;
  const tooManyListed = {
    error:
      `data lists more than ${listed} keys: at most ${LIMITS.maxDataEntries} entries are sent ` +
      '(keys left undefined do not count), and no more keys than that are read',
  };
  let pairs;
  if (data instanceof Map) {
    if (data.size > listed) return tooManyListed;
    pairs = [...data.entries()];
  } else if (typeof data === 'object' && !Array.isArray(data)) {
    // Counted before anything is copied or any value read, stopping past the
    // bound: Object.entries on a million keys takes over a second (and runs
    // every getter). V8 still lists a large object's keys before the first
    // step of for...in, but that is a quarter of the cost, and no standard
    // way enumerates them lazily.
    let n = 0;
    for (const key in data) {
      if (Object.prototype.hasOwnProperty.call(data, key) && ++n > listed) return tooManyListed;
    }
    pairs = Object.entries(data);
  } else return { error: `data must be an object of name → string, integer or boolean, not ${shown(data)}` };
  // A proxy may list other keys the second time.
  if (pairs.length > listed) return tooManyListed;
  let defined = 0;
  /** @type {Record<string, string|number|bigint|boolean>} */
  const out = {};
  for (const [key, value] of pairs) {
    const bad = checkName('data key', key);
    if (bad) return { error: bad };
    // Left out, as JSON.stringify leaves it: `{cached: flags.cached}` with
    // the flag unset must not cost the host its whole event.
    if (value === undefined) continue;
    if (++defined > LIMITS.maxDataEntries) return tooMany;
    if (typeof value === 'string') {
      // A UTF-8 string has at least as many bytes as UTF-16 units: a long
      // one is refused before anything scans it (200 MB take 30 ms).
      const long = 4 * LIMITS.maxStringLen;
      if (value.length > long) {
        return {
          error: `data value for ${shown(key)} is more than ${long} bytes (maximum ${LIMITS.maxStringLen} bytes)`,
        };
      }
      const len = Buffer.byteLength(value, 'utf8');
      if (hasLoneSurrogate(value)) {
        return {
          error: `data value for ${shown(key)} is not whole text: it has half of a character (a lone surrogate)`,
        };
      }
      if (len > LIMITS.maxStringLen) {
        return {
          error: `data value for ${shown(key)} is ${len} bytes, more than the maximum of ${LIMITS.maxStringLen}`,
        };
      }
      if (hasControl(value)) {
        return {
          error: `data value for ${shown(key)} has control characters (printable text only)`,
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
        return {
          error: `data value for ${shown(key)} is ${bigText(value)}, out of range: integers are 64-bit signed`,
        };
      }
      out[key] = value;
    } else {
      return {
        error: `data value for ${shown(key)} is ${kindOf(value)}: ${ONLY}`,
      };
    }
  }
  return { data: out };
}

/**
 * What a value is, with its article: "an object", "a null", "an array".
 * @param {unknown} value
 * @returns {string}
 */
function kindOf(value) {
  const t = value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
  return `${/^[aeiou]/.test(t) ? 'an' : 'a'} ${t}`;
}

module.exports = { LIMITS, I64_MIN, I64_MAX, isValidName, shown, checkName, checkBuild, checkData, hasControl };
