// Shuqiao console: small progressive enhancements; every page works without this file.
"use strict";

// <form data-confirm="text">: ask before a destructive action (retire, purge, cancel).
document.addEventListener("submit", function (event) {
  var form = event.target;
  var text = form.getAttribute && form.getAttribute("data-confirm");
  if (text && !window.confirm(text)) { event.preventDefault(); }
});

// <section data-poll="/console/...json" data-poll-done="...">: refresh progress while a job or an
// upload runs. The JSON answer: {stage, done, total, status, finished, html?}. Elements inside
// with data-field="stage|done|total|status" get the values; a <progress> gets done/total.
function poll(section) {
  var url = section.getAttribute("data-poll");
  fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
    .then(function (r) { return r.ok ? r.json() : null; })
    .then(function (data) {
      if (!data) { return; }
      section.querySelectorAll("[data-field]").forEach(function (el) {
        var key = el.getAttribute("data-field");
        if (data[key] !== undefined && data[key] !== null) { el.textContent = data[key]; }
      });
      var bar = section.querySelector("progress");
      if (bar && data.total) { bar.max = data.total; bar.value = data.done || 0; }
      if (data.finished) { window.location.reload(); return; }
      window.setTimeout(function () { poll(section); }, 1000);
    })
    .catch(function () { window.setTimeout(function () { poll(section); }, 3000); });
}
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-poll]").forEach(poll);
});
