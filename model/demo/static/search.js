// The static demo: the whole search in the visitor's browser. Each checkpoint is an ONNX graph
// (uint8 images in, unit embeddings out) run by onnxruntime-web; its gallery's embeddings and UMAP
// map were computed offline (scripts/publish_space.py --hardware static). The page is drawn from
// one state value by render(). Every action builds on the latest state asked for (`wanted`, which
// may still be loading: an upload then a top-k change searches the upload with the new k), is
// searched, and is drawn unless a later action came meanwhile (the `turn` counter); a click on a
// grid, result or map of a dataset the page has left is dropped. What each action does to the
// state is actions.js's, pure and tested under node.
import {
  datasetOf, draw, drawable, failed, modelOf, opening, ownGallery, partners, pickDataset, pickExample, pickModel,
  pickOwn, sameClassOthers, setCompare, setCompareWith, setTopK, shownModels, shuffle, topK, upload,
} from "./actions.js";
import { familiarity } from "./familiarity.js";
import { drawingQuery, prepareQuery, resize } from "./prepare.js";
import { mountSketch } from "./sketch.js";
import { spec, text } from "./spec.js";

// declared once in spec.json, which the Gradio page reads too
const { min_side: MIN_SIDE, keep_side: KEEP_SIDE, max_pixels: MAX_PIXELS } = spec;
const COLOURS = spec.class_colours, UNLABELLED = spec.unlabelled_colour;
const SCHEMA = spec.site_schema; // the site.json schema this page reads (model/demo/static_site.py documents it)
const $ = (s) => document.querySelector(s);
ort.env.wasm.wasmPaths = new URL("ort/", location.href).href;
ort.env.wasm.numThreads = 1; // a static Space is not cross-origin isolated: no wasm threads

let site, state, wanted, turn = 0; // state: what the page shows; wanted: the latest state asked for
const cache = new Map(); // url -> promise of what it holds

function load(url, how) {
  if (!cache.has(url)) {
    cache.set(url, fetch(url).then((r) => {
      if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
      return how(r);
    }));
  }
  return cache.get(url);
}
const floats = (url) => load(url, async (r) => new Float32Array(await r.arrayBuffer()));
const doubles = (url) => load(url, async (r) => new Float64Array(await r.arrayBuffer()));
const loaded = new Set(); // the ONNX sessions ready to run
const session = (url) => load(url, async (r) => {
  const s = await ort.InferenceSession.create(new Uint8Array(await r.arrayBuffer()), { executionProviders: ["wasm"] });
  loaded.add(url);
  return s;
});

const dataset = (s = state) => datasetOf(site, s);

// ------------------------------------------------------------------------------ searching

async function embed(model, image) {
  const s = await session(model.onnx);
  const tensor = new ort.Tensor("uint8", Uint8Array.from(image.data), [1, image.height, image.width, image.channels]);
  const out = await s.run({ images: tensor });
  return out.embeddings.data;
}

// The query in the dataset's form: a gallery example as it is; an upload or a drawing prepared
// as the server prepares it.
function prepared(s) {
  const d = dataset(s), q = s.query;
  if (q.kind === "example") return { image: exampleImage(d, q.index), notes: [] };
  if (q.kind === "upload") {
    const ready = prepareQuery(q.rgba, q.width, q.height, d.style, d.size);
    return { ...ready, notes: [...(q.notes || []), ...ready.notes] }; // the shrink before the crop
  }
  if (!drawable(d)) return null;
  const image = drawingQuery(q.rgba, q.width, q.height, d.style);
  return image ? { image, notes: [] } : null;
}

let galleryPixels = null; // {name, data: RGBA of the sprite}
function exampleImage(d, index) {
  const { data, width } = galleryPixels;
  const col = index % d.columns, row = Math.floor(index / d.columns), c = d.channels;
  const out = new Uint8ClampedArray(d.size * d.size * c);
  for (let y = 0; y < d.size; y++) for (let x = 0; x < d.size; x++) {
    const p = ((row * d.size + y) * width + col * d.size + x) * 4;
    for (let b = 0; b < c; b++) out[(y * d.size + x) * c + b] = data[p + b];
  }
  return { data: out, width: d.size, height: d.size, channels: c };
}

