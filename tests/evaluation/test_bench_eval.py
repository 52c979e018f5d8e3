"""benchmarks/bench_eval.py runs and reports both backends on the same results (figures, not asserted)."""
import importlib.util
import os
import re

import pytest

HAS_FASTER = importlib.util.find_spec("faster_coco_eval") is not None


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_eval_under_test", os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "bench_eval.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthetic_set_is_deterministic_and_mask_rcnn_like():
    bench = _bench()
    gt, results = bench.synthetic_set(4, seed=3)
    again = bench.synthetic_set(4, seed=3)
    assert (gt, results) == again and len(results) == 4 * bench.DETS_PER_IMAGE
    assert {r["image_id"] for r in results} == {1, 2, 3, 4} and isinstance(results[0]["segmentation"]["counts"], str)


@pytest.mark.skipif(not HAS_FASTER, reason="faster-coco-eval is not installed: pip install -e '.[faster-coco-eval]'")
def test_bench_eval_prints_times_speedup_and_ap_difference(capsys):
    assert _bench().main(["--images", "4", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^faster-coco-eval\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+$", out, re.M)
    diff = float(re.search(r"largest AP difference over \d+ numbers: ([\d.e+-]+) percent points", out).group(1))
    assert diff <= 1e-2 and "speed-up, total:" in out  # 1e-4 on COCOeval's 0-1 scale
