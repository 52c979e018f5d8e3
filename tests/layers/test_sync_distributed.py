"""SyncBN and SyncSN in a real 2-process gloo group equal BN / SN over the concatenated batch.

Both ranks run every case in one spawn (a few seconds); each rank checks its slice of the output and
input gradient, the all-reduced affine gradients and the running statistics against a one-process
float64 reference on the whole batch, and reports failures back. A hang fails after a timeout.
"""
import socket
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gn_det.layers import BNOptions, NormOptions, SNOptions, get_norm

CASES = {  # name: (norm, samples per rank)
    "SyncBN-3+1": ("SyncBN", (3, 1)),
    "SyncBN-2+0": ("SyncBN", (2, 0)),
    "SyncSN-3+1": ("SyncSN", (3, 1)),
    "SyncSN-0+2": ("SyncSN", (0, 2)),
}
REFERENCE = {"SyncBN": "BN", "SyncSN": "SN"}
TIMEOUT_S = 90


def _build(name, seed):
    torch.manual_seed(seed)
    norm = get_norm(name, 5, NormOptions(BNOptions(momentum=0.3), SNOptions(momentum=0.3))).double().train()
    with torch.no_grad():
        for p in norm.parameters():
            p.copy_(torch.randn(p.shape, dtype=torch.float64))
        norm.running_mean.copy_(torch.randn(5, dtype=torch.float64))
    return norm


def _check_case(rank, name, sizes, seed):
    g = torch.Generator().manual_seed(seed)
    total = sum(sizes)
    x_all = torch.randn(total, 5, 4, 3, dtype=torch.float64, generator=g) * 2 + 1
    dy_all = torch.randn(total, 5, 4, 3, dtype=torch.float64, generator=g)
    start = sum(sizes[:rank])
    x = x_all[start:start + sizes[rank]].clone().requires_grad_()
    norm = _build(name, seed)
    for step in range(2):  # the second step also checks that running statistics stayed in sync
        y = norm(x)
        (y * dy_all[start:start + sizes[rank]]).sum().backward()
    grads = [p.grad.clone() for p in norm.parameters()]
    for gr in grads:
        dist.all_reduce(gr)

    ref = _build(REFERENCE[name], seed)
    x_ref = x_all.clone().requires_grad_()
    for step in range(2):
        y_ref = ref(x_ref)
        (y_ref * dy_all).sum().backward()
    sl = slice(start, start + sizes[rank])
    tol = dict(rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(y, y_ref[sl], **tol)
    torch.testing.assert_close(x.grad, x_ref.grad[sl], **tol)
    for gr, p in zip(grads, ref.parameters()):
        torch.testing.assert_close(gr, p.grad, **tol)
    torch.testing.assert_close(norm.running_mean, ref.running_mean, **tol)
    torch.testing.assert_close(norm.running_var, ref.running_var, **tol)


def _worker(rank, port, queue):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        for i, (case, (name, sizes)) in enumerate(CASES.items()):
            try:
                _check_case(rank, name, sizes, seed=i)
                queue.put((rank, case, None))
            except AssertionError:
                queue.put((rank, case, traceback.format_exc(limit=3)))
                dist.barrier()  # keep the collectives of the next case aligned
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(rank, port, queue), daemon=True) for rank in range(2)]
    for p in procs:
        p.start()
    out = {}
    try:
        for _ in range(2 * len(CASES)):
            rank, case, err = queue.get(timeout=TIMEOUT_S)
            out[rank, case] = err
    except Exception as e:  # queue.Empty: a rank hung or died
        out["error"] = f"distributed workers did not report within {TIMEOUT_S}s: {e!r}"
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_sync_norm_equals_single_process_norm_on_concatenated_batch(results, case):
    assert "error" not in results, results.get("error")
    for rank in range(2):
        assert results[rank, case] is None, f"rank {rank}:\n{results[rank, case]}"
