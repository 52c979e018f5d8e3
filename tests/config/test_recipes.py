"""Our recipes against the published files they follow. The expected values are written here from
those files (source beside each), not read from our YAML, so a drifting recipe fails."""
import glob
import os

import pytest
import yaml

from gn_det.config import CONFIGS_DIR, get_cfg

# detectron2 configs/Base-RCNN-FPN.yaml + detectron2/config/defaults.py (what every Misc file inherits)
D2_BASE = {
    "MODEL.ANCHOR_GENERATOR.SIZES": [[32], [64], [128], [256], [512]],  # Base-RCNN-FPN.yaml
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [[0.5, 1.0, 2.0]],  # Base-RCNN-FPN.yaml
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 2000,  # Base-RCNN-FPN.yaml ("Per FPN level")
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": 1000,  # Base-RCNN-FPN.yaml
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 7,  # Base-RCNN-FPN.yaml
    "MODEL.ROI_MASK_HEAD.NUM_CONV": 4,  # Base-RCNN-FPN.yaml
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": 14,  # Base-RCNN-FPN.yaml
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 512,  # detectron2 defaults.py
    "SOLVER.IMS_PER_BATCH": 16,  # Base-RCNN-FPN.yaml
    "SOLVER.BASE_LR": 0.02,  # Base-RCNN-FPN.yaml
    "INPUT.MIN_SIZE_TRAIN": (640, 672, 704, 736, 768, 800),  # Base-RCNN-FPN.yaml
    "INPUT.MAX_SIZE_TRAIN": 1333,  # detectron2 defaults.py
    "INPUT.MIN_SIZE_TEST": 800,  # detectron2 defaults.py
    "MODEL.PIXEL_MEAN": [103.530, 116.280, 123.675],  # detectron2 defaults.py (BGR)
    "MODEL.PIXEL_STD": [1.0, 1.0, 1.0],  # detectron2 defaults.py
    "INPUT.FORMAT": "BGR",  # detectron2 defaults.py
}
D2_3X = {"SOLVER.STEPS": (210000, 250000), "SOLVER.MAX_ITER": 270000}  # Misc/mask_rcnn_R_50_FPN_3x_{gn,syncbn}.yaml

# detectron2 configs/Misc/mask_rcnn_R_50_FPN_3x_gn.yaml
D2_GN = {
    "MODEL.MASK_ON": True, "MODEL.RESNETS.DEPTH": 50, "MODEL.RESNETS.NORM": "GN", "MODEL.RESNETS.STRIDE_IN_1X1": False,
    "MODEL.FPN.NORM": "GN", "MODEL.ROI_BOX_HEAD.NAME": "FastRCNNConvFCHead", "MODEL.ROI_BOX_HEAD.NUM_CONV": 4,
    "MODEL.ROI_BOX_HEAD.NUM_FC": 1, "MODEL.ROI_BOX_HEAD.NORM": "GN", "MODEL.ROI_MASK_HEAD.NORM": "GN",
    "MODEL.BACKBONE.FREEZE_AT": 2,  # detectron2 defaults.py (not overridden by the file)
    "MODEL.GN.NUM_GROUPS": 32,  # detectron2 get_norm("GN") uses 32 groups
}
# detectron2 configs/Misc/mask_rcnn_R_50_FPN_3x_syncbn.yaml
D2_SYNCBN = {
    "MODEL.MASK_ON": True, "MODEL.RESNETS.DEPTH": 50, "MODEL.RESNETS.NORM": "SyncBN",
    "MODEL.RESNETS.STRIDE_IN_1X1": False, "MODEL.FPN.NORM": "SyncBN", "MODEL.ROI_BOX_HEAD.NUM_CONV": 4,
    "MODEL.ROI_BOX_HEAD.NUM_FC": 1, "MODEL.ROI_BOX_HEAD.NORM": "SyncBN", "MODEL.ROI_MASK_HEAD.NORM": "SyncBN",
    "MODEL.BACKBONE.FREEZE_AT": 2, "TEST.PRECISE_BN.ENABLED": True,
}
# detectron2 configs/Misc/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml (base: mask_rcnn_R_50_FPN_3x_gn.yaml)
D2_SCRATCH_GN = {**D2_GN, "MODEL.WEIGHTS": "", "MODEL.BACKBONE.FREEZE_AT": 0}
# detectron2 configs/Misc/scratch_mask_rcnn_R_50_FPN_9x_syncbn.yaml (norms, std, FREEZE_AT; we keep 3x at 16 images)
D2_SCRATCH_SYNCBN = {**D2_SYNCBN, "MODEL.WEIGHTS": "", "MODEL.BACKBONE.FREEZE_AT": 0,
                     "MODEL.PIXEL_STD": [57.375, 57.12, 58.395], "MODEL.RESNETS.STRIDE_IN_1X1": False}
