"""The table tool on run directories written here in the documented OUTPUT_DIR layout."""
import csv
import io
import json
import os
import statistics
import sys

import pytest

from gn_det.config import get_cfg

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
import benchmark_table  # noqa: E402

RUN_A_TIMES = [0.41, 0.37, 0.52, 0.44]  # median 0.425 (two middle values averaged)
RUN_A_RESULTS = {"bbox": {"AP": 12.3, "AP50": 30.1, "AP75": 8.7, "APs": 1.0},
                 "segm": {"AP": 10.9, "AP50": 25.5, "AP75": 7.2}}


def write_run(root, name, *, norm, ims_per_batch, max_iter, times=(), world_size=None, peak=None,
              results=None, dataset="shapes_val", mask_on=True, conv=""):
    """A run directory as tools/train_net.py leaves it: config.yaml, metrics.json, inference/."""
    run = root / name
    run.mkdir()
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = mask_on
    cfg.MODEL.RESNETS.CONV = cfg.MODEL.FPN.CONV = cfg.MODEL.ROI_BOX_HEAD.CONV = conv
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.FPN.NORM = norm
    cfg.MODEL.ROI_BOX_HEAD.NUM_CONV = 4
    cfg.MODEL.ROI_BOX_HEAD.NORM = norm
    cfg.MODEL.ROI_MASK_HEAD.NORM = norm
    cfg.SOLVER.IMS_PER_BATCH = ims_per_batch
    cfg.SOLVER.MAX_ITER = max_iter
    (run / "config.yaml").write_text(cfg.dump())
    with open(run / "metrics.json", "w") as f:
        for i, t in enumerate(times):
            line = {"iteration": i, "time": t, "data_time": 0.01, "lr": 0.02, "total_loss": 1.0}
            if world_size is not None:
                line["world_size"] = world_size
            if peak is not None:
                line["peak_mem_mb"] = peak + i
            f.write(json.dumps(line) + "\n")
    if results is not None:
        (run / "inference" / dataset).mkdir(parents=True)
        (run / "inference" / dataset / "metrics.json").write_text(json.dumps(results))
    return str(run)


def run_tool(args, capsys):
    assert benchmark_table.main(args) == 0
    return capsys.readouterr().out


def csv_rows(text):
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
def runs(tmp_path):
    a = write_run(tmp_path, "gn_run", norm="GN", ims_per_batch=16, max_iter=270000, times=RUN_A_TIMES,
                  world_size=8, peak=2048.0, results=RUN_A_RESULTS)
    b = write_run(tmp_path, "bn_run", norm="BN", ims_per_batch=2, max_iter=300)  # no metrics, no eval
    return a, b


def test_csv_values_equal_what_each_run_holds(runs, capsys):
    a, b = runs
    rows = csv_rows(run_tool([a, b, "--format", "csv"], capsys))
    assert [r["run"] for r in rows] == ["gn_run", "bn_run"]
    ra, rb = rows
    assert float(ra["box AP"]) == pytest.approx(RUN_A_RESULTS["bbox"]["AP"])
    assert float(ra["box AP50"]) == pytest.approx(RUN_A_RESULTS["bbox"]["AP50"])
    assert float(ra["box AP75"]) == pytest.approx(RUN_A_RESULTS["bbox"]["AP75"])
    assert float(ra["mask AP"]) == pytest.approx(RUN_A_RESULTS["segm"]["AP"])
    assert float(ra["mask AP50"]) == pytest.approx(RUN_A_RESULTS["segm"]["AP50"])
    assert float(ra["mask AP75"]) == pytest.approx(RUN_A_RESULTS["segm"]["AP75"])
    assert float(ra["s/iter"]) == pytest.approx(statistics.median(RUN_A_TIMES), abs=5e-4)
    assert float(ra["peak mem (MB)"]) == pytest.approx(2048 + len(RUN_A_TIMES) - 1)
    assert ra["im/GPU"] == "2"  # 16 images over 8 processes
    assert ra["sched"] == "3x"  # 270k iterations at 16 images
    assert (ra["model"], ra["backbone"], ra["norm: backbone"], ra["FPN"], ra["heads"]) == (
        "Mask R-CNN", "R-50-FPN", "GN", "GN", "GN")
    # the second run has no evaluation, no timing and no world size: empty fields, never 0
    for key in ("box AP", "box AP50", "mask AP", "s/iter", "peak mem (MB)", "im/GPU"):
        assert rb[key] == "", key
    assert rb["sched"] == "300 it" and rb["norm: backbone"] == "BN"


