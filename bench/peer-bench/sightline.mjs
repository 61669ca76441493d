// Sightline's entries for ../shared/peer-bench (run by `scripts/bench.sh sdk`): the built
// SDK from sdk-wasm/dist, loaded by its script tag, consent assumed (opt-out) as the
// peers collect without a banner, no automatic page view.
import fs from 'node:fs';

const dist = process.env.SIGHTLINE_DIST;
if (!dist || !fs.existsSync(dist)) throw new Error('set SIGHTLINE_DIST to sdk-wasm/dist');

const sightline = {
  id: 'sightline',
  label: 'sightline (wasm)',
  serve: { '/sdk/sightline/': dist },
  scripts: [{
    src: '/sdk/sightline/sightline.js',
    attrs: { 'data-write-key': 'peerbench', 'data-consent': 'opt-out', 'data-auto-page': 'false', 'data-spa': 'false' },
  }],
  // The SDK asks the collector for its cookie id once consent allows (no stored id).
  stubs: { '/v1/id': { ok: true, anonymousId: null } },
  init: async () => { await window.sightline.ready; },
  track: (name, props) => window.sightline.track(name, props),
  flush: () => window.sightline.flush(),
  notes: 'Sightline browser SDK (sdk-wasm/dist): snippet-less load, opt-out consent.',
};

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

export default [sightline, floor];
