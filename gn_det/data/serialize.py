"""A list stored as one numpy byte buffer of pickles.

Worker processes forked from the main process share the dataset dicts copy-on-write, but touching a
Python object writes its reference count, so a list of 100k dicts is slowly copied into every worker
(detectron2's DatasetFromList has the same fix). One flat buffer has no per-item objects to touch.
"""
from __future__ import annotations

import pickle
from typing import Any, Iterable

import numpy as np

__all__ = ["SerializedList"]


class SerializedList:
    """Read-only list whose items are pickled into one uint8 array; `[i]` returns a fresh copy."""

    def __init__(self, items: Iterable[Any]) -> None:
        blobs = [np.frombuffer(pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8) for x in items]
        self._ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
        self._data = np.concatenate(blobs) if blobs else np.zeros(0, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> Any:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index %= len(self)
        start = 0 if index == 0 else int(self._ends[index - 1])
        return pickle.loads(memoryview(self._data[start:int(self._ends[index])]))
