// The demo's "unlike the dataset" check (model/familiarity.py) in the browser: 17 statistics of
// the query's pixels as the model sees them, and its embedding, each scored by a Mahalanobis
// distance fitted on the gallery (the parameters come from publish_space.py); a query is unlike
// the dataset when either distance is beyond the 99.5th percentile of the gallery's own images.

const f32 = Math.fround;

const mean = (v) => v.reduce((a, b) => a + b, 0) / v.length;
const std = (v) => { const m = mean(v); return Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / (v.length - 1)); };
const share = (v, test) => v.filter(test).length / v.length;

// familiarity.pixel_statistics for one image {data, width, height, channels} (uint8).
export function pixelStatistics({ data, width: w, height: h, channels: c }) {
  const lum = new Array(w * h), sat = new Array(w * h);
  for (let i = 0; i < w * h; i++) {
    let sum = 0, hi = 0, lo = 1;
    for (let b = 0; b < c; b++) {
      const v = f32(data[i * c + b] / 255);
      sum = f32(sum + v); hi = Math.max(hi, v); lo = Math.min(lo, v);
    }
    lum[i] = f32(sum / c);
    sat[i] = f32(hi - lo);
  }
  const at = (y, x) => lum[y * w + x];
  const gradY = [], gradX = [], border = [];
  for (let y = 1; y < h; y++) for (let x = 0; x < w; x++) gradY.push(Math.abs(at(y, x) - at(y - 1, x)));
  for (let y = 0; y < h; y++) for (let x = 1; x < w; x++) gradX.push(Math.abs(at(y, x) - at(y, x - 1)));
  for (const y of [0, 1, h - 2, h - 1]) for (let x = 0; x < w; x++) border.push(at(y, x));
  for (const xs of [[0, 1], [w - 2, w - 1]]) for (let y = 0; y < h; y++) for (const x of xs) border.push(at(y, x));
  const total = Math.max(lum.reduce((a, b) => a + b, 0), 1e-6);
  const wy = new Array(h).fill(0), wx = new Array(w).fill(0);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) { wy[y] += at(y, x) / total; wx[x] += at(y, x) / total; }
  const cy = wy.reduce((a, v, y) => a + v * y, 0), cx = wx.reduce((a, v, x) => a + v * x, 0);
  const spreadY = Math.sqrt(wy.reduce((a, v, y) => a + v * (y - cy) ** 2, 0));
  const spreadX = Math.sqrt(wx.reduce((a, v, x) => a + v * (x - cx) ** 2, 0));
  const inkT = f32(0.1), ink = lum.map((v) => (v > inkT ? 1 : 0));
  let rows = 0, cols = 0;
  for (let y = 0; y < h; y++) { let any = 0; for (let x = 0; x < w; x++) any |= ink[y * w + x]; rows += any; }
  for (let x = 0; x < w; x++) { let any = 0; for (let y = 0; y < h; y++) any |= ink[y * w + x]; cols += any; }
  const inked = ink.reduce((a, b) => a + b, 0);
  const sum = (v) => v.reduce((a, b) => a + b, 0);
  return [mean(lum), std(lum), share(lum, (v) => v < f32(0.05)), share(lum, (v) => v > f32(0.95)), inked / lum.length,
          share(lum, (v) => v > 0.5), rows / h, cols / w, (sum(gradY) + sum(gradX)) / Math.max(inked, 1),
          mean(sat), std(sat), mean(gradY), mean(gradX), mean(border), std(border), spreadY, spreadX];
}

function mahalanobis(d, precision) {
  const n = d.length;
  let out = 0;
  for (let i = 0; i < n; i++) {
    let row = 0;
    for (let j = 0; j < n; j++) row += d[j] * precision[j * n + i];
    out += row * d[i];
  }
  return out;
}

// The model's fitted check, from its .familiarity.f64 file, its site.json entry and its embedding size.
export function familiarity(params, spec, dim) {
  const f = spec.features, c = spec.classes;
  let o = 0;
  const take = (n) => { const v = params.subarray(o, o + n); o += n; return v; };
  const pixelMean = take(f), pixelPrecision = take(f * f), classMeans = take(c * dim), embeddingPrecision = take(dim * dim);
  const pixelDistance = (image) => mahalanobis(pixelStatistics(image).map((v, i) => v - pixelMean[i]), pixelPrecision);
  const embeddingDistance = (e) => {
    let best = Infinity;
    for (let k = 0; k < c; k++) {
      best = Math.min(best, mahalanobis(Array.from(e, (v, i) => v - classMeans[k * dim + i]), embeddingPrecision));
    }
    return best;
  };
  return {
    pixelDistance, embeddingDistance,
    unlike: (image, embedding) => pixelDistance(image) > spec.pixel_threshold
      || embeddingDistance(embedding) > spec.embedding_threshold,
  };
}
