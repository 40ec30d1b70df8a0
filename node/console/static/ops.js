// Operator forms: the inputs of the way not chosen (rule / partner query) are disabled, so
// the keyboard skips them and the form posts only what was chosen. Works without it too.
"use strict";
function syncMode(form) {
  var chosen = form.querySelector('input[name="mode"]:checked');
  if (!chosen) { return; }
  form.querySelectorAll("[data-mode]").forEach(function (part) {
    var off = part.getAttribute("data-mode") !== chosen.value;
    part.setAttribute("aria-disabled", off ? "true" : "false");
    part.querySelectorAll("input, select, textarea").forEach(function (el) { el.disabled = off; });
  });
}
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("form").forEach(function (form) {
    if (!form.querySelector('input[name="mode"]')) { return; }
    syncMode(form);
    form.addEventListener("change", function (event) {
      if (event.target.name === "mode") { syncMode(form); }
    });
  });
});
