// The page of `python -m sum_jax.serve`: one panel per model, the same prompts sent to all.
// Talks only to this server's JSON API (docs/serve.md); no library, nothing from elsewhere.
"use strict";

const COLOURS = [[30, 144, 255], [255, 99, 71], [50, 205, 50], [255, 215, 0], [186, 85, 211],
                 [0, 206, 209]];  // sum_jax.visualize.PALETTE
// Committed objects: colours apart from the models' (the current mask keeps its model's).
const OBJECT_COLOURS = [[255, 0, 255], [0, 255, 127], [255, 140, 0], [127, 255, 0],
                        [0, 191, 255], [255, 20, 147], [173, 255, 47], [255, 255, 0]];
const MASK_ALPHA = 115;  // of 255, inside a mask; its outline is opaque
const PREVIEW_ALPHA = 60;  // of 255, inside the hover preview's mask
const HOVER_MS = 120;  // the pointer rests this long before the hover preview is asked for
const DRAG_PX = 5;  // a press that moves further than this (screen px) draws a box
const MARKER_PX = 6;  // radius of a point marker on screen, whatever the photo's size
const THUMB_PX = 72;  // height of a candidate's thumbnail
const HEADING_PX = 30;  // a panel's title above its photo
const BELOW_STAGE_PX = 140;  // kept free under each photo: candidates, links
const ZOOM_STEP = 1.25;  // per +/- key; the wheel zooms by exp(-deltaY * WHEEL_ZOOM)
const WHEEL_ZOOM = 0.0015;
const MAX_SCREEN_PX = 16;  // the deepest zoom shows one photo pixel as this many screen px
const FIT = { zoom: 1, ox: 0, oy: 0 };  // the whole photo in the stage

const state = {
  info: null,
  image: null,       // {id, name, width, height}
  photo: null,       // the decoded <img>
  prompts: [],       // [{kind: "point", x, y, label} | {kind: "box", box: [x0, y0, x1, y1]}]
  redo: [],          // prompts undone, newest last; a new prompt clears them
  mode: "positive",  // what a left click adds: "positive" or "negative" point, "box" nothing
  // image id -> committed objects [{name, task, prompts, chosen, models, masks, full}]
  objectsByImage: {},
  results: null,     // the last /api/predict answer
  candidates: null,  // the first click's answer: {model: [{mask, score}, ...]}
  chosen: {},        // model -> the candidate picked by a click on its thumbnail
  masks: new Map(),  // decoded masks of the answer on screen: "model/k" -> {w, h, cols}
  full: null,        // {seq, object}: the shown masks at the photo's size, once asked for
  scale: 1,          // stage px per image px with the whole photo shown
  stage: { dw: 1, dh: 1 },  // the stage's size in px
  // The zoom (1: the whole photo) and the stage px, unzoomed, at its top-left corner.
  view: { ...FIT },
  pan: null,         // {sx, sy, ox, oy} while the view is dragged
  spaceDown: false,  // space held: a left drag pans
  // The optional hover preview: the masks a left click at the pointer would give.
  hover: { on: false, seq: 0, timer: null, answer: null, at: null },
  seq: 0,            // requests sent; an answer to an older one is dropped
  shown: 0,          // the request whose answer is on screen
  timings: [],       // per answer: {seq, server, request, draw} in ms
  drag: null,        // {x0, y0, sx, sy, button, moved}
};
window.sumServe = state;  // for people (and tests) poking at the page from the console

