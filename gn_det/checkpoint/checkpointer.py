"""Training checkpoints: save everything a resumed run needs, atomically, and find the newest one.

A checkpoint file is ``{"model", "optimizer", "scheduler", "iteration", "sampler", "rng", ...}`` of plain
tensors and Python data, loadable with ``torch.load(weights_only=True)``. ``rng`` holds every process's
torch / numpy / Python (/ CUDA) generator states, so that on CPU a run killed and resumed from iteration
k ends bit-identical to one never stopped. Files go to a temp file first, then ``os.replace``; the name
of the newest is in ``last_checkpoint`` (detectron2's convention).
"""
from __future__ import annotations

import logging
import os
import random
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from gn_det.utils import comm
from gn_det.utils.file_io import atomic_write, atomic_write_text

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def get_rng_state() -> Dict[str, Any]:
    """This process's generator states as tensors and plain Python data (weights_only-safe)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
        "python": {"version": version, "state": list(py_state), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # This process's own device only: another run may see fewer GPUs (get_rng_state_all's list then
        # has entries set_rng_state_all cannot place), and each process draws on its own device alone.
        state["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what ``get_rng_state`` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda, device = state["cuda"], torch.cuda.current_device()
        if isinstance(cuda, (list, tuple)):  # checkpoints before issue 21: every visible device's state
            if device >= len(cuda):
                logger.warning("The checkpoint's CUDA RNG states cover %d devices, not cuda:%d: that generator "
                               "is not restored", len(cuda), device)
                return
            cuda = cuda[device]
        torch.cuda.set_rng_state(cuda, device)


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run the body without moving this process's generators: states are restored afterwards.

    Evaluation (a DataLoader iterator draws its base seed from torch's generator) runs inside this,
    so it does not consume the training streams: a run resumed from the checkpoint written just
    before an evaluation repeats the unbroken run exactly.
    """
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


class Checkpointer:
    """Saves and loads a model with the training state around it, in ``save_dir``.

    ``checkpointables`` are extra objects with ``state_dict()``/``load_state_dict()`` (optimizer,
    scheduler, sampler, grad_scaler), stored under their key. Every process calls ``save`` (to gather
    RNG states); rank 0 writes.
    """

    def __init__(self, model: nn.Module, save_dir: str, **checkpointables: Any):
        self.model = model
        self.save_dir = save_dir
        self.checkpointables = {k: v for k, v in checkpointables.items() if v is not None}

    # ---------------------------------------------------------------- saving
    def save(self, name: str, iteration: int) -> Optional[str]:
        """Write ``save_dir/name.pth`` and point ``last_checkpoint`` at it; the path on rank 0."""
        rng = comm.all_gather(get_rng_state())
        if not comm.is_main_process():
            return None
        data: Dict[str, Any] = {"model": {k: v.detach().cpu() for k, v in unwrap_model(self.model).state_dict().items()},
                                "iteration": int(iteration), "rng": rng}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        atomic_write(path, lambda f: torch.save(data, f))
        atomic_write_text(os.path.join(self.save_dir, LAST_CHECKPOINT), basename)
        logger.info("Saved checkpoint %s (iteration %d)", path, iteration)
        return path

    # ---------------------------------------------------------------- finding
    def get_checkpoint_file(self) -> Optional[str]:
        """Path of the newest checkpoint named in ``last_checkpoint``, or None if there is none."""
        marker = os.path.join(self.save_dir, LAST_CHECKPOINT)
        if not os.path.isfile(marker):
            return None
        with open(marker, encoding="utf-8") as f:
            name = f.read().strip()
        path = os.path.join(self.save_dir, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{marker} names '{name}', which does not exist in {self.save_dir}; "
                                    "delete last_checkpoint to start over or restore the file")
        return path

    def has_checkpoint(self) -> bool:
        """True when ``last_checkpoint`` exists in ``save_dir``."""
        return os.path.isfile(os.path.join(self.save_dir, LAST_CHECKPOINT))

    # ---------------------------------------------------------------- loading
    def resume_or_load(self, weights: str, *, resume: bool, cfg=None, preloaded: Optional[Tuple[Any, Any]] = None) -> int:
        """With ``resume`` and a checkpoint in ``save_dir``: restore everything, return the next
        iteration. Otherwise load model weights from ``weights`` ("" = keep the initialization), return 0.
        ``preloaded``: ``weights`` already read and converted (``read_converted``), so it is not read again."""
        if resume and self.has_checkpoint():
            return self.resume(self.get_checkpoint_file())
        if resume:
            logger.info("--resume: no checkpoint in %s, starting from iteration 0", self.save_dir)
        if weights:
            load_model_weights(unwrap_model(self.model), weights, cfg=cfg, preloaded=preloaded)
        return 0

    def resume(self, path: str) -> int:
        """Restore model, checkpointables and this process's RNG from ``path``; the next iteration."""
        data = _read(path)
        missing = [k for k in ("model", "iteration") if k not in data]
        if missing:
            raise KeyError(f"{path} is not a training checkpoint (no {missing}); pass it as MODEL.WEIGHTS "
                           "without --resume")
        unwrap_model(self.model).load_state_dict(data["model"])
        for key, obj in self.checkpointables.items():
            if key in data:
                obj.load_state_dict(data[key])
            else:
                logger.warning("%s has no '%s' state; it starts fresh", path, key)
        rng: List[Dict[str, Any]] = data.get("rng") or []
        rank = comm.get_rank()
        if len(rng) == comm.get_world_size():
            set_rng_state(rng[rank])
        elif rng:
            logger.warning("%s was saved by %d processes, this run has %d: RNG states not restored, so the "
                           "run will not repeat the original exactly", path, len(rng), comm.get_world_size())
        logger.info("Resumed from %s at iteration %d", path, data["iteration"])
        return int(data["iteration"]) + 1


def _read(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model_weights(model: nn.Module, path: str, cfg=None, preloaded: Optional[Tuple[Any, Any]] = None) -> Any:
    """Load MODEL.WEIGHTS into ``model`` with gn_det.checkpoint.load_weights (any known format, names
    mapped, ``cfg``'s input conventions checked); returns its LoadReport. ``preloaded``: the file's
    ``(ConvertedWeights, DetectedFormat)`` already read by ``read_converted`` (not read again)."""
    from gn_det.checkpoint.load import load_converted, load_weights  # here: the package imports this module

    if preloaded is not None:
        return load_converted(model, preloaded[0], preloaded[1], path, cfg=cfg)
    return load_weights(model, path, cfg=cfg)