async function galleryOf(d) {
  if (galleryPixels?.name !== d.name) {
    const bitmap = await createImageBitmap(await (await fetch(d.gallery)).blob(), { colorSpaceConversion: "none" });
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height), ctx = canvas.getContext("2d");
    ctx.drawImage(bitmap, 0, 0);
    galleryPixels = { name: d.name, data: ctx.getImageData(0, 0, bitmap.width, bitmap.height).data, width: bitmap.width };
  }
}

// The next state with the query searched: results for each shown model.
async function search(s) {
  const d = dataset(s);
  await galleryOf(d);
  if (!s.query) return { ...s, rows: [], seen: null, notes: s.notes || [] };
  if (s.query.kind === "own") return searchOwn(s, d);
  const t0 = performance.now();
  const ready = prepared(s);
  if (!ready) { // a drawing, kept for when a dataset that searches drawings is picked again
    const where = site.datasets.filter(drawable).map((x) => x.title).join(" and ");
    return { ...s, rows: [], seen: null, label: null,
             notes: [text("drawings_elsewhere", { datasets: where })] };
  }
  const label = s.query.kind === "example" && d.labels[s.query.index] >= 0 ? d.labels[s.query.index] : null;
  const rows = [], notes = [...ready.notes, ...compareNotes(d, s)];
  for (const m of shownModels(d, s)) {
    const embeddings = await floats(m.embeddings);
    const q = s.query.kind === "example" ? embeddings.subarray(s.query.index * m.dim, (s.query.index + 1) * m.dim)
                                         : await embed(m, ready.image);
    const hits = topK(embeddings, m.dim, q, s.k, s.query.kind === "example" ? s.query.index : -1);
    const precision = label === null ? null : hits.filter((h) => d.labels[h.index] === label).length / hits.length;
    if (!rows.length && s.query.kind !== "example" && d.n >= m.familiarity.min_gallery) { // judged by the first model
      const check = familiarity(await doubles(m.familiarity.file), m.familiarity, m.dim);
      if (check.unlike(ready.image, q)) {
        notes.unshift(text("unlike", { dataset: d.title }));
      }
    }
    rows.push({ model: m, hits, precision,
                others: sameClassOthers(d.labels, label, s.query.kind === "example" ? s.query.index : -1) });
  }
  return { ...s, rows, seen: ready.image, label, notes, ms: performance.now() - t0 };
}

// ------------------------------------------------------------------------------ your gallery

// The visitor's images, read here and never sent anywhere: each kept at most spec.own.keep_side
// px (as the Gradio page keeps them), with a thumbnail; unreadable or too small files skipped
// and listed; more than spec.own.max_images, or fewer than 2 readable, refused in one line.
let ownCount = 0;
async function readOwn(files) {
  const { max_images: most, keep_side: side } = spec.own, least = MIN_SIDE;
  if (files.length > most) throw new Error(text("own_too_many", { max: most }));
  const own = { token: `${++ownCount}`, names: [], images: [], thumbs: [], skipped: [] };
  for (const file of files) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    } catch {
      own.skipped.push(`${file.name}: not an image`);
      continue;
    }
    const { width, height } = bitmap;
    if (width * height > MAX_PIXELS) { own.skipped.push(`${file.name}: ${width}x${height} is over ${MAX_PIXELS / 1e6} megapixels`); continue; }
    if (Math.min(width, height) < least) { own.skipped.push(`${file.name}: ${width}x${height} is smaller than ${least}x${least}`); continue; }
    const scale = Math.min(1, side / Math.max(width, height));
    const w = Math.max(1, Math.round(width * scale)), h = Math.max(1, Math.round(height * scale));
    const canvas = document.createElement("canvas");
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, w, h); // transparency on white, as the server reads it
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(bitmap, 0, 0, w, h);
    own.images.push({ data: ctx.getImageData(0, 0, w, h).data, width: w, height: h });
    own.thumbs.push(canvas.toDataURL("image/png"));
    own.names.push(file.name);
  }
  if (own.images.length < 2) {
    const skipped = own.skipped.slice(0, 5).join("; ");
    throw new Error(text("own_too_few", { n: own.images.length }) + (skipped ? ` (skipped: ${skipped})` : ""));
  }
  return own;
}

