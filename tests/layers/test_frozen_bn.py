"""FrozenBN against its affine formula and BatchNorm2d in eval; conversion and freezing of whole models."""
import pytest
import torch
import torchvision
from torch import nn

from gn_det.layers import (
    FrozenBatchNorm2d, SwitchNorm2d, SyncBatchNorm2d, convert_frozen_batchnorm, describe_norms, freeze_norms,
    get_norm, BNOptions,
)


def _random_bn(channels, seed):
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels, eps=1e-3)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(channels, generator=g))
        bn.bias.copy_(torch.randn(channels, generator=g))
        bn.running_mean.copy_(torch.randn(channels, generator=g))
        bn.running_var.copy_(torch.rand(channels, generator=g) + 0.5)
    return bn


@pytest.mark.parametrize("seed", range(3))
def test_frozen_bn_is_its_affine_formula_and_bn_in_eval(seed):
    bn = _random_bn(8, seed).eval()
    frozen = FrozenBatchNorm2d(8, eps=1e-3)
    frozen.load_state_dict(bn.state_dict())  # has num_batches_tracked: ignored
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 10))
    w, b = bn.weight.detach().double(), bn.bias.detach().double()
    m, v = bn.running_mean.double(), bn.running_var.double()
    expected = (x - m[:, None, None]) / torch.sqrt(v[:, None, None] + 1e-3) * w[:, None, None] + b[:, None, None]
    out = frozen.double()(x)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(frozen.float()(x.float()), bn(x.float()), rtol=1e-5, atol=1e-5)


def test_frozen_bn_has_no_parameters_ignores_train_and_passes_input_grad():
    frozen = FrozenBatchNorm2d(4)
    frozen.load_state_dict(_random_bn(4, 0).state_dict())
    assert list(frozen.parameters()) == []
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    y_eval = frozen.eval()(x)
    y_train = frozen.train()(x)
    torch.testing.assert_close(y_train, y_eval, rtol=0, atol=0)
    y_train.backward(torch.ones_like(y_train))
    scale = frozen.weight / torch.sqrt(frozen.running_var + frozen.eps)
    torch.testing.assert_close(x.grad, scale.view(1, 4, 1, 1).expand_as(x))


def test_frozen_bn_loads_checkpoint_without_num_batches_tracked_and_reprs():
    state = {k: v for k, v in _random_bn(4, 1).state_dict().items() if k != "num_batches_tracked"}
    frozen = FrozenBatchNorm2d(4)
    assert frozen.load_state_dict(state, strict=True).missing_keys == []
    assert set(frozen.state_dict()) == {"weight", "bias", "running_mean", "running_var"}
    assert repr(FrozenBatchNorm2d(4, eps=0.0)) == "FrozenBatchNorm2d(4, eps=0.0)"
    assert get_norm("FrozenBN", 3, BNOptions(epsilon=0.0)).eps == 0.0


def test_convert_frozen_batchnorm_copies_statistics_in_a_model_and_on_a_bare_bn():
    bn = _random_bn(6, 2).eval()
    x = torch.randn(2, 6, 4, 4)
    bare = convert_frozen_batchnorm(bn)
    assert isinstance(bare, FrozenBatchNorm2d) and bare.eps == bn.eps
    torch.testing.assert_close(bare(x), bn(x))
    model = nn.Sequential(nn.Conv2d(6, 6, 1), _random_bn(6, 3), nn.Sequential(SyncBatchNorm2d(6), nn.ReLU()))
    ref = model.eval()(x)
    converted = convert_frozen_batchnorm(model)
    assert converted is model
    assert [type(m).__name__ for m in model.modules()].count("FrozenBatchNorm2d") == 2
    torch.testing.assert_close(model.train()(x), ref)


def test_freeze_norms_freezes_statistics_and_affine_of_every_kind():
    model = nn.Sequential(
        nn.BatchNorm2d(4), nn.SyncBatchNorm(4), nn.GroupNorm(2, 4), SwitchNorm2d(4), get_norm("IN", 4), nn.Conv2d(4, 4, 1)
    )
    sn_stats = (model[3].running_mean.clone(), model[3].running_var.clone())
    frozen = freeze_norms(model).train()
    assert frozen is model
    assert isinstance(model[0], FrozenBatchNorm2d) and isinstance(model[1], FrozenBatchNorm2d)
    rows = {r.name: r for r in describe_norms(model)}
    assert {n: (r.type, r.trains) for n, r in rows.items()} == {
        "0": ("FrozenBatchNorm2d", False), "1": ("FrozenBatchNorm2d", False), "2": ("GroupNorm", False),
        "3": ("SwitchNorm2d", False), "4": ("GroupNorm", False),
    }
    assert model[5].weight.requires_grad  # convs are the caller's business
    model(torch.randn(2, 4, 3, 3) * 5 + 3)
    torch.testing.assert_close((model[3].running_mean, model[3].running_var), sn_stats, rtol=0, atol=0)
    assert isinstance(freeze_norms(nn.BatchNorm2d(3)), FrozenBatchNorm2d)


def test_frozen_sn_in_training_equals_sn_in_eval():
    sn = SwitchNorm2d(4)
    with torch.no_grad():
        sn.running_mean.copy_(torch.randn(4))
        sn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 4, 5, 5)
    ref = sn.eval()(x)
    torch.testing.assert_close(freeze_norms(sn).train()(x), ref)


def test_describe_norms_finds_torchvision_frozen_bn():
    model = nn.Sequential(torchvision.ops.FrozenBatchNorm2d(3), nn.BatchNorm2d(3))
    assert describe_norms(model) == [("0", "FrozenBatchNorm2d", False), ("1", "BatchNorm2d", True)]
