// Live refresh without a full reload: the page's <main> is re-fetched as a fragment and
// swapped in. Paused while the tab is hidden or a form control has focus.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var live = document.getElementById("live");
  var every = main ? Number(main.getAttribute("data-refresh")) : 0;

  function show(text, ok) {
    if (!live) return;
    live.textContent = text;
    live.className = ok ? "live" : "live stale";
  }

  function busy() {
    var el = document.activeElement;
    return document.hidden || (el && main.contains(el) && el.tagName !== "A");
  }

  function refresh() {
    if (busy()) return schedule();
    fetch(location.href, {
      headers: { "X-Dashboard-Partial": "1" },
      credentials: "same-origin",
      cache: "no-store",
    })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        main.innerHTML = html;
        show("live", true);
      })
      .catch(function (error) {
        show("offline: " + error.message, false);
      })
      .then(schedule);
  }

  function schedule() {
    setTimeout(refresh, every);
  }

  if (main && every > 0) schedule();
  else show("", true);

  // Confirmation for destructive actions (no inline handlers: the CSP forbids them).
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });
})();
