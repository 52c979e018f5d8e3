"""The norm sweep's cost columns (tools/norm_sweep.py --table-only): each recipe's inference GFLOPs and
training activation memory per image, measured once and cached until the config or weights change."""
import importlib.util
import json
import os

import pytest

from gn_det.benchmark import sweep_cost
from gn_det.benchmark.model_cost import count_flops, dataset_samples
from gn_det.benchmark.sweep import RECIPES

TINY = os.path.join(os.path.dirname(__file__), "..", "tools", "tiny_gn.yaml")


def _tool():
    spec = importlib.util.spec_from_file_location(
        "norm_sweep_cost_under_test", os.path.join(os.path.dirname(__file__), "..", "..", "tools", "norm_sweep.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_cost_columns_measured_once_and_cached(tmp_path, monkeypatch):
    from gn_det.config import config_from_args
    from gn_det.data import generate_shapes_dataset, register_from_cfg
    from gn_det.modeling import build_model

    data = tmp_path / "shapes"
    generate_shapes_dataset(str(data), num_train=2, num_val=2, size=64, seed=0)
    configs = tmp_path / "configs"
    configs.mkdir()
    for recipe in RECIPES:
        (configs / f"{recipe}.yaml").write_text("{}\n")
    register = [["sc_val", str(data / "annotations" / "instances_val.json"), str(data / "val")]]
    (configs / "gn.yaml").write_text(f"_BASE_: {os.path.abspath(TINY)!r}\nDATASETS:\n  REGISTER_COCO: {json.dumps(register)}\n"
                                     "  TEST: ['sc_val']\n")
    out = tmp_path / "out"
    out.mkdir()
    argv = ["--table-only", "--config-dir", str(configs), "--output-root", str(out), "--only", "gn,bn",
            "--cost-images", "1"]
    assert _tool().main(argv) == 0
    md = (out / "norm_sweep.md").read_text()
    assert "| GFLOPs | act. mem (MiB) | status |" in md
    cache = json.loads((out / sweep_cost.COST_FILE).read_text())
    assert cache["bn"]["gflops"] is None  # "{}": no DATASETS.TEST, nothing to measure on
    cfg = config_from_args(str(configs / "gn.yaml"), ["MODEL.DEVICE", "cpu"])
    register_from_cfg(cfg)
    model = build_model(cfg)
    samples = dataset_samples(cfg, "sc_val", 1)
    # the trunk's FLOPs do not depend on the weights; the heads' depend on the detections (random here)
    assert cache["gn"]["gflops"] > count_flops(model, [(samples[0].test_image, samples[0].original_size)]).by_part["res5"]
    assert cache["gn"]["act_mib"] > 0
    monkeypatch.setattr(sweep_cost, "recipe_cost", lambda *a: pytest.fail("measured again despite the cache"))
    assert _tool().main(argv) == 0
    assert f"{cache['gn']['gflops']:.2f}" in (out / "norm_sweep.md").read_text()
