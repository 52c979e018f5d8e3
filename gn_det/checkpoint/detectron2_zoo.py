"""What each detectron2 model-zoo file was trained with, as its recipe records it (``detectron2_zoo.csv``).

A zoo file keeps its name when downloaded (``<model_id>/model_final_<hash>.pkl``), and the name
identifies its recipe. The table was read from detectron2 (commit 02b5c4e): every entry of
``detectron2/model_zoo/model_zoo.py`` (``_ModelZooUrls.CONFIG_PATH_TO_URL_SUFFIX``) with its recipe
resolved (``_BASE_`` included; LazyConfig ``.py`` recipes instantiated): INPUT.FORMAT, PIXEL_MEAN,
PIXEL_STD, RESNETS.STRIDE_IN_1X1 and NORM (empty for non-ResNet backbones) and ROI_BOX_HEAD.POOLER_TYPE
(empty without RoI heads). Most zoo models use the MSRA convention (BGR, std 1, stride in the 1x1),
but not all: the X-101 and scratch 9x models have PIXEL_STD 57.x and the stride in the 3x3.
"""
from __future__ import annotations

import csv
import functools
import os
from typing import Dict, Optional

from .converted import InputConvention

ZOO_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "detectron2_zoo.csv")


@functools.lru_cache(maxsize=None)
def _zoo_rows(path: str = ZOO_FILE) -> Dict[str, Dict[str, str]]:
    with open(path, newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def detectron2_zoo_convention(path: str) -> Optional[InputConvention]:
    """The recorded convention of a detectron2 model-zoo file, recognised by its file name; else None."""
    row = _zoo_rows().get(os.path.basename(path))
    if row is None:
        return None
    stride = {"True": True, "False": False}.get(row["stride_in_1x1"])
    return InputConvention(
        input_format=row["input_format"],
        pixel_mean=tuple(float(v) for v in row["pixel_mean"].split()),
        pixel_std=tuple(float(v) for v in row["pixel_std"].split()),
        stride_in_1x1=stride,
        norm=row["norm"],
        recipe="",
        how_known=f"recorded in its detectron2 recipe {row['recipe']} (model zoo id {row['model_id']})",
        pooler_type=row["pooler_type"] or None,
    )
