// Bring the results back on screen after a search started elsewhere on the page: on a phone
// (the results sit above the query sources) whenever they are off screen, except while the
// visitor draws (each stroke is searched: the sketchpad must stay still under the finger), and
// on any screen after a click on the map, which lies below them (map.js sets __resultsFromMap).
document.addEventListener('pointerdown', (e) => {
  window.__drawing = Boolean(e.target.closest && e.target.closest('#sketch'));
}, true);
watch('value', () => {
  const box = element.getBoundingClientRect();
  const fromMap = window.__resultsFromMap;
  window.__resultsFromMap = false;
  const phone = window.innerWidth < 700 && !window.__drawing && (box.top < 0 || box.top > window.innerHeight * 0.4);
  if (phone || (fromMap && (box.top < 0 || box.top > window.innerHeight * 0.5))) {
    requestAnimationFrame(() => element.scrollIntoView({block: 'start'}));  // once the new results are laid out
  }
});
