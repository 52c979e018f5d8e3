"""GN/LN/IN on float16/bfloat16 input (autocast) give float32 affine gradients that do not overflow.

The affine gradients are sums over N*H*W of the output gradient, which under the GradScaler carries a
factor 2^16: in float16 (torch's kernel returns them in the weight's dtype, cast to the input's) they
overflow 65504 and the scaler skips the step (issue 21, defect 7). Checked against float64 on CPU;
on CUDA (marked ``cuda``) a GN network trained with the scaler at a detection feature size skips no step.
"""
import pytest
import torch
import torch.nn.functional as F

from gn_det.layers import GNOptions, NormOptions, get_norm

OPTIONS = NormOptions(GNOptions(num_groups=4))


def _rel(ours, ref):
    return ((ours.double() - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("name,groups", [("GN", 4), ("LN", 1), ("IN", 16)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_affine_gradients_are_float32_and_match_float64(name, groups, dtype):
    torch.manual_seed(0)
    norm = get_norm(name, 16, OPTIONS)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1.0, 1.0)
    x = (torch.randn(2, 16, 64, 64) * 3 + 1).to(dtype).requires_grad_()
    y = norm(x)
    assert y.dtype == dtype
    # An output gradient as the GradScaler makes it: |sum(dy)| per channel about 1.9e5 > float16's 65504.
    dy = (torch.randn(y.shape) * 1000 + 20).to(dtype)
    y.backward(dy)
    xd = x.detach().double().requires_grad_()
    w = norm.weight.detach().double().requires_grad_()
    b = norm.bias.detach().double().requires_grad_()
    F.group_norm(xd, groups, w, b, norm.eps).backward(dy.double())
    assert b.grad.abs().max() > 65504  # the case that overflowed
    assert norm.weight.grad.dtype == norm.bias.grad.dtype == torch.float32
    assert torch.isfinite(norm.weight.grad).all() and torch.isfinite(norm.bias.grad).all()
    assert _rel(norm.weight.grad, w.grad) < 2e-3
    assert _rel(norm.bias.grad, b.grad) < 1e-5
    assert _rel(x.grad, xd.grad) < (2e-2 if dtype == torch.bfloat16 else 5e-3)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["GN", "LN", "IN"])
def test_gradscaler_skips_no_step_with_gn_at_detection_size(name):
    """A conv + norm stack at an FPN P2 size of an 800x1333 image, trained with float16 autocast and the
    GradScaler at its initial scale 2^16: every step's gradients are finite (no step skipped)."""
    torch.manual_seed(0)
    dev = torch.device("cuda")
    layers = []
    for _ in range(3):
        layers += [torch.nn.Conv2d(64, 64, 3, padding=1, bias=False), get_norm(name, 64, NormOptions(GNOptions(32))),
                   torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 16, growth_interval=10 ** 6)
    x = torch.randn(2, 64, 200, 336, device=dev)
    skipped = 0
    for _ in range(6):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            out = model(x)
        loss = out.float().square().mean()
        scale = scaler.get_scale()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        skipped += int(scaler.get_scale() < scale)
    assert skipped == 0, f"{skipped} of 6 steps skipped (float16 overflow in the gradients)"
