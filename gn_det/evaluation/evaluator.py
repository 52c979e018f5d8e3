"""Run a model over a test loader and feed an evaluator: ``inference_on_dataset`` (detectron2's shape)."""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Dict, Iterable, List, Mapping, Sequence

import torch
from torch import nn
from tqdm import tqdm

from gn_det.utils import comm

logger = logging.getLogger(__name__)


class DatasetEvaluator:
    """Base of evaluators: ``reset()``, then ``process(inputs, outputs)`` per batch, then ``evaluate()``."""

    def reset(self) -> None:
        """Prepare for a new round of evaluation."""

    def process(self, inputs: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, torch.Tensor]]) -> None:
        """Take one batch of inputs (dataset dicts) and the model's outputs for them."""
        raise NotImplementedError

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        """The metrics, ``{task: {metric: value}}``."""
        raise NotImplementedError


@contextlib.contextmanager
def inference_context(model: nn.Module):
    """Put ``model`` in eval mode for the block and restore its previous mode afterwards."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def _model_device(model: nn.Module) -> torch.device:
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


MASK_THRESHOLD = 0.5  # a pasted mask's probability at or above which a pixel belongs to the instance (detectron2)


def outputs_to_host(output: Mapping[str, torch.Tensor], mask_threshold: float = MASK_THRESHOLD) -> Dict[str, torch.Tensor]:
    """One image's outputs on the CPU, with "masks" thresholded (bool) on the model's device first: pasted
    float32 masks of a COCO image are about 120 MB per image, their bool form a quarter of that and the
    comparison runs on the GPU (issue 21). Every evaluator thresholds at 0.5 (COCO, detectron2)."""
    out = {}
    for key, value in output.items():
        if key == "masks" and value.is_floating_point():
            value = value >= mask_threshold
        out[key] = value.to("cpu")
    return out


def inference_on_dataset(model: nn.Module, data_loader: Iterable[List[tuple]],
                         evaluator: DatasetEvaluator) -> Dict[str, Dict[str, float]]:
    """Run ``model`` in eval mode over ``data_loader`` (batches of ``(image, dataset_dict)``), return
    ``evaluator.evaluate()``. The loader has resized each image; its dataset dict's "height"/"width" (the
    original size) go to the model as ``original_sizes``, so the outputs are in original image pixels.
    Rank 0 shows a tqdm progress bar; every rank must call this."""
    evaluator.reset()
    device = _model_device(model)
    total = len(data_loader) if hasattr(data_loader, "__len__") else None
    start, compute = time.perf_counter(), 0.0
    num_images = 0
    bar = tqdm(total=total, desc="inference", unit="batch", disable=not comm.is_main_process(),
               dynamic_ncols=True, leave=True)
    with inference_context(model), torch.no_grad():
        for batch in data_loader:
            images = [img.to(device, non_blocking=True) for img, _ in batch]
            inputs = [d for _, d in batch]
            sizes = [(d["height"], d["width"]) if "height" in d and "width" in d else tuple(img.shape[-2:])
                     for img, d in batch]
            t0 = time.perf_counter()
            outputs = model(images, original_sizes=sizes)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            compute += time.perf_counter() - t0
            evaluator.process(inputs, [outputs_to_host(o) for o in outputs])
            num_images += len(batch)
            bar.update(1)
    bar.close()
    elapsed = time.perf_counter() - start
    logger.info("Inference on %d images (this process) took %.1f s (%.3f s/image, %.3f s/image model only)",
                num_images, elapsed, elapsed / max(num_images, 1), compute / max(num_images, 1))
    results = evaluator.evaluate()
    return results if results is not None else {}


def format_results(results: Mapping[str, Mapping[str, float]]) -> str:
    """Metrics as lines of text: one summary line per task, then the per-category APs."""
    lines = []
    for task, metrics in results.items():
        main = {k: v for k, v in metrics.items() if not k.startswith("AP-")}
        lines.append(f"{task}: " + "  ".join(f"{k}={v:.2f}" for k, v in main.items()))
        per_cat = {k[3:]: v for k, v in metrics.items() if k.startswith("AP-")}
        if per_cat:
            lines.append(f"{task} per category AP: " + "  ".join(f"{k}={v:.2f}" for k, v in per_cat.items()))
    return "\n".join(lines)