// Your images embedded by model m in dataset d's form (each prepared as an upload is), and their
// map, each made once: {vectors (n x dim), xy (n x 2, made when first drawn)}.
const ownEmbeddings = new Map(); // "token|dataset|model" -> the above
async function ownEmbedded(own, d, m) {
  const key = `${own.token}|${d.name}|${m.key}`;
  if (!ownEmbeddings.has(key)) {
    const vectors = new Float32Array(own.images.length * m.dim);
    for (let i = 0; i < own.images.length; i++) {
      const { data, width, height } = own.images[i];
      vectors.set(await embed(m, prepareQuery(data, width, height, d.style, d.size).image), i * m.dim);
    }
    ownEmbeddings.set(key, { vectors, xy: null });
  }
  return ownEmbeddings.get(key);
}

// "compare" ticked with one model to show: said, not silent
const compareNotes = (d, s) => (s.compare && shownModels(d, s).length === 1
  ? [text("compare_single", { model: modelOf(d, s.model).title, dataset: d.title })] : []);

// One of your images searched among the others (no labels: no precision, no same/other).
async function searchOwn(s, d) {
  const t0 = performance.now(), own = s.own, i = s.query.index, rows = [], notes = compareNotes(d, s);
  for (const m of shownModels(d, s)) {
    const e = (await ownEmbedded(own, d, m)).vectors;
    rows.push({ model: m, hits: topK(e, m.dim, e.subarray(i * m.dim, (i + 1) * m.dim), s.k, i), precision: null,
                others: null });
  }
  const { data, width, height } = own.images[i];
  return { ...s, rows, seen: prepareQuery(data, width, height, d.style, d.size).image, label: null, notes,
           ms: performance.now() - t0 };
}

// The first two principal axes of n x dim vectors (power iteration, deflated): your gallery's map
// (the Gradio page fits UMAP to 10 images or more; a browser has no UMAP).
function pca2(vectors, n, dim) {
  const mean = new Float64Array(dim);
  for (let i = 0; i < n; i++) for (let j = 0; j < dim; j++) mean[j] += vectors[i * dim + j] / n;
  const x = Array.from({ length: n }, (_, i) => Float64Array.from({ length: dim }, (_, j) => vectors[i * dim + j] - mean[j]));
  const axes = [];
  for (let a = 0; a < 2; a++) {
    let v = Float64Array.from({ length: dim }, (_, j) => Math.sin(j + 1 + a)); // a fixed start: the same map every time
    for (let it = 0; it < 50; it++) {
      const next = new Float64Array(dim);
      for (const row of x) {
        let p = 0;
        for (let j = 0; j < dim; j++) p += row[j] * v[j];
        for (let j = 0; j < dim; j++) next[j] += p * row[j];
      }
      for (const u of axes) { // orthogonal to the axes found
        let p = 0;
        for (let j = 0; j < dim; j++) p += next[j] * u[j];
        for (let j = 0; j < dim; j++) next[j] -= p * u[j];
      }
      const norm = Math.hypot(...next) || 1;
      v = next.map((t) => t / norm);
    }
    axes.push(v);
  }
  const xy = new Float32Array(2 * n);
  x.forEach((row, i) => axes.forEach((u, a) => { let p = 0; for (let j = 0; j < dim; j++) p += row[j] * u[j]; xy[2 * i + a] = p; }));
  return xy;
}

