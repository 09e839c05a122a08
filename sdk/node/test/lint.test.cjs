'use strict';
// The linter (no dev dependencies): every source file passes `node --check`
// and the house style (strict mode, no tabs or trailing blanks, a final newline).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { SDK_DIR } = require('./helpers.cjs');

/** Every .cjs, .mjs, .js and .d.ts file of the package. */
function sources(dir = SDK_DIR) {
  /** @type {string[]} */
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.name === 'node_modules' || e.name.startsWith('.')) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else if (/\.(c|m)?js$|\.d\.ts$/.test(e.name)) out.push(p);
  }
  return out;
}

test('every file passes node --check and the style rules', () => {
  const files = sources();
  assert.ok(files.length >= 15, files.join(' '));
  for (const f of files) {
    const rel = path.relative(SDK_DIR, f);
    if (!f.endsWith('.d.ts')) {
      const r = spawnSync(process.execPath, ['--check', f], { encoding: 'utf8' });
      assert.equal(r.status, 0, `${rel}: ${r.stderr}`);
    }
    const text = fs.readFileSync(f, 'utf8');
    assert.ok(text.endsWith('\n') && !text.endsWith('\n\n'), `${rel}: one final newline`);
    text.split('\n').forEach((line, i) => {
      assert.doesNotMatch(line, /\t/, `${rel}:${i + 1}: a tab`);
      assert.doesNotMatch(line, /\s$/, `${rel}:${i + 1}: trailing blanks`);
      assert.ok(line.length <= 120, `${rel}:${i + 1}: longer than 120 characters`);
    });
    if (f.endsWith('.cjs')) assert.match(text, /^'use strict';$/m, `${rel}: 'use strict'`);
  }
});
