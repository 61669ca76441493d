// Boots the SDK: loads the wasm next to this script, creates the SDK with the snippet's
// configuration, replaces the command-queue stub with the real API and replays, in
// order, the calls made before load. Bundled with the wasm-bindgen glue into
// dist/sightline.js.
import init, { Sightline } from '../pkg/sightline.js';

const w = window;
const me = document.currentScript;
const base = (me && me.src) || location.href;

function boot() {
  const stub = w.sightline || [];
  const cfg = stub._c || {};
  init({ module_or_path: new URL('sightline.wasm', base) })
    .then(() => {
      const sdk = new Sightline(cfg);
      const api = {
        initialized: true,
        ready: stub.ready || Promise.resolve(),
        track: (event, properties) => sdk.track(String(event), properties),
        page: (name, properties) => sdk.page(name, properties),
        flush: () => sdk.flush(),
        anonymousId: () => sdk.anonymousId(),
      };
      w.sightline = api;
      const queued = Array.isArray(stub) ? stub.slice() : [];
      for (const [method, args] of queued) {
        if (typeof api[method] === 'function') api[method](...args);
      }
      if (stub._r) stub._r();
    })
    .catch((e) => console.error('[sightline] failed to start', e));
}

boot();
