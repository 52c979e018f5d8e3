"""Read a weights file as data, never as code.

``.pth`` (and any zip-based torch file) goes through ``torch.load(weights_only=True)``; Caffe2/Detectron
``.pkl`` files go through a restricted unpickler that admits only dicts, lists, tuples, strings, numbers
and numpy arrays. Anything else (a pickle that would import ``os.system`` and call it, say) is refused
before it is imported, so nothing in the file is executed.

The constructors a data pickle may call can also be asked for memory the file does not hold
(``bytearray(10**9)``, ``bytes(n)``, ``ndarray(shape)``: a 78-byte file could ask for 763 MiB). The
unpickler bounds them: what they allocate together may not exceed what the file can plausibly hold
(``allocation_budget``: twice its size plus 1 MiB). The file is read through a memory map by Python's
own unpickler (C's allocates the length a bytes field declares before reading it), so a length field
claiming more bytes than the file has allocates nothing either.
"""
from __future__ import annotations

import importlib
import math
import mmap
import os
import pickle
import zipfile
from typing import Any, Callable, Dict, Tuple

import torch

__all__ = ["WeightsFileError", "UnsafeWeightsError", "read_weights_file"]


class WeightsFileError(ValueError):
    """A weights file that cannot be read: missing, truncated, corrupt or of an unknown format."""


class UnsafeWeightsError(WeightsFileError):
    """A weights file whose pickle asks for an object that is not plain data; nothing was executed."""


def _numpy_attr(*candidates: str) -> Callable:
    """The first importable ``module:attr`` of ``candidates`` (numpy 2 moved numpy.core to numpy._core)."""
    for candidate in candidates:
        module_name, attr = candidate.split(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"none of {candidates} is importable")


def allocation_budget(file_size: int) -> int:
    """Bytes the constructors of a ``file_size``-byte pickle may allocate in all: its arrays' data is
    in the file, so twice its size (plus 1 MiB for small files) is already generous."""
    return 2 * int(file_size) + 2**20


class _Budget:
    """Counts what a pickle's constructors allocate; refuses what the file cannot plausibly hold."""

    def __init__(self, path: str, file_size: int):
        self.path = path
        self.file_size = file_size
        self.limit = allocation_budget(file_size)
        self.used = 0

    def charge(self, nbytes: int, what: str) -> None:
        """Account ``nbytes`` for ``what`` before it is allocated; UnsafeWeightsError past the budget."""
        self.used += max(int(nbytes), 0)
        if self.used > self.limit:
            raise UnsafeWeightsError(
                f"{self.path}: refusing to load: the pickle asks to allocate {_size(nbytes)} ({what}), more than "
                f"a {self.file_size}-byte file can hold as data; the file is corrupt or malicious, and nothing "
                "was allocated"
            )


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes} bytes"


def _dims(shape: Any) -> Tuple[int, ...]:
    """A shape argument (an int or a sequence of ints) as a tuple of Python ints."""
    return (int(shape),) if isinstance(shape, int) else tuple(int(d) for d in shape)


def _array_nbytes(shape: Any, dtype: Any) -> int:
    """Bytes of an array of ``shape`` and ``dtype`` (as numpy would allocate), without allocating."""
    import numpy as np

    return math.prod(_dims(shape)) * np.dtype(dtype).itemsize


def _bounded_constructors(budget: _Budget, table: Dict[Tuple[str, str], Any]) -> Dict[Tuple[str, str], Any]:
    """``table`` with the allocating constructors replaced by versions that charge ``budget`` first."""
    import numpy as np

    reconstruct = table[("numpy.core.multiarray", "_reconstruct")]

    def sized_bytes(kind: type):
        def make(*args):
            if args and isinstance(args[0], int) and not isinstance(args[0], bool):
                budget.charge(args[0], f"{kind.__name__}({args[0]})")
            elif len(args) > 1 and str(args[1]).lower().replace("-", "") not in ("latin1", "ascii", "utf8"):
                raise UnsafeWeightsError(f"{budget.path}: refusing to load: the pickle asks to decode bytes with "
                                         f"the codec {args[1]!r}; data pickles use latin-1")
            return kind(*args)
        return make

    class ArrayType:
        """Stands for numpy.ndarray: as ``_reconstruct``'s subtype, or called directly (charged)."""

        def __call__(self, shape, dtype=float, *args, **kwargs):
            if not args and "buffer" not in kwargs:
                budget.charge(_array_nbytes(shape, dtype), f"ndarray{_dims(shape)}")
            return np.ndarray(shape, dtype, *args, **kwargs)

    array_type = ArrayType()

    def bounded_reconstruct(subtype, shape, dtype):
        if subtype is array_type:
            subtype = np.ndarray
        budget.charge(_array_nbytes(shape, dtype), f"an array of shape {_dims(shape)}")
        return reconstruct(subtype, shape, dtype)

    def latin1_encode(obj, encoding="utf-8", *rest):
        if str(encoding).lower().replace("-", "").replace("_", "") not in ("latin1", "ascii", "utf8"):
            raise UnsafeWeightsError(f"{budget.path}: refusing to load: the pickle asks for the codec "
                                     f"{encoding!r}; data pickles use latin-1")
        return table[("_codecs", "encode")](obj, encoding, *rest)

    out = dict(table)
    out[("numpy", "ndarray")] = array_type
    out[("_codecs", "encode")] = latin1_encode
    for key, obj in table.items():
        if obj is reconstruct:
            out[key] = bounded_reconstruct
        elif obj is bytes or obj is bytearray:
            out[key] = sized_bytes(obj)
    return out


