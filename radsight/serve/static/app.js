// The radsight viewer: uploads a file to /view and shows what comes back. No library, no network
// beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
let model = null;

function element(tag, attributes = {}, text = null) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== null) node.textContent = text;
  return node;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

async function loadModel() {
  const response = await fetch("/model");
  model = await response.json();
  $("model-name").textContent = model.name;
  for (const name of model.explanations) $("explanation").append(element("option", { value: name }, name));
  $("explanation").value = model.default_explanation;
  const scale = model.scale;
  const cut = Math.round(scale.transparent_below * 100);
  const stops = scale.colours.map((c, i) => `${c} ${cut + (i / (scale.colours.length - 1)) * (100 - cut)}%`);
  $("colourbar").style.background = `linear-gradient(to right, #808080 0%, #808080 ${cut}%, ${stops.join(", ")})`;
  $("scale-low").textContent = scale.ends[0];
  $("scale-high").textContent = scale.ends[1];
  $("scale-meaning").textContent =
    `Map colours: ${scale.meaning}. Below ${scale.transparent_below} of the scale (gray) the map is not drawn.`;
}

function showProbabilities(result) {
  const body = $("probabilities").querySelector("tbody");
  body.replaceChildren();
  for (const [label, probability] of Object.entries(result.probabilities)) {
    const threshold = result.thresholds[label];
    const positive = result.positive[label];
    const row = element("tr", { "data-label": label });
    row.append(element("td", {}, label));
    const cell = element("td", { class: "number probability", "data-probability": String(probability) },
      probability.toFixed(3));
    const bar = element("span", { class: "bar" });
    const fill = element("span", { class: "fill" });
    fill.style.width = `${probability * 100}%`;
    bar.append(fill);
    if (threshold !== null) {
      const mark = element("span", { class: "mark", title: `threshold ${threshold.toFixed(3)}` });
      mark.style.left = `${threshold * 100}%`;
      bar.append(mark);
    }
    cell.append(bar);
    row.append(cell);
    row.append(element("td", { class: "number" }, threshold === null ? "none" : threshold.toFixed(3)));
    const call = positive === null ? "no threshold" : positive ? "at or above" : "below";
    row.append(element("td", positive ? { class: "positive" } : {}, call));
    body.append(row);
  }
}

function showRegions(result) {
  const svg = $("regions");
  const [height, width] = result.original_size;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  for (const [x0, y0, x1, y1] of result.regions || []) {
    const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    for (const [key, value] of Object.entries({ x: x0, y: y0, width: x1 - x0, height: y1 - y0 })) {
      rect.setAttribute(key, value);
    }
    svg.append(rect);
  }
}

function show(result) {
  $("film").src = result.film;
  $("map").src = result.map;
  showRegions(result);
  showProbabilities(result);
  $("explained").textContent = `${result.explanation} map of "${result.top_label}"`;
  $("deletion").textContent = result.faithfulness.deletion_auc.toFixed(3);
  $("insertion").textContent = result.faithfulness.insertion_auc.toFixed(3);
  $("report").hidden = !result.text;
  $("report-text").textContent = result.text || "";
  $("warnings").replaceChildren(...result.warnings.map((warning) => element("li", {}, warning)));
  $("result").hidden = false;
}

async function loadStudies() {
  const response = await fetch("/pacs/studies");
  const studies = await response.json();
  if (!response.ok) return showError(`The PACS did not list its studies: ${studies.detail}`);
  for (const study of studies) {
    const text = [study.patient_id, study.study_date, study.description].filter(Boolean).join(" · ");
    $("study").append(element("option", { value: study.study_uid }, text || study.study_uid));
  }
  $("pacs").hidden = false;
}

async function analyse(event) {
  if (event) event.preventDefault();
  const file = $("file").files[0];
  if (!file) return showError("Choose a DICOM, PNG or JPEG file first.");
  const form = new FormData();
  form.append("file", file);
  await request("/view", { explanation: $("explanation").value }, form, file.name);
}

async function analyseStudy(event) {
  if (event) event.preventDefault();
  const study = $("study").value;
  await request("/pacs/view", { study, explanation: $("explanation").value }, null, `study ${study}`);
}

async function request(path, parameters, body, what) {
  $("error").hidden = true;
  $("status").textContent = "analysing…";
  document.body.dataset.state = "busy";
  try {
    const query = new URLSearchParams(parameters);
    const response = await fetch(`${path}?${query}`, { method: "POST", body });
    const answer = await response.json();
    if (!response.ok) {
      const detail = typeof answer.detail === "string" ? answer.detail : JSON.stringify(answer.detail);
      showError(`${what} was not analysed: ${detail}`);
      document.body.dataset.state = "error";
    } else {
      show(answer);
      document.body.dataset.state = "done";
    }
  } catch (error) {
    showError(`The server did not answer: ${error}`);
    document.body.dataset.state = "error";
  } finally {
    $("status").textContent = "";
  }
}

function updateMap() {
  $("map").style.opacity = $("opacity").value / 100;
  $("map").hidden = !$("show-map").checked;
}

document.addEventListener("DOMContentLoaded", async () => {
  await loadModel();
  if (model.pacs) await loadStudies();
  $("pacs").addEventListener("submit", analyseStudy);
  $("upload").addEventListener("submit", analyse);
  $("file").addEventListener("change", () => analyse());
  $("explanation").addEventListener("change", () => { if ($("file").files[0]) analyse(); });
  $("show-map").addEventListener("change", updateMap);
  $("opacity").addEventListener("input", updateMap);
  updateMap();
  document.body.dataset.state = "ready";
});
