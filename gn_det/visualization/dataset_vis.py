"""Pictures of a training set's ground truth: as stored (the annotations) or as the training loader
yields it after augmentation (resize, flip), the library side of tools/visualize_data.py."""
from __future__ import annotations

import itertools
import os
from typing import Dict, Iterator, List, Tuple

import numpy as np
import torch

from gn_det.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader, read_image
from .draw import Instances, draw_instances
from .images import save_image
from .instances import class_name, from_annotations

SOURCES = ("annotation", "dataloader")

__all__ = ["SOURCES", "draw_annotations", "draw_loader", "loader_samples", "unique_name"]


def unique_name(file_name: str, used: Dict[str, int]) -> str:
    """The image's file name; ``name_2.png``, ``name_3.png``... when the same image comes again."""
    base = os.path.basename(file_name)
    used[base] = used.get(base, 0) + 1
    if used[base] == 1:
        return base
    stem, ext = os.path.splitext(base)
    return f"{stem}_{used[base]}{ext}"


def draw_annotations(cfg, output_dir: str, num: int = 0) -> List[str]:
    """Draw the ground truth of each DATASETS.TRAIN image as stored, at its own size; ``num`` > 0 stops
    after that many images. Returns the files written."""
    written: List[str] = []
    used: Dict[str, int] = {}
    for name in cfg.DATASETS.TRAIN:
        names = list(MetadataCatalog.get(name).get("thing_classes") or [])
        for d in DatasetCatalog.get(name):
            if num and len(written) >= num:
                return written
            rgb = read_image(d["file_name"], "RGB")
            h, w = rgb.shape[:2]
            instances = from_annotations(d.get("annotations", []), names, h, w)
            written.append(save_image(os.path.join(output_dir, unique_name(d["file_name"], used)),
                                      draw_instances(rgb, instances)))
    return written


def loader_samples(cfg) -> Iterator[Tuple[str, torch.Tensor, dict]]:
    """``(file name, image, target)`` in the order and with the augmentation of the training loader of one
    process (the same sampler and mapper, without worker processes); infinite."""
    loader = build_detection_train_loader(cfg, rank=0, world_size=1)
    dataset = loader.dataset
    dataset.seed = loader.sampler.seed
    for batch in loader.sampler:
        for key in batch:
            image, target = dataset[key]
            yield dataset.dataset_dicts[key[0]]["file_name"], image, target


def _loader_instances(target: dict, names: List[str]) -> Instances:
    masks = target.get("masks")
    return Instances(boxes=target["boxes"].to(torch.float64).numpy().reshape(-1, 4),
                     labels=[class_name(names, int(c) - 1) for c in target["labels"].tolist()],
                     masks=None if masks is None else masks.numpy().astype(bool))


def draw_loader(cfg, output_dir: str, num: int) -> List[str]:
    """Draw ``num`` images as the training loader yields them (resized, flipped, in INPUT.FORMAT turned to
    RGB for the picture); an image drawn again is saved as ``name_2.png``, ... Returns the files written."""
    names = list(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes") or [])
    written: List[str] = []
    used: Dict[str, int] = {}
    for file_name, image, target in itertools.islice(loader_samples(cfg), num):
        array = image.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        rgb = np.ascontiguousarray(array[:, :, ::-1] if cfg.INPUT.FORMAT == "BGR" else array)
        written.append(save_image(os.path.join(output_dir, unique_name(file_name, used)),
                                  draw_instances(rgb, _loader_instances(target, names))))
    return written
