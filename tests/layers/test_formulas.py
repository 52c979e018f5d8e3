"""GN, BN, LN, IN (and SyncBN without a group) against textbook formulas, and the re-scaling invariances."""
import pytest
import torch
from torch import nn

from gn_det.layers import BNOptions, GNOptions, NORM_REGISTRY, NormOptions, get_norm


def _randomize_affine(norm, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(norm.weight.shape, generator=g))
        norm.bias.copy_(torch.randn(norm.bias.shape, generator=g))
    return norm


def _group_formula(x, groups, weight, bias, eps):
    n, c, h, w = x.shape
    xg = x.reshape(n, groups, -1)
    mean = xg.mean(-1, keepdim=True)
    var = ((xg - mean) ** 2).mean(-1, keepdim=True)
    y = ((xg - mean) / torch.sqrt(var + eps)).reshape(n, c, h, w)
    return y * weight.view(1, c, 1, 1) + bias.view(1, c, 1, 1)


def _bn_formula(x, weight, bias, eps):
    mean = x.mean((0, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean((0, 2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("name,groups", [("GN", 4), ("LN", 1), ("IN", 16)])
def test_group_family_matches_formula(name, groups, seed):
    opts = GNOptions(num_groups=4)
    norm = _randomize_affine(get_norm(name, 16, opts), seed).double()
    x = torch.randn(3, 16, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 3 + 1
    expected = _group_formula(x, groups, norm.weight.detach(), norm.bias.detach(), 1e-5)
    torch.testing.assert_close(norm(x), expected, rtol=1e-10, atol=1e-10)


def test_gn_dim_per_gp_sets_channels_per_group():
    assert get_norm("GN", 256, GNOptions(dim_per_gp=16)).num_groups == 16
    assert get_norm("GN", 64, GNOptions(num_groups=8)).num_groups == 8


@pytest.mark.parametrize("name", ["BN", "SyncBN"])
def test_bn_matches_formula_and_updates_running_stats_with_unbiased_variance(name):
    norm = _randomize_affine(get_norm(name, 6, BNOptions(momentum=0.25)), 0).double().train()
    x = torch.randn(4, 6, 3, 5, dtype=torch.float64) * 2 - 1
    expected = _bn_formula(x, norm.weight.detach(), norm.bias.detach(), 1e-5)
    torch.testing.assert_close(norm(x), expected, rtol=1e-10, atol=1e-10)
    count = 4 * 3 * 5
    unbiased = x.var((0, 2, 3), unbiased=False) * count / (count - 1)
    torch.testing.assert_close(norm.running_mean, 0.25 * x.mean((0, 2, 3)))
    torch.testing.assert_close(norm.running_var, 0.75 + 0.25 * unbiased)


# Norms computing statistics from the data (FrozenBN is a fixed affine, so it is not scale-invariant).
STAT_NORMS = ["BN", "SyncBN", "GN", "LN", "IN", "SN", "SyncSN", "FRN", "EvoNormB0", "BRN", "SyncBRN"]


def _conv_then_norm(name, conv_weight, x):
    torch.manual_seed(0)
    # act=True: FRN and EvoNorm as norm + activation (without it EvoNorm is its affine alone, not a norm)
    norm = get_norm(name, conv_weight.shape[0], NormOptions(GNOptions(num_groups=2)), act=True).double().train()
    return norm(nn.functional.conv2d(x, conv_weight))


def test_every_registered_name_is_covered_here():
    # FrozenBN is a fixed affine; EvoNorm-S0's x * sigmoid(v * x) is not invariant to the scale of x.
    assert set(STAT_NORMS) | {"FrozenBN", "EvoNormS0"} == set(NORM_REGISTRY.names())


@pytest.mark.parametrize("name", STAT_NORMS)
def test_every_statistics_norm_is_invariant_to_input_scale(name):
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    w = torch.randn(8, 4, 3, 3, dtype=torch.float64)
    y = _conv_then_norm(name, w, x)
    torch.testing.assert_close(_conv_then_norm(name, w, 7.0 * x), y, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,changes", [
    ("BN", False), ("SyncBN", False), ("IN", False), ("GN", True), ("LN", True), ("SN", True),
])
def test_per_channel_weight_scaling(name, changes):
    """BN/IN normalize each channel alone: scaling one channel's incoming weights does nothing.

    GN/LN (and SN, through its LN branch) share statistics across channels, so it changes their
    output, but scaling the whole weight matrix does not.
    """
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    w = torch.randn(8, 4, 3, 3, dtype=torch.float64)
    y = _conv_then_norm(name, w, x)
    w_one = w.clone()
    w_one[3] *= 5.0
    y_one = _conv_then_norm(name, w_one, x)
    if changes:
        assert (y_one - y).abs().max() > 1e-2
    else:
        torch.testing.assert_close(y_one, y, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(_conv_then_norm(name, 5.0 * w, x), y, rtol=1e-6, atol=1e-6)