const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false, busy = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
  el.classList.toggle("busy", busy);
  document.body.classList.toggle("pending", busy);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

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
        <canvas class="photo"></canvas><canvas class="objects"></canvas><canvas class="mask"></canvas><canvas class="preview"></canvas><canvas class="prompts"></canvas>
      </div>
      <div class="candidates-title" hidden>The first click's three candidates: click one to
        show it (framed: the one shown)</div>
      <div class="candidates"></div>
      <div class="links"><a class="download-mask" href="#" hidden>mask PNG</a>
        <a class="download-labels" href="#">labels PNG</a>
        <a class="download-cutout" href="#">cut-out PNG</a></div>`;
    panel.querySelector(".name").textContent = model.name;
    panels.appendChild(panel);
    attachPointer(panel.querySelector("canvas.prompts"));
    const save = (selector, what) => panel.querySelector(selector).addEventListener("click", async (e) => {
      e.preventDefault();
      if (!state.image) return;
      const filename = `${fileStem()}_${model.name}_${selector.split("-")[1]}.png`;
      try {
        const canvas = await what(model.name);
        if (!canvas) {
          setStatus("nothing to save yet: click on the photo, or add an object (Enter)", true);
          return;
        }
        saveCanvas(canvas, filename);
        setStatus(`saved ${filename} (${canvas.width}×${canvas.height})`);
      } catch (err) {
        fail(err);
      }
    });
    save("a.download-mask", maskCanvasOf);
    save("a.download-labels", labelsCanvas);
    save("a.download-cutout", cutoutCanvas);
  });
}

function panels() {
  return Array.from(document.querySelectorAll(".panel"));
}

function colourOf(name) {
  const i = state.info.models.findIndex((m) => m.name === name);
  return COLOURS[i % COLOURS.length];
}

// Every panel shows the photo at one scale (never above 1:1) that puts all panels side by
// side within the window, with room for the candidates below: any photo size or aspect.
function displayScale() {
  const { width, height } = state.image;
  const box = $("panels");
  const n = panels().length;
  const gap = parseFloat(getComputedStyle(box).columnGap) || 16;
  const availW = (box.clientWidth - gap * (n - 1)) / n;
  // Everything above the photos (banner, controls, status, the panel's title) at the top of
  // the page, and room below them for the candidates and links.
  const top = box.getBoundingClientRect().top + window.scrollY + HEADING_PX;
  const availH = window.innerHeight - top - BELOW_STAGE_PX;
  return Math.max(0.05, Math.min(1, availW / width, availH / height));
}

function sizeStages() {
  const { width, height } = state.image;
  state.scale = displayScale();
  const dw = Math.max(1, Math.round(width * state.scale));
  const dh = Math.max(1, Math.round(height * state.scale));
  const v = state.view;  // keep the zoomed part in view: its offset in the new stage's px
  v.ox *= dw / state.stage.dw;
  v.oy *= dh / state.stage.dh;
  state.stage = { dw, dh };
  clampView();
  for (const panel of panels()) {
    // The panel is as wide as the shown photo, so that nothing below it (the candidates)
    // moves the panels around after a click.
    panel.style.width = `${dw}px`;
    for (const canvas of panel.querySelectorAll(".stage canvas")) {
      canvas.width = dw;
      canvas.height = dh;
      canvas.style.width = `${dw}px`;
      canvas.style.height = `${dh}px`;
    }
  }
  state.thumb = null;
  drawPhoto();
  drawObjects();
}

// The photo's part in view (all of it at zoom 1), scaled to the stage.
function drawPhoto() {
  const { width, height } = state.image;
  const { dw, dh } = state.stage;
  const { zoom, ox, oy } = state.view;
  for (const panel of panels()) {
    const ctx = panel.querySelector("canvas.photo").getContext("2d");
    ctx.imageSmoothingQuality = "high";
    ctx.clearRect(0, 0, dw, dh);
    ctx.drawImage(state.photo, ox * width / dw, oy * height / dh, width / zoom, height / zoom,
                  0, 0, dw, dh);
  }
}

// Zoom and pan ---------------------------------------------------------------------------
// The view is one zoom factor and the offset (ox, oy) of the stage's top-left corner in
// unzoomed stage px, shared by every panel: stage px u shows unzoomed px ox + u / zoom.

function clampView() {
  const v = state.view;
  const { dw, dh } = state.stage;
  if (v.zoom <= 1.0001) Object.assign(v, FIT);  // exactly the whole photo, no drift
  v.ox = Math.min(Math.max(v.ox, 0), dw - dw / v.zoom);
  v.oy = Math.min(Math.max(v.oy, 0), dh - dh / v.zoom);
}

function maxZoom() {
  return Math.max(1, MAX_SCREEN_PX / state.scale);
}

// Zooms by `factor` keeping stage px (u, v) over the same photo pixel.
function zoomAt(factor, u, v) {
  if (!state.image) return;
  const view = state.view;
  const zoom = Math.min(Math.max(view.zoom * factor, 1), maxZoom());
  const fx = view.ox + u / view.zoom, fy = view.oy + v / view.zoom;
  Object.assign(view, { zoom, ox: fx - u / zoom, oy: fy - v / zoom });
  viewChanged();
}

function resetView() {
  Object.assign(state.view, FIT);
  viewChanged();
}

let drawPending = false;
function viewChanged() {
  clampView();
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    if (!state.image) return;
    drawPhoto();
    drawObjects();
    drawMasks();
    drawPreview();
    drawPrompts();
  });
}

function attachZoom(canvas) {
  canvas.addEventListener("wheel", (e) => {
    if (!state.image) return;
    e.preventDefault();  // zoom the photo, not scroll the page
    const [u, v] = stagePx(canvas, e);
    zoomAt(Math.exp(-e.deltaY * WHEEL_ZOOM), u, v);
  }, { passive: false });
}

// Where a pointer event is on a stage canvas, in stage px.
function stagePx(canvas, event) {
  const rect = canvas.getBoundingClientRect();
  return [(event.clientX - rect.left) * state.stage.dw / rect.width,
          (event.clientY - rect.top) * state.stage.dh / rect.height];
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

// `embedded`: the answer of an embedding already made (an upload), not asked again.
async function showImage(imageId, embedded = null) {
  state.image = null;
  state.prompts = [];
  state.results = null;
  state.candidates = null;
  state.chosen = {};
  state.masks = new Map();
  state.full = null;
  state.redo = [];
  state.view = { ...FIT };
  state.seq += 1;
  clearPreview();
  setStatus(`embedding ${imageId} (the first photo of a new size also compiles its clicks)…`,
            false, true);
  let photo;
  [embedded, photo] = await Promise.all([
    embedded || api("/api/embed", { method: "POST", headers: { "Content-Type": "application/json" },
                                    body: JSON.stringify({ image_id: imageId }) }),
    decodeImage(`/api/images/${encodeURIComponent(imageId).replace(/%2F/g, "/")}`),
  ]);
  state.photo = photo;
  state.image = { id: embedded.image_id, name: embedded.name, width: embedded.width,
                  height: embedded.height };
  sizeStages();
  render();
  renderObjectList();
  const times = Object.entries(embedded.models)
    .map(([name, t]) => `${name} ${t.embed_ms ? t.embed_ms.toFixed(0) + " ms" : "cached"}`);
  setStatus(`${embedded.name} ${embedded.width}×${embedded.height} embedded (${times.join(", ")}); ` +
            "click on the photo");
}

async function upload(file) {
  setStatus(`uploading and embedding ${file.name}…`, false, true);
  const embedded = await api(`/api/embed?name=${encodeURIComponent(file.name)}`, {
    method: "POST",
    headers: { "Content-Type": file.type || "application/octet-stream" },
    body: file,
  });
  await loadImages(embedded.image_id);
  await showImage(embedded.image_id, embedded);
}

// Prompts --------------------------------------------------------------------------------
// A pointer event on a stage canvas -> (x, y) pixels of the original photo, at any zoom.
function toImage(canvas, event) {
  const { width, height } = state.image;
  const { dw, dh } = state.stage;
  const { zoom, ox, oy } = state.view;
  const [u, v] = stagePx(canvas, event);
  const clamp = (value, hi) => Math.min(Math.max(value, 0), hi);
  return [clamp((ox + u / zoom) * width / dw, width), clamp((oy + v / zoom) * height / dh, height)];
}

function attachPointer(canvas) {
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("mousedown", (e) => {
    if (!state.image) return;
    if (e.button === 1 || (e.button === 0 && state.spaceDown)) {  // pan
      e.preventDefault();
      state.pan = { sx: e.clientX, sy: e.clientY, ox: state.view.ox, oy: state.view.oy,
                    perPx: state.stage.dw / canvas.getBoundingClientRect().width };
      document.body.classList.add("panning");
      return;
    }
    if (e.button !== 0 && e.button !== 2) return;
    e.preventDefault();
    const [x, y] = toImage(canvas, e);
    state.drag = { canvas, x0: x, y0: y, x1: x, y1: y, sx: e.clientX, sy: e.clientY,
                   button: e.button, moved: false };
    clearPreview();
  });
  canvas.addEventListener("mousemove", (e) => {
    if (!state.hover.on || !state.image || state.drag || state.pan) return;
    clearTimeout(state.hover.timer);
    const [x, y] = toImage(canvas, e);
    state.hover.timer = setTimeout(() => preview(x, y), HOVER_MS);
  });
  canvas.addEventListener("mouseleave", clearPreview);
  attachZoom(canvas);
}

// Hover preview ---------------------------------------------------------------------------
// While on (the "hover preview" box, or H), the pointer resting on the photo asks for the
// masks a left click there would give (the prompts so far and that point) and draws them
// faintly; nothing is added until the click.

function clearPreview() {
  const h = state.hover;
  clearTimeout(h.timer);
  h.seq += 1;  // an answer on its way is dropped
  h.answer = null;
  h.at = null;
  drawPreview();
}

async function preview(x, y) {
  const h = state.hover;
  if (!state.image || state.mode === "box") return;
  const seq = ++h.seq;
  const body = requestBody();
  body.points = [...body.points, [round2(x), round2(y), state.mode === "positive" ? 1 : 0]];
  try {
    const answer = await api("/api/predict", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...body, max_mask_side: state.info.display_mask_side }),
    });
    if (seq !== h.seq || !state.image || answer.image_id !== state.image.id) return;
    h.answer = answer;
    h.at = body.points[body.points.length - 1];
    drawPreview();
  } catch (err) {
    if (seq === h.seq) setStatus(`hover preview: ${err.message}`, true);
  }
}

function drawPreview() {
  const answer = state.hover.answer;
  for (const panel of panels()) {
    const canvas = panel.querySelector("canvas.preview");
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const m = answer && answer.models[panel.dataset.model];
    if (!m) continue;
    const cols = resample(decodeMask(m.mask), canvas.width, canvas.height, state.view);
    paintRuns(ctx, cols, colourOf(panel.dataset.model), PREVIEW_ALPHA);
  }
}

function setHover(on) {
  state.hover.on = on;
  $("hover").checked = on;
  if (!on) clearPreview();
}

window.addEventListener("mousemove", (e) => {
  const p = state.pan;
  if (p) {
    const z = state.view.zoom;
    state.view.ox = p.ox - (e.clientX - p.sx) * p.perPx / z;
    state.view.oy = p.oy - (e.clientY - p.sy) * p.perPx / z;
    viewChanged();
    return;
  }
  const d = state.drag;
  if (!d || d.button !== 0) return;
  if (Math.hypot(e.clientX - d.sx, e.clientY - d.sy) > DRAG_PX) d.moved = true;
  [d.x1, d.y1] = toImage(d.canvas, e);
  if (d.moved) drawPrompts();
});

window.addEventListener("mouseup", (e) => {
  if (state.pan) {
    state.pan = null;
    document.body.classList.remove("panning");
    return;
  }
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
  } else if (d.button === 2 || state.mode !== "box") {
    state.prompts.push({ kind: "point", x: round2(d.x0), y: round2(d.y0),
                         label: d.button === 0 && state.mode === "positive" ? 1 : 0 });
  } else {
    return;  // a click without a drag in box mode adds nothing
  }
  state.redo = [];
  changed();
});

const round2 = (v) => Math.round(v * 100) / 100;

function requestBody() {
  const points = state.prompts.filter((p) => p.kind === "point").map((p) => [p.x, p.y, p.label]);
  const box = state.prompts.find((p) => p.kind === "box");
  return { image_id: state.image.id, points, box: box ? box.box : null, task: $("task").value,
           mask_format: "rle" };
}

function changed() {
  clearPreview();
  if (!state.prompts.length) state.candidates = null;
  state.chosen = {};
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
  // Masks of at most display_mask_side px per side: what the stage can show, and what the
  // server compiled at warm-up; the exports ask for the photo's size (fullMasks).
  const body = { ...requestBody(), max_mask_side: state.info.display_mask_side };
  const started = performance.now();
  setStatus(`segmenting (${state.prompts.length} prompt${state.prompts.length > 1 ? "s" : ""})…`,
            false, true);
  try {
    const answer = await api("/api/predict", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (seq !== state.seq) return;  // a newer click is on its way
    const roundTrip = performance.now() - started;
    performance.mark(`draw-start-${seq}`);
    state.results = answer;
    for (const key of state.masks.keys()) if (key.endsWith("/-1")) state.masks.delete(key);
    if (answer.multimask) {
      state.masks = new Map();
      state.candidates = Object.fromEntries(
        Object.entries(answer.models).map(([name, m]) => [name, { items: m.candidates, best: m.best }]));
    }
    render();
    const draw = performance.measure(`draw-${seq}`, `draw-start-${seq}`).duration;
    state.shown = seq;
    // The server's time for every model: embedding (if not cached), decoder, mask encoding.
    state.timings.push({ seq, server: answer.ms, request: roundTrip, draw });
    const parts = Object.entries(answer.models).map(
      ([name, m]) => `${name} ${m.ms.toFixed(1)} ms` + (m.embed_ms ? ` (+embed ${m.embed_ms.toFixed(0)} ms)` : "") +
        (m.task_note ? ` [${name}: ${m.task_note}]` : ""));
    setStatus(`server: ${parts.join(" · ")} (${answer.ms.toFixed(0)} ms in all) · ` +
              `request ${roundTrip.toFixed(0)} ms · drawing ${draw.toFixed(1)} ms`);
  } catch (err) {
    if (seq === state.seq) setStatus(`error: ${err.message}`, true);
  }
}

// Drawing --------------------------------------------------------------------------------
// Masks arrive as COCO compressed RLE (runs down the columns), at most display_mask_side px
// per side, and are painted run by run with fillRect at the stage's resolution: the cost
// follows the mask's outline, not the photo's pixel count, so a 12 MP photo draws as fast as
// a small one.

// COCO's compressed RLE string -> run lengths (0-runs first), as pycocotools' rleFrString.
function rleCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p++;
      k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// An answer's mask -> {w, h, cols}: per column, its [y0, y1) intervals (flat arrays).
function decodeMask(encoded) {
  const [h, w] = encoded.rle.size;
  const cols = Array.from({ length: w }, () => []);
  let pos = 0, value = 0;
  for (const n of rleCounts(encoded.rle.counts)) {
    if (value) {
      for (let a = pos, b = pos + n; a < b;) {  // a run may go on into the next column
        const x = Math.floor(a / h), y0 = a - x * h;
        const y1 = Math.min(h, y0 + (b - a));
        cols[x].push(y0, y1);
        a += y1 - y0;
      }
    }
    pos += n;
    value ^= 1;
  }
  return { w, h, cols };
}

// `mask` sampled onto a `dw x dh` canvas through `view` (FIT: the whole mask): each canvas
// column takes the mask column under its centre, each run's ends are rounded to canvas rows.
// With FIT and a mask of the canvas's size, the mask itself.
function resample(mask, dw, dh, view = FIT) {
  const { w, h, cols } = mask;
  const { zoom, ox, oy } = view;
  if (dw === w && dh === h && zoom === 1) return cols;
  const out = [];
  for (let dx = 0; dx < dw; dx++) {
    const src = cols[Math.min(w - 1, Math.max(0, Math.floor((ox + (dx + 0.5) / zoom) * w / dw)))];
    const col = [];
    for (let i = 0; i < src.length; i += 2) {
      const y0 = Math.max(0, Math.round((src[i] * dh / h - oy) * zoom));
      const y1 = Math.min(dh, Math.round((src[i + 1] * dh / h - oy) * zoom));
      if (y1 <= y0) continue;
      if (col.length && col[col.length - 1] >= y0) col[col.length - 1] = Math.max(col[col.length - 1], y1);
      else col.push(y0, y1);
    }
    out.push(col);
  }
  return out;
}

// The parts of intervals `a` not covered by intervals `b` (both sorted, flat).
function minus(a, b) {
  const out = [];
  let j = 0;
  for (let i = 0; i < a.length; i += 2) {
    let y = a[i];
    const end = a[i + 1];
    while (j < b.length && b[j + 1] <= y) j += 2;
    for (let k = j; k < b.length && b[k] < end; k += 2) {
      if (b[k] > y) out.push(y, b[k]);
      y = Math.max(y, b[k + 1]);
    }
    if (y < end) out.push(y, end);
  }
  return out;
}

// Every run of `cols` filled with `style` (integer pixels: no anti-aliasing).
function fillRuns(ctx, cols, style) {
  ctx.fillStyle = style;
  cols.forEach((col, x) => {
    for (let i = 0; i < col.length; i += 2) ctx.fillRect(x, col[i], 1, col[i + 1] - col[i]);
  });
}

// Tinted inside, opaque outline: pixels with a 4-neighbour outside the mask (or the frame).
function paintRuns(ctx, cols, colour, alpha = MASK_ALPHA) {
  const [r, g, b] = colour;
  fillRuns(ctx, cols, `rgba(${r}, ${g}, ${b}, ${alpha / 255})`);
  ctx.fillStyle = `rgb(${r}, ${g}, ${b})`;
  const none = [];
  cols.forEach((col, x) => {
    for (let i = 0; i < col.length; i += 2) {
      ctx.fillRect(x, col[i], 1, 1);
      ctx.fillRect(x, col[i + 1] - 1, 1, 1);
    }
    for (const other of [cols[x - 1] || none, cols[x + 1] || none]) {
      const edge = minus(col, other);
      for (let i = 0; i < edge.length; i += 2) ctx.fillRect(x, edge[i], 1, edge[i + 1] - edge[i]);
    }
  });
}

// `name`'s one mask on screen (k = -1), or the first click's candidate k (kept below while
// the prompts are refined), each decoded once.
function maskOf(name, k) {
  const key = `${name}/${k}`;
  if (!state.masks.has(key)) {
    const mask = k < 0 ? state.results.models[name].mask : state.candidates[name].items[k].mask;
    state.masks.set(key, decodeMask(mask));
  }
  return state.masks.get(key);
}

// The candidate a panel shows: the one clicked, else the highest-scoring (-1: the one mask).
function shownIndex(name) {
  const m = state.results.models[name];
  if (!m.candidates) return -1;
  return name in state.chosen ? state.chosen[name] : m.best;
}

// Photo pixel (x, y) -> stage px through the view.
function toStage(x, y) {
  const { width, height } = state.image;
  const { dw, dh } = state.stage;
  const { zoom, ox, oy } = state.view;
  return [(x * dw / width - ox) * zoom, (y * dh / height - oy) * zoom];
}

// Points and boxes: one size on screen at any zoom.
function drawPrompts() {
  const d = state.drag;
  for (const panel of panels()) {
    const canvas = panel.querySelector("canvas.prompts");
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!state.image) continue;
    const boxes = state.prompts.filter((p) => p.kind === "box").map((p) => p.box);
    if (d && d.moved) boxes.push([d.x0, d.y0, d.x1, d.y1]);
    ctx.lineWidth = 2;
    ctx.strokeStyle = "rgb(255, 215, 0)";
    for (const [x0, y0, x1, y1] of boxes) {
      const [u0, v0] = toStage(x0, y0), [u1, v1] = toStage(x1, y1);
      ctx.strokeRect(u0, v0, u1 - u0, v1 - v0);
    }
    for (const p of state.prompts.filter((q) => q.kind === "point")) {
      const [u, v] = toStage(p.x, p.y);
      ctx.beginPath();
      ctx.arc(u, v, MARKER_PX, 0, 2 * Math.PI);
      ctx.fillStyle = p.label === 1 ? "rgb(0, 200, 0)" : "rgb(230, 0, 0)";
      ctx.fill();
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = "white";
      ctx.stroke();
    }
  }
}

function currentResults() {
  const r = state.results;
  return r && state.image && r.image_id === state.image.id && state.prompts.length ? r : null;
}

// Each panel's shown mask, through the view.
function drawMasks() {
  const results = currentResults();
  for (const panel of panels()) {
    const name = panel.dataset.model;
    const canvas = panel.querySelector("canvas.mask");
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (results && results.models[name]) {
      const cols = resample(maskOf(name, shownIndex(name)), canvas.width, canvas.height, state.view);
      paintRuns(ctx, cols, colourOf(name));
    }
  }
}

function render() {
  drawPrompts();
  if (!state.image) return;
  drawMasks();
  const results = currentResults();
  for (const panel of panels()) {
    const name = panel.dataset.model;
    const link = panel.querySelector("a.download-mask");
    const answer = results ? results.models[name] : null;
    if (!answer) {
      panel.querySelector(".score").textContent = "";
      link.hidden = true;
    } else {
      const k = shownIndex(name);
      const score = k < 0 ? answer.score : answer.candidates[k].score;
      panel.querySelector(".score").textContent = `score ${score.toFixed(3)}` +
        (answer.task_note ? " (task: see status)" : "");
      link.hidden = false;
    }
    renderCandidates(panel, name);
  }
}

function photoThumb(th) {
  if (!state.thumb || state.thumb.height !== th) {
    const canvas = document.createElement("canvas");
    canvas.height = th;
    canvas.width = Math.max(1, Math.round(state.image.width * th / state.image.height));
    canvas.getContext("2d").drawImage(state.photo, 0, 0, canvas.width, canvas.height);
    state.thumb = canvas;
  }
  return state.thumb;
}

function renderCandidates(panel, name) {
  const box = panel.querySelector(".candidates");
  box.textContent = "";
  const c = state.candidates && state.candidates[name];
  panel.querySelector(".candidates-title").hidden = !c;
  if (!c) return;
  const thumb = photoThumb(THUMB_PX);
  const shown = name in state.chosen ? state.chosen[name] : c.best;
  for (const [k, item] of c.items.entries()) {
    const figure = document.createElement("figure");
    figure.className = k === shown ? "best" : "";
    figure.dataset.k = k;
    const canvas = document.createElement("canvas");
    canvas.width = thumb.width;
    canvas.height = thumb.height;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(thumb, 0, 0);
    paintRuns(ctx, resample(maskOf(name, k), canvas.width, canvas.height), colourOf(name));
    const caption = document.createElement("figcaption");
    caption.textContent = `mask ${k + 1}: ${item.score.toFixed(3)}`;
    figure.title = "show this candidate";
    figure.append(canvas, caption);
    figure.addEventListener("click", () => chooseCandidate(name, k));
    box.appendChild(figure);
  }
}

// Shows candidate `k` of the first click in `name`'s panel (while that click is alone).
function chooseCandidate(name, k) {
  if (!state.results || !state.results.models[name].candidates) return;
  performance.mark("choose-start");
  state.chosen[name] = k;
  render();
  const draw = performance.measure("choose", "choose-start").duration;
  state.timings.push({ seq: state.seq, server: 0, request: 0, draw });
  setStatus(`${name}: candidate ${k + 1} shown · drawing ${draw.toFixed(1)} ms`);
}

// Objects and exports --------------------------------------------------------------------
function objects() {
  if (!state.image) return [];
  return (state.objectsByImage[state.image.id] ||= []);
}

// The masks on screen as an object: its prompts, each model's candidate (-1: the one
// mask), score and mask as shown, and `full`, the masks at the photo's size: those on
// screen when they are at that size, else asked for when an export needs them (fullMasks).
function shownObject() {
  const results = currentResults();
  const object = { task: results.task, prompts: requestBody(), chosen: {}, models: {},
                   masks: {}, full: null };
  const atFullSize = results.mask_width === results.width &&
                     results.mask_height === results.height;
  if (atFullSize) object.full = {};
  for (const [name, m] of Object.entries(results.models)) {
    const k = shownIndex(name);
    const shown = k < 0 ? m : m.candidates[k];
    object.chosen[name] = k;
    object.models[name] = { score: shown.score };
    object.masks[name] = maskOf(name, k);
    if (atFullSize) object.full[name] = { rle: shown.mask.rle, mask: object.masks[name] };
  }
  return object;
}

// `object.full`, asked for once: the same prompts again with no size limit on the masks
// (the decoder is deterministic: the same candidates, now at the photo's size).
async function fullMasks(object) {
  if (!object.full) {
    const answer = await api("/api/predict", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...object.prompts, models: Object.keys(object.chosen) }),
    });
    const full = {};
    for (const [name, k] of Object.entries(object.chosen)) {
      const m = answer.models[name];
      const mask = k < 0 ? m.mask : m.candidates[k].mask;
      full[name] = { rle: mask.rle, mask: decodeMask(mask) };
    }
    object.full = full;
  }
  return object.full;
}

// The shown masks as an object, the same one while the answer on screen stays.
function shownFull() {
  if (!currentResults()) return null;
  const key = `${state.shown}/${JSON.stringify(state.chosen)}`;
  if (!state.full || state.full.key !== key) state.full = { key, object: shownObject() };
  return state.full.object;
}

// Every committed object of this photo with its masks at full size (asked for if needed).
async function fullObjects() {
  const list = objects();
  for (const o of list) {
    if (!o.full) setStatus(`exporting: ${o.name} of ${list.length} at the photo's size…`, false, true);
    await fullMasks(o);
  }
  return list;
}

