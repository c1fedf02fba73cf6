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

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The kernel generator's hidden features ReLU(BN(W0 * X)), (B, r, H_out, W_out)."""
        return self.act(self.bn(_channel_mix(self.pool(x.contiguous()), self.reduce)))

    def kernel(self, x: torch.Tensor) -> torch.Tensor:
        """The generated kernels, (B, G, K*K, H_out, W_out): one K x K kernel per pixel and group
        (for the feature-map view; forward never builds this tensor)."""
        k = _channel_mix(self.hidden(x), self.span)  # (B, K*K*G, Ho, Wo)
        return k.view(x.shape[0], self.groups, self.kernel_size * self.kernel_size, *k.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        channels_last = _is_channels_last(x)
        x = x.contiguous()  # the multiply-adds broadcast over channels, fastest with each channel's plane whole
        hidden = self.hidden(x)  # (B, r, Ho, Wo)
        k2, r = self.kernel_size * self.kernel_size, hidden.shape[1]
        span_w = self.span.weight.view(self.groups, k2, r)
        span_b = self.span.bias.view(self.groups, k2)
        xg = x.view(b, self.groups, c // self.groups, h, w)
        args = (xg, hidden, span_w, span_b, self.kernel_size, self.stride)
        if not _single(span_w):  # channel groups: the kernel tensor is only K*K*G/C times the input's size
            out = _involve_grouped(xg, _channel_mix(hidden, self.span), self.kernel_size, self.stride)
        elif torch.is_grad_enabled() and any(t.requires_grad for t in args[:4]):
            out = _Involve.apply(*args)
        else:
            out = involve(*args)
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
    """A 1x1 convolution as a broadcast multiply-sum over input channels (the same function):
    with the paper's widths (1 or 3 channels in, 1 hidden) oneDNN's 1x1 convolutions and their
    backward cost more than the rest of the layer."""
    weight, bias = conv.weight.flatten(1), conv.bias.view(1, -1, 1, 1)  # (O, I), (1, O, 1, 1)
    if weight.shape[1] == 1:  # one input channel: an outer product
        return x * weight.view(1, -1, 1, 1) + bias
    if weight.shape[0] == 1:  # one output channel: a weighted sum
        return (x * weight.view(1, -1, 1, 1)).sum(1, keepdim=True) + bias
    if weight.shape[1] <= 3:  # a few inputs: a broadcast multiply-sum, cheaper than oneDNN's call
        return (x.unsqueeze(1) * weight.view(1, *weight.shape, 1, 1)).sum(2) + bias
    return F.conv2d(x, conv.weight, conv.bias)


def _taps(xp: torch.Tensor, k: int, stride: int, h_out: int, w_out: int) -> list[torch.Tensor]:
    """The K*K shifted (and strided) views of a padded map, in unfold's order (row-major offsets)."""
    span_h, span_w = stride * (h_out - 1) + 1, stride * (w_out - 1) + 1
    return [xp[..., i:i + span_h:stride, j:j + span_w:stride] for i in range(k) for j in range(k)]


def _single(span_w: torch.Tensor) -> bool:
    """One group and one hidden feature (every paper model): each tap's kernel is an axpy."""
    return span_w.shape[0] == 1 and span_w.shape[2] == 1


def _tap_kernel(hidden: torch.Tensor, span_w: torch.Tensor, span_b: torch.Tensor, t: int) -> torch.Tensor:
    """Tap t of every pixel's kernel, (B, G, 1, Ho, Wo): W1's rows for t applied to the hidden
    features (the second 1x1 convolution, one output channel per group at a time)."""
    if _single(span_w):
        return torch.addcmul(span_b[0, t], hidden, span_w[0, t, 0]).unsqueeze(1)
    return (torch.einsum("bjhw,gj->bghw", hidden, span_w[:, t]) + span_b[:, t].view(1, -1, 1, 1)).unsqueeze(2)


def involve(x: torch.Tensor, hidden: torch.Tensor, span_w: torch.Tensor, span_b: torch.Tensor, k: int,
            stride: int) -> torch.Tensor:
    """out[b, g, c] = sum_t kernel[b, g, t] * tap_t(x)[b, g, c], kernel = W1 * hidden + b1:
    involution's weighting of each K x K window by its pixel's generated kernel.

    x: (B, G, C/G, H, W); hidden: (B, r, Ho, Wo); span_w: (G, K*K, r); span_b: (G, K*K).
    Each tap's kernel is made as it is used, so the (B, G*K*K, Ho, Wo) kernel tensor, nine
    times the input's size, is never written, and the windows are K*K shifted multiply-adds on
    the zero-padded input instead of unfold (im2col), which PyTorch runs on one thread and whose
    backward (col2im) dominated the layer. Ordinary tensor ops (pad, strided slices, multiply-
    add), so the layer exports to ONNX."""
    pad = (k - 1) // 2
    return _involve_padded(F.pad(x, (pad, pad, pad, pad)), hidden, span_w, span_b, k, stride)


def _involve_grouped(x: torch.Tensor, kernel: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    """involve for networks with channel groups, where the kernels, made in one 1x1 convolution,
    (B, G*K*K, Ho, Wo), are a small tensor: x (B, G, C/G, H, W) -> (B, G, C/G, Ho, Wo)."""
    kernel = kernel.view(x.shape[0], x.shape[1], k * k, *kernel.shape[-2:])
    if torch.is_grad_enabled() and (x.requires_grad or kernel.requires_grad):
        return _InvolveGrouped.apply(x, kernel, k, stride)
    pad = (k - 1) // 2
    return _weigh_taps(F.pad(x, (pad, pad, pad, pad)), kernel, k, stride)


def _weigh_taps(xp: torch.Tensor, kernel: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    taps = _taps(xp, k, stride, *kernel.shape[-2:])
    out = taps[0] * kernel[:, :, 0:1]
    for t in range(1, k * k):
        out.addcmul_(taps[t], kernel[:, :, t:t + 1])
    return out


class _InvolveGrouped(torch.autograd.Function):
    """_involve_grouped's backward tap by tap, into one padded input gradient (autograd's own
    writes and zero-fills a padded-size tensor per tap, which cost more than the rest of the step)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: torch.Tensor, k: int, stride: int) -> torch.Tensor:
        pad = (k - 1) // 2
        xp = F.pad(x, (pad, pad, pad, pad))
        ctx.save_for_backward(xp, kernel)
        ctx.k, ctx.stride = k, stride
        return _weigh_taps(xp, kernel, k, stride)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        xp, kernel = ctx.saved_tensors
        k, stride = ctx.k, ctx.stride
        pad, (h_out, w_out) = (k - 1) // 2, kernel.shape[-2:]
        grad = grad.to(xp.dtype).contiguous()
        grad_x = grad_kernel = None
        if ctx.needs_input_grad[1]:
            grad_kernel = torch.empty_like(kernel)
            for t, tap in enumerate(_taps(xp, k, stride, h_out, w_out)):
                torch.sum(grad * tap, dim=2, out=grad_kernel[:, :, t])
        if ctx.needs_input_grad[0]:
            grad_xp = torch.zeros_like(xp)
            for t, tap in enumerate(_taps(grad_xp, k, stride, h_out, w_out)):
                tap.addcmul_(grad, kernel[:, :, t:t + 1])
            grad_x = grad_xp[..., pad:xp.shape[-2] - pad, pad:xp.shape[-1] - pad]
        return grad_x, grad_kernel, None, None


def _involve_padded(xp: torch.Tensor, hidden: torch.Tensor, span_w: torch.Tensor, span_b: torch.Tensor, k: int,
                    stride: int) -> torch.Tensor:
    h_out, w_out = hidden.shape[-2:]
    taps = _taps(xp, k, stride, h_out, w_out)
    out = taps[0] * _tap_kernel(hidden, span_w, span_b, 0)
    for t in range(1, k * k):
        out.addcmul_(taps[t], _tap_kernel(hidden, span_w, span_b, t))
    return out


class _Involve(torch.autograd.Function):
    """involve with a hand-written backward that, like the forward, goes tap by tap: each tap's
    kernel gradient (the sum over its group's channels of grad * tap) is made once, in a buffer
    the size of one kernel plane, and folded straight into W1's, b1's and the hidden features'
    gradients; the input's gradient is accumulated into one padded buffer, and skipped when the
    input needs none (the raw image in front of Hybrid-1). Autograd's own backward would write
    the nine-fold kernel tensor's gradient and a zero input-sized tensor per tap."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, hidden: torch.Tensor, span_w: torch.Tensor, span_b: torch.Tensor, k: int,
                stride: int) -> torch.Tensor:
        pad = (k - 1) // 2
        xp = F.pad(x, (pad, pad, pad, pad))  # kept for the backward, which reads the same taps
        ctx.save_for_backward(xp, hidden, span_w, span_b)
        ctx.k, ctx.stride = k, stride
        return _involve_padded(xp, hidden, span_w, span_b, k, stride)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        xp, hidden, span_w, span_b = ctx.saved_tensors
        k, stride = ctx.k, ctx.stride
        pad, (h_out, w_out) = (k - 1) // 2, hidden.shape[-2:]
        h, w = xp.shape[-2] - 2 * pad, xp.shape[-1] - 2 * pad
        grad = grad.to(xp.dtype).contiguous()
        grad_x = grad_hidden = grad_w = grad_b = None
        if any(ctx.needs_input_grad[1:4]):
            single = _single(span_w)
            grad_hidden, grad_w, grad_b = torch.zeros_like(hidden), torch.empty_like(span_w), torch.empty_like(span_b)
            tap_grad = grad.new_empty(grad.shape[:2] + grad.shape[3:])  # (B, G, Ho, Wo)
            for t, tap in enumerate(_taps(xp, k, stride, h_out, w_out)):
                torch.mul(grad[:, :, 0], tap[:, :, 0], out=tap_grad)
                for ch in range(1, grad.shape[2]):
                    tap_grad.addcmul_(grad[:, :, ch], tap[:, :, ch])
                if single:
                    grad_w[0, t, 0] = torch.vdot(tap_grad.flatten(), hidden.flatten())
                    grad_b[0, t] = tap_grad.sum()
                    grad_hidden.addcmul_(tap_grad, span_w[0, t, 0])
                else:
                    grad_w[:, t] = torch.einsum("bghw,bjhw->gj", tap_grad, hidden)
                    grad_b[:, t] = tap_grad.sum((0, 2, 3))
                    grad_hidden += torch.einsum("bghw,gj->bjhw", tap_grad, span_w[:, t])
        if ctx.needs_input_grad[0]:  # each tap's share, added back where the tap came from
            grad_xp = torch.zeros_like(xp)
            for t, tap in enumerate(_taps(grad_xp, k, stride, h_out, w_out)):
                tap.addcmul_(grad, _tap_kernel(hidden, span_w, span_b, t))
            grad_x = grad_xp[..., pad:pad + h, pad:pad + w]
        return grad_x, grad_hidden, grad_w, grad_b, None, None
