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
  var recordPanel = document.getElementById("ep-record");
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
  var RECORD_SETTINGS = ["PP", "PN", "NN", "NP"];  // the per-record view, side by side
  var HALLUCINATED = { setting: "PN", match: "yes" };
  // The columns, in the header's order (html_samples.py COLUMNS): sorting and export use them.
  var keys = Array.prototype.map.call(table.tHead.rows[0].cells, function (th) { return th.getAttribute("data-key"); });
  var sortKey = null, sortDir = 1;
  var order = rows.map(function (_, i) { return i; });  // row indices in display order
  var matched = [];  // indices the filters keep, in display order

  function text(value) { return value === null || value === undefined ? "" : String(value); }
  function matchText(m) { return m === true ? "yes" : m === false ? "no" : ""; }

  // Lower-cased search text per row, computed once: filtering then stays a plain scan.
  var haystacks = rows.map(function (r) {
    return [r.query, r.expected, r.target_true, r.generated, r.record_id, r.answer].map(text).join("\n").toLowerCase();
  });
  // A record's rows under each setting, for the per-record view.
  function recordKey(r) { return [r.run, r.dataset, r.method, r.record_id].map(text).join("\u0000"); }
  var byRecord = {};
  rows.forEach(function (r, i) { (byRecord[recordKey(r)] = byRecord[recordKey(r)] || []).push(i); });

  function rank(value, list) { var i = list.indexOf(value); return i < 0 ? list.length : i; }
  function compare(a, b) { return a < b ? -1 : a > b ? 1 : 0; }

  function distinct(field, list) {
    var seen = {};
    rows.forEach(function (r) { seen[text(r[field])] = true; });
    return Object.keys(seen).sort(function (a, b) { return rank(a, list) - rank(b, list) || compare(a, b); });
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
  if (!rows.some(function (r) { return r.setting === HALLUCINATED.setting; })) {
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

  function generatedCell(tr, r) {
    var gen = cell(tr, r.generated, "text");
    if (r.answer !== undefined && r.answer !== null) {
      var parsed = document.createElement("span");
      parsed.className = "parsed";
      parsed.textContent = " → " + text(r.answer);
      gen.appendChild(parsed);
    }
  }

  function matchCell(tr, m) {
    cell(tr, m === true ? "✓ yes" : m === false ? "✗ no" : "–", m === true ? "match-yes" : m === false ? "match-no" : "");
  }

  function renderRow(r, i) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-index", String(i));
    tr.setAttribute("data-method", text(r.method));
    tr.setAttribute("data-dataset", text(r.dataset));
    tr.setAttribute("data-setting", text(r.setting));
    tr.setAttribute("data-match", matchText(r.match));
    ["run", "dataset", "method", "edited_with", "setting"].forEach(function (k) { cell(tr, r[k]); });
    var rec = document.createElement("td");
    var link = document.createElement("button");
    link.type = "button";
    link.className = "ep-record-link";
    link.title = "this record under PP, PN, NN and NP";
    link.textContent = text(r.record_id);
    rec.appendChild(link);
    tr.appendChild(rec);
    cell(tr, r.query, "text");
    cell(tr, r.target_true === undefined ? "–" : r.target_true, "text old");
    cell(tr, r.expected, "text");
    generatedCell(tr, r);
    matchCell(tr, r.match);
    return tr;
  }

  // --- the per-record view: one record of one method, its settings side by side ---------
  function showRecord(i) {
    var r = rows[i];
    var found = {};
    (byRecord[recordKey(r)] || []).forEach(function (j) { found[rows[j].setting] = rows[j]; });
    var settings = RECORD_SETTINGS.filter(function (s) { return found[s]; });
    if (!settings.length) { settings = [r.setting]; found[r.setting] = r; }
    var title = document.createElement("h3");
    title.textContent = "Record " + text(r.record_id) + " — " + text(r.method) + " on " + text(r.dataset) +
      " (" + text(r.run) + ")";
    var targets = document.createElement("p");
    targets.className = "ep-record-targets";
    var newTarget = found.PP ? found.PP.expected : found[settings[0]].expected;
    targets.textContent = "old target o: " + (r.target_true === undefined ? "–" : text(r.target_true)) +
      "   →   new target o*: " + text(newTarget);
    var grid = document.createElement("table");
    grid.className = "ep-record-grid";
    var head = grid.createTHead().insertRow();
    var labels = ["", "Edited with", "Query", "Generated", "Match"];
    var th = document.createElement("th");
    head.appendChild(th);
    settings.forEach(function (s) { var h = document.createElement("th"); h.textContent = s; head.appendChild(h); });
    var body = grid.createTBody();
    labels.slice(1).forEach(function (label) {
      var tr = body.insertRow();
      var h = document.createElement("th");
      h.textContent = label;
      tr.appendChild(h);
      settings.forEach(function (s) {
        var x = found[s];
        if (label === "Edited with") { cell(tr, x.edited_with); }
        else if (label === "Query") { cell(tr, x.query, "text"); }
        else if (label === "Generated") { generatedCell(tr, x); }
        else { matchCell(tr, x.match); }
      });
    });
    var close = document.createElement("button");
    close.type = "button";
    close.id = "ep-record-close";
    close.textContent = "Close";
    close.addEventListener("click", function () { recordPanel.hidden = true; });
    recordPanel.replaceChildren(title, targets, grid, close);
    recordPanel.setAttribute("data-record", text(r.record_id));
    recordPanel.hidden = false;
    recordPanel.scrollIntoView({ block: "nearest" });
  }

  tbody.addEventListener("click", function (e) {
    var link = e.target.closest ? e.target.closest(".ep-record-link") : null;
    if (link) { showRecord(parseInt(link.closest("tr").getAttribute("data-index"), 10)); }
  });

  // --- sorting: a header click sorts by its column, a second click reverses ---------------
  function sortValue(r, key) {
    if (key === "match") { return r.match === true ? 0 : r.match === false ? 1 : 2; }
    if (key === "setting") { return rank(text(r.setting), SETTING_ORDER); }
    return text(r[key]).toLowerCase();
  }

  function sortBy(key) {
    sortDir = key === sortKey ? -sortDir : 1;
    sortKey = key;
    order.sort(function (a, b) {
      var va = sortValue(rows[a], key), vb = sortValue(rows[b], key);
      var byValue = typeof va === "number" ? va - vb : compare(va, vb);
      return sortDir * byValue || a - b;  // ties keep the runs' order
    });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      var mine = th.getAttribute("data-key") === key;
      th.setAttribute("aria-sort", mine ? (sortDir > 0 ? "ascending" : "descending") : "none");
    });
    apply();
  }

  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    th.addEventListener("click", function () { sortBy(th.getAttribute("data-key")); });
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(th.getAttribute("data-key")); }
    });
  });

  // --- CSV of the filtered rows (all of them, in display order) ---------------------------
  function csvField(value) {
    var s = text(value);
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function csv() {
    var cols = keys.concat(["answer"]);
    var lines = [cols.join(",")];
    matched.forEach(function (i) {
      var r = rows[i];
      lines.push(cols.map(function (k) { return csvField(k === "match" ? matchText(r.match) : r[k]); }).join(","));
    });
    return lines.join("\r\n") + "\r\n";
  }

  var exportUrl = null;
  document.getElementById("ep-export").addEventListener("click", function () {
    if (exportUrl) { URL.revokeObjectURL(exportUrl); }
    exportUrl = URL.createObjectURL(new Blob([csv()], { type: "text/csv;charset=utf-8" }));
    var a = document.getElementById("ep-export-link") || document.createElement("a");
    a.id = "ep-export-link";
    a.href = exportUrl;
    a.download = "editprobe-samples.csv";
    a.hidden = true;
    a.setAttribute("data-rows", String(matched.length));
    if (!a.parentNode) { document.getElementById("samples").appendChild(a); }
    a.click();
  });

  function apply() {
    var f = {
      method: filters.method.value, dataset: filters.dataset.value, setting: filters.setting.value,
      match: filters.match.value, q: search.value.trim().toLowerCase(),
    };
    var frag = document.createDocumentFragment();
    matched = order.filter(function (i) { return keep(rows[i], i, f); });
    // Only the first maxRows reach the DOM: thousands of rows would make every keystroke slow.
    matched.slice(0, maxRows).forEach(function (i) { frag.appendChild(renderRow(rows[i], i)); });
    tbody.replaceChildren(frag);
    var matching = matched.length, shown = Math.min(matching, maxRows);
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
