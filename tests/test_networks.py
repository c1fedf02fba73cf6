import pytest
import torch

from model import PAPER_MODELS, REGISTRY, build_model, keras_param_count

TABLE1 = {  # the paper's Table 1: (MNIST / FashionMNIST, CIFAR-10)
    "cnn3a": (116_320, 116_608),
    "cnn3b": (157_824, 158_112),
    "inn2": (560, 1_076),
    "inn3": (584, 1_102),
    "inn4": (608, 1_128),  # the paper prints 1,158: a typo (see PAPER.md)
    "hybrid1": (116_344, 116_634),
    "hybrid2": (116_368, 116_660),
    "hybrid3": (116_392, 116_686),
}


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_table1_parameter_counts(name: str) -> None:
    mnist, cifar = TABLE1[name]
    assert keras_param_count(build_model(name, 1)) == mnist
    assert keras_param_count(build_model(name, 3)) == cifar


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_activation_choice_changes_modules_not_counts(activation: str) -> None:
    model = build_model("hybrid1", 3, activation=activation)
    kinds = {type(m).__name__ for m in model.modules()}
    assert ("GELU" in kinds) == (activation == "gelu")
    assert keras_param_count(model) == 116_634


@pytest.mark.parametrize("name", list(REGISTRY))
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_every_model_embeds(name: str, channels: int, size: int) -> None:
    model = build_model(name, channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 256)
    assert torch.isfinite(out).all()


def test_unknown_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown model 'hybrid9'"):
        build_model("hybrid9", 3)
    with pytest.raises(ValueError, match="unknown activation"):
        build_model("hybrid1", 3, activation="swish")


def test_hybrid1_weights_under_half_a_megabyte() -> None:
    model = build_model("hybrid1", 3)
    assert sum(p.numel() * p.element_size() for p in model.state_dict().values()) < 500_000


@pytest.mark.parametrize("channels", [1, 3])
def test_compact_variants_fit_the_paper_budget_and_match_in_size(channels: int) -> None:
    """Issue 38: at most 130,000 parameters and 520 KB of weights, the two variants within 2%
    of each other, differing only in their spatial mixer."""
    inv, conv = build_model("compact-inv", channels), build_model("compact-conv", channels)
    counts = [keras_param_count(m) for m in (inv, conv)]
    assert max(counts) <= 130_000 and abs(counts[0] - counts[1]) / max(counts) <= 0.02, counts
    for m in (inv, conv):
        assert sum(p.numel() * p.element_size() for p in m.state_dict().values()) <= 520_000
    kinds = lambda m: [type(b.mixer).__name__ for b in m.modules() if hasattr(b, "mixer")]
    assert set(kinds(inv)) == {"Involution"} and set(kinds(conv)) == {"Conv2d"} and len(kinds(inv)) == 4
    strip = lambda m: [type(x).__name__ for x in m.modules() if not hasattr(x, "mixer")
                       and type(x).__name__ not in ("Involution", "Conv2d", "BatchNorm2d", "ReLU", "AvgPool2d",
                                                    "Identity")]
    assert strip(inv) == strip(conv)


def test_tables_name_each_model_with_where_it_comes_from() -> None:
    from model.networks import model_label

    assert model_label("hybrid1") == model_label("Hybrid-1") == "Hybrid-1 (paper)"
    assert model_label("cnn3a") == "CNN-3a (paper)"
    assert model_label("compact-conv") == model_label("Compact-Conv") == "Compact-Conv (this project)"
