"""End to end on real gn_det models: files written in each format from its convention load into
build_model(cfg) and reproduce an independent computation (torchvision's resnet50, a float64 Caffe2
ResNet written here from the blob names) or the original model's outputs."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from gn_det.checkpoint import check_input_conventions, load_weights
from gn_det.config import get_cfg
from gn_det.modeling import build_model

from test_formats import randomized
from writers import to_detectron2, to_sn_authors, write_pickle

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DETECTRON2_BGR_MEAN = [103.530, 116.280, 123.675]  # detectron2 defaults.py, MSRA/FAIR Caffe2 weights


def cfg_for(snippet: str, *opts):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "weights", snippet))
    cfg.merge_from_list(["MODEL.BACKBONE.FREEZE_AT", 0, "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 64,
                         *opts])
    return cfg


def image(seed=0, size=64):
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed)) * 255


def assert_features_close(ours, ref, names=("res2", "res3", "res4", "res5")):
    for name in names:
        a, b = ours[name].double(), ref[name].double()
        scale = b.abs().max().item()
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * scale, msg=name)


def test_torchvision_resnet50_into_our_r50_gives_its_features(tmp_path):
    """torchvision's own resnet50 state dict -> our R-50 bottom-up (stride in the 3x3, RGB ImageNet
    normalization from configs/weights/torchvision.yaml) == torchvision's layer1..layer4."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet50(weights=None)
    with torch.no_grad():  # non-trivial statistics and affine so every BN tensor matters
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.0)
                m.bias.normal_(0, 0.1)
    tv.eval()
    torch.save(tv.state_dict(), tmp_path / "resnet50-0676ba61.pth")
    cfg = cfg_for("torchvision.yaml")
    model = build_model(cfg).eval()
    report = load_weights(model, str(tmp_path / "resnet50-0676ba61.pth"), verbose=False)
    assert report.format.name == "torchvision-resnet" and check_input_conventions(cfg, report.format) == []
    assert not [k for k in report.missing if k.startswith("backbone.bottom_up.")]
    img = image()  # RGB, 0-255, as the model receives it (INPUT.FORMAT RGB)
    with torch.no_grad():
        ours = model.backbone.bottom_up(model.transform.normalize(img)[None])
        x = torchvision.transforms.functional.normalize(img / 255, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])[None]
        x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        ref = {}
        for i, layer in enumerate([tv.layer1, tv.layer2, tv.layer3, tv.layer4]):
            x = layer(x)
            ref[f"res{i + 2}"] = x
    assert_features_close(ours, ref)


# ------------------------------------------------------------------ Caffe2 ResNet-50, written from blob names
BLOCKS = [3, 4, 6, 3]


def random_c2_resnet50_blobs(norm: str, seed: int = 0) -> dict:
    """R-50 blobs with Detectron's names: conv ``*_w``; norms ``*_bn_{s,b}`` (MSRA) or ``*_gn_{s,b}`` (FAIR)."""
    rng = np.random.default_rng(seed)
    blobs = {}

    def conv(name, cout, cin, k):
        blobs[name + "_w"] = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)

    def affine(name, c, small=False):
        scale = rng.uniform(0.1, 0.3, c) if small else rng.uniform(0.5, 1.0, c)
        blobs[f"{name}_{norm}_s"] = scale.astype(np.float32)
        blobs[f"{name}_{norm}_b"] = rng.normal(0, 0.1, c).astype(np.float32)

    conv("conv1", 64, 3, 7)
    affine("res_conv1" if norm == "bn" else "conv1", 64)
    cin = 64
    for stage, n in zip(range(2, 6), BLOCKS):
        mid = 64 * 2 ** (stage - 2)
        for i in range(n):
            p = f"res{stage}_{i}"
            conv(p + "_branch2a", mid, cin, 1)
            affine(p + "_branch2a", mid)
            conv(p + "_branch2b", mid, mid, 3)
            affine(p + "_branch2b", mid)
            conv(p + "_branch2c", mid * 4, mid, 1)
            affine(p + "_branch2c", mid * 4, small=True)
            if i == 0:
                conv(p + "_branch1", mid * 4, cin, 1)
                affine(p + "_branch1", mid * 4)
            cin = mid * 4
    blobs["fc1000_w"] = rng.standard_normal((1000, 2048)).astype(np.float32)
    blobs["fc1000_b"] = np.zeros(1000, np.float32)
    return blobs


