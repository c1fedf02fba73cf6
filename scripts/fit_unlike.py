"""How well the demo's "unlike the dataset" line (model/familiarity.py) tells outside images
from the dataset's own, for every served checkpoint of the three named datasets:

    python scripts/fit_unlike.py --data-dir data        # writes results/unlike_dataset.json

Fits: N test images of the dataset that are not in its gallery. Misfits: N test images of each
other dataset. Both are prepared exactly as an upload is (model.queries: inverted, cropped
and centred for MNIST and FashionMNIST, a centre square for CIFAR-10) and flagged as the page
flags a query. The target the issue set: at least 90% of misfits flagged, at most 2% of fits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.data import KNOWN, dataset_title, load_dataset, query_style  # noqa: E402
from model.demo import Demo  # noqa: E402
from model.files import atomic_write_json  # noqa: E402
from model.queries import prepare_query  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--assets", default=str(ROOT / "assets"))
    p.add_argument("--n", type=int, default=1000, help="fits, and misfits per other dataset")
    p.add_argument("--offset", type=int, default=1000, help="skip the first OFFSET images of each shuffled test set: "
                   "model/familiarity.py's choices were made on the first 1,000, the figures are measured on others")
    p.add_argument("--out", default=str(ROOT / "results" / "unlike_dataset.json"))
    args = p.parse_args(argv)
    demo = Demo(assets=Path(args.assets))
    rng = np.random.default_rng(0)
    tests = {}
    for name in KNOWN:
        data = load_dataset(name, args.data_dir)
        tests[name] = data.test_x.permute(0, 2, 3, 1).numpy(), rng.permutation(len(data.test_y))
    rows = []
    for name in KNOWN:
        for model in demo.models(dataset_title(name)):
            index = demo.index(dataset_title(name), model)
            with np.load(Path(args.assets) / "gallery" / f"{name}.npz") as g:
                in_gallery = set(g["test_index"].tolist())
            style = query_style(name)

            def flagged(images: np.ndarray, index=index, style=style) -> float:
                prepared = [prepare_query(Image.fromarray(a.squeeze()), style)[0] for a in images]
                x = index.embedder.to_uint8(prepared)
                return float(index.familiarity.unlike(x, index.embedder.embed_uint8(x)).mean())

            own, order = tests[name]
            fits = own[[i for i in order if i not in in_gallery][args.offset : args.offset + args.n]]
            row = {"dataset": name, "model": model, "fits": len(fits), "fits_flagged": flagged(fits), "misfits": {}}
            for other in KNOWN:
                if other != name:
                    images, order_o = tests[other]
                    row["misfits"][other] = flagged(images[order_o[args.offset : args.offset + args.n]])
            row["misfits_flagged"] = float(np.mean(list(row["misfits"].values())))
            row["meets_target"] = row["misfits_flagged"] >= 0.90 and row["fits_flagged"] <= 0.02
            rows.append(row)
            print(f"{name:14s} {model:9s} fits flagged {row['fits_flagged']:.3f} | misfits flagged "
                  f"{row['misfits_flagged']:.3f} ({', '.join(f'{k} {v:.3f}' for k, v in row['misfits'].items())})"
                  f"{'' if row['meets_target'] else '  (target: >= 0.90 and <= 0.02)'}", flush=True)
    atomic_write_json(Path(args.out), {"generated_by": "python scripts/fit_unlike.py", "n": args.n,
                                       "offset": args.offset,
                                       "target": {"misfits_flagged_at_least": 0.90, "fits_flagged_at_most": 0.02},
                                       "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
