// A query image as the server prepares it, step for step, so that the static page searches an
// upload or a drawing exactly as the Gradio app's /search does:
//   model/data.py pil_to_mode      transparency on white, RGB -> L as Pillow converts it
//   model/queries.py               MNIST / FashionMNIST ink, crop, scale, centring; a photo's centre square
//   model/embedder.py to_uint8     a photo resized to the model's size (bilinear)
//   Pillow's resampling            the same filters, coefficients and 8-bit fixed-point rounding
// NumPy's float32 arithmetic is reproduced with Math.fround where a rounding can change a pixel.
// An image is {data, width, height, channels}: data a Uint8ClampedArray (or any array) row-major.

const f32 = Math.fround;
const PRECISION_BITS = 22; // Pillow's Resample.c: 32 - 8 - 2
const ONE = 2 ** PRECISION_BITS;
const INK_THRESHOLD = 0.25;
const FAINT = f32(0.01); // NumPy compares a float32 array with a Python float in float32
const GROW = 2;

function sinc(x) {
  if (x === 0) return 1;
  x *= Math.PI;
  return Math.sin(x) / x;
}

const FILTERS = {
  lanczos: { support: 3, f: (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0) },
  bilinear: { support: 1, f: (x) => { x = Math.abs(x); return x < 1 ? 1 - x : 0; } },
};

function coefficients(inSize, outSize, filter) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = filter.support * filterscale;
  const out = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const k = [];
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = filter.f((x + xmin - center + 0.5) * ss);
      k.push(w);
      ww += w;
    }
    const fixed = k.map((w) => {
      const v = ww !== 0 ? w / ww : w;
      return v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    });
    out.push({ xmin, k: fixed });
  }
  return out;
}

function clip8(ss) {
  if (ss >= ONE * 256) return 255;
  if (ss <= 0) return 0;
  return Math.floor(ss / ONE);
}

// Pillow's Image.resize for 8-bit bands: a horizontal pass, then a vertical one, each only if
// that side changes.
export function resize(image, width, height, filterName) {
  const filter = FILTERS[filterName];
  const c = image.channels;
  let { data, width: w, height: h } = image;
  if (width !== w) {
    const cs = coefficients(w, width, filter);
    const out = new Uint8ClampedArray(width * h * c);
    for (let y = 0; y < h; y++) {
      for (let xx = 0; xx < width; xx++) {
        const { xmin, k } = cs[xx];
        for (let b = 0; b < c; b++) {
          let ss = ONE / 2;
          for (let x = 0; x < k.length; x++) ss += data[(y * w + x + xmin) * c + b] * k[x];
          out[(y * width + xx) * c + b] = clip8(ss);
        }
      }
    }
    data = out;
    w = width;
  }
  if (height !== h) {
    const cs = coefficients(h, height, filter);
    const out = new Uint8ClampedArray(w * height * c);
    for (let yy = 0; yy < height; yy++) {
      const { xmin: ymin, k } = cs[yy];
      for (let x = 0; x < w; x++) {
        for (let b = 0; b < c; b++) {
          let ss = ONE / 2;
          for (let y = 0; y < k.length; y++) ss += data[((y + ymin) * w + x) * c + b] * k[y];
          out[(yy * w + x) * c + b] = clip8(ss);
        }
      }
    }
    data = out;
    h = height;
  }
  return { data, width: w, height: h, channels: c };
}

// Pillow's alpha_composite of an RGBA image over opaque white, then the mode the model needs:
// "L" (ITU-R 601-2 luma, Pillow's fixed-point L24) or "RGB".
export function fromRGBA(rgba, width, height, mode) {
  const n = width * height;
  const c = mode === "L" ? 1 : 3;
  const out = new Uint8ClampedArray(n * c);
  for (let i = 0; i < n; i++) {
    let r = rgba[4 * i], g = rgba[4 * i + 1], b = rgba[4 * i + 2];
    const a = rgba[4 * i + 3];
    if (a !== 255) {
      if (a === 0) {
        r = g = b = 255;
      } else {
        const outa255 = a * 255 + 255 * (255 - a);
        const coef1 = Math.floor((a * 255 * 255 * 128) / outa255);
        const coef2 = 255 * 128 - coef1;
        const mix = (v) => { const t = v * coef1 + 255 * coef2 + (0x80 << 7); return (((t >> 8) + t) >> 8) >> 7; };
        r = mix(r); g = mix(g); b = mix(b);
      }
    }
    if (c === 1) out[i] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
    else { out[3 * i] = r; out[3 * i + 1] = g; out[3 * i + 2] = b; }
  }
  return { data: out, width, height, channels: c };
}