// Commits each model's shown mask (the candidate picked, or its best) as one object.
function commitObject() {
  if (!currentResults()) {
    setStatus("nothing to add: click on the photo first", true);
    return;
  }
  const list = objects();
  const object = { name: `object ${list.length + 1}`, ...shownFull() };
  list.push(object);
  state.prompts = [];
  state.redo = [];
  state.results = null;
  state.candidates = null;
  state.chosen = {};
  state.full = null;
  drawObjects();
  render();
  renderObjectList();
  setStatus(`${object.name} added (${list.length} on this photo); click for the next one`);
}

function deleteObject(j) {
  objects().splice(j, 1);
  objects().forEach((o, i) => { o.name = `object ${i + 1}`; });
  drawObjects();
  renderObjectList();
}

function drawObjects() {
  for (const panel of panels()) {
    const canvas = panel.querySelector("canvas.objects");
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    objects().forEach((o, j) => {
      const mask = o.masks[panel.dataset.model];
      if (mask) paintRuns(ctx, resample(mask, canvas.width, canvas.height, state.view),
                          OBJECT_COLOURS[j % OBJECT_COLOURS.length]);
    });
  }
}

function renderObjectList() {
  const box = $("objects");
  box.textContent = "";
  const list = objects();
  box.hidden = !list.length;
  list.forEach((o, j) => {
    const item = document.createElement("span");
    item.className = "object";
    const [r, g, b] = OBJECT_COLOURS[j % OBJECT_COLOURS.length];
    const scores = Object.entries(o.models).map(([n, m]) => `${n} ${m.score.toFixed(2)}`);
    item.innerHTML = `<span class="swatch" style="color: rgb(${r},${g},${b})">■</span> `;
    item.append(`${o.name} (${scores.join(", ")}) `);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.title = `delete ${o.name}`;
    remove.addEventListener("click", () => deleteObject(j));
    item.appendChild(remove);
    box.appendChild(item);
  });
}

