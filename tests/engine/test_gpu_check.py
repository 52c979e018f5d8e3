"""tools/gpu_check.sh, the one-command GPU check, runs on a CPU-only machine with --tiny: the CPU-possible
stages run (the cuda tests are collected and skipped, the benchmarks' CPU forms run) and the summary
reports the CUDA parts as skipped instead of crashing."""
import os
import subprocess

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_gpu_check_tiny_on_this_machine(tmp_path):
    out = tmp_path / "gpu_check"
    proc = subprocess.run(["bash", "tools/gpu_check.sh", str(out), "--tiny"], cwd=REPO, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in summary.splitlines() if line.startswith("| ")}
    assert {"env", "cuda_tests", "quick_suite", "train_2proc_gloo", "bench_norms_float32", "bench_norms_float16",
            "bench_step", "total"} <= set(rows)
    assert "FAILED" not in summary
    assert "2 processes over gloo on " in rows["train_2proc_gloo"] and ": passed" in rows["train_2proc_gloo"]
    assert all(line.split(" | ")[2].strip().isdigit() for name, line in rows.items() if name != "stage")  # seconds
    step = (out / "bench_step.md").read_text()
    assert step.count("tiny/mask_rcnn_R_18_FPN_gn.yaml") == 2 and "bfloat16 amp" in step
    if not torch.cuda.is_available():
        assert " skipped" in rows["cuda_tests"] and " passed" not in rows["cuda_tests"]
        assert "CUDA figures skipped: no CUDA" in rows["bench_step"]


def test_pytest_ini_names_the_gpu_check_script_that_exists():
    import configparser
    import re

    ini = configparser.ConfigParser()
    ini.read(os.path.join(REPO, "pytest.ini"))
    named = re.findall(r"\S+/gpu_check\.sh", ini["pytest"]["markers"])
    assert named and all(os.path.isfile(os.path.join(REPO, path)) for path in named), named


def _script_default(name):
    import re

    text = open(os.path.join(REPO, "tools", "gpu_check.sh"), encoding="utf-8").read()
    return int(re.search(r"\$\{" + name + r":-(\d+)\}", text).group(1))


def test_default_plan_fits_one_device_call():
    """Issue 21, defect 9: one device call runs at most 600 s; the default plan must end within 8 minutes:
    no stage may outlive the call, and no benchmark starts after the budget or runs past 8 minutes."""
    stage, bench, budget = (_script_default(n) for n in ("GPU_CHECK_STAGE_TIMEOUT", "GPU_CHECK_BENCH_TIMEOUT",
                                                         "GPU_CHECK_BUDGET"))
    assert stage <= 300 and budget + bench <= 480


def test_output_goes_to_the_device_tools_out_by_default(tmp_path):
    """With $OUT set (the device machine) and no OUT_DIR the summary is written under $OUT/gpu_check; a bad
    option exits 2 before writing anything."""
    env = dict(os.environ, OUT=str(tmp_path))
    proc = subprocess.run(["bash", "tools/gpu_check.sh", "--bogus"], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown option --bogus" in proc.stderr
    text = open(os.path.join(REPO, "tools", "gpu_check.sh"), encoding="utf-8").read()
    assert 'if [ -n "${OUT:-}" ]; then DEST="$OUT/gpu_check"' in text and "--full" in text
