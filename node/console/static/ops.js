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

// A job's steps follow its progress: console.js writes the step number polled into
// [data-field="step"]; the list of steps is marked done / current from it.
document.addEventListener("DOMContentLoaded", function () {
  var field = document.querySelector('[data-field="step"]');
  var steps = document.querySelectorAll("ol.steps li");
  if (!field || !steps.length) { return; }
  new MutationObserver(function () {
    var at = parseInt(field.textContent, 10);
    steps.forEach(function (li, i) {
      li.className = i < at ? "done" : (i === at ? "current" : "");
      if (i === at) { li.setAttribute("aria-current", "step"); } else { li.removeAttribute("aria-current"); }
    });
  }).observe(field, { childList: true, characterData: true, subtree: true });
});
