"""Where config files live: a bare file name given to the tools is looked up in the repo's configs/."""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import List

# gn_det/config/paths.py -> the repository root holds configs/ (editable install, as the tools use it).
CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"
_SEARCH_SUBDIRS = ("", "tiny")  # configs/ first, then configs/tiny/


def resolve_config_path(name: str) -> str:
    """Path of config ``name``: an existing path as given, else ``configs/<name>`` or ``configs/tiny/<name>``.

    Raises FileNotFoundError (one line) naming the file and the closest recipes in configs/.
    """
    if os.path.isfile(name):
        return str(name)
    if not os.path.isabs(name):
        for sub in _SEARCH_SUBDIRS:
            candidate = CONFIGS_DIR / sub / name
            if candidate.is_file():
                return str(candidate)
    close = closest_configs(name)
    hint = f"did you mean {', '.join(close)}?" if close else f"the recipes are in {CONFIGS_DIR}"
    raise FileNotFoundError(f"config file '{name}' not found (as a path, or in configs/ and configs/tiny/); {hint}")


DETECTRON2_RECIPES = "detectron2"  # configs/detectron2/: detectron2's format, not gn_det's


def closest_configs(name: str, n: int = 3) -> List[str]:
    """Up to ``n`` recipes in configs/ (paths relative to it) whose file names are closest to ``name``,
    best first; only those nearly as close as the best (difflib ratio of the stems within 0.1)."""
    if not CONFIGS_DIR.is_dir():
        return []
    stem = os.path.splitext(os.path.basename(name))[0]
    scored = []
    for path in CONFIGS_DIR.rglob("*.yaml"):
        if path.relative_to(CONFIGS_DIR).parts[0] == DETECTRON2_RECIPES:
            continue  # detectron2-format recipes, for detectron2's own train_net with gn_det.detectron2
        ratio = difflib.SequenceMatcher(None, stem, path.stem).ratio()
        if ratio >= 0.75:
            scored.append((-ratio, str(path.relative_to(CONFIGS_DIR))))
    scored.sort()
    return [rel for score, rel in scored if -score >= -scored[0][0] - 0.1][:n]
