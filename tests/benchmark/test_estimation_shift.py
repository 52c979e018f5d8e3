"""BN estimation shift: zero when running statistics equal the data's own, growing with an input shift."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from gn_det.benchmark.estimation_shift import estimation_shift, measure_input_statistics


def channel_stats64(x):
    """Per-channel mean and population variance over N, H, W in float64 (the oracle)."""
    x = x.double()
    mean = x.mean(dim=(0, 2, 3))
    var = ((x - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))
    return mean, var


def make_data(seed, n_batches=3, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, 6, 5, generator=g) * 2.0 + 0.7 + shift for _ in range(n_batches)]


class TwoBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.bn2 = FrozenBatchNorm2d(5)

    def forward(self, x):
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))


def set_stats_to_data(model, data):
    """Set bn1's then bn2's running statistics to their inputs' statistics, computed in float64."""
    m64 = {k: v.double() for k, v in model.state_dict().items()}
    x = torch.cat(data).double()
    h1 = F.conv2d(x, m64["conv1.weight"], m64["conv1.bias"], padding=1)
    mean1, var1 = channel_stats64(h1)
    model.bn1.running_mean.copy_(mean1)
    model.bn1.running_var.copy_(var1)
    bn1 = (h1 - mean1[None, :, None, None]) / torch.sqrt(var1[None, :, None, None] + model.bn1.eps)
    bn1 = bn1 * m64["bn1.weight"][None, :, None, None] + m64["bn1.bias"][None, :, None, None]
    h2 = F.conv2d(F.relu(bn1), m64["conv2.weight"], m64["conv2.bias"], padding=1)
    mean2, var2 = channel_stats64(h2)
    model.bn2.running_mean.copy_(mean2)
    model.bn2.running_var.copy_(var2)


@pytest.mark.parametrize("seed", [0, 1])
def test_zero_shift_when_running_stats_are_the_data_statistics(seed):
    torch.manual_seed(seed)
    model = TwoBN()
    data = make_data(seed)
    set_stats_to_data(model, data)
    rows = estimation_shift(model, measure_input_statistics(model, data))
    assert [(r.name, r.kind, r.channels) for r in rows] == [("bn1", "BN", 4), ("bn2", "FrozenBN", 5)]
    for row in rows:
        assert row.mean_shift == pytest.approx(0.0, abs=1e-5)
        assert row.var_shift == pytest.approx(0.0, abs=1e-4)
    assert model.training  # mode restored


def test_shift_grows_with_input_shift():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    data = make_data(3)
    mean, var = channel_stats64(torch.cat(data))
    bn.running_mean.copy_(mean)
    bn.running_var.copy_(var)
    model = nn.Sequential(bn)
    previous = -1.0
    for delta in (0.0, 0.5, 1.0, 2.0):
        (row,) = estimation_shift(model, measure_input_statistics(model, make_data(3, shift=delta)))
        # a constant shift moves every channel's mean by delta and leaves the variance
        assert row.mean_shift == pytest.approx(delta * math.sqrt(3), abs=1e-5)
        assert row.var_shift == pytest.approx(0.0, abs=1e-4)
        assert row.mean_shift > previous
        previous = row.mean_shift


def test_layers_listed_in_forward_order_not_registration_order():
    class Reversed(nn.Module):
        def __init__(self):
            super().__init__()
            self.late = nn.BatchNorm2d(3)
            self.early = nn.BatchNorm2d(3)

        def forward(self, x):
            return self.late(self.early(x))

    expected = measure_input_statistics(Reversed(), make_data(0, n_batches=1))
    assert list(expected) == ["early", "late"]
