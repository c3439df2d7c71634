// "Use where I am now" on the marketplace search: ask the browser for the position, put it
// in the form's hidden lat/lng fields and search from there. Without JavaScript or without
// geolocation the button stays hidden and the district's centre is used instead.
(function () {
  'use strict';
  var form = document.getElementById('search-form');
  var button = document.getElementById('use-location');
  var status = document.getElementById('location-status');
  if (!form || !button || !status || !('geolocation' in navigator)) return;
  button.hidden = false;

  function searchFromHere(position) {
    form.elements.lat.value = position.coords.latitude.toFixed(6);
    form.elements.lng.value = position.coords.longitude.toFixed(6);
    var near = form.elements.near;
    if (near.tagName === 'SELECT' && !near.querySelector('option[value="here"]')) {
      var option = document.createElement('option');
      option.value = 'here';
      option.textContent = button.dataset.here;
      near.appendChild(option);
    }
    near.value = 'here';
    form.submit();
  }

  function failed() {
    button.disabled = false;
    status.textContent = button.dataset.failed;
  }

  button.addEventListener('click', function () {
    button.disabled = true;
    status.textContent = button.dataset.waiting;
    navigator.geolocation.getCurrentPosition(searchFromHere, failed, {
      enableHighAccuracy: false, timeout: 20000, maximumAge: 300000
    });
  });
})();
