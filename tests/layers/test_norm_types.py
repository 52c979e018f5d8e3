"""The registry of declared norm types: traits lookup, get_norm from names, classes and partials, options,
registration checks and the messages generated from the traits."""
import dataclasses
import functools

import pytest
import torch
import torchvision
from torch import nn

from gn_det.layers import (
    BN_KIND, GN_KIND, NORM_REGISTRY, SN_KIND, SN_NO_BN_KIND, BNOptions, FamilyOptions, FrozenBatchNorm2d, GNOptions,
    NormOptions, NormTraits, SNOptions, SwitchNorm2d, batch_free_norms, freeze_norms, get_norm, is_norm, kind_state_keys,
    norm_name, norm_traits, norm_type_of, per_level_norms, register_norm,
)


@pytest.fixture
def registered():
    """Names registered by a test, unregistered after it (the registry is global)."""
    names = []
    yield names
    for name in names:
        NORM_REGISTRY.unregister(name)


class MyBN(nn.BatchNorm2d):
    """A user's BatchNorm2d subclass."""


@pytest.mark.parametrize("module,name", [
    (nn.BatchNorm2d(4), "BN"), (nn.BatchNorm1d(4), "BN"), (MyBN(4), "BN"), (nn.SyncBatchNorm(4), "SyncBN"),
    (FrozenBatchNorm2d(4), "FrozenBN"), (torchvision.ops.FrozenBatchNorm2d(4), "FrozenBN"),
    (nn.GroupNorm(2, 4), "GN"), (nn.LayerNorm(4), "LN"), (nn.InstanceNorm2d(4), "IN"),
    (SwitchNorm2d(4), "SN"), (nn.Conv2d(4, 4, 1), None), (nn.ReLU(), None),
])
def test_modules_not_built_by_get_norm_are_recognised_by_their_type(module, name):
    assert norm_name(module) == name and is_norm(module) == (name is not None)
    assert (norm_type_of(module).name if name else None) == name


def test_tag_names_the_entry_for_modules_of_one_class():
    """GN, LN and IN are all GroupNorm: get_norm's tag tells them apart."""
    assert [norm_name(get_norm(n, 32)) for n in ("GN", "LN", "IN")] == ["GN", "LN", "IN"]
    assert norm_name(nn.GroupNorm(8, 8)) == "GN"  # untagged: by type


def test_traits_of_the_builtin_norms():
    bn = norm_traits(get_norm("BN", 4))
    assert (bn.kind, bn.running_stats, bn.batch_dependent, bn.synced) == (BN_KIND, True, True, False)
    assert bn.loads_from == {"BN", "BN-folded"}
    assert norm_traits(get_norm("SyncBN", 4)).synced
    frozen = norm_traits(get_norm("FrozenBN", 4))
    assert (frozen.kind, frozen.running_stats, frozen.batch_dependent) == (BN_KIND, True, False)
    assert norm_traits(get_norm("GN", 4, GNOptions(num_groups=2))) == NormTraits(kind=GN_KIND)
    sn = get_norm("SN", 4)
    assert (norm_traits(sn).kind, norm_traits(sn).batch_dependent) == (SN_KIND, True)
    sn.freeze_stats = True  # SN's traits are read from the module itself
    assert (norm_traits(sn).running_stats, norm_traits(sn).batch_dependent) == (True, False)
    free = norm_traits(get_norm("SN", 4, SNOptions(use_bn=False)))
    assert (free.kind, free.running_stats, free.batch_dependent) == (SN_NO_BN_KIND, False, False)
    assert kind_state_keys(SN_KIND) == {"weight", "bias", "mean_weight", "var_weight", "running_mean", "running_var"}


def test_most_derived_declared_type_wins(registered):
    @register_norm("TestMyBN", traits=NormTraits(kind=BN_KIND, running_stats=True), module_types=(MyBN,))
    def build(channels, options):
        return MyBN(channels)

    registered.append("TestMyBN")
    assert norm_name(MyBN(4)) == "TestMyBN" and norm_name(nn.BatchNorm2d(4)) == "BN"


def test_class_and_partial_build_unregistered_norms():
    gn = get_norm(functools.partial(nn.GroupNorm, 2), 8)  # timm's shape: norm_layer(num_channels)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 2 and norm_name(gn) == "GN"

    class Declared(nn.Module):
        norm_traits = NormTraits(kind="Declared", running_stats=True)

        def __init__(self, channels):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(channels))

    class Plain(nn.Module):
        def __init__(self, channels, scale=1.0):
            super().__init__()
            self.weight = nn.Parameter(torch.full((channels,), scale))

    declared = get_norm(Declared, 3, zero_init=True)
    assert norm_traits(declared).running_stats and norm_name(declared) == "Declared"
    assert torch.equal(declared.weight, torch.zeros(3))
    plain = get_norm(functools.partial(Plain, scale=2.0), 3)
    assert norm_traits(plain) == NormTraits(kind="Plain") and norm_type_of(plain) is None
    assert plain.weight.requires_grad  # trains until frozen
    freeze_norms(plain)
    assert not plain.weight.requires_grad  # frozen like any norm
    with pytest.raises(TypeError, match=r"^MODEL.FPN.NORM: .* returned int, not an nn.Module$"):
        get_norm(lambda c: c, 3, key="MODEL.FPN.NORM")