# Detectron configs/04_2018_gn_baselines/e2e_mask_rcnn_R-50-FPN_2x_gn.yaml (2x = Detectron's default schedule)
DETECTRON_GN_2X = {
    "SOLVER.BASE_LR": 0.02, "SOLVER.MAX_ITER": 180000, "SOLVER.STEPS": (120000, 160000),  # STEPS: [0, 120000, 160000]
    "MODEL.RESNETS.STRIDE_IN_1X1": False,  # STRIDE_1X1: False
    "MODEL.FPN.NORM": "GN",  # FPN.USE_GN: True
    "MODEL.ROI_BOX_HEAD.NUM_CONV": 4, "MODEL.ROI_BOX_HEAD.NUM_FC": 1,  # add_roi_Xconv1fc_gn_head (4 convs default)
    "MODEL.ROI_BOX_HEAD.NORM": "GN", "MODEL.ROI_MASK_HEAD.NORM": "GN",  # ..._gn heads
    "MODEL.ROI_MASK_HEAD.NUM_CONV": 4,  # mask_rcnn_fcn_head_v1up4convs_gn
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 512,  # TRAIN.BATCH_SIZE_PER_IM: 512
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 2000, "MODEL.RPN.PRE_NMS_TOPK_TEST": 1000,  # TRAIN/TEST.RPN_PRE_NMS_TOP_N
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": 0.5, "INPUT.MAX_SIZE_TEST": 1333,  # TEST.NMS, TEST.MAX_SIZE
}
# switchablenorms/SwitchNorm_Detection configs/sn_baselines/e2e_mask_rcnn_R-50-FPN_2x_sn_(8,1).yaml
SN_AUTHORS_2X = {
    "SOLVER.BASE_LR": 0.02, "SOLVER.MAX_ITER": 180000, "SOLVER.STEPS": (120000, 160000),
    "MODEL.RESNETS.NORM": "SN", "MODEL.FPN.NORM": "SN", "MODEL.ROI_BOX_HEAD.NORM": "SN",  # *_sn funcs, FPN.USE_SN
    "MODEL.ROI_MASK_HEAD.NORM": "SN", "MODEL.ROI_BOX_HEAD.NUM_CONV": 4, "MODEL.ROI_BOX_HEAD.NUM_FC": 1,
    "MODEL.RESNETS.STRIDE_IN_1X1": False, "MODEL.BACKBONE.FREEZE_AT": 2,
    "INPUT.FORMAT": "RGB",  # PIXEL_ORDER: 1
    "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53],  # PIXEL_MEANS [0.485, 0.456, 0.406] x 255
    "MODEL.PIXEL_STD": [58.395, 57.12, 57.375],  # PIXEL_VARS [0.229, 0.224, 0.225] x 255
}

# mmdetection configs/gn+ws/*_gn_ws-all_*.py: conv_cfg ConvWS and norm_cfg GN(32) in backbone, neck,
# Shared4Conv1FCBBoxHead and mask head (the RPN head keeps plain convs); style 'pytorch' backbone (stride in
# the 3x3) with configs/_base_/datasets/coco_*.py's img_norm_cfg (RGB, ImageNet mean/std x 255).
MMDET_GNWS = {
    "MODEL.RESNETS.NORM": "GN", "MODEL.RESNETS.CONV": "WS", "MODEL.FPN.NORM": "GN", "MODEL.FPN.CONV": "WS",
    "MODEL.ROI_BOX_HEAD.NUM_CONV": 4, "MODEL.ROI_BOX_HEAD.NUM_FC": 1, "MODEL.ROI_BOX_HEAD.NORM": "GN",
    "MODEL.ROI_BOX_HEAD.CONV": "WS", "MODEL.ROI_MASK_HEAD.NORM": "GN", "MODEL.ROI_MASK_HEAD.CONV": "WS",
    "MODEL.RPN.HEAD_CONV": "", "MODEL.RPN.HEAD_NORM": "", "MODEL.GN.NUM_GROUPS": 32,
    "MODEL.RESNETS.STRIDE_IN_1X1": False, "INPUT.FORMAT": "RGB",
    "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53], "MODEL.PIXEL_STD": [58.395, 57.12, 57.375],
}
# megvii-model/MABN det/configs/e2e_mask_rcnn_R_50_FPN_{mabn,syncbn}_2x_from_scratch.yaml: no weights,
# FREEZE_CONV_BODY_AT -1, FPNXconv1fc box head (4 convs + 1 fc), BASE_LR 0.02, STEPS (120000, 160000),
# MAX_ITER 180000 (16 images: 8 GPUs x 2).
MABN_SCRATCH_2X = {
    "MODEL.WEIGHTS": "", "MODEL.BACKBONE.FREEZE_AT": 0, "MODEL.MASK_ON": True, "MODEL.ROI_BOX_HEAD.NUM_CONV": 4,
    "MODEL.ROI_BOX_HEAD.NUM_FC": 1, "SOLVER.BASE_LR": 0.02, "SOLVER.STEPS": (120000, 160000),
    "SOLVER.MAX_ITER": 180000, "SOLVER.IMS_PER_BATCH": 16,
}


