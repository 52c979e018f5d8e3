"""The table of mistakes people really make, each run through the real command line: the tool exits
with status 2, prints exactly ONE line (pinned below) and leaves OUTPUT_DIR absent or unchanged.

All commands run in one batch through ``ToolRunner`` (a fork per command of a process that imported
gn_det once, see cli_runner.py); ``test_same_answer_from_a_real_python_process`` shows a few of them
give the same answer from a fresh ``python tools/...`` process.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, List, Optional, Union

import pytest
import torch

from cli_runner import TINY_CONFIG, Command, run_subprocess, snapshot

TRAIN_NET = "tools/train_net.py"
OUT = "out"  # a fresh OUTPUT_DIR name per case: <root>/<case id>/out must not exist afterwards


@dataclass
class Case:
    """One bad input: the tool, its arguments (given the workspace), the pinned line (a str with
    {root} for the workspace, or a compiled regex for text that depends on the torch version), and
    the OUTPUT_DIR (None: the tool has none; a workspace name: it exists and must stay unchanged)."""

    id: str
    argv: Callable
    line: Union[str, "re.Pattern"]
    tool: str = TRAIN_NET
    output_dir: Optional[str] = OUT


def train(*extra, data="train.json"):
    """train_net.py argv: the tiny GN config, the good datasets (or another train json), OUTPUT_DIR, extras."""
    return lambda ws, out: ["--config", TINY_CONFIG, *ws.data_flags(data), "OUTPUT_DIR", out,
                            *[e(ws) if callable(e) else e for e in extra]]


def path(name):
    return lambda ws: ws.p(name)


E = "train_net.py: error: "
CASES: List[Case] = [
    # ---- the config and the command line
    Case("config_near_miss", lambda ws, out: ["--config", "gn_mask_rcnn_shape.yaml", "OUTPUT_DIR", out],
         E + "config file 'gn_mask_rcnn_shape.yaml' not found (as a path, or in configs/ and configs/tiny/); "
             "did you mean tiny/gn_mask_rcnn_shapes.yaml?"),
    Case("unknown_flag", train("--evalonly"), E + "unknown flag --evalonly; did you mean --eval-only? (see --help)"),
    Case("odd_overrides", train("SOLVER.MAX_ITER"),
         re.compile(re.escape(E + "overrides come as KEY VALUE pairs; SOLVER.MAX_ITER has no value (got ") + r"\d+ items: .*\)$")),
    Case("unknown_key", train("SOLVER.MAX_ITERS", "5"),
         E + "Unknown config key SOLVER.MAX_ITERS. Did you mean: SOLVER.MAX_ITER, SOLVER.WARMUP_ITERS, SOLVER.STEPS?"),
    Case("wrong_type", train("SOLVER.MAX_ITER", "abc"),
         E + "Config key SOLVER.MAX_ITER has value 'abc' of type str, expected type int (default: 5)"),
    Case("unknown_norm", train("MODEL.FPN.NORM", "GNN"),
         E + "Unknown NORM name 'GNN' (from MODEL.FPN.NORM). Registered names: BN, BRN, EvoNormB0, EvoNormS0, FRN, "
             "FrozenBN, GN, IN, LN, SN, SyncBN, SyncBRN, SyncSN. Did you mean 'GN'? Use '' for no norm."),
    Case("num_gpus_zero", train("--num-gpus", "0"), E + "--num-gpus and --num-machines must be >= 1, got 0 and 1"),
    # ---- SOLVER values
    Case("max_iter_zero", train("SOLVER.MAX_ITER", "0"),
         E + "SOLVER.MAX_ITER=0 trains nothing: it is the number of iterations and must be > 0, e.g. SOLVER.MAX_ITER "
             "90000 (or pass --eval-only to evaluate MODEL.WEIGHTS)"),
    Case("max_iter_negative", train("SOLVER.MAX_ITER", "-5"),
         E + "SOLVER.MAX_ITER=-5 trains nothing: it is the number of iterations and must be > 0, e.g. SOLVER.MAX_ITER "
             "90000 (or pass --eval-only to evaluate MODEL.WEIGHTS)"),
    Case("ims_per_batch_zero", train("SOLVER.IMS_PER_BATCH", "0"),
         E + "SOLVER.IMS_PER_BATCH=0 must be > 0: it is the number of images per step over all processes, e.g. "
             "SOLVER.IMS_PER_BATCH 16"),
    Case("ims_per_batch_not_divisible", train("--num-gpus", "2", "SOLVER.IMS_PER_BATCH", "3"),
         E + "SOLVER.IMS_PER_BATCH=3 is not divisible by the number of processes (2); set SOLVER.IMS_PER_BATCH to a "
             "multiple of 2 or change --num-gpus/--num-machines"),
    Case("negative_base_lr", train("SOLVER.BASE_LR", "-0.01"),
         E + "SOLVER.BASE_LR=-0.01 must be >= 0, e.g. SOLVER.BASE_LR 0.02"),
    Case("steps_not_increasing", train("SOLVER.STEPS", "(4, 2)"),
         E + "SOLVER.STEPS=(4, 2) must be positive and increasing, e.g. SOLVER.STEPS \"(3, 4)\""),
    # ---- OUTPUT_DIR and runs
    Case("output_dir_is_a_file", lambda ws, out: train()(ws, os.path.join(ws.p("a_file"), "out")),
         E + "OUTPUT_DIR '{root}/a_file/out' is not writable ('{root}/a_file' is a file); pass a writable directory, "
             "e.g. OUTPUT_DIR ./output", output_dir=None),
    Case("another_run_in_output_dir", lambda ws, out: train()(ws, ws.p("other_run")),
         E + "OUTPUT_DIR '{root}/other_run' holds another run (last_checkpoint, model_final.pth): pass --resume to "
             "continue it, --overwrite to delete it and start over, or another OUTPUT_DIR", output_dir="other_run"),
    Case("resume_lost_checkpoint", lambda ws, out: train("--resume")(ws, ws.p("lost_checkpoint")),
         E + "--resume: {root}/lost_checkpoint/last_checkpoint names 'model_0000009.pth', which does not exist in "
             "{root}/lost_checkpoint; restore the file, or point last_checkpoint at another model_*.pth there",
         output_dir="lost_checkpoint"),
    Case("resume_without_last_checkpoint", lambda ws, out: train("--resume")(ws, ws.p("no_last_checkpoint")),
         E + "--resume: OUTPUT_DIR '{root}/no_last_checkpoint' holds model_0000004.pth, model_0000009.pth but no "
             "last_checkpoint naming the one to resume from; write its name into {root}/no_last_checkpoint/"
             "last_checkpoint (e.g. model_0000009.pth), or pass --overwrite instead of --resume to start over",
         output_dir="no_last_checkpoint"),
    Case("resume_into_another_model", lambda ws, out: train("--resume", "MODEL.FPN.OUT_CHANNELS", "64")(ws, ws.p("resumable")),
         re.compile(re.escape(E + "--resume: {root}/resumable/model_0000003.pth does not fit the model of this config (")
                    + r"\d+ of another shape \(first: .*: \(32,.*\) in the checkpoint, \(64,.*\) in the model\)\); "
                    + re.escape("resume with the config of that run ({root}/resumable/config.yaml, without overrides "
                                "that change the model), point last_checkpoint at another checkpoint, or pass "
                                "--overwrite instead of --resume to start over") + "$"),
         output_dir="resumable"),
    Case("resume_other_norm", lambda ws, out: train("--resume", "MODEL.RESNETS.NORM", "FrozenBN")(ws, ws.p("resumable")),
         re.compile(re.escape(E + "--resume: {root}/resumable/model_0000003.pth does not fit the model of this config (")
                    + r"\d+ missing from the checkpoint \(first: backbone\..*running_mean\)(; .*)?\); resume with .*$"),
         output_dir="resumable"),
    Case("resume_truncated_checkpoint", lambda ws, out: train("--resume")(ws, ws.p("cut_checkpoint")),
         re.compile(re.escape(E + "--resume: {root}/cut_checkpoint/model_0000003.pth: cannot read the weights file "
                                  "(torch zip format): it looks truncated or corrupt (") + r"RuntimeError: [^.]+\); "
                    + re.escape("point last_checkpoint at an intact checkpoint, or pass --overwrite instead of --resume "
                                "to start over") + "$"),
         output_dir="cut_checkpoint"),
    Case("resume_and_overwrite", lambda ws, out: train("--resume", "--overwrite")(ws, ws.p("other_run")),
         E + "--resume and --overwrite contradict each other: --resume continues the run in OUTPUT_DIR, --overwrite "
             "deletes it; pass one", output_dir="other_run"),
    # ---- evaluation only
    Case("eval_only_without_weights", train("--eval-only"),
         E + "--eval-only needs weights: pass MODEL.WEIGHTS path/to/model_final.pth"),
    Case("eval_only_flag_after_overrides_without_weights", lambda ws, out: train()(ws, out) + ["--eval-only"],
         E + "--eval-only needs weights: pass MODEL.WEIGHTS path/to/model_final.pth"),
    Case("eval_only_with_overwrite", lambda ws, out: train("--eval-only", "--overwrite", "MODEL.WEIGHTS",
                                                          path("good.pth"))(ws, ws.p("other_run")),
         E + "--overwrite with --eval-only deletes nothing (an evaluation keeps OUTPUT_DIR's run and writes "
             "OUTPUT_DIR/inference): drop --overwrite", output_dir="other_run"),
    Case("eval_only_resume_truncated_checkpoint", lambda ws, out: train("--eval-only", "--resume", "MODEL.WEIGHTS",
                                                                       path("good.pth"))(ws, ws.p("cut_checkpoint")),
         re.compile(re.escape(E + "--resume: {root}/cut_checkpoint/model_0000003.pth: cannot read the weights file ")
                    + ".*; point last_checkpoint at an intact checkpoint, or pass --overwrite instead of --resume to "
                      "start over$"), output_dir="cut_checkpoint"),
    Case("eval_only_empty_test", train("--eval-only", "MODEL.WEIGHTS", path("good.pth"), "DATASETS.TEST", "()"),
         E + "--eval-only with an empty DATASETS.TEST evaluates nothing: name the datasets to evaluate, e.g. "
             "DATASETS.TEST \"('mine_val',)\""),
    # ---- datasets
    Case("unregistered_dataset", train("DATASETS.TRAIN", "('nope',)"),
         E + "DATASETS.TRAIN names dataset 'nope', which is not registered (registered: coco_2017_train, "
             "coco_2017_val, shapes_train, shapes_val, t, v); register it with --register-coco nope JSON IMAGE_ROOT "
             "or DATASETS.REGISTER_COCO"),
    Case("empty_train_datasets", train("DATASETS.TRAIN", "()"),
         E + "DATASETS.TRAIN is empty: name the datasets to train on, e.g. DATASETS.TRAIN \"('mine_train',)\" with "
             "--register-coco mine_train JSON IMAGE_ROOT"),
    Case("missing_json", train(data="nope.json"),
         E + "COCO json file '{root}/nope.json' (dataset 't') does not exist"),
    Case("invalid_json", train(data="invalid.json"),
         re.compile(re.escape(E + "COCO json file '{root}/invalid.json' (dataset 't') is not valid JSON: ") + ".+")),
    Case("json_not_an_object", train(data="list.json"),
         E + "COCO json file '{root}/list.json' (dataset 't') must hold a JSON object with 'images', 'annotations' and "
             "'categories', got a list"),
    Case("json_without_images", train(data="no_images.json"),
         E + "COCO json file '{root}/no_images.json' (dataset 't') has no 'images' list"),
    Case("missing_image", train(data="missing_image.json"),
         E + "1 image file(s) listed in '{root}/missing_image.json' are missing under image_root '{root}/train': "
             "'{root}/train/gone.png' (image id 1)"),
    Case("corrupt_image", train(data="corrupt_image.json"),
         E + "image file '{root}/train/corrupt.png' of dataset 't' (image id 1) is not a readable image (cannot "
             "identify image file '{root}/train/corrupt.png'); replace it or remove it from the JSON"),
    Case("image_size_differs_from_json", train(data="wrong_size.json"),
         E + "image file '{root}/train/000000.png' of dataset 't' (image id 1) is 64x64 (HxW) but its JSON entry "
             "says 74x64; fix the JSON"),
    Case("unknown_category_id", train(data="unknown_category.json"),
         re.compile(re.escape(E + "COCO json file '{root}/unknown_category.json': annotation id ")
                    + r"\d+ \(image id \d+\) has category_id 99, which is not in its 'categories' \(ids \[1, 2, 3, 4\]\)$")),
    Case("empty_dataset", train(data="empty.json"),
         E + "dataset 't' (DATASETS.TRAIN) has no images ({root}/empty.json): add images to it or name another "
             "dataset in DATASETS.TRAIN"),
    Case("no_annotated_training_image", train(data="unannotated.json"),
         E + "DATASETS.TRAIN=('t',) has no image with a (non-crowd) annotation to train on; annotate some, or set "
             "DATALOADER.FILTER_EMPTY_ANNOTATIONS False"),
    Case("more_classes_than_categories", train("MODEL.ROI_HEADS.NUM_CLASSES", "5"),
         E + "MODEL.ROI_HEADS.NUM_CLASSES=5 but dataset 't' has 4 categories (circle, square, triangle, star); set "
             "MODEL.ROI_HEADS.NUM_CLASSES 4"),
    Case("fewer_classes_than_categories", train("MODEL.ROI_HEADS.NUM_CLASSES", "3"),
         E + "MODEL.ROI_HEADS.NUM_CLASSES=3 but dataset 't' has 4 categories (circle, square, triangle, star); set "
             "MODEL.ROI_HEADS.NUM_CLASSES 4"),
    Case("malformed_register_coco", train("DATASETS.REGISTER_COCO", "[['x', 'a.json']]"),
         E + "DATASETS.REGISTER_COCO[0] must be [NAME, JSON_FILE, IMAGE_ROOT] (three non-empty strings), got "
             "['x', 'a.json']"),
    # ---- the model
    Case("gn_groups_do_not_divide_channels", train("MODEL.GN.NUM_GROUPS", "5"),
         E + "MODEL.RESNETS.NORM='GN' needs channels divisible by MODEL.GN.NUM_GROUPS=5, got 64; set "
             "MODEL.GN.NUM_GROUPS to a divisor of 64 or use MODEL.GN.DIM_PER_GP"),
    Case("gn_groups_do_not_divide_fpn_channels", train("MODEL.FPN.OUT_CHANNELS", "36"),
         E + "MODEL.FPN.NORM='GN' needs channels divisible by MODEL.GN.NUM_GROUPS=8, got 36; set "
             "MODEL.GN.NUM_GROUPS to a divisor of 36 or use MODEL.GN.DIM_PER_GP"),
    Case("cuda_device_without_cuda", train("MODEL.DEVICE", "cuda"),
         E + f"MODEL.DEVICE='cuda' but CUDA is not available on this machine (torch {torch.__version__}); "
             "set MODEL.DEVICE cpu or auto, or install a CUDA build of torch"),
    # ---- weights
    Case("missing_weights", train("MODEL.WEIGHTS", path("nope.pth")),
         E + "MODEL.WEIGHTS {root}/nope.pth: no such weights file"),
    Case("truncated_weights", train("MODEL.WEIGHTS", path("truncated.pth")),
         re.compile(re.escape(E + "MODEL.WEIGHTS {root}/truncated.pth: cannot read the weights file (torch zip "
                                  "format): it looks truncated or corrupt (") + r"RuntimeError: [^.]+\)$")),
    Case("refused_pickle", train("MODEL.WEIGHTS", path("evil.pkl")),
         E + "MODEL.WEIGHTS {root}/evil.pkl: refusing to load: the pickle asks for 'posix.system', which is not data "
             "(weights .pkl files may hold only dicts, lists, tuples, strings, numbers and numpy arrays); nothing "
             "from the file was executed"),
    Case("unknown_weights_format", train("MODEL.WEIGHTS", path("bert.pth")),
         E + "MODEL.WEIGHTS {root}/bert.pth: unrecognised weights format (first keys: encoder.weight); known formats: "
             "torchvision-detection, gn_det, detectron2, detectron-c2-detector, fair-c2-gn, msra-c2, sn-imagenet, "
             "torchvision-resnet"),
    Case("weights_fit_nothing", train("MODEL.WEIGHTS", path("keypoints.pth")),
         E + "MODEL.WEIGHTS '{root}/keypoints.pth' (format 'gn_det'): none of its 1 tensors fits the model; check "
             "MODEL.WEIGHTS and the config"),
    # ---- the other tools
    Case("convert_missing_input", lambda ws, out: [ws.p("nope.pkl"), out + ".pth"],
         "convert_weights.py: error: {root}/nope.pkl: no such weights file", tool="tools/convert_weights.py",
         output_dir=None),
    Case("convert_refused_pickle", lambda ws, out: [ws.p("evil.pkl"), out + ".pth", "--config-file", TINY_CONFIG],
         "convert_weights.py: error: {root}/evil.pkl: refusing to load: the pickle asks for 'posix.system', which "
         "is not data (weights .pkl files may hold only dicts, lists, tuples, strings, numbers and numpy arrays); "
         "nothing from the file was executed", tool="tools/convert_weights.py", output_dir=None),
    Case("convert_into_a_model_of_other_widths", lambda ws, out: [ws.p("good.pth"), out + ".pth", "--config-file", TINY_CONFIG,
                                                                  "MODEL.FPN.OUT_CHANNELS", "64"],
         re.compile(re.escape("convert_weights.py: error: ") + r"\d+ tensor\(s\) of .*/good.pth do not fit the model "
                    r"built from .*tiny_gn.yaml \(first: .*: \(32,.*\) in the file, \(64,.*\) in the model\); nothing "
                    r"written\. Pass --config-file with the config these weights were trained with$"),
         tool="tools/convert_weights.py", output_dir=None),
    Case("describe_groups_do_not_divide", lambda ws, out: ["--config", TINY_CONFIG, "MODEL.GN.NUM_GROUPS", "5"],
         "describe_model.py: error: MODEL.RESNETS.NORM='GN' needs channels divisible by MODEL.GN.NUM_GROUPS=5, got 64; "
         "set MODEL.GN.NUM_GROUPS to a divisor of 64 or use MODEL.GN.DIM_PER_GP", tool="tools/describe_model.py",
         output_dir=None),
    Case("benchmark_table_not_a_run", lambda ws, out: [ws.p("train")],
         re.compile(re.escape("benchmark_table.py: error: {root}/train has no config.yaml: pass the OUTPUT_DIR of a "
                              "run of tools/train_net.py") + ".*"), tool="tools/benchmark_table.py", output_dir=None),
    Case("analyze_without_weights", lambda ws, out: ["--config", TINY_CONFIG, "DATASETS.TEST", "('v',)"],
         "analyze_norms.py: error: trained weights needed: add MODEL.WEIGHTS path/to/model_final.pth",
         tool="tools/analyze_norms.py", output_dir=None),
    Case("norm_sweep_bad_seeds", lambda ws, out: ["--seeds", "0,two", "--output-root", out],
         "norm_sweep.py: error: --seeds takes comma-separated integers, e.g. 0,1; got '0,two'",
         tool="tools/norm_sweep.py"),
    Case("bench_step_zero_iters", lambda ws, out: ["--config", TINY_CONFIG, "--iters", "0"],
         "bench_step.py: error: --iters must be >= 1, got 0 (see --help)", tool="benchmarks/bench_step.py",
         output_dir=None),
    Case("bench_norms_bad_shape", lambda ws, out: ["--shapes", "1x2x3"],
         "bench_norms.py: error: argument --shapes: entries must be NxCxHxW with positive sizes, got '1x2x3' "
         "(see --help)", tool="benchmarks/bench_norms.py", output_dir=None),
]


def _command(case: Case, ws) -> Command:
    case_dir = os.path.join(ws.p("cases"), case.id)
    os.makedirs(case_dir, exist_ok=True)
    return Command(case.tool, case.argv(ws, os.path.join(case_dir, OUT)), cwd=case_dir)


@pytest.fixture(scope="module")
def outcomes(workspace, runner, machine_has_cuda):
    """Every case run once (in one parallel batch), with the snapshots of their OUTPUT_DIRs around it."""
    cases = [c for c in CASES if not _skipped(c, machine_has_cuda)]
    existing = {c.id: snapshot(workspace.p(c.output_dir)) for c in cases if c.output_dir not in (None, OUT)}
    results = runner.run_many([_command(c, workspace) for c in cases])
    after = {c.id: snapshot(workspace.p(c.output_dir)) for c in cases if c.output_dir not in (None, OUT)}
    return dict(zip([c.id for c in cases], results)), existing, after


def _skipped(case: Case, machine_has_cuda: bool) -> bool:
    """Cases that are no mistake on this machine (MODEL.DEVICE cuda where CUDA is present: the tools run in
    processes without the conftest's CPU patch). ``machine_has_cuda`` is read before that patch, so the
    module fixture and the tests decide alike (issue 21, defect 10)."""
    return case.id == "cuda_device_without_cuda" and machine_has_cuda


def test_the_table_is_big_enough():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)
    assert sum(c.tool == TRAIN_NET for c in CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case, outcomes, workspace, machine_has_cuda):
    if _skipped(case, machine_has_cuda):
        pytest.skip("this machine has CUDA")
    results, before, after = outcomes
    result = results[case.id]
    root = str(workspace.root)
    assert result.rc == 2, (result.stdout[-2000:], result.stderr[-3000:])
    assert len(result.err_lines) == 1 and "Traceback" not in result.stderr, result.stderr
    line = result.err_lines[0]
    if isinstance(case.line, str):
        assert line == case.line.format(root=root)
    else:
        pattern = re.compile(case.line.pattern.replace(re.escape("{root}"), re.escape(root)))
        assert pattern.match(line), line
    case_dir = os.path.join(workspace.p("cases"), case.id)
    assert os.listdir(case_dir) == []  # no OUTPUT_DIR (case_dir/out), nothing else in the working directory
    if case.output_dir not in (None, OUT):
        assert after[case.id] == before[case.id]  # the other run's files are untouched
    assert not os.path.exists(workspace.p("pwned"))  # the malicious pickle never ran


@pytest.mark.parametrize("case_id", ["eval_only_flag_after_overrides_without_weights", "refused_pickle"])
def test_same_answer_from_a_real_python_process(case_id, outcomes, workspace, tmp_path):
    """``python tools/train_net.py ...`` in a fresh interpreter prints the same line, exits 2, writes nothing."""
    case = next(c for c in CASES if c.id == case_id)
    result = run_subprocess(case.tool, case.argv(workspace, str(tmp_path / OUT)), cwd=str(tmp_path),
                            env={"GN_DET_DATASETS": str(tmp_path / "datasets")})
    forked = outcomes[0][case_id]
    assert (result.rc, result.stderr.replace(str(tmp_path), "<dir>")) == \
        (forked.rc, forked.stderr.replace(os.path.join(workspace.p("cases"), case_id), "<dir>"))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_brings_the_traceback_back(how, runner, workspace, tmp_path):
    argv = train("MODEL.GN.NUM_GROUPS", "5")(workspace, str(tmp_path / OUT))
    env = {"GN_DET_DEBUG": "1"} if how == "environment" else None
    result = runner.run(TRAIN_NET, argv + (["--debug"] if how == "flag" else []), cwd=str(tmp_path), env=env)
    assert result.rc == 1 and result.err_lines[0] == "Traceback (most recent call last):"
    assert "NormChannelsError: MODEL.RESNETS.NORM='GN' needs channels divisible by MODEL.GN.NUM_GROUPS=5" in result.stderr
    assert not os.path.exists(tmp_path / OUT)
