"""Every registered norm's forward and backward, in training and eval, without a host read or copy.

On CUDA a host read (``.item()``, ``bool(t)``, ``float(t)``, ``.tolist()``) blocks the CPU until the GPU
has caught up, and a tensor made from Python data on the device (``torch.as_tensor(n, device=x.device)``)
is a blocking host-to-device copy. Both show up on CPU too, as dispatcher calls (``_local_scalar_dense``,
``lift_fresh``) or tensor methods, so this guard catches them without a GPU (issue 21, defect 6: SN and
BRN made a device tensor from a Python count in every training forward).
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from gn_det.layers import NORM_REGISTRY, EvoNormOptions, GNOptions, NormOptions, get_norm

OPTIONS = NormOptions(GNOptions(num_groups=4), EvoNormOptions(num_groups=4))
_FLAGGED = {torch.ops.aten._local_scalar_dense.default: "a host read of a tensor value (.item(), bool, float)",
            torch.ops.aten.lift_fresh.default: "a tensor made from Python data (a host-to-device copy on CUDA)"}


class HostSyncGuard(TorchDispatchMode):
    """Records every host read or host copy made while active (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FLAGGED:
            self.seen.append(_FLAGGED[func])
        elif func is torch.ops.aten._to_copy.default and "device" in kwargs:
            self.seen.append(f"a copy to device {kwargs['device']}")
        return func(*args, **kwargs)


@pytest.fixture
def guard(monkeypatch):
    g = HostSyncGuard()
    for method in ("tolist", "numpy", "cpu"):
        original = getattr(torch.Tensor, method)

        def flagged(self, *a, _name=method, _orig=original, **k):
            if g.active:
                g.seen.append(f"Tensor.{_name}()")
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, method, flagged)
    g.active = False
    return g


def test_guard_catches_the_host_syncs_it_is_for(guard):
    x = torch.ones(3)
    for make in (lambda: x.sum().item(), lambda: bool(x[0] > 0), lambda: torch.as_tensor(5, device=x.device),
                 lambda: x.tolist(), lambda: x.to("cpu", copy=True)):
        guard.seen.clear()
        guard.active = True
        with guard:
            make()
        guard.active = False
        assert guard.seen, make


@pytest.mark.parametrize("name", NORM_REGISTRY.names())
def test_norm_forward_and_backward_make_no_host_sync(name, guard):
    norm = get_norm(name, 16, OPTIONS, act=True)
    x = torch.randn(2, 16, 5, 6, requires_grad=True)
    for training in (True, False):
        norm.train(training)
        for _ in range(2):  # a second step: warm-up counters, running statistics already set
            guard.seen.clear()
            guard.active = True
            with guard:
                y = norm(x)
                y.backward(torch.ones_like(y))
            guard.active = False
            assert not guard.seen, f"{name} (training={training}) made {sorted(set(guard.seen))}"
