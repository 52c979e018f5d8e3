"""The norm sweep's planning: the grid, skip/resume/evaluate decisions, the commands and the table."""
import os
import sys

import pytest

from gn_det.benchmark.formatting import render

from gn_det.benchmark.sweep import (
    RECIPES, Claim, add_wall_time, cell_status, check_claims, claimed_groups, claims_table, load_wall_times,
    plan_cells, sweep_rows, train_command,
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
    groups = {c.group for c in cells}
    assert {f"{r}_{k}img" for r in RECIPES for k in (1, 2)} <= groups
    assert {f"{r}_{k}img" for r in ("bn", "gn", "sn") for k in (4, 8)} <= groups  # the GN paper's batch axis
    assert {c.num_processes for c in cells} == {2}
    # every cell a claim compares runs 3 seeds, the others one
    seeds = {}
    for c in cells:
        seeds.setdefault((c.recipe, c.ims_per_process), []).append(c.seed)
    for key, got in seeds.items():
        assert got == ([0, 1, 2] if key in claimed_groups() else [0]), key
    assert ("gn", 1) in claimed_groups() and ("bn", 8) in claimed_groups()
    cells = plan_cells(config_dir, str(tmp_path / "out"), only=["frozenbn", "bn_2img"])
    assert [c.name for c in cells] == ["bn_2img", "bn_2img_s1", "bn_2img_s2", "frozenbn_1img", "frozenbn_2img"]
    cells = plan_cells(config_dir, str(tmp_path / "out"), only=["gn_1img_s2"])
    assert [(c.name, c.seed, os.path.basename(c.output_dir)) for c in cells] == [("gn_1img_s2", 2, "gn_1img_s2")]
    assert [c.name for c in plan_cells(config_dir, str(tmp_path / "out"), only=["bn_1img"], seeds=[0])] == ["bn_1img"]
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
    seeded = plan_cells(config_dir, str(tmp_path / "out"), only=["gn_1img_s2"])[0]
    assert train_command(seeded, "new", iters=100, lr_per_image=0.005)[-1 - train_command(
        seeded, "new", iters=100, lr_per_image=0.005)[::-1].index("SEED") + 1] == "2"
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
    cells = plan_cells(config_dir, str(out), only=["frozenbn"])
    write_run(out, "frozenbn_1img", norm="FrozenBN", ims_per_batch=2, max_iter=100, times=[0.2, 0.4, 0.3],
              results=RUN_A_RESULTS)
    add_wall_time(str(out), "frozenbn_1img", 10.0)
    add_wall_time(str(out), "frozenbn_1img", 5.5)
    assert load_wall_times(str(out)) == {"frozenbn_1img": 15.5}
    one, two = sweep_rows(cells, load_wall_times(str(out)))
    assert one["box_AP"] == RUN_A_RESULTS["bbox"]["AP"] and one["mask_AP"] == RUN_A_RESULTS["segm"]["AP"]
    assert one["box_AP_std"] is None and one["seeds"] == "1/1"  # one seed: no standard deviation
    assert one["train_s_iter"] == pytest.approx(0.3) and one["wall_s"] == 15.5
    assert one["norm_backbone"] == "FrozenBN" and one["ims_per_process"] == 1
    assert two["ims_per_process"] == 2 and two.get("box_AP") is None and two["wall_s"] is None
    assert (one["status"], two["status"]) == ("ok", "not run")
    (out / "frozenbn_2img").mkdir()
    (out / "frozenbn_2img" / "sweep_stdout.txt").write_text("FloatingPointError: Loss became infinite or NaN at iteration 7\n")
    assert sweep_rows(cells)[1]["status"] == "diverged"


def _results(box_ap, mask_ap):
    return {"bbox": {**RUN_A_RESULTS["bbox"], "AP": box_ap}, "segm": {**RUN_A_RESULTS["segm"], "AP": mask_ap}}


def test_seeds_aggregate_to_mean_and_sample_std_and_claims_are_judged(config_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    cells = plan_cells(config_dir, str(out), only=["gn_1img", "bn_1img"])
    gn, bn = [10.0, 12.0, 14.0], [5.0, 6.0, 7.0]
    for name, values in (("gn_1img", gn), ("bn_1img", bn)):
        for seed, v in enumerate(values):
            run = name if seed == 0 else f"{name}_s{seed}"
            write_run(out, run, norm="GN", ims_per_batch=2, max_iter=10, times=[0.1], results=_results(v, v / 2))
    rows = {r["_recipe_key"]: r for r in sweep_rows(cells)}
    assert rows["gn"]["box_AP"] == pytest.approx(12.0) and rows["gn"]["box_AP_std"] == pytest.approx(2.0)
    assert rows["gn"]["mask_AP_std"] == pytest.approx(1.0) and rows["gn"]["seeds"] == "3/3"
    assert rows["bn"]["box_AP"] == pytest.approx(6.0) and rows["bn"]["box_AP_std"] == pytest.approx(1.0)
    # gap 6.0 vs 2 x max(2.0, 1.0) = 4.0: holds; mask gap 3.0 vs 2 x 1.0 = 2.0: holds; reversed: does not hold
    claims = [Claim("gn", 1, "bn", 1), Claim("gn", 1, "bn", 1, "mask_AP"), Claim("bn", 1, "gn", 1),
              Claim("gn", 2, "bn", 2)]
    results = check_claims(list(rows.values()), claims)
    assert [r.verdict for r in results] == ["holds", "holds", "does not hold", "no result"]
    assert results[0].gap == pytest.approx(6.0)
    text = render(claims_table(results), "text")
    assert "GN > BN (batch stats) at 1 img/process (box AP)" in text and "12.0 +- 2.0 (n=3)" in text
    # a seed without results: mean and std of the two that finished, and the table says 2/3
    os.remove(out / "gn_1img_s2" / "inference" / "shapes_val" / "metrics.json")
    rows = {r["_recipe_key"]: r for r in sweep_rows(cells)}
    assert rows["gn"]["seeds"] == "2/3" and rows["gn"]["box_AP"] == pytest.approx(11.0)
    assert rows["gn"]["box_AP_std"] == pytest.approx(2 ** 0.5)


def test_table_only_writes_table_claims_and_plot(config_dir, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "norm_sweep_under_test", os.path.join(os.path.dirname(__file__), "..", "..", "tools", "norm_sweep.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "out"
    out.mkdir()
    for seed, (g, b) in enumerate(((10.0, 5.0), (12.0, 6.0), (14.0, 7.0))):
        suffix = "" if seed == 0 else f"_s{seed}"
        write_run(out, f"gn_1img{suffix}", norm="GN", ims_per_batch=2, max_iter=10, times=[0.1], results=_results(g, g))
        write_run(out, f"bn_1img{suffix}", norm="BN", ims_per_batch=2, max_iter=10, times=[0.1], results=_results(b, b))
    write_run(out, "gn_8img", norm="GN", ims_per_batch=16, max_iter=10, times=[0.5], results=_results(20.0, 18.0))
    assert tool.main(["--table-only", "--config-dir", config_dir, "--output-root", str(out)]) == 0
    md = (out / "norm_sweep.md").read_text()
    assert "| GN | GN | GN | GN | 1 | 3/3 | 12.0 | 2.0 |" in md
    assert "| GN > BN (batch stats) at 1 img/process (box AP) |" in md and "holds" in md
    assert "BN (batch stats) at 8 img/process > BN (batch stats) at 1 (box AP)" in md and "no result" in md
    assert (out / "norm_sweep.csv").read_text().startswith("norm recipe,backbone,FPN,heads,im/process,seeds")
    assert (out / "norm_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Claims (holds: gap > 2 x the larger std over seeds)" in capsys.readouterr().out
