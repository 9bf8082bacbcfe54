// The page of `python -m sum_jax.serve`: one panel per model, the same prompts sent to all.
// Talks only to this server's JSON API (docs/serve.md); no library, nothing from elsewhere.
"use strict";

const COLOURS = [[30, 144, 255], [255, 99, 71], [50, 205, 50], [255, 215, 0], [186, 85, 211],
                 [0, 206, 209]];  // sum_jax.visualize.PALETTE
const MASK_ALPHA = 115;  // of 255, inside a mask; its outline is opaque
const DRAG_PX = 5;  // a press that moves further than this (screen px) draws a box

const state = {
  info: null,
  image: null,       // {id, name, width, height}
  photo: null,       // the decoded <img>
  prompts: [],       // [{kind: "point", x, y, label} | {kind: "box", box: [x0, y0, x1, y1]}]
  results: null,     // the last /api/predict answer
  candidates: null,  // the first click's answer: {model: [{mask, score}, ...]}
  seq: 0,            // requests sent; an answer to an older one is dropped
  shown: 0,          // the request whose answer is on screen
  drag: null,        // {x0, y0, sx, sy, button, moved}
};
window.sumServe = state;  // for people (and tests) poking at the page from the console

const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body;
  try {
    body = await response.json();
  } catch (e) {
    throw new Error(`${path}: HTTP ${response.status}, not JSON`);
  }
  if (!response.ok) throw new Error(body.error || `${path}: HTTP ${response.status}`);
  return body;
}

// Panels ---------------------------------------------------------------------------------
function buildPanels() {
  const panels = $("panels");
  panels.textContent = "";
  state.info.models.forEach((model, i) => {
    const panel = document.createElement("section");
    panel.className = "panel";
    panel.dataset.model = model.name;
    const [r, g, b] = COLOURS[i % COLOURS.length];
    panel.innerHTML = `
      <h2><span class="swatch" style="color: rgb(${r},${g},${b})">■</span>
        <span class="name"></span> <span class="score"></span></h2>
      <div class="stage">
        <canvas class="photo"></canvas><canvas class="mask"></canvas><canvas class="prompts"></canvas>
      </div>
      <div class="candidates"></div>
      <div class="links"><a class="download-mask" hidden>mask PNG</a></div>`;
    panel.querySelector(".name").textContent = model.name;
    panels.appendChild(panel);
    attachPointer(panel.querySelector("canvas.prompts"));
  });
}

function panels() {
  return Array.from(document.querySelectorAll(".panel"));
}

function colourOf(name) {
  const i = state.info.models.findIndex((m) => m.name === name);
  return COLOURS[i % COLOURS.length];
}

function sizeStages() {
  const { width, height } = state.image;
  for (const panel of panels()) {
    // The panel is as wide as the photo (or the window), so that nothing below it (the
    // candidates) moves the panels around after a click.
    panel.style.width = `${width}px`;
    for (const canvas of panel.querySelectorAll(".stage canvas")) {
      canvas.width = width;
      canvas.height = height;
    }
    panel.querySelector("canvas.photo").getContext("2d").drawImage(state.photo, 0, 0);
  }
}

// Images ---------------------------------------------------------------------------------
async function loadImages(selectId) {
  const { images } = await api("/api/images");
  const select = $("image");
  select.textContent = "";
  for (const im of images) {
    const option = document.createElement("option");
    option.value = im.id;
    option.textContent = `${im.name} (${im.width}×${im.height})`;
    select.appendChild(option);
  }
  if (selectId) select.value = selectId;
  return images;
}

function decodeImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`cannot load ${src}`));
    img.src = src;
  });
}

async function showImage(imageId) {
  state.image = null;
  state.prompts = [];
  state.results = null;
  state.candidates = null;
  state.seq += 1;
  setStatus(`embedding ${imageId}…`);
  const [embedded, photo] = await Promise.all([
    api("/api/embed", { method: "POST", headers: { "Content-Type": "application/json" },
                        body: JSON.stringify({ image_id: imageId }) }),
    decodeImage(`/api/images/${encodeURIComponent(imageId).replace(/%2F/g, "/")}`),
  ]);
  state.photo = photo;
  state.image = { id: embedded.image_id, name: embedded.name, width: embedded.width,
                  height: embedded.height };
  sizeStages();
  render();
  const times = Object.entries(embedded.models)
    .map(([name, t]) => `${name} ${t.embed_ms ? t.embed_ms.toFixed(0) + " ms" : "cached"}`);
  setStatus(`${embedded.name} ${embedded.width}×${embedded.height} embedded (${times.join(", ")}); ` +
            "click on the photo");
}

