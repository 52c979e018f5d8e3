"""What a detector costs: parameters (exact, per part), inference FLOPs over real images (fvcore's
counter: one multiply-add is one flop; group_norm / batch_norm / layer_norm / instance_norm counted by
fvcore's norm formulas), activations (fvcore's count of conv/linear outputs) and the memory a training
forward keeps for backward (the tensors autograd saves), so norms can be compared by cost as the norm
papers do (the library side of tools/analyze_model.py and of the norm sweep's cost columns).

FLOPs vary per image only through the image size (proposal counts are fixed at inference), so they are
reported as mean and standard deviation over the images. Ops fvcore has no formula for (elementwise
arithmetic, RoIAlign, NMS, ...) are not counted; ``FlopStats.uncounted`` lists them with how often they ran.
"""
from __future__ import annotations

import statistics
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from gn_det.layers import is_norm, norm_name
from gn_det.modeling.describe import model_parts

GIGA = 1e9
MIB = 2.0 ** 20

__all__ = ["PartParams", "FlopStats", "ActivationStats", "Sample", "parameter_table", "flop_analysis", "count_flops",
           "count_activations", "training_activation_bytes", "mean_std", "dataset_samples", "activation_stats",
           "flop_stats"]


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


@dataclass
class PartParams:
    """Parameters of one part of the detector (stem, res2..., FPN, RPN, box head, mask head)."""

    part: str
    total: int
    trainable: int


def parameter_table(model: nn.Module) -> List[PartParams]:
    """One row per part, then "total" (every parameter of the model once, shared ones counted once)."""
    rows = []
    for part, modules in model_parts(model):
        params = {id(p): p for m in modules for p in m.parameters()}.values()
        rows.append(PartParams(part, sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)))
    params = list(model.parameters())
    rows.append(PartParams("total", sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)))
    return rows


class _Traceable(nn.Module):
    """The detector in eval mode as ``image -> tuple of output tensors`` (what jit tracing needs)."""

    def __init__(self, model: nn.Module, original_size: Tuple[int, int]):
        super().__init__()
        self.model = model
        self.original_size = original_size

    def forward(self, image: torch.Tensor):
        out = self.model([image], original_sizes=[self.original_size])[0]
        return tuple(out[k] for k in sorted(out))


@dataclass
class FlopStats:
    """Inference GFLOPs per image over ``num_images`` images (mean, std), by operator, by part and by norm."""

    num_images: int
    total: Tuple[float, float]
    by_operator: Dict[str, float] = field(default_factory=dict)  # mean GFLOPs
    by_part: Dict[str, float] = field(default_factory=dict)  # mean GFLOPs
    by_norm: Dict[str, float] = field(default_factory=dict)  # norm name -> mean GFLOPs of its layers
    uncounted: Counter = field(default_factory=Counter)  # op -> times it ran over all images
    unit: str = "GFLOPs (fvcore: 1 multiply-add = 1 flop)"

    @property
    def norm_total(self) -> float:
        """Mean GFLOPs of all norm layers."""
        return sum(self.by_norm.values())


def _module_names(model: nn.Module) -> Dict[int, str]:
    return {id(m): name for name, m in model.named_modules()}


def _analysis_kwargs(analysis):
    return analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)


def _images(images: Iterable[Tuple[torch.Tensor, Tuple[int, int]]]) -> List[Tuple[torch.Tensor, Tuple[int, int]]]:
    out = list(images)
    if not out:
        raise ValueError("no image to measure on: the dataset is empty")
    return out


