// node --test: the static page's example picks (spec.js), every class in turn and stable.
import assert from "node:assert/strict";
import { test } from "node:test";

import { examplePicks, spec } from "../../model/demo/static/spec.js";

test("every class comes in turn, distinct, at most n_examples", () => {
  const labels = Array.from({ length: 200 }, (_, i) => (i * 7) % 10);
  const picks = examplePicks(labels, 0);
  assert.equal(picks.length, spec.n_examples);
  assert.equal(new Set(picks).size, picks.length);
  assert.deepEqual(picks.slice(0, 10).map((i) => labels[i]), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
});

test("small and unlabelled galleries end with what they hold", () => {
  assert.deepEqual(examplePicks([0, 1], 0).sort(), [0, 1]);
  const nine = examplePicks(Array(9).fill(-1), 3);
  assert.deepEqual([...nine].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  assert.equal(examplePicks(Array(32).fill(2), 1).length, spec.n_examples);
});

test("a seed is a shuffle, the same seed the same grid", () => {
  const labels = Array.from({ length: 2000 }, (_, i) => i % 10);
  assert.deepEqual(examplePicks(labels, 5), examplePicks(labels, 5));
  assert.notDeepEqual(examplePicks(labels, 5), examplePicks(labels, 6));
});
