"""MODEL.DEVICE cuda:N in one process makes cuda:N current, and memory/timing read that device
(issue 21, defect 4: peak_mem_mb read cuda:0 and bench_step synchronized cuda:0).

torch.cuda is patched with a recorder of two fake devices, so this runs without a GPU.
"""
import pytest
import torch

from gn_det.config import get_cfg
from gn_det.engine.events import peak_memory_mb
from gn_det.utils.device import resolve_cfg_device, synchronizer


class CudaRecorder:
    def __init__(self, monkeypatch):
        self.current = 0
        self.calls = []
        fakes = {
            "is_available": lambda: True, "is_initialized": lambda: True, "device_count": lambda: 2,
            "current_device": lambda: self.current, "set_device": self.set_device,
            "synchronize": lambda device=None: self.calls.append(("synchronize", self._index(device))),
            "max_memory_allocated": self.max_memory_allocated,
        }
        for name, fn in fakes.items():
            monkeypatch.setattr(torch.cuda, name, fn)

    def _index(self, device):
        if device is None:
            return self.current
        return device if isinstance(device, int) else torch.device(device).index

    def set_device(self, device):
        self.current = self._index(device)
        self.calls.append(("set_device", self.current))

    def max_memory_allocated(self, device=None):
        index = self._index(device)
        return (3 * 2**20) if index == 1 else 0  # only cuda:1 did any work


def test_model_device_cuda_n_becomes_current_and_peak_memory_reads_it(monkeypatch):
    cuda = CudaRecorder(monkeypatch)
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cuda:1"
    assert resolve_cfg_device(cfg) == torch.device("cuda", 1)
    assert ("set_device", 1) in cuda.calls and cuda.current == 1
    assert peak_memory_mb() == 3.0  # the current device's peak, 0 on cuda:0
    assert peak_memory_mb(torch.device("cuda", 1)) == 3.0
    assert peak_memory_mb(torch.device("cuda", 0)) == 0.0


def test_synchronizer_waits_on_the_measured_device_not_the_current_one(monkeypatch):
    cuda = CudaRecorder(monkeypatch)
    synchronizer(torch.device("cuda", 1))()
    assert cuda.calls == [("synchronize", 1)]
    synchronizer(torch.device("cpu"))()
    assert cuda.calls == [("synchronize", 1)]


def test_cpu_device_sets_no_cuda_device(monkeypatch):
    cuda = CudaRecorder(monkeypatch)
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    resolve_cfg_device(cfg)
    assert cuda.calls == []
    assert peak_memory_mb(torch.device("cpu")) > 0  # the process's peak RSS
