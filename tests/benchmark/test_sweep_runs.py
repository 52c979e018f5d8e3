"""tools/norm_sweep.py's run loop with real tiny train_net runs (train, skip finished, skip diverged,
resume a run that has a checkpoint only), and tools/benchmark_table.py on the OUTPUT_DIR of a real
train_net run (not a hand-written one). About a minute on 2 busy cores: marked slow."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from gn_det.data import generate_shapes_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "tests", "engine", "tiny_mask_rcnn.yaml")

pytestmark = pytest.mark.slow


def _sweep(tmp_path, *args):
    env = dict(os.environ, GN_DET_DATASETS=str(tmp_path / "datasets"), PYTHONPATH=REPO, OMP_NUM_THREADS="2")
    cmd = [sys.executable, os.path.join(REPO, "tools", "norm_sweep.py"), "--config-dir", str(tmp_path / "cfg"),
           "--output-root", str(tmp_path / "sweep"), "--iters", "2", "--num-gpus", "1", "--seeds", "0",
           "--cost-images", "0", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    return proc


@pytest.fixture
def sweep_dirs(tmp_path):
    generate_shapes_dataset(str(tmp_path / "datasets" / "shapes"), num_train=4, num_val=2, size=64, seed=5)
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "gn.yaml").write_text(f'_BASE_: "{TINY}"\nDATASETS:\n  TRAIN: [shapes_train]\n  TEST: [shapes_val]\n'
                                 "MODEL: {DEVICE: cpu}\n")
    return tmp_path


def test_sweep_trains_skips_finished_and_diverged_and_resumes(sweep_dirs):
    tmp_path = sweep_dirs
    gn1, gn2 = tmp_path / "sweep" / "gn_1img", tmp_path / "sweep" / "gn_2img"
    # gn_2img: an earlier attempt that diverged (its log says so, nothing evaluated)
    gn2.mkdir(parents=True)
    (gn2 / "sweep_stdout.txt").write_text("FloatingPointError: non-finite loss at iteration 1\n")
    first = _sweep(tmp_path, "--only", "gn_1img,gn_2img")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "[norm_sweep] ran 1, skipped 1 finished, failed 0" in first.stdout
    assert (gn1 / "inference").is_dir() and (gn1 / "model_final.pth").is_file()
    assert (gn2 / "sweep_stdout.txt").read_text().count("\n") == 1  # the diverged run was not started again
    final = torch.load(gn1 / "model_final.pth", weights_only=True)
    assert final["iteration"] == 1

    # again: both skipped, nothing trained
    log_before = (gn1 / "sweep_stdout.txt").read_text()
    again = _sweep(tmp_path, "--only", "gn_1img,gn_2img")
    assert again.returncode == 0 and "[norm_sweep] ran 0, skipped 2 finished" in again.stdout
    assert (gn1 / "sweep_stdout.txt").read_text() == log_before

    # a run killed after its first checkpoint: resumed from it, then evaluated
    shutil.rmtree(gn1 / "inference")
    (gn1 / "model_final.pth").unlink()
    (gn1 / "last_checkpoint").write_text("model_0000000.pth")
    assert (gn1 / "model_0000000.pth").is_file()
    resumed = _sweep(tmp_path, "--only", "gn_1img")
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "gn_1img: resume -> " in resumed.stdout and " --resume " in resumed.stdout
    assert "Resumed from" in (gn1 / "log.txt").read_text()
    assert torch.load(gn1 / "model_final.pth", weights_only=True)["iteration"] == 1
    assert (gn1 / "inference").is_dir()
    wall = json.loads((tmp_path / "sweep" / "wall_times.json").read_text())
    assert set(wall) == {"gn_1img"} and wall["gn_1img"] > 0

    # benchmark_table on that real train_net OUTPUT_DIR: the AP it prints is the run's metrics.json's
    metrics = json.loads(next((gn1 / "inference").glob("*/metrics.json")).read_text())
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "benchmark_table.py"), f"{gn1}=tiny_gn",
                           "--format", "csv"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr[-2000:]
    header, row = proc.stdout.strip().splitlines()[:2]
    cells = dict(zip(header.split(","), row.split(",")))
    assert cells[next(k for k in cells if "run" in k.lower() or "config" in k.lower())].startswith("tiny_gn")
    box_ap = metrics["bbox"]["AP"]
    shown = [v for k, v in cells.items() if "box" in k.lower() and "ap" in k.lower() and "50" not in k and "75" not in k]
    assert shown, cells
    assert float(shown[0]) == pytest.approx(box_ap, abs=0.051)  # printed with one decimal
