"""SyncBN and SyncSN in a real 2-process group equal BN / SN over the concatenated batch.

Both ranks run every case in one spawn (a few seconds); each rank checks its slice of the output and
input gradient, the all-reduced affine gradients and the running statistics against a one-process
float64 CPU reference on the whole batch, and reports failures back. A hang fails after a timeout.
Every process, also one with no images, must end with a gradient (zeros, never None) for every
parameter, or DDP would wait for it. The same cases run on CPU over gloo (CI), on one GPU over gloo
with CUDA tensors (NCCL refuses two processes on one GPU) and on two GPUs over NCCL (marked cuda).
"""
import traceback

import pytest
import torch
import torch.distributed as dist

from gn_det.layers import BNOptions, NormOptions, SNOptions, get_norm
from two_ranks import run_two_ranks

CASES = {  # name: (norm, samples per rank, autocast dtype or None)
    "SyncBN-3+1": ("SyncBN", (3, 1), None),
    "SyncBN-2+0": ("SyncBN", (2, 0), None),
    "SyncSN-3+1": ("SyncSN", (3, 1), None),
    "SyncSN-0+2": ("SyncSN", (0, 2), None),
    "SyncBN-3+1-bf16": ("SyncBN", (3, 1), torch.bfloat16),
    "SyncSN-2+0-bf16": ("SyncSN", (2, 0), torch.bfloat16),
}
REFERENCE = {"SyncBN": "BN", "SyncSN": "SN"}
TIMEOUT_S = 90
# float64 agrees to round-off; bfloat16 (8-bit mantissa) to 2e-2 of each tensor's largest value (test_amp.py)
TOL = {None: dict(rtol=1e-9, atol=1e-9), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}
SETUPS = {  # name: (backend, device of rank r)
    "cpu-gloo": ("gloo", lambda r: "cpu"),
    "cuda-gloo-1gpu": ("gloo", lambda r: "cuda:0"),
    "cuda-nccl-2gpu": ("nccl", lambda r: f"cuda:{r}"),
}


def _build(name, seed, dtype=torch.float64):
    torch.manual_seed(seed)
    norm = get_norm(name, 5, NormOptions(BNOptions(momentum=0.3), SNOptions(momentum=0.3))).to(dtype).train()
    with torch.no_grad():
        for p in norm.parameters():
            p.copy_(torch.randn(p.shape, dtype=torch.float64))
        norm.running_mean.copy_(torch.randn(5, dtype=torch.float64))
    return norm


def _check_case(rank, name, sizes, amp, seed, device):
    g = torch.Generator().manual_seed(seed)
    total = sum(sizes)
    x_all = torch.randn(total, 5, 4, 3, dtype=torch.float64, generator=g) * 2 + 1
    dy_all = torch.randn(total, 5, 4, 3, dtype=torch.float64, generator=g)
    if amp is not None:  # the low-precision input autocast would hand the norm; the reference gets the same values
        x_all = x_all.to(amp).double()
    start = sum(sizes[:rank])
    dtype = torch.float64 if amp is None else torch.float32
    x = x_all[start:start + sizes[rank]].to(device, amp or dtype).requires_grad_()
    dy = dy_all[start:start + sizes[rank]].to(device)
    norm = _build(name, seed, dtype).to(device)
    for step in range(2):  # the second step also checks that running statistics stayed in sync
        with torch.autocast(torch.device(device).type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            y = norm(x)
        assert y.dtype == x.dtype
        (y.double() * dy).sum().backward()
    missing = [n for n, p in norm.named_parameters() if p.grad is None]
    assert not missing, f"rank {rank} has no gradient for {missing}"
    grads = [p.grad.clone() for p in norm.parameters()]
    for gr in grads:
        dist.all_reduce(gr)
    y, grads, x_grad = y.double().cpu(), [gr.double().cpu() for gr in grads], x.grad.double().cpu()
    stats = [norm.running_mean.double().cpu(), norm.running_var.double().cpu()]

    ref = _build(REFERENCE[name], seed)
    x_ref = x_all.clone().requires_grad_()
    for step in range(2):
        y_ref = ref(x_ref)
        (y_ref * dy_all).sum().backward()
    sl = slice(start, start + sizes[rank])
    tol = TOL[amp]
    torch.testing.assert_close(y, y_ref[sl].detach(), **tol)
    torch.testing.assert_close(x_grad, x_ref.grad[sl], **tol)
    for gr, p in zip(grads, ref.parameters()):
        torch.testing.assert_close(gr, p.grad, **tol)
    torch.testing.assert_close(stats[0], ref.running_mean.detach(), **TOL[None if amp is None else amp])
    torch.testing.assert_close(stats[1], ref.running_var.detach(), **TOL[None if amp is None else amp])


def _worker(rank, port, queue, setup):
    torch.set_num_threads(1)
    backend, device_of = SETUPS[setup]
    device = device_of(rank)
    if device != "cpu":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        for i, (case, (name, sizes, amp)) in enumerate(CASES.items()):
            try:
                _check_case(rank, name, sizes, amp, seed=i, device=device)
                queue.put((rank, case, None))
            except Exception:
                queue.put((rank, case, traceback.format_exc(limit=3)))
                dist.barrier()  # keep the collectives of the next case aligned
    finally:
        dist.destroy_process_group()



def _requirements(setup):
    if setup == "cpu-gloo":
        return
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if setup == "cuda-nccl-2gpu" and torch.cuda.device_count() < 2:
        pytest.skip("NCCL needs 2 GPUs (it refuses two processes on one GPU)")


@pytest.fixture(scope="module", params=[
    "cpu-gloo", pytest.param("cuda-gloo-1gpu", marks=pytest.mark.cuda),
    pytest.param("cuda-nccl-2gpu", marks=pytest.mark.cuda)])
def results(request):
    _requirements(request.param)
    return run_two_ranks(_worker, len(CASES), TIMEOUT_S, (request.param,))


@pytest.mark.parametrize("case", list(CASES))
def test_sync_norm_equals_single_process_norm_on_concatenated_batch(results, case):
    assert "error" not in results, results.get("error")
    for rank in range(2):
        assert results[rank, case] is None, f"rank {rank}:\n{results[rank, case]}"
