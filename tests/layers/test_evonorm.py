"""EvoNorm-S0 and EvoNorm-B0 against the paper's formulas in float64: forward, gradients, running variance."""
import pytest
import torch

from gn_det.layers.evonorm import EvoNorm2dB0, EvoNorm2dS0
from gn_det.layers.norm import NormChannelsError

TOL64 = dict(rtol=1e-10, atol=1e-10)
TOL32 = dict(rtol=1e-4, atol=1e-5)  # float32 layer against the float64 formula
EPS = 1e-5


def _c(t):
    return t.view(1, -1, 1, 1)


def s0_formula(x, weight, bias, v, groups, eps=EPS):
    """Liu et al. 2020, Table 1: x * sigmoid(v * x) / group_std(x) * gamma + beta (per sample)."""
    n, c, h, w = x.shape
    xg = x.reshape(n, groups, -1)
    var = ((xg - xg.mean(-1, keepdim=True)) ** 2).mean(-1, keepdim=True)
    std = torch.sqrt(var + eps).expand_as(xg).reshape(n, c, h, w)
    return x * torch.sigmoid(_c(v) * x) / std * _c(weight) + _c(bias)


def b0_formula(x, weight, bias, v, batch_var, eps=EPS):
    """Liu et al. 2020, Table 1: x / max(batch_std(x), v * x + instance_std(x)) * gamma + beta."""
    inst_var = ((x - x.mean((2, 3), keepdim=True)) ** 2).mean((2, 3), keepdim=True)
    den = torch.maximum(torch.sqrt(_c(batch_var) + eps), _c(v) * x + torch.sqrt(inst_var + eps))
    return x / den * _c(weight) + _c(bias)


def biased_batch_var(x):
    return ((x - x.mean((0, 2, 3), keepdim=True)) ** 2).mean((0, 2, 3))


