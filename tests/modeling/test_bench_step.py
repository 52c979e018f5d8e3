"""benchmarks/bench_step.py: the detectron2 benchmark input, one timed step (slow), and the CUDA mode's
full iteration and GPU busy share, run on CPU at a small size (the CUDA run itself: tools/gpu_check.sh)."""
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


@pytest.mark.parametrize("intervals, busy", [
    ([], 0.0),
    ([(0, 2), (5, 6)], 3.0),
    ([(0, 4), (1, 2), (3, 6)], 6.0),  # overlapping kernels (two streams) count once
    ([(3, 6), (0, 4), (10, 11)], 7.0),  # any order
])
def test_busy_time_is_the_union_of_kernel_intervals(intervals, busy):
    assert _bench_module().busy_time(intervals) == busy


def test_cuda_mode_without_cuda_is_one_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only machine")
    with pytest.raises(SystemExit):
        _bench_module().main(["--device", "cuda", "--config", "tiny/mask_rcnn_R_18_FPN_gn.yaml"])
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "bench_step.py: error: --device cuda but CUDA is not available on this machine; use --device cpu (see --help)")


@pytest.mark.slow
def test_full_iteration_with_amp_on_cpu(capsys):
    """The CUDA mode's code path (forward, backward, SGD step, autocast) at 64x96 on CPU: one JSON record."""
    import json

    from gn_det.benchmark.formatting import render
    from gn_det.benchmark.speed import build_speed_table

    result = _bench_module().main(["--full-iteration", "--amp", "--size", "64x96", "--images", "2", "--iters", "1",
                                   "--warmup", "1", "--json", "--config", "tiny/mask_rcnn_R_18_FPN_sn.yaml"])
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record == result and record["precision"] == "bfloat16 amp" and record["gpu_busy"] is None
    assert record["s_per_iter"] > 0 and record["peak_mem_mb"] > 100 and record["size"] == "64x96"
    assert "s/iter" in render(build_speed_table([record]), "text")


def test_one_process_syncbn_figure_is_labelled_as_such():
    """Issue 21, defect 8: in one process SyncBN has no group and runs BN's arithmetic; the row says so."""
    from gn_det.layers import GNOptions, NormOptions, get_norm

    bench = _bench_module()
    opts = NormOptions(GNOptions(num_groups=2))
    synced = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), get_norm("SyncBN", 4, opts))
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), get_norm("BN", 4, opts))
    assert bench.label_single_process_sync(synced, "r50_syncbn") == "r50_syncbn (1 process: no all-reduce, BN's compute)"
    assert bench.label_single_process_sync(plain, "r50_bn") == "r50_bn"
