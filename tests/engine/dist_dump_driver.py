"""tools/train_net.py with what each process holds written to $GN_DET_TEST_DUMP, for the multi-process
tests: run under torchrun (every process runs this file, train_net.invoke_main does the rest).

- ``step<k>.rank<r>.pth`` at each training forward k (0-based): the model's state the step starts from
  and its (image, target) batch;
- ``eval<k>.rank<r>.pth`` at each evaluation k: the model's state evaluated.
"""
import os
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tools"))

import train_net  # noqa: E402
from gn_det.engine.defaults import DefaultTrainer  # noqa: E402
from gn_det.utils import comm  # noqa: E402

DUMP = os.environ["GN_DET_TEST_DUMP"]
_build_model = DefaultTrainer.build_model.__func__
_test = DefaultTrainer.test.__func__
_counts = {"step": 0, "eval": 0}


def _state(model):
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _save(kind, payload):
    path = os.path.join(DUMP, f"{kind}{_counts[kind]}.rank{comm.get_rank()}.pth")
    torch.save(payload, path)
    _counts[kind] += 1


def build_model(cls, cfg):
    model = _build_model(cls, cfg)

    def record(module, args):
        if module.training and len(args) >= 2 and torch.is_grad_enabled():
            images, targets = args[0], args[1]
            _save("step", {"state": _state(module), "images": [i.detach().cpu() for i in images],
                           "targets": [{k: v.detach().cpu() for k, v in t.items()} for t in targets]})

    model.register_forward_pre_hook(record)
    return model


def test(cls, cfg, model, evaluators=None):
    _save("eval", {"state": _state(model)})
    return _test(cls, cfg, model, evaluators)


DefaultTrainer.build_model = classmethod(build_model)
DefaultTrainer.test = classmethod(test)

if __name__ == "__main__":
    train_net.invoke_main(sys.argv[1:])
