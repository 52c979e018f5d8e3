"""SN against an independent float64 implementation of the paper's equations, its gradients, modes."""
import pytest
import torch
from torch.autograd import gradcheck

from gn_det.layers import SNOptions, SwitchNorm2d, get_norm
from gn_det.layers.switch_norm import _Mode, _SwitchNormFunction


def sn_reference(x, weight, bias, mean_logits, var_logits, eps, bn_mean=None, bn_var=None):
    """Luo et al. 2018, eqs. (3)-(6): softmax-weighted IN, LN, BN moments with biased variances."""
    mu_in = x.mean((2, 3), keepdim=True)
    var_in = ((x - mu_in) ** 2).mean((2, 3), keepdim=True)
    mu_ln = x.mean((1, 2, 3), keepdim=True)
    var_ln = ((x - mu_ln) ** 2).mean((1, 2, 3), keepdim=True)
    means, variances = [mu_in, mu_ln], [var_in, var_ln]
    if len(mean_logits) == 3:
        if bn_mean is None:
            bn_mean = x.mean((0, 2, 3), keepdim=True)
            bn_var = ((x - bn_mean) ** 2).mean((0, 2, 3), keepdim=True)
        means.append(bn_mean.view(1, -1, 1, 1))
        variances.append(bn_var.view(1, -1, 1, 1))
    pm = torch.exp(mean_logits) / torch.exp(mean_logits).sum()
    pv = torch.exp(var_logits) / torch.exp(var_logits).sum()
    mean = sum(p * m for p, m in zip(pm, means))
    var = sum(p * v for p, v in zip(pv, variances))
    return (x - mean) / torch.sqrt(var + eps) * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


def _random_sn(use_bn=True, seed=0, channels=6, **kw):
    g = torch.Generator().manual_seed(seed)
    sn = SwitchNorm2d(channels, use_bn=use_bn, **kw)
    with torch.no_grad():
        for p in (sn.weight, sn.bias, sn.mean_weight, sn.var_weight):
            p.copy_(torch.randn(p.shape, generator=g))
        if use_bn:
            sn.running_mean.copy_(torch.randn(channels, generator=g))
            sn.running_var.copy_(torch.rand(channels, generator=g) + 0.5)
    return sn


def _params(sn):
    return [t.detach().double() for t in (sn.weight, sn.bias, sn.mean_weight, sn.var_weight)]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("use_bn", [True, False])
def test_sn_training_matches_paper_equations(use_bn, seed):
    sn = _random_sn(use_bn, seed)
    x = torch.randn(3, 6, 7, 5, generator=torch.Generator().manual_seed(seed + 100)) * 2 + 0.5
    expected = sn_reference(x.double(), *_params(sn), 1e-5)
    torch.testing.assert_close(sn.train()(x).double(), expected, rtol=1e-4, atol=1e-4)


def test_sn_eval_uses_running_stats_and_an_image_is_independent_of_its_batch():
    sn = _random_sn(True, 1).eval()
    x = torch.randn(4, 6, 5, 5, dtype=torch.float64)
    expected = sn_reference(x, *_params(sn), 1e-5, sn.running_mean.double(), sn.running_var.double())
    out = sn.double()(x)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(sn(x[2:3]), out[2:3], rtol=1e-12, atol=1e-12)


def test_sn_running_stats_follow_pytorch_momentum_with_unbiased_variance():
    sn = SwitchNorm2d(4, momentum=0.2).double().train()
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64) * 3 + 2
    sn(x)
    count = 3 * 5 * 6
    torch.testing.assert_close(sn.running_mean, 0.2 * x.mean((0, 2, 3)))
    torch.testing.assert_close(sn.running_var, 0.8 + 0.2 * x.var((0, 2, 3), unbiased=True))
    assert count > 1


