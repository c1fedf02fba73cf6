// A click on a thumbnail or a result: its gallery position and the gallery it was drawn from.
element.addEventListener('click', (e) => {
  const cell = e.target.closest('[data-pick]');
  const grid = e.target.closest('[data-gallery]');
  // clicks fired in one tick can reach the server in any order: each carries its place in the page's sequence
  if (cell) trigger('pick', {index: Number(cell.dataset.pick), gallery: grid ? grid.dataset.gallery : null,
                             seq: window.__pageClicks = (window.__pageClicks || 0) + 1});
});
