"""SyncBatchRenorm2d in a real 2-process gloo group equals BatchRenorm2d on the concatenated batch.

Both ranks run every case in one spawn; each checks its slice of the output and input gradient, the
all-reduced affine gradients, the running statistics and the step count against a one-process float64
BatchRenorm2d on the whole batch (clip limits tight enough that r and d clip on some channels), over
two steps, and reports failures back. A hang fails after a timeout.
"""
import traceback

import pytest
import torch
import torch.distributed as dist

from gn_det.layers.batch_renorm import BatchRenorm2d, SyncBatchRenorm2d
from two_ranks import run_two_ranks

CASES = {"3+1": (3, 1), "2+0": (2, 0), "0+2": (0, 2), "1+1": (1, 1)}  # images per rank
SCHEDULE = dict(momentum=0.3, final_rmax=1.4, final_dmax=0.3, warmup_steps=1, rmax_steps=1, dmax_steps=1)
TIMEOUT_S = 90


def _build(cls, seed):
    g = torch.Generator().manual_seed(seed)
    norm = cls(5, **SCHEDULE).double().train()
    with torch.no_grad():
        for t in (norm.weight, norm.bias, norm.running_mean):
            t.copy_(torch.randn(t.shape, dtype=torch.float64, generator=g))
        norm.running_var.uniform_(0.3, 4.0, generator=g)
    return norm


def _check_case(rank, sizes, seed):
    g = torch.Generator().manual_seed(seed)
    total = sum(sizes)
    x_all = torch.randn(total, 5, 4, 3, dtype=torch.float64, generator=g) * 2 + 1
    dy_all = torch.randn(total, 5, 4, 3, dtype=torch.float64, generator=g)
    start = sum(sizes[:rank])
    sl = slice(start, start + sizes[rank])
    x = x_all[sl].clone().requires_grad_()
    norm, ref = _build(SyncBatchRenorm2d, seed), _build(BatchRenorm2d, seed)
    x_ref = x_all.clone().requires_grad_()
    tol = dict(rtol=1e-9, atol=1e-9)
    for step in range(2):  # step 0: plain BN (warm-up), step 1: r and d clipped at 1.4 and 0.3
        y, y_ref = norm(x), ref(x_ref)
        (y * dy_all[sl]).sum().backward()
        (y_ref * dy_all).sum().backward()
        torch.testing.assert_close(y, y_ref[sl], **tol)
        torch.testing.assert_close(x.grad, x_ref.grad[sl], **tol)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            torch.testing.assert_close(getattr(norm, name), getattr(ref, name), **tol, msg=name)
    for p, q in zip(norm.parameters(), ref.parameters()):
        grad = p.grad.clone()
        dist.all_reduce(grad)  # DDP's sum of the per-process shares
        torch.testing.assert_close(grad, q.grad, **tol)
    assert (norm.rmax, norm.dmax) == pytest.approx((1.4, 0.3))


def _worker(rank, port, queue):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        for i, (case, sizes) in enumerate(CASES.items()):
            try:
                _check_case(rank, sizes, seed=i)
                queue.put((rank, case, None))
            except AssertionError:
                queue.put((rank, case, traceback.format_exc(limit=3)))
                dist.barrier()  # keep the collectives of the next case aligned
    finally:
        dist.destroy_process_group()



@pytest.fixture(scope="module")
def results():
    return run_two_ranks(_worker, len(CASES), TIMEOUT_S)


@pytest.mark.parametrize("case", list(CASES))
def test_sync_brn_equals_single_process_brn_on_concatenated_batch(results, case):
    assert "error" not in results, results.get("error")
    for rank in range(2):
        assert results[rank, case] is None, f"rank {rank}:\n{results[rank, case]}"
