// node --test: prepare.js and familiarity.js against the Python the Gradio app runs, on the
// fixtures scripts/js_fixtures.py writes (tests/test_spec.py checks they are current): the same
// prepared pixels for every upload and style, the same drawings, the same pixel statistics and
// "unlike the dataset" distances and verdicts.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { familiarity, pixelStatistics } from "../../model/demo/static/familiarity.js";
import { drawingQuery, prepareQuery } from "../../model/demo/static/prepare.js";

const fixtures = JSON.parse(readFileSync(new URL("fixtures/queries.json", import.meta.url)));

// the Python computes the statistics in float32 (torch), the page in doubles: rtol 1e-4, atol 1e-6
const close = (got, want, what) => {
  assert.ok(Math.abs(got - want) <= 1e-6 + 1e-4 * Math.abs(want), `${what}: ${got} against ${want}`);
};

test("uploads are prepared pixel for pixel as the server prepares them", () => {
  let checked = 0;
  for (const q of fixtures.queries) {
    for (const [style, want] of Object.entries(q.styles)) {
      const { image } = prepareQuery(new Uint8ClampedArray(q.rgba), q.width, q.height, style, want.size);
      assert.deepEqual(Array.from(image.data), want.prepared, `${q.name} as ${style}`);
      checked++;
    }
  }
  assert.equal(checked, 3 * fixtures.queries.length);
});

test("drawings are prepared as the server prepares them", () => {
  for (const d of fixtures.drawings) {
    const rgba = new Uint8ClampedArray(d.width * d.height * 4);
    for (let i = 0; i < d.width * d.height; i++) {
      rgba.set(d.rgb.slice(3 * i, 3 * i + 3), 4 * i);
      rgba[4 * i + 3] = 255;
    }
    for (const [style, want] of Object.entries(d.prepared)) {
      assert.deepEqual(Array.from(drawingQuery(rgba, d.width, d.height, style).data), want, style);
    }
  }
});

test("pixel statistics, distances and verdicts match model/familiarity.py", () => {
  const { params, spec, dim } = fixtures.familiarity;
  const check = familiarity(Float64Array.from(params), spec, dim);
  let unlike = 0;
  for (const q of fixtures.queries) {
    for (const [style, want] of Object.entries(q.styles)) {
      const channels = style === "photo" ? 3 : 1;
      const image = { data: want.prepared, width: want.size, height: want.size, channels };
      pixelStatistics(image).forEach((v, i) => close(v, want.statistics[i], `${q.name} ${style} statistic ${i}`));
      close(check.pixelDistance(image), want.pixel_distance, `${q.name} ${style} pixel distance`);
      close(check.embeddingDistance(Float64Array.from(want.embedding)), want.embedding_distance,
        `${q.name} ${style} embedding distance`);
      assert.equal(check.unlike(image, Float64Array.from(want.embedding)), want.unlike, `${q.name} ${style}`);
      unlike += want.unlike;
    }
  }
  assert.ok(unlike > 0 && unlike < 3 * fixtures.queries.length, "the fixtures hold both verdicts");
});