async function upload(file) {
  setStatus(`uploading ${file.name}…`);
  const embedded = await api(`/api/embed?name=${encodeURIComponent(file.name)}`, {
    method: "POST",
    headers: { "Content-Type": file.type || "application/octet-stream" },
    body: file,
  });
  await loadImages(embedded.image_id);
  await showImage(embedded.image_id);
}

// Prompts --------------------------------------------------------------------------------
function toImage(canvas, event) {
  const rect = canvas.getBoundingClientRect();
  const sx = canvas.width / rect.width, sy = canvas.height / rect.height;
  const clamp = (v, hi) => Math.min(Math.max(v, 0), hi);
  return [clamp((event.clientX - rect.left) * sx, canvas.width),
          clamp((event.clientY - rect.top) * sy, canvas.height)];
}

function attachPointer(canvas) {
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("mousedown", (e) => {
    if (!state.image || (e.button !== 0 && e.button !== 2)) return;
    e.preventDefault();
    const [x, y] = toImage(canvas, e);
    state.drag = { canvas, x0: x, y0: y, x1: x, y1: y, sx: e.clientX, sy: e.clientY,
                   button: e.button, moved: false };
  });
}

window.addEventListener("mousemove", (e) => {
  const d = state.drag;
  if (!d || d.button !== 0) return;
  if (Math.hypot(e.clientX - d.sx, e.clientY - d.sy) > DRAG_PX) d.moved = true;
  [d.x1, d.y1] = toImage(d.canvas, e);
  if (d.moved) drawPrompts();
});

window.addEventListener("mouseup", (e) => {
  const d = state.drag;
  if (!d) return;
  state.drag = null;
  if (d.moved) {
    [d.x1, d.y1] = toImage(d.canvas, e);
    const box = [Math.min(d.x0, d.x1), Math.min(d.y0, d.y1),
                 Math.max(d.x0, d.x1), Math.max(d.y0, d.y1)].map(round2);
    // SAM takes one box: a new one replaces the old.
    state.prompts = state.prompts.filter((p) => p.kind !== "box");
    state.prompts.push({ kind: "box", box });
  } else {
    state.prompts.push({ kind: "point", x: round2(d.x0), y: round2(d.y0),
                         label: d.button === 0 ? 1 : 0 });
  }
  changed();
});

const round2 = (v) => Math.round(v * 100) / 100;

function requestBody() {
  const points = state.prompts.filter((p) => p.kind === "point").map((p) => [p.x, p.y, p.label]);
  const box = state.prompts.find((p) => p.kind === "box");
  return { image_id: state.image.id, points, box: box ? box.box : null, task: $("task").value };
}

function changed() {
  if (!state.prompts.length) state.candidates = null;
  render();
  if (state.prompts.length) predict();
  else {
    state.results = null;
    render();
    setStatus("no prompts: click on the photo");
  }
}

async function predict() {
  const seq = ++state.seq;
  const body = requestBody();
  const started = performance.now();
  try {
    const answer = await api("/api/predict", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (seq !== state.seq) return;  // a newer click is on its way
    state.results = answer;
    if (answer.multimask) {
      state.candidates = Object.fromEntries(
        Object.entries(answer.models).map(([name, m]) => [name, { items: m.candidates, best: m.best }]));
    }
    await render();
    state.shown = seq;
    const roundTrip = performance.now() - started;
    const parts = Object.entries(answer.models).map(
      ([name, m]) => `${name} ${m.ms.toFixed(1)} ms` + (m.embed_ms ? ` (+embed ${m.embed_ms.toFixed(0)} ms)` : ""));
    setStatus(`${parts.join(" · ")} · request ${roundTrip.toFixed(0)} ms`);
  } catch (err) {
    if (seq === state.seq) setStatus(`error: ${err.message}`, true);
  }
}

// Drawing --------------------------------------------------------------------------------
async function maskPixels(encoded, width, height) {
  const img = await decodeImage(`data:image/png;base64,${encoded.png}`);
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const mask = new Uint8Array(width * height);
  for (let i = 0; i < mask.length; i++) mask[i] = rgba[4 * i] > 127 ? 1 : 0;
  return mask;
}

function paintMask(canvas, mask, colour) {
  const { width, height } = canvas;
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(width, height);
  const [r, g, b] = colour;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      if (!mask[i]) continue;
      const edge = x === 0 || y === 0 || x === width - 1 || y === height - 1 ||
        !mask[i - 1] || !mask[i + 1] || !mask[i - width] || !mask[i + width];
      out.data.set([r, g, b, edge ? 255 : MASK_ALPHA], 4 * i);
    }
  }
  ctx.putImageData(out, 0, 0);
}

