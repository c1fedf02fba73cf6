// What each action on the static page does to its state, as pure functions (no page, no network):
// search.js wires them to the page's events and tests/js/actions.test.js runs them under node.
// A state: {dataset, model, k, compare, seed, examples, query, error, status, ...}; `site` is
// site.json (model/demo/static_site.py). The rules match the Gradio page (docs/demo.md).
import { examplePicks, spec, text } from "./spec.js";

export const datasetOf = (site, s) => site.datasets.find((d) => d.name === s.dataset);
export const modelOf = (d, key) => d.models.find((m) => m.key === key) || d.models[0];
export const drawable = (d) => d.style === "mnist" || d.style === "fashion_mnist";
// every class in turn, as the Gradio page picks them (spec.js, spec.py)
export const examplesFor = (d, seed) => examplePicks(d.labels, seed);

const fresh = { error: null, status: "" }; // an action that succeeds clears the last message

// The page as it opens: the first dataset, its first model and example grid, its first example searched.
export function opening(site) {
  const d = site.datasets[0], examples = examplesFor(d, 0);
  return { dataset: d.name, model: d.models[0].key, k: spec.default_k, compare: false, seed: 0, examples,
           query: { kind: "example", index: examples[0] }, rows: [], ...fresh };
}

// Another dataset: its first grid; an example query becomes the new grid's first example (an index
// of the old gallery means another image); an upload or a drawing is kept and searched there (a
// drawing where drawings are not searched: kept, not searched, search() says where they are).
export function pickDataset(site, s, name) {
  if (name === s.dataset) return { ...s, ...fresh }; // the dataset on screen: nothing changes
  const d = site.datasets.find((x) => x.name === name);
  const examples = examplesFor(d, 0);
  const query = s.query?.kind === "example" ? { kind: "example", index: examples[0] } : s.query;
  return { ...s, dataset: d.name, model: modelOf(d, s.model).key, seed: 0, examples, query, ...fresh };
}

export const pickModel = (s, key) => ({ ...s, model: key, ...fresh });
export const setCompare = (s, on) => ({ ...s, compare: Boolean(on), ...fresh });
// picking a model to compare with compares (the Gradio page's rule, page.py)
export const setCompareWith = (s, key) => ({ ...s, compare: true, compareWith: key, ...fresh });

// top-k as typed: a whole number from 1 to max_k; anything else keeps the last k and says so.
export function setTopK(s, value) {
  const v = Number(value);
  if (value === "" || !Number.isFinite(v)) {
    return { ...s, ...fresh, status: text("k_not_a_number", { max: spec.max_k, k: s.k }) };
  }
  const k = Math.min(spec.max_k, Math.max(1, Math.round(v)));
  return { ...s, k, ...fresh, status: k !== v ? text("k_clamped", { max: spec.max_k, typed: v, k }) : "" };
}

// Another grid of the same gallery; the query stays.
export function shuffle(site, s) {
  const seed = (s.seed * 7919 + 17) % 1000003 || 1;
  return { ...s, seed, examples: examplesFor(datasetOf(site, s), seed) };
}

// A gallery image as the query (a grid cell, a result or a point of the map). A click on a grid
// of a dataset the page has left is dropped (null: nothing to do).
export function pickExample(s, index, gallery = s.dataset) {
  if (gallery !== s.dataset) return null;
  return { ...s, query: { kind: "example", index }, ...fresh };
}

// The visitor's own gallery read (own: {token, names, ...}): an own query moves to its first image,
// as the Gradio page searches it (a query of the gallery it replaces points nowhere); others stay.
export function ownGallery(s, own) {
  const query = s.query?.kind === "own" ? { kind: "own", index: 0 } : s.query;
  return { ...s, own, query, ...fresh };
}

// One of the visitor's own images as the query, searched among the others; a click on an own
// grid the page has replaced is dropped (null).
export function pickOwn(s, index, token) {
  if (!s.own || token !== s.own.token || !(index >= 0 && index < s.own.names.length)) return null;
  return { ...s, query: { kind: "own", index }, ...fresh };
}

export const upload = (s, name, image) => ({ ...s, query: { kind: "upload", name, ...image }, ...fresh });
export const draw = (s, rgba, width, height) => ({ ...s, query: { kind: "draw", rgba, width, height }, ...fresh });
// A failed upload or an empty drawing: the message where it happened; the last results stay.
export const failed = (s, source, message) => ({ ...s, error: { source, text: message } });

// The models the chosen one can be compared with: the dataset's others (service.py's partners).
export const partners = (d, s) => d.models.filter((m) => m.key !== modelOf(d, s.model).key);

// The models a search shows: the chosen one, then with `compare` the model picked to compare with,
// else the first other in the dataset's order (the paper's pair first), as Demo.compared.
export function shownModels(d, s) {
  const chosen = modelOf(d, s.model);
  if (!s.compare) return [chosen];
  const others = partners(d, s), other = others.find((m) => m.key === s.compareWith) || others[0];
  return other ? [chosen, other] : [chosen];
}

// The k gallery images most similar (cosine: the embeddings are unit vectors) to `query`, the
// query's own index excluded; ties in gallery order, as the server's search orders them.
export function topK(embeddings, dim, query, k, exclude = -1) {
  const n = embeddings.length / dim, sims = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0, o = i * dim; j < dim; j++) s += embeddings[o + j] * query[j];
    sims[i] = s;
  }
  const order = Array.from(sims.keys()).filter((i) => i !== exclude);
  order.sort((a, b) => sims[b] - sims[a] || a - b);
  return order.slice(0, k).map((i) => ({ index: i, similarity: sims[i] }));
}

// How many gallery images share the query's class, the query itself not counted (null when its
// label is unknown): with fewer than k, precision@k cannot reach 1 (page.same_class_others).
export function sameClassOthers(labels, label, exclude = -1) {
  if (label === null) return null;
  let n = 0;
  for (let i = 0; i < labels.length; i++) if (labels[i] === label && i !== exclude) n++;
  return n;
}
