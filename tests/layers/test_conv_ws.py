"""Convs by name: WS against a float64 formula (forward, input and weight gradients), plain-conv checkpoints,
float32 standardization under autocast, and the registry's errors."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gn_det.layers import CONV_REGISTRY, Conv2d, WSConv2d, get_conv, get_norm, standardize_weight


def ws_reference(x, w, b, eps, **conv_args):
    """Weight Standardization written out (Qiao et al. Eq. 5-6, biased variance, sqrt(var + eps))."""
    n = w[0].numel()
    mean = w.sum(dim=(1, 2, 3), keepdim=True) / n
    var = ((w - mean) ** 2).sum(dim=(1, 2, 3), keepdim=True) / n
    return F.conv2d(x, (w - mean) / torch.sqrt(var + eps), b, **conv_args)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("conv_args", [dict(stride=1, padding=1), dict(stride=2, padding=0, groups=2)])
def test_ws_matches_formula_with_gradients(seed, conv_args):
    g = torch.Generator().manual_seed(seed)
    conv = WSConv2d(4, 6, 3, bias=True, eps=1e-3, **conv_args).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g, dtype=torch.float64) * 0.3 + 0.2)
        conv.bias.copy_(torch.randn(6, generator=g, dtype=torch.float64))
    x = torch.randn(2, 4, 7, 6, generator=g, dtype=torch.float64, requires_grad=True)
    dy = torch.randn_like(conv(x))
    (dx, dw) = torch.autograd.grad((conv(x) * dy).sum(), (x, conv.weight))
    w_ref = conv.weight.detach().clone().requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    y_ref = ws_reference(x_ref, w_ref, conv.bias.detach(), 1e-3, **conv_args)
    dx_ref, dw_ref = torch.autograd.grad((y_ref * dy).sum(), (x_ref, w_ref))
    torch.testing.assert_close(conv(x), y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dw, dw_ref, rtol=1e-10, atol=1e-10)


def test_ws_standardizes_each_output_channel_and_keeps_raw_weights():
    torch.manual_seed(0)
    conv = WSConv2d(3, 5, 3)
    w_hat = conv.conv_weight().double().flatten(1)
    var = conv.weight.detach().double().flatten(1).var(1, unbiased=False)
    torch.testing.assert_close(w_hat.mean(1), torch.zeros(5, dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(w_hat.var(1, unbiased=False), var / (var + 1e-5), rtol=1e-5, atol=0)
    assert conv.eps == 1e-5 and "eps=1e-05" in repr(conv)
    assert not torch.allclose(conv.weight.detach().flatten(1).mean(1), torch.zeros(5))  # stored raw


def test_plain_conv_checkpoint_loads_into_ws():
    """Same parameter names: a plain conv's (and torch's nn.Conv2d's) state dict loads strictly into WS."""
    torch.manual_seed(0)
    source = Conv2d(4, 32, 3, padding=1, norm=get_norm("GN", 32)).double()
    nn.init.uniform_(source.norm.weight, 0.5, 2)
    ws = WSConv2d(4, 32, 3, padding=1, norm=get_norm("GN", 32)).double()
    ws.load_state_dict(source.state_dict(), strict=True)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    expected = F.group_norm(ws_reference(x, source.weight, None, 1e-5, padding=1), 32, source.norm.weight,
                            source.norm.bias, 1e-5)
    torch.testing.assert_close(ws(x), expected, rtol=1e-10, atol=1e-10)
    torch_conv = nn.Conv2d(4, 6, 1).double()
    ws_biased = WSConv2d(4, 6, 1, bias=True).double()
    ws_biased.load_state_dict(torch_conv.state_dict(), strict=True)
    torch.testing.assert_close(ws_biased(x), ws_reference(x, torch_conv.weight, torch_conv.bias, 1e-5),
                               rtol=1e-10, atol=1e-10)


def test_standardization_runs_in_float32_under_autocast():
    """A bfloat16 weight is standardized from its float32 values (not in bfloat16), then cast back."""
    torch.manual_seed(0)
    w = (torch.randn(8, 16, 3, 3) * 0.05 + 3.0).to(torch.bfloat16)  # large mean: bfloat16 sums would lose it
    expected = ws_reference(torch.ones(1, 16, 3, 3, dtype=torch.float64), w.double(), None, 1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = standardize_weight(w, 1e-5)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(F.conv2d(torch.ones(1, 16, 3, 3, dtype=torch.float64), got.double()), expected,
                               rtol=0.02, atol=0.2)
    conv = WSConv2d(16, 8, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(torch.randn(2, 16, 6, 6))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()


def test_conv_registry_names_and_errors():
    assert CONV_REGISTRY.names() == ["", "WS"]
    assert get_conv("") is Conv2d and get_conv(None) is Conv2d and get_conv("WS") is WSConv2d
    with pytest.raises(KeyError) as info:
        get_conv("Ws", key="MODEL.FPN.CONV")
    assert str(info.value) == "Unknown CONV name 'Ws' (from MODEL.FPN.CONV). Registered names: '', WS. Did you mean 'WS'?"
    with pytest.raises(TypeError, match=r"^MODEL.FPN.CONV must be a conv name \(str, '' for a plain conv\), got 1$"):
        get_conv(1, key="MODEL.FPN.CONV")
