"""model/whitening.py: whitening fitted on training embeddings, folded into the embedding layer,
chosen on the validation split (tests/test_recipes.py runs it as a recipe step)."""

import torch

from model import build_model
from model.whitening import (
    Whitening,
    apply_whitening,
    candidates,
    choose_whitening,
    fit_whitening,
    fold_whitening,
)


def anisotropic(n: int, dim: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=g) * torch.logspace(0, -2, dim)  # eigenvalues over 4 decades
    return torch.randn(n, dim, generator=g) @ mixing.T + 3.0


def test_full_whitening_makes_the_covariance_spherical_and_power_0_only_centres() -> None:
    a, b = anisotropic(3000), anisotropic(3000, seed=1)  # two "views"
    mean, matrix = fit_whitening([a, b], Whitening(power=1.0, shrinkage=0.0))
    pooled = torch.cat([a, b]).double()
    assert torch.allclose(mean, pooled.mean(0))
    white = apply_whitening(torch.cat([a, b]), mean, matrix).double()
    cov = torch.cov(white.T)
    top = torch.linalg.eigvalsh(torch.cov(pooled.T)).max()
    assert torch.allclose(cov, top * torch.eye(8, dtype=torch.float64), atol=1e-4 * top)  # the largest keeps its length
    assert white.mean(0).abs().max() < 1e-5

    mean0, matrix0 = fit_whitening([a, b], Whitening(power=0.0))
    assert torch.equal(matrix0, torch.eye(8, dtype=torch.float64))
    assert torch.allclose(apply_whitening(a, mean0, matrix0), (a.double() - mean0).float())
    # shrinkage softens: the spread of the whitened eigenvalues grows with it, stays below the original's
    spreads = []
    for s in (0.0, 0.01, 1.0):
        w = torch.linalg.eigvalsh(torch.cov(apply_whitening(a, *fit_whitening([a], Whitening(1.0, s))).double().T))
        spreads.append(float(w.max() / w.min()))
    original = torch.linalg.eigvalsh(torch.cov(a.double().T))
    assert spreads[0] < 1 + 1e-6 < spreads[1] < spreads[2] < float(original.max() / original.min())


def test_folding_into_the_embedding_layer_gives_the_whitened_embedding() -> None:
    torch.manual_seed(0)
    model = build_model("hybrid1", 3).eval()
    x = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        raw = model(x)
        mean, matrix = fit_whitening([raw, model(x.flip(-1))], Whitening(0.5, 0.01))
        fold_whitening(model.embed, mean, matrix)
        folded = model(x)
    expected = apply_whitening(raw, mean, matrix)
    # float32 rounding of a centred, rescaled output: what the search compares is the direction
    assert (folded - expected).abs().max() < 1e-4 * expected.abs().max()
    assert torch.nn.functional.cosine_similarity(folded, expected).min() > 1 - 1e-6
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in build_model("hybrid1", 3).parameters())


def test_whitening_wins_on_validation_where_a_shared_direction_swamps_the_classes() -> None:
    """Ten classes apart in 7 dimensions, plus one large direction that varies per image and
    says nothing about its class: cosine similarity sees mostly that direction."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(2000) % 10
    centres = torch.randn(10, 7, generator=g)
    emb = torch.cat([torch.randn(2000, 1, generator=g) * 20 + 5,
                     centres[labels] + 0.3 * torch.randn(2000, 7, generator=g)], dim=1)
    grid = candidates([0.5, 1.0], [0.01, 1.0])
    assert grid[0] == Whitening(0.0) and len(grid) == 1 + 4 and candidates([], [0.1]) == []
    result = choose_whitening([emb[500:]], [emb[:500]], labels[:500], grid, "mean_average_precision_at_r")
    rows = result["candidates"]
    assert len(rows) == 1 + len(grid) and rows[0]["whitening"] is None
    best = result["chosen"]
    assert best["whitening"] is not None and best["whitening"]["power"] > 0
    assert best["mean_average_precision_at_r"] > rows[0]["mean_average_precision_at_r"] + 0.2
    # unchanged is the first candidate: a whitening that does not beat it is not chosen
    flat = torch.randn(600, 8, generator=g)
    same = choose_whitening([flat[100:]], [flat[:100]], labels[:100], [], "mean_average_precision_at_r")
    assert same["chosen"]["whitening"] is None