function fileStem() {
  return state.image.name.replace(/[^\w.-]+/g, "_");
}

// A canvas of the photo's size: `background` (or transparent), then each `[mask, style]`
// layer filled (masks at the photo's size).
function fullCanvas(background, layers) {
  const { width, height } = state.image;
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  if (background) {
    ctx.fillStyle = background;
    ctx.fillRect(0, 0, width, height);
  }
  for (const [mask, style] of layers) fillRuns(ctx, mask.cols, style);
  return canvas;
}

// The mask a panel shows, white on black at the photo's size; null without one.
async function maskCanvasOf(name) {
  const object = shownFull();
  if (!object) return null;
  return fullCanvas("black", [[(await fullMasks(object))[name].mask, "white"]]);
}

// The label image of the committed objects: value k (R = G = B) for object k, 0 elsewhere;
// a later object covers an earlier one where they overlap.
async function labelsCanvas(name) {
  const list = await fullObjects();
  if (!list.length) return null;
  return fullCanvas("rgb(0, 0, 0)",
                    list.map((o, j) => [o.full[name].mask, `rgb(${j + 1}, ${j + 1}, ${j + 1})`]));
}

// The photo cut out by the shown mask (or, with no prompts, by every committed object),
// transparent elsewhere and cropped to the mask's bounding box.
async function cutoutCanvas(name) {
  const shown = shownFull();
  const masks = shown ? [(await fullMasks(shown))[name].mask]
    : (await fullObjects()).map((o) => o.full[name].mask);
  const box = bboxOf(masks);
  if (!box) return null;
  const cut = fullCanvas(null, masks.map((mask) => [mask, "white"]));
  const ctx = cut.getContext("2d");
  ctx.globalCompositeOperation = "source-in";
  ctx.drawImage(state.photo, 0, 0);
  const [x, y, w, h] = box;
  const out = document.createElement("canvas");
  out.width = w;
  out.height = h;
  out.getContext("2d").drawImage(cut, -x, -y);
  return out;
}

