"""gradcheck of the hand-written backward of SyncBN and of SN's pooled BN branch; no host read of the
pooled count in SyncBN's and SyncBRN's pooled path when the local batch has 2 or more values.

Run in a one-process gloo group (all-reduce is then the identity, but every line of the pooled
path runs); the 2-process agreement is tested in test_sync_distributed.py and
test_batch_renorm_distributed.py.
"""
import socket

import pytest
import torch
import torch.distributed as dist
from torch.autograd import gradcheck

from gn_det.layers import SyncBatchNorm2d
from gn_det.layers.batch_renorm import SyncBatchRenorm2d, _BatchRenormFunction
from gn_det.layers.switch_norm import _Mode, _SwitchNormFunction
from gn_det.layers.sync_batch_norm import _SyncBatchNormFunction


@pytest.fixture(scope="module")
def group():
    if dist.is_initialized():
        if dist.get_world_size() != 1:
            pytest.skip("a multi-process group is already initialized in this process")
        yield dist.group.WORLD
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


def test_sync_batch_norm_backward_passes_gradcheck(group):
    bn = SyncBatchNorm2d(3).double()
    running_mean, running_var = torch.randn(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    x = (torch.randn(2, 3, 2, 3, dtype=torch.float64) * 2 + 1).requires_grad_()
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def fn(x, w, b):
        return _SyncBatchNormFunction.apply(x, w, b, running_mean, running_var, 1e-5, 0.0, group, bn)

    assert gradcheck(fn, (x, w, b), fast_mode=True)


def test_sn_pooled_bn_branch_backward_passes_gradcheck(group):
    running_mean, running_var = torch.randn(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    mode = _Mode(True, True, 1e-5, 0.0, group, running_mean, running_var)
    x = (torch.randn(2, 3, 2, 3, dtype=torch.float64) * 2 + 1).requires_grad_()
    params = [torch.randn(n, dtype=torch.float64, requires_grad=True) for n in (3, 3, 3, 3)]

    def fn(x, w, b, mw, vw):
        return _SwitchNormFunction.apply(x, w, b, mw, vw, mode)

    assert gradcheck(fn, (x, *params), fast_mode=True)


def _pooled_sync_bn(group, x, w, b):
    bn = SyncBatchNorm2d(3).double()
    return _SyncBatchNormFunction.apply(x, w, b, bn.running_mean, bn.running_var, 1e-5, 0.1, group, bn)


def _pooled_sync_brn(group, x, w, b):
    brn = SyncBatchRenorm2d(3, warmup_steps=0, rmax_steps=0, dmax_steps=0).double()
    return _BatchRenormFunction.apply(x, w, b, brn, group)


@pytest.mark.parametrize("pooled", [_pooled_sync_bn, _pooled_sync_brn], ids=["SyncBN", "SyncBRN"])
def test_pooled_path_reads_nothing_on_the_host_with_a_local_batch(group, pooled, monkeypatch):
    """On CUDA every read of a device value on the host (bool, item, int, float) stalls the stream once per layer."""
    x = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def host_read(*args, **kwargs):
        raise AssertionError("host read of a tensor in the pooled forward/backward")

    with monkeypatch.context() as patch:
        for name in ("__bool__", "item", "__int__", "__float__", "__index__", "tolist"):
            patch.setattr(torch.Tensor, name, host_read)
        y = pooled(group, x, w, b)
        y.backward(torch.ones_like(y))
    assert x.grad.shape == x.shape and torch.isfinite(w.grad).all()


def test_sync_brn_pooled_empty_batch_gives_zero_gradients(group):
    brn = SyncBatchRenorm2d(3).double()
    x = torch.zeros(0, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    y = _BatchRenormFunction.apply(x, w, b, brn, group)
    y.sum().backward()
    assert y.shape == x.shape and int(brn.num_batches_tracked) == 0
    assert torch.equal(w.grad, torch.zeros(3, dtype=torch.float64)) and torch.equal(b.grad, w.grad)
