// The demo site's own script: a consent banner, a newsletter form that soft-logs the
// visitor in (the SDK hashes the email in the browser; the raw address is never sent),
// and a personal offer for returning customers (only with personalization consent).
(function () {
  var banner = document.getElementById('consent-banner');
  // The offer: segments() answers nothing personal without personalization consent, so
  // a visitor who declined sees the same page as a new one.
  function offer() {
    return sightline.segments().then(function (r) {
      var el = document.getElementById('offer');
      var back = r.segments.indexOf('returning-customer') >= 0;
      el.textContent = back ? 'Welcome back! Your next bag is 10% off with code BACK10.' : '';
      el.hidden = !back;
      el.dataset.segments = r.segments.join(' ');
    });
  }
  window.sightlineOffer = offer;
  function choose(all) {
    // `version`: the banner's notice, kept with the choice in the consent log.
    sightline.consent.set({ analytics: all, marketing: all, personalization: all, source: 'banner', version: '2026-11' });
    banner.hidden = true;
    offer();
  }
  document.getElementById('consent-accept').addEventListener('click', function () { choose(true); });
  document.getElementById('consent-necessary').addEventListener('click', function () { choose(false); });
  sightline.ready.then(function () {
    if (!sightline.consent.get().decided) banner.hidden = false;
    offer();
  });

  var form = document.getElementById('newsletter');
  form.addEventListener('submit', function (e) {
    e.preventDefault();
    var input = form.elements.email;
    var r = sightline.softLogin({ email: input.value });
    var status = document.getElementById('newsletter-status');
    if (r.email_sha256) {
      sightline.track('Newsletter Subscribed', { email_sha256: r.email_sha256, source: 'footer' });
      status.textContent = 'Thanks for subscribing!';
      input.value = '';
      offer();
    } else {
      status.textContent = 'Please check the address.';
    }
  });
})();
