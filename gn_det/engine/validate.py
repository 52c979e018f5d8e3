"""Check everything a run will need before its first step and before anything is written.

``validate_run(cfg, ...)`` runs once, in the launching process, before OUTPUT_DIR is created or any
process is spawned: SOLVER values, the batch split, OUTPUT_DIR (writable; not holding another run),
the device, every dataset in DATASETS.TRAIN / TEST (registered, JSON readable and COCO, image files
present and readable, categories against MODEL.ROI_HEADS.NUM_CLASSES), MODEL.WEIGHTS (readable, a
known format, fitting the model) and the model itself (norms' channel constraints), built on the meta
device so that even an R-101 costs about a second. A mistake then costs seconds, not a run: each is
raised as one ``UserError`` line naming the key or file and the fix.
"""
from __future__ import annotations

import glob
import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from gn_det.config import check_batch_dependent_norms
from gn_det.evaluation.backends import resolve_backend
from gn_det.utils.cli import USER_ERRORS, UserError, one_line
from gn_det.utils.device import check_processes_per_machine

from .launch import check_backend

logger = logging.getLogger(__name__)

__all__ = ["PreparedRun", "validate_run", "check_solver", "check_batch_split", "check_output_dir_writable",
           "run_files", "last_checkpoint_file", "clean_output_dir", "check_device", "check_datasets", "check_model_and_weights",
           "check_resume_checkpoint"]

LAST_CHECKPOINT = "last_checkpoint"
# What a training run leaves in OUTPUT_DIR (removed by --overwrite); checkpoints mark "another run".
_CHECKPOINT_PATTERNS = (LAST_CHECKPOINT, "model_*.pth")
_RUN_PATTERNS = _CHECKPOINT_PATTERNS + ("metrics.json", "events.out.tfevents.*", "log.txt", "log.txt.rank*",
                                        "config.yaml", "inference")


@dataclass
class PreparedRun:
    """What validation found and a run in this process may reuse: MODEL.WEIGHTS already read and
    converted (``weights``: (ConvertedWeights, DetectedFormat), or None) and warnings to log once
    logging is set up (they then land in log.txt)."""

    weights: Optional[Tuple[Any, Any]] = None
    warnings: List[str] = field(default_factory=list)
    device: str = "auto"  # MODEL.DEVICE as configured: launch picks each process's device (and backend) from it

    def without_weights(self) -> "PreparedRun":
        """A copy for other processes: the weights stay here (each process reads its own)."""
        return PreparedRun(None, list(self.warnings), self.device)


def validate_run(cfg, *, eval_only: bool = False, resume: bool = False, overwrite: bool = False,
                 world_size: int = 1, procs_per_machine: int = 1, check_run_dir: bool = True,
                 check_inputs: bool = True, dist_backend: str = "auto") -> PreparedRun:
    """Raise ``UserError`` (one line) on the first problem a run of ``cfg`` would meet; else return
    what was read on the way. Writes nothing. ``procs_per_machine``: processes on this machine (each
    needs a GPU of its own on CUDA); ``check_run_dir``: also refuse an OUTPUT_DIR holding another run
    (the launching process only); ``check_inputs``: datasets, weights and model; ``dist_backend``: the
    --dist-backend flag (gloo lets processes share a GPU)."""
    try:
        return _validate(cfg, eval_only=eval_only, resume=resume, overwrite=overwrite, world_size=world_size,
                         procs_per_machine=procs_per_machine, check_run_dir=check_run_dir, check_inputs=check_inputs,
                         dist_backend=dist_backend)
    except UserError:
        raise
    except USER_ERRORS as e:
        raise UserError(one_line(e)) from e


