"""Precise BN recomputes only the running mean/var of the norms that still follow the batch.

A frozen norm (freeze_norms) keeps its statistics bit for bit, and no layer's step count (BRN's warm-up
schedule, torch BN's num_batches_tracked) moves: precise BN is not training.
"""
import torch
from torch import nn

from gn_det.engine.precise_bn import update_bn_stats
from gn_det.layers import BRNOptions, freeze_norms, get_norm, norm_traits


class _Net(nn.Module):
    """conv -> norms -> conv -> norm, called as a detector (images, targets); the output is discarded."""

    def __init__(self, first, second):
        super().__init__()
        self.conv1, self.first, self.conv2, self.second = nn.Conv2d(3, 8, 3), first, nn.Conv2d(8, 8, 1), second

    def forward(self, images, targets=None):
        return self.second(self.conv2(self.first(self.conv1(torch.stack(images)))))


def _batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[(torch.randn(3, 6, 6, generator=g, dtype=torch.float64) * 2 + 1, {}) for _ in range(2)] for _ in range(n)]


def _batch_stats(model, batches):
    """(mean, unbiased var) per channel of ``second``'s input, averaged over the batches (float64 reference)."""
    with torch.no_grad():
        feats = [model.conv2(model.first(model.conv1(torch.stack([i for i, _ in b])))) for b in batches]
    mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.transpose(0, 1).flatten(1).var(dim=1, unbiased=True) for f in feats]).mean(0)
    return mean, var


def test_frozen_evonorm_b0_is_no_precise_bn_target_and_keeps_its_statistics():
    first = nn.Sequential(get_norm("EvoNormB0", 8, act=True), get_norm("BN", 8))
    model = _Net(first, get_norm("BN", 8)).double()
    model.train()(*zip(*_batches(1, seed=3)[0]))  # move the running statistics off their initial values
    b0 = model.first[0]
    assert norm_traits(b0).batch_dependent
    model.first = freeze_norms(model.first)
    b0 = model.first[0]
    traits = norm_traits(b0)
    assert not traits.batch_dependent and traits.running_stats and traits.includes_activation
    assert type(model.first[1]).__name__ == "FrozenBatchNorm2d"
    before = b0.running_var.clone()
    batches = _batches(3)
    assert update_bn_stats(model, iter(batches), 3) == 1  # only the trainable BN
    assert torch.equal(b0.running_var, before)
    mean, var = _batch_stats(model, batches)
    torch.testing.assert_close(model.second.running_mean, mean, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model.second.running_var, var, rtol=1e-10, atol=1e-10)


def test_precise_bn_leaves_step_counts_and_brn_clip_limits_alone():
    opts = BRNOptions(warmup_iters=2, rmax_iters=10, dmax_iters=6)  # mid-ramp: every step moves rmax/dmax
    model = _Net(get_norm("BN", 8), get_norm("BRN", 8, opts)).double()
    brn, bn = model.second, model.first
    with torch.no_grad():
        brn.num_batches_tracked.fill_(4)
        bn.num_batches_tracked.fill_(7)
    limits = (brn.rmax, brn.dmax)
    assert limits == (1.0 + 2.0 * 2 / 8, 5.0 * 2 / 4)  # the paper's linear ramps at step 4
    batches = _batches(3)
    assert update_bn_stats(model, iter(batches), 3) == 2
    assert int(brn.num_batches_tracked) == 4 and int(bn.num_batches_tracked) == 7
    assert (brn.rmax, brn.dmax) == limits
    mean, var = _batch_stats(model, batches)
    torch.testing.assert_close(brn.running_mean, mean, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(brn.running_var, var, rtol=1e-10, atol=1e-10)
