"""norm_sweep.py --protocol finetune, planned and judged without training: the cells, seeds and the
pretrained backbone of each, pretraining once per backbone (cached, resumed), finished cells skipped,
the claims' verdicts on fixed numbers, and the docs page."""
import importlib.util
import os
import sys

import pytest

from gn_det.benchmark.finetune import (FINETUNE, FINETUNE_BACKBONES, FINETUNE_LABELS, claim_reasons,
                                       plan_pretraining, pretrain_command, pretrain_status)
from gn_det.benchmark.sweep import check_claims, plan_cells, sweep_rows, train_command

sys.path.insert(0, os.path.dirname(__file__))
from test_tables import RUN_A_RESULTS, write_run  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs", "tiny", "finetune")
PRETRAIN = os.path.join(REPO, "configs", "tiny", "pretrain")


def _tool():
    spec = importlib.util.spec_from_file_location("norm_sweep_finetune_test", os.path.join(REPO, "tools", "norm_sweep.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def _results(box_ap):
    return {"bbox": {**RUN_A_RESULTS["bbox"], "AP": box_ap}, "segm": {**RUN_A_RESULTS["segm"], "AP": box_ap / 2}}


def test_grid_cells_seeds_and_backbones(tmp_path):
    out = str(tmp_path / "out")
    cells = plan_cells(CONFIGS, out, protocol=FINETUNE)
    assert len(cells) == 8 * 2 * 3
    assert {c.recipe for c in cells} == {"frozenbn", "frozenbn_gn", "frozenbn_sn", "bn", "syncbn", "gn", "sn", "gnws"}
    names = [c.name for c in cells]
    assert names[:6] == ["frozenbn_1img", "frozenbn_1img_s1", "frozenbn_1img_s2", "frozenbn_2img", "frozenbn_2img_s1",
                         "frozenbn_2img_s2"]
    assert "gn_2img_s1" in names and "gnws_1img_s2" in names
    assert {c.num_processes for c in cells} == {2}
    by_name = {c.name: c for c in cells}
    assert by_name["frozenbn_gn_2img"].weights == os.path.join(out, "pretrain", "R_18_bn", "model_final.pth")
    assert by_name["sn_1img_s2"].pretrained == "sn" and by_name["gnws_2img"].pretrained == "gnws"
    assert by_name["syncbn_1img"].pretrained == "bn" and by_name["syncbn_1img"].label == "SyncBN/SyncBN"
    assert all(c.config_file == os.path.join(CONFIGS, f"{c.recipe}.yaml") for c in cells)
    # only and seeds select as in the scratch grid
    assert [c.name for c in plan_cells(CONFIGS, out, only=["gn_2img"], seeds=[0, 2], protocol=FINETUNE)] == [
        "gn_2img", "gn_2img_s2"]
    with pytest.raises(ValueError, match="--only: unknown recipe or run brn; choose from frozenbn, frozenbn_gn"):
        plan_cells(CONFIGS, out, only=["brn"], protocol=FINETUNE)


def test_commands_load_the_pretrained_backbone_only_on_a_fresh_start(tmp_path):
    cell = plan_cells(CONFIGS, str(tmp_path), only=["bn_2img_s1"], protocol=FINETUNE)[0]
    new = train_command(cell, "new", iters=200, lr_per_image=0.005)
    opts = dict(zip(new[new.index("OUTPUT_DIR")::2], new[new.index("OUTPUT_DIR") + 1::2]))
    assert opts["MODEL.WEIGHTS"] == cell.weights and opts["SEED"] == "1" and opts["SOLVER.IMS_PER_BATCH"] == "4"
    resume = train_command(cell, "resume", iters=200, lr_per_image=0.005)
    assert "--resume" in resume and resume[resume.index("MODEL.WEIGHTS") + 1] == cell.weights  # the checkpoint wins
    ev = train_command(cell, "evaluate", iters=200, lr_per_image=0.005)
    assert ev[ev.index("MODEL.WEIGHTS") + 1] == os.path.join(cell.output_dir, "model_final.pth")
    assert ev.count("MODEL.WEIGHTS") == 1


def test_pretraining_is_planned_once_per_backbone_and_cached(tmp_path):
    out = tmp_path / "out"
    cells = plan_cells(CONFIGS, str(out), protocol=FINETUNE)
    jobs = plan_pretraining(cells, PRETRAIN)
    assert [j.kind for j in jobs] == ["bn", "gn", "sn", "gnws"]
    assert jobs[1].config_file == os.path.join(PRETRAIN, "R_18_gn.yaml")
    assert jobs[1].output_dir == str(out / "pretrain" / "R_18_gn")
    assert [j.kind for j in plan_pretraining(plan_cells(CONFIGS, str(out), only=["gn", "frozenbn_sn"],
                                                        protocol=FINETUNE), PRETRAIN)] == ["bn", "gn"]
    d = jobs[0].output_dir
    assert pretrain_status(d) == "new"
    os.makedirs(d)
    (out / "pretrain" / "R_18_bn" / "last_checkpoint").write_text("model_0000099.pth")
    assert pretrain_status(d) == "resume"
    (out / "pretrain" / "R_18_bn" / "model_final.pth").write_bytes(b"")
    assert pretrain_status(d) == "resume"  # trained but its held-out evaluation is missing: resume evaluates it
    (out / "pretrain" / "R_18_bn" / "inference" / "textures_val").mkdir(parents=True)
    (out / "pretrain" / "R_18_bn" / "inference" / "textures_val" / "metrics.json").write_text(
        '{"classification": {"accuracy": 80.0, "loss": 0.5}}')
    assert pretrain_status(d) == "done"
    cmd = pretrain_command(jobs[0], "resume", iters=200)
    assert "--resume" in cmd and cmd[cmd.index("SOLVER.MAX_ITER") + 1] == "200"
    assert cmd[cmd.index("SOLVER.STEPS") + 1] == "(146, 180)"
    assert "SOLVER.MAX_ITER" not in pretrain_command(jobs[0], "new")  # the recipe's own schedule


def test_sweep_pretrains_then_fine_tunes_skipping_what_is_finished(tmp_path, monkeypatch, capsys):
    """The tool with a recording subprocess: pretraining runs once per backbone before the cells, a cached
    backbone and a finished cell are skipped, a cell with a checkpoint is resumed."""
    tool = _tool()
    out = tmp_path / "out"
    out.mkdir()
    calls = []

    def fake_call(cmd, **kwargs):
        calls.append(cmd)
        if os.path.basename(cmd[1]) == "pretrain_backbone.py":  # leave a pretrained backbone behind
            d = cmd[cmd.index("OUTPUT_DIR") + 1]
            os.makedirs(os.path.join(d, "inference", "textures_val"), exist_ok=True)
            open(os.path.join(d, "model_final.pth"), "wb").close()
            with open(os.path.join(d, "inference", "textures_val", "metrics.json"), "w") as f:
                f.write('{"classification": {"accuracy": 75.0, "loss": 0.7}}')
        return 0

    monkeypatch.setattr(tool.subprocess, "call", fake_call)
    # the GN backbone is cached already; gn_1img is finished; gn_2img has a checkpoint
    gn_dir = out / "pretrain" / "R_18_gn"
    (gn_dir / "inference" / "textures_val").mkdir(parents=True)
    (gn_dir / "model_final.pth").write_bytes(b"")
    (gn_dir / "inference" / "textures_val" / "metrics.json").write_text('{"classification": {"accuracy": 70.0}}')
    write_run(out, "gn_1img", norm="GN", ims_per_batch=2, max_iter=10, times=[0.1], results=_results(20.0))
    (out / "gn_2img").mkdir()
    (out / "gn_2img" / "last_checkpoint").write_text("model_0000009.pth")
    args = ["--protocol", "finetune", "--output-root", str(out), "--only", "gn,frozenbn", "--seeds", "0",
            "--iters", "10", "--cost-images", "0"]
    tool.main(args)
    ran = [(os.path.basename(c[1]), c[c.index("OUTPUT_DIR") + 1]) for c in calls]
    assert ran == [("pretrain_backbone.py", str(out / "pretrain" / "R_18_bn")),
                   ("train_net.py", str(out / "frozenbn_1img")), ("train_net.py", str(out / "frozenbn_2img")),
                   ("train_net.py", str(out / "gn_2img"))]
    assert "--resume" in calls[-1] and "--resume" not in calls[1]
    assert calls[1][calls[1].index("MODEL.WEIGHTS") + 1] == str(out / "pretrain" / "R_18_bn" / "model_final.pth")
    text = capsys.readouterr().out
    assert "[norm_sweep] pretrain gn: done" in text and "used by gn_1img, gn_2img" in text
    # a second invocation pretrains nothing again
    calls.clear()
    tool.main(args)
    assert all(os.path.basename(c[1]) == "train_net.py" for c in calls)

    # --dry-run lists every cell with its backbone and status, runs nothing
    calls.clear()
    assert tool.main(["--protocol", "finetune", "--output-root", str(out), "--only", "gn", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert not calls
    assert f"gn_1img: ok, skipped (backbone gn: {gn_dir / 'model_final.pth'})" in text
    assert f"gn_1img_s1: new (backbone gn: {gn_dir / 'model_final.pth'}) ->" in text
    assert "gn_2img: resume (backbone gn" in text


def test_finetune_claims_verdicts_on_fixed_numbers(tmp_path):
    """FrozenBN/- 30, 31, 32 (std 1) against BN/BN 20, 22, 24 (std 2): gap 9 > 2 x 2 holds; SyncBN 22, 24,
    26 against BN/BN: gap 2 < 2 x 2 does not hold; SN/SN without runs: no result."""
    out = tmp_path / "out"
    out.mkdir()
    numbers = {"frozenbn_2img": (30.0, 31.0, 32.0), "bn_2img": (20.0, 22.0, 24.0), "syncbn_2img": (22.0, 24.0, 26.0),
               "gn_2img": (33.0, 33.0, 33.0)}
    for group, values in numbers.items():
        for seed, v in enumerate(values):
            write_run(out, group + ("" if seed == 0 else f"_s{seed}"), norm="BN", ims_per_batch=4, max_iter=10,
                      times=[0.1], results=_results(v))
    cells = plan_cells(CONFIGS, str(out), protocol=FINETUNE)
    results = {(r.claim.better, r.claim.worse): r for r in check_claims(sweep_rows(cells), FINETUNE.claims)}
    assert len(results) == 6
    held = results[("frozenbn", "bn")]
    assert held.verdict == "holds" and held.gap == pytest.approx(9.0)
    assert held.claim.text == "FrozenBN/- > BN/BN at 2 img/process (box AP)"
    assert results[("syncbn", "bn")].verdict == "does not hold"
    # GN/GN 33 +- 0 against FrozenBN/- 31 +- 1: gap 2 is not above 2 x 1
    assert results[("gn", "frozenbn")].verdict == "does not hold"
    assert results[("sn", "gn")].verdict == "no result"
    lines = claim_reasons(list(results.values()))
    assert "- FrozenBN/- > BN/BN at 2 img/process (box AP): **holds**: gap +9.0 AP against 2 std = 4.0 (n = 3 and 3 seeds)" in lines


def test_table_only_docs(tmp_path, capsys, monkeypatch):
    import matplotlib.figure
    titles = []
    real_suptitle = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(matplotlib.figure.Figure, "suptitle",
                        lambda fig, text, **kw: titles.append(text) or real_suptitle(fig, text, **kw))
    tool = _tool()
    out = tmp_path / "out"
    out.mkdir()
    for seed, v in enumerate((30.0, 31.0, 32.0)):
        write_run(out, "frozenbn_2img" + ("" if seed == 0 else f"_s{seed}"), norm="FrozenBN", ims_per_batch=4,
                  max_iter=10, times=[0.1], results=_results(v))
    docs = tmp_path / "docs"
    assert tool.main(["--protocol", "finetune", "--output-root", str(out), "--table-only", "--docs",
                      "--docs-dir", str(docs), "--iters", "200"]) == 0
    md = (docs / "norm_finetune.md").read_text()
    assert "| FrozenBN/- | FrozenBN | FrozenBN | FrozenBN | 2 | 3/3 | 31.0 | 1.0 |" in md  # write_run: one norm
    assert "for 200 iterations" in md and "![AP per cell" in md
    assert "| FrozenBN/- > BN/BN at 2 img/process (box AP) |" in md and "no result" in md
    assert "Wu & He, Group Normalization" in md and "| 38.6 |" in md  # the published counterparts
    assert (docs / "norm_finetune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(titles) == 2 and all("fine-tuned" in t and "scratch" not in t for t in titles)  # output + docs plots
    assert (out / "norm_finetune.md").read_text() == md


def test_flags_of_the_other_protocol_are_refused(capsys):
    assert _tool().main(["--docs"]) == 2
    assert "--docs belongs to the fine-tuning grid: add --protocol finetune" in capsys.readouterr().err


def test_labels_cover_the_recipes():
    assert set(FINETUNE_LABELS) == set(FINETUNE_BACKBONES)
    assert all(os.path.isfile(os.path.join(CONFIGS, f"{r}.yaml")) for r in FINETUNE_LABELS)


def test_a_cached_backbone_of_another_norm_is_refused(tmp_path, monkeypatch, capsys):
    """OUTPUT_ROOT/pretrain/R_18_bn holding a GN run (its config.yaml says so): one line, exit 2, nothing runs."""
    from gn_det.config import get_cfg

    tool = _tool()
    calls = []
    monkeypatch.setattr(tool.subprocess, "call", lambda cmd, **kw: calls.append(cmd) or 0)
    bn_dir = tmp_path / "out" / "pretrain" / "R_18_bn"
    (bn_dir / "inference" / "textures_val").mkdir(parents=True)
    (bn_dir / "model_final.pth").write_bytes(b"")
    (bn_dir / "inference" / "textures_val" / "metrics.json").write_text('{"classification": {"accuracy": 70.0}}')
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(PRETRAIN, "R_18_gn.yaml"))
    (bn_dir / "config.yaml").write_text(cfg.dump())
    code = tool.main(["--protocol", "finetune", "--output-root", str(tmp_path / "out"), "--only", "frozenbn_1img",
                      "--seeds", "0"])
    assert code == 2 and not calls
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "frozenbn_1img: MODEL.WEIGHTS" in err[0] and "is a gn backbone" in err[0]