def c2_resnet50_reference(blobs: dict, x: torch.Tensor, norm: str, stride_in_1x1: bool) -> dict:
    """float64 forward of Detectron's ResNet-50 body: AffineChannel (bn) or GroupNorm(32) (gn)."""
    t = {k: torch.from_numpy(v).double() for k, v in blobs.items()}

    def normed(y, name):
        s, b = t[f"{name}_{norm}_s"], t[f"{name}_{norm}_b"]
        if norm == "gn":
            return F.group_norm(y, 32, s, b, eps=1e-5)  # Detectron GROUP_NORM: 32 groups, eps 1e-5
        return y * s[None, :, None, None] + b[None, :, None, None]

    y = F.relu(normed(F.conv2d(x, t["conv1_w"], stride=2, padding=3), "res_conv1" if norm == "bn" else "conv1"))
    y = F.max_pool2d(y, 3, 2, 1)
    out = {}
    for stage, n in zip(range(2, 6), BLOCKS):
        for i in range(n):
            p = f"res{stage}_{i}"
            stride = 2 if (i == 0 and stage > 2) else 1
            s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
            a = F.relu(normed(F.conv2d(y, t[p + "_branch2a_w"], stride=s1), p + "_branch2a"))
            a = F.relu(normed(F.conv2d(a, t[p + "_branch2b_w"], stride=s3, padding=1), p + "_branch2b"))
            a = normed(F.conv2d(a, t[p + "_branch2c_w"]), p + "_branch2c")
            sc = normed(F.conv2d(y, t[p + "_branch1_w"], stride=stride), p + "_branch1") if i == 0 else y
            y = F.relu(a + sc)
        out[f"res{stage}"] = y
    return out


@pytest.mark.parametrize("source", ["msra", "fair_gn"])
def test_caffe2_pkl_matches_float64_caffe2_resnet(tmp_path, source):
    """R-50.pkl (stride in 1x1, folded BN) / R-50-GN.pkl (stride in 3x3, GN), BGR minus mean, std 1."""
    norm, snippet, stride_in_1x1, name = {
        "msra": ("bn", "msra_caffe2.yaml", True, "R-50.pkl"),
        "fair_gn": ("gn", "fair_caffe2_gn.yaml", False, "R-50-GN.pkl"),
    }[source]
    blobs = random_c2_resnet50_blobs(norm)
    write_pickle(tmp_path / name, blobs)
    cfg = cfg_for(snippet)
    model = build_model(cfg).eval()
    report = load_weights(model, str(tmp_path / name), verbose=False)
    assert check_input_conventions(cfg, report.format) == []
    assert sorted(report.unexpected) == ["fc1000_b", "fc1000_w"] and not report.norm_mismatches
    img_bgr = image(1)
    with torch.no_grad():
        ours = model.backbone.bottom_up(model.transform.normalize(img_bgr)[None])
    x = (img_bgr.double() - torch.tensor(DETECTRON2_BGR_MEAN, dtype=torch.float64)[:, None, None])[None]
    assert_features_close(ours, c2_resnet50_reference(blobs, x, norm, stride_in_1x1))


