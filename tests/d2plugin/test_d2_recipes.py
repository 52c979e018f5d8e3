"""configs/detectron2/: each recipe loads in detectron2's config with the plugin on and builds its norms."""
import glob
import os

import pytest

from d2_common import D2_CONFIGS, SKIP_REASON

pytest.importorskip("detectron2", reason=SKIP_REASON)

from gn_det.layers import WSConv2d, norm_name  # noqa: E402

EXPECTED = {  # recipe -> (norm name in every normed part, convs are WS)
    "mask_rcnn_R_50_FPN_2x_sn.yaml": ("SN", False),
    "mask_rcnn_R_50_FPN_2x_syncsn.yaml": ("SyncSN", False),
    "mask_rcnn_R_50_FPN_2x_gnws.yaml": ("GN", True),
    "scratch_mask_rcnn_R_50_FPN_3x_frn.yaml": ("FRN", False),
    "scratch_mask_rcnn_R_50_FPN_3x_evonorm_s0.yaml": ("EvoNormS0", False),
    "scratch_mask_rcnn_R_50_FPN_3x_evonorm_b0.yaml": ("EvoNormB0", False),
    "scratch_mask_rcnn_R_50_FPN_2x_brn.yaml": ("BRN", False),
}


def test_every_recipe_is_listed():
    recipes = {os.path.basename(p) for p in glob.glob(str(D2_CONFIGS / "*.yaml"))}
    assert recipes - {"Base-RCNN-FPN.yaml", "Base-gn_det-builders.yaml"} == set(EXPECTED)


@pytest.mark.parametrize("recipe", sorted(EXPECTED))
def test_recipe_builds_its_norms(recipe):
    import gn_det.detectron2  # noqa: F401
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    norm, ws = EXPECTED[recipe]
    cfg = get_cfg()
    cfg.merge_from_file(str(D2_CONFIGS / recipe))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    bb = model.backbone.bottom_up
    parts = [bb.res4[0].conv2, model.backbone.fpn_output3, model.roi_heads.box_head.conv4,
             model.roi_heads.mask_head.mask_fcn4]
    assert [norm_name(p.norm) for p in parts] == [norm] * 4
    assert all(isinstance(p, WSConv2d) for p in parts) == ws
    assert cfg.MODEL.BACKBONE.FREEZE_AT == (0 if recipe.startswith("scratch") else 2)
