"""SN importance shares: a softmax of each SN layer's own parameters, summing to one."""
import math

import pytest
import torch
from torch import nn

from gn_det.benchmark.sn_importance import sn_shares, shares_table
from gn_det.layers import GNOptions, NormOptions, SNOptions, get_norm


def softmax64(values):
    """Softmax in float64 written out from its definition (the oracle)."""
    exps = [math.exp(v - max(values)) for v in values]
    return [e / sum(exps) for e in exps]


class StandInSN(nn.Module):
    """A module with SN's interface (mean_weight / var_weight) but no normalization."""

    def __init__(self, n):
        super().__init__()
        self.mean_weight = nn.Parameter(torch.randn(n))
        self.var_weight = nn.Parameter(torch.randn(n))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shares_match_softmax_of_parameters(seed):
    torch.manual_seed(seed)
    model = nn.Sequential()
    model.add_module("backbone", nn.Sequential(StandInSN(3), nn.Conv2d(1, 1, 1), StandInSN(2)))
    rows = sn_shares(model)
    assert [r.name for r in rows] == ["backbone.0", "backbone.2"]
    assert rows[0].branches == ("IN", "LN", "BN") and rows[1].branches == ("IN", "LN")
    for row, module in zip(rows, (model.backbone[0], model.backbone[2])):
        for kind, param in (("mean", module.mean_weight), ("var", module.var_weight)):
            shares = getattr(row, kind)
            assert sum(shares) == pytest.approx(1.0, abs=1e-12)
            assert shares == pytest.approx(softmax64(param.detach().double().tolist()), abs=1e-12)
    table = shares_table(rows)
    assert table.rows[1].get("mean_BN") is None  # no BN branch: missing, not 0


@pytest.mark.parametrize("use_bn", [True, False])
def test_shares_of_registered_sn(use_bn):
    torch.manual_seed(0)
    sn = get_norm("SN", 8, NormOptions(SNOptions(use_bn=use_bn), GNOptions(num_groups=2)))
    with torch.no_grad():
        sn.mean_weight.copy_(torch.randn_like(sn.mean_weight))
        sn.var_weight.copy_(torch.randn_like(sn.var_weight))
    (row,) = sn_shares(nn.Sequential(sn))
    assert len(row.mean) == (3 if use_bn else 2)
    assert row.mean == pytest.approx(softmax64(sn.mean_weight.detach().double().tolist()), abs=1e-12)
    assert row.var == pytest.approx(softmax64(sn.var_weight.detach().double().tolist()), abs=1e-12)
