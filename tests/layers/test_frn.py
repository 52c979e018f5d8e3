"""FRN + TLU against the paper's formula in float64: forward, input and parameter gradients, eps options."""
import pytest
import torch

from gn_det.layers.frn import FilterResponseNorm2d

TOL64 = dict(rtol=1e-10, atol=1e-10)
TOL32 = dict(rtol=1e-4, atol=1e-5)  # float32 layer against the float64 formula


def frn_formula(x, weight, bias, tau, eps):
    """Singh & Krishnan 2019, Eq. (1)-(3): max(gamma * x / sqrt(mean_hw(x^2) + eps) + beta, tau)."""
    nu2 = (x * x).mean(dim=(2, 3), keepdim=True)
    y = weight.view(1, -1, 1, 1) * x / torch.sqrt(nu2 + eps) + bias.view(1, -1, 1, 1)
    return y if tau is None else torch.maximum(y, tau.view(1, -1, 1, 1))


def _layer(seed, apply_act, learn_eps, dtype, eps=1e-6):
    g = torch.Generator().manual_seed(seed)
    layer = FilterResponseNorm2d(6, eps=eps, learn_eps=learn_eps, apply_act=apply_act)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        if learn_eps:
            layer.eps_learned.fill_(-0.03)  # negative on purpose: the paper uses |eps_learned|
    return layer.to(dtype)


def _reference_params(layer):
    """Float64 leaf copies of the layer's parameters, and the eps the formula sees."""
    params = {name: p.detach().double().clone().requires_grad_() for name, p in layer.named_parameters()}
    eps = layer.eps + params["eps_learned"].abs() if "eps_learned" in params else layer.eps
    return params, eps


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("apply_act,learn_eps", [(True, False), (False, False), (True, True), (False, True)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_and_all_gradients_match_the_formula(seed, apply_act, learn_eps, dtype):
    layer = _layer(seed, apply_act, learn_eps, dtype)
    g = torch.Generator().manual_seed(100 + seed)
    x64 = torch.randn(3, 6, 5, 4, dtype=torch.float64, generator=g) * 2 + 0.5
    dy = torch.randn(3, 6, 5, 4, dtype=torch.float64, generator=g)
    x = x64.clone().to(dtype).requires_grad_()
    y = layer(x)
    (y * dy.to(dtype)).sum().backward()

    params, eps = _reference_params(layer)
    x_ref = x64.clone().requires_grad_()
    y_ref = frn_formula(x_ref, params["weight"], params["bias"], params.get("tau"), eps)
    (y_ref * dy).sum().backward()
    tol = TOL64 if dtype == torch.float64 else TOL32
    if apply_act:  # the TLU must clip somewhere and pass elsewhere for the test to mean something
        clipped = (y_ref == params["tau"].view(1, -1, 1, 1)).double().mean()
        assert 0.05 < clipped < 0.95
    torch.testing.assert_close(y.double(), y_ref.detach(), **tol)
    torch.testing.assert_close(x.grad.double(), x_ref.grad, **tol)
    for name, p in layer.named_parameters():
        torch.testing.assert_close(p.grad.double(), params[name].grad, **tol, msg=name)


def test_paper_defaults_and_repr():
    layer = FilterResponseNorm2d(8)
    assert layer.eps == 1e-6  # the paper's FRNLayer(..., eps=1e-6)
    assert torch.equal(layer.weight, torch.ones(8)) and torch.equal(layer.bias, torch.zeros(8))
    assert torch.equal(layer.tau, torch.zeros(8))  # the TLU starts as a ReLU
    assert list(layer.state_dict()) == ["weight", "bias", "tau"]
    no_tlu = FilterResponseNorm2d(8, apply_act=False, learn_eps=True)
    assert list(no_tlu.state_dict()) == ["weight", "bias", "eps_learned"]
    assert repr(layer) == "FilterResponseNorm2d(8, eps=1e-06, learn_eps=False, apply_act=True)"


def test_learned_eps_is_fixed_plus_absolute_learned():
    layer = FilterResponseNorm2d(2, eps=1e-3, learn_eps=True, apply_act=False).double()
    assert layer.eps_learned.item() == pytest.approx(1e-4)  # starts nonzero: |.| has a gradient there
    with torch.no_grad():
        layer.eps_learned.fill_(-0.5)
    x = torch.randn(1, 2, 1, 1, dtype=torch.float64)  # 1x1 maps: eps decides the output
    expected = x / torch.sqrt(x * x + 1e-3 + 0.5)
    torch.testing.assert_close(layer(x), expected, **TOL64)


@pytest.mark.parametrize("seed", range(2))
def test_train_and_eval_agree_and_samples_are_independent(seed):
    layer = _layer(seed, True, False, torch.float32)
    x = torch.randn(4, 6, 7, 3, generator=torch.Generator().manual_seed(seed))
    y_train = layer.train()(x)
    torch.testing.assert_close(layer.eval()(x), y_train, rtol=0, atol=0)
    torch.testing.assert_close(layer.train()(x[2:3]), y_train[2:3], rtol=0, atol=0)  # batch-free


def test_an_all_zero_channel_stays_finite():
    layer = FilterResponseNorm2d(3)
    x = torch.randn(2, 3, 4, 4)
    x[:, 1] = 0
    x.requires_grad_()
    layer(x).sum().backward()
    assert torch.isfinite(x.grad).all() and all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_eps_must_be_positive():
    with pytest.raises(ValueError, match=r"^FilterResponseNorm2d needs eps > 0 \(the paper uses 1e-06\), got 0$"):
        FilterResponseNorm2d(4, eps=0)