def _allowed_globals() -> Dict[Tuple[str, str], Any]:
    """(module, name) -> object for the globals a numpy-array pickle needs, and nothing else.

    Arrays pickle as ``_reconstruct(ndarray, ...)`` + ``__setstate__`` (protocol <= 4) or
    ``_frombuffer(buffer, dtype, shape, order)`` (protocol 5); numpy scalars as ``scalar(dtype, bytes)``;
    protocol 2 from Python 3 writes bytes as ``_codecs.encode(str, 'latin1')`` (empty ones as ``bytes()``).
    """
    import codecs
    import collections

    import numpy as np

    reconstruct = _numpy_attr("numpy._core.multiarray:_reconstruct", "numpy.core.multiarray:_reconstruct")
    scalar = _numpy_attr("numpy._core.multiarray:scalar", "numpy.core.multiarray:scalar")
    frombuffer = _numpy_attr("numpy._core.numeric:_frombuffer", "numpy.core.numeric:_frombuffer")
    table: Dict[Tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }
    for builtins_module in ("builtins", "__builtin__"):  # protocol 2 writes empty bytes as bytes()
        table[(builtins_module, "bytes")] = bytes
        table[(builtins_module, "bytearray")] = bytearray
    for module in ("numpy.core", "numpy._core"):
        table[(f"{module}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{module}.multiarray", "scalar")] = scalar
        table[(f"{module}.numeric", "_frombuffer")] = frombuffer
    # dtype subclasses numpy >= 1.25 pickles by class (numpy.dtypes.Float32DType, ...)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in dir(dtypes):
            if name.endswith("DType"):
                table[("numpy.dtypes", name)] = getattr(dtypes, name)
    return table


class _DataOnlyUnpickler(pickle._Unpickler):  # the Python one: C's allocates a bytes field's declared length first
    """An Unpickler whose ``find_class`` answers only for numpy's array machinery (bounded in size)."""

    def __init__(self, file, path: str, file_size: int):
        super().__init__(file, encoding="latin1")  # Detectron's pickles come from Python 2
        self._path = path
        self._allowed = _bounded_constructors(_Budget(path, file_size), _allowed_globals())

    def find_class(self, module: str, name: str) -> Any:
        obj = self._allowed.get((module, name))
        if obj is None:
            raise UnsafeWeightsError(
                f"{self._path}: refusing to load: the pickle asks for '{module}.{name}', which is not "
                "data (weights .pkl files may hold only dicts, lists, tuples, strings, numbers and numpy "
                "arrays); nothing from the file was executed"
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeWeightsError(
            f"{self._path}: refusing to load: the pickle references an external object ({pid!r}); "
            "a .pkl weights file must be self-contained data"
        )


def _load_restricted_pickle(path: str) -> Any:
    """Unpickle through a read-only memory map: a read never returns (or allocates) more than the file has."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        return _DataOnlyUnpickler(mapped, path, os.path.getsize(path)).load()


def _load_torch(path: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's weights-only unpickler refused a global: report it as a refusal, not corruption
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        detail = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line or "global" in line), "")
        raise UnsafeWeightsError(
            f"{path}: refusing to load: torch.load(weights_only=True) rejected it: {detail or first_line}; "
            "nothing from the file was executed"
        ) from None


def read_weights_file(path: str) -> Any:
    """Load ``path`` as plain data: torch tensors/dicts for .pth, numpy arrays/dicts for .pkl.

    Raises WeightsFileError (file missing, empty, truncated or corrupt) or UnsafeWeightsError (the file
    wants to import something other than data), both naming the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsFileError(f"{path}: no such weights file")
    if os.path.getsize(path) == 0:
        raise WeightsFileError(f"{path}: the weights file is empty")
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04" or zipfile.is_zipfile(path)  # a cut .pth keeps its zip header
    try:
        if is_zip:
            return _load_torch(path)
        data = _load_restricted_pickle(path)
        if isinstance(data, int) and data == torch.serialization.MAGIC_NUMBER:
            # torch's legacy (pre-1.6, non-zip) format: a pickled magic number, then the records
            return _load_torch(path)
        return data
    except UnsafeWeightsError:
        raise
    except Exception as e:  # truncated / corrupt files raise many types (EOFError, RuntimeError, ...)
        kind = "torch zip" if is_zip else "pickle"
        detail = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else "no detail"
        raise WeightsFileError(
            f"{path}: cannot read the weights file ({kind} format): it looks truncated or corrupt "
            f"({type(e).__name__}: {detail})"
        ) from e
