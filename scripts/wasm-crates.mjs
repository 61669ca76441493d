// What each crate costs in a wasm module: the bytes of its functions' code (after
// wasm-opt, with names kept), grouped by the crate a function's name starts with, and
// each group's code compressed alone (gzip -9). Exports and their inlined bodies count
// for the crate named as the second argument. Usage: node scripts/wasm-crates.mjs named.wasm [crate of the exports]
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const b = readFileSync(process.argv[2]);
let i = 8;
const leb = () => {
  let r = 0, s = 0, x;
  do { x = b[i++]; r += (x & 0x7f) * 2 ** s; s += 7; } while (x & 0x80);
  return r;
};
const names = new Map();
const bodies = [];
let imports = 0;
let data = 0;
while (i < b.length) {
  const id = b[i++];
  const size = leb();
  const end = i + size;
  if (id === 2) {
    for (let n = leb(); n--;) {
      for (let s = 0; s < 2; s++) { const l = leb(); i += l; }
      const kind = b[i++];
      if (kind === 0) { leb(); imports++; } else if (kind === 1) { i++; const f = leb(); leb(); if (f & 1) leb(); } else if (kind === 2) { const f = leb(); leb(); if (f & 1) leb(); } else i += 2;
    }
  } else if (id === 10) {
    for (let n = leb(), k = 0; k < n; k++) { const sz = leb(); bodies.push([imports + k, b.subarray(i, i + sz)]); i += sz; }
  } else if (id === 11) data = size;
  else if (id === 0) {
    const nl = leb();
    if (b.toString('utf8', i, i + nl) === 'name') {
      i += nl;
      while (i < end) {
        const sub = b[i++];
        const ss = leb();
        const subEnd = i + ss;
        if (sub === 1) for (let n = leb(); n--;) { const idx = leb(); const l = leb(); names.set(idx, b.toString('utf8', i, i + l)); i += l; }
        i = subEnd;
      }
    }
  }
  i = end;
}
const crate = (n) => {
  if (!n) return '(unnamed)';
  if (n.startsWith('__externref') || n.startsWith('__wbindgen')) return 'wasm_bindgen';
  // The module's exports (and the bodies inlined into them) are its own crate's.
  if (!n.includes('::')) return process.argv[3] || '(exports)';
  const m = n.replace(/\[[0-9a-f]+\]/g, '').replace(/^[<&]+/, '').match(/^(?:_ZN\d+)?([A-Za-z_][A-Za-z0-9_]*)/);
  const c = m ? m[1] : n;
  if (c.length === 1) return '(generic impls)';
  return ['core', 'alloc', 'std', '__rustc', 'char', 'str', 'i64', 'u64', 'usize'].includes(c) ? 'core/alloc/std' : c;
};
const groups = new Map();
for (const [idx, body] of bodies) {
  const c = crate(names.get(idx));
  if (!groups.has(c)) groups.set(c, []);
  groups.get(c).push(body);
}
const rows = [...groups].map(([c, bs]) => [c, bs.reduce((n, x) => n + x.length, 0), gzipSync(Buffer.concat(bs), { level: 9 }).length]);
rows.sort((a, b) => b[1] - a[1]);
const total = rows.reduce((n, r) => n + r[1], 0);
console.log('  crate                    code bytes   alone gz   share');
for (const [c, raw, gz] of rows.filter((r) => r[1] >= 300)) console.log(`  ${c.padEnd(24)} ${String(raw).padStart(10)} ${String(gz).padStart(10)}   ${(100 * raw / total).toFixed(1)}%`);
const rest = rows.filter((r) => r[1] < 300);
console.log(`  ${'(others)'.padEnd(24)} ${String(rest.reduce((n, r) => n + r[1], 0)).padStart(10)}`);
console.log(`  code ${total} bytes in ${bodies.length} functions; data ${data} bytes`);
if (process.env.TOP) for (const [idx, body] of [...bodies].sort((a, b) => b[1].length - a[1].length).slice(0, +process.env.TOP)) console.log(body.length, names.get(idx));