def test_text_and_markdown_show_missing_as_dash(runs, capsys):
    a, b = runs
    for fmt in ("text", "markdown"):
        out = run_tool([a, b, "--format", fmt], capsys)
        line = next(l for l in out.splitlines() if "bn_run" in l)
        cells = [c.strip() for c in (line.strip("|").split("|") if fmt == "markdown" else line.split("  ")) if c.strip()]
        assert cells.count("-") >= 9, cells  # 6 APs, s/iter, memory, im/GPU
        assert "0" not in cells and "0.0" not in cells
        assert "12.3" in out and "10.9" in out


def test_reference_rows_follow_matching_run_with_source(tmp_path, capsys):
    run = write_run(tmp_path, "r", norm="GN", ims_per_batch=16, max_iter=270000, times=[0.3],
                    results=RUN_A_RESULTS)
    rows = csv_rows(run_tool([f"{run}=mask_rcnn_R_50_FPN_3x_gn", "--reference", "--format", "csv"], capsys))
    assert rows[0]["run"] == "mask_rcnn_R_50_FPN_3x_gn" and rows[0]["source"] == "ours"
    published = rows[1:]
    assert published and all(r["run"] == "mask_rcnn_R_50_FPN_3x_gn (published)" for r in published)
    by_source = {r["source"]: r for r in published}
    d2 = next(r for s, r in by_source.items() if s.startswith("detectron2 MODEL_ZOO.md"))
    assert (d2["box AP"], d2["mask AP"], d2["box AP50"]) == ("42.6", "38.6", "")  # AP50 not published


def test_bad_run_dir_is_reported(tmp_path, capsys):
    assert benchmark_table.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("benchmark_table.py: error: ") and err.count("\n") == 1
    assert "has no config.yaml: pass the OUTPUT_DIR of a run of tools/train_net.py" in err


def test_speed_table_from_bench_step_output(tmp_path, capsys):
    """bench_step.py --json records (JSON lines) and its plain line give the same table fields."""
    record = {"s_per_step": 8.4712, "s_per_step_stdev": 0.1, "forward_s": 3.0, "backward_s": 5.4712,
              "peak_rss_mb": 2500.4, "params_m": 46.12, "trainable_params_m": 46.0, "iters": 5,
              "config": "mask_rcnn_R_50_FPN_3x_gn.yaml"}
    plain = ("mask_rcnn_R_50_FPN_3x_frozenbn.yaml: 3.44 +- 0.05 s/step (forward 1.20 s, backward 2.24 s), "
             "peak RSS 1800 MB, params 44.2 M (44.0 M trainable), 5 steps, 2 threads")
    path = tmp_path / "step.txt"
    path.write_text(json.dumps(record) + "\n" + plain + "\n" + json.dumps({"config": "partial.yaml"}) + "\n")
    rows = csv_rows(run_tool(["--speed", str(path), "--format", "csv"], capsys))
    assert [r["config"] for r in rows] == ["mask_rcnn_R_50_FPN_3x_gn.yaml", "mask_rcnn_R_50_FPN_3x_frozenbn.yaml",
                                           "partial.yaml"]
    assert (rows[0]["s/step"], rows[0]["peak RSS (MB)"], rows[0]["params (M)"]) == ("8.471", "2500", "46.1")
    assert (rows[1]["s/step"], rows[1]["forward (s)"], rows[1]["steps"]) == ("3.440", "1.200", "5")
    assert rows[2]["s/step"] == "" and rows[2]["peak RSS (MB)"] == ""  # not measured: empty, not 0