function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function median(values) {
  const s = Float64Array.from(values).sort();
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

// queries._ink: grey -> ink in 0..1 on a zero background, a light background (judged by the
// two-pixel border) inverted.
function inkOf(grey, notes) {
  const { data, width: w, height: h } = grey;
  const border = [];
  for (const y of [0, 1, h - 2, h - 1]) for (let x = 0; x < w; x++) border.push(data[y * w + x]);
  for (let y = 0; y < h; y++) for (const x of [0, 1, w - 2, w - 1]) border.push(data[y * w + x]);
  let background = median(border);
  let invert = false;
  if (background > 127) {
    invert = true;
    background = 255 - background;
    notes.push("light background: inverted");
  }
  const ink = new Float32Array(w * h);
  let peak = 0;
  for (let i = 0; i < ink.length; i++) {
    const v = Math.max(f32((invert ? 255 - data[i] : data[i]) - background), 0);
    ink[i] = v;
    if (v > peak) peak = v;
  }
  if (peak > 0) for (let i = 0; i < ink.length; i++) ink[i] = f32(ink[i] / peak);
  return { ink, width: w, height: h };
}

// queries._crop_to_ink: the object's box at INK_THRESHOLD of the peak, grown over faint edges.
function cropToInk({ ink, width: w, height: h }) {
  let top = h, bottom = -1, left = w, right = -1, count = 0;
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    if (ink[y * w + x] >= INK_THRESHOLD) {
      count++;
      top = Math.min(top, y); bottom = Math.max(bottom, y); left = Math.min(left, x); right = Math.max(right, x);
    }
  }
  if (count < 3) return null;
  const rowMax = (y, x0, x1) => { let m = 0; for (let x = x0; x <= x1; x++) m = Math.max(m, ink[y * w + x]); return m; };
  const colMax = (x, y0, y1) => { let m = 0; for (let y = y0; y <= y1; y++) m = Math.max(m, ink[y * w + x]); return m; };
  for (let i = 0; i < GROW; i++) {
    if (top > 0 && rowMax(top - 1, left, right) >= FAINT) top--;
    if (bottom < h - 1 && rowMax(bottom + 1, left, right) >= FAINT) bottom++;
    if (left > 0 && colMax(left - 1, top, bottom) >= FAINT) left--;
    if (right < w - 1 && colMax(right + 1, top, bottom) >= FAINT) right++;
  }
  const cw = right - left + 1, ch = bottom - top + 1;
  const out = new Float32Array(cw * ch);
  for (let y = 0; y < ch; y++) for (let x = 0; x < cw; x++) out[y * cw + x] = ink[(y + top) * w + x + left];
  return { ink: out, width: cw, height: ch };
}

// queries._resize: the longest side to `box` pixels, aspect kept, through 8 bits and Lanczos.
function resizeInk({ ink, width: w, height: h }, box) {
  const scale = box / Math.max(h, w);
  const sw = Math.max(1, roundHalfEven(w * scale)), sh = Math.max(1, roundHalfEven(h * scale));
  const bytes = new Uint8ClampedArray(ink.length);
  for (let i = 0; i < ink.length; i++) bytes[i] = Math.trunc(f32(ink[i] * 255));
  const r = resize({ data: bytes, width: w, height: h, channels: 1 }, sw, sh, "lanczos");
  const out = new Float32Array(r.data.length);
  for (let i = 0; i < out.length; i++) out[i] = f32(r.data[i] / 255);
  return { ink: out, width: sw, height: sh };
}

