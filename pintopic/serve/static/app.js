// pintopic's page: pick a model, drop images, see each one's top categories; or the model's results on its run.
// Plain DOM code, no framework and nothing from outside this server. Text from the server or from file names
// is always set with textContent, never parsed as HTML.
"use strict";

const state = { models: [], key: sessionStorage.getItem("pintopic-key") || "" };
const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", Boolean(isError));
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.key) headers.Authorization = "Bearer " + state.key;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await response.json(); } catch (error) { body = { detail: response.statusText }; }
  if (response.status === 401) $("key-box").hidden = false;
  return { status: response.status, body };
}

function detailText(body) {
  const detail = body && body.detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  return detail || "request failed";
}

async function loadModels() {
  const { status, body } = await api("/v1/models");
  if (status !== 200) { setStatus(`Cannot list models (${status}): ${detailText(body)}`, true); return; }
  state.models = body.models;
  const select = $("model");
  select.replaceChildren(...state.models.map((m) => {
    const option = el("option", "", `${m.name} (${m.backbones.join(" + ")})`);
    option.value = m.name;
    return option;
  }));
  setStatus(`${state.models.length} model(s) ready. Drop images to classify them.`);
  if (!$("view-results").hidden) loadResults();
}

function bars(top, kind) {
  const box = el("div", "bars");
  const scores = top.map((t) => t.score);
  const low = kind === "probability" ? 0 : Math.min(...scores);
  const high = kind === "probability" ? 1 : Math.max(...scores);
  for (const entry of top) {
    const row = el("div", "bar-row");
    const label = el("div", "bar-label");
    const fill = el("span", "bar-fill");
    const share = high > low ? (entry.score - low) / (high - low) : 1;
    fill.style.width = `${Math.max(2, Math.round(100 * share))}%`;
    label.append(fill, el("span", "bar-text", entry.display_name));
    label.title = entry.category;
    row.append(label, el("div", "bar-score", entry.score.toFixed(3)));
    box.append(row);
  }
  return box;
}

async function classify(file) {
  const card = el("div", "card");
  const image = el("img");
  image.alt = file.name;
  image.src = URL.createObjectURL(file);
  const body = el("div", "body");
  body.append(el("div", "name", file.name), el("div", "pending", "classifying…"));
  card.append(image, body);
  $("cards").prepend(card);
  const form = new FormData();
  form.append("images", file, file.name);
  const topK = Math.max(1, parseInt($("top-k").value, 10) || 3);
  const model = encodeURIComponent($("model").value);
  const { status, body: answer } = await api(`/v1/models/${model}/predict?top_k=${topK}`, { method: "POST", body: form });
  body.querySelector(".pending").remove();
  const result = answer && answer.images && answer.images[0];
  if (status === 200 && result && result.status === 200) {
    card.dataset.category = result.top[0].category;
    body.append(bars(result.top, result.score_kind));
    const t = result.timing_ms;
    body.append(el("div", "timing", `${t.total.toFixed(0)} ms (decode ${t.decode.toFixed(0)}, model ${t.model.toFixed(0)} in a batch of ${t.batch_size})`));
  } else {
    body.append(el("div", "error", result && result.error ? result.error : `${status}: ${detailText(answer)}`));
  }
}

function handleFiles(files) {
  if (!$("model").value) { setStatus("No model to classify with yet.", true); return; }
  for (const file of files) classify(file);
}

function cell(tag, text, className) { return el(tag, className || "", text); }
function fmt(value) { return typeof value === "number" ? value.toFixed(3) : (value ?? "–"); }

async function loadResults() {
  const name = $("model").value;
  if (!name) return;
  const { status, body } = await api(`/v1/models/${encodeURIComponent(name)}/results`);
  if (status !== 200) { setStatus(`Cannot load results (${status}): ${detailText(body)}`, true); return; }
  const own = body.row;
  $("own-row").textContent = own
    ? `${own.backbone} + ${own.classifier}: test macro-F1 ${fmt(own.test_f1_macro)}, accuracy ${fmt(own.test_accuracy)}, `
      + `CV macro-F1 ${fmt(own.cv_f1_macro)} (${own.n_train} training / ${own.n_test} test images; chance ${fmt(body.chance_f1)})`
    : "This model has no row in its run's results.";
  const table = $("results-table");
  const head = el("tr");
  ["model", "backbone", "classifier", "CV macro-F1", "test macro-F1", "test accuracy"].forEach((h) => head.append(cell("th", h)));
  const rows = body.rows.map((r) => {
    const tr = el("tr", r.model === name ? "own" : "");
    [r.model, r.backbone, r.classifier, fmt(r.cv_f1_macro), fmt(r.test_f1_macro), fmt(r.test_accuracy)]
      .forEach((v) => tr.append(cell("td", v)));
    return tr;
  });
  table.replaceChildren(head, ...rows);
  const matrix = $("confusion");
  matrix.replaceChildren();
  if (body.confusion) {
    const { categories, matrix: counts } = body.confusion;
    const top = el("tr");
    top.append(cell("th", "true \\ predicted"));
    categories.forEach((c) => top.append(cell("th", c, "col")));
    matrix.append(top);
    counts.forEach((line, i) => {
      const total = line.reduce((a, b) => a + b, 0) || 1;
      const tr = el("tr");
      tr.append(cell("th", categories[i]));
      line.forEach((count, j) => {
        const td = cell("td", String(count));
        const share = count / total;
        td.style.background = i === j ? `rgba(39, 120, 60, ${0.1 + 0.8 * share})` : `rgba(200, 40, 40, ${0.9 * share})`;
        tr.append(td);
      });
      matrix.append(tr);
    });
  }
  $("notes").replaceChildren(...(body.notes || []).map((n) => el("li", "", n)));
}

function showView(view) {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.view === view));
  $("view-classify").hidden = view !== "classify";
  $("view-results").hidden = view !== "results";
  if (view === "results") loadResults();
}

function setUp() {
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (event) => {
    event.preventDefault(); drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => drop.addEventListener(type, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (event) => { event.preventDefault(); handleFiles(event.dataTransfer.files); });
  $("files").addEventListener("change", (event) => { handleFiles(event.target.files); event.target.value = ""; });
  document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => showView(t.dataset.view)));
  $("model").addEventListener("change", () => { if (!$("view-results").hidden) loadResults(); });
  $("save-key").addEventListener("click", () => {
    state.key = $("api-key").value.trim();
    sessionStorage.setItem("pintopic-key", state.key);
    $("key-box").hidden = true;
    loadModels();
  });
  loadModels();
}

document.addEventListener("DOMContentLoaded", setUp);
