// Sightline's entry for ../shared/peer-bench (run by `scripts/bench.sh sdk`): the built
// SDK from sdk-wasm/dist, loaded by its script tag, consent assumed (opt-out) as the
// peers collect without a banner, no automatic page view.
import fs from 'node:fs';

const dist = process.env.SIGHTLINE_DIST;
if (!dist || !fs.existsSync(dist)) throw new Error('set SIGHTLINE_DIST to sdk-wasm/dist');

export default {
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
