// MeshWG dashboard behaviour, all optional: every form works without it.
// - sends the session's CSRF token with htmx requests (X-CSRF-Token, from <meta name="csrf-token">);
// - removes one-time secrets (a new machine's config) from the DOM when the page is left, so
//   neither the back button nor the back/forward cache shows a private key again;
// - copy buttons; pauses polling while the tab is hidden or boxes in it are ticked; ticks all
//   boxes of the bulk form; "/" focuses the search field;
// - collects CSP violations and script errors in window.meshwgErrors (the browser tests read it).
(function () {
  "use strict";
  var errors = [];
  window.meshwgErrors = errors;
  document.addEventListener("securitypolicyviolation", function (e) {
    errors.push("csp " + e.violatedDirective + " " + e.blockedURI);
  });
  window.addEventListener("error", function (e) {
    errors.push("error " + e.message);
  });
  window.addEventListener("unhandledrejection", function (e) {
    errors.push("rejection " + String(e.reason));
  });

  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute("content") : "";
  }

  // Polls send the entity tag of what they show; an unchanged fragment answers 304 (no swap).
  var etags = {};
  document.addEventListener("htmx:configRequest", function (e) {
    e.detail.headers["X-CSRF-Token"] = csrf();
    var elt = e.detail.elt;
    if (elt && elt.id && elt.hasAttribute("data-poll") && etags[elt.id]) {
      e.detail.headers["If-None-Match"] = etags[elt.id];
    }
  });
  document.addEventListener("htmx:afterRequest", function (e) {
    var elt = e.detail.elt;
    var xhr = e.detail.xhr;
    if (elt && elt.id && xhr && xhr.getResponseHeader("ETag")) {
      etags[elt.id] = xhr.getResponseHeader("ETag");
    }
  });

  // Polls (elements marked data-poll) wait while nobody looks.
  document.addEventListener("htmx:beforeRequest", function (e) {
    var elt = e.detail && e.detail.elt;
    // Nor while boxes in them are ticked (a swap would untick them).
    var ticked = elt && elt.querySelector && elt.querySelector("input[type=checkbox]:checked");
    if (elt && elt.hasAttribute("data-poll") && (document.hidden || ticked)) {
      e.preventDefault();
    }
  });

  function clearSecrets() {
    var nodes = document.querySelectorAll("[data-secret]");
    for (var i = 0; i < nodes.length; i++) {
      nodes[i].remove();
    }
  }
  window.addEventListener("pagehide", clearSecrets);
  window.addEventListener("pageshow", function (e) {
    if (e.persisted) {
      clearSecrets();
    }
  });

  document.addEventListener("click", function (e) {
    var target = e.target instanceof Element ? e.target : null;
    if (!target) {
      return;
    }
    var copy = target.closest("[data-copy]");
    if (copy) {
      var src = document.getElementById(copy.getAttribute("data-copy"));
      if (src && navigator.clipboard) {
        navigator.clipboard.writeText(src.textContent).then(
          function () {
            copy.textContent = "Copied";
          },
          function () {
            copy.textContent = "Select the text and copy it";
          }
        );
      }
    }
    if (target.closest("[data-saved]")) {
      clearSecrets();
    }
  });

  // "Select every machine shown" ticks or unticks the boxes of the bulk form.
  document.addEventListener("change", function (e) {
    var all = e.target instanceof Element && e.target.closest("[data-select-all]");
    if (!all) {
      return;
    }
    var boxes = document.querySelectorAll('input[type=checkbox][form="bulk"]');
    for (var i = 0; i < boxes.length; i++) {
      boxes[i].checked = all.checked;
    }
  });

  document.addEventListener("keydown", function (e) {
    if (e.key !== "/" || e.ctrlKey || e.metaKey || e.altKey) {
      return;
    }
    var active = document.activeElement;
    if (active && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) {
      return;
    }
    var search = document.getElementById("search");
    if (search) {
      e.preventDefault();
      search.focus();
    }
  });
})();
