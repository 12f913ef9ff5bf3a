// editprobe HTML report: the per-sample browser. Inlined into the page (no URLs).
// All sample text reaches the DOM through textContent only, never innerHTML, so a query or
// a generation holding markup is shown as text and cannot run script.
(function () {
  "use strict";

  var dataEl = document.getElementById("ep-samples-data");
  var table = document.getElementById("ep-samples");
  if (!dataEl || !table) { return; }

  var rows = JSON.parse(dataEl.textContent);
  var maxRows = parseInt(table.getAttribute("data-max-rows"), 10) || 500;
  var tbody = table.tBodies[0];
  var count = document.getElementById("ep-count");
  var presetBtn = document.getElementById("ep-preset-hallucinated");
  var filters = {
    method: document.getElementById("ep-f-method"),
    dataset: document.getElementById("ep-f-dataset"),
    setting: document.getElementById("ep-f-setting"),
    match: document.getElementById("ep-f-match"),
  };
  var search = document.getElementById("ep-f-search");
  // The paper's settings first, then the baseline and fact-check ones, then anything else.
  var SETTING_ORDER = ["PP", "PN", "NN", "NP", "no-edit-P", "no-edit-N", "factcheck-before",
                       "factcheck-after", "factcheck-control", "factcheck-no-edit"];
  var HALLUCINATED = { setting: "PN", match: "yes" };

  function text(value) { return value === null || value === undefined ? "" : String(value); }

  // Lower-cased search text per row, computed once: filtering then stays a plain scan.
  var haystacks = rows.map(function (r) {
    return [r.query, r.expected, r.generated, r.record_id, r.answer].map(text).join("\n").toLowerCase();
  });

  function distinct(field, order) {
    var seen = {};
    rows.forEach(function (r) { seen[text(r[field])] = true; });
    var values = Object.keys(seen);
    values.sort(function (a, b) {
      var ia = order.indexOf(a), ib = order.indexOf(b);
      if (ia < 0) { ia = order.length; }
      if (ib < 0) { ib = order.length; }
      return ia !== ib ? ia - ib : (a < b ? -1 : a > b ? 1 : 0);
    });
    return values;
  }

  function fillSelect(select, values, label) {
    values.forEach(function (v) {
      var opt = document.createElement("option");
      opt.value = v;
      opt.textContent = label ? label(v) : v;
      select.appendChild(opt);
    });
  }

  fillSelect(filters.method, distinct("method", ["none"]), function (v) { return v === "none" ? "none (no edit)" : v; });
  fillSelect(filters.dataset, distinct("dataset", []));
  fillSelect(filters.setting, distinct("setting", SETTING_ORDER));
  var hasPN = rows.some(function (r) { return r.setting === HALLUCINATED.setting; });
  if (!hasPN) {
    presetBtn.disabled = true;
    presetBtn.title = "no PN samples in these runs";
  }

  function keep(r, i, f) {
    if (f.method && text(r.method) !== f.method) { return false; }
    if (f.dataset && text(r.dataset) !== f.dataset) { return false; }
    if (f.setting && text(r.setting) !== f.setting) { return false; }
    if (f.match === "yes" && r.match !== true) { return false; }
    if (f.match === "no" && r.match !== false) { return false; }
    return !f.q || haystacks[i].indexOf(f.q) >= 0;
  }

  function cell(tr, value, cls) {
    var td = document.createElement("td");
    td.textContent = text(value);
    if (cls) { td.className = cls; }
    tr.appendChild(td);
    return td;
  }

  function renderRow(r) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-method", text(r.method));
    tr.setAttribute("data-dataset", text(r.dataset));
    tr.setAttribute("data-setting", text(r.setting));
    tr.setAttribute("data-match", r.match === true ? "yes" : r.match === false ? "no" : "");
    cell(tr, r.run);
    cell(tr, r.dataset);
    cell(tr, r.method);
    cell(tr, r.edited_with);
    cell(tr, r.setting);
    cell(tr, r.record_id);
    cell(tr, r.query, "text");
    cell(tr, r.expected, "text");
    var gen = cell(tr, r.generated, "text");
    if (r.answer !== undefined && r.answer !== null) {
      var parsed = document.createElement("span");
      parsed.className = "parsed";
      parsed.textContent = " → " + text(r.answer);
      gen.appendChild(parsed);
    }
    cell(tr, r.match === true ? "✓ yes" : r.match === false ? "✗ no" : "–",
         r.match === true ? "match-yes" : r.match === false ? "match-no" : "");
    return tr;
  }

  function apply() {
    var f = {
      method: filters.method.value, dataset: filters.dataset.value, setting: filters.setting.value,
      match: filters.match.value, q: search.value.trim().toLowerCase(),
    };
    var frag = document.createDocumentFragment();
    var matching = 0;
    for (var i = 0; i < rows.length; i++) {
      if (!keep(rows[i], i, f)) { continue; }
      matching++;
      // Only the first maxRows reach the DOM: thousands of rows would make every keystroke slow.
      if (matching <= maxRows) { frag.appendChild(renderRow(rows[i])); }
    }
    tbody.replaceChildren(frag);
    var shown = Math.min(matching, maxRows);
    count.setAttribute("data-shown", String(shown));
    count.setAttribute("data-matching", String(matching));
    count.setAttribute("data-total", String(rows.length));
    count.textContent = (matching > shown ? "Showing " + shown + " of " + matching : String(matching)) +
      " matching rows (" + rows.length + " samples in all)" +
      (matching > shown ? "; narrow the filters to see the rest" : "");
    var preset = f.setting === HALLUCINATED.setting && f.match === HALLUCINATED.match;
    presetBtn.setAttribute("aria-pressed", preset ? "true" : "false");
  }

  Object.keys(filters).forEach(function (k) { filters[k].addEventListener("change", apply); });
  search.addEventListener("input", apply);
  presetBtn.addEventListener("click", function () {
    filters.setting.value = HALLUCINATED.setting;
    filters.match.value = HALLUCINATED.match;
    apply();
  });
  document.getElementById("ep-reset").addEventListener("click", function () {
    Object.keys(filters).forEach(function (k) { filters[k].value = ""; });
    search.value = "";
    apply();
  });
  apply();
})();
