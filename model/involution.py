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
        """The generated kernels, (B, G, K*K, H_out, W_out): one K x K kernel per pixel and group.

        The two 1x1 convolutions are written as broadcast multiply-sums over channels: with the
        paper's widths (1 or 3 channels in, 1 hidden) oneDNN's 1x1 convolutions and their
        backward cost more than the rest of the layer."""
        b = x.shape[0]
        hidden = _channel_mix(self.pool(x.contiguous()), self.reduce)
        k = _channel_mix(self.act(self.bn(hidden)), self.span)  # (B, K*K*G, Ho, Wo)
        return k.view(b, self.groups, self.kernel_size * self.kernel_size, *k.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        channels_last = _is_channels_last(x)
        x = x.contiguous()  # the multiply-adds broadcast over channels, fastest with each channel's plane whole
        kernel = self.kernel(x)  # (B, G, K*K, Ho, Wo)
        xg = x.view(b, self.groups, c // self.groups, h, w)
        if torch.is_grad_enabled() and (xg.requires_grad or kernel.requires_grad):
            out = _WeightedTaps.apply(xg, kernel, self.kernel_size, self.stride)
        else:
            out = weighted_taps(xg, kernel, self.kernel_size, self.stride)
        out = out.reshape(b, c, *out.shape[-2:])
        # keep the caller's layout: the convolutions after it run channels_last
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"groups={self.groups}"
        )


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _channel_mix(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 convolution as a broadcast multiply-sum over input channels (the same function)."""
    weight, bias = conv.weight.flatten(1), conv.bias.view(1, -1, 1, 1)  # (O, I), (1, O, 1, 1)
    if weight.shape[1] == 1:  # one input channel: an outer product
        return x * weight.view(1, -1, 1, 1) + bias
    if weight.shape[0] == 1:  # one output channel: a weighted sum
        return (x * weight.view(1, -1, 1, 1)).sum(1, keepdim=True) + bias
    return (x.unsqueeze(1) * weight.view(1, *weight.shape, 1, 1)).sum(2) + bias


def _taps(xp: torch.Tensor, k: int, stride: int, h_out: int, w_out: int) -> list[torch.Tensor]:
    """The K*K shifted (and strided) views of a padded map, in unfold's order (row-major offsets)."""
    span_h, span_w = stride * (h_out - 1) + 1, stride * (w_out - 1) + 1
    return [xp[..., i:i + span_h:stride, j:j + span_w:stride] for i in range(k) for j in range(k)]


def weighted_taps(x: torch.Tensor, kernel: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    """out[b, g, c] = sum_t kernel[b, g, t] * tap_t(x)[b, g, c]: involution's weighting of each
    K x K window by its pixel's kernel, as K*K shifted multiply-adds on the zero-padded input
    instead of unfold (im2col), which PyTorch runs on one thread and whose backward (col2im)
    dominated the layer. x: (B, G, C/G, H, W); kernel: (B, G, K*K, Ho, Wo). Ordinary tensor ops
    (pad, strided slices, multiply-add), so the layer exports to ONNX."""
    pad = (k - 1) // 2
    h_out, w_out = kernel.shape[-2:]
    taps = _taps(F.pad(x, (pad, pad, pad, pad)), k, stride, h_out, w_out)
    weights = kernel.unsqueeze(3).unbind(2)  # K*K of (B, G, 1, Ho, Wo)
    out = taps[0] * weights[0]
    for tap, weight in zip(taps[1:], weights[1:], strict=True):
        out.addcmul_(tap, weight)
    return out


class _WeightedTaps(torch.autograd.Function):
    """weighted_taps with a hand-written backward. Autograd's own backward of K*K strided slices
    fills a zero tensor of the whole input per tap and per kernel column; this one accumulates
    the input's gradient into one padded buffer and writes each tap's kernel gradient straight
    into its place (no stack of K*K columns to copy)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: torch.Tensor, k: int, stride: int) -> torch.Tensor:
        ctx.save_for_backward(x, kernel)
        ctx.k, ctx.stride = k, stride
        return weighted_taps(x, kernel, k, stride)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        x, kernel = ctx.saved_tensors
        k, stride, (h, w) = ctx.k, ctx.stride, x.shape[-2:]
        pad, (h_out, w_out) = (k - 1) // 2, kernel.shape[-2:]
        xp = F.pad(x, (pad, pad, pad, pad))
        grad = grad.contiguous()
        grad_x = grad_kernel = None
        if ctx.needs_input_grad[1]:  # sum over the group's channels of grad * tap, written in place
            grad_kernel = kernel.new_empty(kernel.shape)
            for t, tap in enumerate(_taps(xp, k, stride, h_out, w_out)):
                column = grad_kernel[:, :, t]
                torch.mul(grad[:, :, 0], tap[:, :, 0], out=column)
                for ch in range(1, grad.shape[2]):
                    column.addcmul_(grad[:, :, ch], tap[:, :, ch])
        if ctx.needs_input_grad[0]:  # each tap's share, added back where the tap came from
            grad_xp = torch.zeros_like(xp)
            for tap, weight in zip(_taps(grad_xp, k, stride, h_out, w_out), kernel.unsqueeze(3).unbind(2),
                                   strict=True):
                tap.addcmul_(grad, weight)
            grad_x = grad_xp[..., pad:pad + h, pad:pad + w]
        return grad_x, grad_kernel, None, None
