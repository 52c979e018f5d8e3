"""Trainer loop, hooks, non-finite loss, checkpointer and exact resume, on a toy detector-shaped model."""
import os

import pytest
import torch

from engine_toys import RandomLoader, ToyDetector
from gn_det.checkpoint.checkpointer import Checkpointer
from gn_det.engine.hooks import LRScheduler, PeriodicCheckpointer
from gn_det.engine.precise_bn import update_bn_stats
from gn_det.engine.train_loop import HookBase, SimpleTrainer

MAX_ITER = 8


class Recorder(HookBase):
    def __init__(self, log):
        self.log = log

    def before_train(self):
        self.log.append("before_train")

    def before_step(self):
        self.log.append(f"before_step{self.trainer.iter}")

    def after_step(self):
        self.log.append(f"after_step{self.trainer.iter}")

    def after_train(self):
        self.log.append("after_train")


def _trainer(out_dir, seed=0, nan_at_call=-1, period=3):
    torch.manual_seed(seed)
    model = ToyDetector(nan_at_call=nan_at_call)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [4], 0.5)
    loader = RandomLoader(seed=seed)
    trainer = SimpleTrainer(model, loader, opt)
    ckpt = Checkpointer(model, str(out_dir), optimizer=opt, scheduler=sched, sampler=loader)
    trainer.register_hooks([LRScheduler(opt, sched), PeriodicCheckpointer(ckpt, period)])
    return trainer, ckpt


def test_hook_call_order_and_after_train_on_error(tmp_path):
    log = []
    trainer, _ = _trainer(tmp_path, nan_at_call=3)
    trainer.register_hooks([Recorder(log)])
    with pytest.raises(FloatingPointError):
        trainer.train(0, MAX_ITER)
    assert log == ["before_train", "before_step0", "after_step0", "before_step1", "after_step1",
                   "before_step2", "after_train"]


def test_non_finite_loss_names_iteration_and_loss_and_keeps_checkpoint(tmp_path):
    trainer, ckpt = _trainer(tmp_path, nan_at_call=5, period=3)  # checkpoint after iteration 2; NaN at iteration 4
    with pytest.raises(FloatingPointError, match=r"Loss became non-finite at iteration 4: loss_b=nan, "
                                                 r"total_loss=nan\. Training stopped; the last checkpoint"):
        trainer.train(0, MAX_ITER)
    assert open(tmp_path / "last_checkpoint").read() == "model_0000002.pth"
    saved = torch.load(tmp_path / "model_0000002.pth", weights_only=True)
    assert saved["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    # The failing step applied no update: weights are those after iteration 3, finite.
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert not (tmp_path / "model_final.pth").exists()


def test_checkpoint_contents_weights_only(tmp_path):
    trainer, _ = _trainer(tmp_path, period=100)
    trainer.train(0, 2)
    data = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert set(data) >= {"model", "optimizer", "scheduler", "iteration", "sampler", "rng"}
    assert data["iteration"] == 1 and data["sampler"] == {"seed": 0, "iteration": 2}
    assert set(data["rng"][0]) >= {"torch", "numpy", "python"}
    assert open(tmp_path / "last_checkpoint").read() == "model_final.pth"


def test_resume_after_kill_is_bit_identical(tmp_path):
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    full, _ = _trainer(full_dir)
    full.train(0, MAX_ITER)

    # "Killed" after iteration 4: only the checkpoint of iteration 2 (period 3) survives.
    cut, _ = _trainer(cut_dir)
    cut.train(0, 5)
    os.remove(cut_dir / "model_final.pth")
    (cut_dir / "last_checkpoint").write_text("model_0000002.pth")
    torch.manual_seed(1234)  # a new process: different RNG until resume restores it
    resumed, ckpt = _trainer(cut_dir, seed=99)
    start = ckpt.resume_or_load("", resume=True)
    assert start == 3
    resumed.train(start, MAX_ITER)
    a = torch.load(full_dir / "model_final.pth", weights_only=True)
    b = torch.load(cut_dir / "model_final.pth", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for (ka, va), (kb, vb) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items()):
        assert torch.equal(va["momentum_buffer"], vb["momentum_buffer"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == MAX_ITER


def test_resume_without_checkpoint_starts_at_zero(tmp_path):
    _, ckpt = _trainer(tmp_path)
    assert ckpt.resume_or_load("", resume=True) == 0


def test_last_checkpoint_naming_missing_file(tmp_path):
    _, ckpt = _trainer(tmp_path)
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    with pytest.raises(FileNotFoundError, match="names 'model_0000009.pth', which does not exist"):
        ckpt.resume_or_load("", resume=True)


def test_precise_bn_is_the_average_of_batch_statistics():
    """Running stats after update_bn_stats = mean over batches of per-batch mean / unbiased var (float64)."""
    torch.manual_seed(0)
    model = ToyDetector().double()
    loader = iter(RandomLoader(batch_size=3, seed=5))
    batches = [[(img.double(), t) for img, t in next(loader)] for _ in range(4)]
    model.bn.momentum = 0.1
    update_bn_stats(model, iter(batches), 4)
    with torch.no_grad():
        feats = [model.conv(torch.stack([i for i, _ in b])) for b in batches]
    means = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    vars_ = torch.stack([f.transpose(0, 1).flatten(1).var(dim=1, unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(model.bn.running_mean, means, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model.bn.running_var, vars_, rtol=1e-10, atol=1e-10)
    assert model.bn.momentum == 0.1
    with pytest.raises(ValueError, match=r"TEST.PRECISE_BN.NUM_ITER=9 but the loader gave only 4 batches"):
        update_bn_stats(model, iter(batches), 9)