@pytest.mark.parametrize("branch", range(3))
def test_one_hot_importance_gives_in_ln_bn_exactly(branch):
    sn = SwitchNorm2d(8).double().train()
    with torch.no_grad():
        sn.mean_weight.copy_(torch.full((3,), -1e4))
        sn.mean_weight[branch] = 0.0
        sn.var_weight.copy_(sn.mean_weight)
    x = torch.randn(2, 8, 4, 5, dtype=torch.float64) * 2 + 1
    reference = [torch.nn.GroupNorm(8, 8), torch.nn.GroupNorm(1, 8), torch.nn.BatchNorm2d(8)][branch].double()
    torch.testing.assert_close(sn(x), reference.train()(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("use_bn,batch_stats", [(True, True), (True, False), (False, False)])
def test_sn_backward_passes_gradcheck(use_bn, batch_stats):
    sn = _random_sn(use_bn, 3, channels=3).double()
    mode = _Mode(use_bn, batch_stats, 1e-5, 0.0, None, sn.running_mean, sn.running_var)
    x = (torch.randn(2, 3, 2, 3, dtype=torch.float64) * 2 + 1).requires_grad_()

    def fn(x, w, b, mw, vw):
        return _SwitchNormFunction.apply(x, w, b, mw, vw, mode)

    assert gradcheck(fn, (x, sn.weight, sn.bias, sn.mean_weight, sn.var_weight))


def test_sn_gradients_match_autograd_through_the_reference():
    sn = _random_sn(True, 4).double().train()
    x = torch.randn(2, 6, 4, 3, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(2, 6, 4, 3, dtype=torch.float64)
    params = [sn.weight, sn.bias, sn.mean_weight, sn.var_weight]
    grads = torch.autograd.grad(sn(x), [x] + params, dy)
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    x_ref = x.detach().clone().requires_grad_()
    ref = torch.autograd.grad(sn_reference(x_ref, *ref_params, 1e-5), [x_ref] + ref_params, dy)
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9)


def test_sn_works_with_one_image_and_with_an_empty_batch():
    sn = _random_sn(True, 5).train()
    one = torch.randn(1, 6, 4, 4, requires_grad=True)
    expected = sn_reference(one.detach().double(), *_params(sn), 1e-5)
    torch.testing.assert_close(sn(one).double(), expected, rtol=1e-4, atol=1e-4)
    stats = (sn.running_mean.clone(), sn.running_var.clone())
    empty = torch.randn(0, 6, 4, 4, requires_grad=True)
    out = sn(empty)
    assert out.shape == (0, 6, 4, 4)
    out.sum().backward()
    assert empty.grad.shape == empty.shape
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in (sn.mean_weight, sn.var_weight))
    torch.testing.assert_close((sn.running_mean, sn.running_var), stats, rtol=0, atol=0)


def test_sn_options_state_dict_round_trip_and_zero_init():
    opts = SNOptions(use_bn=False, momentum=0.3, epsilon=1e-3, freeze_stats=True)
    sn = get_norm("SN", 8, opts, zero_init=True)
    assert (sn.use_bn, sn.momentum, sn.eps, sn.freeze_stats) == (False, 0.3, 1e-3, True)
    assert sn.mean_weight.shape == (2,) and sn.running_mean is None
    assert torch.all(sn.weight == 0)
    full = _random_sn(True, 6, channels=8)
    assert set(full.state_dict()) == {"weight", "bias", "mean_weight", "var_weight", "running_mean", "running_var"}
    copy = SwitchNorm2d(8)
    copy.load_state_dict(full.state_dict())
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(copy.eval()(x), full.eval()(x), rtol=0, atol=0)


def test_frozen_stats_sn_trains_affine_with_running_statistics():
    sn = _random_sn(True, 7, freeze_stats=True).train()
    stats = (sn.running_mean.clone(), sn.running_var.clone())
    x = torch.randn(2, 6, 4, 4)
    expected = sn_reference(x.double(), *_params(sn), 1e-5, stats[0].double(), stats[1].double())
    torch.testing.assert_close(sn(x).double(), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close((sn.running_mean, sn.running_var), stats, rtol=0, atol=0)


def test_sn_statistics_stay_accurate_for_channels_with_a_large_mean():
    sn = SwitchNorm2d(4).train()
    x = torch.randn(2, 4, 32, 32, dtype=torch.float64) + 10.0  # mean 10 std
    expected = sn_reference(x, *_params(sn), 1e-5)
    torch.testing.assert_close(sn(x.float()).double(), expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", ["SN", "SyncSN", "BN", "SyncBN", "FrozenBN", "GN"])
def test_in_place_activation_after_the_norm_trains(name):
    norm = get_norm(name, 32).train()
    x = torch.randn(2, 32, 3, 3, requires_grad=True)
    torch.nn.functional.relu_(norm(x)).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