def test_short_form_registration_gets_default_traits(registered):
    class ScaleOnly(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(c))

    seen = []
    NORM_REGISTRY.register("TestShort")(lambda c, options: seen.append(options) or ScaleOnly(c))
    registered.append("TestShort")
    norm = get_norm("TestShort", 4, GNOptions(num_groups=2))
    assert norm_traits(norm) == NormTraits(kind="TestShort") and norm_name(norm) == "TestShort"
    assert isinstance(seen[0], NormOptions) and seen[0].of(GNOptions).num_groups == 2  # the whole bundle
    assert "TestShort" in batch_free_norms()  # default traits: batch-free


def test_options_of_another_family_are_refused():
    with pytest.raises(TypeError) as info:
        get_norm("SN", 8, GNOptions(num_groups=2), key="MODEL.FPN.NORM")
    assert str(info.value) == "MODEL.FPN.NORM='SN' takes SNOptions (MODEL.SN), got GNOptions"
    both = NormOptions(GNOptions(num_groups=4), BNOptions(momentum=0.3))
    assert get_norm("GN", 8, both).num_groups == 4 and get_norm("BN", 8, both).momentum == 0.3
    assert get_norm("BN", 8, [BNOptions(epsilon=0.5)]).eps == 0.5  # any collection of family options


@dataclasses.dataclass(frozen=True)
class _NoNodeOptions:
    scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class _GNNodeOptions(FamilyOptions):
    config_node = "MODEL.GN"
    scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class _ToyOptions(FamilyOptions):
    config_node = "MODEL.TESTTOY"
    batched: bool = True


BAD_REGISTRATIONS = [  # (register_norm kwargs, error, message)
    (dict(name="GN"), ValueError, "An object named 'GN' was already registered in the NORM registry"),
    (dict(name="TestBad", options=_NoNodeOptions), TypeError,
     "register_norm('TestBad'): _NoNodeOptions.config_node must name a config node such as 'MODEL.MYNORM', got None"),
    (dict(name="TestBad", options=_GNNodeOptions), ValueError,
     "register_norm('TestBad'): _GNNodeOptions and GNOptions (norm 'GN') both claim config node MODEL.GN"),
    (dict(name="TestBad", options=_ToyOptions, traits=lambda o: NormTraits(kind="T", batch_dependent=True),
          batch_free_options={"batched": False}), ValueError,
     "register_norm('TestBad'): its traits under batch_free_options {'batched': False} are still batch-dependent"),
    (dict(name="TestBad", traits=NormTraits(kind=BN_KIND), state_keys=("weight",)), ValueError,
     "norm kind 'BN' is already declared with state keys ['bias', 'running_mean', 'running_var', 'weight'], not "
     "['weight']"),
]


@pytest.mark.parametrize("kwargs,error,message", BAD_REGISTRATIONS, ids=[m[:40] for *_, m in BAD_REGISTRATIONS])
def test_bad_registrations(kwargs, error, message):
    kwargs = dict(kwargs)
    name = kwargs.pop("name")
    with pytest.raises(error) as info:
        register_norm(name, **kwargs)(lambda c, o: nn.Identity())
    assert str(info.value) == message
    assert "TestBad" not in NORM_REGISTRY.names()


def test_batch_free_message_follows_the_registry(registered):
    @register_norm("TestToyFree", options=_ToyOptions,
                   traits=lambda o: NormTraits(kind="TestToy", batch_dependent=o.batched),
                   batch_free_options={"batched": False})
    def build(channels, options):
        return nn.Identity()

    registered.append("TestToyFree")
    assert batch_free_norms() == ("FrozenBN, GN, LN, IN, FRN, EvoNormS0, SN/SyncSN with MODEL.SN.USE_BN=False or "
                                  "TestToyFree with MODEL.TESTTOY.BATCHED=False")


def test_per_level_norms_share_parameters_not_statistics():
    norms = per_level_norms(lambda: get_norm("SN", 4), 3)
    assert all(n.weight is norms[0].weight and n.mean_weight is norms[0].mean_weight for n in norms)
    assert len({id(n.running_mean) for n in norms}) == 3
    assert sum(p.numel() for p in norms.parameters()) == 4 + 4 + 3 + 3
    for k, n in enumerate(norms.train()):
        n(torch.randn(2, 4, 3, 3) + k * 10)
    means = [n.running_mean.mean().item() for n in norms]
    assert means[0] < means[1] < means[2]  # each level's own statistics
