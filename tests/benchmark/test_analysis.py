"""analyze_norms on a small model with SN and BN layers: tables and plots are written."""
import csv

import torch
from torch import nn

from gn_det.benchmark.analysis import analyze_norms
from gn_det.layers import SNOptions, get_norm


def test_tables_and_plots_written(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("backbone", nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), get_norm("SN", 8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), get_norm("SN", 8, SNOptions(use_bn=False)),
    ))
    model.train()
    with torch.no_grad():  # a few training steps' worth of running statistics
        for _ in range(3):
            model(torch.randn(2, 3, 8, 8))
    batches = [torch.randn(2, 3, 8, 8) + 1.0 for _ in range(2)]
    result = analyze_norms(model, batches, str(tmp_path))
    assert [r.name for r in result.sn_rows] == ["backbone.1", "backbone.7"]
    # the SN with BN branch and the BN keep running statistics; batch-free SN does not
    assert [(r.name, r.kind) for r in result.shift_rows] == [("backbone.1", "SN"), ("backbone.4", "BN")]
    for name in ("sn_importance", "estimation_shift"):
        for ext in ("md", "csv", "png"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 0
    with open(tmp_path / "estimation_shift.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["layer"] for r in rows] == ["backbone.1", "backbone.4"]
    assert float(rows[1]["||mean shift||"]) > 0
