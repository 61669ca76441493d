// The Sightline install snippet (minified into dist/snippet.min.js by the build).
// Paste it inside a <script> tag whose data attributes configure the SDK:
//   <script data-write-key="KEY" [data-consent="opt-in|opt-out"] [data-country="DE"]
//           [data-debug="true"] [data-auto-page="false"] [data-spa="false"]
//           [data-track-links="outbound downloads"]
//           [data-endpoint=""] [data-src="/sl/sightline.js"]>…</script>
// or call sightline.init({writeKey, consent, country, debug, autoPage, spa, endpoint}).
// It defines window.sightline as a command queue, so calls made before the SDK has loaded
// are kept and replayed in order, then loads the SDK asynchronously from the site's origin.
(function (w, d) {
  // Already loaded (or this snippet twice): nothing to do. Anything else under the name
  // (an element with id="sightline", which the browser puts on window) is replaced.
  var sl = w.sightline;
  if (sl && sl.initialized) return;
  if (!sl || !sl.push) sl = w.sightline = [];
  sl.initialized = true;
  var me = d.currentScript;
  var data = (me && me.dataset) || {};
  sl._c = {};
  for (var k in data) sl._c[k] = data[k];
  sl.ready = new Promise(function (resolve) {
    sl._r = resolve;
  });
  function queue(m) {
    return function () {
      sl.push([m, [].slice.call(arguments)]);
      return sl;
    };
  }
  'init track page screen identify softLogin alias group reset flush debug trackLink trackForm trackClick trackSubmit setAnonymousId'
    .split(' ')
    .forEach(function (m) {
      sl[m] = queue(m);
    });
  sl.consent = { set: queue('consent.set') };
  var s = d.createElement('script');
  s.async = true;
  // Against the page's own address, not a <base href> that points at a CDN.
  s.src = new URL(data.src || '/sl/sightline.js', location.href).href;
  // The SDK's wasm downloads, and compiles off the main thread as it arrives, alongside
  // its script rather than after it.
  // A page's fetch wrapper that throws leaves it to the SDK's script to fetch the wasm.
  // A browser without WebAssembly (iOS Lockdown Mode) does not fetch it at all.
  var wa = w.WebAssembly;
  if (wa) try {
    sl._w = fetch(s.src.replace(/[^/]*$/, 'sightline.wasm'));
    if (wa.compileStreaming) sl._w = wa.compileStreaming(sl._w);
    // Handled: a failure (a CSP that refuses WebAssembly) is reported by the SDK's
    // script, which may arrive after it, never as an unhandled rejection.
    sl._w['catch'](function () {});
  } catch (e) {
    sl._w = 0;
  }
  (d.head || d.documentElement).appendChild(s);
})(window, document);
