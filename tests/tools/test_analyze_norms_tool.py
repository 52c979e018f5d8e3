"""tools/analyze_norms.py loads MODEL.WEIGHTS with the config (as the other tools do), so weights trained
with another input convention are reported, not silently analysed under the wrong pixels."""
from __future__ import annotations

import torch

from cli_runner import TINY_CONFIG


def test_weights_of_another_input_format_are_reported(workspace, runner, tmp_path):
    from gn_det.config import get_cfg
    from gn_det.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(TINY_CONFIG)  # INPUT.FORMAT RGB, ImageNet pixel mean/std
    weights = tmp_path / "bgr.pth"
    torch.save({"model": build_model(cfg).state_dict(),
                "input_convention": {"input_format": "BGR", "pixel_mean": list(cfg.MODEL.PIXEL_MEAN)[::-1],
                                     "pixel_std": list(cfg.MODEL.PIXEL_STD)[::-1], "stride_in_1x1": False,
                                     "norm": "GN", "recipe": ""}}, weights)
    result = runner.run("tools/analyze_norms.py",
                        ["--config", TINY_CONFIG, "--max-images", "1", "--output-dir", str(tmp_path / "analysis"),
                         "MODEL.WEIGHTS", str(weights), "DATASETS.REGISTER_COCO",
                         f"[['an_val', '{workspace.p('val.json')}', '{workspace.p('val')}']]",
                         "DATASETS.TEST", "('an_val',)"], cwd=str(tmp_path))
    assert result.rc == 0, result.stderr[-3000:]
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "INPUT.FORMAT" in line]
    assert warnings and all("BGR" in line for line in warnings), result.stdout[-3000:]
