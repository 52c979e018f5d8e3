"""gn_det inside detectron2: every gn_det norm in detectron2's configs, builders, trainer and tools.

Turn it on with ``import gn_det.detectron2`` (or ``gn_det.detectron2.setup_environment()``, idempotent), or,
for detectron2's stock ``tools/train_net.py`` unchanged, ``DETECTRON2_ENV_MODULE=gn_det.detectron2`` (detectron2
imports this module and calls ``setup_environment()``; spawned workers inherit the variable). Setup:
- detectron2's ``get_norm`` (everywhere it was imported by name) also builds every norm registered in
  gn_det.layers.NORM_REGISTRY; detectron2's own names keep detectron2's modules (gn_det.detectron2.norms);
- gn_det's option nodes and builder keys join detectron2's default config (``add_gn_det_config``);
- ``build_gn_det_resnet_fpn_backbone``, ``GnDetRPNHead``, ``GnDetFastRCNNConvFCHead``,
  ``GnDetMaskRCNNConvUpsampleHead`` are registered in detectron2's registries (gn_det.detectron2.builders);
- freezing (FREEZE_AT), SOLVER.WEIGHT_DECAY_NORM and TEST.PRECISE_BN treat gn_det norms as norms
  (gn_det.detectron2.machinery).
``norm("SN", use_bn=False)`` is a gn_det norm as a callable, for LazyConfig's ``norm=`` (no setup needed);
``load_into_detectron2(model, path)`` loads weights of any format gn_det reads into a detectron2 model.
Nothing else in gn_det imports detectron2.
"""
from __future__ import annotations

import logging
import threading

try:
    import detectron2  # noqa: F401  (installed from its source; never a dependency of gn_det)
    from detectron2.layers import batch_norm as _d2_batch_norm
except ImportError as error:  # pragma: no cover - exercised in a process without detectron2 (tests/detectron2)
    raise ImportError(
        f"gn_det.detectron2 needs detectron2, which is not installed ({error}). detectron2 installs from its "
        "source: python -m pip install 'git+https://github.com/facebookresearch/detectron2.git' (see README, "
        "'Use it inside detectron2'); gn_det itself works without it"
    ) from None

from .checkpoint import Detectron2LoadResult, load_into_detectron2
from .config import add_gn_det_config
from .norms import DETECTRON2_NORM_NAMES, known_names, norm, options_from
from .patching import original_of, rebind

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_done = False


def _patch_get_norm() -> None:
    from . import norms

    original = original_of(_d2_batch_norm.get_norm)
    norms.probe_detectron2_names(original)
    rebind(original, norms.make_get_norm(original))


def _patch_config() -> None:
    from detectron2.config import defaults

    add_gn_det_config(defaults._C)


def _patch_machinery() -> None:
    import fvcore.nn.precise_bn as fvcore_precise_bn
    from detectron2.engine import hooks  # noqa: F401  (loads the modules whose names are rebound)
    from detectron2.layers import FrozenBatchNorm2d
    from detectron2.modeling.meta_arch import build as d2_build
    from detectron2.solver import build as d2_solver

    from . import machinery

    convert = FrozenBatchNorm2d.__dict__["convert_frozen_batchnorm"].__func__
    FrozenBatchNorm2d.convert_frozen_batchnorm = machinery.make_convert_frozen_batchnorm(original_of(convert))
    original_opt = original_of(d2_solver.get_default_optimizer_params)
    rebind(original_opt, machinery.make_get_default_optimizer_params(original_opt, d2_solver.reduce_param_groups))
    original_get_bn = original_of(fvcore_precise_bn.get_bn_modules)
    get_bn_modules = machinery.make_get_bn_modules(original_get_bn)
    original_update = original_of(fvcore_precise_bn.update_bn_stats)
    rebind(original_update, machinery.make_update_bn_stats(get_bn_modules))
    rebind(original_get_bn, get_bn_modules)
    original_build = original_of(d2_build.build_model)
    rebind(original_build, machinery.make_build_model(original_build))


def setup_environment() -> None:
    """Put gn_det's norms, config keys, builders and norm-aware machinery into detectron2 (once per process)."""
    global _done
    with _lock:
        if _done:
            return
        _patch_get_norm()
        _patch_config()
        _patch_machinery()
        from . import builders  # noqa: F401  (registers gn_det's builders in detectron2's registries)
        _done = True
        logger.info("gn_det.detectron2: detectron2 knows the norms %s", ", ".join(known_names()))


setup_environment()

__all__ = ["DETECTRON2_NORM_NAMES", "Detectron2LoadResult", "add_gn_det_config", "load_into_detectron2", "known_names", "norm", "options_from", "setup_environment"]