def _norm_everywhere(norm):
    return {f"MODEL.{part}.NORM": norm for part in ("RESNETS", "FPN", "ROI_BOX_HEAD", "ROI_MASK_HEAD")}


CASES = [
    ("faster_rcnn_R_50_FPN_1x_gnws.yaml", {**MMDET_GNWS, "MODEL.MASK_ON": False, "SOLVER.MAX_ITER": 90000}),
    ("mask_rcnn_R_50_FPN_2x_gnws.yaml", {**MMDET_GNWS, "MODEL.MASK_ON": True, "MODEL.RESNETS.DEPTH": 50}),
    ("mask_rcnn_R_101_FPN_2x_gnws.yaml", {**MMDET_GNWS, "MODEL.MASK_ON": True, "MODEL.RESNETS.DEPTH": 101}),
    # 24 epochs at 16 images = 180k iterations; LR x0.1 after epochs 20 and 23 (the WS paper's schedule)
    ("mask_rcnn_R_50_FPN_20-23-24e_gnws.yaml", {**MMDET_GNWS, "SOLVER.MAX_ITER": 180000,
                                                "SOLVER.STEPS": (150000, 172500)}),
    ("scratch_mask_rcnn_R_50_FPN_2x_bn.yaml", {**MABN_SCRATCH_2X, **_norm_everywhere("BN")}),
    ("scratch_mask_rcnn_R_50_FPN_2x_brn.yaml", {**MABN_SCRATCH_2X, **_norm_everywhere("BRN"),
                                                # Ioffe 2017, Sec. 4: rmax 3, dmax 5; 5k warm-up, 40k / 25k ramps
                                                "MODEL.BRN.RMAX": 3.0, "MODEL.BRN.DMAX": 5.0,
                                                "MODEL.BRN.WARMUP_ITERS": 5000, "MODEL.BRN.RMAX_ITERS": 40000,
                                                "MODEL.BRN.DMAX_ITERS": 25000}),
    ("scratch_mask_rcnn_R_50_FPN_2x_syncbn.yaml", {**MABN_SCRATCH_2X, **_norm_everywhere("SyncBN")}),
    # the scratch GN cell (detectron2 Misc/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml) with the norm swapped
    *[(f"scratch_mask_rcnn_R_50_FPN_3x_{stem}.yaml", {**D2_BASE, **D2_3X, **D2_SCRATCH_GN, **_norm_everywhere(norm)})
      for stem, norm in (("frn", "FRN"), ("evonorm_s0", "EvoNormS0"), ("evonorm_b0", "EvoNormB0"))],
    ("mask_rcnn_R_50_FPN_3x_gn.yaml", {**D2_BASE, **D2_3X, **D2_GN}),
    ("gn_mask_rcnn.yaml", {**D2_BASE, **D2_3X, **D2_GN}),
    ("mask_rcnn_R_50_FPN_3x_syncbn.yaml", {**D2_BASE, **D2_3X, **D2_SYNCBN}),
    ("scratch_mask_rcnn_R_50_FPN_3x_gn.yaml", {**D2_BASE, **D2_3X, **D2_SCRATCH_GN}),
    ("scratch_mask_rcnn_R_50_FPN_3x_syncbn.yaml", {**D2_3X, **D2_SCRATCH_SYNCBN}),
    ("mask_rcnn_R_50_FPN_2x_gn.yaml", DETECTRON_GN_2X),
    ("mask_rcnn_R_50_FPN_2x_sn.yaml", SN_AUTHORS_2X),
]


def _get(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def _load(name):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS_DIR / name))
    return cfg


@pytest.mark.parametrize("name,expected", CASES, ids=[c[0] for c in CASES])
def test_recipe_matches_published_values(name, expected):
    cfg = _load(name)
    wrong = {}
    for key, value in expected.items():
        got = _get(cfg, key)
        if isinstance(value, (list, tuple)):
            ok = len(got) == len(value) and all(
                (list(g) == list(v)) if isinstance(v, (list, tuple)) else g == pytest.approx(v) for g, v in zip(got, value))
        else:
            ok = got == pytest.approx(value) if isinstance(value, float) else got == value
        if not ok:
            wrong[key] = (got, value)
    assert wrong == {}, f"{name}: (ours, published) differ for {wrong}"


