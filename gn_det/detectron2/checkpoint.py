"""Weights of any format gn_det reads (a gn_det run's model_final.pth, torchvision, Detectron, SN authors, ...)
into a detectron2 model built with the plugin: gn_det's reader, then detectron2's names and class layout.

The other way needs nothing here: detectron2's checkpoints load into gn_det's model with
``gn_det.checkpoint.load_weights`` (detected as format 'detectron2').
"""
from __future__ import annotations

from typing import List, NamedTuple

from torch import nn

from gn_det.checkpoint import read_converted
from gn_det.checkpoint.detectron2_names import to_detectron2_layout

# Buffers detectron2's GeneralizedRCNN rebuilds from the config (MODEL.PIXEL_MEAN / PIXEL_STD).
CONFIG_BUFFERS = ("pixel_mean", "pixel_std")


class Detectron2LoadResult(NamedTuple):
    """Keys of the detectron2 model left at init (missing) and keys of the file it has no place for."""

    missing: List[str]
    unexpected: List[str]


def load_into_detectron2(model: nn.Module, path: str) -> Detectron2LoadResult:
    """Load ``path`` (any format gn_det.checkpoint reads) into detectron2 ``model``; shapes must fit.

    Raises ValueError naming the keys whose shapes differ (another NUM_CLASSES, another norm's widths).
    """
    weights, _ = read_converted(path)
    state = to_detectron2_layout(weights.tensors)
    own = model.state_dict()
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and own[k].shape != v.shape]
    if mismatched:
        raise ValueError(f"{path}: shapes do not fit the detectron2 model: {'; '.join(mismatched[:5])}"
                         + (f" (+{len(mismatched) - 5} more)" if len(mismatched) > 5 else ""))
    result = model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    missing = [k for k in result.missing_keys if k not in CONFIG_BUFFERS]
    return Detectron2LoadResult(missing, sorted(k for k in state if k not in own))
