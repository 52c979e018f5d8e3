"""README's quick start, as a user runs it: generate shapes, train the tiny GN Mask R-CNN on CPU, report AP.

Slow (about 10 minutes on 2 idle cores): `python -m pytest -q -m slow tests/engine/test_quick_start.py`.
On a GPU (marked cuda; tools/gpu_check.sh runs it) with SOLVER.AMP off and on.
"""
import json
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_quick_start_learns_shapes(tmp_path):
    env = dict(os.environ, GN_DET_DATASETS=str(tmp_path / "datasets"))
    out = tmp_path / "output"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "tools/train_net.py", "--config", "configs/tiny/gn_mask_rcnn_shapes.yaml",
                           "OUTPUT_DIR", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    minutes = (time.perf_counter() - start) / 60
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((out / "inference" / "shapes_val" / "metrics.json").read_text())
    print(f"quick start: box AP {metrics['bbox']['AP']:.1f}, mask AP {metrics['segm']['AP']:.1f}, {minutes:.1f} min")
    assert "shapes_val: box AP" in proc.stdout and "iter:" in proc.stdout and "eta:" in proc.stdout
    assert metrics["bbox"]["AP"] >= 60.0
    assert metrics["segm"]["AP"] >= 50.0


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "amp"])
def test_quick_start_learns_shapes_on_cuda(tmp_path, amp):
    """README's quick start with the default MODEL.DEVICE (auto: the GPU), with and without SOLVER.AMP."""
    env = dict(os.environ, GN_DET_DATASETS=str(tmp_path / "datasets"))
    out = tmp_path / "output"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "tools/train_net.py", "--config", "configs/tiny/gn_mask_rcnn_shapes.yaml",
                           "OUTPUT_DIR", str(out), "SOLVER.AMP.ENABLED", str(amp)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    minutes = (time.perf_counter() - start) / 60
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "DEVICE: cuda:0" in (out / "config.yaml").read_text()
    metrics = json.loads((out / "inference" / "shapes_val" / "metrics.json").read_text())
    print(f"quick start on CUDA, amp={amp}: box AP {metrics['bbox']['AP']:.1f}, mask AP {metrics['segm']['AP']:.1f}, "
          f"{minutes:.1f} min")
    assert metrics["bbox"]["AP"] >= 60.0