async function ownMap(own, d, m) {
  const embedded = await ownEmbedded(own, d, m);
  embedded.xy ??= pca2(embedded.vectors, own.names.length, m.dim);
  return embedded.xy;
}

// ------------------------------------------------------------------------------ drawing the page

function thumb(d, index) {
  const col = index % d.columns, row = Math.floor(index / d.columns), cols = d.columns;
  const rows = Math.ceil(d.n / cols);
  return `<span class="thumb" style="background-image:url('${d.gallery}');background-size:${cols * 100}% ${rows * 100}%;` +
         // a one-row sheet (a gallery of at most `columns` images): 0 / 0 would void the whole rule
         `background-position:${(col / (cols - 1)) * 100}% ${rows > 1 ? (row / (rows - 1)) * 100 : 0}%"></span>`;
}

function render(s) {
  const d = dataset(s);
  $("#dataset").value = s.dataset;
  $("#model").innerHTML = d.models.map((m) => `<option value="${m.key}">${m.title}</option>`).join("");
  $("#model").value = modelOf(d, s.model).key;
  $("#top-k").value = s.k;
  $("#compare").checked = s.compare;
  const others = partners(d, s);
  $("#compare-with").innerHTML = others.map((m) => `<option value="${m.key}">${m.title}</option>`).join("");
  if (others.length) $("#compare-with").value = (others.find((m) => m.key === s.compareWith) || others[0]).key;
  $("#compare-with").closest("label").hidden = !others.length; // one model: nothing to list
  const current = s.query?.kind === "example" ? s.query.index : null;
  keepFocus(() => {
    $("#examples").innerHTML = s.examples.map((i) => `<button class="cell${i === current ? " current" : ""}" ` +
      `data-pick="${i}" data-gallery="${d.name}" title="#${i}">${thumb(d, i)}</button>`).join("");
  });
  const own = s.own, ownAt = s.query?.kind === "own" ? s.query.index : null;
  keepFocus(() => {
    $("#own-examples").innerHTML = own ? own.names.map((n, i) => `<button class="cell${i === ownAt ? " current" : ""}" ` +
      `data-pick="${i}" data-gallery="own:${own.token}" title="${escape(n)}"><img class="thumb" src="${own.thumbs[i]}" ` +
      `alt="${escape(n)}"></button>`).join("") : "";
  });
  let ownNote = own ? `<b>${escape(text("own_ready", { n: own.names.length }))}</b>` : escape(text("own_note"));
  if (own?.skipped.length) { // as the Gradio page lists them
    const more = own.skipped.length > 10 ? ` and ${own.skipped.length - 10} more` : "";
    ownNote += ` Skipped ${own.skipped.length}: ${own.skipped.slice(0, 10).map(escape).join("; ")}${more}.`;
  }
  $("#own-status").innerHTML = ownNote;
  $("#own-error").textContent = s.error?.source === "own" ? `⚠ ${s.error.text}` : "";
  $("#draw-note").hidden = drawable(d);
  $("#draw-box").hidden = !drawable(d);
  $("#upload-error").textContent = s.error?.source === "upload" ? `⚠ ${s.error.text}` : "";
  $("#draw-error").textContent = s.error?.source === "draw" ? `⚠ ${s.error.text}` : "";
  // as the Gradio page's status line: the refusal, the query's notes, the action's message
  $("#status").textContent = [s.error && `⚠ ${s.error.text}`, ...(s.notes || []), s.status].filter(Boolean).join(" · ");
  $("#results").classList.remove("busy");
  keepFocus(() => renderResults(s, d));
  renderMap(s, d);
}

// what names gallery image i: a collection's file path, else its class (an unlabelled image: nothing)
function caption(d, i) {
  return d.paths ? d.paths[i] : d.labels[i] >= 0 ? d.class_names[d.labels[i]] : "";
}

