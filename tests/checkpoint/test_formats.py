"""Each known format, written by hand from its convention (writers.py), loads into a model with
docs/INTERFACES.md's names: the right tensors land in the right places, the report says what happened."""
from __future__ import annotations

import io
import logging
import re

import pytest
import torch

from gn_det.checkpoint import WeightsFileError, load_weights
from gn_det.checkpoint import load as load_module

from contract_model import contract_model
from writers import (BU, to_detectron2, to_detectron_c2_detector_blobs, to_fair_gn_pkl_blobs, to_msra_pkl_blobs, to_sn_authors, to_torchvision,
                     write_pickle)


def randomized(model, seed=0):
    """Random values in every tensor (positive where a variance is expected), so misplaced loads show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                r = torch.rand(t.shape, generator=g) + 0.5 if "running_var" in name else torch.randn(t.shape, generator=g)
                t.copy_(r)
    return model


def assert_same(a, b, keys):
    sa, sb = a.state_dict(), b.state_dict()
    for k in keys:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


def bottom_up_keys(model):
    return [k for k in model.state_dict() if k.startswith(BU) and not k.endswith("num_batches_tracked")]


@pytest.mark.parametrize("wrap", [False, True])
def test_ours_model_only_and_training_checkpoint(tmp_path, wrap, capsys, monkeypatch):
    src = randomized(contract_model())
    sd = src.state_dict()
    obj = {"model": sd, "optimizer": {"state": {}}, "iteration": 7} if wrap else sd
    torch.save(obj, tmp_path / "w.pth")
    dst = contract_model()
    # no logging set up (a fresh logger without handlers): the table is printed
    monkeypatch.setattr(load_module, "logger", logging.Logger("isolated"))
    report = load_weights(dst, str(tmp_path / "w.pth"))
    assert report.format.name == "gn_det"
    assert_same(src, dst, sd.keys())
    assert sorted(report.matched) == sorted(sd) and not report.missing and not report.unexpected
    out = capsys.readouterr().out
    assert out.count("[format 'gn_det']") == 1
    assert re.search(rf"^  matched +\| +{len(sd)} \| $", out, re.M) and re.search(r"^  missing .*\| +0 \| $", out, re.M)


def test_torchvision_resnet_state_dict(tmp_path):
    src = randomized(contract_model(norm="FrozenBN"))
    torch.save(to_torchvision(src.state_dict()), tmp_path / "resnet50-0676ba61.pth")
    dst = contract_model(norm="FrozenBN")
    report = load_weights(dst, str(tmp_path / "resnet50-0676ba61.pth"), verbose=False)
    assert report.format.name == "torchvision-resnet"
    assert_same(src, dst, bottom_up_keys(src))
    assert sorted(report.unexpected) == ["fc.bias", "fc.weight"]
    assert sorted(report.missing) == sorted(k for k in src.state_dict() if not k.startswith(BU))
    assert report.format.convention.stride_in_1x1 is False and report.format.convention.input_format == "RGB"


def test_sn_authors_checkpoint(tmp_path):
    src = randomized(contract_model(norm="SN"))
    torch.save(to_sn_authors(src.state_dict()), tmp_path / "resnet50v1_sn.pth.tar")
    dst = contract_model(norm="SN")
    report = load_weights(dst, str(tmp_path / "resnet50v1_sn.pth.tar"), verbose=False)
    assert report.format.name == "sn-imagenet"
    assert_same(src, dst, bottom_up_keys(src))
    assert not report.shape_mismatched and not report.norm_mismatches
    assert "removed the 'module.' prefix (DataParallel)" in report.notes


@pytest.mark.parametrize("norm", ["FrozenBN", "BN"])
def test_msra_pkl_folded_bn_is_exact(tmp_path, norm):
    """Each norm layer after loading computes Caffe2's AffineChannel y = s * x + b (float64 reference)."""
    src = randomized(contract_model(norm=norm))
    eps = src.backbone.bottom_up.stem.conv1.norm.eps
    blobs = to_msra_pkl_blobs(src.state_dict(), eps)
    write_pickle(tmp_path / "R-50.pkl", blobs)
    dst = contract_model(norm=norm).eval()
    report = load_weights(dst, str(tmp_path / "R-50.pkl"), verbose=False)
    assert report.format.name == "msra-c2"
    assert report.format.convention.stride_in_1x1 is True and report.format.convention.input_format == "BGR"
    assert sorted(report.unexpected) == ["fc1000_b", "fc1000_w"]
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    norms = {"stem.conv1.norm": "res_conv1_bn", "res3.0.conv2.norm": "res3_0_branch2b_bn",
             "res5.0.shortcut.norm": "res5_0_branch1_bn"}
    for ours, c2 in norms.items():
        module = dst.get_submodule(BU + ours)
        s = torch.from_numpy(blobs[c2 + "_s"]).double()
        b = torch.from_numpy(blobs[c2 + "_b"]).double()
        c = s.numel()
        xi = x.repeat(1, c // 4 + 1, 1, 1)[:, :c].float()
        expected = xi.double() * s[None, :, None, None] + b[None, :, None, None]
        torch.testing.assert_close(module(xi).double(), expected, rtol=1e-6, atol=1e-6)
    assert_same(src, dst, [k for k in bottom_up_keys(src) if ".norm." not in k])
    assert any("all-zero conv biases" in n for n in report.notes)


def test_fair_gn_pkl(tmp_path):
    src = randomized(contract_model(norm="GN"))
    write_pickle(tmp_path / "R-50-GN.pkl", to_fair_gn_pkl_blobs(src.state_dict()))
    dst = contract_model(norm="GN")
    report = load_weights(dst, str(tmp_path / "R-50-GN.pkl"), verbose=False)
    assert report.format.name == "fair-c2-gn"
    assert report.format.convention.stride_in_1x1 is False and report.format.convention.input_format == "BGR"
    assert_same(src, dst, bottom_up_keys(src))
    assert not report.unexpected and not report.norm_mismatches


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_detectron2_detector_checkpoint(tmp_path, suffix):
    src = randomized(contract_model(norm="FrozenBN", num_classes=3))
    d2 = to_detectron2(src.state_dict())
    path = tmp_path / f"model_final{suffix}"
    if suffix == ".pkl":
        write_pickle(path, {"model": {k: v.numpy() for k, v in d2.items()}, "__author__": "Detectron2 Model Zoo"})
    else:
        torch.save({"model": d2, "optimizer": {}, "iteration": 90000}, path)
    dst = contract_model(norm="FrozenBN", num_classes=3)
    report = load_weights(dst, str(path), verbose=False)
    assert report.format.name == "detectron2"
    assert not report.missing and not report.unexpected and not report.skipped_predictors
    predictors = ("roi_heads.box_predictor.bbox_pred.", "roi_heads.mask_predictor.predictor.")
    assert_same(src, dst, [k for k in src.state_dict() if not k.startswith(predictors)])
    s, d = src.state_dict(), dst.state_dict()
    for key, bg_rows in (("roi_heads.box_predictor.bbox_pred.weight", 4), ("roi_heads.mask_predictor.predictor.weight", 1)):
        torch.testing.assert_close(d[key][bg_rows:], s[key][bg_rows:], rtol=0, atol=0)
        assert not torch.any(d[key][:bg_rows])  # background rows: zeros, never read by torchvision


def test_other_class_count_skips_predictors_only(tmp_path):
    src = randomized(contract_model(num_classes=3))
    torch.save(to_detectron2(src.state_dict()), tmp_path / "d2.pth")
    dst = contract_model(num_classes=5)
    init = {k: v.clone() for k, v in dst.state_dict().items()}
    report = load_weights(dst, str(tmp_path / "d2.pth"), verbose=False)
    skipped = sorted({k.rsplit(".", 1)[0] for k, _, _ in report.skipped_predictors})
    assert skipped == ["roi_heads.box_predictor.bbox_pred", "roi_heads.box_predictor.cls_score",
                       "roi_heads.mask_predictor.predictor"]
    assert not report.missing and not report.shape_mismatched
    for k, v in dst.state_dict().items():
        if k.startswith(tuple(skipped)):
            torch.testing.assert_close(v, init[k], rtol=0, atol=0)  # left at their initialisation
    assert_same(src, dst, [k for k in src.state_dict() if not k.startswith(tuple(skipped))])
    assert ("Skipped roi_heads.box_predictor.cls_score: 4 outputs in the checkpoint, 6 in the model "
            "(another class count): re-initialised, to be trained on the new classes") in report.table()


def test_bn_weights_into_gn_model_reported_not_loaded(tmp_path):
    src = randomized(contract_model(norm="FrozenBN"))
    write_pickle(tmp_path / "R-50.pkl", to_msra_pkl_blobs(src.state_dict(), 1e-5))
    dst = contract_model(norm="GN")
    init = {k: v.clone() for k, v in dst.state_dict().items()}
    report = load_weights(dst, str(tmp_path / "R-50.pkl"), verbose=False)
    assert len(report.norm_mismatches) == 17  # stem + 4 blocks x (3 convs + shortcut)
    for k, v in dst.state_dict().items():
        if ".norm." in k:
            torch.testing.assert_close(v, init[k], rtol=0, atol=0)
    assert_same(src, dst, [k for k in bottom_up_keys(src) if ".norm." not in k])
    assert ("Norm kind mismatch: 17 norm layers hold BN-folded parameters/statistics but the model uses GN "
            "there; they were NOT loaded") in report.table()


def test_unknown_format_lists_known_ones(tmp_path):
    torch.save({"encoder.layers.0.weight": torch.zeros(2)}, tmp_path / "bert.pth")
    with pytest.raises(WeightsFileError) as e:
        load_weights(contract_model(), str(tmp_path / "bert.pth"))
    text = str(e.value)
    assert text.startswith(f"{tmp_path / 'bert.pth'}: unrecognised weights format (first keys: encoder.layers.0.weight)")
    for name in ("gn_det", "detectron2", "msra-c2", "fair-c2-gn", "torchvision-resnet", "sn-imagenet"):
        assert f"  - {name}: " in text


def test_nothing_fits_is_an_error(tmp_path):
    torch.save({"roi_heads.keypoint_head.conv1.weight": torch.zeros(2)}, tmp_path / "kp.pth")
    with pytest.raises(WeightsFileError, match="none of its 1 tensors fits the model"):
        load_weights(contract_model(), str(tmp_path / "kp.pth"), verbose=False)


def test_detectron_c2_detector_pkl(tmp_path):
    src = randomized(contract_model(norm="FrozenBN", num_classes=3))
    eps = src.backbone.bottom_up.stem.conv1.norm.eps
    write_pickle(tmp_path / "model_final.pkl", {"blobs": to_detectron_c2_detector_blobs(src.state_dict(), eps),
                                                "cfg": "MODEL: {TYPE: generalized_rcnn}"})
    dst = contract_model(norm="FrozenBN", num_classes=3)
    report = load_weights(dst, str(tmp_path / "model_final.pkl"), verbose=False)
    assert report.format.name == "detectron-c2-detector"
    assert not report.missing and not report.skipped_predictors and not report.shape_mismatched
    assert sorted(report.unexpected) == ["fc1000_b", "fc1000_w"]
    norms = ".norm."
    assert_same(src, dst, [k for k in src.state_dict() if norms not in k])  # heads already torchvision-ordered


def test_sn_with_bn_branch_into_batch_free_sn_is_a_norm_mismatch(tmp_path):
    from gn_det.layers import SNOptions, get_norm

    src = randomized(contract_model(norm="SN"))
    torch.save(to_sn_authors(src.state_dict()), tmp_path / "sn.pth")
    dst = contract_model(norm="SN")
    for name, module in list(dst.named_modules()):
        if name.endswith(".norm"):  # batch-free SN (MODEL.SN.USE_BN False): importance over IN and LN only
            parent, _, leaf = name.rpartition(".")
            free = get_norm("SN", module.weight.numel(), SNOptions(use_bn=False))
            setattr(dst.get_submodule(parent), leaf, free)
    report = load_weights(dst, str(tmp_path / "sn.pth"), verbose=False)
    assert {(m.checkpoint_kind, m.model_kind) for m in report.norm_mismatches} == {("SN", "SN without BN branch")}
    assert len(report.norm_mismatches) == 17 and not report.shape_mismatched
    assert sorted(report.unexpected) == ["fc.bias", "fc.weight"]


def test_cfg_given_to_load_weights_checks_input_conventions(tmp_path):
    from gn_det.config import get_cfg

    src = randomized(contract_model(norm="FrozenBN"))
    torch.save(to_torchvision(src.state_dict()), tmp_path / "resnet50.pth")
    cfg = get_cfg()  # BGR, std 1, stride in 1x1: all wrong for torchvision weights
    report = load_weights(contract_model(norm="FrozenBN"), str(tmp_path / "resnet50.pth"), cfg=cfg, verbose=False)
    assert [w.split("=")[0] for w in report.convention_warnings] == [
        "INPUT.FORMAT", "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD", "MODEL.RESNETS.STRIDE_IN_1X1"]
    assert "WARNING: INPUT.FORMAT='BGR' disagrees with MODEL.WEIGHTS" in report.table()


def test_detectron2_class_agnostic_heads_are_repeated_per_class(tmp_path):
    """CLS_AGNOSTIC_BBOX_REG / CLS_AGNOSTIC_MASK: one set of deltas / one mask serves every class, so each
    torchvision class row gets a copy (torchvision picks the row of the predicted class)."""
    src = randomized(contract_model(num_classes=3))
    d2 = to_detectron2(src.state_dict())
    for key in ("roi_heads.box_predictor.bbox_pred.weight", "roi_heads.box_predictor.bbox_pred.bias"):
        d2[key] = d2[key][:4]  # detectron2's class-agnostic regression: 4 outputs
    for key in ("roi_heads.mask_head.predictor.weight", "roi_heads.mask_head.predictor.bias"):
        d2[key] = d2[key][:1]  # class-agnostic mask: 1 channel
    torch.save(d2, tmp_path / "agnostic.pth")
    dst = contract_model(num_classes=3)
    report = load_weights(dst, str(tmp_path / "agnostic.pth"), verbose=False)
    assert not report.skipped_predictors and not report.shape_mismatched
    sd = dst.state_dict()
    for c in range(4):
        torch.testing.assert_close(sd["roi_heads.box_predictor.bbox_pred.weight"][4 * c:4 * c + 4],
                                   d2["roi_heads.box_predictor.bbox_pred.weight"], rtol=0, atol=0)
        torch.testing.assert_close(sd["roi_heads.mask_predictor.predictor.weight"][c],
                                   d2["roi_heads.mask_head.predictor.weight"][0], rtol=0, atol=0)


def test_table_goes_to_the_log_when_logging_is_set_up(tmp_path, capsys, monkeypatch):
    torch.save(randomized(contract_model()).state_dict(), tmp_path / "w.pth")
    logger = logging.Logger("configured")  # as the tools' setup does: a handler, INFO level
    stream = io.StringIO()
    logger.addHandler(logging.StreamHandler(stream))
    logger.setLevel(logging.INFO)
    monkeypatch.setattr(load_module, "logger", logger)
    load_weights(contract_model(), str(tmp_path / "w.pth"))
    assert stream.getvalue().count("[format 'gn_det']") == 1
    assert "[format 'gn_det']" not in capsys.readouterr().out
