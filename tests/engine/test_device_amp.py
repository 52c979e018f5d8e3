"""Devices and mixed precision: MODEL.DEVICE resolution (CUDA faked where CI has none), the launch
backend, SOLVER.AMP on CPU (bfloat16 autocast) and on CUDA (float16 + GradScaler), train_net recording
the device used, and the GPU-only checks (marked cuda) of the same paths.
"""
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from engine_toys import RandomLoader, ToyDetector, shapes64_register_flags
from gn_det.engine.launch import default_backend, launch
from gn_det.engine.train_loop import SimpleTrainer, resolve_amp_dtype
from gn_det.utils.device import resolve_device

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_mask_rcnn.yaml")
NO_CUDA = ("MODEL.DEVICE='cuda' but CUDA is not available on this machine (torch {}); set MODEL.DEVICE cpu "
           "or auto, or install a CUDA build of torch")


@pytest.fixture
def fake_gpus(monkeypatch):
    """A machine with 2 CUDA devices, as far as device resolution can tell."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


# ------------------------------------------------------------------ device resolution
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine")
def test_cpu_machine_resolves_auto_to_cpu_and_refuses_cuda_in_one_line():
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu", local_rank=3) == torch.device("cpu")
    for spec in ("cuda", "cuda:0"):
        with pytest.raises(ValueError) as e:
            resolve_device(spec)
        assert str(e.value) == NO_CUDA.format(torch.__version__).replace("'cuda'", repr(spec))
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("spec, local_rank, expected", [
    ("auto", 0, "cuda:0"), ("auto", 1, "cuda:1"), ("cuda", 1, "cuda:1"), ("CUDA:1", 0, "cuda:1"),
    ("cpu", 1, "cpu"),
])
def test_gpu_machine_gives_each_process_its_own_gpu(fake_gpus, spec, local_rank, expected):
    assert resolve_device(spec, local_rank) == torch.device(expected)


def test_local_rank_comes_from_the_environment(fake_gpus, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cuda:1")


@pytest.mark.parametrize("spec, local_rank, msg", [
    ("cuda:2", 0, "MODEL.DEVICE='cuda:2' needs CUDA device 2 (local rank 0) but only 2 are visible; use at most "
                  "--num-gpus 2 or set MODEL.DEVICE to a visible device"),
    ("auto", 2, "MODEL.DEVICE='auto' needs CUDA device 2 (local rank 2) but only 2 are visible"),
    ("gpu", 0, "MODEL.DEVICE='gpu' is not a device; use 'auto' (GPU if present, else CPU), 'cpu', 'cuda' or 'cuda:N'"),
])
def test_bad_device_is_one_line(fake_gpus, spec, local_rank, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        resolve_device(spec, local_rank)


def test_backend_follows_the_device(fake_gpus):
    assert default_backend("auto") == "nccl"
    assert default_backend("cuda") == "nccl"
    assert default_backend("cpu") == "gloo"  # a CPU run on a GPU machine: gloo, not NCCL


def test_backend_is_gloo_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_backend("auto") == "gloo"


def test_more_processes_than_gpus_is_refused_before_spawning(fake_gpus, monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match=r"^--num-gpus 3 starts 3 processes on this machine, one per GPU, but only 2 "
                                         r"CUDA device\(s\) are visible; pass --num-gpus 2, or MODEL.DEVICE cpu for CPU "
                                         r"processes$"):
        launch(print, 3, device="auto")
    with pytest.raises(ValueError, match=r"^MODEL.DEVICE='cuda:1' puts every process on GPU 1, but 2 processes"):
        launch(print, 2, device="cuda:1")


# ------------------------------------------------------------------ SOLVER.AMP
CPU, GPU = torch.device("cpu"), torch.device("cuda", 0)


@pytest.mark.parametrize("enabled, dtype, device, expected", [
    (False, "", GPU, None), (True, "", GPU, torch.float16), (True, "", CPU, torch.bfloat16),
    (True, "bfloat16", CPU, torch.bfloat16), (True, "FLOAT16", GPU, torch.float16),
])
def test_amp_dtype_per_device(enabled, dtype, device, expected):
    assert resolve_amp_dtype(enabled, dtype, device) is expected


@pytest.mark.parametrize("dtype, device, msg", [
    ("float16", CPU, "SOLVER.AMP.DTYPE=float16 needs CUDA but MODEL.DEVICE is cpu; use bfloat16 (or '') on CPU, "
                     "or set SOLVER.AMP.ENABLED False"),
    ("half", CPU, "SOLVER.AMP.DTYPE='half' is not a mixed-precision type; use '' (float16 on CUDA, bfloat16 on "
                  "CPU), 'float16' or 'bfloat16'"),
])
def test_bad_amp_dtype_is_one_line(dtype, device, msg):
    with pytest.raises(ValueError) as e:
        resolve_amp_dtype(True, dtype, device)
    assert str(e.value) == msg


def _toy_trainer(device, amp, amp_dtype=""):
    torch.manual_seed(0)
    model = ToyDetector().to(device)
    seen = []
    model.conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = ([(img.to(device), {k: v.to(device) for k, v in t.items()}) for img, t in batch]
              for batch in RandomLoader(seed=0))
    return SimpleTrainer(model, loader, opt, amp=amp, amp_dtype=amp_dtype), seen


def test_amp_on_cpu_runs_bfloat16_autocast_without_a_scaler():
    trainer, seen = _toy_trainer("cpu", amp=True)
    assert trainer.amp_dtype is torch.bfloat16 and trainer.grad_scaler is None
    trainer.train(0, 3)
    assert seen == [torch.bfloat16] * 3  # the conv ran under autocast
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in trainer.model.parameters())
    assert all(t.dtype == torch.float32 for t in trainer.model.bn.state_dict().values() if t.is_floating_point())


def test_without_amp_the_forward_stays_float32():
    trainer, seen = _toy_trainer("cpu", amp=False)
    trainer.train(0, 2)
    assert seen == [torch.float32] * 2 and trainer.grad_scaler is None


# ------------------------------------------------------------------ train_net
def _load_train_net():
    spec = importlib.util.spec_from_file_location("train_net_device_test", TRAIN_NET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    flags, _ = shapes64_register_flags(tmp_path_factory.mktemp("data") / "shapes64", "dev")
    return flags


def _argv(data, out, *opts):
    return ["--config", CONFIG, *data, "DATASETS.TRAIN", "('dev_train',)", "DATASETS.TEST", "('dev_val',)",
            "OUTPUT_DIR", str(out), *opts]


def _config_yaml(out):
    import yaml

    return yaml.safe_load((out / "config.yaml").read_text())


def test_train_net_records_the_device_used_and_trains_with_cpu_amp(data, tmp_path):
    """Default MODEL.DEVICE 'auto' is written to config.yaml as the device actually used; AMP on CPU is bf16."""
    tn = _load_train_net()
    results = tn.main(tn.default_argument_parser().parse_args(
        _argv(data, tmp_path, "MODEL.DEVICE", "auto", "SOLVER.MAX_ITER", "2", "SOLVER.AMP.ENABLED", "True")))
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert _config_yaml(tmp_path)["MODEL"]["DEVICE"] == expected
    log = (tmp_path / "log.txt").read_text()
    assert ("autocast to torch.float16 on cuda:0 with a GradScaler" if torch.cuda.is_available()
            else "autocast to torch.bfloat16 on cpu") in log
    assert set(results["dev_val"]) == {"bbox", "segm"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine")
def test_train_net_cuda_without_cuda_is_one_line_before_anything_runs(data, tmp_path):
    proc = subprocess.run([sys.executable, TRAIN_NET, *_argv(data, tmp_path / "out", "MODEL.DEVICE", "cuda")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2  # a user's mistake: one line, exit 2 (issue 11's standard), nothing written
    assert proc.stderr.strip() == "train_net.py: error: " + NO_CUDA.format(torch.__version__)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, opts, line", [
    (["--num-gpus", "8"], ["SOLVER.IMS_PER_BATCH", "2"],
     "--num-gpus 8 starts 8 processes on this machine, one per GPU, but only 2 CUDA device(s) are visible; pass "
     "--num-gpus 2, or MODEL.DEVICE cpu for CPU processes"),
    (["--num-gpus", "2"], ["MODEL.DEVICE", "cuda:1"],
     "MODEL.DEVICE='cuda:1' puts every process on GPU 1, but 2 processes run on this machine (--num-gpus 2) and NCCL "
     "needs one GPU per process; set MODEL.DEVICE cuda (each process on the GPU of its local rank; choose the GPUs "
     "with CUDA_VISIBLE_DEVICES), or pass --num-gpus 1"),
])
def test_train_net_refuses_processes_without_a_gpu_each_before_touching_output_dir(
        fake_gpus, data, tmp_path, capsys, monkeypatch, flags, opts, line):
    """On a (faked) 2-GPU machine: 8 processes, or 2 pinned to one GPU, fail in one line before OUTPUT_DIR is
    created, or emptied by --overwrite."""
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    tn = _load_train_net()
    other_run = tmp_path / "other_run"
    other_run.mkdir()
    (other_run / "last_checkpoint").write_text("model_final.pth")
    (other_run / "model_final.pth").write_text("x")
    for out, extra in ((tmp_path / "out", []), (other_run, ["--overwrite"])):
        with pytest.raises(SystemExit) as e:
            tn.invoke_main(flags + extra + _argv(data, out, "MODEL.DEVICE", "auto", *opts))
        assert e.value.code == 2
        assert capsys.readouterr().err == f"train_net.py: error: {line}\n"
    assert sorted(os.listdir(tmp_path)) == ["other_run"]
    assert sorted(os.listdir(other_run)) == ["last_checkpoint", "model_final.pth"]


# ------------------------------------------------------------------ on a GPU (tools/gpu_check.sh)
@pytest.mark.cuda
def test_default_device_is_this_process_gpu():
    """MODEL.DEVICE defaults to 'auto', which is cuda:<local rank> (here 0) on a GPU machine."""
    from gn_det.config import get_cfg
    from gn_det.modeling import build_model

    cfg = get_cfg()
    assert cfg.MODEL.DEVICE == "auto" and resolve_device("auto") == torch.device("cuda", 0)
    cfg.merge_from_file(CONFIG)
    cfg.MODEL.DEVICE = "auto"  # CONFIG pins the CPU for the CPU tests
    model = build_model(cfg)
    assert {p.device for p in model.parameters()} == {torch.device("cuda", 0)}


@pytest.mark.cuda
@pytest.mark.parametrize("amp_dtype, scaled", [("", True), ("bfloat16", False)])
def test_cuda_amp_trains_with_a_scaler_for_float16_only(amp_dtype, scaled):
    if amp_dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    trainer, seen = _toy_trainer("cuda", amp=True, amp_dtype=amp_dtype)
    assert (trainer.grad_scaler is not None) == scaled
    trainer.train(0, 3)
    assert seen == [torch.float16 if scaled else torch.bfloat16] * 3
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in trainer.model.parameters())


def _train_eval_resume(data, tmp_path, train_device, later_env):
    """Train 2 iterations (SyncBN backbone, precise BN, AMP) on ``train_device``, then --eval-only and --resume
    in ``later_env`` with the SAME norm overrides (issue 21, defect 1: without them the resume exits 2, "does
    not fit the model of this config", and the evaluation runs a GN backbone with nothing loaded into its
    norms). Returns (training dir, the trained run's final metrics, the eval-only metrics)."""
    trained = tmp_path / "trained"
    model = ("MODEL.RESNETS.NORM", "SyncBN", "SOLVER.AMP.ENABLED", "True")
    opts = ("MODEL.DEVICE", train_device, "SOLVER.MAX_ITER", "2", "TEST.PRECISE_BN.ENABLED", "True",
            "TEST.PRECISE_BN.NUM_ITER", "2", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", *model)
    proc = subprocess.run([sys.executable, TRAIN_NET, *_argv(data, trained, *opts)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    weights = str(trained / "model_final.pth")
    proc = subprocess.run([sys.executable, TRAIN_NET, "--eval-only",
                           *_argv(data, tmp_path / "eval", "MODEL.WEIGHTS", weights, "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
                                  "0.0", *model)],
                          cwd=REPO, env=later_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _config_yaml(tmp_path / "eval" / "inference")["MODEL"]["DEVICE"] == "cpu"  # eval-only records it there
    log = (tmp_path / "eval" / "log.txt").read_text()
    assert re.search(r"missing \(left at init\)\s*\|\s*0\s*\|", log), log[-2000:]  # every norm loaded
    proc = subprocess.run([sys.executable, TRAIN_NET, "--resume",
                           *_argv(data, trained, "MODEL.DEVICE", "auto", "SOLVER.MAX_ITER", "3", *model)],
                          cwd=REPO, env=later_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.load(trained / "model_final.pth", weights_only=True)["iteration"] == 2
    metrics = [json.loads(line) for line in (trained / "metrics.json").read_text().splitlines()]
    evaluated = json.loads((tmp_path / "eval" / "inference" / "dev_val" / "metrics.json").read_text())
    return trained, metrics, evaluated


@pytest.mark.cuda
def test_gpu_run_checkpoint_evaluates_and_resumes_on_a_cpu_only_machine(data, tmp_path):
    """Train on the GPU, then --eval-only and --resume with CUDA hidden."""
    trained, _, _ = _train_eval_resume(data, tmp_path, "auto", dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert _config_yaml(trained)["MODEL"]["DEVICE"] == "cpu"  # the resumed run's (CUDA hidden)


@pytest.mark.slow
def test_cpu_run_checkpoint_evaluates_and_resumes_with_the_same_overrides(data, tmp_path):
    """The same three runs on CPU: the eval-only AP equals the one printed after training (model_final.pth's
    SyncBN statistics loaded into the SyncBN backbone)."""
    _, metrics, evaluated = _train_eval_resume(data, tmp_path, "cpu", dict(os.environ))
    at_iter_1 = [m for m in metrics if m["iteration"] == 1 and "bbox/AP" in m]
    assert at_iter_1, metrics
    for task in ("bbox", "segm"):
        assert evaluated[task]["AP"] is not None
        assert evaluated[task]["AP"] == pytest.approx(at_iter_1[0][f"{task}/AP"], abs=1e-6)


@pytest.mark.cuda
def test_two_gpu_run_over_nccl(data, tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs (NCCL refuses two processes on one GPU)")
    opts = ("MODEL.DEVICE", "auto", "SOLVER.MAX_ITER", "2", "MODEL.RESNETS.NORM", "SyncBN", "MODEL.FPN.NORM", "SyncBN")
    proc = subprocess.run([sys.executable, TRAIN_NET, "--num-gpus", "2", *_argv(data, tmp_path, *opts)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Rank 0 of 2" in (tmp_path / "log.txt").read_text() and (tmp_path / "log.txt.rank1").is_file()
    assert _config_yaml(tmp_path)["MODEL"]["DEVICE"] == "cuda:0"
    assert (tmp_path / "inference" / "dev_val" / "metrics.json").is_file()


def test_device_key_defaults_to_auto():
    from gn_det.config import get_cfg

    assert get_cfg().MODEL.DEVICE == "auto" and get_cfg().SOLVER.AMP.DTYPE == ""