def flop_analysis(module: nn.Module, inputs: Tuple):
    """fvcore's FlopCountAnalysis of ``module(*inputs)`` without grad, its warnings silenced (tracing warns
    about data-dependent shapes; the ops it cannot count are in ``unsupported_ops()``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import scripts a function (torch.jit.script); tracer warnings
        from fvcore.nn import FlopCountAnalysis

        with torch.no_grad():
            analysis = _analysis_kwargs(FlopCountAnalysis(module, inputs))
            analysis.total()  # trace now, inside the silenced block
    return analysis


def count_flops(model: nn.Module, images: Iterable[Tuple[torch.Tensor, Tuple[int, int]]]) -> FlopStats:
    """FLOPs of ``model`` (eval mode, no grad) on each ``(image tensor as the test loader gives it, original
    (h, w))``; the model is put back in its mode afterwards."""
    images = _images(images)
    names = _module_names(model)
    parts = [(part, [names[id(m)] for m in modules]) for part, modules in model_parts(model)]
    norms = [(name, norm_name(m)) for name, m in model.named_modules() if is_norm(m)]
    totals, ops, by_part, by_norm, uncounted = [], Counter(), Counter(), Counter(), Counter()
    training = model.training
    model.eval()
    try:
        for image, size in images:
            analysis = flop_analysis(_Traceable(model, size), (image,))
            totals.append(analysis.total() / GIGA)
            by_module = analysis.by_module()
            ops.update({k: v / GIGA for k, v in analysis.by_operator().items()})
            in_parts = 0.0
            for part, modules in parts:
                flops = sum(by_module.get(f"model.{n}", 0) for n in modules) / GIGA
                by_part[part] += flops
                in_parts += flops
            by_part["other"] += totals[-1] - in_parts  # ops run by a parent's forward: FPN upsampling, mask pasting
            for name, kind in norms:
                by_norm[kind] += by_module.get(f"model.{name}", 0) / GIGA
            uncounted.update(analysis.unsupported_ops())
    finally:
        model.train(training)
    n = len(images)
    return FlopStats(num_images=n, total=mean_std(totals), by_operator={k: v / n for k, v in ops.most_common()},
                     by_part={k: v / n for k, v in by_part.items()}, by_norm={k: v / n for k, v in by_norm.items()},
                     uncounted=uncounted)


@dataclass
class ActivationStats:
    """Per image: fvcore's activation count at inference (millions of conv/linear output elements), and
    the memory a training forward keeps for backward (MiB); CUDA's peak memory of a training step when
    measured on a GPU."""

    num_images: int
    inference_count: Tuple[float, float]  # millions, mean and std
    train_saved: Optional[Tuple[float, float]] = None  # MiB, mean and std
    train_peak: Optional[Tuple[float, float]] = None  # MiB (CUDA only)


def count_activations(model: nn.Module, images: Iterable[Tuple[torch.Tensor, Tuple[int, int]]]) -> List[float]:
    """fvcore's activation count (millions) of ``model`` in eval mode on each image."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import ActivationCountAnalysis

    counts = []
    training = model.training
    model.eval()
    try:
        for image, size in _images(images):
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                counts.append(_analysis_kwargs(ActivationCountAnalysis(_Traceable(model, size), (image,))).total() / 1e6)
    finally:
        model.train(training)
    return counts


def training_activation_bytes(model: nn.Module, images: List[torch.Tensor], targets: List[dict]) -> Tuple[int, Optional[int]]:
    """(bytes of the tensors autograd saves for backward in one training forward of ``images`` with
    ``targets``, each storage once and parameters excluded; CUDA peak bytes of forward + backward, None on CPU).
    The gradients are cleared again; the model is put back in its mode."""
    params = {p.data_ptr() for p in model.parameters()}
    storages: Dict[Tuple[str, int], int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[(str(t.device), storage.data_ptr())] = storage.nbytes()
        return t

    device = next(model.parameters()).device
    training = model.training
    model.train()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            losses = model([i.to(device) for i in images], [{k: v.to(device) for k, v in t.items()} for t in targets])
        sum(losses.values()).backward()
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    finally:
        model.zero_grad(set_to_none=True)
        model.train(training)
    return sum(storages.values()), peak


@dataclass
class Sample:
    """One image of the dataset as the test loader gives it (with its original size) and as the training
    mapper gives it (resized to the first training size, not flipped) with its targets."""

    test_image: torch.Tensor
    original_size: Tuple[int, int]
    train_image: torch.Tensor
    target: dict


def dataset_samples(cfg, dataset_name: str, num: int) -> List[Sample]:
    """The first ``num`` images of ``dataset_name`` with at least one annotation (for the training forward)."""
    from gn_det.data import DatasetCatalog, DatasetMapper

    test_mapper, train_mapper = DatasetMapper.from_config(cfg, is_train=False), DatasetMapper.from_config(cfg, is_train=True)
    samples = []
    for d in DatasetCatalog.get(dataset_name):
        if len(samples) >= num:
            break
        if not any(not a.get("iscrowd", 0) for a in d.get("annotations", [])):
            continue
        image, info = test_mapper(d)
        train_image, target = train_mapper(d)
        samples.append(Sample(image, (int(info["height"]), int(info["width"])), train_image, target))
    if not samples:
        raise ValueError(f"dataset '{dataset_name}' has no image with annotations to measure on")
    return samples


def activation_stats(model: nn.Module, samples: Sequence[Sample]) -> ActivationStats:
    """Inference activation counts and training-forward saved memory (and CUDA peak), one image at a time."""
    device = next(model.parameters()).device
    counts = count_activations(model, [(s.test_image.to(device), s.original_size) for s in samples])
    saved, peaks = [], []
    for s in samples:
        nbytes, peak = training_activation_bytes(model, [s.train_image], [s.target])
        saved.append(nbytes / MIB)
        if peak is not None:
            peaks.append(peak / MIB)
    return ActivationStats(len(samples), mean_std(counts), mean_std(saved), mean_std(peaks) if peaks else None)


def flop_stats(model: nn.Module, samples: Sequence[Sample]) -> FlopStats:
    """``count_flops`` over the samples' test images."""
    device = next(model.parameters()).device
    return count_flops(model, [(s.test_image.to(device), s.original_size) for s in samples])
