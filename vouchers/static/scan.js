/* The provider's scan pages, plain JavaScript and nothing loaded from elsewhere.

   On /vouchers/scan: the camera. The rear camera's picture is drawn to a canvas every
   400 ms and posted as a JPEG (with the page's CSRF token) to the server, which decodes
   it with zxing-cpp and answers {"next": "/r/..."} when it holds a voucher code; the page
   then goes there. Only one frame is in flight at a time. Refused or missing cameras are
   said in words, pointing at the photo and the typed code.

   On a scanned voucher's page: each check-in form gets the phone's location (for home
   services, which the server checks against the elder's home); if there is none, a note
   says so and the server refuses a home service with its own message. */
(function () {
  "use strict";

  var INTERVAL_MS = 400;

  function words(name) {
    var holder = document.getElementById("camera-words");
    return holder ? holder.getAttribute("data-" + name) || "" : "";
  }

  function setupCamera() {
    var box = document.getElementById("camera");
    if (!box) return;
    var start = document.getElementById("camera-start");
    var stop = document.getElementById("camera-stop");
    var video = document.getElementById("camera-video");
    var canvas = document.getElementById("camera-canvas");
    var finder = document.getElementById("viewfinder");
    var status = document.getElementById("camera-status");
    var stream = null, timer = null, busy = false;

    function say(text) { status.textContent = text; }

    function halt() {
      if (timer) { clearInterval(timer); timer = null; }
      if (stream) { stream.getTracks().forEach(function (t) { t.stop(); }); stream = null; }
      finder.hidden = true; stop.hidden = true; start.hidden = false;
    }

    function send(blob) {
      var body = new FormData();
      body.append("frame", blob, "frame.jpg");
      return fetch(box.getAttribute("data-frame-url"), {
        method: "POST",
        body: body,
        credentials: "same-origin",
        headers: { "X-CSRFToken": box.getAttribute("data-csrf"), "Accept": "application/json" }
      }).then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      });
    }

    function tick() {
      if (busy || !video.videoWidth) return;
      busy = true;
      var scale = Math.min(1, 960 / Math.max(video.videoWidth, video.videoHeight));
      canvas.width = Math.round(video.videoWidth * scale);
      canvas.height = Math.round(video.videoHeight * scale);
      canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
      canvas.toBlob(function (blob) {
        if (!blob) { busy = false; return; }
        send(blob).then(function (answer) {
          if (answer && answer.next) {
            say(words("found"));
            halt();
            window.location.assign(answer.next);
            return;
          }
          busy = false;
        }).catch(function () {
          say(words("failed"));
          busy = false;
        });
      }, "image/jpeg", 0.8);
    }

    start.addEventListener("click", function () {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        say(words("missing"));
        return;
      }
      navigator.mediaDevices.getUserMedia({
        video: { facingMode: { ideal: "environment" } }, audio: false
      }).then(function (s) {
        stream = s;
        video.srcObject = s;
        finder.hidden = false; stop.hidden = false; start.hidden = true;
        return video.play();
      }).then(function () {
        say(words("looking"));
        timer = setInterval(tick, INTERVAL_MS);
      }).catch(function (error) {
        halt();
        var refused = error && (error.name === "NotAllowedError" || error.name === "SecurityError");
        say(words(refused ? "denied" : "missing"));
      });
    });
    stop.addEventListener("click", function () { halt(); say(""); });
    window.addEventListener("pagehide", halt);
  }

  function setupLocation() {
    var forms = document.querySelectorAll("form.check-in-form");
    if (!forms.length) return;
    var note = document.getElementById("location-note");
    function fill(lat, lng) {
      forms.forEach(function (form) {
        form.elements.latitude.value = lat;
        form.elements.longitude.value = lng;
      });
    }
    function missing() {
      if (note && document.querySelector("form.check-in-form.needs-location")) note.hidden = false;
    }
    if (!navigator.geolocation) { missing(); return; }
    navigator.geolocation.getCurrentPosition(function (position) {
      fill(position.coords.latitude, position.coords.longitude);
      if (note) note.hidden = true;
    }, missing, { enableHighAccuracy: true, timeout: 15000, maximumAge: 60000 });
  }

  setupCamera();
  setupLocation();
})();