// [x, y, w, h] around every run of every mask in `many` (null if they are all empty).
function bboxOf(many) {
  let x0 = Infinity, y0 = Infinity, x1 = -1, y1 = -1;
  for (const mask of many) {
    mask.cols.forEach((col, x) => {
      if (!col.length) return;
      x0 = Math.min(x0, x);
      x1 = Math.max(x1, x);
      y0 = Math.min(y0, col[0]);
      y1 = Math.max(y1, col[col.length - 1] - 1);
    });
  }
  return x1 < 0 ? null : [x0, y0, x1 - x0 + 1, y1 - y0 + 1];
}

function areaOf(mask) {
  let area = 0;
  for (const col of mask.cols) for (let i = 0; i < col.length; i += 2) area += col[i + 1] - col[i];
  return area;
}

// Every committed object of this photo, one annotation per model, as COCO JSON with the
// masks at the photo's size as COCO compressed RLE (pycocotools.mask.decode reads them).
async function cocoJson() {
  const { width, height } = state.image;
  const annotations = [];
  (await fullObjects()).forEach((o, j) => {
    for (const [name, m] of Object.entries(o.models)) {
      const { rle, mask } = o.full[name];
      annotations.push({
        id: annotations.length + 1, image_id: 1, category_id: 1, iscrowd: 0,
        segmentation: rle, area: areaOf(mask), bbox: bboxOf([mask]) || [0, 0, 0, 0],
        score: m.score, model: name, object: j + 1, task: o.task, prompts: o.prompts,
      });
    }
  });
  return {
    info: { description: "sum_jax.serve annotations", models: state.info.models.map((m) => m.name) },
    images: [{ id: 1, file_name: state.image.name, width, height }],
    categories: [{ id: 1, name: "object" }],
    annotations,
  };
}

