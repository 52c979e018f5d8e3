"""Rebinding a detectron2 function everywhere it was imported by name (``from detectron2.layers import get_norm``).

detectron2's builders hold their own reference to ``get_norm``, ``build_model`` and the optimizer helper,
so replacing the attribute in one module is not enough: ``rebind`` replaces every module-level name bound
to the original (detectron2's modules and a user's, loaded before setup); modules loaded later import the
replacement from the patched source module.
"""
from __future__ import annotations

import sys
from typing import Callable, List

_ORIGINAL = "__gn_det_original__"


def original_of(function: Callable) -> Callable:
    """The detectron2 function a gn_det replacement stands for (``function`` itself if not a replacement)."""
    return getattr(function, _ORIGINAL, function)


def mark_replacement(original: Callable, replacement: Callable) -> Callable:
    """Record on ``replacement`` the original it stands for (``original_of``); returns ``replacement``."""
    setattr(replacement, _ORIGINAL, original)
    return replacement


def rebind(original: Callable, replacement: Callable) -> List[str]:
    """Point every loaded module's name bound to ``original`` at ``replacement``; return 'module.name's.

    ``replacement`` records ``original`` (``original_of``), so setup run twice rebinds nothing new.
    """
    mark_replacement(original, replacement)
    rebound = []
    for module_name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attr, value in list(namespace.items()):
            if value is original:
                namespace[attr] = replacement
                rebound.append(f"{module_name}.{attr}")
    return rebound
