/* Keeps the voucher QR fresh: a new code every minute, and a countdown to it; and every
   few seconds a check, so that once the code has been scanned the next unused one (and the
   amount left) appears without waiting for the minute to end. The page works without this
   script (the code shown is good for about two minutes); with it, the image and the typed
   code under it change together. No external scripts. */
(function () {
  'use strict';
  var box = document.getElementById('qr-box');
  if (!box || !window.fetch) return;
  var img = document.getElementById('qr-image');
  var code = document.getElementById('qr-code');
  var left = document.getElementById('qr-left');
  var countdown = document.getElementById('qr-countdown');
  var offline = document.getElementById('qr-offline');
  var source = box.getAttribute('data-json');
  var remaining = parseInt(box.getAttribute('data-seconds') || '60', 10);
  var template = countdown ? countdown.getAttribute('data-template') : '';

  function show() {
    if (countdown) countdown.textContent = template.replace('{s}', String(Math.max(remaining, 0)));
  }

  function refresh() {
    fetch(source, {credentials: 'same-origin', cache: 'no-store',
                   headers: {'Accept': 'application/json'}})
      .then(function (response) {
        if (response.status === 404 || response.status === 409) {
          window.location.reload();  // the voucher was used up or cancelled meanwhile
          return null;
        }
        if (!response.ok) throw new Error(String(response.status));
        return response.json();
      })
      .then(function (data) {
        if (!data) return;
        if (code.textContent !== data.code) {  // a new code: a new minute, or this one used
          img.src = data.image;
          code.textContent = data.code;
        }
        if (left && data.left) left.textContent = data.left;
        remaining = data.seconds_left;
        if (offline) offline.hidden = true;
        show();
      })
      .catch(function () {
        if (offline) offline.hidden = false;
        remaining = 10;  // try again soon
      });
  }

  var sinceCheck = 0;
  var CHECK_EVERY = 5;  // seconds between checks for a scanned code
  show();
  window.setInterval(function () {
    remaining -= 1;
    sinceCheck += 1;
    if (remaining <= 0 || sinceCheck >= CHECK_EVERY) {
      if (remaining <= 0) remaining = 60;
      sinceCheck = 0;
      refresh();
    }
    show();
  }, 1000);
})();
