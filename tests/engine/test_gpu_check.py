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
    assert {"env", "cuda_tests", "quick_suite", "bench_norms_float32", "bench_norms_float16", "bench_step"} <= set(rows)
    assert "FAILED" not in summary
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
