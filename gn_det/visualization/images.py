"""Image files in and out for the drawing tools: which files an --input names, and atomic writes."""
from __future__ import annotations

import glob
import io
import os
from typing import List, Sequence

import numpy as np
from PIL import Image

from gn_det.utils.file_io import atomic_write

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

__all__ = ["IMAGE_EXTENSIONS", "expand_inputs", "save_image"]


def _is_image(path: str) -> bool:
    return os.path.isfile(path) and path.lower().endswith(IMAGE_EXTENSIONS)


def expand_inputs(paths: Sequence[str], flag: str = "--input") -> List[str]:
    """The image files ``paths`` name, in order: a file as is, a folder's images (sorted, not recursive), a
    glob's matches (expanded here, so a quoted glob works). ValueError naming ``flag`` for a path that
    names no image, and for two inputs with one file name (their drawings would overwrite each other)."""
    files: List[str] = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, f) for f in os.listdir(path) if _is_image(os.path.join(path, f)))
            what = f"folder {path!r} holds no image ({', '.join(IMAGE_EXTENSIONS)})"
        elif os.path.isfile(path):
            found, what = [path], ""
        elif glob.has_magic(path):
            found = sorted(f for f in glob.glob(path) if _is_image(f))
            what = f"{path!r} matches no image file"
        else:
            found, what = [], f"{path!r} is not a file, a folder or a glob"
        if not found:
            raise ValueError(f"{flag} {what}")
        files.extend(found)
    seen = {}
    for f in files:
        name = os.path.basename(f)
        if name in seen and os.path.abspath(seen[name]) != os.path.abspath(f):
            raise ValueError(f"{flag} names two images called {name!r} ({seen[name]} and {f}); their drawings "
                             "would overwrite each other: give them one at a time")
        seen[name] = f
    return list(dict.fromkeys(files))


def save_image(path: str, rgb: np.ndarray) -> str:
    """Write an HxWx3 uint8 RGB image atomically, in the format its extension names (JPEG at quality 95)."""
    image = Image.fromarray(rgb)
    fmt = Image.registered_extensions().get(os.path.splitext(path)[1].lower(), "PNG")
    buf = io.BytesIO()
    image.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return atomic_write(path, lambda f: f.write(buf.getvalue()))
