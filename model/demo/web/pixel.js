// The feature-map input: the pixel clicked, in the image's own rows and columns.
element.addEventListener('click', (e) => {
  const box = e.target.closest('.pick');
  if (!box) return;
  const r = box.getBoundingClientRect();
  const h = Number(box.dataset.h), w = Number(box.dataset.w);
  const row = Math.min(h - 1, Math.max(0, Math.floor((e.clientY - r.top) / r.height * h)));
  const col = Math.min(w - 1, Math.max(0, Math.floor((e.clientX - r.left) / r.width * w)));
  trigger('pixel', {row: row, col: col});
});
