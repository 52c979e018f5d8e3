"""Bad input to the norm library: each raises a clear error whose text is pinned here."""
import pytest
import torch

from gn_det.layers import EvoNormOptions, GNOptions, NormOptions, SNOptions, get_norm

REGISTERED = "BN, BRN, EvoNormB0, EvoNormS0, FRN, FrozenBN, GN, IN, LN, SN, SyncBN, SyncBRN, SyncSN"
# Generated from the registered norms' traits (SyncSN joined SN when the list stopped being hand-written).
BATCH_1 = "at batch size 1 use FrozenBN, GN, LN, IN, FRN, EvoNormS0 or SN/SyncSN with MODEL.SN.USE_BN=False"

BAD_NAMES = [  # (call, exception, message, why)
    (lambda: get_norm("GroupNorm", 64, key="MODEL.FPN.NORM"), KeyError,
     f"Unknown NORM name 'GroupNorm' (from MODEL.FPN.NORM). Registered names: {REGISTERED}.",
     "unknown name: quote it, the key and every registered name"),
    (lambda: get_norm("FrozenBn", 64, key="MODEL.RESNETS.NORM"), KeyError,
     f"Unknown NORM name 'FrozenBn' (from MODEL.RESNETS.NORM). Registered names: {REGISTERED}. "
     "Did you mean 'FrozenBN'",
     "a typo: suggest the close name"),
    (lambda: get_norm("GN", 250, key="MODEL.FPN.NORM"), ValueError,
     "MODEL.FPN.NORM='GN' needs channels divisible by MODEL.GN.NUM_GROUPS=32, got 250; "
     "set MODEL.GN.NUM_GROUPS to a divisor of 250 or use MODEL.GN.DIM_PER_GP",
     "non-divisible groups: both numbers and both keys"),
    (lambda: get_norm("GN", 96, GNOptions(dim_per_gp=64), key="MODEL.ROI_BOX_HEAD.NORM"), ValueError,
     "MODEL.ROI_BOX_HEAD.NORM='GN' needs channels divisible by MODEL.GN.DIM_PER_GP=64, got 96; "
     "set MODEL.GN.DIM_PER_GP to a divisor of 96",
     "channels-per-group mode"),
    (lambda: get_norm("EvoNormS0", 250, key="MODEL.FPN.NORM", act=True), ValueError,
     "MODEL.FPN.NORM='EvoNormS0' needs channels divisible by MODEL.EVONORM.NUM_GROUPS=32, got 250; "
     "set MODEL.EVONORM.NUM_GROUPS to a divisor of 250",
     "EvoNorm-S0 groups: the EVONORM key"),
    (lambda: get_norm(32, 64, key="MODEL.FPN.NORM"), TypeError,
     "MODEL.FPN.NORM must be a norm name (str), a norm class or functools.partial, or ''/None for no norm, got 32",
     "a number where a name belongs"),
]


@pytest.mark.parametrize("call,exc,message,why", BAD_NAMES, ids=[b[3] for b in BAD_NAMES])
def test_bad_names_and_channels(call, exc, message, why):
    with pytest.raises(exc) as info:
        call()
    assert message in str(info.value)


@pytest.mark.parametrize("name,type_name", [
    ("BN", "BatchNorm2d"), ("SyncBN", "SyncBatchNorm2d"), ("FrozenBN", "FrozenBatchNorm2d"),
    ("SN", "SwitchNorm2d"), ("SyncSN", "SyncSwitchNorm2d"),
])
@pytest.mark.parametrize("shape", [(2, 8, 5), (2, 8, 3, 3, 3)])
def test_wrong_tensor_rank(name, type_name, shape):
    norm = get_norm(name, 8)
    with pytest.raises(ValueError) as info:
        norm(torch.randn(shape))
    assert str(info.value) == (
        f"{type_name} expects a 4D (N, C, H, W) input, got a {len(shape)}D input of shape {shape}"
    )


def test_wrong_channel_count():
    with pytest.raises(ValueError, match=r"^SwitchNorm2d was built for 8 channels, got an input of shape \(2, 4, 3, 3\)$"):
        get_norm("SN", 8)(torch.randn(2, 4, 3, 3))


@pytest.mark.parametrize("name,type_name", [("BN", "BatchNorm2d"), ("SyncBN", "SyncBatchNorm2d")])
def test_bn_in_training_on_a_single_value_per_channel_names_the_batch_free_norms(name, type_name):
    norm = get_norm(name, 8).train()
    with pytest.raises(ValueError) as info:
        norm(torch.randn(1, 8, 1, 1))
    assert str(info.value) == (
        f"{type_name} in training needs more than 1 value per channel for its batch statistics, "
        f"got an input of shape (1, 8, 1, 1); {BATCH_1}"
    )
    norm.eval()(torch.randn(1, 8, 1, 1))  # eval uses running statistics: fine


@pytest.mark.parametrize("name,hw", [("FrozenBN", 1), ("GN", 1), ("LN", 1), ("SN", 1), ("IN", 2), ("FRN", 1),
                                     ("EvoNormS0", 1)])
def test_the_norms_the_message_recommends_do_work_at_batch_size_1(name, hw):
    """IN needs 2 values per (sample, channel), so it gets a 2x2 map; the others work even at 1x1."""
    opts = NormOptions(SNOptions(use_bn=False), GNOptions(num_groups=4), EvoNormOptions(num_groups=4))
    out = get_norm(name, 8, opts).train()(torch.randn(1, 8, hw, hw))
    assert out.shape == (1, 8, hw, hw) and torch.isfinite(out).all()
