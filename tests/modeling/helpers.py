"""Small configs and inputs shared by the modeling tests."""
import torch

from gn_det.config import get_cfg, resolve_config_path

SMALL = ["INPUT.MIN_SIZE_TRAIN", (64,), "INPUT.MAX_SIZE_TRAIN", 96, "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 96]


def tiny_cfg(name="tiny/mask_rcnn_R_18_FPN_gn.yaml", *overrides):
    """A tiny recipe at 64 px, plus overrides."""
    cfg = get_cfg()
    cfg.merge_from_file(resolve_config_path(name))
    cfg.merge_from_list(SMALL + list(overrides))
    return cfg


def tiny_batch(num_classes=4, seed=0):
    """Two 0-255 images of different sizes; the first with 2 boxes+masks, the second with none."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 60, 80, generator=g) * 255, torch.rand(3, 50, 64, generator=g) * 255]
    masks = torch.zeros(2, 60, 80, dtype=torch.uint8)
    masks[0, 5:30, 10:40] = 1
    masks[1, 30:55, 40:75] = 1
    targets = [
        {"boxes": torch.tensor([[10.0, 5, 40, 30], [40, 30, 75, 55]]), "labels": torch.tensor([1, num_classes]),
         "masks": masks},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
         "masks": torch.zeros(0, 50, 64, dtype=torch.uint8)},
    ]
    return images, targets
