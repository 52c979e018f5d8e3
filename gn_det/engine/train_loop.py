"""The training loop with hooks (detectron2's engine/train_loop.py shape).

Call order: ``before_train`` of every hook; then per iteration ``before_step`` (keep cheap),
``run_step``, ``after_step`` (checkpoints, evaluation, writers); ``after_train`` of every hook always
runs, also when a step raised, so writers flush and files close.
"""
from __future__ import annotations

import logging
import math
import time
import weakref
from contextlib import nullcontext
from typing import Dict, Iterable, Iterator, List, Optional

import torch
from torch import nn

from gn_det.utils import comm

from .events import EventStorage, peak_memory_mb

logger = logging.getLogger(__name__)


class HookBase:
    """A piece of the loop's behaviour. ``self.trainer`` is set (weakly) when registered."""

    trainer: "TrainerBase"

    def before_train(self) -> None:
        """Called once before the first iteration."""

    def after_train(self) -> None:
        """Called once after the last iteration, or after a step raised."""

    def before_step(self) -> None:
        """Called before each iteration; keep it cheap."""

    def after_step(self) -> None:
        """Called after each iteration."""

    def state_dict(self) -> dict:
        """State to checkpoint (none by default)."""
        return {}


class TrainerBase:
    """Runs ``run_step`` from ``start_iter`` to ``max_iter - 1`` between the hooks' calls."""

    def __init__(self) -> None:
        self._hooks: List[HookBase] = []
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.storage = EventStorage()

    def register_hooks(self, hooks: Iterable[Optional[HookBase]]) -> None:
        """Append hooks (None entries skipped); they run in the order given."""
        for h in hooks:
            if h is None:
                continue
            h.trainer = weakref.proxy(self)
            self._hooks.append(h)

    def train(self, start_iter: int, max_iter: int) -> None:
        """Run iterations ``start_iter .. max_iter - 1``."""
        logger.info("Starting training from iteration %d", start_iter)
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        self.storage = EventStorage(start_iter)
        try:
            self.before_train()
            for self.iter in range(start_iter, max_iter):
                self.storage.iter = self.iter
                self.before_step()
                self.run_step()
                self.after_step()
            self.iter += 1  # after the loop, iter == max_iter (detectron2's convention)
        except Exception:
            logger.exception("Exception during training at iteration %d:", self.iter)
            raise
        finally:
            self.after_train()

    def before_train(self) -> None:
        for h in self._hooks:
            h.before_train()

    def after_train(self) -> None:
        """Every hook's ``after_train``, each even if an earlier one raised (the first error is re-raised)."""
        self.storage.iter = self.iter
        error = None
        for h in self._hooks:
            try:
                h.after_train()
            except Exception as e:  # keep closing the others
                logger.exception("after_train of %s failed", type(h).__name__)
                error = error or e
        if error is not None:
            raise error

    def before_step(self) -> None:
        for h in self._hooks:
            h.before_step()

    def after_step(self) -> None:
        for h in self._hooks:
            h.after_step()

    def run_step(self) -> None:
        """One iteration of training."""
        raise NotImplementedError


AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_amp_dtype(enabled: bool, dtype: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype SOLVER.AMP asks for on ``device`` (None when off): DTYPE "" means float16 on
    CUDA (with a GradScaler) and bfloat16 on CPU (CPU autocast's type; float32's range, no scaler)."""
    if not enabled:
        return None
    name = str(dtype).strip().lower() or ("float16" if device.type == "cuda" else "bfloat16")
    if name not in AMP_DTYPES:
        raise ValueError(f"SOLVER.AMP.DTYPE={dtype!r} is not a mixed-precision type; use '' (float16 on CUDA, "
                         "bfloat16 on CPU), 'float16' or 'bfloat16'")
    if name == "float16" and device.type != "cuda":
        raise ValueError(f"SOLVER.AMP.DTYPE=float16 needs CUDA but MODEL.DEVICE is {device}; use bfloat16 "
                         "(or '') on CPU, or set SOLVER.AMP.ENABLED False")
    if name == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"SOLVER.AMP.DTYPE=bfloat16 but {torch.cuda.get_device_name(device)} does not support "
                         "it; use float16 (or '')")
    return AMP_DTYPES[name]


class SimpleTrainer(TrainerBase):
    """Loss -> backward -> (clip) -> SGD step on batches of ``(image, target)`` pairs from ``data_loader``.

    With ``amp=True`` the forward runs under autocast in ``amp_dtype`` (see resolve_amp_dtype: float16
    with a GradScaler on CUDA, bfloat16 on CPU); parameters, optimizer state and norm statistics stay
    float32. A non-finite loss raises ``FloatingPointError`` before the optimizer step, naming the
    iteration and the loss, so weights and checkpoints stay as they were.
    """

    def __init__(self, model: nn.Module, data_loader: Iterable, optimizer: torch.optim.Optimizer,
                 *, clip_gradients=None, amp: bool = False, amp_dtype: str = "", grad_sync=None):
        super().__init__()
        self.model = model
        self.data_loader = data_loader
        self._data_iter: Optional[Iterator] = None
        self.optimizer = optimizer
        self.clip_gradients = clip_gradients
        self.grad_sync = grad_sync  # averages gradients over processes when DDP is not used (CPU)
        self.device = next(model.parameters()).device
        self.amp_dtype = resolve_amp_dtype(amp, amp_dtype, self.device)
        self.amp = self.amp_dtype is not None
        scaled = self.amp_dtype == torch.float16  # bfloat16 has float32's exponent range: no scaling needed
        self.grad_scaler = torch.amp.GradScaler(self.device.type) if scaled else None
        if self.amp:
            logger.info("SOLVER.AMP: autocast to %s on %s%s", self.amp_dtype, self.device,
                        " with a GradScaler" if scaled else
                        (" (checks the mixed-precision path; slower than float32 on CPUs without bfloat16 "
                         "instructions)" if self.device.type == "cpu" else ""))

    def _next_batch(self):
        """The next batch. The first call creates the loader's iterator, for which torch's DataLoader
        draws a base seed from the global RNG: that draw is kept out of the training RNG stream, so a
        resumed run (which starts its iterator at another iteration) repeats an unbroken run exactly."""
        if self._data_iter is not None:
            return next(self._data_iter)
        state = torch.get_rng_state()
        self._data_iter = iter(self.data_loader)
        batch = next(self._data_iter)
        torch.set_rng_state(state)
        return batch

    def run_step(self) -> None:
        assert self.model.training, "SimpleTrainer: the model was left in eval mode"
        start = time.perf_counter()
        batch = self._next_batch()
        data_time = time.perf_counter() - start
        images = [img.to(self.device, non_blocking=True) for img, _ in batch]
        targets = [{k: v.to(self.device, non_blocking=True) for k, v in t.items()} for _, t in batch]
        ctx = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp else nullcontext()
        with ctx:
            loss_dict = self.model(images, targets)
        losses = sum(loss_dict.values())
        # One host sync for all losses (not one per loss). Averaged over processes: every rank sees a NaN
        # of any rank and stops together.
        values = torch.stack([v.detach().float() for v in loss_dict.values()]).tolist()
        metrics = comm.reduce_mean_dict(dict(zip(loss_dict.keys(), values)))
        metrics["total_loss"] = sum(metrics.values())
        self._check_finite(metrics)
        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
            self._sync()
            self.grad_scaler.unscale_(self.optimizer)
            self._clip()
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            losses.backward()
            self._sync()
            self._clip()
            self.optimizer.step()
        self.storage.put_scalars(**metrics, data_time=data_time, time=time.perf_counter() - start,
                                 peak_mem_mb=peak_memory_mb())

    def _sync(self) -> None:
        if self.grad_sync is not None:
            self.grad_sync()

    def _clip(self) -> None:
        if self.clip_gradients is not None:
            self.clip_gradients([p for g in self.optimizer.param_groups for p in g["params"]])

    def _check_finite(self, values: Dict[str, float]) -> None:
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            names = ", ".join(f"{k}={v}" for k, v in bad.items())
            raise FloatingPointError(
                f"Loss became non-finite at iteration {self.iter}: {names}. Training stopped; the last "
                "checkpoint in OUTPUT_DIR is intact. Lower SOLVER.BASE_LR, lengthen SOLVER.WARMUP_ITERS or "
                "enable SOLVER.CLIP_GRADIENTS.")
