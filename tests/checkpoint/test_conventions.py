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
        "to the weights' value",
        # torchvision's MultiScaleRoIAlign is aligned=False: detectron2's name for it is ROIAlign
        "MODEL.ROI_BOX_HEAD.POOLER_TYPE='ROIAlignV2' disagrees with MODEL.WEIGHTS (the weights; published recipe): "
        "they expect MODEL.ROI_BOX_HEAD.POOLER_TYPE='ROIAlign'; merge configs/weights/torchvision_detection.yaml "
        "into your config or set the key to the weights' value"]
    snippet = cfg_with("torchvision_detection.yaml")
    assert (snippet.MODEL.ROI_BOX_HEAD.POOLER_TYPE, snippet.MODEL.ROI_MASK_HEAD.POOLER_TYPE) == ("ROIAlign", "ROIAlign")


def test_unknown_convention_checks_nothing():
    assert check_input_conventions(get_cfg(), DetectedFormat("gn_det", "gn_det checkpoint", None)) == []


def test_own_checkpoint_reads_config_yaml_beside_it(tmp_path):
    data = {"INPUT": {"FORMAT": "RGB"}, "MODEL": {"PIXEL_MEAN": [1, 2, 3], "PIXEL_STD": [4, 5, 6],
                                                "RESNETS": {"STRIDE_IN_1X1": False, "NORM": "GN"}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    found = conv.convention_from_config_file(str(tmp_path / "config.yaml"))
    assert (found.input_format, found.pixel_mean, found.pixel_std, found.stride_in_1x1) == (
        "RGB", (1.0, 2.0, 3.0), (4.0, 5.0, 6.0), False)
    assert found.pooler_type == "ROIAlign"  # written before POOLER_TYPE existed: torchvision's aligned=False pooler
    assert conv.convention_from_config_file(str(tmp_path / "missing.yaml")) is None


def test_each_head_checked_against_its_own_recorded_pooler(tmp_path):
    """A config.yaml recording different box and mask poolers: each head is checked against its own; without
    the mask head's, the box head's stands for both."""
    data = {"INPUT": {"FORMAT": "BGR"}, "MODEL": {"PIXEL_MEAN": list(conv._C2_MEAN), "PIXEL_STD": [1, 1, 1],
                                                "RESNETS": {"STRIDE_IN_1X1": True, "NORM": "FrozenBN"},
                                                "ROI_BOX_HEAD": {"POOLER_TYPE": "ROIAlignV2"},
                                                "ROI_MASK_HEAD": {"POOLER_TYPE": "ROIAlign"}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    found = conv.convention_from_config_file(str(tmp_path / "config.yaml"))
    assert (found.pooler_type, found.mask_pooler_type) == ("ROIAlignV2", "ROIAlign")
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.MASK_ON", True, "MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlignV2",
                         "MODEL.ROI_MASK_HEAD.POOLER_TYPE", "ROIAlign"])
    assert check_input_conventions(cfg, found) == []
    cfg.merge_from_list(["MODEL.ROI_MASK_HEAD.POOLER_TYPE", "ROIAlignV2"])
    assert [m.split(" disagrees")[0] for m in check_input_conventions(cfg, found)] == [
        "MODEL.ROI_MASK_HEAD.POOLER_TYPE='ROIAlignV2'"]
    assert "they expect MODEL.ROI_MASK_HEAD.POOLER_TYPE='ROIAlign'" in check_input_conventions(cfg, found)[0]
    del data["MODEL"]["ROI_MASK_HEAD"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    found = conv.convention_from_config_file(str(tmp_path / "config.yaml"))
    assert check_input_conventions(cfg, found) == []  # the box head's ROIAlignV2 stands for the mask head's
    cfg.merge_from_list(["MODEL.ROI_MASK_HEAD.POOLER_TYPE", "ROIAlign"])
    assert [m.split(" disagrees")[0] for m in check_input_conventions(cfg, found)] == [
        "MODEL.ROI_MASK_HEAD.POOLER_TYPE='ROIAlign'"]


# --- detectron2 files: what the zoo recipe or the run's config.yaml records, the guess only without either ---
SCRATCH_9X_SYNCBN = "model_final_5ce33e.pkl"  # detectron2 model_zoo.py: Misc/scratch_mask_rcnn_R_50_FPN_9x_syncbn
ZOO_MASK_RCNN_3X = "model_final_f10217.pkl"  # COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x


def _write_d2(path, norm="SyncBN"):
    from contract_model import contract_model
    from writers import to_detectron2, write_pickle

    sd = to_detectron2(contract_model(norm=norm).state_dict())
    write_pickle(path, {"model": {k: v.numpy() for k, v in sd.items()}, "__author__": "Detectron2 Model Zoo"})


def _warned_keys(cfg, path):
    from gn_det.checkpoint import read_converted

    _, fmt = read_converted(str(path))
    return [m.split("=")[0] for m in check_input_conventions(cfg, fmt)], fmt.convention


def test_zoo_file_uses_its_recipe(tmp_path):
    """Misc/scratch_mask_rcnn_R_50_FPN_9x_syncbn records PIXEL_STD [57.375, 57.12, 58.395] and STRIDE_IN_1X1
    False: its correct config draws no warning, the MSRA defaults draw both (the norm guess had it backwards)."""
    _write_d2(tmp_path / SCRATCH_9X_SYNCBN)
    right = cfg_with("msra_caffe2.yaml")
    right.merge_from_list(["MODEL.PIXEL_STD", [57.375, 57.120, 58.395], "MODEL.RESNETS.STRIDE_IN_1X1", False])
    keys, convention = _warned_keys(right, tmp_path / SCRATCH_9X_SYNCBN)
    assert keys == [] and "Misc/scratch_mask_rcnn_R_50_FPN_9x_syncbn.yaml" in convention.how_known
    keys, _ = _warned_keys(get_cfg(), tmp_path / SCRATCH_9X_SYNCBN)
    assert keys == ["MODEL.PIXEL_STD", "MODEL.RESNETS.STRIDE_IN_1X1"]
    _write_d2(tmp_path / ZOO_MASK_RCNN_3X, norm="FrozenBN")
    assert _warned_keys(get_cfg(), tmp_path / ZOO_MASK_RCNN_3X)[0] == []
    wrong = get_cfg()
    wrong.merge_from_list(["MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlign"])
    assert _warned_keys(wrong, tmp_path / ZOO_MASK_RCNN_3X)[0] == ["MODEL.ROI_BOX_HEAD.POOLER_TYPE"]


def test_detectron2_run_reads_config_yaml_beside_it_else_guesses(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _write_d2(run / "model_final.pkl")
    keys, convention = _warned_keys(get_cfg(), run / "model_final.pkl")  # SyncBN stats: guessed MSRA, no warning
    assert keys == [] and convention.how_known.startswith("guessed from the checkpoint's norms")
    data = {"INPUT": {"FORMAT": "BGR"}, "MODEL": {"PIXEL_MEAN": [103.53, 116.28, 123.675], "PIXEL_STD": [57.375, 57.12, 58.395],
                                                "RESNETS": {"STRIDE_IN_1X1": False, "NORM": "SyncBN"},
                                                "ROI_BOX_HEAD": {"POOLER_TYPE": "ROIAlignV2"}}}
    (run / "config.yaml").write_text(yaml.safe_dump(data))  # detectron2's OUTPUT_DIR layout
    keys, convention = _warned_keys(get_cfg(), run / "model_final.pkl")
    assert keys == ["MODEL.PIXEL_STD", "MODEL.RESNETS.STRIDE_IN_1X1"]
    assert convention.how_known == f"recorded in {run / 'config.yaml'}" and convention.recipe == ""
    message = check_input_conventions(get_cfg(), convention)[0]
    assert message.endswith("; set the key to the weights' value")  # a detectron2 config is not merged into ours
