"""Count the host synchronisations a piece of code asks for: reads of tensor values into Python.

On a GPU each such read (``.item()``, ``float(t)``, ``int(t)``, ``bool(t)``, ``.tolist()``, ``.cpu()``,
``.numpy()``) waits for every kernel queued before it, so a training step should make at most one (the
logging of its losses). On the CPU nothing waits, but the same code makes the same reads: counting them on
the CPU is the stand-in when no GPU is lent (issue 18).

``HostSyncCounter`` counts, while active, (1) every ``aten._local_scalar_dense`` call, the op behind
``.item()``/``float()``/``int()``/``bool()`` of a tensor, seen by a ``TorchDispatchMode`` whatever Python
calls it; and (2) the Python calls of ``Tensor.tolist``, ``Tensor.cpu`` and ``Tensor.numpy`` (which read
a CPU tensor without dispatching an op), patched on ``torch.Tensor`` for the duration. Ops with a
value-dependent output shape (``nonzero``, boolean-mask indexing) are counted apart, in ``data_dependent``. ``sites`` keeps the
innermost gn_det (or calling) frame of each, so a failing test names the line.
"""
from __future__ import annotations

import collections
import traceback
from typing import Counter, List, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HostSyncCounter"]

_PATCHED = ("tolist", "cpu", "numpy")
# ops whose output shape depends on the values (boolean masks, nonzero): on CUDA they wait for the GPU
# too, without a Python read; counted apart (``data_dependent``), as torchvision's RPN/RoI sampling needs them
_DATA_DEPENDENT = (torch.ops.aten.nonzero, torch.ops.aten.masked_select, torch.ops.aten._unique2,
                   torch.ops.aten.unique_consecutive, torch.ops.aten.repeat_interleave)


def _site() -> str:
    """file:line of the innermost frame outside torch and this module (where the read was asked for)."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        name = frame.filename.replace("\\", "/")
        if "/torch/" not in name and frame.filename != __file__:
            return f"{name.rsplit('/', 2)[-2]}/{name.rsplit('/', 1)[-1]}:{frame.lineno}"
    return "?"


class _ScalarReads(TorchDispatchMode):
    def __init__(self, counter: "HostSyncCounter") -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.counter._record("item")
        elif func.overloadpacket in _DATA_DEPENDENT or (
                func.overloadpacket is torch.ops.aten.index and any(
                    isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ()))):
            self.counter.data_dependent[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


class HostSyncCounter:
    """``with HostSyncCounter() as c: step()`` then ``c.count`` (total), ``c.by_kind``, ``c.sites``."""

    def __init__(self) -> None:
        self.by_kind: Counter[str] = collections.Counter()
        self.data_dependent: Counter[str] = collections.Counter()
        self.sites: List[str] = []
        self._mode: Optional[_ScalarReads] = None
        self._originals = {}
        self._inside = 0  # a patched call that dispatches _local_scalar_dense itself counts once

    @property
    def count(self) -> int:
        return sum(self.by_kind.values())

    def _record(self, kind: str) -> None:
        if self._inside:
            return
        self.by_kind[kind] += 1
        self.sites.append(f"{kind} at {_site()}")

    def _wrap(self, name: str):
        original = self._originals[name]
        counter = self

        def read(tensor, *args, **kwargs):
            counter._record(name)
            counter._inside += 1
            try:
                return original(tensor, *args, **kwargs)
            finally:
                counter._inside -= 1

        return read

    def __enter__(self) -> "HostSyncCounter":
        for name in _PATCHED:
            self._originals[name] = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, self._wrap(name))
        self._mode = _ScalarReads(self)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)
        for name, fn in self._originals.items():
            setattr(torch.Tensor, name, fn)
        self._originals.clear()
