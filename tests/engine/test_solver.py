"""Optimizer groups, LR schedule and gradient clipping against formulas."""
import math

import pytest
import torch
from torch import nn

from gn_det.config import get_cfg
from gn_det.engine.solver import (WarmupMultiStep, build_gradient_clipper, build_lr_scheduler, build_optimizer)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.gn = nn.GroupNorm(2, 8)
        self.fc = nn.Linear(8, 4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def _cfg(**solver):
    cfg = get_cfg()
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def test_param_groups_weight_decay_and_bias_lr():
    net = Net()
    cfg = _cfg(BASE_LR=0.1, WEIGHT_DECAY=1e-4, WEIGHT_DECAY_NORM=0.0, BIAS_LR_FACTOR=2.0)
    opt = build_optimizer(cfg, net)
    where = {id(p): g for g in opt.param_groups for p in g["params"]}
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert len(where) == len(trainable) == sum(len(g["params"]) for g in opt.param_groups)
    expect = {
        net.conv.weight: (0.1, 1e-4), net.conv.bias: (0.2, 1e-4),
        net.bn.weight: (0.1, 0.0), net.bn.bias: (0.2, 0.0),
        net.gn.weight: (0.1, 0.0), net.gn.bias: (0.2, 0.0),
        net.fc.weight: (0.1, 1e-4), net.fc.bias: (0.2, 1e-4),
    }
    for p, (lr, wd) in expect.items():
        assert (where[id(p)]["lr"], where[id(p)]["weight_decay"]) == pytest.approx((lr, wd))
    assert id(net.frozen.weight) not in where
    assert opt.defaults["momentum"] == 0.9


def test_sn_importance_weights_count_as_norm_params():
    """A norm module with extra parameters (SN's mean/var importance weights) gets WEIGHT_DECAY_NORM."""
    from gn_det.layers import get_norm

    sn = get_norm("SN", 8)
    assert any("weight" in n and n not in ("weight",) for n, _ in sn.named_parameters())  # importance weights
    net = nn.Sequential(nn.Conv2d(3, 8, 1), sn)
    opt = build_optimizer(_cfg(WEIGHT_DECAY=1e-4, WEIGHT_DECAY_NORM=0.0), net)
    wd = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in sn.named_parameters():
        assert wd[id(p)] == 0.0, name
    assert wd[id(net[0].weight)] == 1e-4


@pytest.mark.parametrize("method", ["linear", "constant"])
def test_warmup_multistep_formula(method):
    cfg = _cfg(BASE_LR=0.02, WARMUP_ITERS=10, WARMUP_FACTOR=0.001, WARMUP_METHOD=method, STEPS=(20, 30),
               GAMMA=0.1, MAX_ITER=40)
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.02, momentum=0.9)
    sched = build_lr_scheduler(cfg, opt)
    for it in range(40):
        if it < 10:
            f = 0.001 if method == "constant" else 0.001 + (1 - 0.001) * it / 10
        else:
            f = 1.0
        f *= 0.1 ** ((it >= 20) + (it >= 30))
        assert opt.param_groups[0]["lr"] == pytest.approx(0.02 * f, rel=1e-12), it
        opt.step()
        sched.step()


@pytest.mark.parametrize("bad, msg", [
    (dict(STEPS=(30, 20)), r"SOLVER.STEPS should be increasing, got \(30, 20\)"),
    (dict(WARMUP_METHOD="cosine"), r"SOLVER.WARMUP_METHOD should be 'linear' or 'constant', got 'cosine'"),
])
def test_schedule_bad_input(bad, msg):
    cfg = _cfg(**{"MAX_ITER": 40, "STEPS": (20,), **bad})
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match=msg):
        build_lr_scheduler(cfg, opt)


def test_steps_past_max_iter_warn(caplog):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    build_lr_scheduler(_cfg(STEPS=(20, 50), MAX_ITER=40), opt)
    assert "SOLVER.STEPS (20, 50): [50] at or past SOLVER.MAX_ITER=40 never take effect" in caplog.text


def test_scheduler_state_is_weights_only_loadable(tmp_path):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = build_lr_scheduler(_cfg(MAX_ITER=40, STEPS=(20,)), opt)
    torch.save(sched.state_dict(), tmp_path / "s.pth")
    state = torch.load(tmp_path / "s.pth", weights_only=True)
    assert state["lr_lambdas"][0]["steps"] == [20]


