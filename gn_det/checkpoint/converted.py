"""The common result of every format converter: tensors under gn_det's module names, plus provenance."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from gn_det.layers.traits import BN_FOLDED_KIND, BN_KIND, GN_KIND, SN_KIND, SN_NO_BN_KIND

BOTTOM_UP = "backbone.bottom_up."

# Kinds of normalization a checkpoint can carry for one norm layer, declared with the norms in
# gn_det.layers.traits (see matching.checkpoint_norm_kind); short names for the converters.
BN = BN_KIND  # affine + running statistics (BN, SyncBN, FrozenBN, torchvision's bn*)
BN_FOLDED = BN_FOLDED_KIND  # Caffe2 AffineChannel: BN folded into a scale/bias pair (MSRA R-50.pkl)
GN = GN_KIND  # affine only (GN, and its LN/IN extremes)
SN = SN_KIND  # affine + mean_weight/var_weight importance (IN, LN, BN) + BN-branch running statistics
SN_NO_BN = SN_NO_BN_KIND  # batch-free SN: importance over (IN, LN) only, no statistics


@dataclass(frozen=True)
class InputConvention:
    """The pixel handling and ResNet variant a set of weights was trained with."""

    input_format: str  # "BGR" or "RGB": INPUT.FORMAT
    pixel_mean: Tuple[float, float, float]  # MODEL.PIXEL_MEAN, 0-255, in input_format order
    pixel_std: Tuple[float, float, float]  # MODEL.PIXEL_STD
    stride_in_1x1: Optional[bool]  # MODEL.RESNETS.STRIDE_IN_1X1; None when the weights have no backbone
    norm: str  # the backbone norm they were trained with (MODEL.RESNETS.NORM to use)
    recipe: str  # a config to merge that sets all of the above (configs/weights/*.yaml, config.yaml); "" = none
    how_known: str = "published recipe"  # or "recorded in ...", "guessed from the checkpoint's norms ..."
    bn_eps: Optional[float] = None  # MODEL.BN.EPSILON the BN statistics were used with; None = not checked
    pooler_type: Optional[str] = None  # MODEL.ROI_BOX_HEAD.POOLER_TYPE the heads were trained with; None = not checked
    mask_pooler_type: Optional[str] = None  # MODEL.ROI_MASK_HEAD.POOLER_TYPE; None = the box head's (pooler_type)


@dataclass(frozen=True)
class DetectedFormat:
    """Which known format a file was recognised as, and the input convention that goes with it."""

    name: str
    description: str
    convention: Optional[InputConvention] = None


@dataclass
class ConvertedWeights:
    """Checkpoint tensors renamed to gn_det's modules (docs/INTERFACES.md), ready to match to a model.

    ``sources`` maps each new name to the name in the file (for the report); ``norm_kinds`` records
    norm layers whose kind cannot be read from the tensor names (Caffe2's folded BN); ``notes`` are
    lines for the report about conversions applied (class order, background channels, ...).
    """

    tensors: Dict[str, torch.Tensor]
    sources: Dict[str, str]
    norm_kinds: Dict[str, str] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    @classmethod
    def renamed(cls, flat: Dict[str, torch.Tensor], rename) -> "ConvertedWeights":
        """Apply ``rename(old) -> new or None`` (None keeps the file's name, so it reports as unexpected)."""
        tensors: Dict[str, torch.Tensor] = {}
        sources: Dict[str, str] = {}
        for old, value in flat.items():
            new = rename(old) or old
            if new in tensors:
                raise ValueError(f"two checkpoint keys map to {new!r}: {sources[new]!r} and {old!r}")
            tensors[new] = value
            sources[new] = old
        return cls(tensors, sources)