function drawPrompts() {
  const d = state.drag;
  for (const panel of panels()) {
    const canvas = panel.querySelector("canvas.prompts");
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!state.image) continue;
    const radius = Math.max(4, Math.round(Math.max(canvas.width, canvas.height) / 120));
    const boxes = state.prompts.filter((p) => p.kind === "box").map((p) => p.box);
    if (d && d.moved) boxes.push([d.x0, d.y0, d.x1, d.y1]);
    ctx.lineWidth = Math.max(2, radius / 2);
    ctx.strokeStyle = "rgb(255, 215, 0)";
    for (const [x0, y0, x1, y1] of boxes) ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    for (const p of state.prompts.filter((q) => q.kind === "point")) {
      ctx.beginPath();
      ctx.arc(p.x, p.y, radius, 0, 2 * Math.PI);
      ctx.fillStyle = p.label === 1 ? "rgb(0, 200, 0)" : "rgb(230, 0, 0)";
      ctx.fill();
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = "white";
      ctx.stroke();
    }
  }
}

async function render() {
  drawPrompts();
  if (!state.image) return;
  const { width, height } = state.image;
  const results = state.results && state.results.image_id === state.image.id ? state.results : null;
  for (const panel of panels()) {
    const name = panel.dataset.model;
    const maskCanvas = panel.querySelector("canvas.mask");
    const link = panel.querySelector("a.download-mask");
    const answer = results && state.prompts.length ? results.models[name] : null;
    if (!answer) {
      maskCanvas.getContext("2d").clearRect(0, 0, width, height);
      panel.querySelector(".score").textContent = "";
      link.hidden = true;
    } else {
      paintMask(maskCanvas, await maskPixels(answer.mask, width, height), colourOf(name));
      panel.querySelector(".score").textContent = `score ${answer.score.toFixed(3)}`;
      link.href = `data:image/png;base64,${answer.mask.png}`;
      link.download = `${state.image.name.replace(/[^\w.-]+/g, "_")}_${name}_mask.png`;
      link.hidden = false;
    }
    await renderCandidates(panel, name);
  }
}

async function renderCandidates(panel, name) {
  const box = panel.querySelector(".candidates");
  box.textContent = "";
  panel.querySelectorAll(".candidates-title").forEach((el) => el.remove());
  const c = state.candidates && state.candidates[name];
  if (!c) return;
  const { width, height } = state.image;
  const heading = document.createElement("div");
  heading.className = "candidates-title";
  heading.textContent = "The first click's three candidates (framed: the one shown)";
  box.before(heading);
  const scale = Math.min(1, 200 / width);  // thumbnails; CSS fits three across the panel
  for (const [k, item] of c.items.entries()) {
    const figure = document.createElement("figure");
    figure.className = k === c.best ? "best" : "";
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(width * scale);
    canvas.height = Math.round(height * scale);
    const full = document.createElement("canvas");
    full.width = width;
    full.height = height;
    full.getContext("2d").drawImage(state.photo, 0, 0);
    const overlay = document.createElement("canvas");
    overlay.width = width;
    overlay.height = height;
    paintMask(overlay, await maskPixels(item.mask, width, height), colourOf(name));
    full.getContext("2d").drawImage(overlay, 0, 0);
    canvas.getContext("2d").drawImage(full, 0, 0, canvas.width, canvas.height);
    const caption = document.createElement("figcaption");
    caption.textContent = `mask ${k + 1}: ${item.score.toFixed(3)}`;
    figure.title = "a candidate of the first click alone";
    figure.append(canvas, caption);
    box.appendChild(figure);
  }
}

// Controls -------------------------------------------------------------------------------
function download(filename, text) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  a.download = filename;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function wireControls() {
  $("image").addEventListener("change", (e) => showImage(e.target.value).catch(fail));
  $("upload").addEventListener("change", (e) => {
    if (e.target.files.length) upload(e.target.files[0]).catch(fail);
    e.target.value = "";
  });
  $("task").addEventListener("change", () => {
    state.candidates = null;
    changed();
  });
  $("undo").addEventListener("click", () => {
    state.prompts.pop();
    changed();
  });
  $("reset").addEventListener("click", () => {
    state.prompts = [];
    changed();
  });
  window.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "z") {
      e.preventDefault();
      $("undo").click();
    }
  });
  $("save-prompts").addEventListener("click", () => {
    if (!state.image) return;
    // Exactly the body of the last /api/predict request: `curl -d @file` replays it.
    const body = requestBody();
    download(`${state.image.name.replace(/[^\w.-]+/g, "_")}_prompts.json`,
             JSON.stringify(body, null, 2));
  });
}

function fail(err) {
  setStatus(`error: ${err.message}`, true);
}

async function start() {
  state.info = await api("/api/info");
  if (state.info.banner) {
    $("banner").textContent = state.info.banner;
    $("banner").hidden = false;
  }
  buildPanels();
  wireControls();
  const images = await loadImages();
  if (images.length) await showImage(images[0].id);
}

start().catch(fail);
