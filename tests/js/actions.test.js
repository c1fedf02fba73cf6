// node --test: what each action on the static page does to its state (actions.js), on a small
// fake site: the rules docs/demo.md gives for both pages.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  draw, failed, opening, ownGallery, partners, pickDataset, pickExample, pickModel, pickOwn, sameClassOthers, setCompare,
  setCompareWith, setTopK, shownModels, shuffle, topK, upload,
} from "../../model/demo/static/actions.js";
import { examplePicks, spec } from "../../model/demo/static/spec.js";

const models = (...keys) => keys.map((key) => ({ key, title: key }));
const site = {
  datasets: [
    { name: "mnist", title: "MNIST", style: "mnist", labels: Array.from({ length: 300 }, (_, i) => i % 10),
      models: models("hybrid1", "cnn3a") },
    { name: "cifar10", title: "CIFAR-10", style: "photo", labels: Array.from({ length: 300 }, (_, i) => (i * 3) % 10),
      models: models("hybrid1", "cnn3a") },
    { name: "shapes", title: "shapes", style: "photo", labels: Array.from({ length: 40 }, (_, i) => i % 4),
      models: models("compact-inv") },
  ],
};
const [mnist, cifar] = site.datasets;

test("the page opens on the first dataset's first example, searched with the default k", () => {
  const s = opening(site);
  assert.equal(s.dataset, "mnist");
  assert.equal(s.model, "hybrid1");
  assert.equal(s.k, spec.default_k);
  assert.deepEqual(s.examples, examplePicks(mnist.labels, 0));
  assert.deepEqual(s.query, { kind: "example", index: s.examples[0] });
});

test("a dataset switch opens its first grid; an example query becomes its first example", () => {
  const s = pickDataset(site, pickExample(opening(site), 17), "cifar10");
  assert.deepEqual(s.examples, examplePicks(cifar.labels, 0));
  assert.deepEqual(s.query, { kind: "example", index: s.examples[0] });
  assert.equal(s.seed, 0);
});

test("an upload or a drawing is kept across a dataset switch, and a missing model falls back", () => {
  const up = upload(opening(site), "cat.png", { rgba: [1], width: 1, height: 1 });
  const there = pickDataset(site, up, "cifar10");
  assert.equal(there.query, up.query);
  const drawn = pickDataset(site, draw(opening(site), [0], 1, 1), "cifar10");
  assert.equal(drawn.query.kind, "draw"); // kept for when a dataset that takes drawings is picked again
  assert.equal(pickDataset(site, pickModel(opening(site), "cnn3a"), "shapes").model, "compact-inv");
});

test("top-k: whole numbers from 1 to max_k; anything else keeps k and says so", () => {
  const s = opening(site);
  assert.equal(setTopK(s, "12").k, 12);
  assert.equal(setTopK(s, "12").status, "");
  const rounded = setTopK(s, "3.6");
  assert.equal(rounded.k, 4);
  assert.match(rounded.status, /3\.6 became 4/); // spec.json's words, as the Gradio page says it
  assert.equal(setTopK(s, "0").k, 1);
  assert.equal(setTopK(s, "100000").k, spec.max_k);
  const kept = setTopK(s, "abc");
  assert.equal(kept.k, s.k);
  assert.match(kept.status, /top-k must be a number/);
});

test("shuffle draws another grid, the same one again from the same state, and keeps the query", () => {
  const s = opening(site), a = shuffle(site, s);
  assert.notDeepEqual(a.examples, s.examples);
  assert.deepEqual(shuffle(site, s), a);
  assert.deepEqual(a.query, s.query);
});

test("a click on a grid of a dataset the page has left is dropped", () => {
  const s = pickDataset(site, opening(site), "cifar10");
  assert.equal(pickExample(s, 3, "mnist"), null);
  assert.deepEqual(pickExample(s, 3, "cifar10").query, { kind: "example", index: 3 });
});

test("a failure says where it happened and keeps the query; the next action clears it", () => {
  const s = failed(opening(site), "upload", "notes.txt is not an image");
  assert.deepEqual(s.error, { source: "upload", text: "notes.txt is not an image" });
  assert.deepEqual(s.query, opening(site).query);
  assert.equal(setCompare(s, true).error, null);
});

test("compare shows the paper's pair, any other model picked, or the one model a dataset has", () => {
  const s = setCompare(opening(site), true);
  assert.deepEqual(shownModels(mnist, s).map((m) => m.key), ["hybrid1", "cnn3a"]);
  assert.deepEqual(shownModels(mnist, pickModel(s, "cnn3a")).map((m) => m.key), ["cnn3a", "hybrid1"]);
  const three = { ...mnist, models: [...mnist.models, { key: "compact-conv", title: "Compact-Conv" }] };
  assert.deepEqual(partners(three, s).map((m) => m.key), ["cnn3a", "compact-conv"]);
  const picked = setCompareWith(setCompare(opening(site), false), "compact-conv");
  assert.equal(picked.compare, true); // picking a model to compare with compares
  assert.deepEqual(shownModels(three, picked).map((m) => m.key), ["hybrid1", "compact-conv"]);
  assert.deepEqual(shownModels(three, pickModel(picked, "compact-conv")).map((m) => m.key), ["compact-conv", "hybrid1"]);
  assert.deepEqual(shownModels(site.datasets[2], { ...s, model: "compact-inv" }).map((m) => m.key), ["compact-inv"]);
});

test("top-k search: most similar first, the query itself left out, ties in gallery order", () => {
  const e = Float32Array.from([1, 0, 0, 1, 1, 0, 0.6, 0.8]); // four 2-d unit vectors
  const hits = topK(e, 2, Float32Array.from([1, 0]), 3, 0);
  assert.deepEqual(hits.map((h) => h.index), [2, 3, 1]);
  assert.equal(hits[0].similarity, 1);
});

test("the images of the query's class a gallery holds besides the query: what precision@k can reach", () => {
  const labels = [0, 1, 0, 2, 0];
  assert.equal(sameClassOthers(labels, 0, 2), 2); // an example: itself not counted
  assert.equal(sameClassOthers(labels, 0), 3); // an upload of a known class
  assert.equal(sameClassOthers(labels, null), null); // label unknown: no precision at all
});

test("your gallery: a click searches one of its images; a click on a replaced gallery is dropped", () => {
  const first = opening(site);
  const mine = ownGallery(first, { token: "1", names: ["a.png", "b.png", "c.png"] });
  assert.deepEqual(mine.query, first.query); // reading a gallery keeps the query on screen
  const picked = pickOwn(mine, 2, "1");
  assert.deepEqual(picked.query, { kind: "own", index: 2 });
  assert.equal(pickOwn(mine, 2, "0"), null); // an older gallery's grid
  assert.equal(pickOwn(mine, 3, "1"), null); // no such image
  assert.equal(pickOwn(first, 0, "1"), null); // no gallery yet
  const replaced = ownGallery(picked, { token: "2", names: ["d.png", "e.png"] });
  assert.deepEqual(replaced.query, { kind: "own", index: 0 }); // its first image, as the Gradio page does
  const moved = pickDataset(site, picked, site.datasets[1].name);
  assert.deepEqual(moved.query, { kind: "own", index: 2 }); // searched with the new dataset's model
});

test("choosing the dataset on screen again changes nothing", () => {
  const s = pickExample(opening(site), 7);
  assert.deepEqual(pickDataset(site, s, s.dataset).query, { kind: "example", index: 7 });
});
