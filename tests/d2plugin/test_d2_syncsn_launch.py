"""SyncSN from detectron2's get_norm in 2 processes under detectron2's launch (CPU, gloo) equals SN over the union.

detectron2's DefaultTrainer itself cannot run 2 CPU processes (its create_ddp_model passes device_ids, which
DDP refuses for CPU modules), so the multi-process check is the norm under detectron2's launch."""
import os
import subprocess
import sys

import pytest

from d2_common import SKIP_REASON

pytest.importorskip("detectron2", reason=SKIP_REASON)

import torch  # noqa: E402

from gn_det.layers import SwitchNorm2d  # noqa: E402


def test_syncsn_under_detectron2_launch_pools_both_processes(tmp_path):
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run([sys.executable, os.path.join(here, "syncsn_launch.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert all(r["type"] == "SyncSwitchNorm2d" and r["world"] == 2 for r in ranks)
    torch.manual_seed(0)
    reference = SwitchNorm2d(8)  # same initial parameters as each rank's SyncSN
    reference.train()
    union = torch.cat([r["x"] for r in ranks])
    expected = reference(union)
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), expected.detach(), rtol=1e-5, atol=1e-5)
    for r in ranks:
        torch.testing.assert_close(r["running_mean"], reference.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r["running_var"], reference.running_var, rtol=1e-5, atol=1e-6)
