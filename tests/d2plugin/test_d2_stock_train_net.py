"""detectron2's stock train_net, unchanged, trains and evaluates an SN Mask R-CNN with DETECTRON2_ENV_MODULE."""
import json
import os
import subprocess
import sys

import pytest

from d2_common import D2_CONFIGS, SKIP_REASON, TINY

pytest.importorskip("detectron2", reason=SKIP_REASON)

HERE = os.path.dirname(os.path.abspath(__file__))

# Registers the test's datasets at interpreter start (a stock script only knows detectron2's builtin ones).
SITECUSTOMIZE = '''import os
from detectron2.data.datasets import register_coco_instances
for name, json_file, root in (line.split("|") for line in os.environ["D2_TEST_DATASETS"].split(";")):
    register_coco_instances(name, {}, json_file, root)
'''


def _run(tmp_path, env_module, *extra):
    from gn_det.data.shapes import generate_shapes_dataset
    root = str(tmp_path / "ds")
    if not os.path.isdir(root):
        generate_shapes_dataset(root, num_train=6, num_val=3, size=64, seed=4)
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="2", D2_TEST_DATASETS=";".join(
                   f"st_{s}|{os.path.join(root, 'annotations', f'instances_{s}.json')}|{os.path.join(root, s)}"
                   for s in ("train", "val")))
    env.pop("DETECTRON2_ENV_MODULE", None)
    if env_module:
        env["DETECTRON2_ENV_MODULE"] = env_module
    out = tmp_path / "out"
    cmd = [sys.executable, os.path.join(HERE, "stock_train_net.py"), "--config-file",
           str(D2_CONFIGS / "mask_rcnn_R_50_FPN_2x_sn.yaml"), *extra, *TINY, "MODEL.RESNETS.DEPTH", "18",
           "MODEL.SN.USE_BN", "False", "MODEL.BACKBONE.FREEZE_AT", "0", "MODEL.ROI_BOX_HEAD.NUM_CONV", "1",
           "SOLVER.MAX_ITER", "4", "DATASETS.TRAIN", "('st_train',)", "DATASETS.TEST", "('st_val',)",
           "OUTPUT_DIR", str(out)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600), out


def test_stock_train_net_with_the_env_module_trains_and_evaluates(tmp_path):
    proc, out = _run(tmp_path, "gn_det.detectron2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model_final.pth").is_file()
    lines = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    losses = [line["total_loss"] for line in lines if "total_loss" in line]
    assert losses and all(loss == loss for loss in losses)  # finite (not NaN)
    assert "SwitchNorm2d" in (out / "log.txt").read_text()  # detectron2 logs the model it built
    assert "bbox" in proc.stdout + proc.stderr  # the COCO evaluation ran


def test_stock_train_net_without_the_env_module_does_not_know_gn_det_keys(tmp_path):
    proc, _ = _run(tmp_path, None)
    assert proc.returncode != 0 and "Non-existent config key: MODEL.SN" in proc.stderr  # the recipe's MODEL.SN node
