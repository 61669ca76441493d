// The demo site's own script: a consent banner and a newsletter form that soft-logs the
// visitor in (the SDK hashes the email in the browser; the raw address is never sent).
(function () {
  var banner = document.getElementById('consent-banner');
  function choose(all) {
    sightline.consent.set({ analytics: all, marketing: all, personalization: all, source: 'banner' });
    banner.hidden = true;
  }
  document.getElementById('consent-accept').addEventListener('click', function () { choose(true); });
  document.getElementById('consent-necessary').addEventListener('click', function () { choose(false); });
  sightline.ready.then(function () {
    if (!sightline.consent.get().decided) banner.hidden = false;
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
    } else {
      status.textContent = 'Please check the address.';
    }
  });
})();
