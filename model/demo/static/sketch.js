// The sketchpad both demo pages draw on, declared once: mountSketch fills a box (#sketch on both
// pages) with a canvas of spec.json's sketch.side pixels, black ink on white in strokes
// sketch.line_width pixels wide, and a Clear button. Each stroke's end calls onStroke(pad, ctx):
// the static page reads the pixels there and searches in the browser, the Gradio page sends them
// as a PNG. app.py inlines this file (without its `export`) into the pad's js_on_load.
export function mountSketch(box, { side, line_width: lineWidth }, onStroke) {
  // styled here, once for both pages: a white square that takes touch strokes without scrolling the page
  const look = `width: ${side}px; max-width: 100%; aspect-ratio: 1; border: 1px solid #d4d4d8; border-radius: 6px; ` +
    "touch-action: none; cursor: crosshair; background: #fff; display: block; margin-bottom: 6px;";
  box.innerHTML = `<canvas width="${side}" height="${side}" style="${look}" aria-label="draw a digit or a garment">` +
    '</canvas><button type="button" class="clear-sketch">Clear</button>';
  const pad = box.querySelector("canvas"), ctx = pad.getContext("2d", { willReadFrequently: true });
  const clear = () => { ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, pad.width, pad.height); };
  clear();
  let last = null;
  const at = (e) => {
    const b = pad.getBoundingClientRect();
    return [((e.clientX - b.left) / b.width) * pad.width, ((e.clientY - b.top) / b.height) * pad.height];
  };
  const stroke = ([x0, y0], [x1, y1]) => {
    ctx.strokeStyle = ctx.fillStyle = "#000"; ctx.lineWidth = lineWidth; ctx.lineCap = "round";
    ctx.beginPath();
    if (x0 === x1 && y0 === y1) { ctx.arc(x0, y0, lineWidth / 2, 0, 2 * Math.PI); ctx.fill(); return; } // a tap: a dot
    ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.stroke();
  };
  pad.addEventListener("pointerdown", (e) => { pad.setPointerCapture(e.pointerId); last = at(e); stroke(last, last); });
  pad.addEventListener("pointermove", (e) => { if (last) { const p = at(e); stroke(last, p); last = p; } });
  const end = () => {
    if (!last) return;
    last = null;
    onStroke(pad, ctx);
  };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);
  box.querySelector(".clear-sketch").addEventListener("click", clear);
}