function place(patch, top, left, size) {
  const canvas = new Float32Array(size * size);
  top = Math.min(Math.max(top, 0), size - patch.height);
  left = Math.min(Math.max(left, 0), size - patch.width);
  for (let y = 0; y < patch.height; y++) for (let x = 0; x < patch.width; x++) {
    canvas[(y + top) * size + x + left] = patch.ink[y * patch.width + x];
  }
  const out = new Uint8ClampedArray(size * size);
  for (let i = 0; i < out.length; i++) out[i] = roundHalfEven(f32(canvas[i] * 255));
  return { data: out, width: size, height: size, channels: 1 };
}

// queries.mnist_style: scaled into 20x20, centre of mass at pixel (14, 14) of 28.
export function mnistStyle(ink, size = 28) {
  const crop = cropToInk(ink);
  if (!crop) return { data: new Uint8ClampedArray(size * size), width: size, height: size, channels: 1 };
  const digit = resizeInk(crop, roundHalfEven((size * 20) / 28));
  let total = 0, my = 0, mx = 0;
  for (let y = 0; y < digit.height; y++) for (let x = 0; x < digit.width; x++) {
    const v = digit.ink[y * digit.width + x];
    total += v; my += v * y; mx += v * x;
  }
  total = total || 1;
  return place(digit, roundHalfEven(size / 2 - my / total), roundHalfEven(size / 2 - mx / total), size);
}

// queries.fashion_style: trimmed, the longest side scaled to 28, centred (odd margin top-left).
export function fashionStyle(ink, size = 28) {
  const crop = cropToInk(ink);
  if (!crop) return { data: new Uint8ClampedArray(size * size), width: size, height: size, channels: 1 };
  const item = resizeInk(crop, size);
  return place(item, Math.ceil((size - item.height) / 2), Math.ceil((size - item.width) / 2), size);
}

// queries.centre_square, then Embedder.to_uint8's bilinear resize to the model's size.
function photo(rgb, size, notes) {
  const { width: w, height: h } = rgb;
  let image = rgb;
  if (w !== h) {
    const side = Math.min(w, h), left = (w - side) >> 1, top = (h - side) >> 1;
    notes.push(`centre-cropped ${w}x${h} to ${side}x${side}`);
    const data = new Uint8ClampedArray(side * side * 3);
    for (let y = 0; y < side; y++) data.set(rgb.data.subarray(((y + top) * w + left) * 3, ((y + top) * w + left + side) * 3), y * side * 3);
    image = { data, width: side, height: side, channels: 3 };
  }
  return image.width === size && image.height === size ? image : resize(image, size, size, "bilinear");
}

// An upload (RGBA pixels as the browser decoded them) -> {image: uint8 HxWxC at the model's size, notes}.
// style: the dataset's query style ("mnist", "fashion_mnist" or "photo"); size: the model's side.
export function prepareQuery(rgba, width, height, style, size) {
  const notes = [];
  if (style !== "mnist" && style !== "fashion_mnist") {
    return { image: photo(fromRGBA(rgba, width, height, "RGB"), size, notes), notes };
  }
  const ink = inkOf(fromRGBA(rgba, width, height, "L"), notes);
  const image = style === "mnist" ? mnistStyle(ink) : fashionStyle(ink);
  if (!image.data.some((v) => v > 0)) notes.push("no object found: the image is blank");
  else notes.push(style === "mnist" ? "cropped, scaled into 20x20 and centred by centre of mass" : "cropped, scaled to 28 px and centred");
  return { image, notes };
}

// queries.sketch_ink on an opaque canvas (dark strokes on white): ink in 0..1, or null when
// fewer than 5 pixels are inked.
export function sketchInk(rgba, width, height) {
  const ink = new Float32Array(width * height);
  const threshold = f32(40 / 255);
  let inked = 0;
  for (let i = 0; i < ink.length; i++) {
    const grey = f32((rgba[4 * i] + rgba[4 * i + 1] + rgba[4 * i + 2]) / 3);
    ink[i] = f32(f32(255 - grey) / 255);
    if (ink[i] > threshold) inked++;
  }
  return inked < 5 ? null : { ink, width, height };
}

export function drawingQuery(rgba, width, height, style) {
  const ink = sketchInk(rgba, width, height);
  if (!ink) return null;
  return style === "fashion_mnist" ? fashionStyle(ink) : mnistStyle(ink);
}
