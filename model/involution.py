"""The involution operator (Li et al., CVPR 2021), the building block of the paper.

Convolution shares one kernel across all positions and varies it across channels;
involution does the opposite: a small network generates a K x K kernel *for every
output pixel* from that pixel's own features, and the kernel is shared across the
channels of a group.  The meta-weights (two 1x1 convs) are shared by all pixels, so
the parameter count does not depend on the image size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Involution(nn.Module):
    """Involution with kernel generation H = W1 * ReLU(BN(W0 * X)).

    Args:
        in_channels: C; the output has the same number of channels.
        kernel_size: K, the spatial size of each generated kernel.
        stride: s; the kernel branch sees an s x s average-pooled input and the
            patches are taken with stride s.
        groups: G; channels are split into G groups, each with its own kernel.
        reduction_ratio: hidden width of the kernel generator is
            max(1, C // reduction_ratio).  With the default 4 a 1- or 3-channel
            input gets width 1: 24 / 26 parameters counted the Keras way, as in
            the paper's Table 1.
    """

    def __init__(
        self,
        in_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        reduction_ratio: int = 4,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (got {kernel_size}): outputs keep the input's size")
        if in_channels % groups != 0:
            raise ValueError(f"in_channels ({in_channels}) must be divisible by groups ({groups})")
        self.in_channels = in_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.groups = groups
        hidden = max(1, in_channels // reduction_ratio)
        # ceil_mode: an odd size gives as many pooled cells as strided patches;
        # the last, partial cell averages only the pixels it covers.
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()
        self.reduce = nn.Conv2d(in_channels, hidden, 1)  # W0, with bias
        self.bn = nn.BatchNorm2d(hidden)
        self.act = nn.ReLU()
        self.span = nn.Conv2d(hidden, kernel_size * kernel_size * groups, 1)  # W1

    def out_size(self, size: int) -> int:
        """Output height (or width) for an input of this height (or width)."""
        pad = (self.kernel_size - 1) // 2
        return (size + 2 * pad - self.kernel_size) // self.stride + 1

    def kernel(self, x: torch.Tensor) -> torch.Tensor:
        """The generated kernels, (B, G, K*K, H_out, W_out): one K x K kernel per pixel and group."""
        b = x.shape[0]
        k = self.span(self.act(self.bn(self.reduce(self.pool(x)))))  # (B, K*K*G, Ho, Wo)
        return k.view(b, self.groups, self.kernel_size * self.kernel_size, *k.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        kk = self.kernel_size * self.kernel_size
        kernel = self.kernel(x)  # (B, G, K*K, Ho, Wo)
        h_out, w_out = kernel.shape[-2:]
        pad = (self.kernel_size - 1) // 2
        patches = F.unfold(x, self.kernel_size, padding=pad, stride=self.stride)  # (B, C*K*K, Ho*Wo)
        patches = patches.view(b, self.groups, c // self.groups, kk, h_out, w_out)
        out = (kernel.unsqueeze(2) * patches).sum(dim=3)  # (B, G, C/G, Ho, Wo)
        return out.reshape(b, c, h_out, w_out)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"groups={self.groups}"
        )
