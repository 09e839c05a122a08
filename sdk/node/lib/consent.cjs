'use strict';
/**
 * Consent: the file format and how the layers combine, as proto/src/consent.rs
 * has them. Pure functions (the client reads the files); checked against
 * vectors/consent.json.
 *
 * Layers, most authoritative first: the system file (only an `off` for the
 * product or `*` counts; any damaged line, or a file that exists but cannot be
 * read, forces off), the environment (DO_NOT_TRACK / TELEMETRY_OPTOUT set to
 * anything but empty or `0`), the user file (the last valid line for the
 * product), the default (off).
 * @module
 */

const { isValidName } = require('./validate.cjs');

/** The modes a product can be in. */
const MODES = Object.freeze(['off', 'local', 'on']);
/** The opt-out environment variables. */
const OPT_OUT_VARS = Object.freeze(['DO_NOT_TRACK', 'TELEMETRY_OPTOUT']);

/**
 * Rust's `char::is_whitespace` (Unicode White_Space), which its `trim` and
 * `split_whitespace` use. JavaScript's `\s` and `trim()` differ: they take a
 * byte-order mark (U+FEFF) as space and not NEL (U+0085).
 */
const WS = '\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const WS_RUN = new RegExp(`[${WS}]+`);
const WS_EDGES = new RegExp(`^[${WS}]+|[${WS}]+$`, 'g');

/**
 * `str::trim` as Rust has it.
 * @param {string} s
 * @returns {string}
 */
function rustTrim(s) {
  return s.replace(WS_EDGES, '');
}
/** The first line of a consent file written by any client. */
const HEADER =
  '# telemetry consent, one "PRODUCT MODE TIME" per line; change it with `telemetryctl consent PRODUCT on|off|local`\n';

/**
 * @typedef {object} Entry
 * @property {string} product product name, or "*"
 * @property {"off"|"local"|"on"} mode
 * @property {string|null} since when it was decided (RFC 3339), as written
 * @property {string|null} lastOff when the product was last turned off
 * @property {number|null} version the manifest version the decision was given for
 */

/**
 * @typedef {object} ConsentFile
 * @property {Entry[]} entries valid entries in file order
 * @property {number[]} badLines 1-based numbers of lines that did not parse (0: unreadable)
 */

/**
 * ASCII-only lower case (as Rust's to_ascii_lowercase).
 * @param {string} s
 * @returns {string}
 */
