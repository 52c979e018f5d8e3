"""tools/train_net.py end to end on a tiny shapes set: train + eval, --eval-only, exact resume after a
run dies part way, a dataset registered from the command line, and bad input with pinned messages."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from engine_toys import shapes64_register_flags
from gn_det.engine.train_loop import SimpleTrainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_mask_rcnn.yaml")
MAX_ITER = 5  # in tiny_mask_rcnn.yaml, with CHECKPOINT_PERIOD 2


def _load_tool():
    spec = importlib.util.spec_from_file_location("train_net_under_test", TRAIN_NET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_net = _load_tool()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    flags, ann = shapes64_register_flags(tmp_path_factory.mktemp("data") / "shapes64", "e2e")
    return flags, ann


def _argv(data, out_dir, *extra, opts=()):
    """Evaluations at iterations 1, 3 and 4: right after the checkpoints of 1 and 3 (resume checks that
    an evaluation does not move the training RNG streams)."""
    flags, _ = data
    return ["--config", CONFIG, *flags, *extra, "DATASETS.TRAIN", "('e2e_train',)", "DATASETS.TEST", "('e2e_val',)",
            "TEST.EVAL_PERIOD", "2", "OUTPUT_DIR", str(out_dir), *opts]


def _main(argv):
    return train_net.main(train_net.default_argument_parser().parse_args(argv))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run_full")
    results = _main(_argv(data, out))
    return out, results


def test_train_then_evaluate_writes_output_dir(trained):
    out, results = trained
    names = set(os.listdir(out))
    assert {"config.yaml", "metrics.json", "log.txt", "last_checkpoint", "model_final.pth", "inference"} <= names
    assert any(n.startswith("events.out.tfevents.") for n in names)
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert {"model_0000001.pth", "model_0000003.pth"} <= names
    lines = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    first = lines[0]
    assert first["iteration"] == 0
    for key in ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss_mask",
                "total_loss", "lr", "time", "data_time", "peak_mem_mb"):
        assert math.isfinite(first[key]), key
    assert first["total_loss"] == pytest.approx(sum(v for k, v in first.items() if k.startswith("loss_")))
    assert lines[-1]["iteration"] == MAX_ITER - 1 and "bbox/AP" in lines[-1] and "segm/AP" in lines[-1]
    ckpt = torch.load(out / "model_final.pth", weights_only=True)
    assert ckpt["iteration"] == MAX_ITER - 1 and ckpt["sampler"]["iteration"] == MAX_ITER
    inf = out / "inference" / "e2e_val"
    assert json.loads((inf / "metrics.json").read_text()).keys() == {"bbox", "segm"}
    assert set(results["e2e_val"]) == {"bbox", "segm"}
    assert "Rank 0 of 1; command line:" in (out / "log.txt").read_text()


def test_reported_ap_equals_independent_cocoeval(trained, data):
    out, results = trained
    _, ann = data
    preds = json.loads((out / "inference" / "e2e_val" / "coco_instances_results.json").read_text())
    gt = COCO(str(ann / "instances_val.json"))
    for task in ("bbox", "segm"):
        ours = results["e2e_val"][task]
        if not preds:
            assert math.isnan(ours["AP"])
            continue
        dets = preds if task == "segm" else [{k: v for k, v in p.items() if k != "segmentation"} for p in preds]
        ev = COCOeval(gt, gt.loadRes(dets), task)
        ev.evaluate(), ev.accumulate(), ev.summarize()
        for i, name in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl"]):
            want = ev.stats[i] * 100 if ev.stats[i] >= 0 else float("nan")
            assert ours[name] == pytest.approx(want, abs=1e-9, nan_ok=True), (task, name)


def test_eval_only_reproduces_final_evaluation(trained, data, tmp_path):
    out, results = trained
    again = _main(_argv(data, tmp_path, "--eval-only", opts=("MODEL.WEIGHTS", str(out / "model_final.pth"))))
    for task in ("bbox", "segm"):
        for k, v in results["e2e_val"][task].items():
            assert again["e2e_val"][task][k] == pytest.approx(v, nan_ok=True), (task, k)
    assert (tmp_path / "inference" / "e2e_val" / "coco_instances_results.json").is_file()
    assert not (tmp_path / "model_final.pth").exists()


def test_eval_only_resume_evaluates_the_last_checkpoint(trained, data, tmp_path):
    """detectron2's --eval-only --resume: OUTPUT_DIR's last_checkpoint, without MODEL.WEIGHTS."""
    out, results = trained
    (tmp_path / "model_final.pth").write_bytes((out / "model_final.pth").read_bytes())
    (tmp_path / "last_checkpoint").write_text("model_final.pth")
    again = _main(_argv(data, tmp_path, "--eval-only", "--resume"))
    for task in ("bbox", "segm"):
        for k, v in results["e2e_val"][task].items():
            assert again["e2e_val"][task][k] == pytest.approx(v, nan_ok=True), (task, k)
    assert (tmp_path / "inference" / "e2e_val" / "coco_instances_results.json").is_file()


def test_resume_after_dying_part_way_ends_bit_identical(trained, data, tmp_path, monkeypatch):
    full_out, _ = trained
    run_step = SimpleTrainer.run_step

    def dies_at_3(self):
        if self.iter == 3:  # after model_0000001.pth, before model_0000003.pth
            raise RuntimeError("simulated crash")
        run_step(self)

    with monkeypatch.context() as m:
        m.setattr(SimpleTrainer, "run_step", dies_at_3)
        with pytest.raises(RuntimeError, match="simulated crash"):
            _main(_argv(data, tmp_path))
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (tmp_path / "model_final.pth").exists()
    _main(_argv(data, tmp_path, "--resume"))
    a = torch.load(full_out / "model_final.pth", weights_only=True)
    b = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][k]["momentum_buffer"])
    resumed_iters = [json.loads(x)["iteration"] for x in (tmp_path / "metrics.json").read_text().splitlines()]
    assert resumed_iters[-1] == MAX_ITER - 1 and 2 in resumed_iters  # the resumed run started at iteration 2
    assert resumed_iters == sorted(set(resumed_iters))  # the crashed attempt's lines from 2 on were replaced


def test_output_dir_not_writable_fails_before_training(data, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as e:
        train_net.invoke_main(_argv(data, blocker / "out"))
    assert e.value.code == 2
    assert capsys.readouterr().err == (f"train_net.py: error: OUTPUT_DIR '{blocker / 'out'}' is not writable "
                                       f"('{blocker}' is a file); pass a writable directory, e.g. OUTPUT_DIR ./output\n")


def test_ims_per_batch_not_divisible_fails_before_spawning(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_net.invoke_main(_argv(data, tmp_path / "out", "--num-gpus", "2", opts=("SOLVER.IMS_PER_BATCH", "3")))
    assert e.value.code == 2
    assert capsys.readouterr().err == ("train_net.py: error: SOLVER.IMS_PER_BATCH=3 is not divisible by the number of "
                                       "processes (2); set SOLVER.IMS_PER_BATCH to a multiple of 2 or change "
                                       "--num-gpus/--num-machines\n")
    assert not os.listdir(tmp_path)


def test_non_finite_loss_stops_with_iteration_and_keeps_checkpoint(data, tmp_path):
    opts = ("SOLVER.BASE_LR", "1e30", "SOLVER.WARMUP_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", "1")
    with pytest.raises(FloatingPointError, match=r"Loss became non-finite at iteration (\d+): .*=(nan|inf)") as e:
        _main(_argv(data, tmp_path, opts=opts))
    failed_at = int(str(e.value).split("iteration ")[1].split(":")[0])
    assert failed_at >= 1
    last = (tmp_path / "last_checkpoint").read_text()
    assert last == f"model_{failed_at - 1:07d}.pth"
    assert torch.load(tmp_path / last, weights_only=True)["iteration"] == failed_at - 1
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_two_process_gloo_run_with_syncbn(data, tmp_path):
    """Two CPU processes joined by gloo, SyncBN in backbone and FPN, precise BN before the evaluation."""
    opts = ("MODEL.RESNETS.NORM", "SyncBN", "MODEL.FPN.NORM", "SyncBN", "SOLVER.MAX_ITER", "2",
            "SOLVER.STEPS", "(1,)", "TEST.PRECISE_BN.ENABLED", "True", "TEST.PRECISE_BN.NUM_ITER", "2")
    cmd = [sys.executable, TRAIN_NET, "--num-gpus", "2", *_argv(data, tmp_path, opts=opts)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Rank 0 of 2; command line:" in (tmp_path / "log.txt").read_text()
    assert (tmp_path / "log.txt.rank1").is_file()
    assert "PreciseBN: running statistics of" in (tmp_path / "log.txt").read_text()
    ckpt = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert len(ckpt["rng"]) == 2 and ckpt["sampler"]["world_size"] == 2
    means = [v for k, v in ckpt["model"].items() if k.endswith("running_mean")]
    assert means and all(torch.isfinite(m).all() for m in means)
    assert (tmp_path / "inference" / "e2e_val" / "metrics.json").is_file()