def test_bn_star_baseline_has_no_norm_outside_backbone():
    """Detectron BN* rows / detectron2 COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml: FrozenBN, 2fc."""
    for name in ("mask_rcnn_R_50_FPN_1x_frozenbn.yaml", "faster_rcnn_R_50_FPN_3x_frozenbn.yaml"):
        cfg = _load(name)
        assert (cfg.MODEL.RESNETS.NORM, cfg.MODEL.FPN.NORM, cfg.MODEL.ROI_BOX_HEAD.NORM) == ("FrozenBN", "", "")
        assert (cfg.MODEL.ROI_BOX_HEAD.NUM_CONV, cfg.MODEL.ROI_BOX_HEAD.NUM_FC) == (0, 2)
        assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 and cfg.MODEL.BACKBONE.FREEZE_AT == 2


@pytest.mark.parametrize("schedule,max_iter,steps", [("1x", 90000, (60000, 80000)), ("2x", 180000, (120000, 160000)),
                                                      ("3x", 270000, (210000, 250000))])
def test_schedules_at_16_images(schedule, max_iter, steps):
    """detectron2 MODEL_ZOO.md: 1x = 90k iterations at 16 images, 2x/3x scale it; LR 0.02."""
    for name in glob.glob(str(CONFIGS_DIR / f"*_{schedule}_*.yaml")):
        cfg = _load(name)
        assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS)) == \
            (16, 0.02, max_iter, steps), name


def test_cells_cover_the_comparison():
    names = {os.path.basename(p) for p in glob.glob(str(CONFIGS_DIR / "*.yaml"))}
    for arch, depth in (("mask", 50), ("faster", 50), ("mask", 101)):
        for schedule in ("1x", "2x", "3x"):
            for norm in ("frozenbn", "syncbn", "gn", "sn"):
                assert f"{arch}_rcnn_R_{depth}_FPN_{schedule}_{norm}.yaml" in names


def _own_yaml_files():
    return sorted(glob.glob(str(CONFIGS_DIR / "*.yaml")) + glob.glob(str(CONFIGS_DIR / "common" / "*.yaml"))
                  + glob.glob(str(CONFIGS_DIR / "tiny" / "*.yaml")))


@pytest.mark.parametrize("path", _own_yaml_files(), ids=lambda p: os.path.relpath(p, CONFIGS_DIR))
def test_every_yaml_loads(path):
    cfg = get_cfg()
    cfg.merge_from_file(path)
    cfg.freeze()


def _full_cell(tiny_path):
    """The full-size cell a tiny cell shrinks: the first file of its _BASE_."""
    with open(tiny_path) as f:
        base = yaml.safe_load(f)["_BASE_"]
    return os.path.normpath(os.path.join(os.path.dirname(tiny_path), base[0] if isinstance(base, list) else base))


def test_tiny_cells_follow_their_full_size_cell():
    """A tiny cell differs from its full cell only in sizes/solver/data, never in norms, convs or head shape."""
    tinies = glob.glob(str(CONFIGS_DIR / "tiny" / "*_R_18_FPN_*.yaml"))
    assert {"faster_rcnn_R_18_FPN_gnws.yaml", "scratch_mask_rcnn_R_18_FPN_brn.yaml"} <= set(map(os.path.basename, tinies))
    for tiny in tinies:
        full_path = _full_cell(tiny)
        assert os.path.basename(full_path).replace("_R_50_FPN_", "") != os.path.basename(full_path), tiny
        small, full = _load(tiny), _load(full_path)
        for key in ("RESNETS.NORM", "FPN.NORM", "ROI_BOX_HEAD.NORM", "ROI_MASK_HEAD.NORM", "RESNETS.CONV", "FPN.CONV",
                    "ROI_BOX_HEAD.CONV", "ROI_MASK_HEAD.CONV", "ROI_BOX_HEAD.NUM_CONV",
                    "ROI_BOX_HEAD.NUM_FC", "MASK_ON", "PIXEL_STD"):
            assert _get(small.MODEL, key) == _get(full.MODEL, key), (tiny, key)
        # No weights on CPU: nothing is frozen (a frozen random stem and res2 would never learn).
        assert small.MODEL.WEIGHTS == "" and small.MODEL.BACKBONE.FREEZE_AT == 0, tiny
        assert small.MODEL.RESNETS.DEPTH == 18 and small.MODEL.FPN.OUT_CHANNELS == 64
        assert small.DATASETS.TRAIN == ("shapes_train",) and small.MODEL.ROI_HEADS.NUM_CLASSES == 4
