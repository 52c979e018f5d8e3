"""Where config files live: a bare file name given to the tools is looked up in the repo's configs/."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List

# gn_det/config/paths.py -> the repository root holds configs/ (editable install, as the tools use it).
CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"
_SEARCH_SUBDIRS = ("", "tiny")  # configs/ first, then configs/tiny/


def resolve_config_path(name: str) -> str:
    """Path of config ``name``: an existing path as given, else ``configs/<name>`` or ``configs/tiny/<name>``.

    Raises FileNotFoundError naming the places searched and the recipes available.
    """
    if os.path.isfile(name):
        return str(name)
    searched: List[Path] = []
    if not os.path.isabs(name):
        for sub in _SEARCH_SUBDIRS:
            candidate = CONFIGS_DIR / sub / name
            searched.append(candidate)
            if candidate.is_file():
                return str(candidate)
    available = sorted(str(p.relative_to(CONFIGS_DIR)) for p in CONFIGS_DIR.rglob("*.yaml")) if CONFIGS_DIR.is_dir() else []
    raise FileNotFoundError(
        f"Config file {name!r} not found (looked at {name!r}"
        + "".join(f", {p}" for p in searched)
        + f"). Available in {CONFIGS_DIR}: {', '.join(available) or 'none'}"
    )
