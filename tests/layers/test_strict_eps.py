"""No norm relies on one torch release's leniency: torch 2.11 refuses eps <= 0 in F.batch_norm
("batch_norm eps must be positive, but got 0.0"); 2.14, which CI has, accepts it. Here every batch-norm
kernel call is refused when its eps is <= 0, as 2.11 does (stricter: backward kernels too), and every
registered norm runs forward and backward, in training and eval, in float32 and under bfloat16
autocast, also with every eps option set to 0 (torchvision's COCO detectors use BN eps 0).
"""
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from gn_det.layers import NORM_REGISTRY, BNOptions, EvoNormOptions, GNOptions, NormOptions, SNOptions, get_norm

REFUSAL = "batch_norm eps must be positive, but got {}"
# Every registered norm; those that include the activation also as norm + activation ("<name>:act", built
# with act=True as where a ReLU follows: FRN+TLU, EvoNorm); without it they are FRN alone / EvoNorm's affine.
NAMES = NORM_REGISTRY.names() + [f"{e.name}:act" for e in NORM_REGISTRY.entries()
                                 if e.traits_for(e.default_options()).includes_activation]


def _eps_of(func, args, kwargs):
    for i, arg in enumerate(func._schema.arguments):
        if arg.name == "eps":
            return args[i] if i < len(args) else kwargs.get("eps", arg.default_value)
    return None


class RefuseNonPositiveEps(TorchDispatchMode):
    """Every aten batch-norm op (native_batch_norm, its backward, cudnn_batch_norm, ...) with eps <= 0 raises."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if "batch_norm" in func._schema.name:
            eps = _eps_of(func, args, kwargs)
            if eps is not None and eps <= 0:
                raise RuntimeError(REFUSAL.format(eps))
        return func(*args, **kwargs)


@pytest.fixture
def strict_eps(monkeypatch):
    """Refuse eps <= 0 at F.batch_norm (torch 2.11's check) and at every aten batch-norm kernel."""
    batch_norm = F.batch_norm

    def checked(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
        if eps <= 0:
            raise RuntimeError(REFUSAL.format(eps))
        return batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)

    monkeypatch.setattr(F, "batch_norm", checked)
    with RefuseNonPositiveEps():
        yield


def test_the_strict_mode_refuses_what_torch_2_11_refuses(strict_eps):
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(RuntimeError, match="eps must be positive, but got 0.0"):
        F.batch_norm(x, torch.zeros(3), torch.ones(3), eps=0.0)
    with pytest.raises(RuntimeError, match="eps must be positive, but got 0.0"):
        torch.ops.aten.native_batch_norm(x, None, None, torch.zeros(3), torch.ones(3), False, 0.1, 0.0)
    F.batch_norm(x, torch.zeros(3), torch.ones(3), eps=1e-5)  # positive eps passes


OPTIONS = {
    "default eps": NormOptions(GNOptions(num_groups=4), EvoNormOptions(num_groups=4)),
    "eps 0": NormOptions(GNOptions(num_groups=4), BNOptions(epsilon=0.0), SNOptions(epsilon=0.0),
                         EvoNormOptions(num_groups=4)),
}


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bfloat16-autocast"])
@pytest.mark.parametrize("options", list(OPTIONS), ids=list(OPTIONS))
@pytest.mark.parametrize("name", NAMES)
def test_every_norm_runs_without_non_positive_eps(name, options, autocast, strict_eps):
    norm = get_norm(name.split(":")[0], 8, OPTIONS[options], act=name.endswith(":act"))
    for training in (True, False):
        norm.train(training)
        x = (torch.randn(2, 8, 5, 5) * 2 + 1).requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = norm(x)
        y.float().square().sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


def test_sync_norm_functions_run_without_non_positive_eps(strict_eps):
    """The pooled paths of SyncBN and SyncSN (a one-process gloo group), eps 0 included."""
    import socket

    import torch.distributed as dist

    from gn_det.layers.switch_norm import _Mode, _SwitchNormFunction
    from gn_det.layers.sync_batch_norm import _SyncBatchNormFunction

    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        group = dist.group.WORLD
        bn = get_norm("SyncBN", 3, NormOptions(BNOptions(epsilon=0.0)))
        x = (torch.randn(2, 3, 4, 4) * 2 + 1).requires_grad_()
        w, b = torch.randn(3, requires_grad=True), torch.randn(3, requires_grad=True)
        y = _SyncBatchNormFunction.apply(x, w, b, torch.zeros(3), torch.ones(3), 0.0, 0.1, group, bn)
        y.square().sum().backward()
        mode = _Mode(True, True, 0.0, 0.1, group, torch.zeros(3), torch.ones(3))
        params = [torch.randn(3, requires_grad=True) for _ in range(4)]
        y = _SwitchNormFunction.apply(x, *params, mode)
        y.square().sum().backward()
        assert torch.isfinite(x.grad).all() and all(torch.isfinite(p.grad).all() for p in params)
    finally:
        dist.destroy_process_group()
