"""Loader builders: `build_detection_train_loader` (infinite, per-process share of
SOLVER.IMS_PER_BATCH, resumable) and `build_detection_test_loader` (finite, in order, sharded)."""
from __future__ import annotations

import logging
import os
from typing import Iterator, List, Sequence, Tuple

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from .catalog import DatasetCatalog, MetadataCatalog
from .coco import register_from_cfg
from .mapper import DatasetMapper, MappedDataset
from .samplers import InferenceSampler, TrainingBatchSampler

__all__ = ["get_detection_dataset_dicts", "resolve_seed", "TrainLoader", "build_detection_train_loader",
           "build_detection_test_loader"]

logger = logging.getLogger(__name__)


def _has_instances(dataset_dict: dict) -> bool:
    return any(not a.get("iscrowd", 0) for a in dataset_dict.get("annotations", []))


def _check_same_classes(names: Sequence[str]) -> None:
    """Datasets trained together must share their classes (else labels would mean different things)."""
    classes = {n: MetadataCatalog.get(n).get("thing_classes") for n in names}
    known = {n: c for n, c in classes.items() if c is not None}
    if len({tuple(c) for c in known.values()}) > 1:
        raise ValueError(f"Datasets {list(names)} have different thing_classes: {known}")


def get_detection_dataset_dicts(names: Sequence[str], filter_empty: bool = True) -> List[dict]:
    """Concatenate the dataset dicts of `names`; with `filter_empty`, drop images without any
    non-crowd annotation. Errors if nothing is left."""
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ValueError("DATASETS.TRAIN is empty: name at least one registered dataset")
    dicts = [d for name in names for d in DatasetCatalog.get(name)]
    _check_same_classes(names)
    total = len(dicts)
    if filter_empty:
        dicts = [d for d in dicts if _has_instances(d)]
        if total != len(dicts):
            logger.info(f"Dropped {total - len(dicts)} image(s) without non-crowd annotations "
                        f"(DATALOADER.FILTER_EMPTY_ANNOTATIONS=True); {len(dicts)} left")
    if not dicts:
        why = (f"; all {total} image(s) have no non-crowd annotation and DATALOADER.FILTER_EMPTY_ANNOTATIONS"
               f"=True dropped them") if total else ""
        raise ValueError(f"Empty training set: DATASETS.TRAIN={tuple(names)} has no images{why}")
    return dicts


def resolve_seed(cfg, world_size: int) -> int:
    """cfg.SEED when >= 0; else a random seed, shared by all ranks through the process group."""
    if cfg.SEED >= 0:
        return int(cfg.SEED)
    seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    if world_size > 1:
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("SEED < 0 (random) needs an initialized process group to share the seed "
                             f"across {world_size} processes; set SEED to a value >= 0")
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        shared = torch.tensor([seed], dtype=torch.int64, device=device)
        dist.broadcast(shared, src=0)
        seed = int(shared.item())
    logger.info(f"Data loader seed: {seed} (SEED < 0 drew it at random)")
    return seed


def _identity(batch):
    return batch


class TrainLoader:
    """Infinite iterable of lists of `(image, target)`; `state_dict()` / `load_state_dict()` save and
    restore the position (the iteration of the next batch handed out, and the seed)."""

    def __init__(self, dataset: MappedDataset, sampler: TrainingBatchSampler, num_workers: int) -> None:
        self.dataset, self.sampler, self.num_workers = dataset, sampler, num_workers

    @property
    def batch_size(self) -> int:
        """Images per batch on this process."""
        return self.sampler.batch_size

    def __iter__(self) -> Iterator[List[Tuple[torch.Tensor, dict]]]:
        self.dataset.seed = self.sampler.seed  # a loaded state may have changed the seed
        loader = DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=self.num_workers,
                            collate_fn=_identity)
        for batch in loader:
            self.sampler.iteration += 1
            yield batch

    def state_dict(self) -> dict:
        """The sampler's state (seed, next iteration, stream shape)."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Resume at the saved position; call before iterating."""
        self.sampler.load_state_dict(state)


def _check_num_classes(cfg, names: Sequence[str]) -> None:
    classes = MetadataCatalog.get(names[0]).get("thing_classes")
    if classes is not None and len(classes) > cfg.MODEL.ROI_HEADS.NUM_CLASSES:
        raise ValueError(f"MODEL.ROI_HEADS.NUM_CLASSES={cfg.MODEL.ROI_HEADS.NUM_CLASSES} is smaller than the "
                         f"{len(classes)} classes of {names[0]} ({classes}); set it to {len(classes)}")


def build_detection_train_loader(cfg, *, rank: int, world_size: int, start_iter: int = 0) -> TrainLoader:
    """Loader for cfg.DATASETS.TRAIN on process `rank` of `world_size`: batches of
    SOLVER.IMS_PER_BATCH / world_size images, infinite, starting at iteration `start_iter`."""
    total = cfg.SOLVER.IMS_PER_BATCH
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size - 1], got rank={rank}, world_size={world_size}")
    if total <= 0 or total % world_size:
        raise ValueError(f"SOLVER.IMS_PER_BATCH={total} must be a positive multiple of the number of "
                         f"processes ({world_size}); each process takes IMS_PER_BATCH / {world_size} images")
    register_from_cfg(cfg)
    names = list(cfg.DATASETS.TRAIN)
    dicts = get_detection_dataset_dicts(names, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    _check_num_classes(cfg, names)
    groups = [0 if d["width"] > d["height"] else 1 for d in dicts] if cfg.DATALOADER.ASPECT_RATIO_GROUPING else None
    seed = resolve_seed(cfg, world_size)
    sampler = TrainingBatchSampler(len(dicts), total // world_size, seed=seed, rank=rank, world_size=world_size,
                                   group_ids=groups, start_iter=start_iter)
    dataset = MappedDataset(dicts, DatasetMapper.from_config(cfg, is_train=True), seed=seed)
    return TrainLoader(dataset, sampler, cfg.DATALOADER.NUM_WORKERS)


def build_detection_test_loader(cfg, dataset_name: str, *, rank: int = 0, world_size: int = 1) -> DataLoader:
    """Finite loader over `dataset_name` in order, batches of one `(image, dataset_dict)`; rank `rank`
    gets the `rank`-th of `world_size` contiguous disjoint shards."""
    register_from_cfg(cfg)
    dicts = DatasetCatalog.get(dataset_name)
    dataset = MappedDataset(dicts, DatasetMapper.from_config(cfg, is_train=False))
    return DataLoader(dataset, batch_size=1, sampler=InferenceSampler(len(dicts), rank, world_size),
                      num_workers=cfg.DATALOADER.NUM_WORKERS, collate_fn=_identity)
