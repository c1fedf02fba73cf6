"""The paper's networks and the Table 2 baselines, behind one registry.

Every paper model maps an image to a 256-d embedding (the last Dense layer, no
activation).  A classifier head for cross-entropy training lives in the training
code, not here: Table 1 counts only the embedding network.

Architectures are the reconstruction in shared/paper/PAPER.md, which reproduces
every Table 1 parameter count:

    cnn3a    conv16 - pool - conv64 - pool - conv128 - GAP - dense256
    cnn3b    conv16 - pool - conv96 - pool - conv128 - GAP - dense256
    innN     N x involution - GAP - dense256
    hybridN  N x involution, then cnn3a
    hybrid1-4conv  involution, then conv16 - pool - conv32 - pool - conv64 - conv128 (section 3's prose)

and this project's compact residual network (not the paper's), in two variants that differ only
in the spatial mixer inside each residual block:

    compact-inv   conv24 - pool - conv48 - 2 x [mixer - 1x1] - conv96/2 - 2 x [mixer - 1x1] - GAP - dense256
    compact-conv  the same with a grouped 3x3 convolution in place of involution
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn

from .involution import Involution

ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU}


class InvolutionBlock(nn.Module):
    """Involution followed by the network's activation (kept as a module so feature maps can be hooked)."""

    def __init__(self, channels: int, activation: str) -> None:
        super().__init__()
        self.inv = Involution(channels, kernel_size=3, stride=1, groups=1)
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.inv(x))


class ConvBlock(nn.Module):
    """3x3 'same' convolution + activation, optionally followed by 2x2 max-pooling."""

    def __init__(self, c_in: int, c_out: int, activation: str, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.act = ACTIVATIONS[activation]()
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.conv(x)))


class EmbeddingNet(nn.Module):
    """Involution layers, then conv blocks, then global average pooling and a linear embedding."""

    def __init__(
        self,
        in_channels: int,
        n_involution: int,
        conv_widths: tuple[int, ...],
        n_pooled: int,
        embedding_dim: int,
        activation: str,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.involutions = nn.ModuleList(InvolutionBlock(in_channels, activation) for _ in range(n_involution))
        convs, c = [], in_channels
        for i, width in enumerate(conv_widths):
            convs.append(ConvBlock(c, width, activation, pool=i < n_pooled))
            c = width
        self.convs = nn.ModuleList(convs)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embed = nn.Linear(c, embedding_dim)
        self.embedding_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, D)
        for block in self.involutions:
            x = block(x)
        for block in self.convs:
            x = block(x)
        return self.embed(self.pool(x).flatten(1))


class MixerBlock(nn.Module):
    """Residual block x + BN(W * act(BN(mixer(x)))): a spatial mixer, then a 1x1 channel mix.

    The mixer is involution with channel groups (a K x K kernel generated per pixel, shared by
    the channels of its group) or a grouped 3 x 3 convolution (one kernel per position-independent
    group), the only difference between compact-inv and compact-conv."""

    def __init__(self, channels: int, mixer: str, groups: int) -> None:
        super().__init__()
        if mixer == "involution":
            self.mixer = Involution(channels, kernel_size=3, stride=1, groups=groups)
        else:
            self.mixer = nn.Conv2d(channels, channels, 3, padding=1, groups=groups)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act = nn.GELU()
        self.mix = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.mix(self.act(self.bn1(self.mixer(x)))))


def _conv_bn(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.GELU())


class CompactNet(nn.Module):
    """This project's compact retrieval network: three stages at full, half and quarter size
    joined by strided 3x3 convolutions, residual mixer blocks in each, GAP and a linear
    256-d embedding."""

    def __init__(self, in_channels: int, embedding_dim: int, mixer: str,
                 widths: tuple[int, ...], depths: tuple[int, ...], group_width: int, conv_groups_per: int,
                 stem: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(in_channels, stem, 1), nn.MaxPool2d(2), _conv_bn(stem, widths[0], 1)]
        for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            if i:
                layers.append(_conv_bn(widths[i - 1], width, 2))
            for _ in range(depth):
                inv_groups = width // group_width
                groups = inv_groups if mixer == "involution" else inv_groups * conv_groups_per
                layers.append(MixerBlock(width, mixer, groups))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embed = nn.Linear(widths[-1], embedding_dim)
        self.embedding_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.pool(self.features(x)).flatten(1))


COMPACT = {"stem": 24, "widths": (48, 96), "depths": (2, 2), "group_width": 8, "conv_groups_per": 2}


def _compact(mixer: str) -> Callable[..., nn.Module]:
    def build(in_channels: int, embedding_dim: int, activation: str, pretrained: bool) -> nn.Module:
        if pretrained:
            raise ValueError("pretrained weights exist only for the torchvision baselines")
        if activation != "gelu":
            raise ValueError("the compact networks use GELU only")
        return CompactNet(in_channels, embedding_dim, mixer, **COMPACT)

    return build


