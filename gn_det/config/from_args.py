"""A config from a tool's command line: ``--config FILE``, ``--register-coco NAME JSON ROOT`` and ``KEY VALUE``
overrides, merged in that order over the defaults (the tools share this; train_net.py too)."""
from __future__ import annotations

import os
from typing import Sequence

from gn_det.utils.cli import UserError
from .config import CfgNode
from .paths import resolve_config_path

__all__ = ["config_from_args"]


def _absolute(entry):
    """[NAME, JSON_FILE, IMAGE_ROOT] with both paths absolute (malformed entries left for validation)."""
    if isinstance(entry, (list, tuple)) and len(entry) == 3 and all(isinstance(v, str) and v for v in entry):
        return [entry[0], os.path.abspath(entry[1]), os.path.abspath(entry[2])]
    return entry


def config_from_args(config_file: str, opts: Sequence[str], register_coco: Sequence[Sequence[str]] = ()) -> CfgNode:
    """Defaults <- ``config_file`` (a path or a name in configs/; "" for none) <- ``register_coco`` entries
    <- ``opts`` (KEY VALUE pairs). Not frozen, no side effects; REGISTER_COCO paths are made absolute
    (against the current directory), so a recorded config.yaml reruns from anywhere."""
    from . import get_cfg

    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(resolve_config_path(config_file))
    for name, json_file, image_root in register_coco:
        # Kept in the config so config.yaml records it and every process registers it.
        cfg.DATASETS.REGISTER_COCO = list(cfg.DATASETS.REGISTER_COCO) + [[name, json_file, image_root]]
    opts = list(opts)
    if opts:
        if len(opts) % 2:
            raise UserError(f"overrides come as KEY VALUE pairs; {opts[-1]} has no value "
                            f"(got {len(opts)} items: {' '.join(map(str, opts))})")
        cfg.merge_from_list(opts)
    cfg.DATASETS.REGISTER_COCO = [_absolute(entry) for entry in cfg.DATASETS.REGISTER_COCO]
    return cfg
