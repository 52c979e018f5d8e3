"""A pretrained backbone (tools/pretrain_backbone.py's model_final.pth) loads into the fine-tuning recipes
as the load table says: FrozenBN holds the BN statistics and affine, BN/SyncBN start from them, GN and SN
load their own kinds, GN+WS its raw conv weights; every tensor is checked against the checkpoint file,
and a backbone of another kind is refused with one clear line."""
import os

import pytest
import torch

from gn_det.checkpoint.pretrained import (LOAD_TABLE, check_backbone_report, check_pretrained_recipe,
                                          load_pretrained_backbone, pretrained_backbone_for)
from gn_det.checkpoint import load_weights
from gn_det.config import get_cfg
from gn_det.layers import norm_traits
from gn_det.modeling import build_model
from gn_det.modeling.classifier import build_backbone_classifier

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRETRAIN = os.path.join(REPO, "configs", "tiny", "pretrain")
FINETUNE = os.path.join(REPO, "configs", "tiny", "finetune")


def _cfg(path):
    cfg = get_cfg()
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def _pretrained_file(tmp_path, kind: str, seed: int = 0) -> str:
    """A classifier of configs/tiny/pretrain/R_18_<kind>.yaml with every norm tensor and conv weight set to
    random values (so nothing equals an initialisation by chance), saved as the trainer saves it, with
    the run's config.yaml beside it."""
    cfg = _cfg(os.path.join(PRETRAIN, f"R_18_{kind}.yaml"))
    model = build_backbone_classifier(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=gen) + 0.5  # positive: valid variances too
                tensor.copy_(values)
    out = tmp_path / f"R_18_{kind}"
    out.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "iteration": 9}, out / "model_final.pth")
    (out / "config.yaml").write_text(cfg.dump())
    return str(out / "model_final.pth")


def _check_backbone_equal(model, path):
    """Every backbone tensor of ``model`` equals the checkpoint's tensor of the same name, one by one."""
    saved = torch.load(path, weights_only=True)["model"]
    state = model.state_dict()
    backbone = [k for k in state if k.startswith("backbone.bottom_up.") and not k.endswith("num_batches_tracked")]
    assert backbone
    for key in backbone:
        torch.testing.assert_close(state[key], saved[key], rtol=0, atol=0, msg=key)
    return saved


@pytest.mark.parametrize("recipe,kind,norm_class", [
    ("frozenbn", "bn", "FrozenBatchNorm2d"), ("bn", "bn", "BatchNorm2d"), ("syncbn", "bn", "SyncBatchNorm2d"),
    ("gn", "gn", "GroupNorm"), ("sn", "sn", "SwitchNorm2d"), ("gnws", "gnws", "GroupNorm"),
])
def test_backbone_loads_tensor_by_tensor(tmp_path, recipe, kind, norm_class):
    path = _pretrained_file(tmp_path, kind)
    cfg = _cfg(os.path.join(FINETUNE, f"{recipe}.yaml"))
    assert pretrained_backbone_for(cfg.MODEL.RESNETS.NORM, cfg.MODEL.RESNETS.CONV) == kind
    model = build_model(cfg)
    report = load_pretrained_backbone(model, path, cfg=cfg)
    assert any("pretrain_head.bias, pretrain_head.weight" in n for n in report.notes)
    assert not report.unexpected and not report.norm_mismatches
    saved = _check_backbone_equal(model, path)
    # the trainable stages keep the recipe's own norm; the stem and res2 are frozen (FREEZE_AT 2)
    res3 = model.backbone.bottom_up.res3[0].conv1.norm
    assert type(res3).__name__ == norm_class
    assert type(model.backbone.bottom_up.res3[0].conv1).__name__ == ("WSConv2d" if kind == "gnws" else "Conv2d")
    if kind == "bn":
        for key in ("running_mean", "running_var", "weight", "bias"):
            torch.testing.assert_close(getattr(res3, key), saved[f"backbone.bottom_up.res3.0.conv1.norm.{key}"],
                                       rtol=0, atol=0)
    if kind == "sn":
        assert {"mean_weight", "var_weight", "running_mean", "running_var"} <= set(dict(res3.named_buffers()) |
                                                                                   dict(res3.named_parameters()))


