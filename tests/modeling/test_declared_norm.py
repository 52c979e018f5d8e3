"""A new norm is one file plus one import: every part of gn_det treats it by its declared traits.

toy_running_norm.py registers "ToyRun" (running statistics, batch-dependent, its own checkpoint kind,
config node MODEL.TOYRUN). Here: config, building, describe, solver weight decay, precise BN, freezing,
estimation shift, the 1-image check and weight loading (a BN checkpoint is a reported kind mismatch,
never a half-load; a ToyRun checkpoint loads), then the registration is removed again.
"""
import importlib.util
import pathlib
import sys

import pytest
import torch
from torch import nn

from gn_det.benchmark.estimation_shift import layer_kind
from gn_det.checkpoint import load_weights
from gn_det.config import check_batch_dependent_norms, get_cfg
from gn_det.engine.precise_bn import has_bn_stats, update_bn_stats
from gn_det.engine.solver import build_optimizer
from gn_det.layers import NORM_REGISTRY, batch_free_norms, freeze_norms, kind_state_keys, norm_traits
from gn_det.modeling import build_model, describe_model_parts

from .helpers import tiny_cfg

TOY_FILE = pathlib.Path(__file__).with_name("toy_running_norm.py")


@pytest.fixture
def toy():
    """Import toy_running_norm.py (its import registers ToyRun); unregister it afterwards."""
    spec = importlib.util.spec_from_file_location("toy_running_norm_under_test", TOY_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        NORM_REGISTRY.unregister("ToyRun")
        sys.modules.pop("toy_running_norm_under_test", None)
    assert "ToyRun" not in NORM_REGISTRY.names() and kind_state_keys("ToyRun") is None
    assert "TOYRUN" not in get_cfg().MODEL  # no leak into later tests' configs


def _toy_model(*overrides):
    return build_model(tiny_cfg("tiny/mask_rcnn_R_18_FPN_gn.yaml", "MODEL.FPN.NORM", "ToyRun", *overrides))


def test_config_node_comes_from_the_options_and_reaches_the_module(toy):
    cfg = get_cfg()
    assert (cfg.MODEL.TOYRUN.MOMENTUM, cfg.MODEL.TOYRUN.EPSILON) == (0.2, 1e-4)
    model = _toy_model("MODEL.TOYRUN.MOMENTUM", 0.3)
    norm = model.backbone.fpn_output3.norm
    assert isinstance(norm, toy.ToyRunNorm2d) and (norm.momentum, norm.eps) == (0.3, 1e-4)
    assert model.backbone.fpn_output3.bias is None  # a norm follows: no conv bias


def test_describe_and_solver(toy):
    cfg = tiny_cfg("tiny/mask_rcnn_R_18_FPN_gn.yaml", "MODEL.FPN.NORM", "ToyRun", "SOLVER.WEIGHT_DECAY", 1e-4,
                   "SOLVER.WEIGHT_DECAY_NORM", 0.0)
    model = build_model(cfg)
    fpn = {r["part"]: r for r in describe_model_parts(model)}["FPN"]
    assert (fpn["num_norms"], fpn["norm"]) == (8, "ToyRunNorm2d x8")
    wd = {id(p): g["weight_decay"] for g in build_optimizer(cfg, model).param_groups for p in g["params"]}
    toy_norm = model.backbone.fpn_lateral2.norm
    assert [wd[id(p)] for p in (toy_norm.weight, toy_norm.bias, toy_norm.gain)] == [0.0, 0.0, 0.0]
    assert wd[id(model.backbone.fpn_lateral2.weight)] == 1e-4


class _ConvToy(nn.Module):
    """conv -> ToyRun, called as a detector: ``model(images, targets)`` (precise BN's calling convention)."""

    def __init__(self, toy):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = toy.ToyRunNorm2d(4)

    def forward(self, images, targets=None):
        return self.norm(self.conv(torch.stack(images)))


def test_precise_bn_recomputes_its_statistics(toy):
    torch.manual_seed(0)
    model = _ConvToy(toy).double()
    g = torch.Generator().manual_seed(1)
    batches = [[(torch.randn(3, 6, 5, generator=g, dtype=torch.float64) * 2 + 1, {}) for _ in range(3)]
               for _ in range(4)]
    assert has_bn_stats(model)
    assert update_bn_stats(model, iter(batches), 4) == 1
    with torch.no_grad():
        feats = [model.conv(torch.stack([i for i, _ in b])) for b in batches]
    means = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    vars_ = torch.stack([f.transpose(0, 1).flatten(1).var(dim=1, unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(model.norm.running_mean, means, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model.norm.running_var, vars_, rtol=1e-10, atol=1e-10)
    assert model.norm.momentum == 0.2


def test_freezing_freezes_its_statistics_and_parameters(toy):
    torch.manual_seed(0)
    model = _ConvToy(toy)
    with torch.no_grad():
        model.norm.running_mean.uniform_(-1, 1)
        model.norm.running_var.uniform_(0.5, 2)
    stats = [model.norm.running_mean.clone(), model.norm.running_var.clone()]
    x = [torch.randn(3, 6, 5) for _ in range(2)]
    expected = model.eval()(x)
    freeze_norms(model).train()
    out = model(x)
    assert not any(p.requires_grad for p in model.norm.parameters())
    assert not model.norm.training and model.conv.training  # the frozen norm stays in eval
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close([model.norm.running_mean, model.norm.running_var], stats, rtol=0, atol=0)
    assert not norm_traits(model.norm).batch_dependent and not has_bn_stats(model)


def test_estimation_shift_and_the_batch_size_check(toy):
    assert layer_kind(toy.ToyRunNorm2d(4)) == "ToyRun"
    assert "ToyRun" not in batch_free_norms()
    cfg = tiny_cfg("tiny/mask_rcnn_R_18_FPN_gn.yaml", "MODEL.FPN.NORM", "ToyRun")
    with pytest.raises(ValueError, match=r"^MODEL.FPN.NORM='ToyRun' would compute batch statistics from 1 image"):
        check_batch_dependent_norms(cfg, images_per_process=1)
    check_batch_dependent_norms(cfg, images_per_process=2)


def _save(model, path):
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def test_bn_checkpoint_is_a_kind_mismatch_and_loads_nothing_into_it(toy, tmp_path):
    torch.manual_seed(0)
    source = build_model(tiny_cfg("tiny/mask_rcnn_R_18_FPN_gn.yaml", "MODEL.FPN.NORM", "BN"))
    for m in source.modules():  # statistics and affine unlike the toy's initial ones
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 2)
            nn.init.uniform_(m.running_mean, -1, 1)
    target = _toy_model()
    before = {k: v.clone() for k, v in target.state_dict().items() if ".norm." in k and k.startswith("backbone.fpn")}
    report = load_weights(target, _save(source, tmp_path / "bn.pth"), verbose=False)
    fpn = [m for m in report.norm_mismatches if m.module.startswith("backbone.fpn")]
    assert len(fpn) == 8 and {(m.checkpoint_kind, m.model_kind) for m in fpn} == {("BN", "ToyRun")}
    after = target.state_dict()
    for key, value in before.items():  # not one tensor of the toy norms changed: no half-load
        assert torch.equal(after[key], value), key
    assert not any(k.startswith("backbone.fpn") and ".norm." in k for k in report.matched + report.missing)
    assert "backbone.fpn_lateral2.weight" in report.matched  # the rest still loads


def test_toy_checkpoint_loads_into_toy_model(toy, tmp_path):
    torch.manual_seed(1)
    source = _toy_model()
    with torch.no_grad():
        for m in source.modules():
            if isinstance(m, toy.ToyRunNorm2d):
                m.gain.uniform_(0.5, 2)
                m.running_var.uniform_(0.5, 2)
    target = _toy_model()
    report = load_weights(target, _save(source, tmp_path / "toy.pth"), verbose=False)
    assert not report.norm_mismatches and not report.missing and not report.unexpected
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
