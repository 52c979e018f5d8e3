"""What FRN, EvoNorm-S0/B0 and BRN share: float32 statistics under autocast, input checks, in-place safety.

The formulas of each norm are checked in test_frn.py, test_evonorm.py and test_batch_renorm.py.
"""
import pytest
import torch

from gn_det.layers.batch_renorm import BatchRenorm2d, SyncBatchRenorm2d
from gn_det.layers.evonorm import EvoNorm2dB0, EvoNorm2dS0
from gn_det.layers.frn import FilterResponseNorm2d

MAKERS = {  # BRN's warm-up skipped so that r and d correct for real
    "FilterResponseNorm2d": lambda c: FilterResponseNorm2d(c, learn_eps=True),
    "EvoNorm2dS0": lambda c: EvoNorm2dS0(c, groups=4),
    "EvoNorm2dB0": lambda c: EvoNorm2dB0(c),
    "BatchRenorm2d": lambda c: BatchRenorm2d(c, final_rmax=1.2, final_dmax=0.1, warmup_steps=0, rmax_steps=0,
                                             dmax_steps=0),
    "SyncBatchRenorm2d": lambda c: SyncBatchRenorm2d(c),
}
BATCH_DEPENDENT = ["EvoNorm2dB0", "BatchRenorm2d", "SyncBatchRenorm2d"]


def _build(name, seed=0, channels=8):
    torch.manual_seed(seed)
    layer = MAKERS[name](channels)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn(p.shape) * 0.3)
        if getattr(layer, "running_mean", None) is not None:
            layer.running_mean.normal_()
        if getattr(layer, "running_var", None) is not None:
            layer.running_var.uniform_(0.5, 2.0)
    return layer


def _step(layer, x, dy):
    x = x.clone().requires_grad_()
    y = layer(x)
    (y.float() * dy).sum().backward()
    return y, x.grad


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", list(MAKERS))
def test_bf16_autocast_computes_in_float32_and_returns_bf16(name, training, seed):
    """Tolerance 0: under autocast the layer equals its float32 self on the same (bf16) values, cast to bf16."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(2, 8, 6, 5, generator=g) * 3 + 1).bfloat16()
    dy = torch.randn(2, 8, 6, 5, generator=g).bfloat16().float()
    low, ref = _build(name, seed).train(training), _build(name, seed).train(training)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, x_grad = _step(low, x, dy)
    y_ref, x_grad_ref = _step(ref, x.float(), dy)
    assert y.dtype == x_grad.dtype == torch.bfloat16
    assert torch.equal(y, y_ref.bfloat16()) and torch.equal(x_grad, x_grad_ref.bfloat16())
    for (key, a), b in zip(low.state_dict().items(), ref.state_dict().values()):
        assert a.dtype == b.dtype and torch.equal(a, b), key  # running statistics: float32, equal
    for p, q in zip(low.parameters(), ref.parameters()):
        assert p.grad.dtype == torch.float32 and torch.equal(p.grad, q.grad)
    # and the float32 result is within bf16 rounding of the output on the unrounded input's neighbours
    torch.testing.assert_close(y.float(), y_ref, rtol=2 ** -8, atol=0.0)


@pytest.mark.parametrize("name", list(MAKERS))
def test_float32_under_autocast_is_untouched(name):
    x = torch.randn(2, 8, 4, 4)
    a, b = _build(name), _build(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = a(x)
    assert y.dtype == torch.float32 and torch.equal(y, b(x))


@pytest.mark.parametrize("name", list(MAKERS))
def test_in_place_ops_on_the_output_keep_backward_valid(name):
    """Nothing saves its output for backward: residual blocks do ``out += shortcut; relu_(out)``."""
    layer, ref = _build(name), _build(name)
    x = torch.randn(2, 8, 5, 5)
    y, x_grad = _step(ref, x, torch.ones_like(x))
    x = x.clone().requires_grad_()
    out = layer(x)
    out += 1.0
    out.sum().backward()
    torch.testing.assert_close(x.grad, x_grad, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("shape", [(2, 8, 5), (2, 8, 3, 3, 3)])
def test_wrong_tensor_rank(name, shape):
    with pytest.raises(ValueError) as info:
        _build(name)(torch.randn(shape))
    assert str(info.value) == f"{name} expects a 4D (N, C, H, W) input, got a {len(shape)}D input of shape {shape}"


@pytest.mark.parametrize("name", list(MAKERS))
def test_wrong_channel_count(name):
    with pytest.raises(ValueError) as info:
        _build(name)(torch.randn(2, 4, 3, 3))
    assert str(info.value) == f"{name} was built for 8 channels, got an input of shape (2, 4, 3, 3)"


@pytest.mark.parametrize("name", BATCH_DEPENDENT)
def test_batch_statistics_refuse_one_value_per_channel_in_training_only(name):
    layer = _build(name)
    with pytest.raises(ValueError) as info:
        layer.train()(torch.randn(1, 8, 1, 1))
    assert str(info.value).startswith(
        f"{name} in training needs more than 1 value per channel for its batch statistics, "
        "got an input of shape (1, 8, 1, 1); at batch size 1 use ")
    assert layer.eval()(torch.randn(1, 8, 1, 1)).shape == (1, 8, 1, 1)


@pytest.mark.parametrize("name", [n for n in MAKERS if n not in BATCH_DEPENDENT])
def test_batch_free_norms_take_one_value_per_channel(name):
    assert _build(name).train()(torch.randn(1, 8, 1, 1)).shape == (1, 8, 1, 1)


@pytest.mark.parametrize("name", list(MAKERS))
def test_an_empty_batch_runs_forward_and_backward(name):
    """A mask head without RoIs feeds 0 images; gradients are zero, never NaN."""
    layer = _build(name)
    x = torch.randn(0, 8, 4, 4, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad.shape == x.shape
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in layer.parameters())


@pytest.mark.cuda  # selected by tools/gpu_check.sh, and exempt from the conftest's CPU patch (issue 21)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(MAKERS))
def test_cuda_float32_and_autocast_match_cpu(name, dtype):
    x = torch.randn(2, 8, 6, 5) * 2 + 1
    dy = torch.randn(2, 8, 6, 5)
    cpu, gpu = _build(name), _build(name).cuda()
    y_cpu, g_cpu = _step(cpu, x, dy)
    y_gpu, g_gpu = _step(gpu, x.cuda(), dy.cuda())
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g_gpu.cpu(), g_cpu, rtol=1e-4, atol=1e-5)
    low = _build(name).cuda()
    with torch.autocast("cuda", dtype=dtype):
        assert torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") == dtype  # really on
        y_low, _ = _step(low, x.cuda().to(dtype), dy.cuda())
    assert y_low.dtype == dtype
    for key, value in low.state_dict().items():
        assert value.dtype in (torch.float32, torch.long), key
    torch.testing.assert_close(y_low.float().cpu(), y_cpu, rtol=2e-2, atol=2e-2)
