// The boundary to the SDK's wasm half (src/lib.rs, the shared tracking-plan rules):
// arguments go in as one UTF-8 string of fields joined by U+001F, results come back as
// `key␟value␞` records. Hand-written instead of wasm-bindgen's generated glue, which was
// a tenth of the SDK's size budget for three string functions (see src/lib.rs).

const FS = '\x1f';

/** Instantiates the module from a fetch Response (streaming compile) or its bytes. */
export async function load(source) {
  let inst;
  if (source instanceof Response) {
    try {
      inst = await WebAssembly.instantiateStreaming(source.clone());
    } catch {
      // Served without `application/wasm`: compile from the bytes instead.
      inst = await WebAssembly.instantiate(await source.arrayBuffer());
    }
  } else inst = await WebAssembly.instantiate(source);
  const x = inst.instance.exports;
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  const call = (op, args) => {
    const bytes = enc.encode(args.map((a) => String(a).replaceAll(FS, '')).join(FS));
    const p = x.sl_alloc(bytes.length);
    new Uint8Array(x.memory.buffer, p, bytes.length).set(bytes);
    const r = x.sl_call(op, p, bytes.length);
    if (r === -1n) return undefined;
    const ptr = Number(r >> 32n);
    const len = Number(r & 0xffffffffn);
    const out = dec.decode(new Uint8Array(x.memory.buffer, ptr, len));
    x.sl_free(ptr, len);
    return out;
  };
  const records = (s) => (s || '').split('\x1e').filter(Boolean).map((r) => r.split(FS));
  return {
    /** Soft login: `{email_sha256, phone_sha256, phone_sha256_meta}` for the values
     * given, or `{error}`; normalized and hashed by tracking-plan. */
    hashIds: (email, phone, country) => Object.fromEntries(records(call(1, [country, email || '', phone || '']))),
    /** `s` with raw emails and phones replaced by their SHA-256, or undefined if none. */
    redact: (s, country) => call(2, [country, s]),
    /** The value of a field named `key` (a `phone` or `email` field is taken as one in
     * any format), with raw PII replaced, or undefined if none. */
    redactField: (key, s, country) => call(4, [country, key, s]),
    /** UTM fields (by Segment name) and click ids (`+name`) in a URL's query, decoded by
     * the browser's form-urlencoded parser and classified by tracking-plan. */
    campaign(url) {
      const q = url.indexOf('?');
      if (q < 0) return [];
      const args = [];
      for (const [k, v] of new URLSearchParams(url.slice(q + 1).split('#')[0])) args.push(k, v);
      return args.length ? records(call(3, args)) : [];
    },
  };
}
