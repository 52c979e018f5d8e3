"""A detectron2 checkpoint computes what detectron2 computes: for a FrozenBN 1x and a GN 3x Mask R-CNN
(R-18 sized, random weights) written in detectron2's module layout by writers.to_detectron2 and run
through DefaultPredictor, the resize, the anchors, the poolers and the mask paste agree with
detectron2's formulas written out below (its ResizeShortestEdge, DefaultAnchorGenerator, ROIAlignV2 /
ROIAlign and assign_boxes_to_levels, paste_masks_in_image, detector_postprocess). No detectron2 import."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from gn_det.config import get_cfg
from gn_det.engine import DefaultPredictor
from gn_det.modeling.anchors import build_anchor_generator

from writers import to_detectron2, write_pickle

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = ["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64, "MODEL.FPN.OUT_CHANNELS", 32,
         "MODEL.ROI_BOX_HEAD.CONV_DIM", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64, "MODEL.ROI_MASK_HEAD.CONV_DIM", 32,
         "MODEL.ROI_HEADS.NUM_CLASSES", 3, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, "MODEL.RPN.POST_NMS_TOPK_TEST", 100,
         "MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE", 20, "INPUT.MIN_SIZE_TEST", 200, "INPUT.MAX_SIZE_TEST", 1333,
         "DATASETS.TEST", ()]
RECIPES = {"FrozenBN 1x": "mask_rcnn_R_50_FPN_1x_frozenbn.yaml", "GN 3x": "mask_rcnn_R_50_FPN_3x_gn.yaml"}


def recipe_cfg(recipe, *opts):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", recipe))
    cfg.merge_from_list(SMALL + list(opts))
    return cfg


def write_detectron2_pkl(cfg, path, seed=0):
    """A model of ``cfg`` with its own random init, norms given random statistics and affines, saved in
    detectron2's layout as a zoo .pkl; returns the source model."""
    from gn_det.modeling import build_model

    torch.manual_seed(seed)
    src = build_model(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in src.state_dict().items():
            if name.endswith(("running_var", "norm.weight")):
                t.uniform_(0.5, 1.5, generator=g)
            elif name.endswith(("running_mean", "norm.bias")):
                t.uniform_(-0.2, 0.2, generator=g)
    d2 = to_detectron2(src.state_dict())
    write_pickle(path, {"model": {k: v.numpy() for k, v in d2.items()}, "__author__": "Detectron2 Model Zoo"})
    return src


def bgr_image(height, width, seed=0):
    """A smooth image with some structure (HxWx3 uint8, BGR as cv2.imread gives)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([128 + 90 * np.sin(7 * xx + c) * np.cos(5 * yy - 2 * c) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ detectron2's formulas, written out
def d2_output_shape(h, w, short, max_size):
    """detectron2 ResizeShortestEdge.get_output_shape."""
    scale = short / min(h, w)
    newh, neww = (short, scale * w) if h < w else (scale * h, short)
    if max(newh, neww) > max_size:
        s = max_size / max(newh, neww)
        newh, neww = newh * s, neww * s
    return int(newh + 0.5), int(neww + 0.5)


def d2_anchors(grid, stride, sizes, ratios, offset=0.0):
    """DefaultAnchorGenerator: cell anchors (w = sqrt(size^2 / r), h = r * w) at ((x + offset) * stride,
    (y + offset) * stride), location-major, float64."""
    cells = [(math.sqrt(s * s / r), r * math.sqrt(s * s / r)) for s in sizes for r in ratios]
    out = [[(x + offset) * stride - w / 2, (y + offset) * stride - h / 2, (x + offset) * stride + w / 2,
            (y + offset) * stride + h / 2] for y in range(grid[0]) for x in range(grid[1]) for w, h in cells]
    return torch.tensor(out, dtype=torch.float64)


def bilinear(f, y, x):
    """RoIAlign's bilinear sample of f (C, H, W) at (y, x): 0 beyond one pixel outside, edges clamped."""
    _, height, width = f.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(f.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * f[:, y0, x0] + (1 - ly) * lx * f[:, y0, x1]
            + ly * (1 - lx) * f[:, y1, x0] + ly * lx * f[:, y1, x1])


def roi_align(f, box, scale, out, aligned):
    """RoIAlign (sampling_ratio 0: ceil(roi / out) samples per bin side); aligned=True shifts by half a pixel
    (detectron2's ROIAlignV2), aligned=False clamps the RoI to at least 1 pixel (detectron2's ROIAlign)."""
    shift = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = [v * scale - shift for v in box]
    rw, rh = x2 - x1, y2 - y1
    if not aligned:
        rw, rh = max(rw, 1.0), max(rh, 1.0)
    bw, bh = rw / out, rh / out
    gx, gy = math.ceil(rw / out), math.ceil(rh / out)
    res = np.zeros((f.shape[0], out, out))
    for ph in range(out):
        for pw in range(out):
            acc = np.zeros(f.shape[0])
            for iy in range(gy):
                for ix in range(gx):
                    acc += bilinear(f, y1 + ph * bh + (iy + 0.5) * bh / gy, x1 + pw * bw + (ix + 0.5) * bw / gx)
            res[:, ph, pw] = acc / max(gx * gy, 1)
    return res


def fpn_level(box):
    """FPN eq. 1 as detectron2's assign_boxes_to_levels: floor(4 + log2(sqrt(area) / 224 + 1e-8)) in [2, 5]."""
    size = math.sqrt((box[2] - box[0]) * (box[3] - box[1]))
    return int(min(max(math.floor(4 + math.log2(size / 224 + 1e-8)), 2), 5))


def paste(mask, box, height, width):
    """detectron2's paste: pixel centres within one pixel of the box sample the mask bilinearly (zero outside)
    at ((x + 0.5 - x1) / (x2 - x1) * M - 0.5, ...) mask pixels; the rest of the image is 0."""
    m = mask.shape[0]
    out = np.zeros((height, width))
    x0i, y0i = max(math.floor(box[0]) - 1, 0), max(math.floor(box[1]) - 1, 0)
    x1i, y1i = min(math.ceil(box[2]) + 1, width), min(math.ceil(box[3]) + 1, height)
    padded = np.pad(mask, 1)
    for y in range(y0i, y1i):
        v = (y + 0.5 - box[1]) / (box[3] - box[1]) * m - 0.5
        for x in range(x0i, x1i):
            u = (x + 0.5 - box[0]) / (box[2] - box[0]) * m - 0.5
            if -1 < v < m and -1 < u < m:
                v0, u0 = math.floor(v), math.floor(u)
                a, b = v - v0, u - u0
                p = padded[v0 + 1:v0 + 3, u0 + 1:u0 + 3]
                out[y, x] = (1 - a) * (1 - b) * p[0, 0] + (1 - a) * b * p[0, 1] + a * (1 - b) * p[1, 0] + a * b * p[1, 1]
    return out


# ------------------------------------------------------------------ the test
class Recorder:
    """Forward hooks keeping what the model's parts received and returned."""

    def __init__(self, model):
        self.seen = {}
        model.register_forward_pre_hook(lambda m, args, kwargs: self.seen.update(inputs=args[0], kwargs=kwargs),
                                        with_kwargs=True)
        model.backbone.register_forward_hook(lambda m, a, out: self.seen.update(features=out))
        model.rpn.anchor_generator.register_forward_hook(lambda m, a, out: self.seen.update(anchors=out[0]))
        model.roi_heads.register_forward_hook(lambda m, a, out: self.seen.update(detections=out[0][0]))


@pytest.mark.parametrize("kind", sorted(RECIPES))
def test_detectron2_checkpoint_gives_detectron2_numbers(tmp_path, kind):
    cfg = recipe_cfg(RECIPES[kind])
    write_detectron2_pkl(cfg, tmp_path / "model_final_abcdef.pkl")
    cfg.merge_from_list(["MODEL.WEIGHTS", str(tmp_path / "model_final_abcdef.pkl")])
    predictor = DefaultPredictor(cfg)
    model = predictor.model
    assert model.roi_heads.box_roi_pool.pooler_type == "ROIAlignV2" == model.roi_heads.mask_roi_pool.pooler_type
    rec = Recorder(model)
    bgr = bgr_image(480, 640)
    out = predictor(bgr)

    # resize: 480x640 -> 200x267 (266.67 rounds up), PIL bilinear on the uint8 BGR image; outputs in 480x640
    size = d2_output_shape(480, 640, 200, 1333)
    assert size == (200, 267)
    expected_input = np.asarray(Image.fromarray(bgr).resize((267, 200), Image.BILINEAR)).astype(np.float32)
    torch.testing.assert_close(rec.seen["inputs"][0], torch.from_numpy(expected_input.transpose(2, 0, 1)), rtol=0, atol=0)
    assert rec.seen["kwargs"]["original_sizes"] == [(480, 640)]

    # anchors: padded 224x288, P6 is 4x5 at stride 64 (an odd multiple of 32: torchvision's rule gives 56)
    grids = {k: tuple(v.shape[-2:]) for k, v in rec.seen["features"].items()}
    assert grids == {"p2": (56, 72), "p3": (28, 36), "p4": (14, 18), "p5": (7, 9), "p6": (4, 5)}
    expected = torch.cat([d2_anchors(grids[f"p{k}"], 2 ** k, [s], [0.5, 1.0, 2.0])
                          for k, s in zip(range(2, 7), (32, 64, 128, 256, 512))])
    torch.testing.assert_close(rec.seen["anchors"].double(), expected, rtol=0, atol=1e-4)

    # poolers: ROIAlignV2 (and ROIAlign when configured) with detectron2's level rule, on boxes of every level
    feats = rec.seen["features"]
    boxes = torch.tensor([[10.0, 12, 40, 30], [3.5, 7.25, 120, 90], [20, 10, 250, 199], [0, 0, 266, 199],
                          [150, 60, 151, 61.5], [-5, -5, 300, 210], [-100, -100, 400, 350]])
    sizes = [(200, 267)]
    for pooler_type, aligned in (("ROIAlignV2", True), ("ROIAlign", False)):
        model.roi_heads.box_roi_pool.pooler_type = pooler_type
        pooled = model.roi_heads.box_roi_pool(feats, [boxes], sizes).double()
        for box, got in zip(boxes.tolist(), pooled):
            k = fpn_level(box)
            ref = roi_align(feats[f"p{k}"][0].double().numpy(), box, 1 / 2 ** k, 7, aligned)
            np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(), err_msg=f"{box} {pooler_type}")
    model.roi_heads.box_roi_pool.pooler_type = "ROIAlignV2"

    # postprocess + paste: boxes x (640/267, 480/200), clipped; masks pasted at 480x640 by the formula
    det = rec.seen["detections"]
    assert len(det["boxes"]) == 20
    scaled = det["boxes"].double() * torch.tensor([640 / 267, 480 / 200, 640 / 267, 480 / 200], dtype=torch.float64)
    scaled[:, 0::2] = scaled[:, 0::2].clamp(0, 640)
    scaled[:, 1::2] = scaled[:, 1::2].clamp(0, 480)
    keep = (scaled[:, 2] > scaled[:, 0]) & (scaled[:, 3] > scaled[:, 1])
    torch.testing.assert_close(out["boxes"].double(), scaled[keep], rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(out["scores"], det["scores"][keep])
    assert torch.equal(out["labels"], det["labels"][keep]) and out["masks"].shape == (int(keep.sum()), 1, 480, 640)
    for i in range(0, int(keep.sum()), 4):
        ref = paste(det["masks"][keep][i, 0].double().numpy(), out["boxes"][i].double().tolist(), 480, 640)
        np.testing.assert_allclose(out["masks"][i, 0].numpy(), ref, rtol=0, atol=1e-5)


def test_p6_stride_at_800_pixels_and_anchor_offset():
    """An 800-pixel side pads to 800 (25 P5 cells, 13 P6 cells): P6 anchors step by 64 pixels (torchvision's
    padded // grid rule steps by 61, up to 36 px off at the last row); OFFSET moves every centre by
    offset * stride."""
    cfg = recipe_cfg(RECIPES["FrozenBN 1x"])
    from gn_det.modeling import build_model

    model = build_model(cfg).eval()
    with torch.no_grad():
        batch, _ = model.transform([torch.zeros(3, 800, 64)])
        feats = model.backbone(batch.tensors)
        anchors = model.rpn.anchor_generator(batch, list(feats.values()))[0]
    grids = [tuple(f.shape[-2:]) for f in feats.values()]
    assert grids[-1] == (13, 1)
    counts = [3 * h * w for h, w in grids]
    p6 = anchors[sum(counts[:-1]):].reshape(13, 3, 4)
    centres_y = (p6[:, :, 1] + p6[:, :, 3]) / 2
    torch.testing.assert_close(centres_y, (torch.arange(13.0) * 64)[:, None].expand(13, 3), rtol=0, atol=1e-4)
    assert (centres_y[-1] - 12 * (800 // 13)).abs().max() == 36  # what a stride of 61 would have missed by
    cfg.merge_from_list(["MODEL.ANCHOR_GENERATOR.OFFSET", 0.5])
    generator = build_anchor_generator(cfg, [4, 8, 16, 32, 64])
    shifted = generator(batch, list(feats.values()))[0]
    expected = torch.cat([d2_anchors(g, 2 ** k, [s], [0.5, 1.0, 2.0], offset=0.5)
                          for g, k, s in zip(grids, range(2, 7), (32, 64, 128, 256, 512))])
    torch.testing.assert_close(shifted.double(), expected, rtol=0, atol=1e-4)
    cfg.merge_from_list(["MODEL.ANCHOR_GENERATOR.OFFSET", 1.0])
    with pytest.raises(ValueError, match=r"MODEL.ANCHOR_GENERATOR.OFFSET should be in \[0, 1\), got 1.0"):
        build_anchor_generator(cfg, [4, 8, 16, 32, 64])


def test_one_list_of_anchor_sizes_is_repeated_for_every_level():
    """MODEL.ANCHOR_GENERATOR.SIZES as one list applies to every RPN level (detectron2's _broadcast_params),
    as ASPECT_RATIOS does: the anchors equal the formula with that list at each level's stride."""
    cfg = recipe_cfg(RECIPES["FrozenBN 1x"], "MODEL.ANCHOR_GENERATOR.SIZES", [[32, 90]],
                     "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [[0.5, 2.0]])
    strides = [4, 8, 16, 32, 64]
    generator = build_anchor_generator(cfg, strides)
    assert generator.num_anchors_per_location() == [4] * 5
    grids = [(3, 2), (2, 2), (1, 2), (1, 1), (1, 1)]
    for got, grid, stride in zip(generator.grid_anchors(grids, torch.device("cpu")), grids, strides):
        torch.testing.assert_close(got.double(), d2_anchors(grid, stride, [32, 90], [0.5, 2.0]), rtol=0, atol=1e-4)
    cfg.merge_from_list(["MODEL.ANCHOR_GENERATOR.SIZES", [[32], [64]]])
    with pytest.raises(ValueError, match=r"MODEL.ANCHOR_GENERATOR.SIZES has 2 levels but MODEL.RPN.IN_FEATURES has 5 "
                                         r".*; give one list of sizes per level or one list for all levels"):
        build_anchor_generator(cfg, strides)


def test_unknown_pooler_type_names_the_key():
    from gn_det.modeling import build_model

    with pytest.raises(ValueError, match=r"MODEL.ROI_MASK_HEAD.POOLER_TYPE='ROIAlignV3' is not a pooler type; use one of "
                                         r"\['ROIAlignV2', 'ROIAlign', 'ROIPool'\]"):
        build_model(recipe_cfg(RECIPES["FrozenBN 1x"], "MODEL.ROI_MASK_HEAD.POOLER_TYPE", "ROIAlignV3"))


def test_roipool_and_level_assignment_formulas():
    """POOLER_TYPE ROIPool is Fast R-CNN's max pooling over rounded RoIs (detectron2's ROIPool = torchvision's
    roi_pool); boxes go to the level of FPN eq. 1, clamped to the pooler's levels."""
    from gn_det.modeling.poolers import ROIPooler

    g = torch.Generator().manual_seed(0)
    feats = {"p2": torch.randn(1, 3, 40, 48, generator=g), "p3": torch.randn(1, 3, 20, 24, generator=g)}
    boxes = torch.tensor([[3.2, 5.7, 40.1, 33.3], [10, 10, 150, 140], [60, 8, 61, 9], [-40, -40, 200, 200]])
    pooled = ROIPooler(["p2", "p3"], [4, 8], 4, 0, "ROIPool")(feats, [boxes], [(160, 192)])
    for box, got in zip(boxes.tolist(), pooled):
        k = min(fpn_level(box), 3)
        f, scale = feats[f"p{k}"][0].numpy(), 1 / 2 ** k
        height, width = f.shape[1:]
        x1, y1, x2, y2 = [int(math.copysign(math.floor(abs(v * scale) + 0.5), v)) for v in box]  # C's round()
        bw, bh = max(x2 - x1 + 1, 1) / 4, max(y2 - y1 + 1, 1) / 4
        for ph in range(4):
            for pw in range(4):
                hs, he = [min(max(v + y1, 0), height) for v in (math.floor(ph * bh), math.ceil((ph + 1) * bh))]
                ws, we = [min(max(v + x1, 0), width) for v in (math.floor(pw * bw), math.ceil((pw + 1) * bw))]
                ref = f[:, hs:he, ws:we].reshape(3, -1).max(axis=1) if he > hs and we > ws else np.zeros(3)
                np.testing.assert_allclose(got[:, ph, pw].numpy(), ref, rtol=0, atol=1e-6)
    assert [fpn_level(b) for b in boxes.tolist()] == [2, 3, 2, 4]  # the last pools from P3: the pooler's top level
