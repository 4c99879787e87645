// The console's only script (served from the package; the CSP allows no inline script).
// The overview refreshes its numbers from the stats endpoint; the DLQ page's header box
// ticks every box of the page. Values are set with textContent, never as HTML.
"use strict";

function pick(data, path) {
  return path.split(".").reduce(function (value, key) {
    return value === null || value === undefined ? undefined : value[key];
  }, data);
}

function refresh() {
  var url = document.body.getAttribute("data-stats-url");
  fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then(function (answer) {
      if (!answer.ok) { throw new Error("stats answered " + answer.status); }
      return answer.json();
    })
    .then(function (data) {
      document.querySelectorAll("[data-stat]").forEach(function (node) {
        var value = pick(data, node.getAttribute("data-stat"));
        node.textContent = value === null || value === undefined ? "-" : String(value);
      });
      var stamp = document.getElementById("refreshed");
      stamp.textContent = "live, updated " + new Date().toLocaleTimeString();
      stamp.setAttribute("data-updated", String(Date.now()));
    })
    .catch(function (error) {
      document.getElementById("refreshed").textContent = "not updating: " + error.message;
    });
}

document.addEventListener("DOMContentLoaded", function () {
  if (document.getElementById("refreshed")) {
    refresh();
    setInterval(refresh, 2000);
  }
  var all = document.getElementById("all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll("input[name=ids]").forEach(function (box) {
        box.checked = all.checked;
      });
    });
  }
});
