// The inspector's hashing (dist/sightline-hash.mjs and .wasm): the SDK's engine built
// with the `inspector` feature, instantiated without starting the SDK, so a profile
// search hashes a typed email or phone by the same rules as a soft login, and only the
// hash leaves the page.
import init, { hashIdentifier } from '../pkg-inspector/sdk_wasm.js';

export async function load(wasmUrl) {
  await init({ module_or_path: fetch(wasmUrl) });
  return (kind, value, country) => hashIdentifier(kind, value, country);
}
