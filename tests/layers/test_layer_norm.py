"""gn_det's LN function (GroupNorm with one group from per-channel moments in parallel; the LN module
uses it for CUDA input) against the float64 formula and torch's GroupNorm(1), its hand-written backward
by gradcheck, and its edge cases; all on CPU, calling the function directly, and on CUDA (marked cuda)."""
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from gn_det.layers import NormOptions, get_norm
from gn_det.layers.group_norm import _LayerNormFunction


def _ln_formula(x, weight, bias, eps):
    mean = x.mean((1, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean((1, 2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


def _ln(x, ln):
    return _LayerNormFunction.apply(x, ln.weight, ln.bias, ln.eps)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("seed", range(3))
def test_ln_forward_and_backward_match_formula(seed, device):
    g = torch.Generator().manual_seed(seed)
    ln = get_norm("LN", 6, NormOptions()).double()
    with torch.no_grad():
        ln.weight.copy_(torch.randn(6, generator=g, dtype=torch.float64))
        ln.bias.copy_(torch.randn(6, generator=g, dtype=torch.float64))
    x = (torch.randn(3, 6, 5, 7, generator=g, dtype=torch.float64) * 4 + 10).requires_grad_()
    dy = torch.randn(3, 6, 5, 7, generator=g, dtype=torch.float64)
    ln_dev, x_dev = ln.to(device), x.detach().to(device).requires_grad_()
    y = ln_dev(x_dev) if device == "cuda" else _ln(x_dev, ln_dev)  # the module takes this path on CUDA
    (y * dy.to(device)).sum().backward()
    xr = x.detach().clone().requires_grad_()
    w, b = (ln.weight.detach().cpu().clone().requires_grad_(), ln.bias.detach().cpu().clone().requires_grad_())
    yr = _ln_formula(xr, w, b, 1e-5)
    (yr * dy).sum().backward()
    torch.testing.assert_close(y.cpu(), yr, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x_dev.grad.cpu(), xr.grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ln_dev.weight.grad.cpu(), w.grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ln_dev.bias.grad.cpu(), b.grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(y.detach().cpu(), F.group_norm(x, 1, w, b, 1e-5).detach(), rtol=1e-10, atol=1e-10)


def test_ln_backward_passes_gradcheck():
    x = (torch.randn(2, 4, 3, 2, dtype=torch.float64) * 2 + 1).requires_grad_()
    w, b = (torch.randn(4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert gradcheck(lambda x, w, b: _LayerNormFunction.apply(x, w, b, 1e-5), (x, w, b), fast_mode=True)


def test_ln_float32_channels_last_in_place_relu_and_empty_batch():
    ln = get_norm("LN", 8, NormOptions())
    x = torch.randn(2, 8, 6, 6) * 3 + 2
    expected = F.group_norm(x, 1, ln.weight, ln.bias, 1e-5)
    out = _ln(x.to(memory_format=torch.channels_last), ln)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    F.relu_(_ln(x.requires_grad_(), ln))  # the output is not a view: in-place ops after the norm work
    assert ln(torch.zeros(0, 8, 6, 6)).shape == (0, 8, 6, 6)


def test_ln_function_under_bfloat16_keeps_float32_statistics():
    ln = get_norm("LN", 8, NormOptions())
    x = (torch.randn(2, 8, 32, 32) * 10 + 100).bfloat16().requires_grad_()
    y = _ln(x, ln)
    y.float().square().sum().backward()
    expected = F.group_norm(x.detach().double(), 1, ln.weight.double(), ln.bias.double(), 1e-5)
    assert y.dtype == torch.bfloat16 and x.grad.dtype == torch.bfloat16 and ln.weight.grad.dtype == torch.float32
    assert ((y.double() - expected).abs().max() / expected.abs().max()).item() < 2e-2
