// A form marked data-submit-once sends once: its buttons are disabled as it is submitted, so
// a second tap on "Charge" while the first is in flight sends nothing. (The server refuses a
// second attempt anyway; this spares the desk a confusing second answer.)
(function () {
  "use strict";
  document.querySelectorAll("form[data-submit-once]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (form.dataset.sent === "yes") {
        event.preventDefault();
        return;
      }
      form.dataset.sent = "yes";
      // After this turn of the event loop, so the pressed button's own value is still sent.
      setTimeout(function () {
        form.querySelectorAll("button, input[type=submit]").forEach(function (button) {
          button.disabled = true;
        });
      }, 0);
    });
  });
  // Coming back with the browser's Back button shows the page as it was left: usable again.
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) return;
    document.querySelectorAll("form[data-submit-once]").forEach(function (form) {
      delete form.dataset.sent;
      form.querySelectorAll("button, input[type=submit]").forEach(function (button) {
        button.disabled = false;
      });
    });
  });
})();
