"""Atomic file writes: a temporary file in the target's directory, then ``os.replace``.

A reader (or a crash) never sees a half-written results file, metrics file, checkpoint, table or
plot. The file gets the permissions a plain ``open(path, "w")`` would give (0666 minus the umask),
not ``mkstemp``'s private 0600, so teammates and a TensorBoard run as another user can read it.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, IO


def _umask() -> int:
    """The process's current umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> str:
    """Create ``path`` by calling ``write(binary_file)`` on a temp file, then renaming it into place."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_write_text(path: str, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str, obj: Any, **dump_kwargs: Any) -> str:
    """Write ``obj`` as JSON to ``path`` atomically; returns ``path``."""
    return atomic_write_text(path, json.dumps(obj, **dump_kwargs))


def atomic_torch_save(obj: Any, path: str) -> str:
    """``torch.save(obj)`` to ``path`` atomically; returns ``path``."""
    import torch  # imported here: the table tools use this module without torch

    return atomic_write(path, lambda f: torch.save(obj, f))
