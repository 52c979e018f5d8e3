"""Under torchrun the process group is followed by a barrier (issue 21, defect 5), --dist-backend picks
gloo/nccl, and the running statistics of batch-dependent norms are averaged over processes (defect 2)."""
import importlib
import os
import sys

import pytest
import torch
from torch import nn

from gn_det.engine.launch import check_backend
from gn_det.engine.precise_bn import average_running_stats, running_stat_layers
from gn_det.layers import GNOptions, NormOptions, get_norm
from gn_det.utils.device import check_processes_per_machine

launch_mod = importlib.import_module("gn_det.engine.launch")  # gn_det.engine's `launch` is the function

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "layers"))
from two_ranks import run_two_ranks  # noqa: E402


def test_torchrun_init_is_followed_by_a_barrier(monkeypatch):
    """NCCL connects lazily: without a barrier rank 1 opened log.txt.rank1 while rank 0's --overwrite
    clean-up still ran. The barrier must come after init, before main_func."""
    calls = []
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    state = {"init": False}
    monkeypatch.setattr(launch_mod.dist, "is_initialized", lambda: state["init"])
    monkeypatch.setattr(launch_mod.dist, "is_available", lambda: True)

    def init(**kw):
        state["init"] = True
        calls.append(("init", kw["backend"]))

    monkeypatch.setattr(launch_mod.dist, "init_process_group", init)
    monkeypatch.setattr(launch_mod.dist, "barrier", lambda *a, **k: calls.append(("barrier",)))
    monkeypatch.setattr(launch_mod.dist, "destroy_process_group", lambda: calls.append(("destroy",)))
    launch_mod.launch(lambda: calls.append(("main",)), 1, device="cpu")
    assert calls == [("init", "gloo"), ("barrier",), ("main",), ("destroy",)]


def test_dist_backend_choices():
    assert check_backend("auto", "cpu") is None and check_backend(None, "cpu") is None
    assert check_backend("gloo", "cpu") == "gloo"
    with pytest.raises(ValueError, match="--dist-backend nccl needs CUDA processes"):
        check_backend("nccl", "cpu")
    with pytest.raises(ValueError, match="not a backend"):
        check_backend("mpi", "cpu")


def test_gloo_lets_processes_share_one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="NCCL needs one GPU per process"):
        check_processes_per_machine("cuda:0", 2)
    check_processes_per_machine("cuda:0", 2, "gloo")  # two processes on GPU 0 over gloo
    with pytest.raises(ValueError, match="cuda:0 to share GPU 0 over gloo"):
        check_processes_per_machine("cuda", 2, "gloo")


def _model():
    opts = NormOptions(GNOptions(num_groups=2))
    return nn.Sequential(nn.Conv2d(3, 4, 1), get_norm("BN", 4, opts), get_norm("GN", 4, opts),
                         get_norm("SN", 4, opts), get_norm("FrozenBN", 4, opts))


def _average_worker(rank, port, queue):
    import traceback

    import torch.distributed as dist
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
        torch.manual_seed(0)
        model = _model().train()
        x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(rank)) * (rank + 1) + rank
        model(x)  # each rank's statistics follow its own batch
        before = [b.clone() for m in running_stat_layers(model) for b in (m.running_mean, m.running_var)]
        n = average_running_stats(model)
        after = [b.clone() for m in running_stat_layers(model) for b in (m.running_mean, m.running_var)]
        gathered = [None, None]
        dist.all_gather_object(gathered, (before, after))
        (b0, a0), (b1, a1) = gathered
        assert n == 2  # BN and SN's BN branch; GN and FrozenBN have no batch statistics to average
        assert not all(torch.equal(x, y) for x, y in zip(b0, b1))
        for x0, x1, y0, y1 in zip(b0, b1, a0, a1):
            assert torch.equal(y0, y1)
            assert torch.allclose(y0, (x0 + x1) / 2, rtol=0, atol=1e-6)
        queue.put((rank, 0, None))
    except Exception:
        queue.put((rank, 0, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_running_statistics_averaged_over_two_gloo_processes():
    out = run_two_ranks(_average_worker, 1, timeout=120)
    assert out == {(0, 0): None, (1, 0): None}, out
