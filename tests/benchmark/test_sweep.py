"""The norm sweep's planning: the grid, skip/resume/evaluate decisions, the commands and the table."""
import json
import os
import sys

import pytest

from gn_det.benchmark.sweep import (
    RECIPES, add_wall_time, cell_status, load_wall_times, plan_cells, sweep_rows, train_command,
)

sys.path.insert(0, os.path.dirname(__file__))
from test_tables import RUN_A_RESULTS, write_run  # noqa: E402  (run directories in train_net's layout)


@pytest.fixture
def config_dir(tmp_path):
    d = tmp_path / "sweep_configs"
    d.mkdir()
    for recipe in RECIPES:
        (d / f"{recipe}.yaml").write_text("{}\n")
    return str(d)


def test_grid_and_only(config_dir, tmp_path):
    cells = plan_cells(config_dir, str(tmp_path / "out"))
    assert [c.name for c in cells] == [f"{r}_{k}img" for r in RECIPES for k in (1, 2)]
    assert {c.num_processes for c in cells} == {2}
    cells = plan_cells(config_dir, str(tmp_path / "out"), only=["gn", "bn_2img"])
    assert [c.name for c in cells] == ["bn_2img", "gn_1img", "gn_2img"]
    with pytest.raises(ValueError, match="--only: unknown recipe or run gnn"):
        plan_cells(config_dir, str(tmp_path / "out"), only=["gnn"])


def test_missing_recipe_config_is_named(config_dir, tmp_path):
    os.remove(os.path.join(config_dir, "xbn.yaml"))
    with pytest.raises(FileNotFoundError, match="sweep recipe 'xbn' needs .*xbn.yaml; it is missing"):
        plan_cells(config_dir, str(tmp_path / "out"))


def test_status_new_resume_evaluate_done(tmp_path):
    run = tmp_path / "r"
    assert cell_status(str(run)) == "new"
    run.mkdir()
    (run / "last_checkpoint").write_text("model_0000009.pth")
    assert cell_status(str(run)) == "resume"
    (run / "model_final.pth").write_bytes(b"")
    assert cell_status(str(run)) == "evaluate"
    (run / "inference" / "shapes_val").mkdir(parents=True)
    (run / "inference" / "shapes_val" / "metrics.json").write_text("{}")
    assert cell_status(str(run)) == "done"


def test_commands(config_dir, tmp_path):
    cell = plan_cells(config_dir, str(tmp_path / "out"), only=["syncbn_2img"])[0]
    new = train_command(cell, "new", iters=100, lr_per_image=0.005)
    assert new[:2] == [sys.executable, os.path.join("tools", "train_net.py")]
    assert "--resume" not in new and new[new.index("--num-gpus") + 1] == "2"
    opts = dict(zip(new[new.index("OUTPUT_DIR")::2], new[new.index("OUTPUT_DIR") + 1::2]))
    assert opts["SOLVER.IMS_PER_BATCH"] == "4"  # 2 images x 2 processes
    assert float(opts["SOLVER.BASE_LR"]) == pytest.approx(0.02)
    assert opts["SOLVER.MAX_ITER"] == "100" and opts["SOLVER.STEPS"] == "(80,)" and opts["SEED"] == "0"
    assert opts["OUTPUT_DIR"] == cell.output_dir
    assert "--resume" in train_command(cell, "resume", iters=100, lr_per_image=0.005)
    ev = train_command(cell, "evaluate", iters=100, lr_per_image=0.005)
    assert "--eval-only" in ev and ev[ev.index("MODEL.WEIGHTS") + 1].endswith("model_final.pth")


def test_rows_hold_run_values_and_wall_times(config_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    cells = plan_cells(config_dir, str(out), only=["gn"])
    write_run(out, "gn_1img", norm="GN", ims_per_batch=2, max_iter=100, times=[0.2, 0.4, 0.3],
              results=RUN_A_RESULTS)
    add_wall_time(str(out), "gn_1img", 10.0)
    add_wall_time(str(out), "gn_1img", 5.5)
    assert load_wall_times(str(out)) == {"gn_1img": 15.5}
    one, two = sweep_rows(cells, load_wall_times(str(out)))
    assert one["box_AP"] == RUN_A_RESULTS["bbox"]["AP"] and one["mask_AP"] == RUN_A_RESULTS["segm"]["AP"]
    assert one["train_s_iter"] == pytest.approx(0.3) and one["wall_s"] == 15.5
    assert one["norm_backbone"] == "GN" and one["ims_per_process"] == 1
    assert two["ims_per_process"] == 2 and two.get("box_AP") is None and two["wall_s"] is None
    assert (one["status"], two["status"]) == ("ok", "not run")
    (out / "gn_2img").mkdir()
    (out / "gn_2img" / "sweep_stdout.txt").write_text("FloatingPointError: Loss became infinite or NaN at iteration 7\n")
    assert sweep_rows(cells)[1]["status"] == "diverged"
