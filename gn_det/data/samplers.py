"""Samplers: an infinite, seeded, distributed training batch sampler with aspect-ratio grouping and
exact resume, and a sharded inference sampler.

Training order. Epoch e is the permutation `default_rng([seed, e]).permutation(N)` of the dataset;
rank r of W takes the positions p = r, r + W, r + 2W, ... of it (a disjoint shard; the W shards
together are the whole permutation). Each drawn sample carries its global position e * N + p, which
keys its flip. With grouping, a rank buffers its samples in two buckets (wide / tall images) and
emits a bucket when it holds a batch (detectron2's AspectRatioGroupedDataset, but in the main
process, so batches do not depend on worker timing). The stream is a pure function of (seed, N,
W, r, batch size, groups), so resuming at iteration k replays the index stream (cheap: indices only,
no images) and skips k batches: batches k, k+1, ... equal those of an unbroken run.
"""
from __future__ import annotations

import itertools
import logging
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["epoch_permutation", "TrainingBatchSampler", "InferenceSampler"]

logger = logging.getLogger(__name__)


def epoch_permutation(seed: int, epoch: int, num_samples: int) -> np.ndarray:
    """The dataset order of `epoch` in a run seeded with `seed` (same on every rank and platform)."""
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


class TrainingBatchSampler:
    """Infinite batches of `(dataset index, global position)` pairs for one rank.

    `iteration` is the index of the next batch the consumer will receive; the training loader
    advances it as it hands batches out, so `state_dict()` taken at any time resumes exactly there.
    """

    def __init__(self, num_samples: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 group_ids: Optional[Sequence[int]] = None, start_iter: int = 0) -> None:
        if num_samples <= 0:
            raise ValueError(f"TrainingBatchSampler needs a non-empty dataset, got {num_samples} samples")
        if batch_size <= 0:
            raise ValueError(f"batch size per process must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size - 1}] for world size {world_size}, got {rank}")
        if group_ids is not None and len(group_ids) != num_samples:
            raise ValueError(f"group_ids has {len(group_ids)} entries for {num_samples} samples")
        if start_iter < 0:
            raise ValueError(f"start_iter must be >= 0, got {start_iter}")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.group_ids = None if group_ids is None else np.asarray(group_ids, dtype=np.int64)
        self.iteration = start_iter

    def _samples(self) -> Iterator[Tuple[int, int]]:
        """This rank's infinite stream of (dataset index, global position)."""
        n = self.num_samples
        for epoch in itertools.count():
            perm = epoch_permutation(self.seed, epoch, n)
            for p in range(self.rank, n, self.world_size):
                yield int(perm[p]), epoch * n + p

    def _all_batches(self) -> Iterator[List[Tuple[int, int]]]:
        """Every batch of the run from iteration 0, grouped by aspect ratio when group_ids is set."""
        buckets: Dict[int, List[Tuple[int, int]]] = {}
        for index, position in self._samples():
            group = 0 if self.group_ids is None else int(self.group_ids[index])
            bucket = buckets.setdefault(group, [])
            bucket.append((index, position))
            if len(bucket) == self.batch_size:
                yield bucket
                buckets[group] = []

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        return itertools.islice(self._all_batches(), self.iteration, None)

    def state_dict(self) -> dict:
        """What resuming needs: the seed and the next iteration, plus the shape of the stream."""
        return {"seed": self.seed, "iteration": self.iteration, "world_size": self.world_size,
                "batch_size": self.batch_size, "num_samples": self.num_samples,
                "aspect_ratio_grouping": self.group_ids is not None}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict()`; takes effect at the next `iter()`."""
        for key in ("seed", "iteration"):
            if key not in state:
                raise KeyError(f"sampler state has no '{key}' (got keys {sorted(state)})")
        mine = self.state_dict()
        differ = [f"{k}: saved {state[k]}, now {mine[k]}" for k in
                  ("world_size", "batch_size", "num_samples", "aspect_ratio_grouping")
                  if k in state and state[k] != mine[k]]
        if differ:
            logger.warning("Resuming the data order with a different setup (%s): batches after the resume "
                           "will not match those of the interrupted run", "; ".join(differ))
        self.seed, self.iteration = int(state["seed"]), int(state["iteration"])


class InferenceSampler:
    """Indices 0..N-1 in order, split into contiguous disjoint shards, one per rank."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size - 1}] for world size {world_size}, got {rank}")
        shard = (num_samples + world_size - 1) // world_size
        self.indices = range(min(rank * shard, num_samples), min((rank + 1) * shard, num_samples))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
