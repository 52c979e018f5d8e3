"""Batch Renormalization against the paper's Algorithm 1 in float64, its warm-up schedule, and BN."""
import pytest
import torch
from torch import nn

from gn_det.layers.batch_renorm import BatchRenorm2d

TOL64 = dict(rtol=1e-10, atol=1e-10)
TOL32 = dict(rtol=1e-4, atol=1e-5)  # float32 layer against the float64 formula
EPS = 1e-5


def _c(t):
    return t.view(1, -1, 1, 1)


def brn_formula(x, weight, bias, running_mean, running_var, rmax, dmax, eps=EPS):
    """Ioffe 2017, Algorithm 1 (training): r and d clipped, with stop-gradient."""
    mu = x.mean((0, 2, 3))
    sigma_b = torch.sqrt(((x - _c(mu)) ** 2).mean((0, 2, 3)) + eps)
    sigma = torch.sqrt(running_var + eps)
    r = (sigma_b / sigma).detach().clamp(1 / rmax, rmax)
    d = ((mu - running_mean) / sigma).detach().clamp(-dmax, dmax)
    return ((x - _c(mu)) / _c(sigma_b) * _c(r) + _c(d)) * _c(weight) + _c(bias), r, d


def schedule(step, warmup=5000, rmax_at=40000, dmax_at=25000):
    """The paper's Sec. 4: 1 and 0 for 5000 steps, then linear to rmax 3 at 40k and dmax 5 at 25k."""
    ramp_r = min(max((step - warmup) / (rmax_at - warmup), 0.0), 1.0)
    ramp_d = min(max((step - warmup) / (dmax_at - warmup), 0.0), 1.0)
    return 1.0 + 2.0 * ramp_r, 5.0 * ramp_d


def _layer(seed, **kwargs):
    g = torch.Generator().manual_seed(seed)
    layer = BatchRenorm2d(6, **kwargs)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(6, generator=g))
        layer.bias.copy_(torch.randn(6, generator=g))
        layer.running_mean.copy_(torch.randn(6, generator=g) * 1.5 + 0.5)
        layer.running_var.uniform_(0.2, 8.0, generator=g)
    return layer


def _data(seed, shape=(3, 6, 5, 4)):
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(shape, dtype=torch.float64, generator=g) * 2 + 0.5
    return x, torch.randn(shape, dtype=torch.float64, generator=g)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_training_forward_gradients_and_running_stats_match_algorithm_1(seed, dtype):
    # clip limits tight enough that some channels clip r or d and others do not
    layer = _layer(seed, momentum=0.3, final_rmax=1.5, final_dmax=0.5, warmup_steps=0, rmax_steps=0,
                   dmax_steps=0).to(dtype)
    running_mean, running_var = layer.running_mean.double().clone(), layer.running_var.double().clone()
    x64, dy = _data(seed)
    x = x64.clone().to(dtype).requires_grad_()
    y = layer(x)
    (y * dy.to(dtype)).sum().backward()

    w, b = (p.detach().double().clone().requires_grad_() for p in (layer.weight, layer.bias))
    x_ref = x64.clone().requires_grad_()
    y_ref, r, d = brn_formula(x_ref, w, b, running_mean, running_var, 1.5, 0.5)
    (y_ref * dy).sum().backward()
    assert 0 < ((r == 1.5) | (r == 1 / 1.5)).sum() < 6 and 0 < (d.abs() == 0.5).sum() < 6
    tol = TOL64 if dtype == torch.float64 else TOL32
    torch.testing.assert_close(y.double(), y_ref.detach(), **tol)
    torch.testing.assert_close(x.grad.double(), x_ref.grad, **tol)
    torch.testing.assert_close(layer.weight.grad.double(), w.grad, **tol)
    torch.testing.assert_close(layer.bias.grad.double(), b.grad, **tol)
    count = x64.numel() // 6  # PyTorch's momentum convention, unbiased variance, as BatchNorm2d
    mu, var = x64.mean((0, 2, 3)), x64.var((0, 2, 3), unbiased=True)
    torch.testing.assert_close(layer.running_mean.double(), 0.7 * running_mean + 0.3 * mu, **tol)
    torch.testing.assert_close(layer.running_var.double(), 0.7 * running_var + 0.3 * var, **tol)
    assert int(layer.num_batches_tracked) == 1 and count == 60


@pytest.mark.parametrize("seed", range(2))
def test_eval_uses_the_running_statistics(seed):
    layer = _layer(seed).double().eval()
    x, _ = _data(seed)
    normalized = (x - _c(layer.running_mean)) / torch.sqrt(_c(layer.running_var) + EPS)
    expected = normalized * _c(layer.weight) + _c(layer.bias)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    torch.testing.assert_close(layer(x), expected, **TOL64)
    torch.testing.assert_close(layer(x[:1]), expected[:1], **TOL64)  # one image: same output
    assert all(torch.equal(v, state[k]) for k, v in layer.state_dict().items())  # nothing updated


@pytest.mark.parametrize("step", [0, 4999, 5000, 12000, 22500, 25000, 30000, 40000, 10 ** 6])
def test_warm_up_schedule_of_the_paper(step):
    layer = BatchRenorm2d(4)
    layer.num_batches_tracked.fill_(step)
    rmax, dmax = schedule(step)
    assert layer.rmax == pytest.approx(rmax, rel=1e-6) and layer.dmax == pytest.approx(dmax, rel=1e-6)
    assert (schedule(22500) == (2.0, 4.375)) and schedule(40000) == (3.0, 5.0)  # the formula itself


