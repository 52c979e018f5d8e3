"""README's "Fine-tune on your own dataset" steps, run exactly as written (read from README.md itself),
on a tiny 3-class dataset and random FAIR-format R-50-GN weights, in a directory laid out as the README
assumes (the recipe at the root, configs/ and tools/ beside it, data/mine/, weights/).

The commands are the README's, with only size overrides appended to the training and evaluation
commands (tiny MAX_ITER and images), so step 5 ("the same command plus --eval-only MODEL.WEIGHTS ...")
also checks that a flag after the KEY VALUE overrides is a flag.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import shlex
import shutil

import numpy as np
import pytest

from cli_runner import REPO, run_subprocess

TINY = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "100",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.MAX_SIZE_TEST", "96", "DATALOADER.NUM_WORKERS", "0", "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100", "MODEL.RPN.PRE_NMS_TOPK_TEST", "200", "MODEL.RPN.POST_NMS_TOPK_TEST",
        "100", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "SEED", "0"]


def readme_steps():
    """(recipe YAML, convert command, train command) from README.md's fine-tuning section, and step 5's
    added arguments."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Fine-tune on your own dataset", 1)[1].split("\n## ", 1)[0]
    recipe = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    recipe = "\n".join(line[3:] if line.startswith("   ") else line for line in recipe.splitlines())
    convert = re.search(r"`(python tools/convert_weights.py [^`]*)`", section).group(1)
    train = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    plus = re.search(r"the same command plus `([^`]*)`", section).group(1)
    return recipe, shlex.split(convert), shlex.split(train), shlex.split(plus)


def fair_r50_gn_blobs(seed=0):
    """Random R-50 blobs in FAIR's Caffe2 GN naming (conv1_w, conv1_gn_{s,b}, res{k}_{i}_branch{..}_{w,gn_s,gn_b})."""
    rng = np.random.default_rng(seed)
    blobs = {}

    def conv_gn(name, cout, cin, k, norm_name=None):
        blobs[name + "_w"] = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        blobs[(norm_name or name) + "_gn_s"] = rng.uniform(0.5, 1.0, cout).astype(np.float32)
        blobs[(norm_name or name) + "_gn_b"] = rng.normal(0, 0.1, cout).astype(np.float32)

    conv_gn("conv1", 64, 3, 7)
    cin = 64
    for stage, n in zip(range(2, 6), (3, 4, 6, 3)):
        mid = 64 * 2 ** (stage - 2)
        for i in range(n):
            p = f"res{stage}_{i}"
            conv_gn(p + "_branch2a", mid, cin, 1)
            conv_gn(p + "_branch2b", mid, mid, 3)
            conv_gn(p + "_branch2c", mid * 4, mid, 1)
            if i == 0:
                conv_gn(p + "_branch1", mid * 4, cin, 1)
            cin = mid * 4
    blobs["fc1000_w"] = rng.standard_normal((1000, 2048)).astype(np.float32) * 0.01
    blobs["fc1000_b"] = np.zeros(1000, np.float32)
    return blobs


def three_classes(src_json, dst_json):
    """The shapes json relabelled to 3 categories: circle, square, pointy (triangle and star)."""
    with open(src_json) as f:
        data = json.load(f)
    names = {c["id"]: c["name"] for c in data["categories"]}
    new = {"circle": 1, "square": 2, "triangle": 3, "star": 3}
    data["categories"] = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "pointy"}]
    for ann in data["annotations"]:
        ann["category_id"] = new[names[ann["category_id"]]]
    with open(dst_json, "w") as f:
        json.dump(data, f)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A directory laid out as the README's steps assume, with the data and weights they name."""
    from gn_det.data import generate_shapes_dataset

    root = tmp_path_factory.mktemp("my_project")
    for name in ("configs", "tools"):
        os.symlink(os.path.join(REPO, name), root / name)
    shapes = root / "shapes"
    generate_shapes_dataset(str(shapes), num_train=4, num_val=2, size=64, seed=4)
    mine = root / "data" / "mine"
    mine.mkdir(parents=True)
    for split in ("train", "val"):
        shutil.move(str(shapes / split), str(mine / split))
        three_classes(shapes / "annotations" / f"instances_{split}.json", mine / f"{split}.json")
    (root / "weights").mkdir()
    with open(root / "weights" / "R-50-GN.pkl", "wb") as f:
        pickle.dump(fair_r50_gn_blobs(), f, protocol=2)
    return root


def _run(command, project, extra=(), runner=None):
    """``python tools/X.py ...`` in the project: through the tool runner (quick) or a real process."""
    assert command[:2] == ["python", command[1]] and command[1].startswith("tools/")
    argv = list(command[2:]) + list(extra)
    if runner is not None:
        result = runner.run(command[1], argv, cwd=str(project))
    else:
        result = run_subprocess(command[1], argv, cwd=str(project),
                                env={"GN_DET_DATASETS": str(project / "datasets"), "OMP_NUM_THREADS": "2"})
    assert result.rc == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


@pytest.mark.parametrize("max_iter", [pytest.param(2, id="quick"), pytest.param(10, id="longer", marks=pytest.mark.slow)])
def test_readme_finetune_steps_work_as_written(project, max_iter, request):
    """Quick: the commands through the tool runner with MAX_ITER 2; slow: real processes, 10 iterations."""
    runner = request.getfixturevalue("runner") if max_iter == 2 else None
    recipe, convert, train, plus = readme_steps()
    assert "--eval-only" in plus and train[-2:] == ["OUTPUT_DIR", "output/mine_gn"]
    (project / "my_gn_finetune.yaml").write_text(recipe)  # step 2, at the root as the README says
    shutil.rmtree(project / "output", ignore_errors=True)

    converted = _run(convert, project, runner=runner)  # step 3
    assert "[format 'fair-c2-gn']" in converted.stdout and (project / "weights" / "R-50-GN.pth").is_file()

    tiny = TINY + ["SOLVER.MAX_ITER", str(max_iter)]
    trained = _run(train, project, tiny, runner=runner)  # step 4
    log = (project / "output" / "mine_gn" / "log.txt").read_text()
    assert "[format 'fair-c2-gn']" in log and "WARNING: " not in log  # the snippet's input convention fits
    # the R-50's 53 convs (stem, 16 blocks x 3, 4 shortcuts) with their GN scale and bias: all loaded
    assert re.search(r"^  matched +\| +159 \|", log, re.M) and re.search(r"^  unexpected .*\| +2 \| \{fc1000_b,fc1000_w\}$", log, re.M)
    assert (project / "output" / "mine_gn" / "model_final.pth").is_file()

    evaluated = _run(train, project, tiny + plus, runner=runner)  # step 5: the same command plus --eval-only MODEL.WEIGHTS ...
    metrics = json.loads((project / "output" / "mine_gn" / "inference" / "mine_val" / "metrics.json").read_text())
    assert set(metrics) == {"bbox", "segm"} and {"AP", "AP-circle", "AP-square", "AP-pointy"} <= set(metrics["bbox"])
    assert "mine_val: box AP" in evaluated.stdout and trained.rc == 0
