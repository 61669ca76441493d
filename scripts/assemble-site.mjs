// Assembles the first-party site the collector serves as static assets:
// example-site/* at /, the SDK build (sdk-wasm/dist) at /sl/, the install snippet
// inlined wherever a page has the /*@sightline-snippet*/ placeholder, and the parts the
// pages share (header; footer with the newsletter form and consent banner) wherever a
// page has <!--@partial:NAME--> (example-site/partials/NAME.html).
import { cpSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const out = join(root, 'build/site');
const dist = join(root, 'sdk-wasm/dist');
const snippet = readFileSync(join(dist, 'snippet.min.js'), 'utf8').trim();
const partial = (name) => readFileSync(join(root, 'example-site/partials', `${name}.html`), 'utf8').trimEnd();

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
cpSync(join(root, 'example-site'), out, { recursive: true });
rmSync(join(out, 'partials'), { recursive: true, force: true });
cpSync(dist, join(out, 'sl'), { recursive: true });
// The tracking plan: the collector validates against it; the site team can read it here.
cpSync(join(root, 'example-site/tracking-plan.json'), join(out, 'sl/tracking-plan.json'));
cpSync(join(root, 'example-site/segments.json'), join(out, 'sl/segments.json'));
for (const f of readdirSync(out)) {
  if (!f.endsWith('.html')) continue;
  const p = join(out, f);
  const html = readFileSync(p, 'utf8')
    .replaceAll('/*@sightline-snippet*/', snippet)
    .replace(/^ *<!--@partial:([a-z-]+)-->/gm, (_, name) => partial(name));
  writeFileSync(p, html);
}
console.log(`[build] site assembled in ${out}`);