function renderResults(s, d) {
  const box = $("#results");
  if (!s.query || (!s.rows.length && s.notes?.length)) {
    box.innerHTML = `<p class="query-line">${escape(s.notes?.[0] || "Pick an example, upload an image or draw.")}</p>`;
    return;
  }
  const q = s.query;
  // the query named as page.describe names it, then its label as the Gradio page gives it
  const named = q.kind === "example" ? `gallery example #${q.index}` : q.kind === "upload" ? `your upload ${escape(q.name)}`
    : q.kind === "own" ? `your image ${escape(s.own.names[q.index])}` : "your drawing";
  const what = `${named} (${s.label === null ? "label unknown" : `label <b>${escape(d.class_names[s.label])}</b>`})`;
  // the results' gallery: the dataset's, or your own (its thumbnails and file names)
  const own = q.kind === "own" ? s.own : null, gallery = own ? `own:${own.token}` : d.name;
  const picture = own ? (i) => `<img class="thumb" src="${own.thumbs[i]}" alt="">` : (i) => thumb(d, i);
  const captioned = own ? (i) => own.names[i] : (i) => caption(d, i);
  let html = `<div class="query-line"><canvas width="${d.size}" height="${d.size}"></canvas>` +
             `<span>Query: ${what}, as the model sees it · ${d.title}</span></div>`;
  // beside the results only the "unlike the dataset" line (the other notes are in the status line)
  const unlike = (s.notes || []).filter((n) => n.startsWith("unlike "));
  for (const n of unlike) html += `<p class="unlike">⚠ <b>${escape(n.split(":")[0])}</b>:${escape(n.slice(n.indexOf(":") + 1))}</p>`;
  if (s.error) html += `<p class="error-line refused">⚠ ${escape(s.error.text)}. The results below are still those of ${named}.</p>`;
  for (const row of s.rows) {
    let p = row.precision === null ? "" : `<span class="precision">precision@${row.hits.length} = ${row.precision.toFixed(3)}</span>`;
    if (p && row.others !== null && row.hits.length && row.others < row.hits.length) { // as html.results_row says it
      const best = text("precision_best", { best: (row.others / row.hits.length).toFixed(3), n: row.others,
                                            label: d.class_names[s.label] ?? "" });
      p += ` <span class="precision-best">(${escape(best)})</span>`;
    }
    html += `<h4>${row.model.title}${p}</h4><div class="grid results-grid">` + row.hits.map((h) => {
      const same = s.label === null ? "" : d.labels[h.index] === s.label ? "same" : "diff";
      const mark = same ? `<span class="mark ${same}">${same === "same" ? "✓ same" : "✗ other"}</span>` : "";
      return `<button class="cell result ${same}" data-pick="${h.index}" data-gallery="${gallery}" ` +
             `title="#${h.index}">${picture(h.index)}` +
             `<span class="caption">${escape(captioned(h.index))} · ${h.similarity.toFixed(3)}</span>${mark}</button>`;
    }).join("") + "</div>";
  }
  if (s.rows.length) html += `<p class="scores-help">${escape(spec.texts.scores_help)}</p>`;
  box.innerHTML = html;
  box.dataset.ms = s.ms?.toFixed(2) ?? "";
  const canvas = box.querySelector("canvas"), image = s.seen;
  if (canvas && image) {
    const pixels = new ImageData(image.width, image.height);
    for (let i = 0; i < image.width * image.height; i++) {
      for (let b = 0; b < 3; b++) pixels.data[4 * i + b] = image.data[i * image.channels + (image.channels === 1 ? 0 : b)];
      pixels.data[4 * i + 3] = 255;
    }
    canvas.getContext("2d").putImageData(pixels, 0, 0);
  }
}

// Redraw what `draw` replaces, and give the keyboard focus back to the same cell.
function keepFocus(draw) {
  const active = document.activeElement, pick = active?.dataset?.pick, box = active?.closest?.("[id]")?.id;
  draw();
  if (pick !== undefined && box) document.querySelector(`#${box} [data-pick="${pick}"]`)?.focus();
}

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