def _paper(n_inv: int, widths: tuple[int, ...], n_pooled: int = 2) -> Callable[..., nn.Module]:
    def build(in_channels: int, embedding_dim: int, activation: str, pretrained: bool) -> nn.Module:
        if pretrained:
            raise ValueError("pretrained weights exist only for the torchvision baselines")
        return EmbeddingNet(in_channels, n_inv, widths, n_pooled, embedding_dim, activation)

    return build


def _stem_for_small_images(model: nn.Module, name: str, in_channels: int) -> None:
    """Fit an ImageNet stem to 28-32 px inputs: stride 1 and no early max-pool, so the
    feature map is not reduced to 1x1 before the last stage; adapt the input channels."""
    if name == "resnet50":
        model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif name == "vgg16":
        first = model.features[0]
        model.features[0] = nn.Conv2d(in_channels, first.out_channels, 3, padding=1)
        model.features[-1] = nn.Identity()  # five 2x2 pools would take 28 px to 0
        model.avgpool = nn.AdaptiveAvgPool2d(1)
    else:  # mobilenet_v2, efficientnet_b0: features[0] is Conv-BN-Act with stride 2
        old = model.features[0][0]
        model.features[0][0] = nn.Conv2d(in_channels, old.out_channels, 3, 1, 1, bias=False)


def _torchvision(name: str) -> Callable[..., nn.Module]:
    def build(in_channels: int, embedding_dim: int, activation: str, pretrained: bool) -> nn.Module:
        weights = "DEFAULT" if pretrained else None
        model = getattr(torchvision.models, name)(weights=weights)
        _stem_for_small_images(model, name, in_channels)
        if name == "resnet50":
            model.fc = nn.Linear(model.fc.in_features, embedding_dim)
        elif name == "vgg16":
            model.classifier = nn.Linear(512, embedding_dim)
        else:
            model.classifier = nn.Linear(model.classifier[-1].in_features, embedding_dim)
        model.embedding_dim = embedding_dim
        return model

    return build


CNN3A, CNN3B = (16, 64, 128), (16, 96, 128)
REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "cnn3a": _paper(0, CNN3A),
    "cnn3b": _paper(0, CNN3B),
    "inn2": _paper(2, ()),
    "inn3": _paper(3, ()),
    "inn4": _paper(4, ()),
    "hybrid1": _paper(1, CNN3A),
    "hybrid2": _paper(2, CNN3A),
    "hybrid3": _paper(3, CNN3A),
    "hybrid1-4conv": _paper(1, (16, 32, 64, 128)),
}
REGISTRY.update({"compact-inv": _compact("involution"), "compact-conv": _compact("conv")})
TORCHVISION_MODELS = ("mobilenet_v2", "efficientnet_b0", "resnet50", "vgg16")  # the only ones with pretrained weights
REGISTRY.update({name: _torchvision(name) for name in TORCHVISION_MODELS})
PAPER_MODELS = ("cnn3a", "cnn3b", "inn2", "inn3", "inn4", "hybrid1", "hybrid2", "hybrid3")
# How the paper, the demo and the model cards name the paper's models (others go by their registry name).
TITLES = {"cnn3a": "CNN-3a", "cnn3b": "CNN-3b", "inn2": "INN-2", "inn3": "INN-3", "inn4": "INN-4",
          "hybrid1": "Hybrid-1", "hybrid2": "Hybrid-2", "hybrid3": "Hybrid-3",
          "compact-inv": "Compact-Inv", "compact-conv": "Compact-Conv"}


def model_title(name: str) -> str:
    return TITLES.get(name, name)


def model_label(name: str) -> str:
    """A model (registry name or title) named with where it comes from, as the tables show it:
    "Hybrid-1 (paper)", "Compact-Conv (this project)"."""
    key = {title: key for key, title in TITLES.items()}.get(name, name)
    return f"{model_title(key)} ({'paper' if key in PAPER_MODELS else 'this project'})"


def build_model(
    name: str,
    in_channels: int,
    embedding_dim: int = 256,
    activation: str = "gelu",
    pretrained: bool = False,
) -> nn.Module:
    """Build a registered architecture that maps (B, in_channels, H, W) images to (B, embedding_dim).

    `activation` applies to the paper's models (GELU as proposed, ReLU for the ablation);
    torchvision baselines keep their own activations.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(REGISTRY)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    return REGISTRY[name](in_channels, embedding_dim, activation, pretrained)


def keras_param_count(module: nn.Module) -> int:
    """Parameters as Keras counts them (the paper's Table 1): trainable weights plus
    BatchNorm's running mean and variance."""
    n = sum(p.numel() for p in module.parameters() if p.requires_grad)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            n += m.running_mean.numel() + m.running_var.numel()
    return n
