"""The recipe snippets carry each source's published pixel convention, and a config that disagrees
with the detected source is warned about, key by key."""
from __future__ import annotations

import os

import pytest
import yaml

from gn_det.checkpoint import check_input_conventions
from gn_det.checkpoint import conventions as conv
from gn_det.checkpoint.converted import DetectedFormat
from gn_det.config import get_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Published values, written out here independently of gn_det.checkpoint.conventions.
IMAGENET_MEAN_RGB_255 = [0.485 * 255, 0.456 * 255, 0.406 * 255]
IMAGENET_STD_RGB_255 = [0.229 * 255, 0.224 * 255, 0.225 * 255]
DETECTRON2_BGR_MEAN = [103.530, 116.280, 123.675]  # detectron2 defaults.py
EXPECTED = {
    "msra_caffe2.yaml": ("BGR", DETECTRON2_BGR_MEAN, [1.0, 1.0, 1.0], True, "FrozenBN"),
    "fair_caffe2_gn.yaml": ("BGR", DETECTRON2_BGR_MEAN, [1.0, 1.0, 1.0], False, "GN"),
    "torchvision.yaml": ("RGB", IMAGENET_MEAN_RGB_255, IMAGENET_STD_RGB_255, False, "FrozenBN"),
    "torchvision_detection.yaml": ("RGB", IMAGENET_MEAN_RGB_255, IMAGENET_STD_RGB_255, False, "FrozenBN"),
    "sn_imagenet.yaml": ("RGB", IMAGENET_MEAN_RGB_255, IMAGENET_STD_RGB_255, False, "SN"),
}


def cfg_with(snippet):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "weights", snippet))
    return cfg


@pytest.mark.parametrize("snippet", sorted(EXPECTED))
def test_snippets_hold_published_values(snippet):
    fmt, mean, std, stride, norm = EXPECTED[snippet]
    cfg = cfg_with(snippet)
    assert cfg.INPUT.FORMAT == fmt and cfg.MODEL.RESNETS.STRIDE_IN_1X1 is stride and cfg.MODEL.RESNETS.NORM == norm
    assert cfg.MODEL.PIXEL_MEAN == pytest.approx(mean, abs=1e-3)
    assert cfg.MODEL.PIXEL_STD == pytest.approx(std, abs=1e-3)


@pytest.mark.parametrize("convention", [conv.MSRA_CAFFE2, conv.FAIR_CAFFE2_GN, conv.TORCHVISION, conv.SN_IMAGENET,
                                        conv.TORCHVISION_DETECTION_V1])
def test_each_convention_agrees_with_its_own_snippet(convention):
    cfg = cfg_with(os.path.basename(convention.recipe))
    assert check_input_conventions(cfg, convention) == []


def test_disagreements_are_warned_key_by_key(caplog):
    cfg = get_cfg()  # defaults: BGR, std 1, stride in 1x1 (MSRA)
    fmt = DetectedFormat("torchvision-resnet", "torchvision ImageNet ResNet state dict", conv.TORCHVISION)
    with caplog.at_level("WARNING"):
        messages = check_input_conventions(cfg, fmt)
    assert [m.split("=")[0] for m in messages] == [
        "INPUT.FORMAT", "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD", "MODEL.RESNETS.STRIDE_IN_1X1"]
    assert messages[0] == (
        "INPUT.FORMAT='BGR' disagrees with MODEL.WEIGHTS (torchvision ImageNet ResNet state dict; published "
        "recipe): they expect INPUT.FORMAT='RGB'; merge configs/weights/torchvision.yaml into your config or set "
        "the key to the weights' value")
    assert messages[3].startswith("MODEL.RESNETS.STRIDE_IN_1X1=True disagrees with MODEL.WEIGHTS")
    assert caplog.text.count("disagrees with MODEL.WEIGHTS") == 4


def test_torchvision_v1_detectors_need_frozen_bn_eps_0():
    assert cfg_with("torchvision_detection.yaml").MODEL.BN.EPSILON == 0.0  # torchvision overwrite_eps(model, 0.0)
    cfg = cfg_with("torchvision.yaml")
    assert check_input_conventions(cfg, conv.TORCHVISION_DETECTION_V1) == [
        "MODEL.BN.EPSILON=1e-05 disagrees with MODEL.WEIGHTS (the weights; published recipe): they expect "
        "MODEL.BN.EPSILON=0.0; merge configs/weights/torchvision_detection.yaml into your config or set the key "
        "to the weights' value"]


def test_unknown_convention_checks_nothing():
    assert check_input_conventions(get_cfg(), DetectedFormat("gn_det", "gn_det checkpoint", None)) == []


def test_own_checkpoint_reads_config_yaml_beside_it(tmp_path):
    data = {"INPUT": {"FORMAT": "RGB"}, "MODEL": {"PIXEL_MEAN": [1, 2, 3], "PIXEL_STD": [4, 5, 6],
                                                "RESNETS": {"STRIDE_IN_1X1": False, "NORM": "GN"}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    found = conv.convention_from_config_file(str(tmp_path / "config.yaml"))
    assert (found.input_format, found.pixel_mean, found.pixel_std, found.stride_in_1x1) == (
        "RGB", (1.0, 2.0, 3.0), (4.0, 5.0, 6.0), False)
    assert conv.convention_from_config_file(str(tmp_path / "missing.yaml")) is None