@pytest.mark.parametrize("step", [5000, 22500, 40000])
def test_a_training_step_clips_with_the_limits_of_its_step_count(step):
    layer = _layer(0, final_rmax=3.0, final_dmax=5.0).double()
    with torch.no_grad():
        layer.running_var.fill_(1e-3)  # sigma_B / sigma far above any rmax: r sits at rmax
        layer.running_mean.fill_(-100.0)  # d sits at dmax
    layer.num_batches_tracked.fill_(step)
    rmax, dmax = layer.rmax, layer.dmax
    x, _ = _data(1)
    expected, r, d = brn_formula(x, layer.weight.detach(), layer.bias.detach(), layer.running_mean.clone(),
                                 layer.running_var.clone(), rmax, dmax)
    torch.testing.assert_close(layer(x), expected, **TOL64)
    assert torch.allclose(r, torch.full_like(r, rmax)) and torch.allclose(d, torch.full_like(d, dmax))
    assert int(layer.num_batches_tracked) == step + 1
    layer.eval()(x)
    assert int(layer.num_batches_tracked) == step + 1  # eval does not count


@pytest.mark.parametrize("make", [
    lambda: BatchRenorm2d(6, momentum=0.2, final_rmax=1.0, final_dmax=0.0),  # no correction at all
    lambda: BatchRenorm2d(6, momentum=0.2),  # the default schedule's warm-up: rmax = 1, dmax = 0
], ids=["rmax1-dmax0", "warm-up"])
def test_without_correction_it_is_batchnorm(make):
    brn, bn = make().double(), nn.BatchNorm2d(6, momentum=0.2).double()
    for step in range(3):
        x, dy = _data(step)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        (brn(x1) * dy).sum().backward()
        (bn(x2) * dy).sum().backward()
        torch.testing.assert_close(x1.grad, x2.grad, **TOL64)
    for a, b in zip(list(brn.parameters()) + list(brn.buffers()), list(bn.parameters()) + list(bn.buffers())):
        torch.testing.assert_close(a, b, **TOL64)
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, **TOL64)
    torch.testing.assert_close(brn.eval()(x), bn.eval()(x), **TOL64)


def test_batchnorm_checkpoints_load_and_the_step_count_resumes_exactly():
    bn = nn.BatchNorm2d(6)
    for step in range(4):
        bn(_data(step)[0].float())
    brn = BatchRenorm2d(6)
    brn.load_state_dict(bn.state_dict(), strict=True)  # BN's keys, the step count included
    assert int(brn.num_batches_tracked) == 4
    x = _data(9)[0].float()
    torch.testing.assert_close(brn.eval()(x), bn.eval()(x), rtol=1e-5, atol=1e-5)

    # resume: a copy restored from a checkpoint continues exactly as the original
    a = _layer(1, warmup_steps=1, rmax_steps=3, dmax_steps=2).train()
    a(_data(1)[0].float())
    b = BatchRenorm2d(6, warmup_steps=1, rmax_steps=3, dmax_steps=2)
    b.load_state_dict(a.state_dict())
    assert (b.rmax, b.dmax) == (a.rmax, a.dmax) == (1.0, 0.0) and int(b.num_batches_tracked) == 1
    x = _data(2)[0].float()
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)
    assert (b.rmax, b.dmax) == (a.rmax, a.dmax) == (2.0, 5.0)


def test_an_empty_batch_changes_nothing_and_gives_zero_gradients():
    layer = _layer(0)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    x = torch.randn(0, 6, 4, 4, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert y.shape == (0, 6, 4, 4)
    assert all(torch.equal(v, state[k]) for k, v in layer.state_dict().items())
    assert torch.equal(layer.weight.grad, torch.zeros(6)) and torch.equal(layer.bias.grad, torch.zeros(6))


def test_paper_defaults_state_keys_and_repr():
    layer = BatchRenorm2d(8)
    assert (layer.eps, layer.momentum) == (1e-5, 0.01)
    assert (layer.final_rmax, layer.final_dmax, layer.warmup_steps, layer.rmax_steps, layer.dmax_steps) == (
        3.0, 5.0, 5000, 40000, 25000)
    assert list(layer.state_dict()) == list(nn.BatchNorm2d(8).state_dict())
    assert repr(layer) == ("BatchRenorm2d(8, eps=1e-05, momentum=0.01, rmax=1, dmax=0, final_rmax=3.0, "
                           "final_dmax=5.0, warmup_steps=5000, rmax_steps=40000, dmax_steps=25000)")


@pytest.mark.parametrize("kwargs,message", [
    (dict(eps=0.0), "BatchRenorm2d needs eps > 0, got 0.0"),
    (dict(momentum=1.5), "BatchRenorm2d momentum should be in (0, 1], got 1.5"),
    (dict(final_rmax=0.5), "BatchRenorm2d needs final_rmax >= 1 and final_dmax >= 0, got 0.5 and 5.0"),
    (dict(warmup_steps=100, rmax_steps=50), "BatchRenorm2d needs 0 <= warmup_steps <= rmax_steps and "
     "warmup_steps <= dmax_steps, got warmup_steps=100, rmax_steps=50, dmax_steps=25000"),
])
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError) as info:
        BatchRenorm2d(4, **kwargs)
    assert str(info.value) == message
