// harness view: browse a run folder through the JSON API of harness/view/server.py.
// Every piece of run data is put on the page as text (textContent / text nodes), never as markup.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { runA: 0, runB: "", page: 1, pages: 1, caseId: null, seq: 0, liveTimer: null };
const FILTERS = ["q", "tag", "principle", "judge", "generator", "status", "score-min", "score-max",
  "sort", "per-page"];

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

async function api(path) {
  const res = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function fillSelect(select, values, anyLabel) {
  const keep = select.value;
  select.replaceChildren();
  if (anyLabel !== null) select.append(new Option(anyLabel, ""));
  for (const v of values) select.append(new Option(String(v), String(v)));
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
}

async function loadRuns() {
  const runs = await api("/api/runs");
  const a = $("run-a");
  const b = $("run-b");
  const keepA = a.value;
  const keepB = b.value;
  a.replaceChildren();
  b.replaceChildren(new Option("(none)", ""));
  for (const r of runs) {
    const label = `${r.n}: ${r.manifest.run_id || r.name}`;
    a.append(new Option(label, String(r.n)));
    b.append(new Option(label, String(r.n)));
  }
  a.value = keepA || "0";
  b.value = keepB || "";
  state.runs = runs;
  showSummary();
}

function showSummary() {
  const r = (state.runs || [])[Number($("run-a").value)];
  if (!r) return;
  const s = r.summary;
  const parts = Object.entries(s.by_status).map(([k, v]) => `${v} ${k}`);
  const corrupt = s.logs.reduce((n, l) => n + l.corrupt, 0);
  let text = `${s.verdicts} verdicts (${parts.join(", ") || "none yet"}) on ${s.cases} cases`;
  if (r.manifest.status) text += ` · run ${r.manifest.status}`;
  if (corrupt) text += ` · ${corrupt} corrupt line(s) skipped`;
  $("summary").textContent = text;
}

async function loadFacets() {
  const f = await api(`/api/runs/${state.runA}/facets`);
  fillSelect($("tag"), f.tag, "any tag");
  fillSelect($("principle"), f.principle, "any principle");
  fillSelect($("judge"), f.judge, "any judge");
  fillSelect($("generator"), f.generator, "any generator");
  fillSelect($("status"), f.status, "any status");
}

function query() {
  const p = new URLSearchParams();
  const map = { "score-min": "score_min", "score-max": "score_max", "per-page": "per_page" };
  for (const id of FILTERS) {
    const v = $(id).value.trim();
    if (v) p.set(map[id] || id, v);
  }
  if ($("desc").checked) p.set("desc", "1");
  p.set("page", String(state.page));
  return p.toString();
}

function scoreText(v) {
  return v.score === null || v.score === undefined ? "—" : String(v.score);
}

function row(v) {
  const tr = el("tr");
  tr.dataset.caseId = v.case_id;
  const link = el("button", v.case_id, "case-link");
  link.type = "button";
  link.addEventListener("click", () => openCase(v.case_id));
  const first = el("td");
  first.append(link);
  tr.append(first, el("td", v.generator), el("td", v.principle), el("td", v.judge),
    el("td", v.status, `status-${v.status}`), el("td", scoreText(v), "score"),
    el("td", v.rationale || v.reason, "snippet"));
  return tr;
}

async function loadPage() {
  const seq = ++state.seq; // a slower, older answer must not overwrite a newer one
  try {
    const data = await api(`/api/runs/${state.runA}/verdicts?${query()}`);
    if (seq !== state.seq) return;
    showError("");
    state.pages = Math.max(1, Math.ceil(data.total / data.per_page));
    $("results").tBodies[0].replaceChildren(...data.rows.map(row));
    $("page-info").textContent = `page ${data.page} of ${state.pages}`;
    $("total").textContent = `${data.total} verdicts`;
    $("prev").disabled = data.page <= 1;
    $("next").disabled = data.page >= state.pages;
  } catch (err) {
    if (seq === state.seq) showError(err.message);
  }
}

function renderPrompt(prompt) {
  const box = $("case-prompt");
  box.replaceChildren();
  if (prompt === null || prompt === undefined) {
    box.append(el("p", "(this case is not in cases.jsonl)", "muted"));
  } else if (typeof prompt === "string") {
    box.append(el("pre", prompt, "text"));
  } else {
    for (const m of prompt) {
      const turn = el("div", null, `turn role-${m.role}`);
      turn.append(el("div", m.role, "role"), el("pre", m.content, "text"));
      box.append(turn);
    }
  }
}

function renderCandidates(candidates) {
  const box = $("case-candidates");
  box.replaceChildren();
  for (const c of candidates) {
    const card = el("div", null, "candidate");
    card.append(el("h4", c.generator), el("pre", c.response, "text"));
    box.append(card);
  }
}

function verdictCard(v) {
  const card = el("div", null, "verdict");
  const head = `${v.generator} · ${v.principle} · ${v.judge} · ${v.status} · score ${scoreText(v)}`
    + (v.passed === null || v.passed === undefined ? "" : v.passed ? " · passed" : " · failed");
  card.append(el("h4", head, `status-${v.status}`));
  if (v.rationale) card.append(el("pre", v.rationale, "text rationale"));
  if (v.reason) card.append(el("p", `reason: ${v.reason}`, "reason"));
  if (v.raw_output) {
    const raw = el("details");
    raw.append(el("summary", "raw judge output"), el("pre", v.raw_output, "text"));
    card.append(raw);
  }
  return card;
}

function renderPairs(pairs) {
  const box = $("case-pairs");
  box.replaceChildren();
  if (!pairs.length) return;
  box.append(el("h3", "Pairwise judgments"));
  for (const p of pairs) {
    const line = `${p.principle} · ${p.judge} · ${p.first} vs ${p.second} · ${p.status}`
      + (p.winner ? ` · winner ${p.winner}` : "");
    const card = el("div", null, "verdict");
    card.append(el("h4", line));
    if (p.rationale) card.append(el("pre", p.rationale, "text"));
    if (p.reason) card.append(el("p", `reason: ${p.reason}`, "reason"));
    box.append(card);
  }
}

function key(v) {
  return `${v.generator}\u001f${v.principle}\u001f${v.judge}`;
}

function cell(v) {
  const td = el("td");
  if (!v) {
    td.append(el("span", "not judged", "muted"));
    return td;
  }
  td.append(el("div", `${v.status} · ${scoreText(v)}`, `status-${v.status}`));
  const note = v.rationale || v.reason;
  if (note) td.append(el("div", note, "snippet"));
  return td;
}

function renderCompare(a, b, nameA, nameB) {
  const rows = new Map();
  for (const v of a.verdicts) rows.set(key(v), { a: v });
  for (const v of b ? b.verdicts : []) rows.set(key(v), { ...(rows.get(key(v)) || {}), b: v });
  const body = $("compare-table").tBodies[0];
  body.replaceChildren();
  for (const [k, pair] of [...rows.entries()].sort()) {
    const [generator, principle, judge] = k.split("\u001f");
    const tr = el("tr");
    const sa = pair.a && pair.a.score;
    const sb = pair.b && pair.b.score;
    const delta = typeof sa === "number" && typeof sb === "number" ? sb - sa : null;
    tr.append(el("td", generator), el("td", principle), el("td", judge), cell(pair.a),
      cell(pair.b), el("td", delta === null ? "—" : (delta > 0 ? "+" : "") + delta, "delta"));
    body.append(tr);
  }
  document.querySelector(".run-a-head").textContent = `A: ${nameA}`;
  document.querySelector(".run-b-head").textContent = `B: ${nameB}`;
  $("compare-title").textContent = b ? `Side by side: ${nameA} and ${nameB}`
    : `Side by side: this case is not in ${nameB}`;
  $("case-compare").hidden = false;
}

function runName(n) {
  const r = (state.runs || [])[Number(n)];
  return r ? r.manifest.run_id || r.name : String(n);
}

async function openCase(caseId) {
  state.caseId = caseId;
  try {
    const c = await api(`/api/runs/${state.runA}/case?id=${encodeURIComponent(caseId)}`);
    $("case-title").textContent = c.case_id;
    $("case-tags").textContent = c.tags.length ? `tags: ${c.tags.join(", ")}` : "";
    renderPrompt(c.prompt);
    $("case-reference").replaceChildren();
    if (c.reference) $("case-reference").append(el("h3", "Reference"), el("pre", c.reference, "text"));
    renderCandidates(c.candidates);
    $("case-verdicts").replaceChildren(...c.verdicts.map(verdictCard));
    renderPairs(c.pairs);
    $("case-compare").hidden = true;
    if (state.runB !== "") {
      let other = null;
      try {
        other = await api(`/api/runs/${state.runB}/case?id=${encodeURIComponent(caseId)}`);
      } catch (err) {
        other = null;
      }
      renderCompare(c, other, runName(state.runA), runName(state.runB));
    }
    $("list-view").hidden = true;
    $("case-view").hidden = false;
    showError("");
  } catch (err) {
    showError(err.message);
  }
}

function closeCase() {
  state.caseId = null;
  $("case-view").hidden = true;
  $("list-view").hidden = false;
}

function restart() {
  state.page = 1;
  loadPage();
}

let typing = null;
function wire() {
  $("q").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(restart, 250);
  });
  $("filters").addEventListener("submit", (e) => {
    e.preventDefault();
    restart();
  });
  for (const id of FILTERS.filter((x) => x !== "q")) $(id).addEventListener("change", restart);
  $("desc").addEventListener("change", restart);
  $("prev").addEventListener("click", () => { if (state.page > 1) { state.page--; loadPage(); } });
  $("next").addEventListener("click", () => {
    if (state.page < state.pages) { state.page++; loadPage(); }
  });
  $("back").addEventListener("click", closeCase);
  $("run-a").addEventListener("change", async () => {
    state.runA = Number($("run-a").value);
    closeCase();
    showSummary();
    await loadFacets();
    restart();
  });
  $("run-b").addEventListener("change", () => {
    state.runB = $("run-b").value;
    if (state.caseId) openCase(state.caseId);
  });
  $("live").addEventListener("change", follow);
}

function stamp() {
  const r = (state.runs || [])[state.runA];
  return r ? JSON.stringify(r.summary.logs) : "";
}

async function tick() {
  try {
    const before = stamp();
    await loadRuns();
    if (stamp() === before) return; // nothing new in the run folder
    await loadFacets();
    if (!state.caseId) await loadPage();
  } catch (err) {
    showError(err.message);
  }
}

function follow() {
  clearInterval(state.liveTimer);
  if ($("live").checked) state.liveTimer = setInterval(tick, 2000);
}

async function start() {
  wire();
  try {
    await loadRuns();
    await loadFacets();
    await loadPage();
  } catch (err) {
    showError(err.message);
  }
  follow();
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", start);