def test_frozenbn_normalises_with_the_pretrained_statistics(tmp_path):
    """The FrozenBN recipe's res3 norm computes (x - mean) / sqrt(var + eps) * w + b with the checkpoint's
    values (float64 reference), in training mode too: the statistics stay fixed."""
    path = _pretrained_file(tmp_path, "bn", seed=1)
    cfg = _cfg(os.path.join(FINETUNE, "frozenbn.yaml"))
    model = build_model(cfg)
    load_pretrained_backbone(model, path, cfg=cfg)
    saved = torch.load(path, weights_only=True)["model"]
    norm = model.backbone.bottom_up.res3[0].conv1.norm
    assert norm_traits(norm).kind == "BN" and not norm_traits(norm).batch_dependent
    p = {k: saved[f"backbone.bottom_up.res3.0.conv1.norm.{k}"].double() for k in
         ("running_mean", "running_var", "weight", "bias")}
    x = torch.randn(2, p["weight"].numel(), 5, 5, generator=torch.Generator().manual_seed(0))
    model.train()
    out = norm(x)
    shape = (1, -1, 1, 1)
    want = ((x.double() - p["running_mean"].view(shape)) / torch.sqrt(p["running_var"].view(shape) + cfg.MODEL.BN.EPSILON)
            * p["weight"].view(shape) + p["bias"].view(shape))
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)


def test_bn_recipe_starts_from_the_statistics_and_updates_them(tmp_path):
    """BN/BN: res3's BN holds the pretrained running statistics, then a training forward moves them."""
    path = _pretrained_file(tmp_path, "bn", seed=2)
    cfg = _cfg(os.path.join(FINETUNE, "bn.yaml"))
    model = build_model(cfg)
    load_pretrained_backbone(model, path, cfg=cfg)
    norm = model.backbone.bottom_up.res3[0].conv1.norm
    before = norm.running_mean.clone()
    torch.testing.assert_close(before, torch.load(path, weights_only=True)["model"][
        "backbone.bottom_up.res3.0.conv1.norm.running_mean"], rtol=0, atol=0)
    norm.train()
    norm(torch.randn(2, before.numel(), 4, 4))
    assert not torch.equal(norm.running_mean, before)


def test_another_kind_is_refused_with_one_clear_line(tmp_path):
    gn = _pretrained_file(tmp_path, "gn")
    cfg = _cfg(os.path.join(FINETUNE, "frozenbn.yaml"))
    with pytest.raises(ValueError, match=r"is a gn backbone but MODEL.RESNETS.NORM='FrozenBN' CONV='' loads a bn "
                                         r"backbone; pretrain one with configs/tiny/pretrain/R_18_bn.yaml"):
        check_pretrained_recipe(cfg, gn)
    os.remove(os.path.join(os.path.dirname(gn), "config.yaml"))  # nothing recorded: the tensors tell
    model = build_model(cfg)
    with pytest.raises(ValueError, match=r"backbone norm layers hold GN parameters but the recipe uses BN"):
        load_pretrained_backbone(model, gn, cfg=cfg)
    # a GN backbone into the GN+WS recipe: same tensor kinds, refused by the recorded recipe
    gnws_cfg = _cfg(os.path.join(FINETUNE, "gnws.yaml"))
    plain = _pretrained_file(tmp_path / "second", "gn")
    with pytest.raises(ValueError, match="is a gn backbone but .* loads a gnws backbone"):
        check_pretrained_recipe(gnws_cfg, plain)


def test_every_fine_tuning_recipe_is_in_the_load_table():
    from gn_det.benchmark.finetune import FINETUNE_BACKBONES

    for recipe, kind in FINETUNE_BACKBONES.items():
        cfg = _cfg(os.path.join(FINETUNE, f"{recipe}.yaml"))
        assert pretrained_backbone_for(cfg.MODEL.RESNETS.NORM, cfg.MODEL.RESNETS.CONV) == kind, recipe
    assert {r.pretrained for r in LOAD_TABLE} == {"bn", "gn", "sn", "gnws"}
    with pytest.raises(ValueError, match="no pretrained backbone for MODEL.RESNETS.NORM='FRN'"):
        pretrained_backbone_for("FRN")


def test_report_check_names_missing_backbone_tensors(tmp_path):
    path = _pretrained_file(tmp_path, "gn")
    saved = torch.load(path, weights_only=True)
    del saved["model"]["backbone.bottom_up.res4.0.conv1.weight"]
    torch.save(saved, path)
    cfg = _cfg(os.path.join(FINETUNE, "gn.yaml"))
    report = load_weights(build_model(cfg), path, verbose=False)
    with pytest.raises(ValueError, match=r"1 backbone tensors did not load \(e.g. backbone.bottom_up.res4.0.conv1.weight\)"):
        check_backbone_report(report)
