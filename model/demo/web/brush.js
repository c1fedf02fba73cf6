// Run when the Draw tab opens and after a dataset change. The sketchpad opens with no tool
// chosen ("select the draw tool to start"), so a first stroke drew nothing: choose its brush
// once it is on screen (it may still be drawing itself: look again for a second).
() => {
  let tries = 0;
  const choose = () => {
    const pad = document.querySelector('#sketch');
    const brush = pad && pad.offsetParent !== null ? pad.querySelector('button[aria-label="Brush"]') : null;
    if (brush && !pad.dataset.brushChosen) { brush.click(); pad.dataset.brushChosen = '1'; return; }
    if (!brush && tries++ < 20) setTimeout(choose, 50);
  };
  choose();
}
