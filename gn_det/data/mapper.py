"""Dataset dict -> model input: the image tensor (float32 CxHxW, 0-255, INPUT.FORMAT order, resized
by detectron2's ResizeShortestEdge) and, in training, the torchvision target (boxes x1y1x2y2, labels =
contiguous id + 1, masks) in the resized image's pixels.

Crowd annotations are left out of training targets (as detectron2 does). The random flip and the
training short side are drawn from an RNG seeded by (seed, global sample position), so the result
does not depend on which worker process loads the sample or on how many there are.
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch

from .serialize import SerializedList
from .image_io import check_image_size, image_to_tensor, read_image
from .transforms import ResizeShortestEdge, hflip, resize_image, resize_mask, scale_polygons

__all__ = ["segmentation_to_mask", "annotations_to_target", "augmentation_rng", "augmentation_draws", "DatasetMapper"]

RANDOM_FLIP_CHOICES = ("horizontal", "none")


def segmentation_to_mask(segm, height: int, width: int) -> np.ndarray:
    """Decode COCO polygons (list of lists) or RLE (compressed or uncompressed) to an HxW uint8 mask."""
    if isinstance(segm, list):
        rle = mask_util.merge(mask_util.frPyObjects(segm, height, width))
    elif isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        rle = mask_util.frPyObjects(segm, height, width)
    elif isinstance(segm, dict):
        counts = segm["counts"]
        rle = {"size": list(segm["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}
    else:
        raise ValueError(f"segmentation must be polygons (list of lists) or an RLE dict, got {type(segm)}")
    with warnings.catch_warnings():  # pycocotools' decode warns about numpy 2's copy keyword
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.ascontiguousarray(mask_util.decode([rle])[:, :, 0], dtype=np.uint8)


def _instance_mask(segm, height: int, width: int, out_h: int, out_w: int) -> np.ndarray:
    """One instance's mask at the output size: polygons scaled then rasterized there, RLE decoded then
    resized by nearest neighbour (detectron2's transform of polygons and of bitmasks)."""
    if (out_h, out_w) == (height, width):
        return segmentation_to_mask(segm, height, width)
    if isinstance(segm, list):
        return segmentation_to_mask(scale_polygons(segm, out_w / width, out_h / height), out_h, out_w)
    return resize_mask(segmentation_to_mask(segm, height, width), (out_h, out_w))


def annotations_to_target(annotations: List[dict], height: int, width: int, *, mask_on: bool,
                          file_name: str = "?", output_size: Optional[Tuple[int, int]] = None) -> dict:
    """Non-crowd annotations of a `height` x `width` image -> {"boxes" float32 (N,4) x1y1x2y2 clipped to the
    image, "labels" int64 category_id + 1, "masks" uint8 (N,H,W) with mask_on}; boxes empty after clipping
    are dropped. With `output_size` (h, w) boxes and masks are those of the image resized to that size."""
    out_h, out_w = output_size if output_size is not None else (height, width)
    annos = [a for a in annotations if not a.get("iscrowd", 0)]
    boxes = torch.tensor([a["bbox"] for a in annos], dtype=torch.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes[:, 0::2] *= out_w / width  # detectron2's apply_box: coordinates times new size / old size
    boxes[:, 1::2] *= out_h / height
    target = {"boxes": boxes[keep].to(torch.float32),
              "labels": torch.tensor([a["category_id"] + 1 for a in annos], dtype=torch.int64)[keep]}
    if mask_on:
        masks = []
        for a, k in zip(annos, keep.tolist()):
            if not k:
                continue
            if "segmentation" not in a:
                raise ValueError(f"An annotation of image '{file_name}' has no 'segmentation', but "
                                 f"MODEL.MASK_ON=True needs masks for every instance")
            masks.append(torch.from_numpy(_instance_mask(a["segmentation"], height, width, out_h, out_w)))
        target["masks"] = torch.stack(masks) if masks else torch.zeros((0, out_h, out_w), dtype=torch.uint8)
    return target


def augmentation_rng(seed: int, position: int) -> np.random.Generator:
    """The RNG of the sample at global stream `position` of a run seeded with `seed` (independent of
    worker processes): its first draw decides the flip, the next the training short side."""
    return np.random.default_rng([seed, position])


def augmentation_draws(seed: int, position: int, resize: Optional[ResizeShortestEdge]) -> Tuple[bool, Optional[int]]:
    """(flip, training short side) of the sample at global stream `position` of a run seeded with `seed`:
    a fair coin (first draw of its augmentation_rng), then `resize.sample_size` (None without a resize)."""
    rng = augmentation_rng(seed, position)
    flip = bool(rng.random() < 0.5)
    return flip, (resize.sample_size(rng) if resize is not None else None)


class DatasetMapper:
    """Callable turning a dataset dict into `(image_tensor, target)` (training) or `(image_tensor,
    dataset_dict)` (inference; the dict keeps the original "height"/"width" the outputs are mapped back
    to). Images are resized by `resize` (None: kept as read). Build with `DatasetMapper.from_config(cfg, is_train)`."""

    def __init__(self, *, is_train: bool, image_format: str = "BGR", mask_on: bool = False,
                 random_flip: str = "horizontal", resize: Optional[ResizeShortestEdge] = None) -> None:
        if random_flip not in RANDOM_FLIP_CHOICES:
            raise ValueError(f"INPUT.RANDOM_FLIP must be one of {list(RANDOM_FLIP_CHOICES)}, got {random_flip!r}")
        self.is_train, self.image_format = is_train, image_format
        self.mask_on, self.random_flip, self.resize = mask_on, random_flip, resize

    @classmethod
    def from_config(cls, cfg, is_train: bool) -> "DatasetMapper":
        """Mapper for cfg (INPUT.FORMAT, INPUT.RANDOM_FLIP, the INPUT sizes of the mode, MODEL.MASK_ON)."""
        return cls(is_train=is_train, image_format=cfg.INPUT.FORMAT, mask_on=cfg.MODEL.MASK_ON,
                   random_flip=cfg.INPUT.RANDOM_FLIP, resize=ResizeShortestEdge.from_config(cfg, is_train))

    def __call__(self, dataset_dict: dict, flip: bool = False, short_edge: Optional[int] = None) -> Tuple[torch.Tensor, dict]:
        """Load, resize and convert one sample. `short_edge`: the training short side drawn for it
        (default: the first of the resize's lengths; eval uses the test size); `flip` is honoured only in
        training with RANDOM_FLIP on."""
        array = read_image(dataset_dict["file_name"], self.image_format)
        check_image_size(dataset_dict, array)
        h, w = array.shape[:2]
        size = (h, w) if self.resize is None else self.resize.output_size(h, w, short_edge if self.is_train else None)
        image = image_to_tensor(resize_image(array, size))
        if not self.is_train:
            return image, {**dataset_dict, "height": dataset_dict.get("height", h), "width": dataset_dict.get("width", w)}
        target = annotations_to_target(dataset_dict.get("annotations", []), h, w, mask_on=self.mask_on,
                                       file_name=dataset_dict["file_name"], output_size=size)
        if flip and self.random_flip == "horizontal":
            image, target["boxes"], masks = hflip(image, target["boxes"], target.get("masks"))
            if masks is not None:
                target["masks"] = masks.contiguous()
            image = image.contiguous()
        return image, target


class MappedDataset(torch.utils.data.Dataset):
    """Map-style dataset indexed by `(dataset index, global position)` pairs from the training
    batch sampler (position keys the flip RNG), or by a plain index for inference. The dicts are
    kept serialized so worker processes do not slowly copy them."""

    def __init__(self, dataset_dicts: List[dict], mapper: DatasetMapper, seed: Optional[int] = None) -> None:
        self.dataset_dicts = SerializedList(dataset_dicts)
        self.mapper, self.seed = mapper, seed

    def __len__(self) -> int:
        return len(self.dataset_dicts)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            index, position = key
            flip, short = augmentation_draws(self.seed, position, self.mapper.resize)
            return self.mapper(self.dataset_dicts[index], flip=flip, short_edge=short)
        return self.mapper(self.dataset_dicts[key])
