// "Use my location" on the provider application: fills latitude and longitude from the
// browser's geolocation (WGS-84). Optional: without JavaScript or permission, people type them.
(function () {
  "use strict";
  var button = document.getElementById("use-location");
  var status = document.getElementById("location-status");
  var latitude = document.getElementById("latitude");
  var longitude = document.getElementById("longitude");
  if (!button || !latitude || !longitude || !("geolocation" in navigator)) return;
  button.hidden = false;
  button.addEventListener("click", function () {
    button.disabled = true;
    status.textContent = button.dataset.wait;
    navigator.geolocation.getCurrentPosition(
      function (position) {
        latitude.value = position.coords.latitude.toFixed(6);
        longitude.value = position.coords.longitude.toFixed(6);
        status.textContent = button.dataset.done;
        button.disabled = false;
      },
      function () {
        status.textContent = button.dataset.failed;
        button.disabled = false;
      },
      { enableHighAccuracy: true, timeout: 15000, maximumAge: 60000 }
    );
  });
})();