def test_world_size_and_config_name_from_train_net_log(tmp_path, capsys):
    """Without world_size in metrics.json, train_net's log.txt launch line gives it, and the config stem."""
    run = write_run(tmp_path, "some_dir", norm="GN", ims_per_batch=16, max_iter=270000, times=[0.3],
                    results=RUN_A_RESULTS)
    with open(os.path.join(run, "log.txt"), "w") as f:
        f.write("[11/23 12:00:00 gn_det.engine.defaults]: Rank 0 of 1; command line: tools/train_net.py "
                "--eval-only --config-file configs/other.yaml MODEL.WEIGHTS x.pth\n")
        f.write("[11/23 12:00:01 gn_det.engine.defaults]: Rank 0 of 4; command line: tools/train_net.py "
                "--config-file configs/mask_rcnn_R_50_FPN_3x_gn.yaml --num-gpus 4\n")
    rows = csv_rows(run_tool([run, "--reference", "--format", "csv"], capsys))
    assert rows[0]["run"] == "some_dir" and rows[0]["im/GPU"] == "4"  # 16 images / 4 processes
    assert len(rows) > 1 and all(r["run"] == "mask_rcnn_R_50_FPN_3x_gn (published)" for r in rows[1:])


def test_null_and_nan_metrics_are_missing(tmp_path, capsys):
    """An evaluation without predictions writes null (or NaN) APs: shown as missing, never as 0 or nan."""
    results = {"bbox": {"AP": None, "AP50": float("nan"), "AP75": 3.5}, "segm": {"AP": None}}
    run = write_run(tmp_path, "empty", norm="GN", ims_per_batch=2, max_iter=20, times=[0.3], results=results)
    (row,) = csv_rows(run_tool([run, "--format", "csv"], capsys))
    assert (row["box AP"], row["box AP50"], row["box AP75"], row["mask AP"], row["mask AP75"]) == ("", "", "3.5", "", "")


def test_alias_config_finds_its_recipe_through_base(tmp_path, capsys):
    """A run trained from an alias file (single _BASE_ to a recipe) gets that recipe's published rows."""
    (tmp_path / "mask_rcnn_R_50_FPN_3x_gn.yaml").write_text("MODEL:\n  MASK_ON: True\n")
    alias = tmp_path / "my_gn.yaml"
    alias.write_text('_BASE_: "mask_rcnn_R_50_FPN_3x_gn.yaml"\n')
    run = write_run(tmp_path, "r", norm="GN", ims_per_batch=2, max_iter=20, times=[0.3], results=RUN_A_RESULTS)
    with open(os.path.join(run, "log.txt"), "w") as f:
        f.write(f"[x]: Rank 0 of 2; command line: tools/train_net.py --config-file {alias} --num-gpus 2\n")
    rows = csv_rows(run_tool([run, "--reference", "--format", "csv"], capsys))
    assert len(rows) > 1 and {r["run"] for r in rows[1:]} == {"mask_rcnn_R_50_FPN_3x_gn (published)"}


def test_weight_standardised_parts_are_shown_with_their_conv(tmp_path, capsys):
    run = write_run(tmp_path, "gnws_run", norm="GN", ims_per_batch=2, max_iter=100, conv="WS")
    row = csv_rows(run_tool([run, "--format", "csv"], capsys))[0]
    # the mask head keeps a plain conv here, so the heads column names both heads
    assert (row["norm: backbone"], row["FPN"], row["heads"]) == ("GN+WS", "GN+WS", "GN+WS/GN")
    plain = write_run(tmp_path, "gn_run", norm="GN", ims_per_batch=2, max_iter=100)
    assert csv_rows(run_tool([plain, "--format", "csv"], capsys))[0]["norm: backbone"] == "GN"
