"""The demo without its UI: what it serves (service), the page as one state and one update
function (page), a visitor's own gallery (own_gallery) and the page's HTML (html). app.py
wires these to Gradio, and the page's JavaScript and CSS live beside them in web/. How a
visitor's image is brought to a dataset's form is the library's (model/queries.py)."""

from ..queries import sketch_to_image
from .page import Action, Page, PageState, apply, initial_state, render
from .service import (
    MAX_FILE_BYTES,
    Demo,
    FeatureMaps,
    QueryError,
    SearchResult,
    dataset_name,
    feature_maps,
    model_name,
    open_upload,
    prepare_upload,
)

__all__ = [
    "MAX_FILE_BYTES",
    "Action",
    "Demo",
    "FeatureMaps",
    "Page",
    "PageState",
    "QueryError",
    "SearchResult",
    "apply",
    "dataset_name",
    "feature_maps",
    "initial_state",
    "model_name",
    "open_upload",
    "prepare_upload",
    "render",
    "sketch_to_image",
]
