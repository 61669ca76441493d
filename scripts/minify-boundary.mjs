// Shortens the names on the boundary between a wasm-bindgen module and its glue: the
// ~100 imports are named `__wbg_<function>_<16 hex digits>` and the closure exports
// `wasm_bindgen__convert__closures_____invoke__h<16 hex digits>`, each written twice
// (once in the wasm, once in the glue), and hex does not compress. binaryen's
// `--minify-imports-and-exports-and-modules` (the pass Emscripten runs for the same
// reason) renames them in the wasm and prints the mapping; this applies the mapping to
// the glue, and fails the build if any old name is left in it.
//
// Usage: node scripts/minify-boundary.mjs module.wasm glue.js   (both rewritten in place)
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

const [wasmPath, gluePath] = process.argv.slice(2);
if (!wasmPath || !gluePath) {
  console.error('usage: minify-boundary.mjs module.wasm glue.js');
  process.exit(2);
}
// The shipped module's features (its target-features section is stripped).
const features = ['bulk-memory', 'nontrapping-float-to-int', 'multivalue', 'reference-types', 'sign-ext', 'mutable-globals'];
const map = JSON.parse(
  execFileSync(
    'wasm-opt',
    // -Oz again after the renaming: the shorter names let it pack the module 149 bytes
    // (gzip) smaller than the -Oz before it (measured on the shipped build).
    [...features.map((f) => `--enable-${f}`), '--minify-imports-and-exports-and-modules', '-Oz', wasmPath, '-o', wasmPath],
    { encoding: 'utf8', maxBuffer: 1 << 24 },
  ),
);
const escape = (s) => s.replace(/[$]/g, '\\$&');
let glue = readFileSync(gluePath, 'utf8');
const modules = new Set(map.imports.map(([module]) => module));
if (modules.size !== 1) throw new Error(`expected one import module, found ${[...modules]}`);
const [module] = modules;
// The one module becomes "a" (binaryen's name for the merged module).
const moduleKey = `${JSON.stringify(module)}:`;
if (!glue.includes(moduleKey)) throw new Error(`the glue does not import ${module}`);
glue = glue.replace(moduleKey, '"a":');
// Imports: the keys of the glue's import object (`name: function(...)`).
for (const [, from, to] of map.imports) {
  const key = new RegExp(`(^|[\\s,{])${escape(from)}:`, 'gm');
  if (!key.test(glue)) throw new Error(`import ${from} is not in the glue`);
  glue = glue.replace(key, (_, before) => `${before}${to}:`);
}
// Exports: every `wasm.name`.
for (const [from, to] of map.exports) {
  glue = glue.replace(new RegExp(`\\bwasm\\.${escape(from)}\\b`, 'g'), `wasm.${to}`);
}
const left = [...map.imports.map(([, from]) => from), ...map.exports.map(([from]) => from)].filter(
  (n) => new RegExp(`\\bwasm\\.${escape(n)}\\b|(^|[\\s,{])${escape(n)}:`, 'm').test(glue),
);
if (left.length) throw new Error(`names left in the glue: ${left.join(', ')}`);
writeFileSync(gluePath, glue);
