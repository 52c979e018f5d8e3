"""get_norm and the registry: empty names, user registration, zero-init, convert_norm, is_norm."""
import logging

import pytest
import torch
from torch import nn

from gn_det.layers import (
    NORM_REGISTRY, FrozenBatchNorm2d, GNOptions, SNOptions, SwitchNorm2d, convert_norm, describe_norms, get_norm, is_norm,
)


@pytest.mark.parametrize("empty", ["", None])
def test_empty_name_means_no_norm(empty):
    assert get_norm(empty, 64) is None


@pytest.mark.parametrize("name", NORM_REGISTRY.names())
def test_every_registered_norm_builds_runs_and_zero_inits(name):
    norm = get_norm(name, 64, zero_init=True)
    assert is_norm(norm)
    x = torch.randn(2, 64, 3, 3)
    y = norm.train()(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, torch.zeros_like(y) + norm.bias.view(1, -1, 1, 1), rtol=0, atol=0)


def test_user_registered_norm_is_usable_by_name_and_recognized():
    class ScaleOnly(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(c))

        def forward(self, x):
            return x * self.weight.view(1, -1, 1, 1)

    NORM_REGISTRY.register("TestScaleOnly")(lambda c, options: ScaleOnly(c))
    try:
        norm = get_norm("TestScaleOnly", 4, key="MODEL.FPN.NORM")
        assert isinstance(norm, ScaleOnly) and is_norm(norm)
    finally:
        NORM_REGISTRY.unregister("TestScaleOnly")
    with pytest.raises(ValueError, match="already registered"):
        NORM_REGISTRY.register("GN")(lambda c, options: None)


def test_convert_norm_replaces_bn_layers_by_fresh_norms_and_reports(caplog):
    model = nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), nn.Sequential(FrozenBatchNorm2d(64)), nn.GroupNorm(32, 64))
    with caplog.at_level(logging.INFO, logger="gn_det.layers.convert"):
        model, replaced = convert_norm(model, "SN", SNOptions(use_bn=False))
    assert [tuple(r) for r in replaced] == [("1", "BatchNorm2d", "SwitchNorm2d", 64),
                                           ("2.0", "FrozenBatchNorm2d", "SwitchNorm2d", 64)]
    assert isinstance(model[1], SwitchNorm2d) and not model[1].use_bn
    assert isinstance(model[3], nn.GroupNorm)  # not BN-like: left alone
    assert "replaced 2 layer(s) by SN" in caplog.text and "1 BatchNorm2d(64) -> SwitchNorm2d" in caplog.text
    bare, rows = convert_norm(nn.BatchNorm2d(8), "GN", GNOptions(num_groups=4))
    assert isinstance(bare, nn.GroupNorm) and bare.num_groups == 4 and rows[0].name == ""
    assert [r.type for r in describe_norms(model)] == ["SwitchNorm2d", "SwitchNorm2d", "GroupNorm"]


def test_convert_norm_keeps_the_old_layers_dtype():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).double()
    model, _ = convert_norm(model, "SN", SNOptions())
    assert {t.dtype for t in model[1].state_dict().values() if t.is_floating_point()} == {torch.float64}
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    assert model(x).dtype == torch.float64
    frozen, _ = convert_norm(nn.Sequential(FrozenBatchNorm2d(8).double()), "GN", GNOptions(num_groups=4))
    assert frozen[0].weight.dtype == torch.float64


def test_is_norm_rejects_other_layers():
    assert not is_norm(nn.Conv2d(3, 3, 1)) and not is_norm(nn.ReLU())
