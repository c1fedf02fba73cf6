"""The page's HTML and the map's data, built without Gradio so they can be tested.

The examples grid, the results, the embedding map and the feature maps are gr.HTML
components in app.py: plain HTML and a few lines of JavaScript give what Gradio's Gallery and
ScatterPlot could not (captions never truncated, a click on a map point, the image on hover),
and a search sends file names and a few numbers, not images. Every image on the page is a
native-size PNG upscaled by the browser with `image-rendering: pixelated`.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from PIL import Image

from ..index import Hit, SearchIndex
from .spec import CLASS_COLOURS, text  # declared once: static/spec.json
from .spec import UNLABELLED_COLOUR as OWN_COLOUR


def file_url(path: str) -> str:
    """A file under a static path, as the page fetches it (relative, so a Space's prefix is kept)."""
    return f"gradio_api/file={path}"


def png_data_url(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def examples_html(items: Sequence[tuple[int, str, str]], gallery: str = "") -> str:
    """A grid of clickable thumbnails: (gallery index, file, caption). A click picks `data-pick`
    in the gallery `data-gallery` names (page.PageState.gallery_key)."""
    cells = "".join(
        f'<button class="cell" data-pick="{i}" title="{html.escape(caption)} (gallery #{i})">'
        f'<img src="{html.escape(file_url(path))}" alt="{html.escape(caption)}"></button>'
        for i, path, caption in items)
    return f'<div class="grid examples-grid" data-gallery="{html.escape(gallery)}">{cells}</div>'


def results_row(title: str, hits: Sequence[Hit], thumbs: Sequence[str], names: Sequence[str],
                query_label: int | None, precision: float | None, captions: Sequence[str] | None = None,
                others: int | None = None) -> str:
    """One model's top-k: every hit with its whole caption (class and similarity; in a visitor's
    own gallery, the file's name from `captions`), marked same or different class when the
    query's label is known; precision@k in the title, with the most it can be where the gallery
    holds fewer than k `others` of the query's class (a small folder's gallery)."""
    head = html.escape(title)
    if precision is not None:
        head += f' <span class="precision">precision@{len(hits)} = {precision:.3f}</span>'
        if others is not None and hits and others < len(hits) and query_label is not None:
            best = text("precision_best", best=f"{others / len(hits):.3f}", n=str(others),
                        label=names[query_label] if 0 <= query_label < len(names) else "")
            head += f' <span class="precision-best">({html.escape(best)})</span>'
    cells = []
    for rank, h in enumerate(hits, 1):
        name = names[h.label] if 0 <= h.label < len(names) else ""
        if captions is not None:
            name = captions[h.index]
        mark, cls = "", "cell result"
        if query_label is not None:
            same = h.label == query_label
            mark = '<span class="mark same">✓ same</span>' if same else '<span class="mark diff">✗ other</span>'
            cls += " same" if same else " diff"
        caption = f"{html.escape(name)} · {h.similarity:.3f}" if name else f"{h.similarity:.3f}"
        cells.append(f'<button class="{cls}" data-pick="{h.index}" title="rank {rank}, gallery #{h.index}">'
                     f'<img src="{html.escape(file_url(thumbs[h.index]))}" alt="{html.escape(name or "result")}">'
                     f'<span class="caption">{caption}</span>{mark}</button>')
    return f'<section class="row"><h4>{head}</h4><div class="grid results-grid">{"".join(cells)}</div></section>'


def results_html(rows: Sequence[str], query: str = "", gallery: str = "") -> str:
    """The results panel: a line about the query (its label when known), then one row per model;
    a click on a result picks it in `gallery`."""
    top = f'<p class="query-line">{query}</p>' if query else ""
    help_line = f'<p class="scores-help">{html.escape(text("scores_help"))}</p>' if rows else ""
    return (f'<div class="results" data-rows="{len(rows)}" data-gallery="{html.escape(gallery)}">{top}'
            f'{"".join(rows)}{help_line}</div>')


def empty_results(message: str) -> str:
    return f'<div class="results empty"><p class="query-line">{html.escape(message)}</p></div>'


def map_value(index: SearchIndex, thumbs: Sequence[str], title: str, method: str = "UMAP", gallery: str = "") -> dict:
    """The embedding map's points and legend, for the page's canvas: [x, y, class] per point,
    coordinates rounded (the page needs pixels, not 7 digits); a click picks a point in `gallery`."""
    xy = np.asarray(index.xy, dtype=np.float64)
    lo, hi = (xy.min(0), xy.max(0)) if len(xy) else (np.zeros(2), np.ones(2))
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    unit = np.round((xy - lo) / span, 4)
    ids = getattr(index, "map_ids", None)  # a collection maps a sample: point i is gallery image ids[i]
    labels = np.asarray(index.labels) if ids is None else np.asarray(index.labels)[ids]
    names = list(index.class_names)
    points = [[float(x), float(y), int(c)] for (x, y), c in zip(unit, labels, strict=True)]
    legend = [[n, CLASS_COLOURS[i % len(CLASS_COLOURS)]] for i, n in enumerate(names)]
    value = {"title": title, "method": method, "gallery": gallery, "points": points, "legend": legend,
             "names": names, "colours": [c for _, c in legend] or [OWN_COLOUR],
             "thumbs": [file_url(thumbs[int(i)]) for i in (range(len(points)) if ids is None else ids)]}
    if ids is not None:
        value["ids"] = [int(i) for i in ids]
    return value


def map_highlight(hits: Sequence[Hit], query_known: int | None = None) -> dict:
    """The query and its neighbours on the map. A query is drawn on its nearest gallery image
    (UMAP is fitted offline; a query is not projected), or on itself when it is a gallery image."""
    anchor = query_known if query_known is not None else (hits[0].index if hits else None)
    return {"query": anchor, "neighbours": [h.index for h in hits], "on_itself": query_known is not None}


def _colour(maps: np.ndarray, cmap: str, lo: float, hi: float) -> np.ndarray:
    scaled = (maps - lo) / (hi - lo if hi > lo else 1.0)
    return (colormaps[cmap](np.clip(scaled, 0, 1))[..., :3] * 255).astype(np.uint8)


def _scale_bar(cmap: str, lo: float, hi: float) -> str:
    stops = ", ".join(f"rgb{tuple(int(v * 255) for v in colormaps[cmap](t)[:3])}" for t in np.linspace(0, 1, 7))
    return (f'<div class="scale"><span>{lo:.2f}</span><span class="bar" style="background: linear-gradient(to right, '
            f'{stops})"></span><span>{hi:.2f}</span></div>')


def _panel_row(title: str, maps: np.ndarray, labels: Sequence[str], cmap: str, symmetric: bool = False) -> str:
    lo, hi = float(maps.min()), float(maps.max())
    if symmetric:
        hi = max(abs(lo), abs(hi)) or 1.0
        lo = -hi
    cells = "".join(f'<figure><img src="{png_data_url(_colour(m, cmap, lo, hi))}" alt="{html.escape(t)}">'
                    f"<figcaption>{html.escape(t)}</figcaption></figure>" for m, t in zip(maps, labels, strict=True))
    return (f'<section><h4>{html.escape(title)}</h4>{_scale_bar(cmap, lo, hi)}'
            f'<div class="panels">{cells}</div></section>')


def feature_maps_html(fm) -> str:
    """The feature-map view (model.demo.FeatureMaps) as HTML: the input, where a click picks the
    kernel pixel (`data-h`/`data-w` give the image size for the click handler), the kernel at that
    pixel with its values, each involution output, the kernel tap by tap, and the first
    convolution's maps of the hybrid and of CNN-3a, each row with its colour scale."""
    h, w = fm.image.shape[:2]
    r, c = fm.pixel
    k = fm.kernel_at_pixel
    m = float(np.abs(k).max()) or 1.0
    rgb = _colour(k, "coolwarm", -m, m)
    def cell(i: int, j: int, x: float) -> str:
        return f'<td style="background: rgb{tuple(int(v) for v in rgb[i, j])}">{x:+.2f}</td>'

    kernel_cells = "".join("<tr>" + "".join(cell(i, j, x) for j, x in enumerate(row)) + "</tr>"
                           for i, row in enumerate(k))
    inp = (f'<figure class="input"><div class="pick" data-h="{h}" data-w="{w}">'
           f'<img src="{png_data_url(fm.image)}" alt="input">'
           f'<span class="cross" style="top: {(r + 0.5) / h * 100:.2f}%; left: {(c + 0.5) / w * 100:.2f}%"></span>'
           f'</div><figcaption>input, as {html.escape(fm.model)} sees it: click a pixel</figcaption></figure>')
    kernel = (f'<figure class="kernel"><table>{kernel_cells}</table>'
              f"<figcaption>generated 3x3 kernel at row {r}, column {c}</figcaption></figure>")
    top = f'<section class="top">{inp}{kernel}</section>'
    outputs = _panel_row("Involution output (mean over channels)", np.stack(fm.involution_outputs),
                         [f"involution {i + 1}" for i in range(len(fm.involution_outputs))], "viridis")
    side = int(round(fm.kernel_taps.shape[0] ** 0.5))
    taps = _panel_row("The generated kernel, tap by tap: how it changes from pixel to pixel", fm.kernel_taps,
                      [f"tap ({t // side},{t % side})" for t in range(fm.kernel_taps.shape[0])], "coolwarm",
                      symmetric=True)
    convs = "".join(_panel_row(f"First convolution of {name} (8 of its {maps.shape[0]} maps)", maps[:8],
                               [f"map {i}" for i in range(min(8, maps.shape[0]))], "viridis")
                    for name, maps in fm.conv.items())
    return f'<div class="fmaps">{top}{outputs}{taps}{convs}</div>'