let mapPoints = null; // {name, key, xy: pixel positions}
async function renderMap(s, d) {
  const m = modelOf(d, s.model), own = s.query?.kind === "own" ? s.own : null;
  // your gallery's map (its own images, unlabelled) while one of them is the query, else the dataset's
  const n = own ? own.names.length : d.n, labels = own ? new Array(n).fill(-1) : d.labels;
  const xy = own ? await ownMap(own, d, m) : await floats(m.umap);
  const map = $("#embedding-map"), canvas = map.querySelector("canvas"), ctx = canvas.getContext("2d");
  const what = d.paths ? `collection (${d.n.toLocaleString("en")} images)` : `gallery (${d.n} test images)`;
  map.querySelector(".map-title").textContent = own ? `your ${n} images, embedded by ${m.title} · PCA`
                                                    : `${d.title} ${what}, embedded by ${m.title} · UMAP`;
  const note = map.querySelector(".map-note");
  note.dataset.gallery ??= note.textContent; // index.html's words for a dataset's map
  note.textContent = own ? "Your images, mapped here by PCA of their embeddings: click a point to search with it. " +
    "The query has a red ring, its top-k neighbours black rings." : note.dataset.gallery;
  map.querySelector(".legend").innerHTML = own ? "" : d.class_names.map((c, i) => `<span><i style="background:${COLOURS[i % 10]}"></i>${escape(c)}</span>`).join("");
  const dpr = window.devicePixelRatio || 1, cssWidth = canvas.clientWidth || 900;
  const cssHeight = Math.round(Math.min(560, Math.max(240, cssWidth * 0.55)));
  canvas.style.height = `${cssHeight}px`;
  canvas.width = Math.round(cssWidth * dpr);
  canvas.height = Math.round(cssHeight * dpr);
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (let i = 0; i < n; i++) {
    x0 = Math.min(x0, xy[2 * i]); x1 = Math.max(x1, xy[2 * i]); y0 = Math.min(y0, xy[2 * i + 1]); y1 = Math.max(y1, xy[2 * i + 1]);
  }
  const pad = 10 * dpr, w = canvas.width, h = canvas.height;
  const px = (i) => [pad + ((xy[2 * i] - x0) / (x1 - x0 || 1)) * (w - 2 * pad), pad + ((y1 - xy[2 * i + 1]) / (y1 - y0 || 1)) * (h - 2 * pad)];
  mapPoints = { points: Array.from({ length: n }, (_, i) => px(i)), dataset: d, own, dpr };
  ctx.clearRect(0, 0, w, h);
  for (let i = 0; i < n; i++) {
    const [x, y] = mapPoints.points[i];
    ctx.fillStyle = labels[i] >= 0 ? COLOURS[labels[i] % 10] : UNLABELLED;
    ctx.globalAlpha = 0.7;
    ctx.beginPath(); ctx.arc(x, y, 2.5 * dpr, 0, 2 * Math.PI); ctx.fill();
  }
  ctx.globalAlpha = 1;
  const ring = (i, colour, r) => {
    const [x, y] = mapPoints.points[i];
    ctx.strokeStyle = colour; ctx.lineWidth = 2 * dpr; ctx.beginPath(); ctx.arc(x, y, r * dpr, 0, 2 * Math.PI);
    ctx.stroke();
  };
  const hits = s.rows?.[0]?.hits || [];
  for (const hit of hits) ring(hit.index, "#000", 5);
  const at = s.query?.kind === "example" || own ? s.query.index : hits[0]?.index;
  if (at !== undefined && s.query) ring(at, "#ff0000", 8);
}

function nearestPoint(event) {
  if (!mapPoints) return null;
  const canvas = $("#embedding-map canvas"), box = canvas.getBoundingClientRect();
  const x = ((event.clientX - box.left) / box.width) * canvas.width, y = ((event.clientY - box.top) / box.height) * canvas.height;
  let best = null, bestD = (12 * mapPoints.dpr) ** 2; // within 12 screen pixels: a finger is wide
  mapPoints.points.forEach(([px, py], i) => {
    const dist = (px - x) ** 2 + (py - y) ** 2;
    if (dist < bestD) { best = i; bestD = dist; }
  });
  return best;
}

