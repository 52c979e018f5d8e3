"""Every registered norm under mixed precision: low-precision input, float32 statistics, the input's
dtype out, gradients close to a float64 computation on the same (rounded) input.

What torch's own norms do (the behaviour we match or state): under CPU autocast neither batch_norm nor
group_norm/layer_norm is on an autocast list, so BatchNorm2d and GroupNorm return the input's dtype
(checked in test_torch_norms_under_cpu_autocast_keep_the_input_dtype). Under CUDA autocast batch_norm is
on no list (cuDNN takes a float16/bfloat16 input with float32 parameters and returns the input's dtype),
while group_norm and layer_norm are on the float32 list (torch's AMP docs, "CUDA Ops that can autocast to
float32"): torch's GroupNorm returns float32 there. gn_det's GN/LN/IN keep the input's dtype on both
devices (gn_det.layers.group_norm says why), so every registered norm returns the input's dtype.

Tolerances: max |ours - float64| / max |float64| per tensor (output, input gradient, parameter
gradients) at most 2e-2 for bfloat16 and 1e-2 for float16; running statistics 1e-4. Measured with
these inputs on CPU (torch 2.14): bfloat16 autocast at most 8.0e-3 (GN input gradient; outputs at most
4.6e-3), float16 at most 2.1e-3 (GN weight gradient on the large-activation input), running
statistics at most 1.3e-5 (SN on the large float16 input).
"""
import copy

import pytest
import torch

from gn_det.layers import NORM_REGISTRY, EvoNormOptions, GNOptions, NormOptions, get_norm

TOL = {torch.bfloat16: 2e-2, torch.float16: 1e-2}
STATS_TOL = 1e-4
OPTIONS = NormOptions(GNOptions(num_groups=4), EvoNormOptions(num_groups=4))
CHANNELS = 16

CASES = [  # (device, dtype, autocast): CPU autocast is bfloat16; a float16 input on CPU comes without it
    ("cpu", torch.bfloat16, True),
    ("cpu", torch.float16, False),
    pytest.param("cuda", torch.float16, True, marks=pytest.mark.cuda),
    pytest.param("cuda", torch.bfloat16, True, marks=pytest.mark.cuda),
]
# Every registered norm; those that include the activation also as norm + activation ("<name>:act", built
# with act=True as where a ReLU follows: FRN+TLU, EvoNorm); without it they are FRN alone / EvoNorm's affine.
NAMES = NORM_REGISTRY.names() + [f"{e.name}:act" for e in NORM_REGISTRY.entries()
                                 if e.traits_for(e.default_options()).includes_activation]


def _randomized(name, seed):
    g = torch.Generator().manual_seed(seed)
    norm = get_norm(name.split(":")[0], CHANNELS, OPTIONS, act=name.endswith(":act")).train()
    with torch.no_grad():
        for pname, p in norm.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if pname == "weight" else 0.0))
        for bname, b in norm.named_buffers():
            if bname.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g))
            elif bname.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return norm


def _rel_err(ours, ref):
    return ((ours.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def _run(name, device, dtype, autocast, size=9, scale=3.0, shift=1.0, seed=0):
    """Ours on ``device`` in ``dtype`` against a float64 CPU copy on the same rounded input."""
    norm = _randomized(name, seed)
    ref = copy.deepcopy(norm).double()
    norm = norm.to(device)
    g = torch.Generator().manual_seed(seed + 1)
    x = (torch.randn(3, CHANNELS, size, size, generator=g) * scale + shift).to(dtype)
    dy = torch.randn(3, CHANNELS, size, size, generator=g)
    xl = x.to(device, copy=True).requires_grad_()
    with torch.autocast(device, dtype=dtype, enabled=autocast):
        y = norm(xl)
    (y.float() * dy.to(device)).sum().backward()
    xr = x.double().requires_grad_()
    yr = ref(xr)
    (yr * dy.double()).sum().backward()
    return norm, ref, y, xl, yr.detach(), xr


@pytest.mark.parametrize("device, dtype, autocast", CASES)
@pytest.mark.parametrize("name", NAMES)
def test_norm_under_mixed_precision_matches_float64(name, device, dtype, autocast):
    norm, ref, y, xl, yr, xr = _run(name, device, dtype, autocast)
    tol = TOL[dtype]
    assert y.dtype == dtype and xl.grad.dtype == dtype
    assert _rel_err(y.cpu(), yr) <= tol
    assert _rel_err(xl.grad.cpu(), xr.grad) <= tol
    for (pname, p), q in zip(norm.named_parameters(), ref.parameters()):
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32, pname  # SN's importance weights too
        assert _rel_err(p.grad.cpu(), q.grad) <= tol, pname
    for (bname, b), r in zip(norm.named_buffers(), ref.buffers()):
        if b.is_floating_point():
            assert b.dtype == torch.float32, bname  # running statistics stay float32
            assert _rel_err(b.cpu(), r) <= STATS_TOL, bname


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("name", NAMES)
def test_float16_statistics_do_not_overflow_on_large_activations(name, device):
    """Mean 100, std 10 over 64x64: a float16 sum of squares (4e7) would overflow (max 65504); float32 does not."""
    norm, ref, y, xl, yr, xr = _run(name, device, torch.float16, False, size=64, scale=10.0, shift=100.0)
    assert torch.isfinite(y).all() and torch.isfinite(xl.grad).all()
    assert _rel_err(y.cpu(), yr) <= TOL[torch.float16]
    assert _rel_err(xl.grad.cpu(), xr.grad) <= TOL[torch.float16]


def test_torch_norms_under_cpu_autocast_keep_the_input_dtype():
    """The fact the module docstring relies on: CPU autocast casts neither batch_norm nor group_norm."""
    x = torch.randn(2, 8, 5, 5).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.nn.BatchNorm2d(8)(x).dtype == torch.bfloat16
        assert torch.nn.GroupNorm(2, 8)(x).dtype == torch.bfloat16
        assert torch.nn.Conv2d(8, 8, 1)(x.float()).dtype == torch.bfloat16  # autocast is really on


@pytest.mark.cuda
def test_torch_norms_under_cuda_autocast():
    """On CUDA torch's GroupNorm upcasts to float32 under autocast, BatchNorm keeps float16; gn_det's GN keeps it."""
    x = torch.randn(2, 8, 5, 5, device="cuda").half()
    with torch.autocast("cuda", dtype=torch.float16):
        assert torch.nn.BatchNorm2d(8).cuda()(x).dtype == torch.float16
        assert torch.nn.GroupNorm(2, 8).cuda()(x).dtype == torch.float32
        assert get_norm("GN", 8, NormOptions(GNOptions(num_groups=2))).cuda()(x).dtype == torch.float16
