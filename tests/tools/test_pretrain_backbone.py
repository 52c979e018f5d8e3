"""tools/pretrain_backbone.py: a short run learns (held-out accuracy above chance), writes what the
engine writes (config.yaml, metrics.json with the loss and the accuracy, checkpoints, model_final.pth
that a detector loads), resumes, and answers mistakes in one line."""
import json
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "pretrain_backbone.py")
BN = os.path.join(REPO, "configs", "tiny", "pretrain", "R_18_bn.yaml")
# 4 classes (the stripe orientations), 32 px, 32 images per step, the ResNet up to res3 (the classifier
# pools the last stage built): about 0.2 s per step on 2 cores
SMALL = ["PRETRAIN.NUM_CLASSES", "4", "PRETRAIN.IMAGE_SIZE", "32", "PRETRAIN.NUM_VAL_IMAGES", "256",
         "SOLVER.IMS_PER_BATCH", "32", "SOLVER.BASE_LR", "0.05", "SOLVER.WARMUP_ITERS", "5",
         "MODEL.RESNETS.OUT_FEATURES", '["res3"]']


def _tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pretrain_backbone_under_test", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _metrics(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.slow  # ~30 s on 2 shared cores: 44 training steps, 3 evaluations, a resume
def test_short_run_learns_writes_and_resumes(tmp_path):
    tool = _tool()
    out = str(tmp_path / "bn")
    tool.invoke_main(["--config", BN, *SMALL, "SOLVER.MAX_ITER", "40", "SOLVER.STEPS", "(35,)",
                      "SOLVER.CHECKPOINT_PERIOD", "20", "TEST.EVAL_PERIOD", "20", "OUTPUT_DIR", out])
    lines = _metrics(out)
    accuracy = [line["classification/accuracy"] for line in lines if "classification/accuracy" in line]
    assert len(accuracy) == 2
    # chance is 25 %; 256 held-out images put its 3-sigma band below 33 % (measured: 93 %)
    assert accuracy[-1] > 60.0, accuracy
    losses = [line["loss_cls"] for line in lines if "loss_cls" in line]
    assert losses[-1] < losses[0]
    for name in ("config.yaml", "model_0000019.pth", "model_final.pth", "last_checkpoint"):
        assert os.path.isfile(os.path.join(out, name)), name
    with open(os.path.join(out, "inference", "textures_val", "metrics.json")) as f:
        assert json.load(f)["classification"]["accuracy"] == pytest.approx(accuracy[-1])
    final = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)
    assert final["iteration"] == 39 and final["sampler"] == {"position": 40}
    assert {k.split(".")[0] for k in final["model"]} == {"backbone", "pretrain_head"}

    # --resume continues at iteration 40 with a longer schedule
    tool.invoke_main(["--config", BN, "--resume", *SMALL, "SOLVER.MAX_ITER", "44", "SOLVER.STEPS", "(35,)",
                      "SOLVER.CHECKPOINT_PERIOD", "20", "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", out])
    resumed = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)
    assert resumed["iteration"] == 43 and resumed["sampler"] == {"position": 44}
    assert max(line["iteration"] for line in _metrics(out)) == 43

    # its stem..res3 load into the FrozenBN detection recipe under the same names; the fine-tuning check
    # refuses it for lacking res4 and res5
    from gn_det.checkpoint import load_weights
    from gn_det.checkpoint.pretrained import check_backbone_report
    from gn_det.config import get_cfg
    from gn_det.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "tiny", "finetune", "frozenbn.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    report = load_weights(model, os.path.join(out, "model_final.pth"), verbose=False)
    assert not report.unexpected and not report.norm_mismatches
    state = model.state_dict()
    loaded = [k for k in resumed["model"] if k.startswith("backbone.") and not k.endswith("num_batches_tracked")]
    assert any(k.endswith("res3.1.conv2.norm.running_var") for k in loaded)
    for key in loaded:
        torch.testing.assert_close(state[key], resumed["model"][key], rtol=0, atol=0, msg=key)
    with pytest.raises(ValueError, match="backbone tensors did not load .*res4"):
        check_backbone_report(report)


@pytest.mark.parametrize("args,message", [
    (["--config", "nope.yaml"], "nope.yaml"),
    (["--config", BN, "MODEL.WEIGHTS", "x.pth"], "pretraining starts from a random initialisation"),
    (["--config", BN, "PRETRAIN.NUM_CLASSES", "9"], "PRETRAIN.NUM_CLASSES=9 must be in [2, 8]"),
    (["--config", BN, "SOLVER.IMS_PER_BATCH", "3", "--num-gpus", "2"], "SOLVER.IMS_PER_BATCH=3 is not divisible"),
    (["--config", BN, "--resume", "--overwrite"], "--resume and --overwrite contradict each other"),
])
def test_mistakes_are_one_line(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        _tool().invoke_main([*args, "OUTPUT_DIR", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pretrain_backbone.py: error: ") and message in lines[0], lines
    assert not (tmp_path / "o").exists()  # nothing written


def test_another_run_in_output_dir_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "model_0000009.pth").write_bytes(b"")
    run = subprocess.run([sys.executable, TOOL, "--config", BN, "OUTPUT_DIR", str(out)], capture_output=True,
                         text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    assert run.returncode == 2 and "holds another run" in run.stderr and "--resume" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
