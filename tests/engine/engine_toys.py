"""Small stand-ins for the trainer tests: a detector-shaped model, a resumable random loader, and the
64-px shapes dataset the train_net tests register on the command line."""
from pathlib import Path
from typing import List, Tuple

import torch
from torch import nn

from gn_det.data import generate_shapes_dataset


def shapes64_register_flags(root: Path, prefix: str) -> Tuple[List[str], Path]:
    """Generate 8 train / 4 val 64-px shapes images (seed 1) under ``root``; return train_net's
    ``--register-coco`` flags naming them ``<prefix>_train`` / ``<prefix>_val``, and the annotations folder."""
    generate_shapes_dataset(str(root), num_train=8, num_val=4, size=64, seed=1)
    ann = root / "annotations"
    return ["--register-coco", f"{prefix}_train", str(ann / "instances_train.json"), str(root / "train"),
            "--register-coco", f"{prefix}_val", str(ann / "instances_val.json"), str(root / "val")], ann


class ToyDetector(nn.Module):
    """Takes (images, targets) like torchvision detectors and returns a dict of losses.

    Uses BN (running stats), GN, dropout and torch.randperm (global RNG) so resume must restore RNG.
    """

    def __init__(self, nan_at_call: int = -1):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.gn = nn.GroupNorm(2, 8)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(8, 2)
        self.nan_at_call = nan_at_call
        self.calls = 0

    def forward(self, images, targets=None):
        x = torch.stack(images)
        x = self.drop(torch.relu(self.gn(self.bn(self.conv(x))))).mean(dim=(2, 3))
        out = self.head(x)
        if not self.training:
            return [{"scores": o} for o in out]
        self.calls += 1
        pick = torch.randperm(out.shape[0])[:1]
        y = torch.stack([t["y"] for t in targets])
        loss_a = ((out[:, 0] - y) ** 2).mean()
        loss_b = out[pick, 1].abs().mean()
        if self.calls == self.nan_at_call:
            loss_b = loss_b * float("nan")
        return {"loss_a": loss_a, "loss_b": loss_b}


class RandomLoader:
    """Infinite batches of random 8x8 images; the batch at iteration i depends only on (seed, i)."""

    def __init__(self, batch_size: int = 4, seed: int = 0):
        self.batch_size, self.seed, self.iteration = batch_size, seed, 0

    def __iter__(self):
        while True:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.iteration)
            imgs = torch.rand(self.batch_size, 3, 8, 8, generator=g) * 255
            ys = torch.rand(self.batch_size, generator=g)
            self.iteration += 1
            yield [(imgs[i], {"y": ys[i]}) for i in range(self.batch_size)]

    def state_dict(self):
        return {"seed": self.seed, "iteration": self.iteration}

    def load_state_dict(self, state):
        self.seed, self.iteration = state["seed"], state["iteration"]
