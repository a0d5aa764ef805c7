// The console's one script: progressive enhancement only, every page works without it.
// - Live regions: an element with an id and data-live="SECONDS" is read again from the same URL
//   every SECONDS while the tab is visible, and replaced in place; polling stops while the tab is
//   hidden and when the server leaves data-live off the new element (e.g. a job that finished).
// - Copy buttons: <button data-copy="#id"> copies that element's text.
// - Confirmations: <form data-confirm="question"> asks before it submits.
(function () {
  "use strict";

  var timers = {};

  function schedule(el) {
    var seconds = parseFloat(el.getAttribute("data-live"));
    if (!el.id || !(seconds > 0)) { return; }
    clearTimeout(timers[el.id]);
    timers[el.id] = setTimeout(function () { refresh(el.id); }, seconds * 1000);
  }

  function refresh(id) {
    var el = document.getElementById(id);
    if (!el || !el.hasAttribute("data-live")) { return; }
    if (document.hidden) { el.classList.add("live-paused"); return; }
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Console-Live": "1" } })
      .then(function (response) {
        if (response.redirected || !response.ok) { throw new Error("stopped: " + response.status); }
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(id);
        var current = document.getElementById(id);
        if (!fresh || !current) { return; }
        current.replaceWith(document.importNode(fresh, true));
        enhance(document.getElementById(id));
        schedule(document.getElementById(id));
      })
      .catch(function () {
        var current = document.getElementById(id);
        if (current) { current.classList.add("live-paused"); }
      });
  }

  function copy(button) {
    var target = document.querySelector(button.getAttribute("data-copy"));
    if (!target || !navigator.clipboard) { return; }
    navigator.clipboard.writeText(target.textContent.trim()).then(function () {
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    }, function () { button.textContent = "Copy failed"; });
  }

  function enhance(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () { copy(button); });
    });
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
      });
    });
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) { return; }
    document.querySelectorAll("[data-live]").forEach(function (el) {
      el.classList.remove("live-paused");
      refresh(el.id);
    });
  });

  document.addEventListener("DOMContentLoaded", function () {
    enhance(document);
    document.querySelectorAll("[data-live]").forEach(schedule);
  });
}());
