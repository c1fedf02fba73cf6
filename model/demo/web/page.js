// Runs once when the page loads (launch(js=...)). The sketchpad opens with no tool chosen
// ("select the draw tool to start"), so a first stroke drew nothing: choose its brush as soon as
// the sketchpad is on screen (again whenever it is drawn anew, e.g. after a dataset change).
() => {
  const chooseBrush = () => {
    const pad = document.querySelector('#sketch');
    if (!pad || pad.dataset.brushChosen || pad.offsetParent === null) return;
    const brush = pad.querySelector('button[aria-label="Brush"]');
    if (!brush) return;
    brush.click();
    pad.dataset.brushChosen = '1';
  };
  new MutationObserver(chooseBrush).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                            attributeFilter: ['class', 'style', 'hidden']});
  chooseBrush();
}
