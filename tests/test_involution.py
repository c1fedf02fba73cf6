import pytest
import torch

from model import Involution


def naive_involution(inv: Involution, x: torch.Tensor) -> torch.Tensor:
    """Per-pixel loops straight from the definition: pool the s x s cell (clipped at the
    border), generate the kernel from that pixel, weight the K x K window of each channel."""
    b, c, h, w = x.shape
    k, s, g = inv.kernel_size, inv.stride, inv.groups
    pad = (k - 1) // 2
    h_out, w_out = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    w0, b0 = inv.reduce.weight[:, :, 0, 0], inv.reduce.bias
    w1, b1 = inv.span.weight[:, :, 0, 0], inv.span.bias
    bn = inv.bn
    out = torch.zeros(b, c, h_out, w_out, dtype=x.dtype)
    for n in range(b):
        for i in range(h_out):
            for j in range(w_out):
                cell = x[n, :, i * s : i * s + s, j * s : j * s + s].mean(dim=(1, 2))  # (C,)
                hidden = w0 @ cell + b0
                hidden = (hidden - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
                kern = w1 @ torch.relu(hidden) + b1  # (K*K*G,)
                kern = kern.view(g, k, k)
                for ch in range(c):
                    grp = ch // (c // g)
                    window = xp[n, ch, i * s : i * s + k, j * s : j * s + k]
                    out[n, ch, i, j] = (kern[grp] * window).sum()
    return out


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(7, 7), (8, 6)])
def test_matches_naive_loop(groups: int, stride: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    inv = Involution(4, kernel_size=3, stride=stride, groups=groups, reduction_ratio=2)
    with torch.no_grad():  # non-trivial BN statistics
        inv.bn.running_mean.uniform_(-0.5, 0.5)
        inv.bn.running_var.uniform_(0.5, 2.0)
        inv.bn.weight.uniform_(0.5, 1.5)
        inv.bn.bias.uniform_(-0.5, 0.5)
    inv.eval()
    x = torch.randn(2, 4, *size)
    with torch.no_grad():
        fast, slow = inv(x), naive_involution(inv, x)
    assert fast.shape == slow.shape
    rel = (fast - slow).norm() / slow.norm()
    assert rel < 1e-5, rel


def test_kernel_shape_and_channels_kept() -> None:
    inv = Involution(6, kernel_size=5, stride=2, groups=3)
    x = torch.randn(2, 6, 9, 10)
    assert inv.kernel(x).shape == (2, 3, 25, 5, 5)
    assert inv(x).shape == (2, 6, 5, 5)
    assert Involution(3)(torch.randn(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_paper_layer_parameter_counts() -> None:
    from model import keras_param_count

    assert keras_param_count(Involution(1)) == 24
    assert keras_param_count(Involution(3)) == 26


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="divisible"):
        Involution(3, groups=2)
    with pytest.raises(ValueError, match="odd"):
        Involution(3, kernel_size=4)


def unfold_involution(inv: Involution, x: torch.Tensor) -> torch.Tensor:
    """The layer as first written: 1x1 convolutions for the kernel, unfold (im2col) for the
    windows. Differentiable, so the fast form's gradients can be checked against it."""
    import torch.nn.functional as F

    b, c, h, w = x.shape
    k, g = inv.kernel_size, inv.groups
    kernel = inv.span(inv.act(inv.bn(inv.reduce(inv.pool(x)))))
    h_out, w_out = kernel.shape[-2:]
    kernel = kernel.view(b, g, k * k, h_out, w_out)
    patches = F.unfold(x, k, padding=(k - 1) // 2, stride=inv.stride).view(b, g, c // g, k * k, h_out, w_out)
    return (kernel.unsqueeze(2) * patches).sum(dim=3).reshape(b, c, h_out, w_out)


@pytest.mark.parametrize(("channels", "stride", "groups", "reduction"), [(1, 1, 1, 4), (3, 1, 1, 4), (4, 2, 2, 2),
                                                                        (3, 2, 1, 1), (6, 1, 3, 2), (16, 1, 2, 4),
                                                                        (16, 2, 2, 4)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("input_grad", [True, False])
def test_gradients_match_the_unfold_form(channels: int, stride: int, groups: int, reduction: int,
                                         channels_last: bool, input_grad: bool) -> None:
    """The hand-written backward (model/involution.py _Involve) against autograd through unfold,
    in float64, for every parameter and, when it needs one, the input (the raw image in front of
    Hybrid-1 needs none); the output keeps the input's layout."""
    torch.manual_seed(0)
    inv = Involution(channels, stride=stride, groups=groups, reduction_ratio=reduction).double()
    x = torch.randn(3, channels, 9, 8, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(input_grad)
    fast, ref = inv(x), unfold_involution(inv, x)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    weight = torch.randn_like(ref)
    wrt = [x, *inv.parameters()] if input_grad else list(inv.parameters())
    grads = torch.autograd.grad((fast * weight).sum(), wrt)
    expected = torch.autograd.grad((ref * weight).sum(), wrt)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    if channels_last:
        assert fast.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("groups", "hidden"), [(1, 1), (2, 3)])
def test_gradcheck_of_the_involve_function(groups: int, hidden: int) -> None:
    """_Involve's backward by finite differences: the paper's case (one group, one hidden feature)
    and the general one (einsum over groups and hidden features), strided."""
    from model.involution import _Involve

    torch.manual_seed(0)
    x = torch.randn(2, groups, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, hidden, 3, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(groups, 9, hidden, dtype=torch.float64, requires_grad=True)
    b = torch.randn(groups, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: _Involve.apply(*a, 3, 2), (x, h, w, b))
