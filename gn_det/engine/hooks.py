"""Hooks of the training loop: LR schedule, periodic checkpoint, precise BN, evaluation, writers.

Registered in this order by DefaultTrainer (the trainer times steps itself): LRScheduler, PreciseBN,
AverageRunningStats (several processes), PeriodicCheckpointer, EvalHook, PeriodicWriter. The checkpoint of an iteration is written before its
evaluation, so an evaluation that fails (a typo in the val JSON path, a broken image) never costs the
trained model; it holds the precise-BN statistics, which are recomputed before it. Evaluation leaves the
random generators as it found them (``preserved_rng``), so a run resumed from that checkpoint repeats
an unbroken one exactly.
"""
from __future__ import annotations

import itertools
import logging
import time
from typing import Callable, Dict, Iterable, List, Mapping

import torch
from torch import nn

from gn_det.checkpoint.checkpointer import Checkpointer, preserved_rng
from gn_det.utils import comm

from .precise_bn import average_running_stats, update_bn_stats
from .train_loop import HookBase

logger = logging.getLogger(__name__)


class LRScheduler(HookBase):
    """Records the LR used by this step, then steps the per-iteration scheduler."""

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler):
        self.optimizer = optimizer
        self.scheduler = scheduler

    def before_step(self) -> None:
        lr = max(g["lr"] for g in self.optimizer.param_groups)
        self.trainer.storage.put_scalar("lr", lr)

    def after_step(self) -> None:
        self.scheduler.step()


def _due(trainer, period: int) -> bool:
    """The iteration that just ended is the last one or a multiple of ``period`` (0: only the last): the
    schedule of checkpoints and evaluations, and of what must run right before them."""
    nxt = trainer.iter + 1
    return nxt >= trainer.max_iter or (period > 0 and nxt % period == 0)


class AverageRunningStats(HookBase):
    """Before every checkpoint and evaluation, average the running statistics of the batch-dependent
    norms over processes (gn_det.engine.precise_bn.average_running_stats), so that what is saved and
    what every process evaluates is one model: with broadcast_buffers=False each process's statistics
    follow its own images, and model_final.pth held rank 0's while the reported AP mixed N models
    (issue 21). Registered before PeriodicCheckpointer and EvalHook, with their schedules."""

    def __init__(self, model: nn.Module, checkpoint_period: int, eval_period: int, evaluates: bool):
        self.model = model
        self.checkpoint_period = int(checkpoint_period)
        self.eval_period = int(eval_period)
        self.evaluates = bool(evaluates)

    def after_step(self) -> None:
        if _due(self.trainer, self.checkpoint_period) or (self.evaluates and _due(self.trainer, self.eval_period)):
            average_running_stats(self.model)


class PeriodicCheckpointer(HookBase):
    """Saves ``model_{iter:07d}`` every ``period`` iterations and ``model_final`` after the last one.

    A run that stops on an error saves nothing more, so the last good checkpoint stays as it was.
    """

    def __init__(self, checkpointer: Checkpointer, period: int):
        self.checkpointer = checkpointer
        self.period = int(period)

    def after_step(self) -> None:
        if _due(self.trainer, self.period):
            it = self.trainer.iter
            self.checkpointer.save("model_final" if it + 1 >= self.trainer.max_iter else f"model_{it:07d}", it)


class EvalHook(HookBase):
    """Runs ``eval_function()`` every ``period`` iterations (0: only after the last) and records the
    flattened results (``bbox/AP``, ...) in the storage. The evaluation does not move the training
    run's random generators (their states are restored after it)."""

    def __init__(self, period: int, eval_function: Callable[[], Mapping[str, Mapping[str, float]]]):
        self.period = int(period)
        self.eval_function = eval_function
        self.latest_results: Dict = {}

    def _do_eval(self) -> None:
        with preserved_rng():
            results = self.eval_function()
        self.latest_results = results
        flat = flatten_results(results)
        if flat:
            self.trainer.storage.put_scalars(**flat)
        comm.synchronize()

    def after_step(self) -> None:
        if _due(self.trainer, self.period):
            self._do_eval()


def flatten_results(results: Mapping) -> Dict[str, float]:
    """``{dataset: {task: {metric: v}}}`` -> ``{"task/metric": v}`` (dataset prefixed when several)."""
    if len(results) == 1 and all(isinstance(v, Mapping) for v in results.values()):
        inner = next(iter(results.values()))
        if inner and all(isinstance(v, Mapping) for v in inner.values()):
            results = inner
    return flatten_results_nested(results)


def flatten_results_nested(results: Mapping) -> Dict[str, float]:
    """Nested dicts of numbers -> one level with "/"-joined keys."""
    flat: Dict[str, float] = {}
    for key, value in results.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}/{k}": v for k, v in flatten_results_nested(value).items()})
        elif isinstance(value, (int, float)):
            flat[key] = float(value)
    return flat


class PreciseBN(HookBase):
    """Recomputes BN/SyncBN/SN running statistics over ``num_iter`` training batches right before each
    evaluation (same schedule as EvalHook), as detectron2's PreciseBN hook."""

    def __init__(self, period: int, model: nn.Module, data_loader_fn: Callable[[], Iterable], num_iter: int):
        self.period = int(period)
        self.model = model
        self.data_loader_fn = data_loader_fn
        self.num_iter = int(num_iter)

    def after_step(self) -> None:
        if _due(self.trainer, self.period):
            self.update_stats()

    def update_stats(self) -> None:
        """Run the model in training mode over ``num_iter`` batches to refresh running statistics."""
        start = time.perf_counter()
        device = next(self.model.parameters()).device
        batches = ([(img.to(device), {k: v.to(device) for k, v in t.items()}) for img, t in batch]
                   for batch in itertools.islice(self.data_loader_fn(), self.num_iter))
        n = update_bn_stats(self.model, batches, self.num_iter)
        if n:
            logger.info("PreciseBN: running statistics of %d norm layers recomputed over %d batches in %.1f s",
                        n, self.num_iter, time.perf_counter() - start)


class PeriodicWriter(HookBase):
    """Drains the storage to writers every ``period`` iterations, after the last one, and at the end.

    Before training, each writer with a ``start(start_iter)`` method is told where the run starts
    (a resumed run's metrics.json and event files drop what an earlier attempt wrote from there on).
    """

    def __init__(self, writers: List, period: int = 20):
        self.writers = writers
        self.period = int(period)

    def before_train(self) -> None:
        for w in self.writers:
            start = getattr(w, "start", None)
            if start is not None:
                start(self.trainer.start_iter)

    def _write(self) -> None:
        for w in self.writers:
            w.write(self.trainer.storage)

    def after_step(self) -> None:
        it = self.trainer.iter
        if (it + 1) % self.period == 0 or it == self.trainer.max_iter - 1 or it == self.trainer.start_iter:
            self._write()

    def after_train(self) -> None:
        try:
            self._write()
        finally:
            for w in self.writers:
                w.close()
