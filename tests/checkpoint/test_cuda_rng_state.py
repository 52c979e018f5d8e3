"""The CUDA generator in a checkpoint is this process's device's only, so a resume that sees fewer GPUs
works (issue 21, defect 3: get_rng_state_all / set_rng_state_all raised IndexError then).

torch.cuda is patched: a fake set of devices, each with its own generator state, where the save sees
4 GPUs (process on cuda:2) and the resume sees 1 (CUDA_VISIBLE_DEVICES narrowed to that GPU, cuda:0).
"""
import pytest
import torch

from gn_det.checkpoint.checkpointer import get_rng_state, set_rng_state


class FakeCuda:
    """Per-device generator states on ``count`` devices, ``current`` the current one."""

    def __init__(self, monkeypatch, count, current):
        self.count, self.current = count, current
        self.states = {i: torch.full((16,), i, dtype=torch.uint8) for i in range(count)}
        for name, fn in {
            "is_available": lambda: True, "is_initialized": lambda: True, "device_count": lambda: self.count,
            "current_device": lambda: self.current, "get_rng_state": self.get, "set_rng_state": self.set,
            "get_rng_state_all": lambda: [self.states[i].clone() for i in range(self.count)],
            "set_rng_state_all": self.set_all,
        }.items():
            monkeypatch.setattr(torch.cuda, name, fn)

    def _index(self, device):
        index = device if isinstance(device, int) else torch.device(device).index
        if index is None or index < 0:
            index = self.current
        if index >= self.count:
            raise IndexError(f"CUDA device {index} of {self.count}")
        return index

    def get(self, device="cuda"):
        return self.states[self._index(device)].clone()

    def set(self, state, device="cuda"):
        self.states[self._index(device)] = state.clone()

    def set_all(self, states):
        for i, s in enumerate(states):
            self.set(s, i)


def test_resume_with_fewer_visible_gpus_restores_this_process_generator(monkeypatch):
    saving = FakeCuda(monkeypatch, count=4, current=2)
    saving.states[2] = torch.arange(16, dtype=torch.uint8)
    state = get_rng_state()
    assert torch.equal(state["cuda"], torch.arange(16, dtype=torch.uint8))  # cuda:2's, not all four

    resuming = FakeCuda(monkeypatch, count=1, current=0)
    set_rng_state(state)
    assert torch.equal(resuming.states[0], torch.arange(16, dtype=torch.uint8))


def test_old_checkpoint_with_every_device_state_restores_the_current_device(monkeypatch):
    old = [torch.full((16,), 10 + i, dtype=torch.uint8) for i in range(4)]
    state = dict(get_rng_state(), cuda=old)
    fake = FakeCuda(monkeypatch, count=2, current=1)
    set_rng_state(state)
    assert torch.equal(fake.states[1], old[1]) and torch.equal(fake.states[0], torch.zeros(16, dtype=torch.uint8))
