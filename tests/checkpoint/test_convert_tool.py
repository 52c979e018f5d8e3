"""tools/convert_weights.py IN OUT: any known format -> a gn_det .pth (atomic), same table printed."""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from gn_det.checkpoint import check_input_conventions, load_weights
from gn_det.config import get_cfg
from gn_det.modeling import build_model

from test_real_models import random_c2_resnet50_blobs
from writers import write_pickle

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tool():
    spec = importlib.util.spec_from_file_location("convert_weights", os.path.join(REPO, "tools", "convert_weights.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_convert_msra_pkl_without_config(tmp_path, capsys):
    blobs = random_c2_resnet50_blobs("bn", seed=7)
    write_pickle(tmp_path / "R-50.pkl", blobs)
    out = tmp_path / "converted" / "R-50.pth"
    assert _tool().main([str(tmp_path / "R-50.pkl"), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[format 'msra-c2']" in printed and "{fc1000_b,fc1000_w}" in printed
    assert f"Wrote {out}: " in printed
    assert sorted(os.listdir(out.parent)) == ["R-50.pth"]  # no temporary file left behind

    saved = torch.load(out, weights_only=True)
    assert all(k.startswith("backbone.bottom_up.") for k in saved["model"])
    assert saved["input_convention"]["input_format"] == "BGR" and saved["input_convention"]["stride_in_1x1"] is True

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "weights", "msra_caffe2.yaml"))
    direct, via = build_model(cfg).eval(), build_model(cfg).eval()
    load_weights(direct, str(tmp_path / "R-50.pkl"), verbose=False)
    report = load_weights(via, str(out), verbose=False)
    assert report.format.name == "gn_det" and report.format.convention.stride_in_1x1 is True
    assert check_input_conventions(cfg, report.format) == []
    assert [m.split("=")[0] for m in check_input_conventions(_rgb_cfg(), report.format)] == ["INPUT.FORMAT"]
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        a, b = direct.backbone.bottom_up(x), via.backbone.bottom_up(x)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0)


def _rgb_cfg():
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "weights", "msra_caffe2.yaml"))
    cfg.INPUT.FORMAT = "RGB"
    return cfg


def test_convert_refuses_unknown_format(tmp_path):
    torch.save({"encoder.weight": torch.zeros(1)}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="unrecognised weights format"):
        _tool().main([str(tmp_path / "x.pth"), str(tmp_path / "y.pth")])
    assert not (tmp_path / "y.pth").exists()
