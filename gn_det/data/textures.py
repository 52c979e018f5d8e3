"""Synthetic texture classification: the pretraining task of the fine-tuning comparison.

The papers compare norms by fine-tuning an ImageNet-pretrained backbone; the miniature pretrains its tiny
ResNet on this task instead (tools/pretrain_backbone.py). It is deliberately not the detection data
(gn_det.data.shapes: solid circles, squares, triangles and stars on a plain background, 4 classes):
here every image is one periodic texture filling a random window over a noisy background, and the class
is the texture's kind (8 classes: stripes at four orientations, checkerboard, rings, dots, zigzag), with
random frequency, phase, rotation jitter, colours and noise. A backbone must learn oriented edges,
frequencies and their arrangement, the low-level features detection reuses, without seeing one shape.

Generation is vectorised numpy over the whole batch; batch ``i`` of a stream depends only on
``(seed, stream, i)``, so a loader resumes at any batch and every process draws its own images.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch

__all__ = ["TEXTURE_CLASSES", "make_textures", "TextureLoader", "texture_eval_set"]

TEXTURE_CLASSES: Tuple[str, ...] = (
    "stripes_0", "stripes_45", "stripes_90", "stripes_135", "checkerboard", "rings", "dots", "zigzag",
)
_TRAIN_STREAM, _VAL_STREAM = 0, 1


def make_textures(labels: Sequence[int], size: int, rng: np.random.Generator) -> np.ndarray:
    """``(N, size, size, 3)`` uint8 RGB images, image ``n`` a texture of class ``labels[n]``.

    Each pattern is a field in [-1, 1] made soft-binary by ``tanh``; the foreground colour differs
    from the background colour by at least 90 grey levels in some channel, so every class is visible.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1 or (labels.size and (labels.min() < 0 or labels.max() >= len(TEXTURE_CLASSES))):
        raise ValueError(f"labels must be class indices in [0, {len(TEXTURE_CLASSES)}), got {labels}")
    n = labels.size
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    y, x = coords[None, :, None], coords[None, None, :]  # (1, S, 1), (1, 1, S)

    def per_image(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, n).astype(np.float32)[:, None, None]

    freq = per_image(3.0, 7.0)  # cycles per image width
    phase = per_image(0.0, 2 * np.pi)
    jitter = per_image(-np.pi / 18, np.pi / 18)  # +-10 degrees: orientation classes stay apart (45 degrees)
    base_angle = np.array([0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4, 0, 0, 0, 0], np.float32)[labels][:, None, None]
    angle = base_angle + jitter
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    cx, cy = per_image(0.2, 0.8), per_image(0.2, 0.8)
    two_pi_f = 2 * np.pi * freq

    field = np.empty((n, size, size), np.float32)
    for cls in range(len(TEXTURE_CLASSES)):  # one vectorised expression per class over its images
        idx = np.nonzero(labels == cls)[0]
        if idx.size == 0:
            continue
        w, p, uu, vv = two_pi_f[idx], phase[idx], u[idx], v[idx]
        if cls < 4:
            f = np.sin(w * uu + p)
        elif cls == 4:
            f = np.sign(np.sin(w * uu + p) * np.sin(w * vv + p)) * 0.9
        elif cls == 5:
            r = np.sqrt((x - cx[idx]) ** 2 + (y - cy[idx]) ** 2)
            f = np.sin(w * r + p)
        elif cls == 6:
            f = np.cos(w * uu + p) + np.cos(w * vv + p) - 1.0
        else:
            f = np.sin(w * (vv + 0.06 * np.sin(2 * np.pi * 4.0 * uu)) + p)
        field[idx] = np.broadcast_to(f, (idx.size, size, size))
    pattern = 0.5 * (1.0 + np.tanh(4.0 * field))  # (N, S, S) in [0, 1]

    background = rng.uniform(0, 255, (n, 1, 1, 3)).astype(np.float32)
    delta = rng.uniform(90, 160, (n, 1, 1, 3)).astype(np.float32) * rng.choice([-1.0, 1.0], (n, 1, 1, 3))
    delta *= (rng.uniform(0, 1, (n, 1, 1, 3)) < 0.7) | (np.arange(3) == rng.integers(0, 3, (n, 1, 1, 1)))
    foreground = np.where(background + delta > 255, background - np.abs(delta),
                          np.where(background + delta < 0, background + np.abs(delta), background + delta))
    # the texture fills a random window of 60-100 % of each side; plain background elsewhere
    side = rng.uniform(0.6, 1.0, (n, 2))
    lo = rng.uniform(0, 1, (n, 2)) * (1 - side)
    inside = ((y >= lo[:, 0, None, None]) & (y < (lo[:, 0] + side[:, 0])[:, None, None])
              & (x >= lo[:, 1, None, None]) & (x < (lo[:, 1] + side[:, 1])[:, None, None]))
    pattern = pattern * inside
    images = background + (foreground - background) * pattern[..., None]
    images += rng.normal(0.0, 12.0, images.shape).astype(np.float32)
    return np.clip(images, 0, 255).round().astype(np.uint8)


def _batch(seed: int, stream: int, index: int, count: int, size: int,
           num_classes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images ``(count, 3, S, S)`` float32 0-255 and labels ``(count,)`` of batch ``index`` of a stream."""
    rng = np.random.default_rng([int(seed), int(stream), int(index)])
    labels = rng.integers(0, num_classes, count)
    images = make_textures(labels, size, rng)
    return torch.from_numpy(images).permute(0, 3, 1, 2).float(), torch.from_numpy(labels)


def texture_eval_set(num_images: int, size: int, num_classes: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The held-out set: ``num_images`` images from the validation stream (never drawn in training)."""
    return _batch(seed, _VAL_STREAM, 0, num_images, size, num_classes)


class TextureLoader:
    """Endless training batches of ``(image (3, S, S) float 0-255, {"label": ()})`` pairs, this process's share.

    Batch ``i`` of process ``rank`` is drawn from generator ``(seed, 0, i * world_size + rank)``, so the
    stream is the same however it is cut into runs; ``state_dict`` / ``load_state_dict`` hold the
    position, which the engine's Checkpointer saves (as it does a detection loader's).
    """

    def __init__(self, images_per_batch: int, size: int, num_classes: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        if not 2 <= num_classes <= len(TEXTURE_CLASSES):
            raise ValueError(f"PRETRAIN.NUM_CLASSES must be in [2, {len(TEXTURE_CLASSES)}], got {num_classes}")
        if images_per_batch < 1 or size < 16:
            raise ValueError(f"need images per process >= 1 and PRETRAIN.IMAGE_SIZE >= 16, got "
                             f"{images_per_batch} and {size}")
        self.images_per_batch, self.size, self.num_classes = images_per_batch, size, num_classes
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.position = 0

    def state_dict(self) -> Dict[str, int]:
        """The next batch's index."""
        return {"position": self.position}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        """Continue at a saved position."""
        self.position = int(state["position"])

    def __iter__(self) -> Iterator[List[Tuple[torch.Tensor, Dict[str, torch.Tensor]]]]:
        while True:
            images, labels = _batch(self.seed, _TRAIN_STREAM, self.position * self.world_size + self.rank,
                                    self.images_per_batch, self.size, self.num_classes)
            self.position += 1
            yield [(img, {"label": lab}) for img, lab in zip(images, labels)]
