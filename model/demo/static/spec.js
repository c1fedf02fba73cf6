// The demo's specification (spec.json, read by model/demo/spec.py too) and the example picks,
// the same integers as spec.py's example_picks for the same labels and seed.
// Loaded with top-level await rather than a JSON import attribute, which browsers took up only in
// 2024-2025 (Firefox 138): a Space's visitors on an older browser would get no page at all.
async function load() {
  const url = new URL("./spec.json", import.meta.url);
  if (url.protocol === "file:") { // node's tests
    const { readFile } = await import("node:fs/promises");
    return JSON.parse(await readFile(url, "utf8"));
  }
  const response = await fetch(url);
  if (!response.ok) throw new Error(`spec.json: HTTP ${response.status}`);
  return response.json();
}
const spec = await load();

export { spec };

// spec.py's text(): one of the pages' texts with its {fields} filled
export const text = (name, fields) => spec.texts[name].replace(/\{(\w+)\}/g, (_, f) => fields[f]);

// spec.py's Lcg: x = x * 1103515245 + 12345 (mod 2^32), exact with Math.imul; draws x >>> 8.
function lcg(seed) {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    return x >>> 8;
  };
}

// spec.py's example_picks: each class's positions, the first n shuffled into place, one per class in turn.
export function examplePicks(labels, seed = 0, n = spec.n_examples) {
  const next = lcg(seed), byClass = new Map();
  labels.forEach((c, i) => { if (!byClass.has(c)) byClass.set(c, []); byClass.get(c).push(i); });
  const orders = [...byClass.keys()].sort((a, b) => a - b).map((c) => {
    const ids = byClass.get(c);
    for (let i = 0; i < Math.min(n, ids.length); i++) {
      const j = i + (next() % (ids.length - i));
      [ids[i], ids[j]] = [ids[j], ids[i]];
    }
    return ids;
  });
  const picks = [];
  for (let r = 0; r < n && picks.length < n; r++) {
    for (const ids of orders) if (r < ids.length && picks.length < n) picks.push(ids[r]);
  }
  return picks;
}