function saveCanvas(canvas, filename) {
  canvas.toBlob((blob) => saveBlob(blob, filename), "image/png");
}

function saveBlob(blob, filename) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

// Controls -------------------------------------------------------------------------------
function download(filename, text) {
  saveBlob(new Blob([text], { type: "application/json" }), filename);
}

function setMode(mode) {
  state.mode = mode;
  for (const input of document.querySelectorAll('input[name="mode"]')) {
    input.checked = input.value === mode;
  }
}

function stepImage(step) {
  const select = $("image");
  const i = select.selectedIndex + step;
  if (i < 0 || i >= select.options.length) return;
  select.selectedIndex = i;
  select.dispatchEvent(new Event("change"));
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
    if (!state.prompts.length) return;
    state.redo.push(state.prompts.pop());
    changed();
  });
  $("redo").addEventListener("click", () => {
    if (!state.redo.length) return;
    state.prompts.push(state.redo.pop());
    changed();
  });
  $("reset").addEventListener("click", () => {
    state.prompts = [];
    state.redo = [];
    changed();
  });
  $("commit").addEventListener("click", commitObject);
  $("hover").addEventListener("change", (e) => setHover(e.target.checked));
  $("export-coco").addEventListener("click", async () => {
    if (!objects().length) return setStatus("no objects yet: add one with Enter", true);
    try {
      download(`${fileStem()}_coco.json`, JSON.stringify(await cocoJson()));
      setStatus(`saved ${fileStem()}_coco.json (${objects().length} objects)`);
    } catch (err) {
      fail(err);
    }
  });
  for (const input of document.querySelectorAll('input[name="mode"]')) {
    input.addEventListener("change", () => setMode(input.value));
  }
  // The shortcuts listed on the page (index.html, .help).
  window.addEventListener("keydown", (e) => {
    if (e.target.closest && e.target.closest("select, input[type=file]")) return;
    const ctrl = e.ctrlKey || e.metaKey;
    const key = e.key.toLowerCase();
    if (key === " ") {  // held: a left drag pans
      state.spaceDown = true;
      document.body.classList.add("can-pan");
      e.preventDefault();
      return;
    }
    const action = ctrl && key === "z" && e.shiftKey ? "redo"
      : ctrl && key === "z" ? "undo"
      : ctrl && key === "y" ? "redo"
      : ctrl ? null
      : { p: "positive", n: "negative", b: "box", enter: "commit", escape: "reset",
          ".": "next", ",": "previous", "+": "zoom-in", "=": "zoom-in", "-": "zoom-out",
          "0": "fit", h: "hover" }[key];
    if (!action) return;
    e.preventDefault();
    const { dw, dh } = state.stage;
    if (action === "positive" || action === "negative" || action === "box") setMode(action);
    else if (action === "next" || action === "previous") stepImage(action === "next" ? 1 : -1);
    else if (action === "zoom-in" || action === "zoom-out") {
      zoomAt(action === "zoom-in" ? ZOOM_STEP : 1 / ZOOM_STEP, dw / 2, dh / 2);
    } else if (action === "fit") resetView();
    else if (action === "hover") setHover(!state.hover.on);
    else $(action).click();
  });
  window.addEventListener("keyup", (e) => {
    if (e.key !== " ") return;
    state.spaceDown = false;
    document.body.classList.remove("can-pan");
  });
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => {
      if (!state.image) return;
      sizeStages();
      render();
    }, 100);
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

// Until the server has compiled every click on the listed photos, say how far it is.
async function waitUntilReady() {
  for (;;) {
    const s = await api("/api/status");
    if (s.error) setStatus(`warm-up failed (${s.error}); clicks may be slow`, true);
    if (s.ready || s.error) return;
    setStatus(`warming up: ${s.step || "starting"} (${s.done} of ${s.total} image sizes done, ` +
              `${s.seconds.toFixed(0)} s)…`, false, true);
    await sleep(200);
  }
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
  await waitUntilReady();
  if (images.length) await showImage(images[0].id);
}

start().catch(fail);
