// Sightline's entries for ../shared/peer-bench (run by `scripts/bench.sh sdk`): the built
// SDK from sdk-wasm/dist, consent assumed (opt-out) as the peers collect without a
// banner, no automatic page view; installed by its snippet, and by a bare script tag.
import fs from 'node:fs';

const dist = process.env.SIGHTLINE_DIST;
if (!dist || !fs.existsSync(dist)) throw new Error('set SIGHTLINE_DIST to sdk-wasm/dist');

// As a site installs it: the snippet inline in the page (it defines the command queue and
// starts the wasm download alongside sightline.js), run in `before`, inside the timed
// region; the snippet inserts the SDK's script tag itself.
const snippet = fs.readFileSync(`${dist}/snippet.min.js`, 'utf8');
const attrs = { 'data-write-key': 'peerbench', 'data-consent': 'opt-out', 'data-auto-page': 'false', 'data-spa': 'false', 'data-src': '/sdk/sightline/sightline.js' };
const sightline = {
  id: 'sightline',
  label: 'sightline (wasm, install snippet)',
  serve: { '/sdk/sightline/': dist },
  scripts: [],
  before: `const s = document.createElement('script');
    for (const [k, v] of Object.entries(${JSON.stringify(attrs)})) s.setAttribute(k, v);
    s.textContent = ${JSON.stringify(snippet)};
    document.head.appendChild(s);`,
  // The SDK asks the collector for its cookie id once consent allows (no stored id).
  stubs: { '/v1/id': { ok: true, anonymousId: null } },
  init: async () => { await window.sightline.ready; },
  track: (name, props) => window.sightline.track(name, props),
  flush: () => window.sightline.flush(),
  notes: 'Sightline browser SDK (sdk-wasm/dist) installed by its inline snippet, opt-out consent.',
};

// The same SDK loaded by a bare script tag (no snippet): the wasm download starts only
// once sightline.js runs.
const tag = {
  ...sightline,
  id: 'sightline-tag',
  label: 'sightline (wasm, bare script tag)',
  before: undefined,
  scripts: [{ src: '/sdk/sightline/sightline.js', attrs: { ...attrs, 'data-src': undefined } }],
  notes: 'Sightline browser SDK (sdk-wasm/dist) loaded by a bare script tag, opt-out consent.',
};
delete tag.scripts[0].attrs['data-src'];

// The floor of load+init in this harness: one script tag with an empty script, then the
// baseline's array push and single POST.
const floor = {
  id: 'floor',
  label: 'floor: an empty script tag + array push + 1 fetch POST',
  serve: { '/sdk/floor.js': new URL('./floor.js', import.meta.url).pathname },
  scripts: ['/sdk/floor.js'],
  init: () => window.__floor,
  track: (name, props, q) => q.push({ event: name, properties: props, ts: Date.now() }),
  flush: (q) => fetch('/collect', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(q) }),
  notes: 'What fetching and running any script tag costs here, before an SDK does anything.',
};

export default [sightline, tag, floor];