// ------------------------------------------------------------------------------ actions

// Every action: the next state, built on the latest one asked for, searched, then drawn unless a
// later action has been taken meanwhile (its own answer will be drawn instead). Work that takes
// more than a moment says so in the status line.
async function act(next, { still = false, fromMap = false } = {}) {
  const mine = ++turn;
  wanted = next;
  const slow = setTimeout(() => {
    if (mine !== turn) return;
    const m = modelOf(dataset(next), next.model);
    const loading = !loaded.has(m.onnx) && next.query && next.query.kind !== "example";
    $("#status").textContent = loading ? "Loading the model and onnxruntime-web (about 15 MB, once)…"
                                       : `Searching ${dataset(next).title}…`;
    $("#results").classList.add("busy");
  }, 150);
  try {
    const done = await search(next);
    if (mine === turn) { state = done; render(state); }
  } catch (e) {
    if (mine === turn) {
      state = wanted = { ...state, error: { source: "settings", text: `the search failed: ${e.message || e}` } };
      render(state);
    }
  } finally {
    clearTimeout(slow);
  }
  // The results brought back on screen, by the Gradio page's rule (web/results.js): on a phone
  // whenever their top is off screen or low on it, except while the visitor draws (the pad stays
  // still under the finger; `still`) or the page opens; on any screen after a click on the map,
  // which lies below them.
  if (mine === turn) {
    const box = $("#results").getBoundingClientRect();
    const phone = innerWidth <= spec.phone_max_width && !still && (box.top < 0 || box.top > innerHeight * 0.4);
    if (phone || (fromMap && (box.top < 0 || box.top > innerHeight * 0.5))) $("#results").scrollIntoView({ block: "start" });
  }
}