@pytest.mark.parametrize("clip_type", ["norm", "value"])
def test_gradient_clipping(clip_type):
    cfg = get_cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.5
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([3.0, -4.0, 0.1]), torch.tensor([0.2, 12.0])
    build_gradient_clipper(cfg)([a, b])
    if clip_type == "norm":
        total = math.sqrt(sum(float((p.grad ** 2).sum()) for p in (a, b)))
        assert total == pytest.approx(0.5, rel=1e-5)
        assert float(a.grad[0] / a.grad[1]) == pytest.approx(-0.75)
    else:
        assert a.grad.tolist() == pytest.approx([0.5, -0.5, 0.1]) and b.grad.tolist() == pytest.approx([0.2, 0.5])
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "bogus"
    with pytest.raises(ValueError, match="SOLVER.CLIP_GRADIENTS.CLIP_TYPE should be 'norm' or 'value', got 'bogus'"):
        build_gradient_clipper(cfg)


def test_warmup_multistep_is_plain_data():
    fn = WarmupMultiStep([5], 0.5, 0.1, 2)
    assert fn(0) == pytest.approx(0.1) and fn(1) == pytest.approx(0.55) and fn(5) == pytest.approx(0.5)


@pytest.mark.parametrize("method", ["linear", "constant"])
def test_warmup_cosine_formula(method):
    """detectron2's WarmupCosineLR: lr(it) = end + (base - end) (1 + cos(pi it / MAX_ITER)) / 2, with a linear
    warm-up from WARMUP_FACTOR * base to that value at WARMUP_ITERS (or constant at WARMUP_FACTOR * base)."""
    base, end, max_iter, warm = 0.04, 0.004, 50, 8
    cfg = _cfg(LR_SCHEDULER_NAME="WarmupCosineLR", BASE_LR=base, BASE_LR_END=end, MAX_ITER=max_iter,
               WARMUP_ITERS=warm, WARMUP_FACTOR=0.01, WARMUP_METHOD=method, STEPS=(10,))
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    sched = build_lr_scheduler(cfg, opt)

    def cosine(it):
        return end + (base - end) * (1 + math.cos(math.pi * it / max_iter)) / 2
    for it in range(max_iter):
        if it < warm:
            want = 0.01 * base if method == "constant" else 0.01 * base + (cosine(warm) - 0.01 * base) * it / warm
        else:
            want = cosine(it)
        assert opt.param_groups[0]["lr"] == pytest.approx(want, rel=1e-12), it
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(end, rel=1e-12)  # MAX_ITER: the cosine's end


def test_lr_scheduler_name_and_end_checked():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match=r"SOLVER.LR_SCHEDULER_NAME='Cosine' is not a schedule; use one of "
                                         r"\['WarmupMultiStepLR', 'WarmupCosineLR'\]"):
        build_lr_scheduler(_cfg(LR_SCHEDULER_NAME="Cosine"), opt)
    with pytest.raises(ValueError, match="SOLVER.BASE_LR_END should be between 0 and SOLVER.BASE_LR"):
        build_lr_scheduler(_cfg(LR_SCHEDULER_NAME="WarmupCosineLR", BASE_LR=0.1, BASE_LR_END=0.2), opt)


@pytest.mark.parametrize("nesterov", [False, True])
def test_fused_sgd_matches_the_momentum_formula(nesterov):
    """Three steps of the built optimizer (fused kernel on CPU) against SGD with momentum written out:
    g = grad + wd * w; buf = g (first step) else m * buf + g; w -= lr * (g + m * buf if nesterov else buf)."""
    torch.manual_seed(0)
    net = nn.Linear(5, 3)
    cfg = _cfg(BASE_LR=0.1, MOMENTUM=0.9, NESTEROV=nesterov, WEIGHT_DECAY=1e-2, BIAS_LR_FACTOR=2.0)
    opt = build_optimizer(cfg, net)
    assert all(g.get("fused") or g.get("foreach") for g in opt.param_groups)
    ref = {n: p.detach().double().clone() for n, p in net.named_parameters()}
    buf = {}
    for step in range(3):
        grads = {n: torch.randn_like(p) for n, p in net.named_parameters()}
        for n, p in net.named_parameters():
            p.grad = grads[n].clone()
        opt.step()
        for n in ref:
            lr = 0.1 * (2.0 if n == "bias" else 1.0)
            g = grads[n].double() + 1e-2 * ref[n]
            buf[n] = g if step == 0 else 0.9 * buf[n] + g
            ref[n] = ref[n] - lr * ((g + 0.9 * buf[n]) if nesterov else buf[n])
    for n, p in net.named_parameters():
        torch.testing.assert_close(p.detach().double(), ref[n], rtol=1e-5, atol=1e-6)