function asciiLower(s) {
  return s.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

/**
 * `on`, `off` or `local` in any (ASCII) case, or null.
 * @param {unknown} s
 * @returns {"off"|"local"|"on"|null}
 */
function parseMode(s) {
  if (typeof s !== 'string') return null;
  const m = asciiLower(s);
  return MODES.includes(m) ? /** @type {"off"|"local"|"on"} */ (m) : null;
}

/**
 * A `version=` value: a whole number from 1 that fits 32 bits, else null.
 * @param {string} v
 * @returns {number|null}
 */
function parseVersion(v) {
  if (!/^\+?[0-9]+$/.test(v)) return null;
  const n = Number(v.replace(/^\+/, ''));
  return n >= 1 && n <= 0xffffffff ? n : null;
}

/**
 * Whether `key` can name a field: a-z, 0-9 and _, starting with a letter.
 * @param {string} key
 * @returns {boolean}
 */
function isFieldKey(key) {
  return /^[a-z][a-z0-9_]*$/.test(key);
}

/**
 * A line's text before any comment, and the fields after a `#+` that starts the comment.
 * @param {string} line
 * @returns {[string, string]}
 */
function splitExtension(line) {
  const i = line.indexOf('#');
  if (i < 0) return [line, ''];
  const before = line.slice(0, i);
  const after = line.slice(i + 1);
  if (!after.startsWith('+')) return [before, ''];
  return [before, after.slice(1).split('#')[0]];
}

/**
 * Parse a consent file's text.
 * @param {string} text
 * @returns {ConsentFile}
 */
function parseConsentFile(text) {
  /** @type {ConsentFile} */
  const out = { entries: [], badLines: [] };
  let whole = String(text);
  // One byte-order mark at the very start is skipped (Windows PowerShell
  // 5.1 and older Notepad write one); anywhere else it is not whitespace.
  if (whole.charCodeAt(0) === 0xfeff) whole = whole.slice(1);
  const lines = whole.split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  lines.forEach((raw, i) => {
    const [body, extension] = splitExtension(raw.endsWith('\r') ? raw.slice(0, -1) : raw);
    const line = rustTrim(body);
    if (line === '') return;
    const words = line.split(WS_RUN);
    if (words.length < 2) {
      out.badLines.push(i + 1);
      return;
    }
    const [product, modeWord, ...rest] = words;
    let since = null;
    let lastOff = null;
    let version = null;
    let keyed = false;
    let extra = false;
    for (const w of rest) {
      const eq = w.indexOf('=');
      if (eq >= 0) {
        const key = w.slice(0, eq);
        const value = w.slice(eq + 1);
        if (key === 'off') {
          if (lastOff === null) lastOff = value;
          else extra = true;
        } else if (isFieldKey(key)) {
          if (key === 'version') version = parseVersion(value);
        } else {
          extra = true;
        }
      } else if (since === null && lastOff === null && !keyed) {
        since = w;
      } else {
        extra = true;
      }
      keyed = keyed || eq >= 0;
    }
    for (const w of extension.split(WS_RUN)) {
      const eq = w.indexOf('=');
      if (eq >= 0 && w.slice(0, eq) === 'version') version = parseVersion(w.slice(eq + 1));
    }
    const mode = parseMode(modeWord);
    const validProduct = product === '*' || isValidName(product);
    if (validProduct && mode !== null && !extra) {
      out.entries.push({ product, mode, since, lastOff, version });
    } else {
      out.badLines.push(i + 1);
    }
  });
  return out;
}

/**
 * A system file that exists but cannot be read: it forces every product off.
 * @returns {ConsentFile}
 */
function unreadableConsentFile() {
  return { entries: [], badLines: [0] };
}

/**
 * The last entry for `product` (exact name; `*` does not match).
 * @param {ConsentFile|null|undefined} file
 * @param {string} product
 * @returns {Entry|null}
 */
function entryFor(file, product) {
  if (!file) return null;
  for (let i = file.entries.length - 1; i >= 0; i--) {
    if (file.entries[i].product === product) return file.entries[i];
  }
  return null;
}

/**
 * Render entries in the canonical form (one line per product, its latest
 * entry, in the order of those latest entries), header first.
 * @param {ConsentFile} file
 * @returns {string}
 */
function renderConsentFile(file) {
  const seen = new Set();
  const latest = [];
  for (let i = file.entries.length - 1; i >= 0; i--) {
    const e = file.entries[i];
    if (!seen.has(e.product)) {
      seen.add(e.product);
      latest.push(e);
    }
  }
  let out = HEADER;
  for (const e of latest.reverse()) {
    out += `${e.product} ${e.mode}`;
    if (e.since !== null && e.since !== undefined) out += ` ${e.since}`;
    if (e.lastOff !== null && e.lastOff !== undefined) out += ` off=${e.lastOff}`;
    if (e.version !== null && e.version !== undefined) out += ` #+ version=${e.version}`;
    out += '\n';
  }
  return out;
}

/**
 * Set `product` to `mode` at `since`, replacing its earlier lines. Turning it
 * off records `since` as its last off; other modes keep the earlier one.
 * @param {ConsentFile} file changed in place
 * @param {string} product
 * @param {"off"|"local"|"on"} mode
 * @param {string|null} since
 * @param {number|null} [version]
 * @returns {ConsentFile}
 */
function setEntry(file, product, mode, since, version = null) {
  const previous = entryFor(file, product);
  const lastOff = mode === 'off' ? since : previous ? previous.lastOff : null;
  file.entries = file.entries.filter((e) => e.product !== product);
  file.entries.push({ product, mode, since, lastOff, version });
  return file;
}

/**
 * Whether an opt-out variable's value means "opt out": anything but unset,
 * empty or `0` after trimming.
 * @param {unknown} value
 * @returns {boolean}
 */
function envOptsOut(value) {
  // A host may pass a number or a boolean in an env object of its own
  // (`DO_NOT_TRACK: 1`): set is set, as in the Rust client.
  if (value === undefined || value === null) return false;
  const v = rustTrim(String(value));
  return v !== '' && v !== '0';
}

/**
 * The first opt-out variable set in `env`, or null.
 * @param {Record<string, string|undefined>} env
 * @returns {string|null}
 */
function envOptOutVar(env) {
  for (const k of OPT_OUT_VARS) if (env && envOptsOut(env[k])) return k;
  return null;
}

/**
 * @typedef {object} Decision
 * @property {"off"|"local"|"on"} mode
 * @property {"system"|"environment"|"user_file"|"default"} layer the layer that decided
 */

/**
 * Combine parsed layers for `product`.
 * @param {string} product
 * @param {ConsentFile|null} system null: no system file
 * @param {boolean} envOff whether an opt-out variable is set
 * @param {ConsentFile|null} user null: no user file
 * @returns {Decision}
 */
function combine(product, system, envOff, user) {
  if (system) {
    const forced =
      system.badLines.length > 0 ||
      system.entries.some((e) => (e.product === product || e.product === '*') && e.mode === 'off');
    if (forced) return { mode: 'off', layer: 'system' };
  }
  if (envOff) return { mode: 'off', layer: 'environment' };
  const e = entryFor(user, product);
  if (e) return { mode: e.mode, layer: 'user_file' };
  return { mode: 'off', layer: 'default' };
}

/**
 * Resolve consent from the files' texts and an environment map: the pure core
 * of the consent check (the form vectors/consent.json uses).
 * @param {string} product
 * @param {{system?: string|null|{unreadable: true}, env?: Record<string, string|undefined>, user?: string|null}} inputs
 *   `system`: the system file's text, null when there is none, `{unreadable: true}` when it
 *   exists but cannot be read; `user`: the user file's text or null.
 * @returns {Decision}
 */
function resolveConsent(product, inputs) {
  const { system = null, env = {}, user = null } = inputs || {};
  let sys = null;
  if (typeof system === 'string') sys = parseConsentFile(system);
  else if (system && typeof system === 'object') sys = unreadableConsentFile();
  const usr = typeof user === 'string' ? parseConsentFile(user) : null;
  return combine(String(product), sys, envOptOutVar(env) !== null, usr);
}

module.exports = {
  MODES,
  OPT_OUT_VARS,
  HEADER,
  parseMode,
  parseConsentFile,
  unreadableConsentFile,
  entryFor,
  renderConsentFile,
  setEntry,
  envOptsOut,
  envOptOutVar,
  combine,
  resolveConsent,
};
