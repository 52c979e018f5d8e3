"""Units behind train_net's checks and resume: ResumableSchedule (the current config's schedule on
resume), clean_output_dir (--overwrite), the OUTPUT_DIR probe, the FREEZE_AT-without-weights warning."""
from __future__ import annotations

import logging
import os

import pytest
import torch

from gn_det.config import get_cfg
from gn_det.data import DatasetCatalog, MetadataCatalog, generate_shapes_dataset, register_coco_instances
from gn_det.engine import ResumableSchedule, build_lr_scheduler, clean_output_dir, validate_run
from gn_det.engine.validate import check_output_dir_writable
from gn_det.utils.cli import UserError

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_mask_rcnn.yaml")


def _schedule(max_iter, steps, base_lr=0.1, warmup=2):
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.MAX_ITER", max_iter, "SOLVER.STEPS", steps, "SOLVER.BASE_LR", base_lr,
                         "SOLVER.WARMUP_ITERS", warmup, "SOLVER.GAMMA", 0.1])
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [param], "lr": base_lr}], lr=base_lr)
    scheduler = build_lr_scheduler(cfg, optimizer)
    return cfg, optimizer, scheduler


def _run(optimizer, scheduler, n):
    lrs = []
    for _ in range(n):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("old_format", [False, True])
def test_resume_keeps_the_current_schedule(old_format, caplog):
    """A 1x-like run (steps at 6) stopped after 5 iterations, resumed as 2x (steps at 12): the LR
    decays at 12, not 6; base LR 0.1 from the checkpoint even though the config now says 0.05."""
    cfg1, opt1, sched1 = _schedule(10, (6,))
    _run(opt1, sched1, 5)
    state = ResumableSchedule(sched1, cfg1).state_dict()
    if old_format:
        del state["solver"]  # checkpoints written before the schedule was recorded
    opt_state = opt1.state_dict()

    cfg2, opt2, sched2 = _schedule(20, (12,), base_lr=0.05)
    opt2.load_state_dict(opt_state)
    with caplog.at_level(logging.WARNING, logger="gn_det.engine.resume"):
        ResumableSchedule(sched2, cfg2).load_state_dict(state)
    lrs = _run(opt2, sched2, 15)  # iterations 5..19
    expected = [0.1 * (0.1 if it >= 12 else 1.0) for it in range(5, 20)]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=0)
    messages = [r.getMessage() for r in caplog.records]
    changed = "SOLVER.STEPS [6] -> [12]" if old_format else "SOLVER.MAX_ITER 10 -> 20, SOLVER.STEPS [6] -> [12]"
    assert any(f"differs from the checkpoint's: {changed}; the LR follows the current config from iteration 5 on"
               in m for m in messages), messages
    assert any(m.startswith("SOLVER.BASE_LR 0.1 -> 0.05 not applied: a resumed run keeps the checkpoint's base LRs")
               for m in messages) != old_format


def test_unchanged_schedule_resumes_silently_and_exactly(caplog):
    cfg, opt, sched = _schedule(10, (6,))
    _run(opt, sched, 4)
    state, opt_state = ResumableSchedule(sched, cfg).state_dict(), opt.state_dict()
    unbroken = _run(opt, sched, 6)
    cfg2, opt2, sched2 = _schedule(10, (6,))
    opt2.load_state_dict(opt_state)
    with caplog.at_level(logging.WARNING):
        ResumableSchedule(sched2, cfg2).load_state_dict(state)
    assert _run(opt2, sched2, 6) == unbroken  # bit-identical, not approximately
    assert not caplog.records