def _validate(cfg, *, eval_only, resume, overwrite, world_size, procs_per_machine, check_run_dir,
              check_inputs, dist_backend="auto") -> PreparedRun:
    prepared = PreparedRun(device=str(cfg.MODEL.DEVICE))
    if eval_only and overwrite:
        raise UserError("--overwrite with --eval-only deletes nothing (an evaluation keeps OUTPUT_DIR's run and writes "
                        "OUTPUT_DIR/inference): drop --overwrite")
    # detectron2: --eval-only --resume evaluates OUTPUT_DIR's last_checkpoint if there is one, else MODEL.WEIGHTS
    resume_from = last_checkpoint_file(cfg.OUTPUT_DIR) if eval_only and resume else None
    if eval_only and not cfg.MODEL.WEIGHTS and not resume_from:
        raise UserError("--eval-only needs weights: pass MODEL.WEIGHTS path/to/model_final.pth")
    if eval_only and not cfg.DATASETS.TEST:
        raise UserError("--eval-only with an empty DATASETS.TEST evaluates nothing: name the datasets to "
                        "evaluate, e.g. DATASETS.TEST \"('mine_val',)\"")
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other: --resume continues the run in "
                        "OUTPUT_DIR, --overwrite deletes it; pass one")
    check_device(cfg, procs_per_machine, dist_backend)
    if cfg.DATASETS.TEST:
        resolve_backend(cfg.TEST.EVAL_BACKEND)  # an unknown or missing backend, before training for hours
    if not eval_only:
        check_solver(cfg)
        check_batch_split(cfg, world_size)
        check_batch_dependent_norms(cfg, cfg.SOLVER.IMS_PER_BATCH // world_size, world_size)
    check_output_dir_writable(cfg.OUTPUT_DIR)
    if check_run_dir and not eval_only:
        resume_from = _check_run_dir(cfg.OUTPUT_DIR, resume=resume, overwrite=overwrite)
    if not check_inputs:
        return prepared
    prepared.warnings.extend(check_datasets(cfg, eval_only=eval_only))
    weights = None
    if cfg.MODEL.WEIGHTS and not resume_from:
        from gn_det.checkpoint import WeightsFileError, read_converted

        try:
            weights = read_converted(cfg.MODEL.WEIGHTS)
        except WeightsFileError as e:
            raise UserError(f"MODEL.WEIGHTS {one_line(e)}") from e
    elif not cfg.MODEL.WEIGHTS and not eval_only and not resume_from and cfg.MODEL.BACKBONE.FREEZE_AT > 0:
        k = cfg.MODEL.BACKBONE.FREEZE_AT
        frozen = "the stem" + ("" if k < 2 else " and res2" if k == 2 else f" and res2..res{k}")
        prepared.warnings.append(
            f"MODEL.BACKBONE.FREEZE_AT={k} freezes {frozen} but MODEL.WEIGHTS is empty: they stay at their random "
            "initialisation. Set MODEL.BACKBONE.FREEZE_AT 0 to train from scratch, or give MODEL.WEIGHTS")
    model = check_model_and_weights(cfg, weights)
    if resume_from:
        check_resume_checkpoint(resume_from, model)
    prepared.weights = weights
    return prepared


# ----------------------------------------------------------------------------- solver
def check_solver(cfg) -> None:
    """SOLVER and TEST values a training run needs, each error naming the key and a valid value."""
    s = cfg.SOLVER
    if s.MAX_ITER <= 0:
        raise UserError(f"SOLVER.MAX_ITER={s.MAX_ITER} trains nothing: it is the number of iterations and must be "
                        "> 0, e.g. SOLVER.MAX_ITER 90000 (or pass --eval-only to evaluate MODEL.WEIGHTS)")
    if s.IMS_PER_BATCH <= 0:
        raise UserError(f"SOLVER.IMS_PER_BATCH={s.IMS_PER_BATCH} must be > 0: it is the number of images per "
                        "step over all processes, e.g. SOLVER.IMS_PER_BATCH 16")
    for key, example in (("BASE_LR", "0.02"), ("MOMENTUM", "0.9"), ("WEIGHT_DECAY", "0.0001"),
                         ("WEIGHT_DECAY_NORM", "0.0"), ("BIAS_LR_FACTOR", "1.0"), ("WARMUP_ITERS", "1000"),
                         ("CHECKPOINT_PERIOD", "5000")):
        if getattr(s, key) < 0:
            raise UserError(f"SOLVER.{key}={getattr(s, key)} must be >= 0, e.g. SOLVER.{key} {example}")
    if not 0 < s.GAMMA:
        raise UserError(f"SOLVER.GAMMA={s.GAMMA} must be > 0 (the LR factor at each of SOLVER.STEPS, e.g. 0.1)")
    steps = list(s.STEPS)
    if steps != sorted(steps) or any(x <= 0 for x in steps):
        raise UserError(f"SOLVER.STEPS={tuple(steps)} must be positive and increasing, e.g. SOLVER.STEPS "
                        f"\"({int(s.MAX_ITER * 2 / 3)}, {int(s.MAX_ITER * 8 / 9)})\"")
    if s.WARMUP_METHOD not in ("linear", "constant"):
        raise UserError(f"SOLVER.WARMUP_METHOD={s.WARMUP_METHOD!r} should be 'linear' or 'constant'")
    if s.WARMUP_ITERS and not 0 < s.WARMUP_FACTOR <= 1:
        raise UserError(f"SOLVER.WARMUP_FACTOR={s.WARMUP_FACTOR} should be in (0, 1] (the LR starts at BASE_LR x it)")
    if s.CLIP_GRADIENTS.ENABLED and s.CLIP_GRADIENTS.CLIP_TYPE not in ("norm", "value"):
        raise UserError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE={s.CLIP_GRADIENTS.CLIP_TYPE!r} should be 'norm' or 'value'")
    if cfg.TEST.EVAL_PERIOD < 0:
        raise UserError(f"TEST.EVAL_PERIOD={cfg.TEST.EVAL_PERIOD} must be >= 0 (0 = evaluate after the last step only)")
    if cfg.DATALOADER.NUM_WORKERS < 0:
        raise UserError(f"DATALOADER.NUM_WORKERS={cfg.DATALOADER.NUM_WORKERS} must be >= 0 (0 = load in the "
                        "training process)")


def check_batch_split(cfg, world_size: int) -> None:
    """SOLVER.IMS_PER_BATCH is the total over processes: it must split evenly."""
    total = cfg.SOLVER.IMS_PER_BATCH
    if total <= 0 or total % world_size:
        raise UserError(f"SOLVER.IMS_PER_BATCH={total} is not divisible by the number of processes "
                        f"({world_size}); set SOLVER.IMS_PER_BATCH to a multiple of {world_size} or change "
                        "--num-gpus/--num-machines")


# ----------------------------------------------------------------------------- OUTPUT_DIR
def check_output_dir_writable(output_dir: str) -> None:
    """OUTPUT_DIR exists as a writable directory, or could be created: without creating anything."""
    path = os.path.abspath(output_dir)
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    reason = None
    if not os.path.isdir(probe):
        reason = f"'{probe}' is a file" if probe != path else "it is a file"
    elif not os.access(probe, os.W_OK | os.X_OK):
        reason = f"no write permission on '{probe}'"
    if reason:
        raise UserError(f"OUTPUT_DIR '{output_dir}' is not writable ({reason}); pass a writable directory, e.g. "
                        "OUTPUT_DIR ./output")


def run_files(output_dir: str, patterns: Sequence[str] = _RUN_PATTERNS) -> List[str]:
    """Names in ``output_dir`` a training run writes (of ``patterns``), sorted."""
    found = set()
    for pattern in patterns:
        found.update(os.path.basename(p) for p in glob.glob(os.path.join(glob.escape(output_dir), pattern)))
    return sorted(found)


def _check_run_dir(output_dir: str, *, resume: bool, overwrite: bool) -> Optional[str]:
    """Refuse to start a fresh run over another run's checkpoints; with --resume, the path of the
    checkpoint that last_checkpoint names (None when OUTPUT_DIR holds no checkpoint: a fresh start)."""
    checkpoints = run_files(output_dir, _CHECKPOINT_PATTERNS)
    if resume:
        path = last_checkpoint_file(output_dir)
        if path is None and checkpoints:  # a fresh start would overwrite them: say which one to resume from
            marker = os.path.join(output_dir, LAST_CHECKPOINT)
            raise UserError(f"--resume: OUTPUT_DIR '{output_dir}' holds {_shown(checkpoints)} but no "
                            f"last_checkpoint naming the one to resume from; write its name into {marker} "
                            f"(e.g. {checkpoints[-1]}), or pass --overwrite instead of --resume to start over")
        return path
    if checkpoints and not overwrite:
        raise UserError(f"OUTPUT_DIR '{output_dir}' holds another run ({_shown(checkpoints)}): pass --resume to "
                        "continue it, --overwrite to delete it and start over, or another OUTPUT_DIR")
    return None


def last_checkpoint_file(output_dir: str) -> Optional[str]:
    """The checkpoint OUTPUT_DIR/last_checkpoint names (None without last_checkpoint); UserError if it is gone."""
    marker = os.path.join(output_dir, LAST_CHECKPOINT)
    if not os.path.isfile(marker):
        return None
    with open(marker, encoding="utf-8") as f:
        name = f.read().strip()
    path = os.path.join(output_dir, name)
    if not os.path.isfile(path):
        raise UserError(f"--resume: {marker} names '{name}', which does not exist in {output_dir}; restore "
                        "the file, or point last_checkpoint at another model_*.pth there")
    return path


def _shown(names: Sequence[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def clean_output_dir(output_dir: str) -> List[str]:
    """Delete what an earlier run left in ``output_dir`` (checkpoints, metrics.json, event files,
    logs, config.yaml, inference/); other files stay. Returns the names removed."""
    removed = run_files(output_dir)
    for name in removed:
        path = os.path.join(output_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    return removed


# ----------------------------------------------------------------------------- device
def check_device(cfg, procs_per_machine: int = 1, dist_backend: str = "auto") -> None:
    """MODEL.DEVICE names a device this machine has and, on CUDA, each of its ``procs_per_machine``
    processes gets a GPU of its own unless ``dist_backend`` is gloo (gn_det.utils.device.check_processes_per_machine);
    the backend suits the device (gn_det.engine.launch.check_backend)."""
    try:
        backend = check_backend(dist_backend, cfg.MODEL.DEVICE)
        check_processes_per_machine(cfg.MODEL.DEVICE, procs_per_machine, backend)
    except ValueError as e:
        raise UserError(str(e)) from None


# ----------------------------------------------------------------------------- datasets
def check_datasets(cfg, *, eval_only: bool) -> List[str]:
    """Every dataset the run reads: registered, loadable (COCO JSON, image files present and readable),
    with MODEL.ROI_HEADS.NUM_CLASSES categories; the training set non-empty. Returns warnings."""
    from gn_det.data import DatasetCatalog, MetadataCatalog, register_from_cfg

    register_from_cfg(cfg)
    if not eval_only and not cfg.DATASETS.TRAIN:
        raise UserError("DATASETS.TRAIN is empty: name the datasets to train on, e.g. DATASETS.TRAIN "
                        "\"('mine_train',)\" with --register-coco mine_train JSON IMAGE_ROOT")
    used: List[Tuple[str, str]] = [] if eval_only else [("DATASETS.TRAIN", n) for n in cfg.DATASETS.TRAIN]
    used += [("DATASETS.TEST", n) for n in cfg.DATASETS.TEST]
    warnings: List[str] = []
    classes: Dict[str, List[str]] = {}
    train_images = 0
    for key, name in used:
        if name not in DatasetCatalog:
            raise UserError(f"{key} names dataset '{name}', which is not registered (registered: "
                            f"{', '.join(DatasetCatalog.list())}); register it with --register-coco {name} JSON "
                            "IMAGE_ROOT or DATASETS.REGISTER_COCO")
        dicts = DatasetCatalog.get(name)  # reads the JSON, checks its structure and that every image exists
        if not dicts:
            raise UserError(f"dataset '{name}' ({key}) has no images{_json_of(name)}: add images to it or name "
                            f"another dataset in {key}")
        check_image_headers(dicts, name)
        meta = MetadataCatalog.get(name)
        names = list(meta.get("thing_classes") or [])
        classes[name] = names
        want = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        if names and len(names) != want:
            raise UserError(f"MODEL.ROI_HEADS.NUM_CLASSES={want} but dataset '{name}' has {len(names)} categories "
                            f"({_short(names)}); set MODEL.ROI_HEADS.NUM_CLASSES {len(names)}")
        if key == "DATASETS.TRAIN":
            train_images += sum(1 for d in dicts if not cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS or _has_instances(d))
    if not eval_only and train_images == 0:
        raise UserError(f"DATASETS.TRAIN={tuple(cfg.DATASETS.TRAIN)} has no image with a (non-crowd) annotation "
                        "to train on; annotate some, or set DATALOADER.FILTER_EMPTY_ANNOTATIONS False")
    train = [n for k, n in used if k == "DATASETS.TRAIN"]
    if len({tuple(classes[n]) for n in train}) > 1:
        raise UserError("the datasets of DATASETS.TRAIN have different categories ("
                        + "; ".join(f"{n}: {_short(classes[n])}" for n in train) + "); train on datasets that share them")
    for name in cfg.DATASETS.TEST:
        if train and classes.get(name) and classes[train[0]] and classes[name] != classes[train[0]]:
            warnings.append(f"DATASETS.TEST '{name}' names its categories {_short(classes[name])}, DATASETS.TRAIN "
                            f"'{train[0]}' {_short(classes[train[0]])}: labels are matched by position")
    return warnings


def _has_instances(dataset_dict: dict) -> bool:
    return any(not a.get("iscrowd", 0) for a in dataset_dict.get("annotations", []))


def _json_of(name: str) -> str:
    from gn_det.data import MetadataCatalog

    json_file = MetadataCatalog.get(name).get("json_file")
    return f" ({json_file})" if json_file else ""


def _short(names: Sequence[str], n: int = 6) -> str:
    return ", ".join(map(str, names[:n])) + (f", ... {len(names) - n} more" if len(names) > n else "")


def check_image_headers(dicts: Sequence[dict], dataset_name: str) -> None:
    """Every image file opens as an image (header only: cheap) whose size, after EXIF rotation, is
    the height x width its dataset entry declares."""
    from PIL import Image, UnidentifiedImageError

    for d in dicts:
        path = d["file_name"]
        try:
            with Image.open(path) as img:
                w, h = img.size
                orientation = img.getexif().get(0x0112, 1)  # EXIF Orientation; 5-8 swap width and height
        except FileNotFoundError:
            raise UserError(f"image file '{path}' of dataset '{dataset_name}' (image id {d.get('image_id')}) does "
                            "not exist") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise UserError(f"image file '{path}' of dataset '{dataset_name}' (image id {d.get('image_id')}) is "
                            f"not a readable image ({one_line(e)}); replace it or remove it from the JSON") from None
        if orientation in (5, 6, 7, 8):
            w, h = h, w
        if (d.get("height"), d.get("width")) not in ((None, None), (h, w)):
            raise UserError(f"image file '{path}' of dataset '{dataset_name}' (image id {d.get('image_id')}) is "
                            f"{h}x{w} (HxW) but its JSON entry says {d['height']}x{d['width']}; fix the JSON")


# ----------------------------------------------------------------------------- model and weights
def check_model_and_weights(cfg, weights: Optional[Tuple[Any, Any]]) -> torch.nn.Module:
    """Build the model (meta device: shapes only, no memory, no init cost) so that every norm checks
    its channels; with ``weights``, check that some of its tensors fit the model. Returns the model."""
    from gn_det.checkpoint import LoadReport, WeightsFileError
    from gn_det.checkpoint.matching import match_weights

    model = _build_shapes_only(cfg)
    if weights is None:
        return model
    converted, fmt = weights
    report = LoadReport(path=cfg.MODEL.WEIGHTS, format=fmt)
    if not match_weights(model, converted, report):
        raise WeightsFileError(f"MODEL.WEIGHTS '{cfg.MODEL.WEIGHTS}' (format '{fmt.name}'): none of its "
                               f"{len(converted.tensors)} tensors fits the model; check MODEL.WEIGHTS and the config")
    return model


def check_resume_checkpoint(path: str, model: torch.nn.Module) -> None:
    """The training checkpoint --resume will load is readable and its "model" state dict has exactly
    the model's names and shapes (what the strict ``load_state_dict`` of a resume needs)."""
    from gn_det.checkpoint import WeightsFileError, read_weights_file

    fix = (f"resume with the config of that run ({os.path.join(os.path.dirname(path), 'config.yaml')}, without "
           "overrides that change the model), point last_checkpoint at another checkpoint, or pass --overwrite "
           "instead of --resume to start over")
    try:
        data = read_weights_file(path)
    except WeightsFileError as e:
        raise UserError(f"--resume: {one_line(e)}; point {LAST_CHECKPOINT} at an intact checkpoint, or pass "
                        "--overwrite instead of --resume to start over") from None
    state = data.get("model") if isinstance(data, dict) else None
    if not isinstance(state, dict) or "iteration" not in data:
        raise UserError(f"--resume: {path} is not a training checkpoint (no 'model' and 'iteration'); point "
                        f"{LAST_CHECKPOINT} at a model_*.pth written by tools/train_net.py, or pass it as "
                        "MODEL.WEIGHTS without --resume")
    want = {k: tuple(v.shape) for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    have = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    resized = [f"{k}: {have[k]} in the checkpoint, {want[k]} in the model" for k in sorted(set(want) & set(have))
               if have[k] != want[k]]
    problems = [f"{len(items)} {label} (first: {items[0]})" for label, items in
                (("missing from the checkpoint", missing), ("not in the model", unexpected),
                 ("of another shape", resized)) if items]
    if problems:
        raise UserError(f"--resume: {path} does not fit the model of this config ({'; '.join(problems)}); {fix}")


def _build_shapes_only(cfg) -> torch.nn.Module:
    """``build_model`` on the meta device (parameters without storage); on the CPU if a module's
    construction needs real values. Errors in the config (ValueError/KeyError) propagate."""
    from gn_det.modeling import build_model

    trial = cfg.clone()
    trial.defrost()
    trial.MODEL.DEVICE = "meta"
    try:
        with torch.device("meta"):
            return build_model(trial)
    except (NotImplementedError, RuntimeError) as e:
        logger.debug("building on the meta device failed (%s); building on the CPU", e)
    trial.MODEL.DEVICE = "cpu"
    return build_model(trial)
