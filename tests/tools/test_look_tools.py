"""The tools that show what was trained, through their real command lines: demo.py, visualize_data.py,
visualize_json_results.py, eval_json.py, plot_metrics.py and analyze_model.py. Drawn pixels are checked
against the masks (inside changed, outside mostly not), predictions against the predictor's own
detections, AP against pycocotools run here on a ground truth written by hand, parameter counts against
the model's."""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import re

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

from cli_runner import TINY_CONFIG, Command

HAS_FASTER = importlib.util.find_spec("faster_coco_eval") is not None
BACKENDS = ["pycocotools", pytest.param("faster-coco-eval", marks=pytest.mark.skipif(
    not HAS_FASTER, reason="faster-coco-eval is not installed: pip install -e '.[faster-coco-eval]' (.ci/run does)"))]


def _one_line_error(result, prog, *fragments):
    assert result.rc == 2, (result.stdout[-2000:], result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _register(workspace, name="look_val"):
    return ["DATASETS.REGISTER_COCO", f"[['{name}', '{workspace.p('val.json')}', '{workspace.p('val')}']]",
            "DATASETS.TEST", f"('{name}',)"]


def _read(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def _changed(a, b):
    return np.abs(a - b).sum(axis=2) > 0


# ---------------------------------------------------------------- demo.py
def test_demo_draws_and_saves_the_predictors_detections(workspace, runner, tmp_path):
    from gn_det.config import config_from_args
    from gn_det.data import read_image, register_from_cfg
    from gn_det.engine import DefaultPredictor

    opts = ["MODEL.WEIGHTS", workspace.p("good.pth"), *_register(workspace), "MODEL.DEVICE", "cpu"]
    cfg = config_from_args(TINY_CONFIG, opts)
    register_from_cfg(cfg)
    predictor = DefaultPredictor(cfg)
    files = sorted(os.path.join(workspace.p("val"), f) for f in os.listdir(workspace.p("val")))
    outputs = [predictor(read_image(f, "BGR")) for f in files]
    scores = sorted(float(s) for o in outputs for s in o["scores"])
    threshold = (scores[-2] + scores[-3]) / 2  # the two best detections over both images are drawn
    out = tmp_path / "demo"
    result = runner.run("tools/demo.py", ["--config", TINY_CONFIG, "--input", workspace.p("val"), "--output", str(out),
                                          "--confidence-threshold", f"{threshold:.6f}", *opts], cwd=str(tmp_path))
    assert result.rc == 0, result.stderr[-3000:]
    drawn_masks = 0
    for f, o in zip(files, outputs):
        before, after = _read(f), _read(out / os.path.basename(f))
        assert after.shape == before.shape  # the input's size and file name
        keep = o["scores"] >= threshold
        masks = (o["masks"][keep, 0] >= 0.5).numpy()
        union = masks.any(axis=0) if len(masks) else np.zeros(before.shape[:2], bool)
        changed = _changed(before, after)
        drawn_masks += int(union.sum())
        if union.any():
            assert changed[union].mean() > 0.95
        assert (~changed[~union]).mean() > 0.5  # outside the masks only outlines and labels
    assert drawn_masks > 0
    saved = json.loads((out / "predictions.json").read_text())
    assert len(saved) == sum(len(o["scores"]) for o in outputs)  # every detection, not only the drawn ones
    for image_id, (f, o) in enumerate(zip(files, outputs)):
        mine = [e for e in saved if e["image_id"] == image_id]
        assert {e["file_name"] for e in mine} == {f} and len(mine) == len(o["scores"])
        boxes = o["boxes"].numpy()
        np.testing.assert_allclose([e["bbox"] for e in mine],
                                   np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1), atol=1e-3)
        np.testing.assert_allclose([e["score"] for e in mine], o["scores"].numpy(), atol=1e-4)
        assert [e["category_id"] for e in mine] == o["labels"].tolist()  # shapes ids are contiguous + 1
        for e, m in zip(mine, o["masks"]):  # the same mask, up to pixels at probability ~0.5 (random weights)
            saved_mask = mask_util.decode({**e["segmentation"], "counts": e["segmentation"]["counts"].encode()})
            assert (saved_mask != (m[0] >= 0.5).numpy()).mean() < 0.02
    # without --output: nothing written, says so
    quiet = runner.run("tools/demo.py", ["--config", TINY_CONFIG, "--input", files[0], *opts], cwd=str(tmp_path))
    assert quiet.rc == 0 and "no --output DIR: nothing written" in quiet.stdout
    # a quoted glob is expanded by the tool
    globbed = runner.run("tools/demo.py", ["--config", TINY_CONFIG, "--input", os.path.join(workspace.p("val"), "*.png"),
                                           *opts], cwd=str(tmp_path))
    assert globbed.rc == 0 and globbed.stdout.count("detection(s) >=") == len(files)


def test_demo_bad_inputs_are_one_line(workspace, runner, tmp_path):
    base = ["--config", TINY_CONFIG, "--output", str(tmp_path / "o")]
    cases = [
        (["--input", str(tmp_path / "nope.jpg")], "is not a file, a folder or a glob"),
        (["--input", str(tmp_path / "*.jpg")], "matches no image file"),
        (["--input", workspace.p("val"), "MODEL.WEIGHTS", str(tmp_path / "w.pth")], "w.pth"),
        (["--input", workspace.p("val"), "--confidence-threshold", "1.5"], "--confidence-threshold must be in [0, 1]"),
        (["--input", workspace.p("val")], "trained weights needed: add MODEL.WEIGHTS"),
    ]
    results = runner.run_many([Command("tools/demo.py", base + argv, str(tmp_path)) for argv, _ in cases])
    for result, (_, fragment) in zip(results, cases):
        _one_line_error(result, "demo.py", fragment)
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- visualize_data.py
def test_visualize_data_annotation_and_dataloader(workspace, runner, tmp_path):
    from gn_det.data import load_coco_json, segmentation_to_mask

    flags = ["--register-coco", "vt", workspace.p("train.json"), workspace.p("train"), "DATASETS.TRAIN", "('vt',)",
             "DATASETS.TEST", "()"]
    out = tmp_path / "ann"
    result = runner.run("tools/visualize_data.py", ["--config", TINY_CONFIG, "--source", "annotation", "--output-dir",
                                                    str(out), *flags], cwd=str(tmp_path))
    assert result.rc == 0, result.stderr[-3000:]
    dicts = load_coco_json(workspace.p("train.json"), workspace.p("train"))
    assert sorted(os.listdir(out)) == sorted(os.path.basename(d["file_name"]) for d in dicts)
    for d in dicts:
        before, after = _read(d["file_name"]), _read(out / os.path.basename(d["file_name"]))
        union = np.zeros(before.shape[:2], bool)
        for a in d["annotations"]:
            union |= segmentation_to_mask(a["segmentation"], d["height"], d["width"]).astype(bool)
        changed = _changed(before, after)
        assert union.any() and changed[union].mean() > 0.95
        assert (~changed[~union]).mean() > 0.5
    out = tmp_path / "loader"
    result = runner.run("tools/visualize_data.py", ["--config", TINY_CONFIG, "--source", "dataloader", "--output-dir",
                                                    str(out), "--num", "6", *flags], cwd=str(tmp_path))
    assert result.rc == 0, result.stderr[-3000:]
    names = sorted(os.listdir(out))
    assert len(names) == 6 and "wrote 6 picture(s)" in result.stdout
    stems = {os.path.splitext(os.path.basename(d["file_name"]))[0] for d in dicts}
    assert all(re.sub(r"_\d+$", "", os.path.splitext(n)[0]) in stems for n in names)  # named after their image
    assert all(Image.open(out / n).size == (64, 64) for n in names)  # INPUT.MIN_SIZE_TRAIN 64
    bad = runner.run("tools/visualize_data.py", ["--config", TINY_CONFIG, "--source", "dataloader", "--output-dir",
                                                 str(out), "--num", "-1", *flags], cwd=str(tmp_path))
    _one_line_error(bad, "visualize_data.py", "--num must be >= 0")


# ---------------------------------------------------------------- visualize_json_results.py
def test_visualize_json_results_side_by_side(workspace, runner, tmp_path):
    gt = json.loads((open(workspace.p("val.json"))).read())
    results = []
    for a in gt["annotations"]:
        img = next(i for i in gt["images"] if i["id"] == a["image_id"])
        rle = mask_util.merge(mask_util.frPyObjects(a["segmentation"], img["height"], img["width"]))
        results.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9,
                        "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    results.append({**results[0], "score": 0.1})  # below --conf-threshold: not drawn
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    out = tmp_path / "vis"
    result = runner.run("tools/visualize_json_results.py",
                        ["--input", str(path), "--output", str(out), "--dataset", "vj", "--register-coco", "vj",
                         workspace.p("val.json"), workspace.p("val")], cwd=str(tmp_path))
    assert result.rc == 0, result.stderr[-3000:]
    for img in gt["images"]:
        before = _read(os.path.join(workspace.p("val"), img["file_name"]))
        after = _read(out / img["file_name"])
        w = img["width"]
        assert after.shape == (img["height"], 2 * w + 4, 3)
        union = np.zeros(before.shape[:2], bool)
        for a in gt["annotations"]:
            if a["image_id"] == img["id"]:
                union |= mask_util.decode(mask_util.merge(mask_util.frPyObjects(a["segmentation"], img["height"],
                                                                                w))).astype(bool)
        for half in (after[:, :w], after[:, w + 4:]):  # results (equal to the ground truth here) | ground truth
            changed = _changed(before, half)
            assert changed[union].mean() > 0.95 and (~changed[~union]).mean() > 0.5
    wrong = runner.run("tools/visualize_json_results.py",
                       ["--input", str(path), "--output", str(out), "--dataset", "nope"], cwd=str(tmp_path))
    _one_line_error(wrong, "visualize_json_results.py", "Dataset 'nope' is not registered")


# ---------------------------------------------------------------- eval_json.py
def _square(x, y, s):
    return [[x, y, x + s, y, x + s, y + s, x, y + s]]


@pytest.fixture(scope="module")
def hand_written(tmp_path_factory):
    """A ground truth written by hand (2 images of 100x100, 2 categories, 5 squares) and results for it."""
    root = tmp_path_factory.mktemp("eval_json")
    (root / "images").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (100, 100)).save(root / "images" / name)
    objects = [(1, 1, 0, 0, 20), (1, 1, 40, 40, 10), (1, 2, 60, 0, 20), (2, 2, 0, 0, 20), (2, 1, 50, 50, 20)]
    gt = {"images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.png"},
                     {"id": 2, "width": 100, "height": 100, "file_name": "b.png"}],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
          "annotations": [{"id": i + 1, "image_id": im, "category_id": c, "bbox": [x, y, s, s], "area": float(s * s),
                           "iscrowd": 0, "segmentation": _square(x, y, s)} for i, (im, c, x, y, s) in enumerate(objects)]}
    (root / "gt.json").write_text(json.dumps(gt))
    results = []
    for im, c, x, y, s, score in [(1, 1, 0, 0, 20, .9), (1, 1, 42, 40, 10, .8), (1, 1, 70, 70, 20, .95),
                                  (1, 2, 61, 1, 20, .9), (2, 2, 70, 10, 10, .95), (2, 2, 0, 0, 20, .6), (2, 1, 55, 50, 20, .7)]:
        rle = mask_util.merge(mask_util.frPyObjects(_square(x, y, s), 100, 100))
        results.append({"image_id": im, "category_id": c, "bbox": [x, y, s, s], "score": score,
                        "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    (root / "results.json").write_text(json.dumps(results))
    return root, gt, results


def _pycocotools_stats(gt, results, iou_type):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.createIndex()
    dets = copy.deepcopy(results) if iou_type == "segm" else [{k: v for k, v in r.items() if k != "segmentation"}
                                                              for r in results]
    ev = COCOeval(coco, coco.loadRes(dets), iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_json_ap_equals_pycocotools_on_a_hand_written_ground_truth(hand_written, runner, tmp_path, backend):
    root, gt, results = hand_written
    out = tmp_path / "metrics.json"
    result = runner.run("tools/eval_json.py",
                        [str(root / "results.json"), "--dataset", "hand", "--register-coco", "hand", str(root / "gt.json"),
                         str(root / "images"), "--backend", backend, "--output", str(out), "--per-class",
                         "--pr-curves", str(tmp_path / "pr"), "--error-analysis", str(tmp_path / "errors")],
                        cwd=str(tmp_path))
    assert result.rc == 0, result.stderr[-3000:]
    assert f"scored by {backend}" in result.stdout
    metrics = json.loads(out.read_text())
    for task in ("bbox", "segm"):
        stats = _pycocotools_stats(gt, results, task)
        for i, name in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl"]):
            expected = None if stats[i] < 0 else stats[i] * 100
            got = metrics[task][name]
            assert (got is None) if expected is None else got == pytest.approx(expected, abs=1e-4), (task, name)
        assert re.search(rf"{task} per category \(percent.*\n.*\n.*\na\s+[\d.]+", result.stdout)
        assert (tmp_path / "pr" / f"{task}_pr_curves.png").read_bytes()[:4] == b"\x89PNG"
        for name in ("overall", "a", "b"):
            assert (tmp_path / "errors" / f"{task}_{name}.png").is_file()
    assert "error analysis, area all" in result.stdout and "C75" in result.stdout
    assert "declares no supercategory, so Sim equals Oth" in result.stdout


def test_eval_json_bad_inputs_are_one_line(hand_written, runner, tmp_path):
    root, gt, results = hand_written
    reg = ["--register-coco", "hand", str(root / "gt.json"), str(root / "images")]
    (tmp_path / "not.json").write_text("{oops")
    (tmp_path / "dict.json").write_text("{}")
    (tmp_path / "other_image.json").write_text(json.dumps([{**results[0], "image_id": 99}]))
    (tmp_path / "no_score.json").write_text(json.dumps([{k: v for k, v in results[0].items() if k != "score"}]))
    cases = [
        ([str(root / "results.json"), "--dataset", "nope"], "Dataset 'nope' is not registered"),
        ([str(tmp_path / "missing.json"), "--dataset", "hand", *reg], "does not exist"),
        ([str(tmp_path / "not.json"), "--dataset", "hand", *reg], "is not JSON"),
        ([str(tmp_path / "dict.json"), "--dataset", "hand", *reg], "must hold a list of COCO result entries"),
        ([str(tmp_path / "other_image.json"), "--dataset", "hand", *reg], "image id(s) [99]"),
        ([str(tmp_path / "no_score.json"), "--dataset", "hand", *reg], "entry 0 lacks score"),
        ([str(root / "results.json"), "--dataset", "hand", "--backend", "coco", *reg], "invalid choice: 'coco'"),
    ]
    results_ = runner.run_many([Command("tools/eval_json.py", argv, str(tmp_path)) for argv, _ in cases])
    for result, (_, fragment) in zip(results_, cases):
        _one_line_error(result, "eval_json.py", fragment)


# ---------------------------------------------------------------- plot_metrics.py
def _write_run(path, times, with_ap):
    path.mkdir()
    lines = [{"iteration": i, "total_loss": 2.0 - 0.01 * i, "lr": 0.01, "time": t} for i, t in enumerate(times)]
    if with_ap:
        lines.append({"iteration": len(times) - 1, "bbox/AP": 12.5})
    path.joinpath("metrics.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def test_plot_metrics_writes_a_png_and_refuses_unknown_keys(runner, tmp_path):
    _write_run(tmp_path / "gn", [0.5, 0.7, 0.6, 0.8], with_ap=True)
    _write_run(tmp_path / "bn", [0.2, 0.4], with_ap=False)
    out = tmp_path / "curves.png"
    result = runner.run("tools/plot_metrics.py", [str(tmp_path / "gn"), str(tmp_path / "bn"), "--keys", "total_loss",
                                                  "bbox/AP", "--out", str(out), "--smooth", "2"], cwd=str(tmp_path))
    assert result.rc == 0, result.stderr[-3000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "gn: 0.650 s/iter (mean)" in result.stdout and "bn: 0.300 s/iter (mean)" in result.stdout
    bad = runner.run("tools/plot_metrics.py", [str(tmp_path / "gn"), "--keys", "total_los", "--out", str(out)],
                     cwd=str(tmp_path))
    _one_line_error(bad, "plot_metrics.py", "no run logged 'total_los'; the runs have: bbox/AP, lr, time, total_loss")
    missing = runner.run("tools/plot_metrics.py", [str(tmp_path / "x"), "--keys", "lr", "--out", str(out)],
                         cwd=str(tmp_path))
    _one_line_error(missing, "plot_metrics.py", "holds no metrics.json")


# ---------------------------------------------------------------- analyze_model.py
def test_analyze_model_counts_the_models_parameters_and_flops(workspace, runner, tmp_path):
    from gn_det.config import config_from_args
    from gn_det.modeling import build_model

    result = runner.run("tools/analyze_model.py", ["--config", TINY_CONFIG, "--tasks", "parameter", "flop", "activation",
                                                   "-n", "1", *_register(workspace, "am_val"), "MODEL.DEVICE", "cpu"],
                        cwd=str(tmp_path))
    assert result.rc == 0, result.stderr[-3000:]
    model = build_model(config_from_args(TINY_CONFIG, []))
    total = re.search(r"^total\s+([\d,]+)", result.stdout, re.M).group(1)
    assert int(total.replace(",", "")) == sum(p.numel() for p in model.parameters())
    assert re.search(r"FLOPs: [\d.]+ \+- [\d.]+ GFLOPs \(fvcore: 1 multiply-add = 1 flop\) per image, over 1 image",
                     result.stdout)
    assert re.search(r"norms: GN [\d.]+ \([\d.]+%\)", result.stdout) and "torchvision::roi_align" in result.stdout
    assert re.search(r"training forward keeps [\d.]+ \+- [\d.]+ MiB per image", result.stdout)
    no_data = runner.run("tools/analyze_model.py", ["--config", TINY_CONFIG, "--tasks", "flop"], cwd=str(tmp_path))
    _one_line_error(no_data, "analyze_model.py", "set DATASETS.TEST")
