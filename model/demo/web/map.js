// The gallery layer (2,000 points) is drawn once per map into an offscreen canvas, from a plain
// copy of the value; a search only moves the highlight, which is drawn over a copy of that layer.
let base = null, shown = null, layer = null, points = [], size = [0, 0], where = null;
// a collection's map draws a sample: point i is gallery image base.ids[i]; elsewhere point i is image i
const idOf = i => (base && base.ids ? base.ids[i] : i);
const pointOf = id => (base && base.ids ? (where.has(id) ? where.get(id) : -1) : id);
const dpr = window.devicePixelRatio || 1;
const colour = c => c >= 0 && base ? base.colours[c % base.colours.length] : '#6b7280';
function decorate() {
  if (!base) return;
  const title = element.querySelector('.map-title');
  if (title.dataset.key === base.title + base.method) return;
  title.dataset.key = base.title + base.method;
  title.textContent = base.title + ' · ' + base.method;
  const legend = element.querySelector('.legend');
  legend.innerHTML = '';
  for (const [name, c] of base.legend) {
    const item = document.createElement('span'); item.className = 'key';
    const dot = document.createElement('i'); dot.style.background = c;
    item.append(dot, document.createTextNode(name)); legend.append(item);
  }
  legend.insertAdjacentHTML('beforeend', '<span class="key"><i class="ring"></i>top-k neighbour</span>' +
    '<span class="key"><i class="ring red"></i>query (on its nearest image)</span>');
}
function drawLayer() {
  const canvas = element.querySelector('canvas');
  if (!base || !canvas) return;
  const W = canvas.parentElement.clientWidth || 600, H = Math.round(Math.min(W * 0.75, 520));
  size = [W, H];
  layer = document.createElement('canvas');
  layer.width = W * dpr; layer.height = H * dpr;
  const ctx = layer.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const pad = 14;
  points = base.points.map(p => [pad + p[0] * (W - 2 * pad), pad + (1 - p[1]) * (H - 2 * pad), p[2]]);
  ctx.globalAlpha = 0.75;
  for (const [x, y, c] of points) {
    ctx.fillStyle = colour(c); ctx.beginPath(); ctx.arc(x, y, 3, 0, 6.283); ctx.fill(); }
}
function overlay() {
  const canvas = element.querySelector('canvas');
  if (!base || !canvas) return;
  if (!layer) drawLayer();
  const [W, H] = size;
  if (canvas.width !== W * dpr || canvas.height !== H * dpr) {
    canvas.width = W * dpr; canvas.height = H * dpr; canvas.style.width = W + 'px'; canvas.style.height = H + 'px';
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(layer, 0, 0);
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const hl = props.highlight ? JSON.parse(JSON.stringify(props.highlight)) : {};
  for (const id of (hl.neighbours || [])) {
    const p = points[pointOf(id)]; if (!p) continue;
    ctx.fillStyle = colour(p[2]); ctx.strokeStyle = '#000'; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(p[0], p[1], 6, 0, 6.283); ctx.fill(); ctx.stroke();
  }
  const q = points[pointOf(hl.query)];
  if (q) {
    ctx.strokeStyle = '#ff0000'; ctx.lineWidth = 3;
    ctx.beginPath(); ctx.arc(q[0], q[1], 11, 0, 6.283); ctx.stroke();
    ctx.beginPath();
    for (const [dx, dy] of [[-1, 0], [1, 0], [0, -1], [0, 1]]) {
      ctx.moveTo(q[0] + dx * 8, q[1] + dy * 8); ctx.lineTo(q[0] + dx * 16, q[1] + dy * 16);
    }
    ctx.stroke();
  }
  decorate();
}
const cache = new Map();
function load() {
  const v = props.value;
  if (!v || !v.src) return;
  const src = v.src;
  if (base && shown === src) { overlay(); return; }  // the same map: only the highlight moves
  const ready = cache.get(src) || fetch(src).then(r => r.json());
  cache.set(src, ready);
  ready.then(data => {
    if ((props.value || {}).src !== src) return;
    base = data; shown = src; layer = null;
    where = new Map((data.ids || []).map((id, i) => [id, i]));
    overlay();
  });
}
function nearest(e) {
  const r = element.querySelector('canvas').getBoundingClientRect();
  const x = e.clientX - r.left, y = e.clientY - r.top;
  let best = -1, bestD = 144;
  points.forEach((p, i) => { const d = (p[0] - x) ** 2 + (p[1] - y) ** 2; if (d < bestD) { bestD = d; best = i; } });
  return [best, x, y];
}
element.addEventListener('mousemove', (e) => {
  const tip = element.querySelector('.tip');
  if (!tip) return;
  if (!e.target.closest('canvas') || !base) { tip.hidden = true; return; }
  const [i, x, y] = nearest(e);
  if (i < 0) { tip.hidden = true; return; }
  const c = points[i][2];
  tip.innerHTML = '<img src="' + base.thumbs[i] + '"><span>'
    + (c >= 0 ? base.names[c] + ' · ' : '') + '#' + idOf(i) + '</span>';
  tip.style.left = Math.min(x + 12, size[0] - 110) + 'px';
  tip.style.top = (y + 12) + 'px';
  tip.hidden = false;
});
element.addEventListener('mouseleave', () => {
    const tip = element.querySelector('.tip'); if (tip) tip.hidden = true; });
element.addEventListener('click', (e) => {
  if (!e.target.closest('canvas')) return;
  const [i] = nearest(e);
  if (i >= 0) window.__resultsFromMap = true;  // results.js brings the results into view
  if (i >= 0) trigger('pick', {index: idOf(i), gallery: base.gallery, seq: window.__pageClicks = (window.__pageClicks || 0) + 1});
});
load();
watch('value', load);
watch('highlight', overlay);
let lastWidth = 0;
new ResizeObserver(() => {
  const w = element.clientWidth;
  if (Math.abs(w - lastWidth) > 4) { lastWidth = w; layer = null; overlay(); }
}).observe(element);
