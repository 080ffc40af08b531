// Live refresh without a full reload: the page's <main> is re-fetched as a fragment and
// swapped in. Paused while the tab is hidden, a form control has focus, or a form on the
// page has been edited (ticked boxes, a typed filter) until it is submitted or reset: a swap
// would throw the edit away. <main>'s data-refreshes and data-refreshes-skipped count both.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var live = document.getElementById("live");
  var every = main ? Number(main.getAttribute("data-refresh")) : 0;
  var edited = false;

  function show(text, ok) {
    if (!live) return;
    live.textContent = text;
    live.className = ok ? "live" : "live stale";
  }

  function count(name) {
    main.setAttribute(name, String(Number(main.getAttribute(name) || 0) + 1));
  }

  function busy() {
    var el = document.activeElement;
    return (
      document.hidden ||
      edited ||
      (el && main.contains(el) && el.tagName !== "A") ||
      // Ticked jobs would be lost: no refresh while a selection is made.
      main.querySelector("input[name=ids]:checked") !== null
    );
  }

  if (main) {
    ["input", "change"].forEach(function (type) {
      main.addEventListener(type, function (event) {
        if (event.target && event.target.form) edited = true;
      });
    });
    main.addEventListener("reset", function () {
      edited = false;
    });
    main.addEventListener("submit", function (event) {
      // After the data-confirm handler below: a submit the operator declined keeps the edit.
      setTimeout(function () {
        if (!event.defaultPrevented) edited = false;
      }, 0);
    });
  }

  // The <details> a reader opened or closed stay so across refreshes.
  function openDetails() {
    var state = {};
    main.querySelectorAll("details[id]").forEach(function (el) {
      state[el.id] = el.open;
    });
    return state;
  }

  function restoreDetails(state) {
    main.querySelectorAll("details[id]").forEach(function (el) {
      if (Object.prototype.hasOwnProperty.call(state, el.id)) el.open = state[el.id];
    });
    enhance();
  }

  // "Select all on this page": a header checkbox, shown only when scripts run (without
  // them, the "... all on this page" buttons do the same).
  function enhance() {
    var all = document.getElementById("select-all");
    if (!all) return;
    all.hidden = false;
    all.addEventListener("change", function () {
      main.querySelectorAll("input[name=ids]").forEach(function (box) {
        box.checked = all.checked;
      });
    });
  }

  function refresh() {
    if (busy()) {
      count("data-refreshes-skipped");
      show("paused", true);
      return schedule();
    }
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
        var state = openDetails();
        main.innerHTML = html;
        restoreDetails(state);
        count("data-refreshes");
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

  if (main) enhance();
  if (main && every > 0) schedule();
  else show("", true);

  // Confirmation for destructive actions (no inline handlers: the CSP forbids them).
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });
})();