async function decode(file) {
  if (!file.type.startsWith("image/") && !/\.(png|jpe?g|webp|bmp|gif)$/i.test(file.name)) {
    throw new Error(text("not_an_image", { name: file.name }));
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch {
    throw new Error(text("not_an_image", { name: file.name }));
  }
  const { width, height } = bitmap;
  if (width * height > MAX_PIXELS) throw new Error(`the image is too large (over ${MAX_PIXELS / 1e6} megapixels); upload a smaller image`);
  if (Math.min(width, height) < MIN_SIDE) throw new Error(`the image is ${width}x${height} pixels; it needs at least ${MIN_SIDE}x${MIN_SIDE} to be searched`);
  const canvas = new OffscreenCanvas(width, height), ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  let rgba = { data: ctx.getImageData(0, 0, width, height).data, width, height, channels: 4 };
  const notes = [];
  if (Math.max(width, height) > KEEP_SIDE) { // the server keeps an upload at most 1024 px (Pillow's thumbnail)
    const s = KEEP_SIDE / Math.max(width, height);
    rgba = resize(rgba, Math.max(1, Math.round(width * s)), Math.max(1, Math.round(height * s)), "lanczos");
    notes.push(text("shrunk", { from: `${width}x${height}`, to: `${rgba.width}x${rgba.height}` }));
  }
  return { rgba: rgba.data, width: rgba.width, height: rgba.height, notes };
}

function wire() {
  $("#dataset").addEventListener("change", (e) => act(pickDataset(site, wanted, e.target.value)));
  $("#model").addEventListener("change", (e) => act(pickModel(wanted, e.target.value)));
  $("#compare").addEventListener("change", (e) => act(setCompare(wanted, e.target.checked)));
  $("#compare-with").addEventListener("change", (e) => act(setCompareWith(wanted, e.target.value)));
  $("#top-k").addEventListener("change", (e) => act(setTopK(wanted, e.target.value)));
  $("#shuffle").addEventListener("click", () => act(shuffle(site, wanted)));
  for (const id of ["#examples", "#results", "#own-examples"]) {
    $(id).addEventListener("click", (e) => {
      const cell = e.target.closest("[data-pick]"), gallery = cell?.dataset.gallery || "";
      const next = cell && (gallery.startsWith("own:") ? pickOwn(wanted, Number(cell.dataset.pick), gallery.slice(4))
                                                       : pickExample(wanted, Number(cell.dataset.pick), gallery));
      if (next) act(next);
    });
  }
  $("#own-files").addEventListener("change", async (e) => {
    const files = [...e.target.files];
    if (!files.length) return;
    $("#own-status").textContent = `reading ${files.length} images…`;
    try {
      act(ownGallery(wanted, await readOwn(files)));
    } catch (err) {
      e.target.value = "";
      act(failed(wanted, "own", err.message));
    }
  });
  $("#upload").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    try {
      const image = await decode(file);
      act(upload(wanted, file.name, image));
    } catch (err) {
      e.target.value = "";
      act(failed(wanted, "upload", err.message));
    }
  });
  const canvas = $("#embedding-map canvas"), tip = $("#embedding-map .tip");
  canvas.addEventListener("click", (e) => {
    const i = nearestPoint(e);
    tip.hidden = true;
    const own = mapPoints?.own;
    const next = i === null ? null : own ? pickOwn(wanted, i, own.token) : pickExample(wanted, i, mapPoints.dataset.name);
    if (next) act(next, { fromMap: true });
  });
  canvas.addEventListener("mousemove", (e) => {
    const i = nearestPoint(e), d = mapPoints?.dataset;
    tip.hidden = i === null;
    if (i === null) return;
    const box = canvas.getBoundingClientRect(), x = e.clientX - box.left, y = e.clientY - box.top;
    tip.style.left = `${x + 120 > box.width ? x - 118 : x + 12}px`; // inside the map, whichever side has room
    tip.style.top = `${y + 140 > box.height ? y - 138 : y + 12}px`;
    const own = mapPoints.own;
    tip.innerHTML = own ? `<img class="thumb" src="${own.thumbs[i]}" alt="">${escape(own.names[i])}`
                        : `${thumb(d, i)}${escape(caption(d, i))} · #${i}`;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
  for (const tab of document.querySelectorAll(".tabs button")) {
    tab.addEventListener("click", () => {
      for (const t of document.querySelectorAll(".tabs button")) {
        t.setAttribute("aria-selected", String(t === tab));
        $(`#${t.dataset.tab}`).hidden = t !== tab;
      }
    });
  }
  wireDrawing();
}

function wireDrawing() {
  mountSketch($("#sketch"), spec.sketch, (pad, ctx) => {
    const { data, width, height } = ctx.getImageData(0, 0, pad.width, pad.height);
    if (!drawingQuery(data, width, height, "mnist")) {
      act(failed(wanted, "draw", "the drawing is empty: draw a digit or a garment"), { still: true });
      return;
    }
    act(draw(wanted, data, width, height), { still: true });
  });
}

async function main() {
  $("#heading").textContent = text("heading", {});
  $("#intro").textContent = text("intro", {});
  site = await (await fetch("site.json")).json();
  if (site.schema !== SCHEMA) { // model/demo/static_site.py's SCHEMA_VERSION: a site written for another page
    throw new Error(`site.json has schema ${site.schema}, this page reads ${SCHEMA}: publish the Space again`);
  }
  $("#own-label").textContent = `your images (up to ${spec.own.max_images})`;
  $("#dataset").innerHTML = site.datasets.map((d) => `<option value="${d.name}">${d.title}</option>`).join("");
  const d = site.datasets[0];
  state = wanted = opening(site);
  wire();
  await act(state, { still: true });
  // the ONNX sessions of the first dataset, ready before the first upload or drawing
  for (const m of d.models) session(m.onnx).catch(() => {});
  window.__ready = true;
}

main().catch((e) => { $("#status").textContent = `⚠ the page could not start: ${e.message || e}`; });
window.__prepare = { prepareQuery, drawingQuery };
window.__familiarity = { familiarity, load: doubles };
