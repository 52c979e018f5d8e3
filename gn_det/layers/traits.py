"""What a norm is, declared once: ``NormTraits`` and the checkpoint kinds of norm state.

Every consumer that must know "is this a norm, and what kind" (solver weight decay, precise BN,
freezing, estimation shift, describe, weight matching, the batch-size check) reads these traits
through ``gn_det.layers.norm_traits(module)``, never a class name.

A checkpoint kind names what a norm layer's state holds; a norm layer loads only from the kinds its
traits accept (``loads_from``). A kind declares its state keys (parameter and buffer leaf names, without
bookkeeping such as ``num_batches_tracked``) so that the kind of a checkpoint's tensor group can be read
from its names; kinds with identical keys cannot be told apart by names (the model's own accepted kinds
then win, see gn_det.checkpoint.matching).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, List, Optional

# Checkpoint kinds of gn_det's norms (strings: they appear in weight-loading reports).
BN_KIND = "BN"  # affine + running statistics (BN, SyncBN, FrozenBN, torchvision's bn*)
BN_FOLDED_KIND = "BN-folded"  # Caffe2 AffineChannel: BN folded into a scale/bias pair (MSRA R-50.pkl)
GN_KIND = "GN"  # affine only (GN, and its LN/IN extremes)
SN_KIND = "SN"  # affine + mean_weight/var_weight importance (IN, LN, BN) + BN-branch running statistics
SN_NO_BN_KIND = "SN without BN branch"  # batch-free SN: importance over (IN, LN) only, no statistics

# Leaf names bookkeeping buffers use; they tell nothing about a kind and are never loaded as state.
BOOKKEEPING_KEYS = frozenset({"num_batches_tracked"})

# kind -> the state keys a norm of that kind holds; None: not recognisable by names (only converters set it).
_KIND_STATE_KEYS: Dict[str, Optional[FrozenSet[str]]] = {
    BN_KIND: frozenset({"weight", "bias", "running_mean", "running_var"}),
    GN_KIND: frozenset({"weight", "bias"}),
    SN_KIND: frozenset({"weight", "bias", "mean_weight", "var_weight", "running_mean", "running_var"}),
    SN_NO_BN_KIND: frozenset({"weight", "bias", "mean_weight", "var_weight"}),
    BN_FOLDED_KIND: None,
}


@dataclass(frozen=True)
class NormTraits:
    """The facts about a norm every other part of gn_det needs.

    - ``kind``: checkpoint kind of its state (BN_KIND, GN_KIND, SN_KIND, ... or a user's own).
    - ``running_stats``: keeps ``running_mean``/``running_var`` used at inference (takes part in
      estimation shift; with ``batch_dependent`` also in precise BN, which needs a ``momentum`` attribute
      in PyTorch's convention).
    - ``batch_dependent``: in training, a sample's output depends on the rest of its batch (BN, SyncBN,
      SN with its BN branch): refused at 1 image per process, recomputed by precise BN.
    - ``synced``: those batch statistics pool every process's batch (SyncBN, SyncSN).
    - ``includes_activation``: replaces norm + ReLU (FRN+TLU, EvoNorm); builders drop their ReLU.
    - ``loads_from``: checkpoint kinds it loads; empty means ``{kind}``.
    """

    kind: str
    running_stats: bool = False
    batch_dependent: bool = False
    synced: bool = False
    includes_activation: bool = False
    loads_from: FrozenSet[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        object.__setattr__(self, "loads_from", frozenset(self.loads_from) or frozenset({self.kind}))


def declare_kind(kind: str, state_keys: Optional[Iterable[str]]) -> None:
    """Declare that a norm of checkpoint kind ``kind`` holds exactly ``state_keys`` (leaf names).

    Declaring a known kind again with other keys raises ValueError (two meanings for one kind).
    """
    keys = None if state_keys is None else frozenset(state_keys) - BOOKKEEPING_KEYS
    if kind in _KIND_STATE_KEYS and _KIND_STATE_KEYS[kind] != keys:
        raise ValueError(f"norm kind {kind!r} is already declared with state keys "
                         f"{sorted(_KIND_STATE_KEYS[kind] or [])}, not {sorted(keys or [])}")
    _KIND_STATE_KEYS[kind] = keys


def undeclare_kind(kind: str) -> None:
    """Forget a kind declared with declare_kind (tests and interactive sessions)."""
    _KIND_STATE_KEYS.pop(kind, None)


def kind_state_keys(kind: str) -> Optional[FrozenSet[str]]:
    """The declared state keys of ``kind``; None when undeclared or not recognisable by names."""
    return _KIND_STATE_KEYS.get(kind)


def kinds_holding(leaves: Iterable[str]) -> List[str]:
    """Declared kinds whose state keys are exactly ``leaves`` (bookkeeping ignored), in declaration order."""
    wanted = frozenset(leaves) - BOOKKEEPING_KEYS
    return [kind for kind, keys in _KIND_STATE_KEYS.items() if keys == wanted]