def test_sn_authors_checkpoint_reproduces_the_model(tmp_path):
    cfg = cfg_for("sn_imagenet.yaml", "MODEL.RESNETS.DEPTH", 50)
    src = build_model(cfg).eval()
    randomized(src.backbone.bottom_up, seed=3)
    with torch.no_grad():
        for name, p in src.named_parameters():
            if name.endswith(("conv1.norm.weight", "conv2.norm.weight", "conv3.norm.weight", "shortcut.norm.weight")):
                p.uniform_(0.1, 0.3)  # keep activations O(1) through 16 blocks
    torch.save(to_sn_authors(src.state_dict()), tmp_path / "resnet50v1_sn.pth")
    dst = build_model(cfg).eval()
    report = load_weights(dst, str(tmp_path / "resnet50v1_sn.pth"), verbose=False)
    assert report.format.name == "sn-imagenet" and not report.norm_mismatches and not report.shape_mismatched
    img = image(2)
    with torch.no_grad():
        a = src.backbone.bottom_up(src.transform.normalize(img)[None])
        b = dst.backbone.bottom_up(dst.transform.normalize(img)[None])
    assert_features_close(b, a)


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_detectron2_mask_rcnn_reproduces_detections(tmp_path, suffix):
    # names and class layout do not depend on size: a small R-18 FPN Mask R-CNN keeps this fast
    cfg = cfg_for("msra_caffe2.yaml", "MODEL.MASK_ON", True, "MODEL.ROI_HEADS.NUM_CLASSES", 3,
                  "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, "MODEL.RPN.POST_NMS_TOPK_TEST", 50,
                  "MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64, "MODEL.FPN.OUT_CHANNELS", 32,
                  "MODEL.ROI_BOX_HEAD.FC_DIM", 64, "MODEL.ROI_MASK_HEAD.CONV_DIM", 32)
    torch.manual_seed(0)
    src = build_model(cfg).eval()
    randomized(src, seed=5)
    with torch.no_grad():
        for name, t in src.state_dict().items():
            if name.endswith(".weight") and t.dim() > 1:
                t.mul_((2.0 / t[0].numel()) ** 0.5)  # He-scaled so scores are not all saturated
            elif "norm.weight" in name:
                t.uniform_(0.1, 0.5)
    d2 = to_detectron2(src.state_dict())
    path = tmp_path / f"model_final{suffix}"
    if suffix == ".pkl":
        write_pickle(path, {"model": {k: v.numpy() for k, v in d2.items()}, "__author__": "Detectron2 Model Zoo"})
    else:
        torch.save({"model": d2, "iteration": 1}, path)
    dst = build_model(cfg).eval()
    report = load_weights(dst, str(path), verbose=False)
    assert report.format.name == "detectron2" and not report.missing and not report.unexpected
    img = image(4)
    with torch.no_grad():
        a, b = src([img])[0], dst([img])[0]
    assert len(a["boxes"]) > 0
    for key in ("boxes", "scores", "labels", "masks"):
        torch.testing.assert_close(b[key], a[key], msg=key)


def test_torchvision_maskrcnn_checkpoint_gives_its_fpn_features(tmp_path):
    """A torchvision maskrcnn_resnet50_fpn state dict loads completely and our FPN reproduces its P2-P6."""
    torch.manual_seed(0)
    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4)
    randomized(tv.backbone.body, seed=6)
    with torch.no_grad():
        for name, p in tv.backbone.body.named_parameters():
            if "bn" in name and name.endswith("weight") or "downsample.1.weight" in name:
                p.uniform_(0.1, 0.3)
    tv.eval()
    torch.save(tv.state_dict(), tmp_path / "maskrcnn_resnet50_fpn_coco.pth")
    # weights=None builds BatchNorm2d with eps 1e-5; torchvision's COCO_V1 files need eps 0 (the recipe's)
    cfg = cfg_for("torchvision_detection.yaml", "MODEL.MASK_ON", True, "MODEL.ROI_HEADS.NUM_CLASSES", 3,
                  "MODEL.BN.EPSILON", 1e-5)
    model = build_model(cfg).eval()
    report = load_weights(model, str(tmp_path / "maskrcnn_resnet50_fpn_coco.pth"), verbose=False)
    assert report.format.name == "torchvision-detection"
    assert not report.missing and not report.unexpected and not report.shape_mismatched
    assert [m.split("=")[0] for m in check_input_conventions(cfg, report.format)] == ["MODEL.BN.EPSILON"]
    img = image(5)
    with torch.no_grad():
        ours = model.backbone(model.transform.normalize(img)[None])
        ref = tv.backbone(tv.transform.normalize(img / 255)[None])
    assert_features_close(ours, dict(zip(["p2", "p3", "p4", "p5", "p6"], ref.values())),
                          names=("p2", "p3", "p4", "p5", "p6"))
