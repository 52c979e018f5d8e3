"""Backbone pretraining with the engine: ``PretrainTrainer`` is DefaultTrainer with the model, loader and
evaluation swapped for texture classification (gn_det.data.textures, gn_det.modeling.classifier).

Everything else is the detection engine's: SGD with WEIGHT_DECAY_NORM on norm parameters, warmup +
steps, the Checkpointer (model, optimizer, schedule, loader position, RNG: ``--resume`` continues
exactly), metrics.json with the training loss and, after each evaluation, the held-out
``classification/accuracy`` and ``classification/loss``; OUTPUT_DIR/model_final.pth at the end.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gn_det.checkpoint.checkpointer import unwrap_model
from gn_det.utils import comm
from gn_det.utils.file_io import atomic_write_json

from . import hooks
from .defaults import WRITER_PERIOD, DefaultTrainer
from .events import ConsoleWriter, JSONWriter

logger = logging.getLogger(__name__)

__all__ = ["PretrainTrainer", "evaluate_classifier", "VAL_NAME"]

VAL_NAME = "textures_val"
EVAL_BATCH = 128


@torch.no_grad()
def evaluate_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Dict[str, float]:
    """Accuracy (percent) and mean cross entropy of ``model`` in eval mode on a held-out set (restores
    the model's training mode afterwards)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct, loss_sum = 0, 0.0
    try:
        for start in range(0, len(images), EVAL_BATCH):
            logits = model(images[start:start + EVAL_BATCH].to(device)).float()
            target = labels[start:start + EVAL_BATCH].to(device)
            correct += int((logits.argmax(dim=1) == target).sum())
            loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
    finally:
        model.train(was_training)
    return {"accuracy": 100.0 * correct / len(images), "loss": loss_sum / len(images)}


class PretrainTrainer(DefaultTrainer):
    """Trains ``BackboneClassifier`` of ``cfg`` on texture classification; see the module docstring."""

    @classmethod
    def build_model(cls, cfg) -> nn.Module:
        from gn_det.modeling.classifier import build_backbone_classifier

        model = build_backbone_classifier(cfg)
        logger.info("Backbone classifier: R-%d, norm %s, conv %s, %d classes, %.2fM parameters",
                    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.NORM, cfg.MODEL.RESNETS.CONV or "plain",
                    cfg.PRETRAIN.NUM_CLASSES, sum(p.numel() for p in model.parameters()) / 1e6)
        return model

    @classmethod
    def build_train_loader(cls, cfg):
        from gn_det.data.textures import TextureLoader

        world = comm.get_world_size()
        if cfg.SOLVER.IMS_PER_BATCH % world:
            raise ValueError(f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} must be divisible by the "
                             f"number of processes ({world})")
        return TextureLoader(cfg.SOLVER.IMS_PER_BATCH // world, cfg.PRETRAIN.IMAGE_SIZE, cfg.PRETRAIN.NUM_CLASSES,
                             max(cfg.SEED, 0), rank=comm.get_rank(), world_size=world)

    def build_hooks(self) -> List[hooks.HookBase]:
        """LR, checkpoint, held-out evaluation (TEST.EVAL_PERIOD; 0: at the end), writers."""
        cfg = self.cfg
        out: List[hooks.HookBase] = [hooks.LRScheduler(self.optimizer, self.scheduler),
                                     hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD),
                                     hooks.EvalHook(cfg.TEST.EVAL_PERIOD,
                                                    lambda: self.test(cfg, unwrap_model(self.model)))]
        if comm.is_main_process():
            writers = [ConsoleWriter(cfg.SOLVER.MAX_ITER, WRITER_PERIOD),
                       JSONWriter(os.path.join(cfg.OUTPUT_DIR, "metrics.json"))]
            out.append(hooks.PeriodicWriter(writers, WRITER_PERIOD))
        return out

    @classmethod
    def test(cls, cfg, model: nn.Module,
             evaluators: Optional[Sequence] = None) -> Dict[str, Dict[str, Dict[str, float]]]:
        """``{"textures_val": {"classification": {"accuracy", "loss"}}}`` on PRETRAIN.NUM_VAL_IMAGES
        held-out images (every process computes it; rank 0 writes OUTPUT_DIR/inference/textures_val/metrics.json)."""
        from gn_det.data.textures import texture_eval_set

        images, labels = texture_eval_set(cfg.PRETRAIN.NUM_VAL_IMAGES, cfg.PRETRAIN.IMAGE_SIZE,
                                          cfg.PRETRAIN.NUM_CLASSES, max(cfg.SEED, 0))
        result = evaluate_classifier(model, images, labels)
        if comm.is_main_process():
            logger.info("Held-out texture classification: accuracy %.1f %% (chance %.1f %%), loss %.3f",
                        result["accuracy"], 100.0 / cfg.PRETRAIN.NUM_CLASSES, result["loss"])
            atomic_write_json(os.path.join(cfg.OUTPUT_DIR, "inference", VAL_NAME, "metrics.json"),
                              {"classification": result}, indent=1)
        return {VAL_NAME: {"classification": result}}
