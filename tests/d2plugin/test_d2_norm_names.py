"""detectron2's get_norm, as its builders imported it, knows gn_det's names; its own names keep its modules."""
import functools
import os

import pytest

from d2_common import D2_CONFIGS, SKIP_REASON

pytest.importorskip("detectron2", reason=SKIP_REASON)

import torch  # noqa: E402
from torch import nn  # noqa: E402

import gn_det.detectron2 as plugin  # noqa: E402
from gn_det.layers import (BatchRenorm2d, EvoNorm2dB0, EvoNorm2dS0, FilterResponseNorm2d, NORM_REGISTRY,  # noqa: E402
                           SwitchNorm2d, SyncBatchRenorm2d, SyncSwitchNorm2d, norm_name, register_norm)

GN_DET_ONLY = {"SN": SwitchNorm2d, "SyncSN": SyncSwitchNorm2d, "BRN": BatchRenorm2d, "SyncBRN": SyncBatchRenorm2d,
               "FRN": FilterResponseNorm2d, "EvoNormS0": EvoNorm2dS0, "EvoNormB0": EvoNorm2dB0}


def _builder_modules():
    from detectron2.layers import batch_norm, blocks
    from detectron2.modeling.backbone import fpn, regnet, resnet
    from detectron2.modeling.meta_arch import retinanet, semantic_seg
    from detectron2.modeling.roi_heads import box_head, mask_head
    return {m.__name__: m for m in (batch_norm, blocks, resnet, fpn, regnet, box_head, mask_head, retinanet,
                                    semantic_seg)}


