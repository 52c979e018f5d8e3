"""benchmarks/bench_step.py: the detectron2 benchmark input, and one timed step (slow)."""
import importlib.util
import pathlib

import pytest
import torch

_PATH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "bench_step.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_step", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthetic_sample_is_the_issue_input():
    """One 3x512x640 image in 0-255, 3 boxes inside it with labels in 1..80, each mask inside its box."""
    image, target = _bench_module().synthetic_sample()
    assert image.shape == (3, 512, 640) and 0 <= image.min() and image.max() <= 255
    boxes, masks = target["boxes"], target["masks"]
    assert boxes.shape == (3, 4) and masks.shape == (3, 512, 640) and masks.dtype == torch.uint8
    assert ((1 <= target["labels"]) & (target["labels"] <= 80)).all()
    for box, mask in zip(boxes, masks):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert len(ys) > 0 and box[0] <= xs.min() and xs.max() <= box[2] and box[1] <= ys.min() and ys.max() <= box[3]
        # ellipse inscribed in the box: area pi/4 of the box (pixel-centre sampling, 3% tolerance)
        area = (box[2] - box[0]) * (box[3] - box[1]) * torch.pi / 4
        assert mask.sum().item() == pytest.approx(area.item(), rel=0.03)


@pytest.mark.slow
def test_bench_runs_on_a_tiny_recipe(capsys):
    from gn_det.benchmark.speed import parse_bench_step_output

    result = _bench_module().main(["--config", "tiny/mask_rcnn_R_18_FPN_gn.yaml", "--iters", "1"])
    assert result["s_per_step"] == pytest.approx(result["forward_s"] + result["backward_s"])
    assert result["params_m"] > 1 and result["peak_rss_mb"] > 100
    # the plain line stays readable by the speed table (gn_det.benchmark.speed)
    (parsed,) = parse_bench_step_output(capsys.readouterr().out)
    assert parsed["config"] == "tiny/mask_rcnn_R_18_FPN_gn.yaml" and parsed["iters"] == 1
