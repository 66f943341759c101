// Case filter. Progressive enhancement only: without JavaScript the controls stay hidden and every case shows.
(function () {
  "use strict";
  var controls = document.getElementById("filters");
  if (!controls) { return; }
  var cases = Array.prototype.slice.call(document.querySelectorAll(".case"));
  var search = document.getElementById("filter-text");
  var tagSelect = document.getElementById("filter-tag");
  var issuesOnly = document.getElementById("filter-issues");
  var count = document.getElementById("filter-count");
  // Read each case's text and tags once; the page already holds them, so nothing is duplicated in the HTML.
  var texts = cases.map(function (c) { return c.textContent.toLowerCase(); });
  var tags = cases.map(function (c) {
    return Array.prototype.map.call(c.querySelectorAll(".tag"), function (t) { return t.textContent; });
  });

  function matches(i, query, tag, onlyIssues) {
    if (query && texts[i].indexOf(query) < 0) { return false; }
    if (tag && tags[i].indexOf(tag) < 0) { return false; }
    return !onlyIssues || cases[i].getAttribute("data-issues") !== "";
  }

  function apply() {
    var query = search.value.trim().toLowerCase();
    var shown = 0;
    cases.forEach(function (c, i) {
      var ok = matches(i, query, tagSelect.value, issuesOnly.checked);
      c.hidden = !ok;
      if (ok) { shown += 1; }
    });
    count.textContent = "showing " + shown + " of " + cases.length + " cases";
  }

  search.addEventListener("input", apply);
  tagSelect.addEventListener("change", apply);
  issuesOnly.addEventListener("change", apply);
  controls.hidden = false;
  apply();
}());