def test_clean_output_dir_removes_only_a_runs_files(tmp_path):
    for name in ("last_checkpoint", "model_0000009.pth", "model_final.pth", "metrics.json", "log.txt", "log.txt.rank1",
                 "config.yaml", "events.out.tfevents.1.host.2.0", "notes.txt", "sweep_stdout.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "inference" / "v").mkdir(parents=True)
    (tmp_path / "inference" / "v" / "metrics.json").write_text("{}")
    removed = clean_output_dir(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "sweep_stdout.txt"]
    assert "inference" in removed and "model_final.pth" in removed


def test_output_dir_probe_creates_nothing(tmp_path):
    check_output_dir_writable(str(tmp_path / "a" / "b" / "c"))
    assert os.listdir(tmp_path) == []
    (tmp_path / "f").write_text("")
    with pytest.raises(UserError, match=r"is not writable \('.*/f' is a file\)"):
        check_output_dir_writable(str(tmp_path / "f" / "out"))


@pytest.fixture
def freeze_train(tmp_path):
    root = tmp_path / "shapes"
    generate_shapes_dataset(str(root), num_train=2, num_val=1, size=64, seed=9)
    DatasetCatalog.remove("freeze_train")
    MetadataCatalog.remove("freeze_train")
    register_coco_instances("freeze_train", {}, str(root / "annotations" / "instances_train.json"), str(root / "train"))
    yield "freeze_train"
    DatasetCatalog.remove("freeze_train")
    MetadataCatalog.remove("freeze_train")


def test_freeze_at_without_weights_warns(tmp_path, freeze_train):
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(["DATASETS.TRAIN", (freeze_train,), "DATASETS.TEST", (), "OUTPUT_DIR", str(tmp_path / "o"),
                         "MODEL.BACKBONE.FREEZE_AT", 2])
    prepared = validate_run(cfg)
    assert prepared.warnings == [
        "MODEL.BACKBONE.FREEZE_AT=2 freezes the stem and res2 but MODEL.WEIGHTS is empty: they stay at their "
        "random initialisation. Set MODEL.BACKBONE.FREEZE_AT 0 to train from scratch, or give MODEL.WEIGHTS"]
    cfg.merge_from_list(["MODEL.BACKBONE.FREEZE_AT", 0])
    assert validate_run(cfg).warnings == []
    assert not os.path.exists(tmp_path / "o")


def _resumable_run(tmp_path, dataset):
    """A config and an OUTPUT_DIR holding a checkpoint of its model (built on the CPU, as a run saves it)."""
    from gn_det.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    out = tmp_path / "run"
    cfg.merge_from_list(["DATASETS.TRAIN", (dataset,), "DATASETS.TEST", (), "OUTPUT_DIR", str(out),
                         "MODEL.BACKBONE.FREEZE_AT", 2])
    out.mkdir()
    torch.save({"model": build_model(cfg).state_dict(), "iteration": 3}, out / "model_0000003.pth")
    (out / "last_checkpoint").write_text("model_0000003.pth")
    return cfg, out


def test_resume_checks_the_checkpoint_fits_and_does_not_warn_about_weights(tmp_path, freeze_train):
    """A checkpoint of this model passes (the meta-device model has the real one's names and shapes) and
    the FREEZE_AT-without-weights warning stays quiet: the weights come from the checkpoint."""
    cfg, out = _resumable_run(tmp_path, freeze_train)
    before = sorted(os.listdir(out))
    assert validate_run(cfg, resume=True).warnings == []
    other = cfg.clone()
    other.merge_from_list(["MODEL.FPN.OUT_CHANNELS", 64])
    with pytest.raises(UserError, match=r"^--resume: .*/model_0000003\.pth does not fit the model of this config "
                                        r"\(\d+ of another shape \(first: backbone\.fpn_lateral2\.norm\.bias: \(32,.*\) in the "
                                        r"checkpoint, \(64,.*\) in the model\)\); resume with the config of that run"):
        validate_run(other, resume=True)
    data = (out / "model_0000003.pth").read_bytes()
    (out / "model_0000003.pth").write_bytes(data[:1000])
    with pytest.raises(UserError, match=r"^--resume: .*/model_0000003\.pth: cannot read the weights file .*truncated"):
        validate_run(cfg, resume=True)
    torch.save({"model": {}}, out / "model_0000003.pth")
    with pytest.raises(UserError, match=r"is not a training checkpoint \(no 'model' and 'iteration'\)"):
        validate_run(cfg, resume=True)
    assert sorted(os.listdir(out)) == before
