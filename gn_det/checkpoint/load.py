"""``load_weights(model, path)``: the one entry point the tools use for MODEL.WEIGHTS."""
from __future__ import annotations

import logging
import os
from typing import Tuple

from torch import nn

from .conventions import check_input_conventions
from .converted import ConvertedWeights, DetectedFormat
from .formats import convert_checkpoint
from .matching import match_weights
from .report import LoadReport
from .safe_load import WeightsFileError, read_weights_file

logger = logging.getLogger(__name__)

__all__ = ["read_converted", "load_weights", "load_converted"]


def read_converted(path: str) -> Tuple[ConvertedWeights, DetectedFormat]:
    """Read ``path`` safely, detect its format and rename its tensors to gn_det's modules."""
    path = os.fspath(path)
    return convert_checkpoint(read_weights_file(path), path)


def load_weights(model: nn.Module, path: str, *, cfg=None, verbose: bool = True) -> LoadReport:
    """Load weights in any known format into ``model``; return (and print) the LoadReport table.

    With ``cfg``, also check its INPUT.FORMAT / PIXEL_MEAN / PIXEL_STD / STRIDE_IN_1X1 / BN.EPSILON against
    the weights' source (``check_input_conventions``): disagreements are logged and listed in the report.

    Unknown formats, unsafe pickles and corrupt files raise WeightsFileError naming the file. A file of
    which no tensor fits the model raises too (it is almost certainly the wrong file); partial matches
    (an ImageNet backbone into a detector, another class count) load what fits and report the rest.
    """
    path = os.fspath(path)
    weights, fmt = read_converted(path)
    return load_converted(model, weights, fmt, path, cfg=cfg, verbose=verbose)


def load_converted(model: nn.Module, weights: ConvertedWeights, fmt: DetectedFormat, path: str, *,
                   cfg=None, verbose: bool = True) -> LoadReport:
    """The matching and loading half of ``load_weights``, for weights already read and converted."""
    report = LoadReport(path=path, format=fmt, notes=list(weights.notes))
    to_load = match_weights(model, weights, report)
    if not to_load:
        raise WeightsFileError(
            f"{path}: none of its {len(weights.tensors)} tensors fits the model "
            f"(format '{fmt.name}'); check MODEL.WEIGHTS and the model config\n{report.table()}"
        )
    state = model.state_dict()
    state.update(to_load)
    model.load_state_dict(state)
    if cfg is not None:
        report.convention_warnings = check_input_conventions(cfg, fmt)
    if verbose:
        _emit(report.table())
    return report


def _emit(text: str) -> None:
    """Log when logging is set up (the tools' log.txt), else print so the table is always seen."""
    if logger.isEnabledFor(logging.INFO) and logger.hasHandlers():
        logger.info("\n" + text)
    else:
        print(text, flush=True)