def _randomize(layer, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        if getattr(layer, "running_var", None) is not None:
            layer.running_var.uniform_(0.5, 3.0, generator=g)
    return layer


def _data(seed, shape=(3, 8, 5, 4)):
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(shape, dtype=torch.float64, generator=g) * 1.5 + 0.3
    return x, torch.randn(shape, dtype=torch.float64, generator=g)


def _run(layer, x64, dy, dtype):
    x = x64.clone().to(dtype).requires_grad_()
    y = layer(x)
    (y * dy.to(dtype)).sum().backward()
    return y.double(), x.grad.double()


def _reference(layer):
    return {name: p.detach().double().clone().requires_grad_() for name, p in layer.named_parameters()}


def _check(layer, params, y, x_grad, y_ref, x_ref, dy, dtype):
    (y_ref * dy).sum().backward()
    tol = TOL64 if dtype == torch.float64 else TOL32
    torch.testing.assert_close(y, y_ref.detach(), **tol)
    torch.testing.assert_close(x_grad, x_ref.grad, **tol)
    for name, p in layer.named_parameters():
        torch.testing.assert_close(p.grad.double(), params[name].grad, **tol, msg=name)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_s0_forward_and_gradients_match_the_formula(seed, dtype):
    layer = _randomize(EvoNorm2dS0(8, groups=4), seed).to(dtype)
    x64, dy = _data(seed)
    y, x_grad = _run(layer, x64, dy, dtype)
    params = _reference(layer)
    x_ref = x64.clone().requires_grad_()
    y_ref = s0_formula(x_ref, params["weight"], params["bias"], params["v"], groups=4)
    _check(layer, params, y, x_grad, y_ref, x_ref, dy, dtype)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("training", [True, False])
def test_b0_forward_and_gradients_match_the_formula(seed, dtype, training):
    layer = _randomize(EvoNorm2dB0(8, momentum=0.3), seed).to(dtype).train(training)
    running_var = layer.running_var.double().clone()
    x64, dy = _data(seed)
    y, x_grad = _run(layer, x64, dy, dtype)
    params = _reference(layer)
    x_ref = x64.clone().requires_grad_()
    batch_var = biased_batch_var(x_ref) if training else running_var  # eval: the running variance
    y_ref = b0_formula(x_ref, params["weight"], params["bias"], params["v"], batch_var)
    # both sides of the max must occur for the test to cover both gradient paths
    inst_std = torch.sqrt(((x64 - x64.mean((2, 3), keepdim=True)) ** 2).mean((2, 3), keepdim=True) + EPS)
    batch_side = (torch.sqrt(_c(batch_var.detach()) + EPS) > _c(params["v"].detach()) * x64 + inst_std).double().mean()
    assert 0.05 < batch_side < 0.95
    _check(layer, params, y, x_grad, y_ref, x_ref, dy, dtype)


@pytest.mark.parametrize("seed", range(2))
def test_b0_running_variance_follows_pytorch_momentum_with_the_unbiased_variance(seed):
    layer = _randomize(EvoNorm2dB0(8, momentum=0.25), seed).double()
    expected = layer.running_var.clone()
    for step in range(3):
        x64, _ = _data(seed + 10 * step)
        layer(x64)
        count = x64.numel() // 8
        expected = 0.75 * expected + 0.25 * biased_batch_var(x64) * count / (count - 1)
        torch.testing.assert_close(layer.running_var, expected, **TOL64)
    frozen = layer.running_var.clone()
    layer.eval()(x64)
    assert torch.equal(layer.running_var, frozen)  # eval reads it, never updates it


def test_s0_is_batch_free_and_the_same_in_train_and_eval():
    layer = _randomize(EvoNorm2dS0(8, groups=2), 0)
    x = torch.randn(4, 8, 6, 5)
    y = layer.train()(x)
    torch.testing.assert_close(layer.eval()(x), y, rtol=0, atol=0)
    torch.testing.assert_close(layer.train()(x[1:2]), y[1:2], rtol=0, atol=0)
    assert layer.train()(torch.randn(1, 8, 1, 1)).shape == (1, 8, 1, 1)  # one value per channel is fine


def test_b0_uses_the_batch_in_training_and_the_running_variance_in_eval():
    layer = _randomize(EvoNorm2dB0(8), 0)
    x = torch.randn(4, 8, 6, 5) * 3
    y_train = layer.train()(x)
    assert not torch.allclose(layer.train()(x[:1]), y_train[:1])  # the rest of the batch matters
    layer.eval()
    torch.testing.assert_close(layer(x[:1]), layer(x)[:1], rtol=0, atol=0)  # in eval it does not


@pytest.mark.parametrize("cls", [EvoNorm2dS0, EvoNorm2dB0])
def test_without_activation_the_layer_is_the_affine_alone(cls):
    """The authors' code (nonlinearity=False) and the paper's appendix: ``x * gamma + beta``."""
    layer = _randomize(cls(8, apply_act=False), 3).double()  # S0: 32 groups do not matter here
    assert list(layer.state_dict()) == ["weight", "bias"]
    x = torch.randn(1, 8, 1, 1, dtype=torch.float64)  # a single value per channel is fine even for B0
    torch.testing.assert_close(layer.train()(x), x * _c(layer.weight) + _c(layer.bias), **TOL64)


def test_paper_defaults_state_keys_and_repr():
    s0, b0 = EvoNorm2dS0(64), EvoNorm2dB0(64)
    assert (s0.groups, s0.eps, b0.eps, b0.momentum) == (32, 1e-5, 1e-5, 0.1)
    for layer in (s0, b0):
        assert torch.equal(layer.v, torch.ones(64)) and torch.equal(layer.weight, torch.ones(64))
        assert torch.equal(layer.bias, torch.zeros(64))
    assert torch.equal(b0.running_var, torch.ones(64))
    assert list(s0.state_dict()) == ["weight", "bias", "v"]
    assert list(b0.state_dict()) == ["weight", "bias", "v", "running_var"]
    assert repr(s0) == "EvoNorm2dS0(64, groups=32, eps=1e-05, apply_act=True)"
    assert repr(b0) == "EvoNorm2dB0(64, eps=1e-05, momentum=0.1, apply_act=True)"


def test_s0_group_count_must_divide_the_channels():
    with pytest.raises(NormChannelsError) as info:
        EvoNorm2dS0(250)
    assert str(info.value) == "norm needs channels divisible by groups=32, got 250; set groups to a divisor of 250"
    assert info.value.requirement == "channels divisible by groups=32, got 250"  # get_norm prefixes the key


@pytest.mark.parametrize("make,message", [
    (lambda: EvoNorm2dS0(8, groups=2, eps=0), "EvoNorm2dS0 needs eps > 0 (the paper uses 1e-05), got 0"),
    (lambda: EvoNorm2dB0(8, eps=-1e-5), "EvoNorm2dB0 needs eps > 0 (the paper uses 1e-05), got -1e-05"),
    (lambda: EvoNorm2dB0(8, momentum=0), "EvoNorm2dB0 momentum should be in (0, 1], got 0"),
])
def test_bad_hyperparameters(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value) == message
