"""Shared test settings: a fixed thread count, logging restored after tests that set it up, tests
marked ``cuda`` skipped where CUDA is absent, and the other tests kept on the CPU on a GPU machine."""
import logging

import pytest
import torch

torch.set_num_threads(2)

# Loggers that gn_det.engine.setup_logger configures (propagate off, console and log.txt handlers),
# and their state before any test ran: module-scoped fixtures may run a tool before a test starts.
_TOOL_LOGGERS = ("gn_det", "__main__", "train_net")
_PRISTINE = {name: (logging.getLogger(name).level, logging.getLogger(name).propagate,
                    list(logging.getLogger(name).handlers)) for name in _TOOL_LOGGERS}


_HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """Skip ``@pytest.mark.cuda`` tests without a GPU (CI); tools/gpu_check.sh runs them on one."""
    if _HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs CUDA; run tools/gpu_check.sh on a GPU machine")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def machine_has_cuda():
    """Whether this machine has CUDA, read before any test's patch: inside a test not marked cuda,
    ``torch.cuda.is_available()`` is False on a GPU machine too (cpu_unless_marked_cuda), while a module
    fixture set up before that patch sees True; decisions taken in both places read this instead."""
    return _HAS_CUDA


@pytest.fixture(autouse=True)
def cpu_unless_marked_cuda(request, monkeypatch):
    """On a GPU machine, tests not marked cuda see no CUDA, so MODEL.DEVICE 'auto' means the CPU they
    were written for (the GPU paths have their own tests, marked cuda). A no-op where CUDA is absent."""
    if _HAS_CUDA and request.node.get_closest_marker("cuda") is None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(autouse=True)
def restore_tool_loggers():
    """Undo setup_logger after each test, so later tests' caplog sees gn_det's records."""
    yield
    for name, (level, propagate, handlers) in _PRISTINE.items():
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if h not in handlers:
                lg.removeHandler(h)
                h.close()
        lg.setLevel(level)
        lg.propagate = propagate
