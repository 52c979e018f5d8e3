"""One OUTPUT_DIR through a run's life on the real command line (umask 022): train; a second fresh run
refused; resume with a longer schedule (the current config's schedule, a warning naming the changes);
resume of the finished run (it evaluates); --eval-only from another directory with the recorded
config.yaml (absolute REGISTER_COCO paths; its config goes beside its results); --overwrite (starts
clean); convert_weights of the run's model_final.pth. Files are readable by group and others."""
from __future__ import annotations

import json
import os
import stat

import pytest
import torch
import yaml

from cli_runner import TINY_CONFIG, snapshot

TRAIN_NET = "tools/train_net.py"
D = "runs/life"  # OUTPUT_DIR, relative to the workspace (the working directory of the runs)
BASE_LR = 0.01  # tiny_gn.yaml; WARMUP_ITERS 2 there


def _metrics(out_dir):
    path = os.path.join(out_dir, "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def life(workspace, runner):
    """Run the steps in order; record each result and what the directory held after it."""
    root = str(workspace.root)
    out = os.path.join(root, D)
    data = ["--register-coco", "t", "train.json", "train", "--register-coco", "v", "val.json", "val",
            "DATASETS.TRAIN", "('t',)", "DATASETS.TEST", "('v',)", "OUTPUT_DIR", D]
    first = ["--config", TINY_CONFIG, *data, "SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "(2,)"]
    longer = ["--config", TINY_CONFIG, *data, "SOLVER.MAX_ITER", "6", "SOLVER.STEPS", "(5,)", "--resume"]
    elsewhere = os.path.join(root, "elsewhere")
    os.makedirs(elsewhere, exist_ok=True)
    steps = {}

    def step(name, argv, cwd=root, script=TRAIN_NET):
        result = runner.run(script, argv, cwd=cwd, umask=0o022)
        steps[name] = (result, snapshot(out), _metrics(out))
        return result

    step("train", first)
    step("fresh_again", first)
    step("resume_longer", longer)
    steps["ckpt_3_solver"] = torch.load(os.path.join(out, "model_0000003.pth"), weights_only=True)["scheduler"]["solver"]
    step("resume_finished", longer)
    step("eval_only_elsewhere", ["--config", os.path.join(out, "config.yaml"), "--eval-only", "MODEL.WEIGHTS",
                                 os.path.join(out, "model_final.pth"), "OUTPUT_DIR", out], cwd=elsewhere)
    with open(os.path.join(out, "inference", "config.yaml")) as f:
        steps["eval_config"] = yaml.safe_load(f)
    step("convert_beside_config", [os.path.join(out, "model_final.pth"), os.path.join(root, "converted", "a.pth")],
         script="tools/convert_weights.py")
    alone = os.path.join(root, "alone")
    os.makedirs(alone, exist_ok=True)
    with open(os.path.join(out, "model_final.pth"), "rb") as src, open(os.path.join(alone, "model_final.pth"), "wb") as dst:
        dst.write(src.read())
    step("convert_alone", [os.path.join(alone, "model_final.pth"), os.path.join(root, "converted", "b.pth")],
         script="tools/convert_weights.py")
    steps["final_model"] = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)["model"]
    steps["modes"] = {os.path.relpath(os.path.join(b, n), root): stat.S_IMODE(os.stat(os.path.join(b, n)).st_mode)
                      for top in (out, os.path.join(root, "converted")) for b, _, names in os.walk(top) for n in names}
    step("overwrite", ["--overwrite", *first[:-4], "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)"])
    return out, steps


def _ok(result):
    assert result.rc == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_fresh_run_trains_and_evaluates(life):
    out, steps = life
    result, files, metrics = steps["train"]
    _ok(result)
    assert {"config.yaml", "metrics.json", "log.txt", "last_checkpoint", "model_0000001.pth", "model_final.pth",
            "inference/v/metrics.json", "inference/v/coco_instances_results.json"} <= set(files)
    assert [r["iteration"] for r in metrics] == [0, 2] and "bbox/AP" in metrics[-1]


def test_register_coco_paths_are_recorded_absolute(life, workspace):
    out, steps = life
    _ok(steps["eval_only_elsewhere"][0])  # ran from another directory with the recorded config
    recorded = steps["eval_config"]
    root = str(workspace.root)
    assert recorded["DATASETS"]["REGISTER_COCO"] == [["t", f"{root}/train.json", f"{root}/train"],
                                                     ["v", f"{root}/val.json", f"{root}/val"]]


def test_second_fresh_run_is_refused_and_changes_nothing(life):
    out, steps = life
    result, after, _ = steps["fresh_again"]
    assert result.rc == 2 and result.err_lines == [
        f"train_net.py: error: OUTPUT_DIR '{D}' holds another run (last_checkpoint, model_0000001.pth, "
        "model_final.pth): pass --resume to continue it, --overwrite to delete it and start over, or another OUTPUT_DIR"]
    assert after == steps["train"][1]


def test_resume_follows_the_current_schedule_and_says_what_changed(life):
    out, steps = life
    result, files, _ = steps["resume_longer"]
    _ok(result)
    assert ("Resuming with the schedule of the current config, which differs from the checkpoint's: "
            "SOLVER.MAX_ITER 3 -> 6, SOLVER.STEPS [2] -> [5]; the LR follows the current config from iteration 3 on"
            in result.stdout)
    assert steps["ckpt_3_solver"]["STEPS"] == [5] and steps["ckpt_3_solver"]["MAX_ITER"] == 6


def test_resumed_lrs_follow_the_new_steps(life):
    """Iteration 3 trains at BASE_LR (new STEPS (5,); the checkpoint's (2,) would give 0.1x); 5 at 0.1x.
    metrics.json holds each iteration once: 0, 2 from the first run, 3, 5 from the resumed one."""
    out, steps = life
    metrics = steps["resume_longer"][2]
    assert [r["iteration"] for r in metrics] == [0, 2, 3, 5]
    lr = {r["iteration"]: r["lr"] for r in metrics}
    assert lr[2] == pytest.approx(BASE_LR * 0.1, rel=1e-12)  # first run: STEPS (2,)
    assert lr[3] == pytest.approx(BASE_LR, rel=1e-12) and lr[5] == pytest.approx(BASE_LR * 0.1, rel=1e-12)


def test_finished_run_resumed_evaluates_and_returns_results(life):
    out, steps = life
    result, files, metrics = steps["resume_finished"]
    _ok(result)
    assert "Training already finished: the checkpoint is at iteration 5 and SOLVER.MAX_ITER is 6; evaluating it" in result.stdout
    assert "Starting training from iteration" not in result.stdout
    assert "v: box AP " in result.stdout and "mask AP " in result.stdout  # the results are reported
    assert files["metrics.json"] == steps["resume_longer"][1]["metrics.json"]  # no new training lines
    assert "Evaluation results for v (percent):" in result.stdout


def test_eval_only_writes_its_config_beside_its_results(life):
    out, steps = life
    result, files, _ = steps["eval_only_elsewhere"]
    _ok(result)
    before = steps["resume_finished"][1]
    assert files["config.yaml"] == before["config.yaml"]  # the run's config.yaml is not replaced
    assert "inference/config.yaml" in files and "inference/config.yaml" not in before
    assert not os.path.exists(os.path.join(out, "..", "..", "elsewhere", "inference"))


def test_convert_uses_the_runs_config_or_infers_the_widths(life):
    out, steps = life
    beside, alone = steps["convert_beside_config"][0], steps["convert_alone"][0]
    _ok(beside), _ok(alone)
    assert f"loaded into the model built from {out}/config.yaml." in beside.stdout
    assert "loaded into the model built from the defaults and the shapes in the file." in alone.stdout
    count = [line for line in beside.stdout.splitlines() if line.startswith("Wrote ")][0].split(": ")[1].split()[0]
    assert f": {count} tensors in gn_det names" in alone.stdout
    a = torch.load(os.path.join(out, "..", "..", "converted", "a.pth"), weights_only=True)["model"]
    b = torch.load(os.path.join(out, "..", "..", "converted", "b.pth"), weights_only=True)["model"]
    final = steps["final_model"]
    assert set(a) == set(b) == set(final)
    for k in a:
        assert torch.equal(a[k], final[k]) and torch.equal(b[k], final[k]), k


def test_files_are_readable_by_group_and_others_under_umask_022(life):
    out, steps = life
    modes = steps["modes"]
    assert any(p.endswith("model_final.pth") for p in modes) and any(p.endswith("config.yaml") for p in modes)
    assert any(p.startswith("converted/") for p in modes) and any(p.endswith("coco_instances_results.json") for p in modes)
    wrong = {p: oct(m) for p, m in modes.items() if m != 0o644}
    assert wrong == {}


def test_overwrite_starts_clean(life):
    out, steps = life
    result, files, metrics = steps["overwrite"]
    _ok(result)
    assert "--overwrite: removed the earlier run's config.yaml, events.out.tfevents." in result.stdout
    assert "model_0000003.pth" not in files and "model_final.pth" in files
    assert [r["iteration"] for r in metrics] == [0, 1]
    assert sum(n.startswith("events.out.tfevents.") for n in files) == 1
    assert "Training already finished" not in open(os.path.join(out, "log.txt")).read()
    assert "inference/config.yaml" not in files