@pytest.mark.parametrize("module_name", sorted(_builder_modules()))
def test_every_builder_module_sees_gn_det_names(module_name):
    get_norm = _builder_modules()[module_name].get_norm
    for name, cls in GN_DET_ONLY.items():
        module = get_norm(name, 64)
        assert type(module) is cls and norm_name(module) == name
    inorm = get_norm("IN", 64)
    assert norm_name(inorm) == "IN"
    x = torch.randn(2, 64, 5, 6, dtype=torch.float64)
    ref = (x - x.mean((2, 3), keepdim=True)) / torch.sqrt(x.var((2, 3), unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(inorm.double()(x), ref)  # IN: each channel of each image, written here


def test_detectron2_names_keep_detectron2_modules():
    from detectron2.layers import FrozenBatchNorm2d
    from detectron2.layers.batch_norm import LayerNorm
    from detectron2.modeling.backbone.resnet import get_norm
    gn = get_norm("GN", 64)
    assert type(gn) is nn.GroupNorm and gn.num_groups == 32 and gn.eps == 1e-5
    assert type(get_norm("FrozenBN", 64)) is FrozenBatchNorm2d
    assert type(get_norm("BN", 64)).__name__ == "BatchNorm2d"
    assert type(get_norm("SyncBN", 64)) is nn.SyncBatchNorm
    assert type(get_norm("LN", 64)) is LayerNorm
    assert get_norm("", 64) is None and get_norm(None, 64) is None
    assert type(get_norm(functools.partial(nn.GroupNorm, 8), 64)) is nn.GroupNorm


def test_unknown_name_is_one_error_listing_both_registries():
    from detectron2.modeling.backbone.fpn import get_norm
    with pytest.raises(KeyError) as err:
        get_norm("GNN", 64)
    message = str(err.value)
    for name in ("GN", "SyncBN", "naiveSyncBN", "SN", "SyncSN", "FRN", "EvoNormB0", "IN"):
        assert name in message


def test_a_norm_registered_later_works_in_detectron2():
    class Scale(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.weight = nn.Parameter(torch.full((channels,), 2.0))

        def forward(self, x):
            return x * self.weight[None, :, None, None]

    register_norm("PluginToyScale")(lambda channels, options: Scale(channels))
    try:
        from detectron2.modeling.roi_heads.box_head import get_norm
        assert type(get_norm("PluginToyScale", 8)) is Scale
        assert "PluginToyScale" in plugin.known_names()
    finally:
        NORM_REGISTRY.unregister("PluginToyScale")


def test_setup_is_idempotent():
    from detectron2.modeling.backbone import fpn
    before = fpn.get_norm
    plugin.setup_environment()
    import importlib
    importlib.reload(importlib.import_module("gn_det.detectron2.patching"))
    plugin.setup_environment()
    assert fpn.get_norm is before


def _recipe_cfg(norm, *extra):
    from detectron2.config import get_cfg
    import detectron2
    cfg = get_cfg()  # detectron2's own recipe, from the configs its package carries (model_zoo needs pkg_resources)
    cfg.merge_from_file(os.path.join(os.path.dirname(detectron2.__file__), "model_zoo", "configs", "Misc",
                                     "mask_rcnn_R_50_FPN_3x_gn.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""] + [
        item for key in ("MODEL.RESNETS.NORM", "MODEL.FPN.NORM", "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM")
        for item in (key, norm)] + list(extra))
    return cfg


def _norm_positions(model, cls):
    return [name for name, m in model.named_modules() if isinstance(m, cls)]


def test_detectron2_gn_recipe_with_sn_has_the_69_gn_positions_and_reads_use_bn():
    from detectron2.modeling import build_model
    gn_positions = _norm_positions(build_model(_recipe_cfg("GN")), nn.GroupNorm)
    assert len(gn_positions) == 69
    sn_model = build_model(_recipe_cfg("SN", "MODEL.SN.USE_BN", "False", "MODEL.SN.EPSILON", "1e-4"))
    sn = [m for m in sn_model.modules() if isinstance(m, SwitchNorm2d)]
    assert _norm_positions(sn_model, SwitchNorm2d) == gn_positions
    assert all(not m.use_bn and m.eps == 1e-4 for m in sn)
    assert all(m.use_bn for m in build_model(_recipe_cfg("SN")).modules() if isinstance(m, SwitchNorm2d))


def test_option_nodes_are_in_detectron2_defaults_and_added_to_an_older_cfg():
    from detectron2.config import CfgNode, get_cfg
    cfg = get_cfg()
    assert cfg.MODEL.SN.USE_BN is True and cfg.MODEL.BRN.RMAX == 3 and cfg.MODEL.FRN.EPSILON == 1e-6
    assert cfg.MODEL.EVONORM.NUM_GROUPS == 32 and cfg.MODEL.RESNETS.CONV == "" and cfg.MODEL.RPN.HEAD_NORM == ""
    old = CfgNode({"MODEL": {"RESNETS": {"NORM": "SN"}, "FPN": {}, "RPN": {}, "ROI_BOX_HEAD": {}, "ROI_MASK_HEAD": {},
                             "SN": {"USE_BN": False, "MOMENTUM": 0.1, "EPSILON": 1e-5, "FREEZE_STATS": False}}})
    old.freeze()
    plugin.add_gn_det_config(old)
    assert old.is_frozen() and old.MODEL.SN.USE_BN is False and old.MODEL.BRN.DMAX == 5 and old.MODEL.FPN.CONV == ""


def test_lazyconfig_norm_callable_and_names():
    from detectron2.config import LazyConfig, instantiate
    from detectron2.modeling.backbone.fpn import FPN
    cfg = LazyConfig.load(str(os.path.join(os.path.dirname(__file__), "lazy_fpn.py")))
    cfg.model.norm = plugin.norm("SN", use_bn=False)
    model = instantiate(cfg.model)
    assert isinstance(model, FPN)
    sn = [m for m in model.modules() if isinstance(m, SwitchNorm2d)]
    assert len(sn) == 8 and all(not m.use_bn for m in sn)
    cfg.model.norm = "EvoNormB0"  # a gn_det name as a string: the plugin is on
    assert sum(isinstance(m, EvoNorm2dB0) for m in instantiate(cfg.model).modules()) == 8
    with pytest.raises(TypeError, match="use_bnn"):
        plugin.norm("SN", use_bnn=False)


SUMMARY = """
import json, os, sys, torch
{setup}
import detectron2
from detectron2.config import get_cfg
from detectron2.modeling import build_model
cfg = get_cfg()
cfg.merge_from_file(os.path.join(os.path.dirname(detectron2.__file__), "model_zoo", "configs", "Misc",
                                 "mask_rcnn_R_50_FPN_3x_syncbn.yaml"))
cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.ROI_BOX_HEAD.NORM", "GN"])
torch.manual_seed(0)
model = build_model(cfg)
print(json.dumps([[n, type(m).__module__ + "." + type(m).__name__] for n, m in model.named_modules()]
                 + [[k, list(v.shape), float(v.float().sum())] for k, v in model.state_dict().items()]))
"""


def test_an_existing_detectron2_config_builds_the_same_model_with_the_plugin_on():
    import json
    import subprocess
    import sys

    def summary(setup):
        proc = subprocess.run([sys.executable, "-c", SUMMARY.format(setup=setup)], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    without = summary("")
    with_plugin = summary("import gn_det.detectron2")
    assert with_plugin == without  # the same modules (SyncBN, FrozenBN, GN: detectron2's), the same weights
